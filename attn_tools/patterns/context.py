"""`PatternContext`: everything a pattern may look at for one sentence, as plain data.

This module is the one definition of the ``ctx`` a pattern receives, in this process and inside
the sandbox's child process alike. It imports only numpy and the standard library, so the child
(which must not load torch, transformers or spaCy) can load this file on its own.

Every attribute is plain data (strings, tuples, read-only numpy arrays); the few methods compute
from that data only. The prompt shown to a hypothesizer describes this class with
`describe_context_api`, generated from the field documentation below, so the two cannot drift.

Wire format: `context_to_plain` turns a context (plus the registry predictions a program asked
for with ``ctx.builtin``) into JSON-ready data; `context_from_plain` rebuilds an equal context
from it, with words and alignment as `PlainWord` / `PlainAlignment` records that have the same
attribute names as `attn_tools.text.Word` / `attn_tools.text.Alignment`.
"""

from __future__ import annotations

import base64
import inspect
import math
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

import numpy as np

__all__ = [
    "MARKERS",
    "MAX_WEIGHT",
    "PatternContext",
    "PlainAlignment",
    "PlainWord",
    "context_from_plain",
    "context_to_plain",
    "decode_matrix",
    "describe_context_api",
    "encode_matrix",
    "is_punctuation",
    "set_builtin_resolver",
    "strip_marker",
]

#: the largest weight a pattern may return in one cell: larger ones overflow row sums to inf and
#: turn normalised rows and every score into NaN (1e308 did)
MAX_WEIGHT = 1e6

#: tokenizer markers stripped from token strings (WordPiece, byte-level BPE, SentencePiece).
MARKERS = ("##", "Ġ", "▁", "Ċ", "ċ")


def strip_marker(token: str) -> str:
    """The token string without its leading tokenizer marker (``##ing`` → ``ing``)."""
    for m in MARKERS:
        if token.startswith(m):
            return token[len(m) :]
    return token


def is_punctuation(text: str) -> bool:
    """True when ``text`` (tokenizer markers stripped) is non-empty and every character is
    Unicode punctuation (category ``P*``: ``. , ; : ! ? ' " ( ) - …``)."""
    core = strip_marker(text).strip()
    return bool(core) and all(unicodedata.category(c).startswith("P") for c in core)


class WordLike(Protocol):
    """What a word record offers (`attn_tools.text.Word` and `PlainWord` both do)."""

    text: str
    start: int
    end: int
    pos: str
    tag: str
    dep: str
    head: int
    lemma: str
    is_punct: bool


class AlignmentLike(Protocol):
    """What an alignment offers (`attn_tools.text.Alignment` and `PlainAlignment` both do)."""

    token_words: tuple[tuple[int, ...], ...]
    word_tokens: tuple[tuple[int, ...], ...]
    units: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]


@dataclass(frozen=True)
class PlainWord:
    """A spaCy word as plain data (same attribute names as `attn_tools.text.Word`)."""

    text: str
    start: int
    end: int
    pos: str
    tag: str
    dep: str
    head: int
    lemma: str
    is_punct: bool


WORD_FIELDS = tuple(f.name for f in fields(PlainWord))


@dataclass(frozen=True)
class PlainAlignment:
    """Token ↔ word alignment as plain data (same attributes as `attn_tools.text.Alignment`)."""

    token_words: tuple[tuple[int, ...], ...]
    word_tokens: tuple[tuple[int, ...], ...]
    units: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]

    @property
    def n_tokens(self) -> int:
        return len(self.token_words)

    @property
    def n_units(self) -> int:
        return len(self.units)


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


# ``ctx.builtin(name)`` on a context with nothing prepared asks this resolver (installed by
# `attn_tools.patterns.base`, which owns the registry). The sandbox child has none: there, only
# the predictions the parent prepared exist.
_BUILTIN_RESOLVER: Callable[[PatternContext, str], tuple[np.ndarray, np.ndarray]] | None = None


def set_builtin_resolver(
    fn: Callable[[PatternContext, str], tuple[np.ndarray, np.ndarray]] | None,
) -> None:
    """Install ``fn(ctx, name) -> (matrix [n, n], has_mass [n])`` for ``ctx.builtin``."""
    global _BUILTIN_RESOLVER
    _BUILTIN_RESOLVER = fn


