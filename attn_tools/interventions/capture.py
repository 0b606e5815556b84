"""Activation capture: attention, residual stream, MLP neurons and per-head outputs, cached.

`iter_capture` streams one `Activations` per sentence (memory bounded by one sentence), reading
with hooks on the parts the architecture adapter names:

- ``attention``: ``[L, H, n, n]`` attention probabilities (row = query), as `extract` gives them;
- ``resid_post``: ``[L, n, d_model]`` the residual after each block (the block's output; for
  pre-LN decoders the final norm is *not* applied, see `ModelAdapter.logits`);
- ``mlp_post``: ``[L, n, d_mlp]`` the hidden MLP activation (after the nonlinearity and, for gated
  MLPs, the gate: the input of the MLP's output projection). These are the "neurons";
- ``head_out``: ``[L, n, H, head_dim]`` each head's output before the output projection.

Token ids are built by `extract`'s own encoder (same BOS rule, same truncation), so position ``i``
here is position ``i`` of the `SentenceAttention` record. Each sentence runs unpadded on its own,
so nothing depends on which other sentences share its batch.

The cache (``<cache>/activations/...``, float32 ``.npz``) is keyed by the model fingerprint, the
text, the encoding settings and ``what``; an entry that is damaged or made otherwise is recomputed.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd
import torch

from attn_tools._cache import CacheWarning, hash_key, slot_is_usable, write_or_warn
from attn_tools.extract import _check_inputs, _check_sentence, _encode, _resolve_root
from attn_tools.models import ModelBundle
from attn_tools.models.adapters import get_adapter

__all__ = ["Activations", "CaptureWhat", "NEURON_COLUMNS", "capture", "iter_capture", "top_neurons"]

CaptureWhat = Literal["attention", "resid_post", "mlp_post", "head_out"]
NEURON_COLUMNS = (
    "layer",
    "neuron",
    "max_activation",
    "mean_activation",
    "top_tokens",
    "top_sentence",
)
_VERSION = 1


@dataclass(frozen=True, eq=False)
class Activations:
    """What `iter_capture` read on one sentence; arrays not asked for are None (float32)."""

    text: str
    tokens: tuple[str, ...]
    token_ids: tuple[int, ...]
    attention: np.ndarray | None = None  # [L, H, n, n]
    resid_post: np.ndarray | None = None  # [L, n, d_model]
    mlp_post: np.ndarray | None = None  # [L, n, d_mlp]
    head_out: np.ndarray | None = None  # [L, n, H, head_dim]

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)


def _check_what(what: object) -> tuple[str, ...]:
    items = (what,) if isinstance(what, str) else tuple(what)  # type: ignore[arg-type]
    bad = [w for w in items if w not in get_args(CaptureWhat)]
    if bad or not items:
        raise ValueError(
            f"what={what!r}: {bad or 'nothing'} is not one of {get_args(CaptureWhat)}. "
            "Fix: pass e.g. what=('resid_post', 'mlp_post')."
        )
    return tuple(dict.fromkeys(items))  # keep order, drop repeats


@torch.no_grad()
def _run(bundle: ModelBundle, ids: list[int], what: tuple[str, ...]) -> dict[str, np.ndarray]:
    adapter = get_adapter(bundle)
    found: dict[str, list[Any]] = {w: [None] * adapter.n_layers for w in what}
    handles = []

    def first(x: Any) -> torch.Tensor:
        return x[0] if isinstance(x, (tuple, list)) else x

    for la in range(adapter.n_layers):
        if "resid_post" in what:
            handles.append(
                adapter.layer(la).register_forward_hook(
                    lambda _m, _a, out, la=la: found["resid_post"].__setitem__(la, first(out)[0])
                )
            )
        if "mlp_post" in what:
            handles.append(
                adapter.mlp_point(la).register_forward_pre_hook(
                    lambda _m, args, la=la: found["mlp_post"].__setitem__(la, args[0][0])
                )
            )
        if "head_out" in what:

            def read(per_head: torch.Tensor, la: int = la) -> torch.Tensor:
                found["head_out"][la] = per_head[0]
                return per_head

            handles.append(adapter.hook_head_outputs(la, read))
    try:
        out = bundle.model(
            input_ids=torch.tensor([ids], device=bundle.device),
            output_attentions="attention" in what,
            use_cache=False,
        )
    finally:
        for handle in handles:
            handle.remove()
    if "attention" in what:
        found["attention"] = [a[0] for a in out.attentions]
    result = {}
    for w in what:
        if any(t is None for t in found[w]):
            raise RuntimeError(f"{w} was not seen in every layer of {bundle.name}")
        result[w] = np.ascontiguousarray(torch.stack(found[w]).float().cpu().numpy())
    return result


def _entry(root: Path, bundle: ModelBundle, text: str, settings: dict) -> Path:
    key = hash_key("activations", _VERSION, bundle.fingerprint, text, settings)
    return root / "activations" / bundle.fingerprint / key[:2] / f"{key}.npz"


def _load(path: Path, ids: list[int], settings: dict, index: int) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta"]).decode("utf-8"))
            if meta != {"version": _VERSION, "settings": settings}:
                raise ValueError(f"it was made with {meta!r}")
            if z["token_ids"].tolist() != ids:
                raise ValueError("its token ids differ from the tokenizer's")
            arrays = {w: z[w] for w in settings["what"]}
        n = len(ids)
        for w, a in arrays.items():
            if a.dtype != np.float32 or not np.isfinite(a).all() or n not in a.shape[1:3]:
                raise ValueError(f"its {w} has dtype {a.dtype}, shape {a.shape} or bad values")
        return arrays
    except Exception as exc:  # any damage at all means: do not trust it
        warnings.warn(
            f"activation cache file {path} for sentence {index} is unusable ({exc}); "
            "recomputing it.",
            CacheWarning,
            stacklevel=4,
        )
        path.unlink(missing_ok=True)
        return None


def _save(path: Path, ids: list[int], settings: dict, arrays: dict[str, np.ndarray]) -> None:
    meta = json.dumps({"version": _VERSION, "settings": settings}).encode("utf-8")

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(
                fh,
                token_ids=np.asarray(ids, dtype=np.int64),
                meta=np.frombuffer(meta, dtype=np.uint8),
                **arrays,
            )

    write_or_warn(path, write, "activation", suffix=".npz")


def iter_capture(
    bundle: ModelBundle,
    sentences: Iterable[str] | str,
    what: Sequence[CaptureWhat] | CaptureWhat = ("attention", "resid_post", "mlp_post", "head_out"),
    *,
    cache: bool | str | Path = True,
    max_length: int | None = None,
    prepend_bos: bool | None = None,
) -> Iterator[Activations]:
    """Yield one `Activations` per sentence, in order, streaming (see the module docstring).

    Args:
        bundle: a model from `load_model`.
        sentences: any iterable of strings (one string is one sentence).
        what: which activations to read.
        cache: True for the default cache folder, a folder, or False.
        max_length, prepend_bos: as in `extract` (same defaults, same token ids).

    Example:
        >>> acts = next(iter_capture(load_model("smollm2"), ["The cat sat."], ("mlp_post",)))
        >>> acts.mlp_post.shape   # [layers, tokens, d_mlp]
    """
    _check_inputs(bundle, sentences)
    chosen = _check_what(what)
    if isinstance(sentences, str):
        sentences = [sentences]
    limit = bundle.max_length if max_length is None else min(int(max_length), bundle.max_length)
    use_bos = bundle.kind == "causal" if prepend_bos is None else bool(prepend_bos)
    settings = {"max_length": limit, "prepend_bos": use_bos, "what": list(chosen)}
    root = _resolve_root(cache)
    return _stream(bundle, sentences, chosen, settings, root)


def _stream(
    bundle: ModelBundle,
    sentences: Iterable[str],
    chosen: tuple[str, ...],
    settings: dict[str, Any],
    root: Path | None,
) -> Iterator[Activations]:
    for index, raw in enumerate(sentences):
        text = _check_sentence(index, raw)
        enc = _encode(bundle, index, text, settings["max_length"], settings["prepend_bos"])
        arrays = None
        path = None
        if root is not None:
            path = _entry(root, bundle, text, settings)
            if slot_is_usable(path, "activation", stacklevel=4):
                arrays = _load(path, enc.ids, settings, index)
            else:
                path = None
        if arrays is None:
            arrays = _run(bundle, enc.ids, chosen)
            if path is not None:
                _save(path, enc.ids, settings, arrays)
        yield Activations(
            text=text,
            tokens=tuple(bundle.tokenizer.convert_ids_to_tokens(enc.ids)),
            token_ids=tuple(enc.ids),
            **arrays,
        )


def capture(
    bundle: ModelBundle,
    sentences: Iterable[str] | str,
    what: Sequence[CaptureWhat] | CaptureWhat = ("attention", "resid_post", "mlp_post", "head_out"),
    **options: Any,
) -> list[Activations]:
    """`iter_capture` collected into a list (fine for a few hundred sentences)."""
    return list(iter_capture(bundle, sentences, what, **options))


def top_neurons(
    bundle: ModelBundle,
    sentences: Iterable[str] | str,
    *,
    layer: int | Sequence[int] | None = None,
    k: int = 10,
    n_examples: int = 3,
    cache: bool | str | Path = True,
) -> pd.DataFrame:
    """The MLP neurons with the largest activation, and the tokens that drive them.

    Args:
        bundle, sentences: as in `iter_capture` (read with ``what=("mlp_post",)``).
        layer: one layer, several, or None for all.
        k: neurons kept per layer (ranked by their maximum activation over all tokens).
        n_examples: tokens listed per neuron (its highest activations, any sentence).
        cache: as in `iter_capture`.

    Returns:
        Columns `NEURON_COLUMNS`: ``max_activation`` and ``mean_activation`` over every token of
        every sentence; ``top_tokens`` like ``"'dog' s0:3 (4.21) | 'cat' s2:5 (3.90)"`` (token,
        sentence index:position, activation); ``top_sentence`` is the text holding the maximum.
    """
    adapter = get_adapter(bundle)
    layers = (
        list(range(adapter.n_layers))
        if layer is None
        else [layer]
        if isinstance(layer, int)
        else list(layer)
    )
    for la in layers:
        adapter.layer(la)  # range check with a clear message
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k={k!r} must be a positive integer. Fix: pass e.g. k=10.")
    best: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # layer -> values [m, d], where [m, d, 3]
    total: dict[int, np.ndarray] = {}
    count = 0
    texts: list[str] = []
    tokens: list[tuple[str, ...]] = []
    for s, acts in enumerate(iter_capture(bundle, sentences, ("mlp_post",), cache=cache)):
        texts.append(acts.text)
        tokens.append(acts.tokens)
        count += acts.n_tokens
        for la in layers:
            a = acts.mlp_post[la]  # [n, d]
            total[la] = total.get(la, 0) + a.astype(np.float64).sum(0)
            where = np.stack(
                [np.full(a.shape, s), np.broadcast_to(np.arange(a.shape[0])[:, None], a.shape)], -1
            )
            values, places = a, where
            if la in best:
                values = np.concatenate([best[la][0], a])
                places = np.concatenate([best[la][1], where])
            keep = min(n_examples, values.shape[0])
            order = np.argsort(-values, axis=0, kind="stable")[:keep]  # [keep, d]
            cols = np.arange(values.shape[1])
            best[la] = (values[order, cols], places[order, cols])
    if not texts:
        raise ValueError("sentences is empty. Fix: pass at least one sentence.")
    rows = []
    for la in layers:
        values, places = best[la]
        top = np.argsort(-values[0], kind="stable")[:k]
        for neuron in top:
            parts = []
            for j in range(values.shape[0]):
                s, pos = (int(v) for v in places[j, neuron])
                parts.append(f"{tokens[s][pos]!r} s{s}:{pos} ({values[j, neuron]:.2f})")
            rows.append(
                {
                    "layer": la,
                    "neuron": int(neuron),
                    "max_activation": float(values[0, neuron]),
                    "mean_activation": float(total[la][neuron] / count),
                    "top_tokens": " | ".join(parts),
                    "top_sentence": texts[int(places[0, neuron, 0])],
                }
            )
    return pd.DataFrame(rows, columns=list(NEURON_COLUMNS))
