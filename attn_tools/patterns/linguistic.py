"""Linguistic patterns from a spaCy parse: parts of speech and dependency relations.

All of them are word-level: a ``[w, w]`` matrix over spaCy words, expanded to tokens with
`PatternContext.words_to_tokens` — every piece of a word shares the word's row, attention to a word
is spread evenly over its pieces. Special tokens belong to no word: their rows are empty (→ the
framework's self fallback) and nothing attends to them. A word whose row is empty (a root has no
head, a word without the relation) falls back to self too.

``dep(rel)`` is Clark et al. (2019)'s relation-specific view, dependent → head: each word whose
relation to its head is ``rel`` attends to that head (``dep(det)``: "the" → "cat"); the other
words are unscored fallback rows. ``dep_rev(rel)`` is the other direction (head → its ``rel``
dependents). Relation names are spaCy's (ClearNLP style: ``nsubj``, ``dobj``, ``pobj``, ...).

Scoring these patterns with ``argmax_accuracy`` at ``level="word"`` is *not* Clark et al.'s
protocol (special tokens and the word itself stay candidates, sentences are averaged rather than
arcs, and ``dep_rev`` spreads a head over all its dependents instead of the paper's transposed
mode); `attn_tools.syntax.dependency_accuracy` implements the paper's.
"""

from __future__ import annotations

import numpy as np

from attn_tools.patterns.base import Pattern, PatternContext, PatternError, pattern, pattern_factory

__all__ = ["DEFAULT_RELATIONS", "NOUN_MODIFIER_DEPS", "dep", "dep_rev"]

_FAMILY = "linguistic"

#: relations registered as ``dep(rel)`` and ``dep_rev(rel)`` by default; any label works by name.
DEFAULT_RELATIONS = (
    "det", "nsubj", "nsubjpass", "dobj", "pobj", "prep", "amod",
    "advmod", "aux", "auxpass", "poss", "compound", "conj", "cc",
)  # fmt: skip

#: relations that make a word a modifier of the noun it depends on (``noun_modifier``).
NOUN_MODIFIER_DEPS = frozenset({"det", "amod", "compound", "nummod", "poss", "nmod", "predet"})


def _arcs(ctx: PatternContext) -> tuple[np.ndarray, np.ndarray]:
    """``(dependent, head)`` index arrays of every non-root arc of the parse (memoised)."""
    if "arcs" not in ctx._memo:
        heads = ctx.word_attr("head").astype(np.int64)
        deps = np.arange(len(heads))
        keep = heads != deps
        ctx._memo["arcs"] = (deps[keep], heads[keep])
    return ctx._memo["arcs"]


def _empty_words(ctx: PatternContext) -> np.ndarray:
    w = len(ctx.words)
    return np.zeros((w, w))


@pattern(
    name="pos_alignment",
    family=_FAMILY,
    needs_parse=True,
    color="#637939",
    phrase="words with the same part of speech",
)
def pos_alignment(ctx: PatternContext) -> np.ndarray:
    """Each word attends evenly to every word with its coarse POS tag (itself included).

    Coarse tags are spaCy's Universal POS (NOUN, VERB, PUNCT, ...); punctuation aligns with
    punctuation.
    """
    pos = ctx.word_attr("pos")
    return ctx.words_to_tokens((pos[:, None] == pos[None, :]).astype(np.float64))


def _arc_matrix(ctx: PatternContext, *, to_head: bool, to_children: bool) -> np.ndarray:
    """Word-level arcs expanded to tokens: dependent → head and/or head → dependents."""
    m = _empty_words(ctx)
    d, h = _arcs(ctx)
    if to_head:
        m[d, h] = 1.0
    if to_children:
        m[h, d] = 1.0
    return ctx.words_to_tokens(m)


@pattern(
    name="dependency",
    family=_FAMILY,
    needs_parse=True,
    color="#843c39",
    phrase="its syntactic head and children",
)
def dependency(ctx: PatternContext) -> np.ndarray:
    """Each word attends evenly to its syntactic head and its children (both directions)."""
    return _arc_matrix(ctx, to_head=True, to_children=True)


@pattern(
    name="dependency_to_head",
    family=_FAMILY,
    needs_parse=True,
    color="#ad494a",
    phrase="its syntactic head",
)
def dependency_to_head(ctx: PatternContext) -> np.ndarray:
    """Each word attends to its syntactic head (the root: self fallback)."""
    return _arc_matrix(ctx, to_head=True, to_children=False)


@pattern(
    name="dependency_to_children",
    family=_FAMILY,
    needs_parse=True,
    color="#e7969c",
    phrase="its syntactic children",
)
def dependency_to_children(ctx: PatternContext) -> np.ndarray:
    """Each word attends evenly to its syntactic children (leaves: self fallback)."""
    return _arc_matrix(ctx, to_head=False, to_children=True)


def _relation(rel: str, name: str) -> str:
    label = str(rel).strip()
    if not label or not all(c.isalnum() or c in "_:" for c in label):
        raise PatternError(
            f"{name} needs a dependency label such as nsubj or det, got {rel!r}. "
            f"Fix: write {name}(nsubj)."
        )
    return label


def _relation_arcs(ctx: PatternContext, label: str) -> tuple[np.ndarray, np.ndarray]:
    d, h = _arcs(ctx)
    if not d.size:
        return d, h
    if "arc_labels" not in ctx._memo:
        ctx._memo["arc_labels"] = np.array([r.lower() for r in ctx.word_attr("dep")[d].tolist()])
    keep = ctx._memo["arc_labels"] == label.lower()
    return d[keep], h[keep]


