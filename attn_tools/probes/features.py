"""Per-text head features shared by the probes: attention mass on marked words.

A *marked word* is a character span of the text (a sentiment keyword, a pronoun, a directive
verb). Its tokens are the model tokens whose character span overlaps it, so a word cut into
word pieces (``"delight" "##ful"``) counts all its pieces, and a byte-level BPE token that carries
the word's leading space (``"Ġhis"``) counts too. Special tokens never count.

The feature of head ``(l, h)`` on one text is the **mean, over query rows, of the attention mass
those rows put on the marked tokens**: ``mean_q Σ_{k marked} A[l, h, q, k]``, in [0, 1]. Query
rows are the non-special tokens that can see a marked token: every non-special row for an
encoder, rows at or after the first marked token for a causal model (earlier rows cannot attend
to it by construction, and counting them would only dilute the mean by sentence length).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np

from attn_tools.extract import SentenceAttention

__all__ = [
    "WORD_RE",
    "Feature",
    "bracket_spans",
    "marked_mass",
    "token_mask",
    "word_spans",
]

#: the per-text head feature: raw attention mass, or mass above uniform attention
Feature = Literal["mass", "surplus"]

#: a word: letters/digits with inner apostrophes or hyphens ("don't", "well-made")
WORD_RE = re.compile(r"\w+(?:['’-]\w+)*")
_BRACKET_RE = re.compile(r"\[([^\[\]]+)\]")


def word_spans(text: str, words: Iterable[str]) -> list[tuple[int, int]]:
    """Character spans of the words of ``text`` that are in ``words`` (case-insensitive)."""
    wanted = {w.lower() for w in words}
    return [m.span() for m in WORD_RE.finditer(text) if m.group(0).lower() in wanted]


def bracket_spans(text: str) -> tuple[str, list[tuple[int, int]]]:
    """Remove ``[...]`` marks from ``text``; return the clean text and the marked spans in it.

    Example:
        >>> bracket_spans("Please [write] a note.")
        ('Please write a note.', [(7, 12)])
    """
    spans: list[tuple[int, int]] = []
    out: list[str] = []
    last = 0
    length = 0
    for m in _BRACKET_RE.finditer(text):
        out.append(text[last : m.start()])
        length += m.start() - last
        spans.append((length, length + len(m.group(1))))
        out.append(m.group(1))
        length += len(m.group(1))
        last = m.end()
    out.append(text[last:])
    return "".join(out), spans


def token_mask(record: SentenceAttention, spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """Bool ``[n]``: the non-special tokens of ``record`` that overlap any of ``spans``."""
    mask = np.zeros(record.n_tokens, dtype=bool)
    for i, ((s, e), special) in enumerate(zip(record.offsets, record.special_mask)):
        if special or e <= s:
            continue
        mask[i] = any(s < end and e > start for start, end in spans)
    return mask


def marked_mass(
    record: SentenceAttention, keys: np.ndarray, *, feature: Feature = "mass"
) -> np.ndarray:
    """``[L, H]``: mean over query rows of the attention mass on the ``keys`` tokens.

    Args:
        record: one sentence's attention.
        keys: bool ``[n]`` from `token_mask`; at least one True.
        feature: ``"mass"``, the raw mass in [0, 1]; or ``"surplus"``, the mass minus what
            uniform attention over the row's visible keys would give (``#marked visible /
            #visible``), in [-1, 1]. The surplus removes the share that more or longer marked
            words get for free (a word cut into three pieces collects three uniform shares).

    Returns:
        float64 ``[L, H]`` (see the module docstring for which query rows count).
    """
    if not keys.any():
        raise ValueError(
            f"no marked token in {record.text!r}. Fix: check the marked words occur in the text."
        )
    rows = ~np.asarray(record.special_mask, dtype=bool)
    if record.kind == "causal":
        rows &= np.arange(record.n_tokens) >= int(np.flatnonzero(keys)[0])
    att = record.attention[:, :, rows][:, :, :, keys]  # [L, H, q, k]
    mass = att.sum(-1, dtype=np.float64)  # [L, H, q]
    if feature == "surplus":
        n = record.n_tokens
        visible = np.ones((n, n), dtype=bool)
        if record.kind == "causal":
            visible = np.tril(visible)
        vis = visible[rows]  # [q, n]
        mass = mass - (vis & keys).sum(1) / vis.sum(1)
    elif feature != "mass":
        raise ValueError(f"feature must be 'mass' or 'surplus', got {feature!r}.")
    return mass.mean(-1)


def records_for(
    bundle_or_records: object,
    texts: Sequence[str],
    *,
    cache: bool | str = True,
    batch_size: int = 16,
) -> list[SentenceAttention]:
    """Attention records for ``texts``: extracted from a bundle (cached), or checked if given.

    Passing records (from `attn_tools.extract`) skips the model; they must be for ``texts``, in
    order.
    """
    from attn_tools.extract import check_record, extract
    from attn_tools.models import ModelBundle

    if isinstance(bundle_or_records, ModelBundle):
        return extract(
            bundle_or_records, list(texts), cache=cache, batch_size=batch_size, progress=False
        )
    if isinstance(bundle_or_records, (str, bytes)) or not isinstance(bundle_or_records, Sequence):
        raise TypeError(
            f"expected a ModelBundle or a list of SentenceAttention, got "
            f"{type(bundle_or_records).__name__}. Fix: pass load_model('minilm') or "
            "extract(bundle, texts)."
        )
    records = [check_record(i, r) for i, r in enumerate(bundle_or_records)]
    if len(records) != len(texts):
        raise ValueError(
            f"{len(records)} records for {len(texts)} texts. Fix: extract the same texts, in order."
        )
    for i, (rec, text) in enumerate(zip(records, texts)):
        if rec.text != text:
            raise ValueError(
                f"record {i} is for {rec.text[:40]!r}, not text {i} {text[:40]!r}. "
                "Fix: extract the same texts, in order."
            )
    return records