@dataclass(frozen=True, eq=False)
class PatternContext:
    """Everything a pattern may look at for one sentence (plain data only).

    Build one with `attn_tools.patterns.build_context` from a `SentenceAttention`; the derived
    attributes (``n``, ``token_word``, ``token_pos``, ...) are computed once, here.
    """

    text: str = field(metadata=_doc("the sentence"))
    tokens: tuple[str, ...] = field(metadata=_doc("the model's token strings"))
    token_ids: tuple[int, ...] = field(metadata=_doc("the token ids"))
    offsets: tuple[tuple[int, int], ...] = field(
        metadata=_doc("(start, end) characters of each token in ctx.text")
    )
    special_mask: np.ndarray = field(
        metadata=_doc("bool array [n], True for special tokens ([CLS], [SEP], BOS, ...)")
    )
    kind: str = field(metadata=_doc('"encoder" or "causal"'))
    words: tuple[WordLike, ...] = field(
        metadata=_doc(
            "spaCy words, each with .text .start .end .pos .tag .dep .head (index of its head "
            "word; a root points to itself) .lemma .is_punct"
        )
    )
    alignment: AlignmentLike = field(
        metadata=_doc(
            "alignment.token_words[t]: the word indices of token t; alignment.word_tokens[w]: "
            "the token indices of word w; alignment.units: (tokens, words) groups"
        )
    )
    prepared: Mapping[str, tuple[np.ndarray, np.ndarray]] = field(
        default_factory=dict, repr=False, metadata={"private": True}
    )
    _memo: dict = field(default_factory=dict, repr=False, compare=False)

    n: int = field(init=False, metadata=_doc("number of tokens"))
    causal: bool = field(init=False, metadata=_doc("True for causal (decoder) models"))
    token_word: np.ndarray = field(
        init=False,
        repr=False,
        metadata=_doc("int array [n], the first word of each token (-1 for special tokens)"),
    )
    token_pos: tuple[str, ...] = field(
        init=False,
        repr=False,
        metadata=_doc('the POS tag of each token\'s word ("" for special tokens)'),
    )
    token_dep: tuple[str, ...] = field(
        init=False,
        repr=False,
        metadata=_doc('the dependency label of each token\'s word ("" for special tokens)'),
    )
    token_is_punct: np.ndarray = field(
        init=False,
        repr=False,
        metadata=_doc("bool array [n], True where spaCy marks the token's word as punctuation"),
    )
    stripped_tokens: tuple[str, ...] = field(
        init=False,
        repr=False,
        metadata=_doc("token strings without tokenizer markers (##, Ġ, ▁)"),
    )
    token_texts: tuple[str, ...] = field(
        init=False,
        repr=False,
        metadata=_doc("the text each token covers (special tokens keep their name)"),
    )
    punct_mask: np.ndarray = field(
        init=False,
        repr=False,
        metadata=_doc("bool array [n], True for tokens whose text is all punctuation"),
    )

    def __post_init__(self) -> None:
        put = object.__setattr__
        # a private, read-only copy: the caller's array must stay writable and unchanged
        put(self, "special_mask", _frozen(np.array(self.special_mask, dtype=bool)))
        put(self, "n", len(self.tokens))
        put(self, "causal", self.kind == "causal")
        tw = np.array([ws[0] if ws else -1 for ws in self.alignment.token_words], dtype=np.int64)
        if len(tw) != self.n:
            tw = np.full(self.n, -1, dtype=np.int64)  # no parse: every token is wordless
        put(self, "token_word", _frozen(tw))
        words = self.words
        put(self, "token_pos", tuple(words[w].pos if w >= 0 else "" for w in tw))
        put(self, "token_dep", tuple(words[w].dep if w >= 0 else "" for w in tw))
        put(
            self,
            "token_is_punct",
            _frozen(np.array([w >= 0 and bool(words[w].is_punct) for w in tw], dtype=bool)),
        )
        stripped = tuple(strip_marker(t) for t in self.tokens)
        put(self, "stripped_tokens", stripped)
        texts = []
        for tok, (s, e), special, bare in zip(
            self.tokens, self.offsets, self.special_mask, stripped
        ):
            # offsets make byte-level BPE read as real text (’ rather than âĢĻ)
            piece = "" if special else self.text[s:e].strip()
            texts.append(piece or (tok if special else bare))
        put(self, "token_texts", tuple(texts))
        punct = [(not sp) and is_punctuation(t) for t, sp in zip(texts, self.special_mask)]
        put(self, "punct_mask", _frozen(np.array(punct, dtype=bool)))

    def _expansion(self) -> tuple[np.ndarray, np.ndarray]:
        """``(rows [n, w], spread [w, n])``: token → word membership (a token covering several
        words averages their rows) and word → its pieces (uniform)."""
        if "expansion" not in self._memo:
            w = len(self.words)
            rows = np.zeros((self.n, w))
            spread = np.zeros((w, self.n))
            for word, toks in enumerate(self.alignment.word_tokens):
                if toks:
                    spread[word, list(toks)] = 1.0 / len(toks)
            for t, ws in enumerate(self.alignment.token_words):
                if ws:
                    rows[t, list(ws)] = 1.0 / len(ws)
            self._memo["expansion"] = (_frozen(rows), _frozen(spread))
        return self._memo["expansion"]

    def words_to_tokens(self, word_matrix: np.ndarray) -> np.ndarray:
        """Expand a word-level [w, w] matrix to tokens [n, n]: every piece of a word gets the
        word's row, attention to a word is spread over its pieces; special tokens get zeros."""
        w = len(self.words)
        word_matrix = np.asarray(word_matrix, dtype=np.float64)
        if word_matrix.shape != (w, w):
            raise ValueError(
                f"word matrix has shape {word_matrix.shape}, expected ({w}, {w}) for "
                f"{self.text[:50]!r}. Fix: build it with len(ctx.words) rows and columns."
            )
        rows, spread = self._expansion()
        return rows @ word_matrix @ spread

    def word_attr(self, name: str) -> np.ndarray:
        """One attribute of every word as an array [w], e.g. ctx.word_attr("pos")."""
        if name not in WORD_FIELDS:
            raise ValueError(f"words have no attribute {name!r}. Fix: use one of {WORD_FIELDS}.")
        key = ("word_attr", name)
        if key not in self._memo:
            values = [getattr(word, name) for word in self.words]
            self._memo[key] = _frozen(np.array(values))
        return self._memo[key].copy()

    def fallback(self) -> np.ndarray:
        """The rule for rows with no mass: attend to self ([n, n] identity)."""
        return np.eye(self.n)

    def builtin(self, name: str, fallback: bool = True) -> np.ndarray:
        """The normalised [n, n] prediction of a library pattern, e.g. ctx.builtin("previous_token");
        with fallback=False the rows it does not predict are zero. The name must be a string
        literal."""
        if name in self.prepared:
            m, mass = self.prepared[name]
        elif _BUILTIN_RESOLVER is not None:
            m, mass = _BUILTIN_RESOLVER(self, name)
        else:
            raise KeyError(
                f"builtin pattern {name!r} was not prepared for this sentence. Fix: call "
                "ctx.builtin with a string literal naming a registered pattern, e.g. "
                'ctx.builtin("previous_token").'
            )
        m = np.array(m, dtype=np.float64)
        return m if fallback else m * np.asarray(mass, dtype=bool)[:, None]