# figure colours of the default relations (dependent → head); other relations and the reverse
# direction get a colour derived from their name
_RELATION_COLORS = {
    "det": "#7b4173",
    "nsubj": "#a55194",
    "nsubjpass": "#ce6dbd",
    "dobj": "#de9ed6",
    "pobj": "#5254a3",
    "prep": "#6b6ecf",
    "amod": "#9c9ede",
    "advmod": "#8ca252",
    "aux": "#b5cf6b",
    "auxpass": "#cedb9c",
    "poss": "#8c6d31",
    "compound": "#bd9e39",
    "conj": "#e7ba52",
    "cc": "#e7cb94",
}


def _relation_pattern(rel: str, *, reverse: bool) -> Pattern:
    """Dependent → head arcs of one relation (``reverse``: head → its dependents)."""
    prefix = "dep_rev" if reverse else "dep"
    label = _relation(rel, prefix)

    def fn(ctx: PatternContext) -> np.ndarray:
        m = _empty_words(ctx)
        d, h = _relation_arcs(ctx, label)
        if reverse:
            m[h, d] = 1.0
        else:
            m[d, h] = 1.0
        return ctx.words_to_tokens(m)

    what = (
        f"Each head attends to its {label} dependents"
        if reverse
        else f"Each {label} dependent attends to its head"
    )
    return Pattern(
        name=f"{prefix}({label})",
        family=_FAMILY,
        description=f"{what} (other words: self fallback)",
        fn=fn,
        needs_parse=True,
        color="" if reverse else _RELATION_COLORS.get(label, ""),
        phrase=f"its {label} dependents" if reverse else f"its head when it is a {label} dependent",
    )


@pattern_factory("dep", example="dep(nsubj)")
def dep(rel: str) -> Pattern:
    """``dep(rel)``: each word whose relation is ``rel`` attends to its head; others fall back.

    As a pattern it is scored with the score-table rules; the paper's dependency accuracy (special
    tokens and the word itself removed, micro-averaged over arcs) is
    `attn_tools.syntax.dependency_accuracy`.
    """
    return _relation_pattern(rel, reverse=False)


@pattern_factory("dep_rev", example="dep_rev(dobj)")
def dep_rev(rel: str) -> Pattern:
    """``dep_rev(rel)``: each head attends evenly to its ``rel`` dependents; others fall back.

    Not Clark et al. (2019)'s transposed mode, which asks per arc whether the head is the word
    that attends most to the dependent; that is ``direction="head->dep"`` of
    `attn_tools.syntax.dependency_accuracy`.
    """
    return _relation_pattern(rel, reverse=True)


# Both directions are registered: in a decoder the framework masks whichever one looks ahead
# (a determiner cannot see its noun, but the noun can see its determiner).
for _rel in DEFAULT_RELATIONS:
    for _made in (dep(_rel), dep_rev(_rel)):
        pattern(
            name=_made.name, family=_FAMILY, description=_made.description, needs_parse=True,
            color=_made.color, phrase=_made.phrase,
        )(_made.fn)  # fmt: skip


@pattern(
    name="noun_modifier",
    family=_FAMILY,
    needs_parse=True,
    color="#98df8a",
    phrase="the noun it modifies",
)
def noun_modifier(ctx: PatternContext) -> np.ndarray:
    """Each modifier of a noun attends to that noun (det, amod, compound, nummod, poss, nmod,
    predet whose head is a NOUN or PROPN: "the big red ball" → the, big, red → ball)."""
    m = _empty_words(ctx)
    d, h = _arcs(ctx)
    if d.size:
        rels = ctx.word_attr("dep").astype(str)
        pos = ctx.word_attr("pos").astype(str)
        keep = np.isin(rels[d], list(NOUN_MODIFIER_DEPS)) & np.isin(pos[h], ["NOUN", "PROPN"])
        m[d[keep], h[keep]] = 1.0
    return ctx.words_to_tokens(m)


@pattern(
    name="pronoun",
    family=_FAMILY,
    needs_parse=True,
    color="#ff9896",
    phrase="earlier nouns (from pronouns)",
)
def pronoun(ctx: PatternContext) -> np.ndarray:
    """Each pronoun (POS PRON) attends evenly to the nouns and proper nouns before it — its
    candidate antecedents ("Mira said she ..." → she → Mira). Other words fall back to self."""
    pos = ctx.word_attr("pos").astype(str) if len(ctx.words) else np.array([], dtype=str)
    nominal = np.isin(pos, ["NOUN", "PROPN"])
    earlier = np.tril(np.ones((len(pos), len(pos))), k=-1)
    return ctx.words_to_tokens(earlier * (pos == "PRON")[:, None] * nominal[None, :])


@pattern(
    name="preposition",
    family=_FAMILY,
    needs_parse=True,
    color="#c5b0d5",
    phrase="a preposition's head and object",
)
def preposition(ctx: PatternContext) -> np.ndarray:
    """Each preposition (POS ADP) attends evenly to the word it attaches to (its head) and to its
    object (children with relation pobj or pcomp): "sat on the mat" → on → sat, mat."""
    m = _empty_words(ctx)
    d, h = _arcs(ctx)
    if d.size:
        pos = ctx.word_attr("pos").astype(str)
        rels = ctx.word_attr("dep").astype(str)
        up = pos[d] == "ADP"
        m[d[up], h[up]] = 1.0
        down = (pos[h] == "ADP") & np.isin(rels[d], ["pobj", "pcomp"])
        m[h[down], d[down]] = 1.0
    return ctx.words_to_tokens(m)
