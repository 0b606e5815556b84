"""Bring your own model: any torch module that returns attention probabilities becomes a bundle.

The rest of the toolkit (`extract`, `score_heads`, the best-fit grids, the interventions) talks to
a `ModelBundle` whose ``model`` and ``tokenizer`` behave like a small subset of the Hugging Face
ones. `bundle_from_module` wraps a user's module and tokenizer so that they do, and checks the
module once on a probe input, so a wrong shape or a non-causal pattern fails at once with an
error that names it, not deep inside a later analysis.

What the module must do (`AttentionModule`)::

    logits, attentions = module(input_ids)      # input_ids: LongTensor [batch, n]
    # logits:     [batch, n, vocab] for a causal model (next-token logits),
    #             [batch, n, d_model] (final hidden states) for an encoder
    # attentions: one [batch, heads, n, n] tensor per layer, rows summing to 1
    #             (row = query, column = key), i.e. the softmax probabilities

What the tokenizer must do (`TextTokenizer`)::

    ids, offsets = tokenizer.encode(text)       # offsets: (start, end) in text per id
    tokenizer.decode(ids) -> str
    tokenizer.id_to_token(i) -> str             # a readable label ("a", " ", "<bos>")
    tokenizer.special_ids, .bos_id, .pad_id

and `ModuleParts` names, by dotted path, where the blocks, attention, output projection (whose
*input* is the heads side by side), MLP output, final norm and unembedding live, so the
interventions adapter (`attn_tools.models.adapters.get_adapter`) finds them. A fast Hugging Face
tokenizer is accepted as it is.

Example:
    >>> bundle = bundle_from_module(my_model, my_tokenizer, kind="causal", name="mine",
    ...                             parts=ModuleParts(layers="blocks", attention="attn",
    ...                                               out_proj="attn.out_proj",
    ...                                               mlp_point="mlp.fc_out",
    ...                                               final_norm="ln_f", unembed="head"),
    ...                             max_length=128)
    >>> records = extract(bundle, ["some text"])
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from attn_tools.models import ModelBundle, ModelKind, ModelLoadError

__all__ = [
    "AttentionModule",
    "ModuleParts",
    "TextTokenizer",
    "bundle_from_module",
]

#: ``config.model_type`` of every wrapped module; `get_adapter` reads its parts from the wrapper
CUSTOM_MODEL_TYPE = "attn_tools_custom"


@runtime_checkable
class TextTokenizer(Protocol):
    """The tokenizer side of the protocol (see the module docstring)."""

    special_ids: frozenset[int]
    bos_id: int | None
    pad_id: int

    def encode(self, text: str) -> tuple[list[int], list[tuple[int, int]]]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def id_to_token(self, token_id: int) -> str: ...


class AttentionModule(Protocol):
    """The model side: ``module(input_ids) -> (logits or hidden, [attention per layer])``."""

    def __call__(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, Sequence[torch.Tensor]]: ...


@dataclass(frozen=True)
class ModuleParts:
    """Where the parts the interventions need live, as dotted paths.

    Attributes:
        layers: an ``nn.ModuleList`` of blocks, relative to the module. A block's forward takes
            the residual stream as its first positional argument and returns it (or a tuple whose
            first element is it).
        attention: the attention module, relative to a block.
        out_proj: the attention output ``nn.Linear``, relative to a block; its input must be
            ``[batch, n, heads * head_dim]`` with head ``h`` in columns ``h*head_dim:(h+1)*head_dim``.
        mlp_point: the MLP output projection, relative to a block (its input is the hidden MLP
            activation).
        final_norm: the norm before the unembedding, relative to the module (None if none).
        unembed: the ``nn.Linear`` from the residual to the vocabulary, relative to the module
            (None for an encoder without one).
        value: optional, relative to a block: the module whose output holds the value vectors
            (needed only by attention replacement).
        value_packed: True when ``value`` packs q, k, v on the last axis with v last.
    """

    layers: str
    attention: str
    out_proj: str
    mlp_point: str
    final_norm: str | None = None
    unembed: str | None = None
    value: str = ""
    value_packed: bool = False


@dataclass
class ModuleConfig:
    """The few config fields the toolkit reads from ``bundle.model.config``."""

    model_type: str
    name: str
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    hidden_size: int
    vocab_size: int
    max_position_embeddings: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ModuleOutput:
    """What ``bundle.model(...)`` returns: the fields the toolkit reads from HF outputs."""

    logits: torch.Tensor | None
    last_hidden_state: torch.Tensor | None
    attentions: tuple[torch.Tensor, ...] | None


class ModuleModel(nn.Module):
    """A user's module dressed as the subset of a ``transformers`` model the toolkit calls.

    ``forward(input_ids, attention_mask=None, output_attentions=False, use_cache=None)`` returns a
    `ModuleOutput`. Right padding never changes a causal model's real positions, so a padded
    causal batch runs as one call; an encoder batch with padding runs row by row unless the
    module's forward takes ``attention_mask`` itself, so padding never leaks into the attention.
    """

    def __init__(
        self, module: nn.Module, parts: ModuleParts, kind: ModelKind, config: ModuleConfig
    ) -> None:
        super().__init__()
        self.inner = module
        self.parts = parts
        self.kind = kind
        self.config = config
        self._takes_mask = "attention_mask" in inspect.signature(module.forward).parameters
        # read by attn_tools.models.adapters.get_adapter: the same fields as its _FamilyPaths
        self.adapter_paths = {
            "layers": parts.layers,
            "attention": parts.attention,
            "out_proj": parts.out_proj,
            "mlp_point": parts.mlp_point,
            "final_norm": parts.final_norm,
            "kind": kind,
            "bos": "prepend" if kind == "causal" else "cls",
            "value": parts.value,
            "value_packed": parts.value_packed,
        }

    @property
    def base_model(self) -> nn.Module:
        return self.inner

    def get_output_embeddings(self) -> nn.Module | None:
        if self.parts.unembed is None:
            return None
        return self.inner.get_submodule(self.parts.unembed)

    def _call(self, ids: torch.Tensor, mask: torch.Tensor | None):
        out = self.inner(ids, attention_mask=mask) if mask is not None else self.inner(ids)
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise TypeError(
                f"{self.config.name}: forward returned {type(out).__name__}, not the pair "
                "(logits, attentions). Fix: return (logits [B, n, V], [attention [B, H, n, n] "
                "per layer]) from forward (see attn_tools.models.custom)."
            )
        return out[0], tuple(out[1])

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        use_cache: bool | None = None,
        **_ignored: Any,
    ) -> ModuleOutput:
        padded = attention_mask is not None and not bool(attention_mask.bool().all())
        if not padded or self.kind == "causal":
            main, atts = self._call(input_ids, None)
        elif self._takes_mask:
            main, atts = self._call(input_ids, attention_mask)
        else:
            main, atts = self._per_row(input_ids, attention_mask)
        causal = self.kind == "causal"
        return ModuleOutput(
            logits=main if causal else None,
            last_hidden_state=None if causal else main,
            attentions=atts if output_attentions else None,
        )

    def _per_row(self, ids: torch.Tensor, mask: torch.Tensor):
        width = ids.shape[1]
        mains, atts = [], []
        for row in range(ids.shape[0]):
            n = int(mask[row].sum())
            main, att = self._call(ids[row : row + 1, :n], None)
            pad = width - n
            mains.append(nn.functional.pad(main, (0, 0, 0, pad)))
            atts.append([nn.functional.pad(a, (0, pad, 0, pad)) for a in att])
        per_layer = tuple(torch.cat(layer) for layer in zip(*atts))
        return torch.cat(mains), per_layer


class TokenizerShim:
    """A `TextTokenizer` dressed as the subset of a fast HF tokenizer the toolkit calls."""

    is_fast = True

    def __init__(self, tokenizer: TextTokenizer, vocab_size: int) -> None:
        self.inner = tokenizer
        self.vocab_size = vocab_size
        self.bos_token_id = tokenizer.bos_id
        self.eos_token_id = tokenizer.bos_id  # GPT-2 style: one boundary token
        self.pad_token_id = tokenizer.pad_id
        self.all_special_ids = sorted(int(i) for i in tokenizer.special_ids)
        self.model_max_length = 10**30

    def _encode(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        ids, offsets = self.inner.encode(text)
        ids, offsets = [int(i) for i in ids], [(int(s), int(e)) for s, e in offsets]
        if len(ids) != len(offsets):
            raise ValueError(
                f"{type(self.inner).__name__}.encode({text[:40]!r}) returned {len(ids)} ids but "
                f"{len(offsets)} offsets. Fix: return one (start, end) span per id."
            )
        return ids, offsets

    def __call__(
        self,
        text: str,
        *,
        return_offsets_mapping: bool = False,
        return_special_tokens_mask: bool = False,
        truncation: bool = False,
        max_length: int | None = None,
        add_special_tokens: bool = True,
        **_ignored: Any,
    ) -> dict[str, list[Any]]:
        ids, offsets = self._encode(text)
        if not add_special_tokens:
            keep = [i for i, t in enumerate(ids) if t not in self.inner.special_ids]
            ids, offsets = [ids[i] for i in keep], [offsets[i] for i in keep]
        if truncation and max_length is not None:
            ids, offsets = ids[:max_length], offsets[:max_length]
        out: dict[str, list[Any]] = {"input_ids": ids, "attention_mask": [1] * len(ids)}
        if return_offsets_mapping:
            out["offset_mapping"] = offsets
        if return_special_tokens_mask:
            out["special_tokens_mask"] = [int(t in self.inner.special_ids) for t in ids]
        return out

    def encode(self, text: str, add_special_tokens: bool = True, **_ignored: Any) -> list[int]:
        return self(text, add_special_tokens=add_special_tokens)["input_ids"]

    def decode(self, ids: Any, **_ignored: Any) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.reshape(-1).tolist()
        if isinstance(ids, int):
            ids = [ids]
        return self.inner.decode([int(i) for i in ids])

    def convert_ids_to_tokens(self, ids: Any) -> Any:
        if isinstance(ids, int):
            return self.inner.id_to_token(ids)
        return [self.inner.id_to_token(int(i)) for i in ids]

    def __repr__(self) -> str:
        return f"TokenizerShim({self.inner!r})"


# ----------------------------------------------------------------------------- construction


def _check_tokenizer(tokenizer: object) -> None:
    missing = [
        attr
        for attr in ("encode", "decode", "id_to_token", "special_ids", "bos_id", "pad_id")
        if not hasattr(tokenizer, attr)
    ]
    if missing:
        raise TypeError(
            f"tokenizer {type(tokenizer).__name__} lacks {', '.join(missing)}. Fix: implement "
            "the TextTokenizer protocol (encode -> (ids, offsets), decode, id_to_token, "
            "special_ids, bos_id, pad_id; see attn_tools.charlm.CharTokenizer), or pass a fast "
            "Hugging Face tokenizer."
        )


def _probe(
    wrapper: ModuleModel, shim: Any, kind: ModelKind, name: str, device: torch.device
) -> tuple[int, int, int]:
    """Run the module once on a short input; return (layers, heads, last dim of its output)."""
    ids = shim("ab", add_special_tokens=True)["input_ids"]
    if kind == "causal" and shim.bos_token_id is not None:
        ids = [shim.bos_token_id, *ids]
    ids = (ids + ids + ids)[:4] if ids else [0, 0, 0]
    x = torch.tensor([ids], device=device)
    with torch.no_grad():
        main, atts = wrapper._call(x, None)
    n = x.shape[1]
    if not isinstance(main, torch.Tensor) or main.ndim != 3 or main.shape[:2] != (1, n):
        raise ModelLoadError(
            f"{name}: the first output of forward has shape "
            f"{tuple(getattr(main, 'shape', ()))} for input [1, {n}], not [1, {n}, vocab or "
            "d_model]. Fix: return logits [batch, n, vocab] (causal) or hidden states "
            "[batch, n, d_model] (encoder) first."
        )
    if not atts:
        raise ModelLoadError(
            f"{name}: forward returned no attention tensors. Fix: return one [batch, heads, n, n]"
            " probability tensor per layer as the second output."
        )
    heads = None
    for layer, a in enumerate(atts):
        if (
            not isinstance(a, torch.Tensor)
            or a.ndim != 4
            or a.shape[0] != 1
            or a.shape[2:]
            != (
                n,
                n,
            )
        ):
            raise ModelLoadError(
                f"{name}: attention of layer {layer} has shape "
                f"{tuple(getattr(a, 'shape', ()))} for input [1, {n}], not [1, heads, {n}, {n}]. "
                "Fix: return the softmax probabilities per head, query rows × key columns."
            )
        heads = heads or int(a.shape[1])
        if a.shape[1] != heads:
            raise ModelLoadError(
                f"{name}: layer {layer} has {a.shape[1]} heads, layer 0 has {heads}. Fix: every "
                "layer must return the same number of query heads."
            )
        a = a.float()
        if (a < 0).any() or (a.sum(-1) - 1).abs().max() > 1e-3:
            raise ModelLoadError(
                f"{name}: attention of layer {layer} is not a probability distribution per row "
                "(negative values or rows not summing to 1). Fix: return softmax(scores), not "
                "the scores."
            )
        if kind == "causal" and torch.triu(a, diagonal=1).abs().max() > 1e-6:
            raise ModelLoadError(
                f"{name}: kind='causal' but layer {layer} attends to later positions. Fix: mask "
                "the scores above the diagonal, or pass kind='encoder'."
            )
    return len(atts), int(heads or 0), int(main.shape[-1])


def _fingerprint(wrapper: ModuleModel, tokenizer: Any) -> str:
    """Hash of the module class, config, vocabulary and a strided sample of every weight."""
    h = hashlib.sha256()
    h.update(type(wrapper.inner).__qualname__.encode())
    h.update(json.dumps(wrapper.config.to_dict(), sort_keys=True).encode())
    inner = getattr(tokenizer, "inner", None)
    if inner is not None:
        vocab = [inner.id_to_token(i) for i in range(tokenizer.vocab_size)]
        h.update(json.dumps(vocab).encode())
    else:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        h.update((backend.to_str() if backend is not None else repr(tokenizer)).encode())
    with torch.no_grad():
        for key, p in wrapper.inner.state_dict().items():
            h.update(f"{key}{tuple(p.shape)}".encode())
            h.update(p.detach().reshape(-1)[::31].to(torch.float32).cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def bundle_from_module(
    module: nn.Module,
    tokenizer: Any,
    *,
    kind: ModelKind,
    name: str,
    parts: ModuleParts,
    max_length: int,
    device: str | torch.device | None = None,
    source: str | None = None,
) -> ModelBundle:
    """Wrap a torch module that returns attention probabilities as a `ModelBundle`.

    Args:
        module: an ``nn.Module`` following `AttentionModule`: ``module(input_ids)`` returns
            ``(logits or hidden [B, n, ·], [attention [B, H, n, n] per layer])``.
        tokenizer: a `TextTokenizer` (e.g. `attn_tools.charlm.CharTokenizer`) or a fast Hugging
            Face tokenizer.
        kind: ``"causal"`` (attention only to earlier positions; extract prepends ``bos_id``) or
            ``"encoder"``.
        name: display name for titles and records.
        parts: where the blocks and their parts live (`ModuleParts`).
        max_length: the longest input, in tokens (a learned position table's length).
        device: where to run; default the module's current device.
        source: what to record as the bundle's source (default ``name``).

    Returns:
        A `ModelBundle` usable by `extract`, `score_heads`, `best_fit` and the interventions.

    Raises:
        TypeError: ``module`` is not an ``nn.Module`` or the tokenizer lacks the protocol.
        ModelLoadError: a bad ``kind``/``max_length``/``parts``, or the probe forward returned
            wrong shapes, non-probabilities or (for ``kind="causal"``) attention to the future.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"module is {type(module).__name__}, not a torch.nn.Module. Fix: pass your model "
            "object (an nn.Module whose forward returns (logits, attentions))."
        )
    if kind not in ("causal", "encoder"):
        raise ModelLoadError(f"kind={kind!r} is not 'causal' or 'encoder'. Fix: pick one.")
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise ModelLoadError(
            f"max_length={max_length!r} must be an integer ≥ 2 (the model's context in tokens)."
        )
    if not isinstance(parts, ModuleParts):
        raise TypeError(
            f"parts is {type(parts).__name__}, not ModuleParts. Fix: parts=ModuleParts(layers="
            "'blocks', attention='attn', out_proj='attn.out_proj', mlp_point='mlp.fc_out', ...)."
        )
    hf_fast = bool(getattr(tokenizer, "is_fast", False)) and not isinstance(
        tokenizer, TokenizerShim
    )
    if not hf_fast:
        _check_tokenizer(tokenizer)
    dev = torch.device(device) if device is not None else _module_device(module)
    module.to(dev)
    module.eval()
    try:
        layers = module.get_submodule(parts.layers)
    except AttributeError as exc:
        raise ModelLoadError(
            f"{name}: no module {parts.layers!r} ({exc}). Fix: ModuleParts.layers must name the "
            "nn.ModuleList of blocks, e.g. 'blocks'."
        ) from None
    if not isinstance(layers, nn.ModuleList):
        raise ModelLoadError(
            f"{name}: {parts.layers!r} is {type(layers).__name__}, not an nn.ModuleList of blocks."
        )
    for what in ("attention", "out_proj", "mlp_point"):
        path = getattr(parts, what)
        try:
            layers[0].get_submodule(path)
        except AttributeError:
            raise ModelLoadError(
                f"{name}: block 0 has no module {path!r} (ModuleParts.{what}). Fix: give its "
                "dotted path relative to a block."
            ) from None
    for what in ("final_norm", "unembed"):
        path = getattr(parts, what)
        if path is not None:
            try:
                module.get_submodule(path)
            except AttributeError:
                raise ModelLoadError(
                    f"{name}: no module {path!r} (ModuleParts.{what}). Fix: give its dotted "
                    "path relative to the module, or None."
                ) from None
    out_proj = layers[0].get_submodule(parts.out_proj)
    if not isinstance(out_proj, nn.Linear):
        raise ModelLoadError(
            f"{name}: {parts.out_proj!r} is {type(out_proj).__name__}, not an nn.Linear whose "
            "input is the heads side by side. Fix: point ModuleParts.out_proj at that Linear."
        )

    config = ModuleConfig(
        model_type=CUSTOM_MODEL_TYPE,
        name=name,
        num_hidden_layers=len(layers),
        num_attention_heads=0,
        num_key_value_heads=0,
        head_dim=0,
        hidden_size=out_proj.out_features,
        vocab_size=0,
        max_position_embeddings=max_length,
    )
    wrapper = ModuleModel(module, parts, kind, config)
    shim = tokenizer if hf_fast else TokenizerShim(tokenizer, vocab_size=0)
    n_layers, n_heads, last = _probe(wrapper, shim, kind, name, dev)
    if n_layers != len(layers):
        raise ModelLoadError(
            f"{name}: forward returned {n_layers} attention tensors but {parts.layers!r} holds "
            f"{len(layers)} blocks. Fix: return one attention tensor per block."
        )
    if out_proj.in_features % n_heads:
        raise ModelLoadError(
            f"{name}: the output projection takes {out_proj.in_features} inputs, not a multiple "
            f"of the {n_heads} heads. Fix: ModuleParts.out_proj must see the heads side by side."
        )
    vocab = last if kind == "causal" else int(getattr(tokenizer, "vocab_size", 0) or 0)
    config.num_attention_heads = config.num_key_value_heads = n_heads
    config.head_dim = out_proj.in_features // n_heads
    config.vocab_size = vocab
    if not hf_fast:
        shim.vocab_size = vocab or len(getattr(tokenizer, "vocab", ())) or 0
    bos = shim.bos_token_id if kind == "causal" else None
    return ModelBundle(
        model=wrapper,
        tokenizer=shim,
        kind=kind,
        n_layers=n_layers,
        n_heads=n_heads,
        max_length=max_length,
        special_ids=frozenset(int(i) for i in shim.all_special_ids),
        bos_id=None if bos is None else int(bos),
        fingerprint=_fingerprint(wrapper, shim),
        name=name,
        source=source or name,
        device=dev,
    )


def _module_device(module: nn.Module) -> torch.device:
    param = next(iter(module.parameters()), None)
    return param.device if param is not None else torch.device("cpu")
