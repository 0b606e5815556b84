"""Program search: fit a readable pattern program to a head without any language model.

The programs are *decision lists whose leaves are sparse non-negative mixes* of library patterns::

    out = 0.7 * first_token + 0.3 * self_attention      # every other token
    out = np.where(is_punct[:, None], first_token, out)  # rule 2: punctuation tokens
    out = np.where(is_noun[:, None], previous_token, out)  # rule 1 (wins): nouns

- **Atoms** are the registry's patterns (every family but ``baseline`` and ``user``) plus a few
  extra offsets, each as its normalised prediction (``ctx.builtin("name")``).
- **Row classes** say which query tokens a rule applies to: a POS tag, a dependency relation,
  punctuation, special tokens, non-initial word pieces, tokens whose id occurred before, and the
  tokens a partial pattern predicts itself (``dep(det)``: determiners that have a head).
- **Leaves** are mixes of at most ``max_terms`` atoms, found by forward selection with a line search
  and refined by L-BFGS on the mixing weights, then rounded to two decimals.
- **Rules** are added greedily: the (class, atom) pair that lowers the mean Jensen–Shannon distance
  most on the rows not yet claimed. The number of rules is chosen by cross-validation over the
  example sentences (the search never sees held-out sentences).

The score is the scoring engine's: per sentence the mean row JSD distance (base 2, all rows),
then the mean over sentences. The emitted source reproduces the fitted prediction exactly when the
sandbox runs it (the framework's renormalisation is part of both).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import minimize

from attn_tools.patterns.base import (
    Pattern,
    PatternContext,
    PatternError,
    get_pattern,
    list_patterns,
    predict,
)
from attn_tools.scoring import jsd

__all__ = [
    "Atom",
    "FittedProgram",
    "Leaf",
    "RowClass",
    "SearchSpace",
    "fit_program",
    "row_classes",
]

EXTRA_ATOMS = ("offset(-3)", "offset(3)")
_GRID = np.array([0.05, 0.15, 0.3, 0.5, 0.7, 0.9])
_CANDIDATES = 8  # atoms line-searched per forward step


# ----------------------------------------------------------------------------- building blocks


@dataclass(frozen=True)
class Atom:
    """A library pattern as a program building block."""

    name: str

    @property
    def var(self) -> str:
        base = self.name.replace("(-", "_minus").replace("(", "_").replace(")", "")
        base = re.sub(r"\W+", "_", base).strip("_")
        if base == "self":
            base = "self_attention"
        if base[:1].isdigit():
            base = "p_" + base
        return base

    @property
    def code(self) -> str:
        return f'ctx.builtin("{self.name}")'

    def phrase(self, plural: bool = False) -> str:
        """What a token attends to, in words (``plural`` for "nouns attend to their ...")."""
        text = self._phrase()
        if plural:
            text = text.replace("itself", "themselves").replace("its ", "their ")
        return text

    def _phrase(self) -> str:
        # the phrase lives on the pattern (set in @pattern or by its factory)
        try:
            phrase = get_pattern(self.name).phrase
        except (PatternError, ValueError, KeyError):
            phrase = ""
        return phrase or f"the `{self.name}` pattern"


@dataclass(frozen=True)
class RowClass:
    """A set of query tokens a rule applies to, with the code that selects them."""

    key: str
    words: str
    var: str
    code: str
    fn: Callable[[PatternContext], np.ndarray] = field(repr=False, compare=False)


def _token_attr(ctx: PatternContext, attr: str) -> list[str]:
    return [getattr(ctx.words[w], attr) if w >= 0 else "" for w in ctx.token_word]


_POS_WORDS = {
    "NOUN": "nouns", "PROPN": "proper nouns", "VERB": "verbs", "AUX": "auxiliaries",
    "ADJ": "adjectives", "ADV": "adverbs", "ADP": "prepositions", "DET": "determiners",
    "PRON": "pronouns", "CCONJ": "coordinating conjunctions", "SCONJ": "subordinating conjunctions",
    "NUM": "numbers", "PART": "particles", "PUNCT": "punctuation words", "INTJ": "interjections",
    "SYM": "symbols", "X": "other words", "SPACE": "spaces",
}  # fmt: skip


def _pos_class(tag: str) -> RowClass:
    var = "is_" + re.sub(r"\W+", "_", tag.lower())
    return RowClass(
        key=f"pos:{tag}",
        words=f"tokens of {_POS_WORDS.get(tag, tag + ' words')}",
        var=var,
        code=f'np.array([p == "{tag}" for p in ctx.token_pos])',
        fn=lambda ctx: np.array([p == tag for p in _token_attr(ctx, "pos")], dtype=bool),
    )


def _dep_class(rel: str) -> RowClass:
    var = "is_" + re.sub(r"\W+", "_", rel.lower())
    return RowClass(
        key=f"dep:{rel}",
        words=f"tokens of {rel} dependents",
        var=var + "_dep",
        code=f'np.array([d == "{rel}" for d in ctx.token_dep])',
        fn=lambda ctx: np.array([d == rel for d in _token_attr(ctx, "dep")], dtype=bool),
    )


#: who a partial pattern's own rows are, in words (else "tokens that `name` predicts").
_APPLIES_WORDS = {
    "last_token": "sentence-final tokens",
    "next_token": "every token but the last",
    "punctuation": "tokens with punctuation after them",
    "repetition": "words that occur more than once",
    "same_text": "tokens whose text occurs more than once",
    "duplicate_token_head": "tokens whose id occurred earlier",
    "induction_head": "tokens whose id occurred earlier (with a successor)",
    "dependency_to_head": "words that have a syntactic head",
    "dependency_to_children": "words that have syntactic children",
    "same_word": "pieces of words split into several tokens",
    "word_start": "tokens inside a word",
    "noun_modifier": "modifiers of nouns",
    "pronoun": "pronouns with a noun before them",
    "preposition": "prepositions and their attachments",
    "pos_alignment": "words",
}


def _applies_class(name: str) -> RowClass:
    var = Atom(name).var + "_applies"
    if name.startswith("dep(") and name.endswith(")"):
        words = f"tokens of {name[4:-1]} dependents"
    elif name.startswith("dep_rev(") and name.endswith(")"):
        words = f"words with {name[8:-1]} dependents"
    elif name.startswith("offset("):
        words = f"tokens that have a token at {name}"
    else:
        words = _APPLIES_WORDS.get(name, f"tokens that `{name}` predicts itself")
    return RowClass(
        key=f"applies:{name}",
        words=words,
        var=var,
        code=f'ctx.builtin("{name}", fallback=False).sum(axis=1) > 0',
        fn=lambda ctx: predict(get_pattern(name), ctx)[1],
    )


def _continuation(ctx: PatternContext) -> np.ndarray:
    wt = ctx.alignment.word_tokens
    return np.array([w >= 0 and wt[w][0] != t for t, w in enumerate(ctx.token_word)], dtype=bool)


def _repeated(ctx: PatternContext) -> np.ndarray:
    ids = ctx.token_ids
    return np.array([ids[t] in ids[:t] for t in range(ctx.n)], dtype=bool)


FIXED_CLASSES = (
    RowClass("punct", "punctuation tokens", "is_punct", "ctx.punct_mask",
             lambda ctx: np.asarray(ctx.punct_mask, dtype=bool)),
    RowClass("special", "special tokens", "is_special", "ctx.special_mask",
             lambda ctx: np.asarray(ctx.special_mask, dtype=bool)),
    RowClass(
        "continuation", "word pieces after the first piece of a word", "is_continuation",
        "np.array([w >= 0 and ctx.alignment.word_tokens[w][0] != t "
        "for t, w in enumerate(ctx.token_word)])",
        _continuation,
    ),
    RowClass(
        "repeated", "tokens whose id occurred earlier in the sentence", "is_repeated",
        "np.array([ctx.token_ids[t] in ctx.token_ids[:t] for t in range(ctx.n)])",
        _repeated,
    ),
)  # fmt: skip


def row_classes(contexts: Sequence[PatternContext]) -> list[RowClass]:
    """The row classes worth trying on these sentences: fixed ones, plus every POS tag and
    dependency relation that occurs in them."""
    pos: set[str] = set()
    deps: set[str] = set()
    for ctx in contexts:
        for w in ctx.words:
            pos.add(w.pos)
            deps.add(w.dep)
    made = [_pos_class(t) for t in sorted(pos) if t]
    made += [_dep_class(d) for d in sorted(deps) if d and re.fullmatch(r"[A-Za-z_:]+", d)]
    return [*FIXED_CLASSES, *made]


# ----------------------------------------------------------------------------- the search space


def _candidate_atoms(patterns: Sequence[str | Pattern] | None) -> list[str]:
    if patterns is None:
        names = [p.name for p in list_patterns() if p.family not in ("baseline", "user")]
        names += [e for e in EXTRA_ATOMS if e not in names]
        return names
    return [get_pattern(p).name for p in patterns]


class SearchSpace:
    """The head-independent half of a search: atoms and row classes on fixed sentences.

    Every query row of every sentence is one row of ``[R, N]`` arrays (padded to the longest
    sentence). Build it once and fit many heads on the same sentences with `fit_program`.

    Attributes:
        atoms: the `Atom` s; ``X [K, R, N]`` their normalised rows (the framework's prediction).
        classes: the `RowClass` es; ``C [C, R]`` bool membership.
    """

    def __init__(
        self,
        contexts: Sequence[PatternContext],
        *,
        patterns: Sequence[str | Pattern] | None = None,
        classes: Sequence[RowClass] | None = None,
    ) -> None:
        if not contexts:
            raise ValueError("a search space needs at least one sentence")
        self.contexts = list(contexts)
        self.key = tuple((c.text, tuple(c.tokens)) for c in self.contexts)
        self.n = np.array([c.n for c in self.contexts])
        self.N = int(self.n.max())
        self.R = int(self.n.sum())
        self.sentence = np.repeat(np.arange(len(self.contexts)), self.n)
        self.query = np.concatenate([np.arange(k) for k in self.n])
        self.self_row = np.zeros((self.R, self.N))
        self.self_row[np.arange(self.R), self.query] = 1.0
        atoms: list[Atom] = []
        mats: list[np.ndarray] = []
        applies: list[RowClass] = []
        seen: set[bytes] = set()
        for name in _candidate_atoms(patterns):
            p = get_pattern(name)
            preds = [predict(p, ctx) for ctx in self.contexts]
            X = self.stack([m for m, _ in preds])
            mass = np.concatenate([h for _, h in preds])
            if not mass.any():  # nothing but the self fallback here (next_token in a decoder)
                continue
            if not mass.all():
                applies.append(_applies_class(p.name))
            key = hashlib.sha1(np.round(X, 9).tobytes()).digest()
            if key in seen:  # identical to an earlier atom on these sentences
                continue
            seen.add(key)
            atoms.append(Atom(p.name))
            mats.append(X)
        self.atoms = atoms
        self.X = np.stack(mats)
        wanted = list(row_classes(self.contexts) if classes is None else classes)
        if classes is None:
            wanted += applies
        kept: list[RowClass] = []
        members: list[np.ndarray] = []
        seen_rows: set[bytes] = set()
        for c in wanted:
            m = np.concatenate([np.asarray(c.fn(ctx), dtype=bool) for ctx in self.contexts])
            key = np.packbits(m).tobytes()
            if key in seen_rows or not m.any():  # same rows as an earlier class, or none
                continue
            seen_rows.add(key)
            kept.append(c)
            members.append(m)
        self.classes = kept
        self.C = np.stack(members)

    def stack(self, mats: Sequence[np.ndarray]) -> np.ndarray:
        """Per-sentence ``[n, n]`` matrices as padded rows ``[R, N]``."""
        out = np.zeros((self.R, self.N))
        start = 0
        for m, k in zip(mats, self.n):
            out[start : start + k, :k] = m
            start += k
        return out

    def weights(self, sentences: np.ndarray) -> np.ndarray:
        """Row weights ``[R]``: a weighted sum is the mean over ``sentences`` of the mean over
        each sentence's rows (the scoring engine's average); zero for other sentences."""
        keep = np.isin(self.sentence, sentences)
        w = np.where(keep, 1.0 / self.n[self.sentence], 0.0)
        return w / max(len(sentences), 1)


def _finish(raw: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """The framework's rule: renormalise rows; empty rows attend to themselves."""
    sums = raw.sum(axis=-1, keepdims=True)
    return np.where(sums > 0, raw / np.where(sums > 0, sums, 1.0), fallback)