# ----------------------------------------------------------------------------- the prompt's text


def describe_context_api(width: int = 96) -> str:
    """What a program may use of ``ctx``, one line per attribute or method (for the prompt).

    Generated from `PatternContext`'s field documentation and method docstrings, so the prompt
    describes exactly the class the program receives.
    """
    lines: list[str] = []
    for f in fields(PatternContext):
        doc = f.metadata.get("doc")
        if doc and not f.name.startswith("_"):
            lines.append(f"- ctx.{f.name}: {doc}.")
    for name in ("word_attr", "words_to_tokens", "builtin", "fallback"):
        fn = getattr(PatternContext, name)
        params = [p for p in inspect.signature(fn).parameters if p != "self"]
        doc = " ".join(inspect.getdoc(fn).split())
        lines.append(f"- ctx.{name}({', '.join(params)}): {doc}")
    return "\n".join(_wrap(line, width) for line in lines)


def _wrap(line: str, width: int) -> str:
    out, current = [], ""
    for word in line.split(" "):
        if current and len(current) + 1 + len(word) > width:
            out.append(current)
            current = "  " + word
        else:
            current = f"{current} {word}" if current else word
    out.append(current)
    return "\n".join(out)


# ----------------------------------------------------------------------------- the wire format


def encode_matrix(m: np.ndarray) -> dict[str, Any]:
    """A float64 array as JSON-ready data: ``{"shape": [...], "data": base64 bytes}``."""
    a = np.ascontiguousarray(m, dtype=np.float64)
    return {"shape": list(a.shape), "data": base64.b64encode(a.tobytes()).decode("ascii")}


