"""One small adapter per architecture family: where the parts an intervention needs live.

An intervention (logit lens, head ablation, and later capture, attention replacement and
attribution patching) never walks a model's module tree itself; it asks a `ModelAdapter`:

- ``layer(i)``: the i-th transformer block (its output is the residual stream after block i);
- ``attention(i)``: the self-attention module of block i;
- ``out_proj(i)``: the attention output projection of block i. Its **input**, shaped
  ``[batch, seq, n_heads * head_dim]``, holds every query head's output side by side
  (``head_slice(h)``); hook it with a forward pre-hook (`hook_head_outputs`) to read, zero,
  mean-ablate or patch single heads. transformers 5 removed ``head_mask``/``prune_heads``, so this
  is the one place heads can be edited;
- ``mlp_point(i)``: the MLP's output projection; its input is the hidden (post-activation,
  post-gate) MLP activation ``[batch, seq, d_mlp]``;
- ``final_norm`` and ``unembed`` (``None`` for encoders loaded without an LM head), and
  ``logits(resid)`` which applies them the way the model does (Gemma's soft-capping included).

Adding an architecture is one `_FamilyPaths` entry in `_FAMILIES`; anything else gets the generic
fallback, which finds the same parts by their usual names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from attn_tools.models import ModelBundle, ModelKind

__all__ = ["AdapterError", "BosConvention", "ModelAdapter", "get_adapter", "list_families"]

#: how the first token is chosen: decoders get a BOS prepended (as `extract` does), BERT-style
#: encoders start with the tokenizer's own [CLS].
BosConvention = Literal["prepend", "cls"]

#: a function ``(head_outputs [batch, seq, n_heads, head_dim]) -> same shape`` for one layer.
HeadEdit = Callable[[torch.Tensor], torch.Tensor]


class AdapterError(ValueError):
    """A model's modules could not be mapped; the message names the model and the fix."""


@dataclass(frozen=True)
class _FamilyPaths:
    """Dotted paths, relative to ``model.base_model`` (layers, final norm) or to a block."""

    layers: str
    attention: str
    out_proj: str
    mlp_point: str
    final_norm: str | None
    kind: ModelKind
    bos: BosConvention
    #: the module whose output holds the value vectors; ``value_packed`` when it packs q, k, v
    #: on the last axis with V last (GPT-2's ``c_attn``, Phi-3's ``qkv_proj``)
    value: str = ""
    value_packed: bool = False


_LLAMA_LIKE = _FamilyPaths(
    layers="layers",
    attention="self_attn",
    out_proj="self_attn.o_proj",
    mlp_point="mlp.down_proj",
    final_norm="norm",
    kind="causal",
    bos="prepend",
    value="self_attn.v_proj",
)

#: model_type → where its parts live. One entry per family; Qwen2 and Gemma 3 share Llama's names.
_FAMILIES: dict[str, _FamilyPaths] = {
    "bert": _FamilyPaths(
        layers="encoder.layer",
        attention="attention.self",
        out_proj="attention.output.dense",
        mlp_point="output.dense",
        final_norm=None,  # post-LN: every block already ends with its own LayerNorm
        kind="encoder",
        bos="cls",
        value="attention.self.value",
    ),
    "gpt2": _FamilyPaths(
        layers="h",
        attention="attn",
        out_proj="attn.c_proj",
        mlp_point="mlp.c_proj",
        final_norm="ln_f",
        kind="causal",
        bos="prepend",
        value="attn.c_attn",
        value_packed=True,
    ),
    "gpt_neo": _FamilyPaths(
        layers="h",
        attention="attn.attention",
        out_proj="attn.attention.out_proj",
        mlp_point="mlp.c_proj",
        final_norm="ln_f",
        kind="causal",
        bos="prepend",
        value="attn.attention.v_proj",
    ),
    "llama": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "gemma3_text": _LLAMA_LIKE,
}


def list_families() -> list[str]:
    """The ``model_type`` values with a dedicated adapter (anything else uses the fallback)."""
    return sorted(_FAMILIES)


def _get(root: nn.Module, path: str, model_type: str) -> nn.Module:
    try:
        return root.get_submodule(path)
    except AttributeError as exc:
        raise AdapterError(
            f"{model_type!r} model has no module {path!r} under {type(root).__name__} ({exc}). "
            "Fix: the model's layout differs from its family's; add an entry to "
            "attn_tools/models/adapters.py `_FAMILIES`."
        ) from None


