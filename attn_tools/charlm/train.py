"""Deterministic CPU training of a `CharTransformer`, and its checkpoint format.

A training example is ``<bos>`` followed by ``context - 1`` characters of the training stream
(the texts joined by single spaces) starting at the beginning of a random text: the same shape
`extract` feeds the model (BOS, then a sentence). The held-out loss is measured the same way on
whole held-out texts (cut to the context), in bits per character.

Checkpoint = a folder with ``model.safetensors`` (float32 weights) and ``config.json`` (sizes,
vocabulary, and the training record: steps, seed, data, held-out bits/char, wall time).
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from attn_tools.charlm.model import CHAR_PARTS, CharConfig, CharTransformer, Positions
from attn_tools.charlm.tokenizer import CharTokenizer
from attn_tools.models import ModelBundle

__all__ = ["CharModel", "held_out_bits", "load_checkpoint", "train_char_model"]

CHECKPOINT_FORMAT = 1


@dataclass
class CharModel:
    """A trained character model with its tokenizer and training record.

    Attributes:
        model: the `CharTransformer` (eval mode).
        tokenizer: its `CharTokenizer`.
        info: the training record (steps, seed, held-out bits/char, seconds, data, history).
    """

    model: CharTransformer
    tokenizer: CharTokenizer
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> CharConfig:
        return self.model.cfg

    def bundle(self, name: str = "char-model", *, device: str | None = None) -> ModelBundle:
        """This model as a `ModelBundle` for `extract`, `score_heads` and the interventions."""
        from attn_tools.models.custom import bundle_from_module

        return bundle_from_module(
            self.model,
            self.tokenizer,
            kind="causal",
            name=name,
            parts=CHAR_PARTS,
            max_length=self.config.context,
            device=device,
        )

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write ``model.safetensors`` and ``config.json`` into ``folder`` (created)."""
        from safetensors.torch import save_file

        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        save_file(state, str(out / "model.safetensors"))
        os.chmod(out / "model.safetensors", 0o644)  # package data: readable by every user
        meta = {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.to_dict(),
            "tokenizer": self.tokenizer.to_dict(),
            "training": self.info,
        }
        text = json.dumps(meta, indent=1, ensure_ascii=False)
        (out / "config.json").write_text(text + "\n", encoding="utf-8")
        return out


def load_checkpoint(folder: str | os.PathLike[str]) -> CharModel:
    """Read a folder written by `CharModel.save`.

    Raises:
        FileNotFoundError: the folder lacks ``config.json`` or ``model.safetensors``.
        ValueError: the config is not a character-model config of a known format.
    """
    from safetensors.torch import load_file

    root = Path(folder)
    cfg_file, weights = root / "config.json", root / "model.safetensors"
    for path in (cfg_file, weights):
        if not path.is_file():
            raise FileNotFoundError(
                f"character-model checkpoint {str(root)!r} has no {path.name}. Fix: pass a folder "
                "written by CharModel.save()."
            )
    meta = json.loads(cfg_file.read_text(encoding="utf-8"))
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{cfg_file} is not a character-model config of format {CHECKPOINT_FORMAT} "
            f"(format={meta.get('format') if isinstance(meta, dict) else None!r}). "
            "Fix: save the model again with CharModel.save()."
        )
    cfg = CharConfig(**meta["config"])
    model = CharTransformer(cfg)
    model.load_state_dict(load_file(str(weights)))
    model.eval()
    return CharModel(model, CharTokenizer.from_dict(meta["tokenizer"]), meta.get("training", {}))


# ----------------------------------------------------------------------------- data


def _check_texts(texts: object, name: str) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(
            f"{name} is {type(texts).__name__}, not a list of strings. Fix: pass a list of "
            "texts (e.g. verses or sentences)."
        )
    out = []
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"{name}[{i}] is {type(t).__name__}, not a string.")
        if t.strip():
            out.append(t.strip())
    if not out:
        raise ValueError(f"{name} holds no non-empty text. Fix: pass some text to train on.")
    return out