class _Head:
    """The head-dependent half: normalised attention rows and each atom's row distances."""

    def __init__(self, space: SearchSpace, attention: Sequence[np.ndarray]) -> None:
        A = space.stack(attention)
        sums = A.sum(axis=1, keepdims=True)
        self.A = A / np.where(sums > 0, sums, 1.0)
        self.J = jsd(self.A[None], space.X, axis=-1)  # [K, R]; atom rows are normalised


# ----------------------------------------------------------------------------- programs


@dataclass(frozen=True)
class Leaf:
    """A sparse non-negative mix: ``Σ weight × atom`` (weights sum to 1)."""

    atoms: tuple[Atom, ...]
    weights: tuple[float, ...]

    def code(self) -> str:
        if len(self.atoms) == 1:
            return self.atoms[0].var
        return " + ".join(f"{w:g} * {a.var}" for a, w in zip(self.atoms, self.weights))

    def words(self, plural: bool = False) -> str:
        if len(self.atoms) == 1:
            return self.atoms[0].phrase(plural)
        parts = [
            f"{round(100 * w):d}% {a.phrase(plural)}" for a, w in zip(self.atoms, self.weights)
        ]
        return " + ".join(parts)


@dataclass(frozen=True)
class FittedProgram:
    """A fitted decision list: rules in priority order, then the default leaf."""

    rules: tuple[tuple[RowClass, Leaf], ...]
    default: Leaf
    train_score: float
    single_name: str
    single_score: float
    details: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def atoms(self) -> list[Atom]:
        seen: list[Atom] = []
        for leaf in [*(leaf for _, leaf in self.rules), self.default]:
            for a in leaf.atoms:
                if a not in seen:
                    seen.append(a)
        return seen

    @property
    def hypothesis(self) -> str:
        """One line in words."""
        parts = [
            f"{_join_words([c.words for c in classes])} attend to {leaf.words(plural=True)}"
            for classes, leaf in self.grouped_rules
        ]
        if self.rules:
            parts.append(f"every other token attends to {self.default.words()}")
        else:
            parts.append(f"each token attends to {self.default.words()}")
        text = "; ".join(parts)
        return text[0].upper() + text[1:] + "."

    @property
    def grouped_rules(self) -> list[tuple[tuple[RowClass, ...], Leaf]]:
        """Rules with adjacent identical leaves merged (the same program, read more easily)."""
        groups: list[tuple[tuple[RowClass, ...], Leaf]] = []
        for cls, leaf in self.rules:
            if groups and groups[-1][1] == leaf:
                groups[-1] = ((*groups[-1][0], cls), leaf)
            else:
                groups.append(((cls,), leaf))
        return groups

    @property
    def source(self) -> str:
        """Python source for the sandbox: ``def pattern(ctx)`` with the registry's signature."""
        lines = [
            "import numpy as np",
            "",
            "",
            "def pattern(ctx):",
            f'    """{self.hypothesis}"""',
        ]
        for a in self.atoms:
            lines.append(f"    {a.var} = {a.code}")
        for cls, _ in self.rules:
            lines.append(f"    {cls.var} = {cls.code}")
        lines.append(f"    out = {self.default.code()}  # every other token")
        groups = self.grouped_rules
        for i in range(len(groups) - 1, -1, -1):
            classes, leaf = groups[i]
            rows = " | ".join(c.var for c in classes)
            rows = f"({rows})" if len(classes) > 1 else rows
            note = " (wins over later rules)" if i < len(groups) - 1 else ""
            lines.append(
                f"    out = np.where({rows}[:, None], {leaf.code()}, out)"
                f"  # rule {i + 1}{note}: {_join_words([c.words for c in classes])}"
            )
        lines.append("    return out")
        return "\n".join(lines) + "\n"

    @property
    def source_hash(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()[:16]

    def raw(self, contexts: Sequence[PatternContext]) -> list[np.ndarray]:
        """What the source returns on each sentence, computed here (trusted code)."""
        out = []
        for ctx in contexts:
            mats = {a: _atom_matrix(a, ctx) for a in self.atoms}

            def mix(leaf: Leaf, mats: dict = mats) -> np.ndarray:
                return sum(w * mats[a] for a, w in zip(leaf.atoms, leaf.weights))

            m = mix(self.default)
            for cls, leaf in reversed(self.rules):
                m = np.where(cls.fn(ctx)[:, None], mix(leaf), m)
            out.append(np.asarray(m, dtype=np.float64))
        return out

    def as_pattern(self, name: str = "program", family: str = "user") -> Pattern:
        """The program as an in-process `Pattern` (its code is ours, so no sandbox is needed)."""
        prog = self

        def fn(ctx: PatternContext) -> np.ndarray:
            return prog.raw([ctx])[0]

        return Pattern(name=name, family=family, description=self.hypothesis, fn=fn,
                       needs_parse=True)  # fmt: skip


def _join_words(items: Sequence[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _atom_matrix(atom: Atom, ctx: PatternContext) -> np.ndarray:
    return predict(get_pattern(atom.name), ctx)[0]


# ----------------------------------------------------------------------------- fitting


@dataclass
class _Rule:
    cls: int
    rows: np.ndarray  # [R] bool: the rows this rule claimed when it was added
    atoms: list[int]
    w: np.ndarray


def _mix(space: SearchSpace, atoms: Sequence[int], w: np.ndarray, sel: np.ndarray | None = None):
    X = space.X[list(atoms)] if sel is None else space.X[list(atoms)][:, sel]
    return np.tensordot(np.asarray(w, dtype=np.float64), X, axes=1)


def _fit_leaf(
    space: SearchSpace,
    head: _Head,
    sel: np.ndarray,
    omega: np.ndarray,
    max_terms: int,
    min_gain: float,
    starts: int = 2,
) -> tuple[list[int], np.ndarray, np.ndarray]:
    """The best mix on rows ``sel``: forward selection from each of the ``starts`` best single
    atoms; returns (atom indices, weights, row JSD)."""
    singles = head.J[:, sel] @ omega[sel]
    best: tuple[float, list[int], np.ndarray, np.ndarray] | None = None
    for first in np.argsort(singles)[: max(1, starts)]:
        atoms, w, j = _grow_leaf(space, head, sel, omega, int(first), max_terms, min_gain)
        score = float(j @ omega[sel])
        if best is None or score < best[0] - 1e-12:
            best = (score, atoms, w, j)
        if max_terms == 1:
            break
    return best[1], best[2], best[3]


def _grow_leaf(
    space: SearchSpace,
    head: _Head,
    sel: np.ndarray,
    omega: np.ndarray,
    first: int,
    max_terms: int,
    min_gain: float,
) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Forward selection from one starting atom: each step probes every atom at a 10% share,
    line-searches the `_CANDIDATES` best, adds the winner and refines all weights."""
    om = omega[sel]
    A = head.A[sel]
    Xs = space.X[:, sel]  # [K, S, N]; every atom row sums to 1 (the fallback fills empty rows)
    chosen, w = [first], np.array([1.0])
    cur_P = Xs[first]
    cur_score = float(head.J[first, sel] @ om)
    g = _GRID[None, :, None, None]
    for _ in range(max_terms - 1):
        # a cheap first look at every atom (a 10% share), then the full grid for the best few
        probe = jsd(A, 0.9 * cur_P[None] + 0.1 * Xs, axis=-1) @ om
        probe[chosen] = np.inf
        cand = [int(k) for k in np.argsort(probe)[:_CANDIDATES] if np.isfinite(probe[k])]
        if not cand:
            break
        mixes = (1 - g) * cur_P[None, None] + g * Xs[cand][:, None]  # rows never empty
        scores = jsd(A, mixes, axis=-1) @ om  # [candidates, grid]
        c, j = np.unravel_index(int(np.argmin(scores)), scores.shape)
        if cur_score - scores[c, j] < min_gain:
            break
        chosen.append(cand[c])
        w = _refine_weights(space, head, chosen, np.append(w * (1 - _GRID[j]), _GRID[j]), sel, om)
        cur_P = _mix(space, chosen, w, sel) / w.sum()
        cur_score = float(jsd(A, cur_P, axis=-1) @ om)
    w = _round_weights(w)
    order = [i for i in np.argsort(-w, kind="stable") if w[i] > 0]  # heaviest first
    chosen = [chosen[i] for i in order]
    w = w[order]
    return chosen, w, jsd(A, _mix(space, chosen, w, sel), axis=-1)


def _refine_weights(
    space: SearchSpace,
    head: _Head,
    chosen: list[int],
    w0: np.ndarray,
    sel: np.ndarray,
    om: np.ndarray,
) -> np.ndarray:
    """Polish mixing weights by minimising the weighted mean JSD distance directly (L-BFGS-B with
    the analytic gradient; weights in [0, 1], rescaled to sum to 1)."""
    Xs = space.X[chosen][:, sel]  # [k, S, N]
    A = head.A[sel]
    fallback = space.self_row[sel]

    def objective(w: np.ndarray) -> tuple[float, np.ndarray]:
        raw = np.tensordot(w, Xs, axes=1)  # [S, N]
        t = raw.sum(axis=-1, keepdims=True)
        live = t[:, 0] > 0
        P = _finish(raw, fallback)
        d = jsd(A, P, axis=-1)
        value = float(d @ om)
        # d(JSD)/dp = ½·log2(p/m); through p = s/Σs and d = √JSD to the weights
        with np.errstate(divide="ignore", invalid="ignore"):
            g = 0.5 * np.log2(np.maximum(P, 1e-12) / np.maximum((A + P) / 2, 1e-12))
            g = np.where(P > 0, g, 0.0)
            ds = (g - (g * P).sum(axis=-1, keepdims=True)) / np.where(t > 0, t, 1.0)
            ds *= np.where(live & (d > 1e-9), om / (2 * np.maximum(d, 1e-9)), 0.0)[:, None]
        grad = np.einsum("ksn,sn->k", Xs, ds)
        return value, grad

    start = objective(w0)[0]
    try:
        res = minimize(
            objective,
            w0,
            jac=True,
            method="L-BFGS-B",
            bounds=[(0.0, 1.0)] * len(w0),
            options={"maxiter": 30},
        )
    except (ValueError, FloatingPointError):
        return w0 / w0.sum()
    x = np.asarray(res.x)
    w = x if res.fun < start and x.sum() > 0 else w0
    return w / w.sum()


def _round_weights(w: np.ndarray) -> np.ndarray:
    """Two decimals that still sum to 1 (the rounding error goes to the largest weight)."""
    r = np.round(w / w.sum(), 2)
    r[int(np.argmax(r))] += round(1.0 - float(r.sum()), 2)
    return np.round(np.clip(r, 0.0, 1.0), 2)


def _fit_rules(
    space: SearchSpace,
    head: _Head,
    omega: np.ndarray,
    cur: np.ndarray,
    *,
    max_rules: int,
    max_terms: int,
    min_gain: float,
    min_support: int,
) -> list[_Rule]:
    """Greedy decision list: repeatedly the (class, atom) that lowers the weighted JSD most on
    rows no earlier rule claimed; each rule's leaf is then grown into a mix."""
    on = omega > 0
    cur = cur.copy()
    claimed = np.zeros(space.R, dtype=bool)
    rules: list[_Rule] = []
    for _ in range(max_rules):
        free = space.C & ~claimed[None] & on[None]  # [C, R]
        support = free.sum(axis=1)
        n_sent = np.array([len(np.unique(space.sentence[f])) for f in free])
        ok = (support >= min_support) & (n_sent >= 2)
        if not ok.any():
            break
        gains = (free * omega[None]) @ (cur[None, :] - head.J).T  # [C, K]
        gains[~ok] = -np.inf
        c, _ = np.unravel_index(int(np.argmax(gains)), gains.shape)
        if gains.max() < min_gain:
            break
        sel = free[c]
        atoms, w, j = _fit_leaf(space, head, sel, omega, max_terms, min_gain)
        rules.append(_Rule(int(c), sel, atoms, w))
        cur[sel] = j
        claimed |= sel
    return rules


def _predict_rows(
    space: SearchSpace, rules: Sequence[_Rule], default: tuple[list[int], np.ndarray]
) -> np.ndarray:
    raw = _mix(space, *default)
    for r in reversed(rules):
        raw = np.where(space.C[r.cls][:, None], _mix(space, r.atoms, r.w), raw)
    return _finish(raw, space.self_row)


def _fit_path(
    space: SearchSpace,
    head: _Head,
    sentences: np.ndarray,
    *,
    max_rules: int,
    max_terms: int,
    min_gain: float,
    min_support: int,
) -> list[tuple[list[_Rule], tuple[list[int], np.ndarray]]]:
    """Programs with 0, 1, ..., ``max_rules`` rules (a greedy path) fitted on ``sentences``."""
    omega = space.weights(sentences)
    on = omega > 0
    d_atoms, d_w, d_j = _fit_leaf(space, head, on, omega, max_terms, min_gain)
    cur = np.zeros(space.R)
    cur[on] = d_j
    rules = _fit_rules(
        space, head, omega, cur, max_rules=max_rules, max_terms=max_terms, min_gain=min_gain,
        min_support=min_support,
    )  # fmt: skip
    path = [([], (d_atoms, d_w))]
    for k in range(1, len(rules) + 1):
        rest = on & ~np.any([r.rows for r in rules[:k]], axis=0)
        default = (d_atoms, d_w)
        if rest.any():  # refit the default on the rows no rule claimed
            a, w, _ = _fit_leaf(space, head, rest, omega, max_terms, min_gain)
            default = (a, w)
        path.append((rules[:k], default))
    return path


def fit_program(
    contexts: Sequence[PatternContext] | SearchSpace,
    attention: Sequence[np.ndarray],
    *,
    patterns: Sequence[str | Pattern] | None = None,
    classes: Sequence[RowClass] | None = None,
    max_rules: int = 4,
    max_terms: int = 3,
    min_gain: float = 0.003,
    min_support: int = 4,
    folds: int = 2,
) -> FittedProgram:
    """Search for the program that best explains one head on these sentences.

    Args:
        contexts: one `PatternContext` per sentence, or a `SearchSpace` built on them (reuse one
            space for many heads on the same sentences: the atoms are computed once).
        attention: the head's ``[n, n]`` attention on each sentence.
        patterns: atoms to build from (default: the registry, except baselines and user patterns,
            plus ``offset(±3)``); ignored when a `SearchSpace` is given.
        classes: row classes for rules (default: `row_classes` of the sentences).
        max_rules: most rules in the decision list (the number kept is chosen by
            cross-validation over the sentences when ``folds >= 2``).
        max_terms: most atoms in one mix.
        min_gain: smallest drop in mean JSD for which a term or a rule is added.
        min_support: a rule's class must cover at least this many rows, in two sentences or more.
        folds: cross-validation folds over the sentences for the number of rules (1: no CV).

    Returns:
        A `FittedProgram` (``.source``, ``.hypothesis``, ``.train_score``, ...).

    Example:
        >>> prog = fit_program(contexts, [r.head(3, 2) for r in records])
        >>> print(prog.hypothesis)
        Each token attends to 83% the first token + 17% the previous token.
    """
    t0 = time.perf_counter()
    space = (
        contexts
        if isinstance(contexts, SearchSpace)
        else SearchSpace(contexts, patterns=patterns, classes=classes)
    )
    if len(attention) != len(space.contexts):
        raise ValueError(
            f"fit_program needs one attention matrix per sentence, got {len(space.contexts)} "
            f"sentences and {len(attention)} matrices"
        )
    for i, (ctx, a) in enumerate(zip(space.contexts, attention)):
        if np.shape(a) != (ctx.n, ctx.n):
            raise ValueError(f"attention {i} has shape {np.shape(a)}, expected ({ctx.n}, {ctx.n})")
    head = _Head(space, attention)
    n_sent = len(space.contexts)
    everything = np.arange(n_sent)
    kw = dict(max_terms=max_terms, min_gain=min_gain, min_support=min_support)
    cv: dict[int, float] = {}
    n_rules = max_rules
    if folds >= 2 and n_sent >= 2 * folds and max_rules > 0:
        fold_of = everything % folds
        sums = np.zeros(max_rules + 1)
        counts = np.zeros(max_rules + 1)
        for f in range(folds):
            path = _fit_path(space, head, everything[fold_of != f], max_rules=max_rules, **kw)
            held = space.weights(everything[fold_of == f])
            for k in range(max_rules + 1):
                rules, default = path[min(k, len(path) - 1)]
                sums[k] += float(jsd(head.A, _predict_rows(space, rules, default), axis=-1) @ held)
                counts[k] += 1
        cv = {k: float(sums[k] / counts[k]) for k in range(max_rules + 1)}
        best = min(cv.values())
        n_rules = min(k for k, v in cv.items() if v <= best + min_gain / 2)
    path = _fit_path(space, head, everything, max_rules=n_rules, **kw)
    rules, default = path[-1]
    omega = space.weights(everything)
    score = float(jsd(head.A, _predict_rows(space, rules, default), axis=-1) @ omega)
    single = int(np.argmin(head.J @ omega))

    def leaf(atoms: Sequence[int], w: np.ndarray) -> Leaf:
        return Leaf(tuple(space.atoms[a] for a in atoms), tuple(float(x) for x in w))

    return FittedProgram(
        rules=tuple((space.classes[r.cls], leaf(r.atoms, r.w)) for r in rules),
        default=leaf(*default),
        train_score=score,
        single_name=space.atoms[single].name,
        single_score=float(head.J[single] @ omega),
        details={
            "n_atoms": len(space.atoms),
            "n_classes": len(space.classes),
            "cv_scores": cv,
            "n_rules": len(rules),
            "seconds": round(time.perf_counter() - t0, 3),
        },
    )