@dataclass(frozen=True, eq=False)
class ModelAdapter:
    """Where the parts of one loaded model live, and its attention sizes.

    Attributes:
        model: the ``transformers`` model the modules belong to.
        family: the adapter's family (``"llama"``, ``"gpt2"``, ...; ``"generic"`` for the fallback).
        kind: ``"encoder"`` or ``"causal"`` (the vocabulary of `ModelBundle.kind`).
        n_layers, n_heads: blocks and query heads.
        n_kv_heads: key/value heads (smaller than ``n_heads`` under grouped-query attention; the
            output projection still sees one slice per *query* head).
        head_dim: width of one head's output slice.
        bos: `BosConvention`.
    """

    model: Any
    family: str
    kind: ModelKind
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    bos: BosConvention
    _layers: nn.ModuleList
    _paths: _FamilyPaths

    # ------------------------------------------------------------------ modules

    def _check_layer(self, i: int) -> int:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < self.n_layers:
            raise IndexError(
                f"layer {i!r} is out of range for {self.family} with {self.n_layers} layers. "
                f"Fix: pass 0 ≤ layer < {self.n_layers}."
            )
        return i

    def layer(self, i: int) -> nn.Module:
        """Block ``i``; its output (first element if a tuple) is the residual after block i."""
        return self._layers[self._check_layer(i)]

    def attention(self, i: int) -> nn.Module:
        """The self-attention module of block ``i``."""
        return _get(self.layer(i), self._paths.attention, self.family)

    def out_proj(self, i: int) -> nn.Module:
        """The attention output projection of block ``i`` (input ``[B, n, n_heads*head_dim]``)."""
        return _get(self.layer(i), self._paths.out_proj, self.family)

    def value_proj(self, i: int) -> nn.Module:
        """The module of block ``i`` whose output holds the value vectors (see `hook_values`)."""
        if not self._paths.value:
            raise AdapterError(
                f"the {self.family} adapter does not know where block {i}'s value vectors are. "
                "Fix: set `value` in its attn_tools/models/adapters.py `_FAMILIES` entry."
            )
        return _get(self.layer(i), self._paths.value, self.family)

    def kv_head(self, head: int) -> int:
        """The key/value head that query ``head`` reads (grouped-query attention shares them)."""
        self.head_slice(head)  # range check
        return head // (self.n_heads // self.n_kv_heads)

    def mlp_point(self, i: int) -> nn.Module:
        """The MLP output projection of block ``i``; its input is the hidden MLP activation."""
        return _get(self.layer(i), self._paths.mlp_point, self.family)

    @property
    def final_norm(self) -> nn.Module | None:
        """The norm applied to the last residual before unembedding (None for post-LN BERT)."""
        if self._paths.final_norm is None:
            return None
        return _get(self.model.base_model, self._paths.final_norm, self.family)

    @property
    def unembed(self) -> nn.Module | None:
        """The LM head (residual → vocabulary logits), or None for a model without one."""
        if self.kind != "causal":
            return None  # an encoder's MLM head (if any) needs its transform too: not a lens
        return self.model.get_output_embeddings()

    def head_slice(self, head: int) -> slice:
        """Columns of the output projection's input that belong to query head ``head``."""
        if isinstance(head, bool) or not isinstance(head, int) or not 0 <= head < self.n_heads:
            raise IndexError(
                f"head {head!r} is out of range for {self.family} with {self.n_heads} heads. "
                f"Fix: pass 0 ≤ head < {self.n_heads}."
            )
        return slice(head * self.head_dim, (head + 1) * self.head_dim)

    # ------------------------------------------------------------------ computations

    def logits(self, resid: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits from a residual ``[..., d_model]``, as the model's own head does.

        Raises:
            AdapterError: the model has no LM head (an encoder such as MiniLM).
        """
        head = self.unembed
        if head is None:
            raise AdapterError(
                f"{self.family} model ({type(self.model).__name__}) has no LM head, so residuals "
                "cannot be read as next-token logits. Fix: use a decoder model (e.g. 'smollm2')."
            )
        norm = self.final_norm
        x = norm(resid) if norm is not None else resid
        out = head(x)
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        if cap:  # Gemma: the model squashes its logits, so the lens must too
            out = torch.tanh(out / cap) * cap
        return out

    def hook_head_outputs(self, layer: int, edit: HeadEdit) -> torch.utils.hooks.RemovableHandle:
        """Register a forward pre-hook that rewrites block ``layer``'s per-head outputs.

        ``edit`` receives the output projection's input viewed as ``[B, n, n_heads, head_dim]``
        and returns a tensor of that shape (or the same object to only read it). Remove the hook
        with ``handle.remove()``.
        """
        module = self.out_proj(layer)
        h, d = self.n_heads, self.head_dim

        def pre_hook(_module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
            x = args[0]
            per_head = x.reshape(*x.shape[:-1], h, d)
            new = edit(per_head)
            if new is per_head:
                return None
            return (new.reshape(x.shape), *args[1:])

        return module.register_forward_pre_hook(pre_hook)

    def hook_values(
        self, layer: int, read: Callable[[torch.Tensor], None]
    ) -> torch.utils.hooks.RemovableHandle:
        """Register a forward hook that hands block ``layer``'s value vectors to ``read``.

        ``read`` receives ``[B, n, n_kv_heads, head_dim]`` (before any head repetition: query
        head ``h`` reads kv head ``kv_head(h)``). The attention output of query head ``h``
        is ``P_h @ V[:, :, kv_head(h)]``, which is what attention replacement recomputes.
        """
        module = self.value_proj(layer)
        packed = self._paths.value_packed
        kv, d = self.n_kv_heads, self.head_dim

        def hook(_module: nn.Module, _args: Any, output: Any) -> None:
            out = output[0] if isinstance(output, (tuple, list)) else output
            if out.shape[-1] != kv * d and not (packed and out.shape[-1] > kv * d):
                raise AdapterError(
                    f"{self.family} block {layer}: the value output is {out.shape[-1]} wide, "
                    f"expected {kv} kv heads × {d}. Fix: correct `value` in `_FAMILIES`."
                )
            values = out[..., out.shape[-1] - kv * d :]
            read(values.reshape(*values.shape[:-1], kv, d))

        return module.register_forward_hook(hook)

    def __repr__(self) -> str:
        return (
            f"ModelAdapter(family={self.family!r}, kind={self.kind!r}, layers={self.n_layers}, "
            f"heads={self.n_heads}, kv_heads={self.n_kv_heads}, head_dim={self.head_dim})"
        )


# ----------------------------------------------------------------------------- construction


def _sizes(config: Any, model_type: str) -> tuple[int, int, int, int, int]:
    cfg = getattr(config, "text_config", None) or config
    n_layers = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", None)
    n_heads = getattr(cfg, "num_attention_heads", None) or getattr(cfg, "n_head", None)
    hidden = getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd", None)
    if not n_layers or not n_heads or not hidden:
        raise AdapterError(
            f"the {model_type!r} config has no layer/head/hidden sizes. Fix: use a transformer "
            "with self-attention (BERT, GPT-2, GPT-Neo, Llama, Qwen2, Gemma 3)."
        )
    n_kv = getattr(cfg, "num_key_value_heads", None) or n_heads
    head_dim = getattr(cfg, "head_dim", None) or hidden // n_heads
    return int(n_layers), int(n_heads), int(n_kv), int(head_dim), int(hidden)


_ATTN_NAMES = ("self_attn", "attention", "attn", "self_attention")
_OUT_NAMES = ("o_proj", "out_proj", "c_proj", "dense", "wo", "proj")
_MLP_OUT_NAMES = ("down_proj", "c_proj", "fc2", "dense_4h_to_h", "w2", "dense")
_VALUE_NAMES = ("v_proj", "value", "v", "wv", "v_lin")
# packed q, k, v with V last (GPT-NeoX's query_key_value interleaves per head: not listed)
_PACKED_NAMES = ("c_attn", "qkv_proj", "Wqkv")
_NORM_NAMES = ("norm", "ln_f", "final_layernorm", "final_layer_norm", "final_norm")


def _features(module: nn.Module) -> tuple[int, int] | None:
    """``(in, out)`` of a Linear or of GPT-2's Conv1D (which stores its weight as [in, out])."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    weight = getattr(module, "weight", None)
    if type(module).__name__ == "Conv1D" and weight is not None:
        return int(weight.shape[0]), int(weight.shape[1])
    return None


def _discover(
    model: nn.Module, n_layers: int, width: int, d_model: int, model_type: str, kv_width: int
) -> _FamilyPaths:
    """Find the parts by their usual names: the generic fallback for unlisted families."""
    base = model.base_model
    lists = [
        (name, mod)
        for name, mod in base.named_modules()
        if isinstance(mod, nn.ModuleList) and len(mod) == n_layers
    ]
    if not lists:
        raise AdapterError(
            f"no list of {n_layers} blocks found in the {model_type!r} model. Fix: add the family "
            "to attn_tools/models/adapters.py `_FAMILIES`."
        )
    layers_path, layers = lists[0]
    block = layers[0]
    names = dict(block.named_modules())
    attention = next(
        (p for p in names if p and p.split(".")[-1] in _ATTN_NAMES),
        None,
    )
    out_proj = None
    if attention is not None:
        out_proj = next(
            (
                p
                for p in names
                if p.startswith(attention + ".")
                and p.split(".")[-1] in _OUT_NAMES
                and _features(names[p]) == (width, d_model)
            ),
            None,
        )
    mlp = next(
        (
            p
            for p in names
            if p.split(".")[-1] in _MLP_OUT_NAMES
            and (attention is None or not p.startswith(attention + "."))
            # the MLP's way back into the residual: BERT's intermediate.dense goes the other way
            and (_features(names[p]) or (0, 0))[1] == d_model
        ),
        None,
    )
    value, packed = "", False
    if attention is not None:
        for p in names:
            if not p.startswith(attention + "."):
                continue
            feats = _features(names[p]) or (0, 0)
            leaf = p.split(".")[-1]
            if leaf in _VALUE_NAMES and feats[1] == kv_width:
                value, packed = p, False
                break
            if leaf in _PACKED_NAMES and feats[1] == width + 2 * kv_width:
                value, packed = p, True
                break
    if attention is None or out_proj is None or mlp is None:
        raise AdapterError(
            f"the {model_type!r} block could not be mapped (attention={attention!r}, "
            f"output projection={out_proj!r}, MLP output={mlp!r}). Fix: add the family to "
            "attn_tools/models/adapters.py `_FAMILIES`."
        )
    base_children = dict(base.named_children())
    norm = next((n for n in _NORM_NAMES if n in base_children), None)
    archs = " ".join(getattr(model.config, "architectures", None) or [])
    causal = model.get_output_embeddings() is not None or "CausalLM" in archs
    return _FamilyPaths(
        layers=layers_path,
        attention=attention,
        out_proj=out_proj,
        mlp_point=mlp,
        final_norm=norm,
        kind="causal" if causal else "encoder",
        bos="prepend" if causal else "cls",
        value=value,  # "" when not found: only attention replacement needs it, and says so
        value_packed=packed,
    )


def get_adapter(model: Any, *, generic: bool = False) -> ModelAdapter:
    """The adapter for a loaded model (a `ModelBundle` or its ``.model``).

    Args:
        model: a ``transformers`` model or a `ModelBundle`.
        generic: use the name-discovering fallback even for a listed family (for tests and for
            checking a new family against it).

    Example:
        >>> adapter = get_adapter(load_model("smollm2").model)
        >>> adapter.out_proj(3)   # the Linear whose input holds layer 3's 9 head outputs
    """
    if isinstance(model, ModelBundle):
        kind_hint: ModelKind | None = model.kind
        model = model.model
    else:
        kind_hint = None
    if not isinstance(model, nn.Module) or not hasattr(model, "config"):
        raise TypeError(
            f"get_adapter needs a transformers model or a ModelBundle, got "
            f"{type(model).__name__}. Fix: pass load_model(...) or its .model."
        )
    model_type = str(getattr(model.config, "model_type", ""))
    n_layers, n_heads, n_kv, head_dim, d_model = _sizes(model.config, model_type)
    # a module wrapped by models.custom.bundle_from_module names its own parts
    own = getattr(model, "adapter_paths", None)
    if isinstance(own, dict):
        paths: _FamilyPaths | None = _FamilyPaths(**own)
    else:
        paths = None if generic else _FAMILIES.get(model_type)
    family = model_type if paths is not None else "generic"
    if paths is None:
        paths = _discover(model, n_layers, n_heads * head_dim, d_model, model_type, n_kv * head_dim)
    if kind_hint is not None and kind_hint != paths.kind:
        paths = _FamilyPaths(**{**paths.__dict__, "kind": kind_hint})
    layers = _get(model.base_model, paths.layers, model_type)
    if not isinstance(layers, nn.ModuleList) or len(layers) != n_layers:
        raise AdapterError(
            f"{model_type!r}: {paths.layers!r} is not a list of {n_layers} blocks. Fix: correct "
            "its entry in attn_tools/models/adapters.py `_FAMILIES`."
        )
    return ModelAdapter(
        model=model,
        family=family,
        kind=paths.kind,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=n_kv,
        head_dim=head_dim,
        bos=paths.bos,
        _layers=layers,
        _paths=paths,
    )