def _stream(texts: list[str], tok: CharTokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """All texts as one id stream (joined by spaces) and the position where each text starts."""
    ids: list[int] = []
    starts: list[int] = []
    space = tok.encode(" ")[0]
    for t in texts:
        if ids:
            ids.extend(space)
        starts.append(len(ids))
        ids.extend(tok.encode(t)[0])
    return torch.tensor(ids, dtype=torch.long), torch.tensor(starts, dtype=torch.long)


def _batch(
    stream: torch.Tensor, starts: torch.Tensor, batch: int, context: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    pick = starts[torch.randint(len(starts), (batch,), generator=gen)]
    pick = pick.clamp(max=len(stream) - context)
    rows = pick[:, None] + torch.arange(context)[None, :]
    chars = stream[rows]  # [B, context]: targets
    bos = torch.full((batch, 1), CharTokenizer.bos_id, dtype=torch.long)
    return torch.cat([bos, chars[:, :-1]], dim=1), chars


@torch.no_grad()
def held_out_bits(
    model: CharTransformer, tokenizer: CharTokenizer, texts: Sequence[str], batch_size: int = 64
) -> float:
    """Mean bits per character of ``texts`` (each ``<bos>`` + text, cut to the context)."""
    was_training = model.training
    model.eval()
    context = model.cfg.context
    total, count = 0.0, 0
    encoded = [tokenizer.encode(t)[0][: context - 1] for t in texts]
    encoded = [e for e in encoded if e]
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start : start + batch_size]
        width = max(len(e) for e in chunk) + 1
        x = torch.full((len(chunk), width), tokenizer.pad_id, dtype=torch.long)
        y = torch.full((len(chunk), width), -100, dtype=torch.long)
        for r, e in enumerate(chunk):
            x[r, 0] = tokenizer.bos_id
            x[r, 1 : len(e) + 1] = torch.tensor(e)
            y[r, : len(e)] = torch.tensor(e)
        logits, _ = model(x)
        loss = F.cross_entropy(logits.transpose(1, 2), y, ignore_index=-100, reduction="sum")
        total += float(loss)
        count += int((y != -100).sum())
    model.train(was_training)
    return total / max(count, 1) / math.log(2)


# ----------------------------------------------------------------------------- training


def train_char_model(
    texts: Sequence[str],
    *,
    layers: int = 4,
    heads: int = 4,
    d_model: int = 128,
    steps: int = 2000,
    seed: int = 0,
    context: int = 128,
    batch_size: int = 32,
    lr: float = 3e-3,
    warmup: int = 100,
    positions: Positions = "rotary",
    held_out: Sequence[str] | None = None,
    tokenizer: CharTokenizer | None = None,
    eval_every: int = 0,
    eval_texts: int = 256,
    progress: bool = True,
    threads: int | None = 1,
    data: str = "",
) -> CharModel:
    """Train a causal character transformer on CPU, deterministically for a seed.

    Args:
        texts: training texts (verses, sentences); empty ones are skipped.
        layers, heads, d_model: model size; ``context`` the longest input in characters.
        steps, batch_size, lr, warmup: AdamW with linear warm-up then cosine decay to 10 %.
        seed: the same seed, data and arguments give the same weights (deterministic algorithms
            are switched on during training and the global RNG state is left untouched).
        positions: ``"rotary"`` or ``"learned"``.
        held_out: texts for the held-out loss; default every 10th of ``texts`` (indices 9, 19,
            ...), which are then not trained on.
        tokenizer: default the characters of the training texts (`CharTokenizer.from_texts`).
        eval_every: measure the held-out loss on the first ``eval_texts`` held-out texts every
            so many steps (0: at 5 evenly spaced points); the final figure uses all of them.
        progress: show a tqdm bar with the running training loss and held-out bits/char.
        threads: torch CPU threads while training (restored after); default 1, which is also
            the fastest on a shared machine (two threads spin-wait each other when the cores
            are busy: 3-8× slower measured here). None keeps the current setting.
        data: a description of the data, stored in the training record.

    Returns:
        A `CharModel`; ``info["held_out_bits_per_char"]`` is the final held-out loss.

    Example:
        >>> cm = train_char_model(["the cat sat", "a dog ran"] * 50, layers=1, heads=2,
        ...                       d_model=16, steps=20, context=16, progress=False)
        >>> cm.bundle("tiny").n_heads
        2
    """
    all_texts = _check_texts(texts, "texts")
    if held_out is None:
        train = [t for i, t in enumerate(all_texts) if i % 10 != 9]
        held = [t for i, t in enumerate(all_texts) if i % 10 == 9]
    else:
        train, held = all_texts, _check_texts(held_out, "held_out")
    if not held:
        raise ValueError(
            "no held-out texts: with held_out=None every 10th text is held out, so pass at least "
            "10 texts, or pass held_out= explicitly."
        )
    for name, value, least in (
        ("steps", steps, 1),
        ("batch_size", batch_size, 1),
        ("seed", seed, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name}={value!r} must be an integer ≥ {least}.")
    tok = tokenizer or CharTokenizer.from_texts(train)
    stream, starts = _stream(train, tok)
    if len(stream) < context + 1:
        raise ValueError(
            f"the training texts hold {len(stream)} characters, fewer than the context of "
            f"{context}. Fix: pass more text or a smaller context."
        )
    cfg = CharConfig(
        vocab_size=tok.vocab_size,
        n_layers=layers,
        n_heads=heads,
        d_model=d_model,
        context=context,
        positions=positions,
    )
    checkpoints = (
        set(range(eval_every, steps + 1, eval_every))
        if eval_every
        else {round(steps * k / 5) for k in range(1, 6)}
    )
    history: list[dict[str, float]] = []
    began = time.perf_counter()
    deterministic = torch.are_deterministic_algorithms_enabled()
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = CharTransformer(cfg)
            gen = torch.Generator().manual_seed(seed + 1)
            model.train()
            decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
            rest = [p for n, p in model.named_parameters() if p.ndim < 2]
            opt = torch.optim.AdamW(
                [{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}],
                lr=lr,
                betas=(0.9, 0.98),
            )

            def rate(step: int) -> float:
                if step < warmup:
                    return (step + 1) / warmup
                frac = (step - warmup) / max(1, steps - warmup)
                return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))

            sched = torch.optim.lr_scheduler.LambdaLR(opt, rate)
            bar = None
            if progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=steps, desc=f"char model {layers}×{heads}×{d_model}", unit="step")
            running = None
            try:
                for step in range(1, steps + 1):
                    x, y = _batch(stream, starts, batch_size, context, gen)
                    logits, _ = model(x)
                    loss = F.cross_entropy(logits.transpose(1, 2), y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    opt.step()
                    sched.step()
                    bits = loss.item() / math.log(2)
                    running = bits if running is None else 0.95 * running + 0.05 * bits
                    if step in checkpoints:
                        held_bits = held_out_bits(model, tok, held[:eval_texts])
                        history.append(
                            {"step": step, "train_bits": running, "held_out_bits": held_bits}
                        )
                        if bar is not None:
                            bar.set_postfix(train=f"{running:.3f}", held_out=f"{held_bits:.3f}")
                    if bar is not None:
                        bar.update(1)
            finally:
                if bar is not None:
                    bar.close()
            model.eval()
            final = held_out_bits(model, tok, held)
        used_threads = torch.get_num_threads()
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(old_threads)
    info = {
        "steps": steps,
        "seed": seed,
        "batch_size": batch_size,
        "lr": lr,
        "warmup": warmup,
        "train_texts": len(train),
        "train_characters": int(len(stream)),
        "held_out_texts": len(held),
        "held_out_bits_per_char": round(final, 4),
        "seconds": round(time.perf_counter() - began, 1),
        "threads": used_threads,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "data": data,
        "history": history,
    }
    return CharModel(model, tok, info)
