"""A small causal character transformer that returns its attention probabilities.

Pre-norm blocks (LayerNorm → attention → residual, LayerNorm → MLP → residual), learned or rotary
positions, eager attention. ``forward(input_ids)`` returns ``(logits, attentions)``: the
`attn_tools.models.custom.AttentionModule` protocol, so `CHAR_PARTS` is all
`bundle_from_module` needs. Each attention's ``out_proj`` sees the heads side by side, so head
ablation and patching work through the interventions adapter.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.nn import functional as F

from attn_tools.models.custom import ModuleParts

__all__ = ["CHAR_PARTS", "CharConfig", "CharTransformer", "Positions"]

Positions = Literal["learned", "rotary"]

#: where the interventions adapter finds the parts of a `CharTransformer`
CHAR_PARTS = ModuleParts(
    layers="blocks",
    attention="attn",
    out_proj="attn.out_proj",
    mlp_point="mlp.fc_out",
    final_norm="ln_f",
    unembed="head",
    value="attn.qkv",
    value_packed=True,
)


@dataclass(frozen=True)
class CharConfig:
    """Sizes of a `CharTransformer` (``d_mlp`` 0 means ``4 × d_model``)."""

    vocab_size: int
    n_layers: int = 4
    n_heads: int = 4
    d_model: int = 128
    context: int = 128
    d_mlp: int = 0
    positions: Positions = "rotary"

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_layers", "n_heads", "d_model", "context"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer.")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}. "
                "Fix: pick d_model a multiple of n_heads."
            )
        if self.positions == "rotary" and (self.d_model // self.n_heads) % 2:
            raise ValueError(
                f"rotary positions need an even head size, got {self.d_model // self.n_heads}. "
                "Fix: change d_model or n_heads, or positions='learned'."
            )
        if self.positions not in ("learned", "rotary"):
            raise ValueError(f"positions={self.positions!r} is not 'learned' or 'rotary'.")

    @property
    def mlp_width(self) -> int:
        return self.d_mlp or 4 * self.d_model

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class CharAttention(nn.Module):
    """Causal multi-head self-attention; returns the output and the probabilities."""

    def __init__(self, cfg: CharConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.head_dim = cfg.d_model // cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)  # q, k, v side by side, v last
        self.out_proj = nn.Linear(cfg.d_model, cfg.d_model)  # input: heads side by side
        self.rotary = cfg.positions == "rotary"
        if self.rotary:
            half = self.head_dim // 2
            inv = 1.0 / (10000 ** (torch.arange(half, dtype=torch.float32) / half))
            angles = torch.outer(torch.arange(cfg.context, dtype=torch.float32), inv)
            self.register_buffer("cos", angles.cos(), persistent=False)  # [context, half]
            self.register_buffer("sin", angles.sin(), persistent=False)
        mask = torch.triu(torch.ones(cfg.context, cfg.context, dtype=torch.bool), diagonal=1)
        self.register_buffer("future", mask, persistent=False)

    def _rotate(self, x: torch.Tensor) -> torch.Tensor:
        n, half = x.shape[-2], self.head_dim // 2
        cos, sin = self.cos[:n].to(x.dtype), self.sin[:n].to(x.dtype)
        a, b = x[..., :half], x[..., half:]
        return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, n, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=-1)
        q, k, v = (t.view(batch, n, self.n_heads, self.head_dim).transpose(1, 2) for t in (q, k, v))
        if self.rotary:
            q, k = self._rotate(q), self._rotate(k)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)  # [B, H, n, n]
        scores = scores.masked_fill(self.future[:n, :n], float("-inf"))
        probs = scores.softmax(dim=-1)
        heads = (probs @ v).transpose(1, 2).reshape(batch, n, d)  # [B, n, H * head_dim]
        return self.out_proj(heads), probs


class CharMLP(nn.Module):
    def __init__(self, cfg: CharConfig) -> None:
        super().__init__()
        self.fc_in = nn.Linear(cfg.d_model, cfg.mlp_width)
        self.fc_out = nn.Linear(cfg.mlp_width, cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_out(F.gelu(self.fc_in(x)))


class CharBlock(nn.Module):
    """Pre-norm block; returns ``(residual, attention probabilities)``."""

    def __init__(self, cfg: CharConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = CharAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = CharMLP(cfg)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, probs = self.attn(self.ln1(x))
        x = x + out
        x = x + self.mlp(self.ln2(x))
        return x, probs


class CharTransformer(nn.Module):
    """A causal character transformer: ``forward(ids [B, n]) -> (logits [B, n, V], [probs])``.

    Example:
        >>> model = CharTransformer(CharConfig(vocab_size=40, n_layers=2, n_heads=2, d_model=32))
        >>> logits, atts = model(torch.tensor([[1, 5, 6]]))
        >>> logits.shape, atts[0].shape
        (torch.Size([1, 3, 40]), torch.Size([1, 2, 3, 3]))
    """

    def __init__(self, cfg: CharConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos = nn.Embedding(cfg.context, cfg.d_model) if cfg.positions == "learned" else None
        self.blocks = nn.ModuleList(CharBlock(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if input_ids.ndim != 2:
            raise ValueError(
                f"input_ids has shape {tuple(input_ids.shape)}, not [batch, n]. "
                "Fix: pass a 2-D LongTensor."
            )
        n = input_ids.shape[1]
        if n > self.cfg.context:
            raise ValueError(
                f"input of {n} characters is longer than this model's context of "
                f"{self.cfg.context}. Fix: split the text (extract truncates to max_length)."
            )
        x = self.embed(input_ids)
        if self.pos is not None:
            x = x + self.pos(torch.arange(n, device=input_ids.device))
        attentions = []
        for block in self.blocks:
            x, probs = block(x)
            attentions.append(probs)
        return self.head(self.ln_f(x)), attentions
