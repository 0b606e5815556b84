"""A character tokenizer that reports character offsets (the `TextTokenizer` protocol).

One token per character, so ``offsets[i]`` is the span of the i-th character in the text and the
character patterns can read the text directly. Three ids are reserved: ``<pad>`` (0), ``<bos>``
(1, prepended by `extract` to causal inputs) and ``<unk>`` (2).

Rules for text the vocabulary does not cover (documented, tested):

- combining marks (Unicode category M: Hebrew niqqud and cantillation, accents written as
  separate code points) are dropped when ``drop_marks`` is set (the shipped models set it): they
  join the span of the character before them, so pointed Hebrew reads as the consonantal text the
  Hebrew model was trained on, and offsets still cover the whole input;
- any other character outside the vocabulary becomes one ``<unk>`` token with its own span
  (``unknown="unk"``, the default), or raises `ValueError` naming it (``unknown="error"``).
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, Literal

__all__ = ["BOS", "CharTokenizer", "PAD", "UNK", "UnknownRule"]

PAD, BOS, UNK = "<pad>", "<bos>", "<unk>"
_SPECIAL = (PAD, BOS, UNK)
UnknownRule = Literal["unk", "error"]


class CharTokenizer:
    """Characters ↔ ids, with offsets; satisfies `attn_tools.models.custom.TextTokenizer`.

    Args:
        chars: the vocabulary, one character per entry (ids 3, 4, ... in this order).
        unknown: ``"unk"`` maps an unknown character to ``<unk>``; ``"error"`` raises.
        drop_marks: drop combining marks (see the module docstring).

    Example:
        >>> tok = CharTokenizer.from_texts(["abba"])
        >>> tok.encode("ab")
        ([3, 4], [(0, 1), (1, 2)])
    """

    pad_id = 0
    bos_id = 1
    unk_id = 2
    special_ids = frozenset({0, 1})  # <unk> stands for a real character: not special

    def __init__(
        self, chars: Sequence[str], *, unknown: UnknownRule = "unk", drop_marks: bool = True
    ) -> None:
        chars = list(chars)
        bad = [c for c in chars if not isinstance(c, str) or len(c) != 1]
        if bad:
            raise ValueError(
                f"vocabulary entries must be single characters, got {bad[:5]!r}. "
                "Fix: pass a list of one-character strings."
            )
        if len(set(chars)) != len(chars):
            dup = [c for c, k in Counter(chars).items() if k > 1]
            raise ValueError(f"vocabulary has duplicate characters {dup[:5]!r}. Fix: dedupe it.")
        if unknown not in ("unk", "error"):
            raise ValueError(f"unknown={unknown!r} is not 'unk' or 'error'. Fix: pick one.")
        self.chars = tuple(chars)
        self.unknown: UnknownRule = unknown
        self.drop_marks = bool(drop_marks)
        self._ids = {c: i + len(_SPECIAL) for i, c in enumerate(self.chars)}

    @classmethod
    def from_texts(
        cls,
        texts: Iterable[str],
        *,
        min_count: int = 1,
        unknown: UnknownRule = "unk",
        drop_marks: bool = True,
    ) -> CharTokenizer:
        """The vocabulary of ``texts``: every character seen ``min_count`` times, sorted."""
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(text)
        keep = sorted(
            c
            for c, k in counts.items()
            if k >= min_count and not (drop_marks and unicodedata.category(c).startswith("M"))
        )
        if not keep:
            raise ValueError("texts hold no characters. Fix: pass non-empty training texts.")
        return cls(keep, unknown=unknown, drop_marks=drop_marks)

    @property
    def vocab(self) -> tuple[str, ...]:
        """Every token string by id: the three specials, then the characters."""
        return (*_SPECIAL, *self.chars)

    @property
    def vocab_size(self) -> int:
        return len(_SPECIAL) + len(self.chars)

    def encode(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Ids and ``(start, end)`` spans of ``text``, one per kept character; no BOS added.

        Raises:
            TypeError: ``text`` is not a string.
            ValueError: with ``unknown="error"``, a character outside the vocabulary (named,
                with its position).
        """
        if not isinstance(text, str):
            raise TypeError(f"text is {type(text).__name__}, not a string. Fix: pass a str.")
        ids: list[int] = []
        offsets: list[tuple[int, int]] = []
        for pos, ch in enumerate(text):
            if ch not in self._ids and self.drop_marks and unicodedata.category(ch)[0] == "M":
                if offsets:  # a mark belongs to the character it sits on
                    offsets[-1] = (offsets[-1][0], pos + 1)
                continue
            tid = self._ids.get(ch)
            if tid is None:
                if self.unknown == "error":
                    raise ValueError(
                        f"character {ch!r} (U+{ord(ch):04X}, {unicodedata.name(ch, 'unnamed')}) "
                        f"at position {pos} of {text[:40]!r} is not in this model's vocabulary "
                        f"({len(self.chars)} characters). Fix: remove or replace it, or use "
                        "unknown='unk' to map it to <unk>."
                    )
                tid = self.unk_id
            ids.append(tid)
            offsets.append((pos, pos + 1))
        return ids, offsets

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids``; specials are skipped and ``<unk>`` reads as U+FFFD."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.unk_id:
                out.append("\ufffd")
            elif i >= len(_SPECIAL):
                out.append(self.id_to_token(i))
        return "".join(out)

    def id_to_token(self, token_id: int) -> str:
        """The token string of ``token_id`` (a character, or ``<pad>``/``<bos>``/``<unk>``)."""
        token_id = int(token_id)
        if not 0 <= token_id < self.vocab_size:
            raise IndexError(
                f"token id {token_id} is outside this vocabulary of {self.vocab_size} ids."
            )
        return self.vocab[token_id]

    def to_dict(self) -> dict[str, Any]:
        # one string (a character per id from 3 on) keeps config.json short and readable
        return {
            "chars": "".join(self.chars),
            "unknown": self.unknown,
            "drop_marks": self.drop_marks,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CharTokenizer:
        return cls(
            list(data["chars"]),
            unknown=data.get("unknown", "unk"),
            drop_marks=bool(data.get("drop_marks", True)),
        )

    def __repr__(self) -> str:
        return (
            f"CharTokenizer({self.vocab_size} ids: {''.join(self.chars)[:40]!r}, "
            f"unknown={self.unknown!r}, drop_marks={self.drop_marks})"
        )
