"""Batched attention extraction with padding removal, truncation and an on-disk cache.

`extract` runs one forward pass per batch of sentences and returns one `SentenceAttention` per
sentence: the tokens, their character offsets, which are special, and the attention of every
layer and head as float32 ``[L, H, n, n]`` (row = query, column = key; every row sums to 1), with
the padding removed. `iter_extract` is the streaming form: memory stays bounded by a batch.

Decoder inputs get a BOS token prepended when the tokenizer does not add one (as TransformerLens
does by default), so "first-token sink" heads have a fixed first token to attend to; pass
``prepend_bos=False`` to feed the text exactly as the tokenizer encodes it.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attn_tools._cache import CacheWarning, cache_dir, hash_key, slot_is_usable, write_or_warn
from attn_tools.data import check_unicode
from attn_tools.models import ModelBundle, ModelKind

__all__ = [
    "CACHE_VERSION",
    "DEFAULT_MAX_ATTENTION_BYTES",
    "MAX_ATTENTION_ENV",
    "SentenceAttention",
    "attention_bytes",
    "attention_cap",
    "check_record",
    "check_records",
    "extract",
    "iter_extract",
]

# 2: entries record the model fingerprint and the settings they were made with
CACHE_VERSION = 2

#: The cap on one forward pass's float32 attention (`attention_bytes`), 4 GiB unless the
#: environment variable `MAX_ATTENTION_ENV` or the ``max_attention_bytes=`` argument says
#: otherwise. A sentence over it is refused by name; batches are cut to stay under it.
DEFAULT_MAX_ATTENTION_BYTES = 4 * 1024**3
MAX_ATTENTION_ENV = "ATTN_TOOLS_MAX_ATTENTION_BYTES"
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}  # fmt: skip


def attention_bytes(n_layers: int, n_heads: int, n_tokens: int, *, batch: int = 1) -> int:
    """Bytes of float32 attention for ``batch`` inputs of ``n_tokens``: ``B·L·H·n²·4``.

    Example:
        >>> attention_bytes(30, 9, 2000) / 1024**3   # SmolLM2-135M, 2,000 tokens
        4.02...
    """
    return int(batch) * int(n_layers) * int(n_heads) * int(n_tokens) ** 2 * 4


def attention_cap(value: int | str | None = None) -> int:
    """The attention cap in bytes: ``value``, else ``$ATTN_TOOLS_MAX_ATTENTION_BYTES``, else 4 GiB.

    ``value`` (or the variable) is a byte count or a size such as ``"8GiB"`` or ``"500MB"``.

    Raises:
        ValueError: not a positive size; the message names where it came from.
    """
    where = "max_attention_bytes"
    if value is None:
        value = os.environ.get(MAX_ATTENTION_ENV) or DEFAULT_MAX_ATTENTION_BYTES
        where = f"${MAX_ATTENTION_ENV}" if MAX_ATTENTION_ENV in os.environ else where
    size = None
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", value)
        if match and match.group(2).lower() in _UNITS:
            size = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if size is None or size <= 0:
        raise ValueError(
            f"{where}={value!r} is not a positive size. Fix: give bytes or a size such as "
            "'8GiB' or '500MB'."
        )
    return size


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


@dataclass(frozen=True, eq=False)
class SentenceAttention:
    """Attention of every head of a model on one sentence.

    Attributes:
        text: the sentence exactly as given.
        tokens: the tokenizer's token strings (``"##ing"``, ``"Ġworld"``, ``"[CLS]"``).
        token_ids: the input ids.
        offsets: ``(start, end)`` character span of each token in ``text``; ``(0, 0)`` for
            special tokens. Byte-level BPE spans may include the token's leading space.
        special_mask: bool ``[n]``, True for special tokens ([CLS], [SEP], a prepended BOS, ...).
        attention: float32 ``[L, H, n, n]``, ``attention[layer, head, q, k]``: how much query
            token ``q`` attends to key token ``k``. Rows sum to 1.
        model: the model's display name; ``kind``: ``"encoder"`` or ``"causal"``.
        truncated: True when the sentence was longer than the model's context and was cut.
    """

    text: str
    tokens: tuple[str, ...]
    token_ids: tuple[int, ...]
    offsets: tuple[tuple[int, int], ...]
    special_mask: np.ndarray
    attention: np.ndarray
    model: str
    kind: ModelKind
    truncated: bool = False

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    @property
    def n_layers(self) -> int:
        return int(self.attention.shape[0])

    @property
    def n_heads(self) -> int:
        return int(self.attention.shape[1])

    @property
    def labels(self) -> list[str]:
        """Readable token labels: the text each token covers (specials keep their name)."""
        out = []
        for tok, (s, e), special in zip(self.tokens, self.offsets, self.special_mask):
            piece = self.text[s:e].strip() if not special else ""
            out.append(piece or tok)
        return out

    def head(self, layer: int, head: int) -> np.ndarray:
        """The ``[n, n]`` attention matrix of one head."""
        if not (0 <= layer < self.n_layers and 0 <= head < self.n_heads):
            raise IndexError(
                f"layer {layer}, head {head} is outside this model's {self.n_layers} layers × "
                f"{self.n_heads} heads"
            )
        return self.attention[layer, head]

    def __repr__(self) -> str:
        return (
            f"SentenceAttention(model={self.model!r}, n_tokens={self.n_tokens}, "
            f"attention={tuple(self.attention.shape)}, text={self.text[:50]!r})"
        )


def check_record(index: int, record: object) -> SentenceAttention:
    """Return ``record`` if it is a well-formed `SentenceAttention`; else raise, naming ``index``.

    Raises:
        TypeError: the record is not a `SentenceAttention` (a string, a dict, an array, ...).
        ValueError: its attention is not ``[L, H, n, n]`` for its ``n`` tokens.
    """
    if not isinstance(record, SentenceAttention):
        raise TypeError(
            f"record {index} is {type(record).__name__} ({record!r:.60}), not a "
            "SentenceAttention. Fix: pass SentenceAttention records from extract(), e.g. "
            "extract(load_model('minilm'), sentences)."
        )
    att = record.attention
    n = record.n_tokens
    if not isinstance(att, np.ndarray) or att.ndim != 4 or att.shape[2:] != (n, n):
        shape = getattr(att, "shape", None)
        raise ValueError(
            f"record {index} ({record.text[:40]!r}) has attention of shape {shape}, not "
            f"[layers, heads, {n}, {n}] for its {n} tokens. Fix: pass records from extract() "
            "unchanged."
        )
    return record


def check_records(records: object) -> Iterable[SentenceAttention]:
    """Validate what an analysis was given as records; errors name the bad record's index.

    A sequence (list, tuple) is checked completely now and returned as it is; any other iterable
    (a generator from `iter_extract`) is returned wrapped, checking each record as it is read,
    so streaming stays streaming.

    Raises:
        TypeError: ``records`` is None, a string, a single record, or holds a non-record.
        ValueError: a sequence with no records, or a record whose attention has a wrong shape.

    Example:
        >>> check_records(["The cat sat."])
        Traceback (most recent call last):
        TypeError: record 0 is str ('The cat sat.'), not a SentenceAttention. Fix: ...
    """
    if isinstance(records, SentenceAttention):
        raise TypeError(
            "records is a single SentenceAttention, not a list of them. Fix: wrap it in a list, "
            "[record]."
        )
    if records is None or isinstance(records, (str, bytes)) or not isinstance(records, Iterable):
        raise TypeError(
            f"records is {type(records).__name__} ({records!r:.60}), not a list of "
            "SentenceAttention. Fix: pass SentenceAttention records from extract(), e.g. "
            "extract(load_model('minilm'), sentences)."
        )
    if isinstance(records, Sequence):
        if len(records) == 0:
            raise ValueError("records is empty. Fix: extract at least one sentence first.")
        for index, record in enumerate(records):
            check_record(index, record)
        return records
    return (check_record(index, record) for index, record in enumerate(records))


# ----------------------------------------------------------------------------- tokenising


@dataclass
class _Encoded:
    index: int
    text: str
    ids: list[int]
    offsets: list[tuple[int, int]]
    special: list[bool]
    truncated: bool


def _check_sentence(index: int, text: object) -> str:
    if not isinstance(text, str):
        raise TypeError(
            f"sentence {index} is {type(text).__name__} ({text!r}), not a string. "
            "Fix: pass a list of strings (load_sentences() returns one)."
        )
    if not text.strip():
        raise ValueError(
            f"sentence {index} is empty or whitespace only ({text!r}). "
            "Fix: drop empty lines before extracting."
        )
    check_unicode(index, text)
    return text


def _encode(
    bundle: ModelBundle, index: int, text: str, max_len: int, prepend_bos: bool
) -> _Encoded:
    tok = bundle.tokenizer
    add_bos = prepend_bos and bundle.bos_id is not None
    enc = tok(text, return_offsets_mapping=True, return_special_tokens_mask=True)
    ids, offsets, special = enc["input_ids"], enc["offset_mapping"], enc["special_tokens_mask"]
    need_bos = add_bos and (not ids or ids[0] != bundle.bos_id)
    truncated = len(ids) + int(need_bos) > max_len
    if truncated:
        warnings.warn(
            f"sentence {index} ({text[:60]!r}...) has {len(ids) + int(need_bos)} tokens, more "
            f"than the {max_len} allowed for {bundle.name}; it is truncated to {max_len}.",
            stacklevel=4,
        )
        enc = tok(
            text,
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
            truncation=True,
            max_length=max_len - int(need_bos),
        )
        ids, offsets, special = enc["input_ids"], enc["offset_mapping"], enc["special_tokens_mask"]
    if need_bos:
        ids = [bundle.bos_id, *ids]
        offsets = [(0, 0), *offsets]
        special = [1, *special]
    return _Encoded(
        index=index,
        text=text,
        ids=[int(i) for i in ids],
        offsets=[(int(s), int(e)) for s, e in offsets],
        special=[bool(s) for s in special],
        truncated=truncated,
    )


def _check_size(bundle: ModelBundle, enc: _Encoded, limit: int) -> None:
    n = len(enc.ids)
    need = attention_bytes(bundle.n_layers, bundle.n_heads, n)
    if need > limit:
        fits = int((limit / attention_bytes(bundle.n_layers, bundle.n_heads, 1)) ** 0.5)
        raise ValueError(
            f"sentence {enc.index} ({enc.text[:60]!r}...) has {n} tokens: its attention for "
            f"{bundle.n_layers} layers × {bundle.n_heads} heads would take {_human(need)} "
            f"(L·H·n²·4 bytes), over the cap of {_human(limit)}. Fix: split the text into "
            f"sentences (load_sentences splits paragraphs), or raise the cap if memory allows "
            f"(max_attention_bytes='16GiB' or ${MAX_ATTENTION_ENV}), or pass max_length={fits}."
        )


def _batches(
    bundle: ModelBundle, todo: Sequence[_Encoded], batch_size: int, cap: int
) -> Iterator[list[_Encoded]]:
    """Consecutive batches of the length-sorted ``todo``, each within ``batch_size`` and ``cap``.

    A padded batch holds ``B·L·H·w²·4`` bytes of attention (``w`` its longest input), so long
    sentences go in smaller batches; each single sentence was checked against the cap already.
    """
    batch: list[_Encoded] = []
    for enc in todo:
        wide = attention_bytes(bundle.n_layers, bundle.n_heads, len(enc.ids), batch=len(batch) + 1)
        if batch and (len(batch) == batch_size or wide > cap):
            yield batch
            batch = []
        batch.append(enc)
    if batch:
        yield batch


# ----------------------------------------------------------------------------- cache


def _cache_file(root: Path, bundle: ModelBundle, text: str, settings: dict) -> Path:
    key = hash_key(CACHE_VERSION, bundle.fingerprint, text, settings)
    return root / "attention" / bundle.fingerprint / key[:2] / f"{key}.npz"


def _save(path: Path, rec: SentenceAttention, fingerprint: str, settings: dict) -> None:
    # What made the entry travels with it: a file copied or renamed to another key is caught.
    meta = {
        "version": CACHE_VERSION,
        "fingerprint": fingerprint,
        "settings": settings,
        "text": rec.text,
        "tokens": list(rec.tokens),
        "model": rec.model,
        "kind": rec.kind,
        "truncated": rec.truncated,
    }

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(
                fh,
                attention=rec.attention,
                token_ids=np.asarray(rec.token_ids, dtype=np.int64),
                offsets=np.asarray(rec.offsets, dtype=np.int64).reshape(-1, 2),
                special_mask=rec.special_mask,
                meta=np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8),
            )

    write_or_warn(path, write, "attention", suffix=".npz")


class _Stale(ValueError):
    """The entry is intact but was made by another model, setting or format version."""


def _read_entry(
    path: Path, enc: _Encoded, bundle: ModelBundle, settings: dict
) -> SentenceAttention:
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(bytes(z["meta"]).decode("utf-8"))
        att = z["attention"]
        ids = tuple(int(i) for i in z["token_ids"])
        offsets = tuple((int(s), int(e)) for s, e in z["offsets"])
        special = z["special_mask"]
    if not isinstance(meta, dict):
        raise ValueError("its metadata is not a JSON object")
    made_with = {
        "format version": (meta.get("version"), CACHE_VERSION),
        "model fingerprint": (meta.get("fingerprint"), bundle.fingerprint),
        "settings": (meta.get("settings"), settings),
    }
    for what, (got, want) in made_with.items():
        if got != want:
            raise _Stale(f"it was made with {what} {got!r}, not {want!r}")
    if meta.get("text") != enc.text:
        raise ValueError("it holds another sentence")
    # The tokenisation is recomputed anyway (cheap); the entry must agree with it exactly.
    if ids != tuple(enc.ids) or offsets != tuple(enc.offsets):
        raise ValueError("its token ids or offsets differ from the tokenizer's")
    n = len(ids)
    tokens = meta.get("tokens")
    if not (
        isinstance(tokens, list) and len(tokens) == n and all(isinstance(t, str) for t in tokens)
    ):
        raise ValueError("its token strings are missing or do not match the token ids")
    if special.dtype != np.bool_ or special.tolist() != enc.special:
        raise ValueError("its special-token mask differs from the tokenizer's")
    if meta.get("truncated") is not enc.truncated or meta.get("kind") != bundle.kind:
        raise ValueError("its truncation flag or model kind is wrong")
    if att.dtype != np.float32 or att.shape != (bundle.n_layers, bundle.n_heads, n, n):
        raise ValueError(f"its attention has dtype {att.dtype} and shape {att.shape}")
    if not (np.isfinite(att).all() and (att >= 0).all()):
        raise ValueError("its attention holds negative or non-finite values")
    # 2e-2 leaves room for models run in bfloat16 (8-bit mantissa); damage is far larger
    if np.abs(att.sum(-1) - 1.0).max(initial=0.0) > 2e-2:
        raise ValueError("its attention rows do not sum to 1")
    return SentenceAttention(
        text=enc.text,
        tokens=tuple(tokens),
        token_ids=ids,
        offsets=offsets,
        special_mask=special.astype(bool),
        attention=att,
        model=str(meta.get("model", bundle.name)),
        kind=bundle.kind,
        truncated=enc.truncated,
    )


def _load(
    path: Path, enc: _Encoded, bundle: ModelBundle, settings: dict
) -> SentenceAttention | None:
    """Read a cached record; None if absent. A bad or stale file is reported, deleted, recomputed."""
    if not path.is_file():
        return None
    try:
        return _read_entry(path, enc, bundle, settings)
    except _Stale as exc:
        problem = f"is stale ({exc})"
    except Exception as exc:  # any damage at all means: do not trust it
        problem = f"is corrupt ({exc})"
    warnings.warn(
        f"attention cache file {path} for sentence {enc.index} {problem}; recomputing it.",
        CacheWarning,
        stacklevel=4,
    )
    path.unlink(missing_ok=True)
    return None


# ----------------------------------------------------------------------------- forward


@torch.no_grad()
def _forward(bundle: ModelBundle, batch: Sequence[_Encoded]) -> list[np.ndarray]:
    """One padded forward pass; returns each sentence's ``[L, H, n, n]`` with padding removed."""
    lengths = [len(e.ids) for e in batch]
    width = max(lengths)
    pad_id = bundle.tokenizer.pad_token_id
    if pad_id is None:
        pad_id = bundle.tokenizer.eos_token_id or 0
    ids = torch.full((len(batch), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, enc in enumerate(batch):
        ids[row, : len(enc.ids)] = torch.tensor(enc.ids)
        mask[row, : len(enc.ids)] = 1
    # Right padding keeps real tokens at positions 0..n-1, so position ids match an unpadded run.
    out = bundle.model(
        input_ids=ids.to(bundle.device),
        attention_mask=mask.to(bundle.device),
        output_attentions=True,
        use_cache=False,
    )
    attentions = getattr(out, "attentions", None)
    if not attentions or any(a is None for a in attentions):
        raise RuntimeError(
            f"{bundle.name} returned no attention weights; it must be loaded with "
            "attn_implementation='eager' (load_model does this)."
        )
    stacked = torch.stack([a.float() for a in attentions], dim=1).cpu()  # [B, L, H, w, w]
    return [
        np.ascontiguousarray(stacked[row, :, :, :n, :n].numpy()) for row, n in enumerate(lengths)
    ]


def _check_inputs(bundle: object, sentences: object) -> None:
    if not isinstance(bundle, ModelBundle):
        hint = f"load_model({bundle!r})" if isinstance(bundle, str) else "load_model('minilm')"
        raise TypeError(
            f"bundle is {type(bundle).__name__} ({bundle!r:.60}), not a ModelBundle. "
            f"Fix: bundle = {hint}, then extract(bundle, sentences)."
        )
    if sentences is None or not isinstance(sentences, Iterable) or isinstance(sentences, bytes):
        raise TypeError(
            f"sentences is {type(sentences).__name__} ({sentences!r:.60}), not a list of strings. "
            "Fix: pass a list of strings, e.g. load_sentences('story')."
        )


def _resolve_root(cache: bool | str | Path) -> Path | None:
    if not cache:
        return None
    root = cache_dir() if cache is True else Path(cache).expanduser()
    if root.exists() and not root.is_dir():
        warnings.warn(
            f"attention cache folder {root} is a file; computing without the cache. "
            "Fix: pass cache= a folder, or cache=False.",
            CacheWarning,
            stacklevel=4,
        )
        return None
    return root


def iter_extract(
    bundle: ModelBundle,
    sentences: Iterable[str],
    *,
    batch_size: int = 16,
    cache: bool | str | Path = True,
    max_length: int | None = None,
    prepend_bos: bool | None = None,
    progress: bool | Mapping[str, Any] = True,
    max_attention_bytes: int | str | None = None,
    shard: bool | None = None,
) -> Iterator[SentenceAttention]:
    """Yield one `SentenceAttention` per sentence, in input order, streaming.

    Sentences are read in windows of ``4 × batch_size``, sorted by length inside a window (so
    batches carry little padding), run one batch per forward pass, and yielded in input order.
    Memory is bounded by a window, whatever the corpus size.

    Args:
        bundle: from `load_model`.
        sentences: any iterable of strings (a list, a file reader, a generator).
        batch_size: sentences per forward pass.
        cache: True for the default cache folder, a path for another, False to skip caching.
            An entry records the model fingerprint and the settings below; one made otherwise,
            or damaged, is reported (`CacheWarning`) and recomputed.
        max_length: cut inputs to this many tokens (default and upper bound: the model's context).
        prepend_bos: decoders only; default True (prepend BOS unless the tokenizer adds it).
        progress: show a tqdm bar (it renders in notebooks too). It advances per sentence (a
            cached one at once, computed ones per forward pass), so its rate and ETA are those
            of the work done. A mapping is passed to tqdm as overrides, e.g. ``{"leave": True}``
            (what the CLI uses, so the finished bar stays on screen).
        max_attention_bytes: the cap on float32 attention per forward pass (`attention_cap`:
            bytes or ``"8GiB"``; default ``$ATTN_TOOLS_MAX_ATTENTION_BYTES`` or 4 GiB). A
            sentence over it is refused with an error naming it, instead of running out of
            memory (SmolLM2 reaches 4 GiB at about 2,000 tokens); batches are cut to fit it.
            Peak memory is about twice the cap (the model's own attention outputs plus the
            float32 copy returned), see docs/bigmodels.md.
        shard: under ``torchrun``/``accelerate launch`` (``WORLD_SIZE > 1``) the default (None)
            extracts only this rank's sentences (``i % world_size == rank``) and marks the
            stream with its shard, so `score_heads` reduces over ranks (see
            `attn_tools.distributed`); False extracts every sentence on every rank.

    Raises:
        TypeError: ``bundle`` is not a `ModelBundle` or ``sentences`` is not an iterable of
            strings (raised at the call, before any sentence is read).
        ValueError: a bad argument, or a sentence that is empty or not valid Unicode (raised when
            the stream reaches it, naming its index).
    """
    _check_inputs(bundle, sentences)
    if isinstance(sentences, str):
        sentences = [sentences]  # one sentence, not one per character
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    limit = bundle.max_length if max_length is None else min(int(max_length), bundle.max_length)
    if limit < 2:
        raise ValueError(f"max_length must be at least 2 tokens, got {max_length}")
    use_bos = bundle.kind == "causal" if prepend_bos is None else bool(prepend_bos)
    settings = {"max_length": limit, "prepend_bos": use_bos}
    root = _resolve_root(cache)
    cap = attention_cap(max_attention_bytes)
    part = None
    if shard is None or shard:
        from attn_tools.distributed import ShardedStream, shard_sentences

        sentences, part = shard_sentences(sentences)
    stream = _stream(bundle, sentences, batch_size, root, limit, use_bos, settings, progress, cap)
    return stream if part is None else ShardedStream(stream, part)


def _stream(
    bundle: ModelBundle,
    sentences: Iterable[str],
    batch_size: int,
    root: Path | None,
    limit: int,
    use_bos: bool,
    settings: dict,
    progress: bool | Mapping[str, Any],
    max_attention_bytes: int,
) -> Iterator[SentenceAttention]:
    total = len(sentences) if isinstance(sentences, Sequence) else None
    bar = None
    if progress:
        from tqdm.auto import tqdm

        options = {"total": total, "desc": f"attention · {bundle.name}", "unit": "sent"}
        options["leave"] = False
        if isinstance(progress, Mapping):
            options.update(progress)
        bar = tqdm(**options)

    window = 4 * batch_size
    numbered = enumerate(sentences)  # indices stay right across windows
    try:
        while True:
            chunk = [(i, _check_sentence(i, s)) for i, s in itertools.islice(numbered, window)]
            if not chunk:
                break
            done: dict[int, SentenceAttention] = {}
            todo: list[_Encoded] = []
            writable: dict[int, Path] = {}
            for index, text in chunk:
                enc = _encode(bundle, index, text, limit, use_bos)
                rec = None
                if root is not None:
                    path = _cache_file(root, bundle, text, settings)
                    if slot_is_usable(path, "attention", stacklevel=4):
                        rec = _load(path, enc, bundle, settings)
                        writable[index] = path
                if rec is not None:
                    done[index] = rec
                    if bar is not None:
                        bar.update(1)
                else:
                    _check_size(bundle, enc, max_attention_bytes)
                    todo.append(enc)
            todo.sort(key=lambda e: len(e.ids))
            for batch in _batches(bundle, todo, batch_size, max_attention_bytes):
                for enc, att in zip(batch, _forward(bundle, batch)):
                    rec = SentenceAttention(
                        text=enc.text,
                        tokens=tuple(bundle.tokenizer.convert_ids_to_tokens(enc.ids)),
                        token_ids=tuple(enc.ids),
                        offsets=tuple(enc.offsets),
                        special_mask=np.asarray(enc.special, dtype=bool),
                        attention=att,
                        model=bundle.name,
                        kind=bundle.kind,
                        truncated=enc.truncated,
                    )
                    if enc.index in writable:
                        _save(writable[enc.index], rec, bundle.fingerprint, settings)
                    done[enc.index] = rec
                if bar is not None:  # per forward pass, not per window: an honest rate and ETA
                    bar.update(len(batch))
            for index, _ in chunk:
                yield done.pop(index)
    finally:
        if bar is not None:
            bar.close()


def extract(
    bundle: ModelBundle,
    sentences: Iterable[str] | str,
    *,
    batch_size: int = 16,
    cache: bool | str | Path = True,
    max_length: int | None = None,
    prepend_bos: bool | None = None,
    progress: bool | Mapping[str, Any] = True,
    max_attention_bytes: int | str | None = None,
    shard: bool | None = None,
) -> list[SentenceAttention]:
    """Extract attention for sentences; a list of `SentenceAttention` in input order.

    A single string is treated as one sentence. See `iter_extract` for the arguments and for
    streaming over corpora too large to hold. Under ``torchrun`` the list holds this rank's
    sentences only (``shard``, see `iter_extract`).

    Example:
        >>> recs = extract(load_model("minilm"), ["The cat sat on the mat."])
        >>> recs[0].attention.shape   # [layers, heads, tokens, tokens]
        (6, 12, 9, 9)
    """
    if isinstance(sentences, str):
        sentences = [sentences]
    stream = iter_extract(
        bundle,
        sentences,
        batch_size=batch_size,
        cache=cache,
        max_length=max_length,
        prepend_bos=prepend_bos,
        progress=progress,
        max_attention_bytes=max_attention_bytes,
        shard=shard,
    )
    part = getattr(stream, "shard", None)
    if part is None:
        return list(stream)
    from attn_tools.distributed import ShardedRecords

    return ShardedRecords(stream, part)