def decode_matrix(obj: Any, *, max_elements: int = 4_000_000) -> np.ndarray:
    """Decode `encode_matrix` output; raises ValueError on anything malformed or too large."""
    if not isinstance(obj, dict):
        raise ValueError(f"a matrix must be a JSON object, got {type(obj).__name__}")
    shape = obj.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape
    ):
        raise ValueError(f"bad shape {str(shape)[:80]}")
    size = math.prod(shape)
    if size > max_elements:
        raise ValueError(f"matrix of shape {tuple(shape)} is too large")
    data = obj.get("data", "")
    if not isinstance(data, str) or len(data) > 4 * (8 * size + 2) // 3 + 4:
        raise ValueError(f"matrix data does not fit shape {tuple(shape)}")
    raw = base64.b64decode(data, validate=True)
    if len(raw) != 8 * size:
        raise ValueError(f"{len(raw)} bytes do not make a float64 array of shape {tuple(shape)}")
    return np.frombuffer(raw, dtype=np.float64).reshape(shape).copy()


def context_to_plain(
    ctx: PatternContext, prepared: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None
) -> dict[str, Any]:
    """JSON-ready data for `context_from_plain`, with ``prepared`` builtin predictions."""
    prepared = dict(ctx.prepared) if prepared is None else dict(prepared)
    return {
        "text": ctx.text,
        "tokens": list(ctx.tokens),
        "token_ids": [int(i) for i in ctx.token_ids],
        "offsets": [[int(s), int(e)] for s, e in ctx.offsets],
        "special_mask": [bool(b) for b in ctx.special_mask],
        "kind": ctx.kind,
        "words": [[getattr(w, k) for k in WORD_FIELDS] for w in ctx.words],
        "token_words": [list(ws) for ws in ctx.alignment.token_words],
        "word_tokens": [list(ts) for ts in ctx.alignment.word_tokens],
        "units": [[list(ts), list(ws)] for ts, ws in ctx.alignment.units],
        "prepared": {
            k: {"matrix": encode_matrix(m), "has_mass": [bool(b) for b in mass]}
            for k, (m, mass) in prepared.items()
        },
    }


def _ints(seq: Sequence[Any]) -> tuple[int, ...]:
    return tuple(int(v) for v in seq)


def context_from_plain(d: Mapping[str, Any]) -> PatternContext:
    """Rebuild a `PatternContext` from `context_to_plain` data (words as `PlainWord`)."""
    words = tuple(
        PlainWord(str(t), int(s), int(e), str(p), str(tg), str(dp), int(h), str(lm), bool(pu))
        for t, s, e, p, tg, dp, h, lm, pu in d["words"]
    )
    alignment = PlainAlignment(
        token_words=tuple(_ints(ws) for ws in d["token_words"]),
        word_tokens=tuple(_ints(ts) for ts in d["word_tokens"]),
        units=tuple((_ints(ts), _ints(ws)) for ts, ws in d["units"]),
    )
    prepared = {}
    for name, v in d.get("prepared", {}).items():
        m = _frozen(decode_matrix(v["matrix"]))
        prepared[str(name)] = (m, _frozen(np.asarray(v["has_mass"], dtype=bool)))
    return PatternContext(
        text=str(d["text"]),
        tokens=tuple(str(t) for t in d["tokens"]),
        token_ids=_ints(d["token_ids"]),
        offsets=tuple((int(s), int(e)) for s, e in d["offsets"]),
        special_mask=np.asarray(d["special_mask"], dtype=bool),
        kind=str(d["kind"]),
        words=words,
        alignment=alignment,
        prepared=prepared,
    )
