"""Character-level transformers: the model, a deterministic CPU trainer, shipped checkpoints.

- `load_char_model("english" | "hebrew")` → a `ModelBundle` of a shipped checkpoint (also
  ``load_model("char:english")``), ready for `extract`, `score_heads` and the interventions;
- `train_char_model(texts, layers=, heads=, d_model=, steps=, seed=)` → a `CharModel`
  (``.bundle()``, ``.save(folder)``); `load_char_model(folder)` reads a saved one back;
- `CharTokenizer`: one token per character, with offsets; `CharTransformer`, `CharConfig`;
- `aligned_verses()`: the verse-aligned English/Hebrew training text (optional packs).

The shipped checkpoints were trained by ``scripts/train_char_models.py``; docs/charlm.md gives the
command, the wall time and the held-out bits per character.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from attn_tools.charlm.model import CHAR_PARTS, CharConfig, CharTransformer
from attn_tools.charlm.tokenizer import CharTokenizer
from attn_tools.charlm.train import CharModel, held_out_bits, load_checkpoint, train_char_model
from attn_tools.models import ModelBundle, ModelLoadError

__all__ = [
    "CHAR_PARTS",
    "CHECKPOINTS",
    "CharConfig",
    "CharModel",
    "CharTokenizer",
    "CharTransformer",
    "char_model_info",
    "checkpoint_dir",
    "held_out_bits",
    "load_char_model",
    "load_checkpoint",
    "train_char_model",
]

#: the shipped checkpoints, by name (folders under attn_tools/charlm/checkpoints/)
CHECKPOINTS = ("english", "hebrew")


def checkpoint_dir(name: str | os.PathLike[str]) -> Path:
    """The folder of a shipped checkpoint (``"english"``, ``"hebrew"``) or of a saved model.

    Raises:
        ModelLoadError: not a shipped name and not a folder.
    """
    if isinstance(name, str) and name.strip().lower() in CHECKPOINTS:
        return Path(__file__).parent / "checkpoints" / name.strip().lower()
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    raise ModelLoadError(
        f"unknown character model {str(name)!r}: not one of the shipped checkpoints "
        f"{list(CHECKPOINTS)} and not a folder. Fix: load_char_model('english') or "
        "load_char_model('hebrew'), or pass a folder written by CharModel.save()."
    )


def char_model_info(name: str | os.PathLike[str]) -> dict[str, Any]:
    """The training record of a checkpoint (steps, seed, held-out bits/char, seconds, data)."""
    return load_checkpoint(checkpoint_dir(name)).info


def load_char_model(
    name: str | os.PathLike[str] = "english", *, device: str | None = None
) -> ModelBundle:
    """Load a character model as a `ModelBundle`.

    Args:
        name: ``"english"`` (Bible in Basic English) or ``"hebrew"`` (consonantal Tanakh), or a
            folder written by `CharModel.save`.
        device: where to run (default CPU; these models are small).

    Example:
        >>> bundle = load_char_model("hebrew")
        >>> records = extract(bundle, ["בראשית ברא אלהים"])
        >>> records[0].tokens[:3]
        ('<bos>', 'ב', 'ר')
    """
    folder = checkpoint_dir(name)
    shipped = isinstance(name, str) and name.strip().lower() in CHECKPOINTS
    try:
        model = load_checkpoint(folder)
    except FileNotFoundError as exc:
        if shipped:
            raise ModelLoadError(
                f"the shipped character model {name!r} is missing from {folder} ({exc}). Fix: "
                "reinstall attn_tools, or retrain it: python scripts/train_char_models.py"
            ) from exc
        raise
    label = f"char-{name.strip().lower()}" if shipped else f"char-{folder.name}"
    bundle = model.bundle(label, device=device or "cpu")
    bundle.source = f"char:{name}" if shipped else str(folder)
    return bundle
