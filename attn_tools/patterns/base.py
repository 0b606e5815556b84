"""The `Pattern` type, the registry, and the framework that turns a pattern into a prediction.

A pattern is a function ``fn(ctx) -> ndarray [n, n]`` (non-negative weights; row ``q`` says where
query token ``q`` is predicted to attend). It does not need to normalise, mask or handle special
cases: `predict` does that for every pattern, the same way:

1. validate the raw output (an ndarray of shape ``[n, n]``, finite, non-negative), raising a
   `PatternError` that names the pattern and the sentence otherwise;
2. for causal models, zero every ``k > q`` entry (a decoder cannot attend ahead);
3. renormalise each row to sum to 1;
4. a row left with no mass *falls back to attending to itself* (``ctx.fallback``). The mask of
   rows that had mass of their own is returned too, so scoring can skip fallback rows.

Conventions shared by every built-in family:

- Special tokens ([CLS], [SEP], a prepended BOS) are ordinary positions for the positional and
  token-id patterns; they belong to no spaCy word, so word-level patterns give them an empty row
  (→ the self fallback) and never attend to them.
- Word-level patterns build a ``[w, w]`` word matrix and expand it with
  `PatternContext.words_to_tokens`: every piece of a word gets the word's row, attention *to* a word
  is spread evenly over its pieces.
- A token "is punctuation" when its text (the characters it covers, or its string without the
  ``##``/``Ġ``/``▁`` marker) is non-empty and made of Unicode punctuation characters only.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from attn_tools.patterns.context import (
    MAX_WEIGHT,
    PatternContext,
    is_punctuation,
    set_builtin_resolver,
)
from attn_tools.text import Parse, align, parse

__all__ = [
    "OPT_IN",
    "REGISTRY",
    "Pattern",
    "PatternContext",
    "PatternError",
    "build_context",
    "build_contexts",
    "get_pattern",
    "is_punctuation",
    "list_patterns",
    "pattern",
    "pattern_factory",
    "predict",
    "predict_many",
    "resolve_patterns",
    "shuffled",
]

Family = Literal[
    "positional", "lexical", "linguistic", "special", "character", "charlevel", "baseline", "user"
]


class PatternError(ValueError):
    """A pattern returned something that is not a valid prediction, or does not exist."""


@dataclass(frozen=True)
class Pattern:
    """A named predicted attention pattern.

    Attributes:
        name: registry name (``"previous_token"``, ``"offset(2)"``, ``"dep(nsubj)"``).
        family: ``positional``, ``lexical``, ``linguistic``, ``special``, ``character``,
            ``baseline`` (chance-level comparisons such as ``shuffled(...)``) or ``user``.
        description: one line saying what each row attends to.
        fn: ``fn(ctx: PatternContext) -> ndarray [n, n]``, non-negative.
        needs_parse: True when ``fn`` reads ``ctx.words`` (spaCy); lets callers skip parsing.
        color: the colour figures draw it in (``"#rrggbb"``); ``""`` lets a figure derive one
            from the name, so it is stable across figures without a table keyed by name.
        phrase: what a token attends to, as words that finish "each token attends to ..."
            (``"the previous token"``), for readable program-search hypotheses and legends;
            ``""`` when none was given.
    """

    name: str
    family: str
    description: str
    fn: Callable[[PatternContext], np.ndarray] = field(repr=False)
    needs_parse: bool = False
    color: str = ""
    phrase: str = ""

    def __post_init__(self) -> None:
        if self.color and not _COLOR.match(self.color):
            raise PatternError(
                f"pattern {self.name!r}: color {self.color!r} is not a '#rrggbb' hex colour. "
                "Fix: pass e.g. color='#1f77b4', or leave it empty."
            )

    def __call__(self, ctx: PatternContext) -> np.ndarray:
        return predict(self, ctx)[0]


_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")

REGISTRY: dict[str, Pattern] = {}
#: opt-in patterns (the ``charlevel`` family): found by name (`get_pattern`) and by family
#: (``list_patterns("charlevel")``) but not in the default set (``resolve_patterns(None)``,
#: ``list_patterns()``), so analyses of word-piece models never score them by accident
OPT_IN: dict[str, Pattern] = {}
_FACTORIES: dict[str, tuple[Callable[..., Pattern], str]] = {}


def pattern(
    *,
    name: str,
    family: str,
    description: str | None = None,
    needs_parse: bool = False,
    color: str = "",
    phrase: str = "",
    registry: dict[str, Pattern] | None = None,
) -> Callable[[Callable[[PatternContext], np.ndarray]], Callable[[PatternContext], np.ndarray]]:
    """Register ``fn(ctx) -> [n, n]`` as a pattern. The description defaults to the docstring's
    first line; ``color`` and ``phrase`` are the display metadata of `Pattern`.

    Example:
        >>> @pattern(name="two_back", family="user")
        ... def two_back(ctx):
        ...     '''Each token attends to the token two places before it.'''
        ...     return np.eye(ctx.n, k=-2)
    """
    target = REGISTRY if registry is None else registry

    def deco(fn: Callable[[PatternContext], np.ndarray]) -> Callable[[PatternContext], np.ndarray]:
        desc = description or (fn.__doc__ or name).strip().splitlines()[0]
        target[name] = Pattern(name, family, desc, fn, needs_parse, color=color, phrase=phrase)
        return fn

    return deco


def pattern_factory(
    prefix: str, *, example: str
) -> Callable[[Callable[..., Pattern]], Callable[..., Pattern]]:
    """Register a parametrised family: ``get_pattern("offset(3)")`` calls ``factory("3")``."""

    def deco(factory: Callable[..., Pattern]) -> Callable[..., Pattern]:
        _FACTORIES[prefix] = (factory, example)
        for made in [k for k in _MADE if k.startswith(f"{prefix}(")]:
            del _MADE[made]  # a re-registered factory must not serve stale patterns
        return factory

    return deco


_PARAM = re.compile(r"^\s*([A-Za-z_]\w*)\s*\((.*)\)\s*$")
_MADE: dict[str, Pattern] = {}


def get_pattern(name: str | Pattern) -> Pattern:
    """Look up a pattern by name, including parametrised ones (``offset(-2)``, ``dep(amod)``)."""
    if isinstance(name, Pattern):
        return name
    if name in REGISTRY:
        return REGISTRY[name]
    if name in OPT_IN:
        return OPT_IN[name]
    if name in _MADE:
        return _MADE[name]
    m = _PARAM.match(name)
    if m and m.group(1) in _FACTORIES:
        made = _FACTORIES[m.group(1)][0](m.group(2).strip())
        if made.name in REGISTRY:  # "offset( 2 )" is the registered "offset(2)"
            made = REGISTRY[made.name]
        elif made.name in OPT_IN:
            made = OPT_IN[made.name]
        _MADE[name] = _MADE.setdefault(made.name, made)
        return _MADE[name]
    known = ", ".join(sorted(REGISTRY)[:12])
    params = ", ".join(ex for _, ex in _FACTORIES.values())
    opt_in = sorted({p.family for p in OPT_IN.values()})
    raise PatternError(
        f"unknown pattern {name!r}. Known: {known}, ... (see list_patterns()); "
        f"parametrised: {params}; opt-in families: {', '.join(opt_in) or 'none'} "
        "(list_patterns(family))."
    )


def resolve_patterns(patterns: Iterable[str | Pattern] | str | Pattern | None) -> list[Pattern]:
    """Turn names/patterns (or None = every registered pattern) into a list of `Pattern`."""
    if patterns is None:
        return list(REGISTRY.values())
    if isinstance(patterns, (str, Pattern)):
        patterns = [patterns]
    out = [get_pattern(p) for p in patterns]
    names = [p.name for p in out]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise PatternError(f"patterns listed twice: {sorted(dupes)}")
    return out


def list_patterns(family: str | None = None) -> list[Pattern]:
    """Registered patterns in registration order: the default set, or every pattern of one
    ``family`` (opt-in families such as ``"charlevel"`` are listed only when named)."""
    if family is None:
        return list(REGISTRY.values())
    return [p for p in (*REGISTRY.values(), *OPT_IN.values()) if p.family == family]


# ----------------------------------------------------------------------------- contexts


def _resolve_builtin(ctx: PatternContext, name: str) -> tuple[np.ndarray, np.ndarray]:
    return predict(get_pattern(name), ctx)


# ``ctx.builtin("name")`` in this process asks the registry (the sandbox child gets prepared ones)
set_builtin_resolver(_resolve_builtin)


def build_context(
    record: Any, parsed: Parse | None = None, *, with_parse: bool = True
) -> PatternContext:
    """Make the `PatternContext` of a `SentenceAttention` (parsing its text if not given).

    With ``with_parse=False`` and no ``parsed``, spaCy is skipped: the context has no words and
    an empty alignment, which is enough for patterns with ``needs_parse=False``.
    """
    if parsed is None:
        parsed = parse(record.text)[0] if with_parse else Parse(record.text, (), "none")
    return PatternContext(
        text=record.text,
        tokens=tuple(record.tokens),
        token_ids=tuple(record.token_ids),
        offsets=tuple(record.offsets),
        special_mask=np.asarray(record.special_mask, dtype=bool),
        kind=record.kind,
        words=parsed.words,
        alignment=align(record, parsed),
    )


def build_contexts(records: Sequence[Any], *, with_parse: bool = True) -> list[PatternContext]:
    """Contexts for many records with one batched spaCy pass (none with ``with_parse=False``)."""
    if not with_parse:
        return [build_context(r, with_parse=False) for r in records]
    parses = parse([r.text for r in records])
    return [build_context(r, p) for r, p in zip(records, parses)]


# ----------------------------------------------------------------------------- prediction


def _where(p: Pattern, ctx: PatternContext) -> str:
    return f"pattern {p.name!r} on sentence {ctx.text[:60]!r}"


def _raw(p: Pattern, ctx: PatternContext) -> np.ndarray:
    """Call the pattern and check what it returned is an ``[n, n]`` array."""
    try:
        raw = p.fn(ctx)
    except PatternError:
        raise
    except Exception as exc:
        raise PatternError(
            f"pattern {p.name!r} failed on sentence {ctx.text[:60]!r}: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(raw, np.ndarray):
        raise PatternError(
            f"{_where(p, ctx)} returned {type(raw).__name__}, expected a numpy array"
        )
    if raw.shape != (ctx.n, ctx.n):
        raise PatternError(
            f"{_where(p, ctx)} returned shape {raw.shape}, expected ({ctx.n}, {ctx.n})"
        )
    return raw


def _check_values(stack: np.ndarray, patterns: Sequence[Pattern], ctx: PatternContext) -> None:
    """Finite, non-negative and at most `MAX_WEIGHT`, checked on the whole stack; the first
    culprit is named."""
    finite = np.isfinite(stack).all(axis=(1, 2))
    if not finite.all():
        bad = patterns[int(np.argmin(finite))]
        raise PatternError(f"{_where(bad, ctx)} returned NaN or infinite values")
    low = stack.min(axis=(1, 2)) if stack.size else np.zeros(len(stack))
    if (low < 0).any():
        i = int(np.argmin(low))
        raise PatternError(
            f"{_where(patterns[i], ctx)} returned negative values (min {low[i]:.3g})"
        )
    high = stack.max(axis=(1, 2)) if stack.size else np.zeros(len(stack))
    if (high > MAX_WEIGHT).any():
        i = int(np.argmax(high))
        raise PatternError(
            f"{_where(patterns[i], ctx)} returned a weight of {high[i]:.3g}; weights may be at "
            f"most {MAX_WEIGHT:g} (rows are normalised, so scale them down)"
        )


def _masked_raw(p: Pattern, ctx: PatternContext) -> np.ndarray:
    """The validated, causally masked raw ``[n, n]`` weights of ``p`` on ``ctx`` (float64,
    read-only), computed once per (pattern, context): a report scores the same sentences several
    times (all rows, own rows, with and without the sink, the calibrated labels), and a pattern's
    prediction depends on the sentence only. The memo lives on the context, so it goes when the
    context does; `Pattern` equality (same name, family and function) is the key, so a pattern
    registered again under the same name is computed afresh."""
    try:
        key: tuple | None = ("predict", p)
        hit = ctx._memo.get(key)
    except TypeError:  # a pattern whose function is unhashable is simply not memoised
        key, hit = None, None
    if hit is None:
        raw = np.array(_raw(p, ctx), dtype=np.float64)  # a copy: the pattern keeps its array
        _check_values(raw[None], [p], ctx)
        if ctx.causal:
            raw = np.tril(raw)
        raw.setflags(write=False)
        if key is not None:
            ctx._memo[key] = raw
        return raw
    return hit


def predict_many(
    patterns: Sequence[Pattern | str], ctx: PatternContext, *, normalize: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted attention of many patterns on one sentence: ``([P, n, n], [P, n])``.

    Each pattern's raw output is validated (``[n, n]`` array, finite, non-negative; otherwise a
    `PatternError` naming the pattern and the sentence), causally masked for decoders, and —
    with ``normalize=True`` — its rows renormalised, rows with no mass taking the fallback
    (`PatternContext.fallback`: attend to self). The second array says which rows had mass of
    their own. With ``normalize=False`` the validated, masked raw weights are returned unchanged
    (the TransformerLens-compatible metrics score those, as it does its 0/1 detection patterns).
    """
    pats = [get_pattern(p) for p in patterns]
    n = ctx.n
    if not pats:
        return np.zeros((0, n, n)), np.zeros((0, n), dtype=bool)
    stack = np.stack([_masked_raw(p, ctx) for p in pats])
    sums = stack.sum(axis=-1)
    has_mass = sums > 0
    if not normalize:
        return stack, has_mass
    out = stack / np.where(has_mass, sums, 1.0)[..., None]
    empty = ~has_mass
    if empty.any():
        out = np.where(empty[..., None], ctx.fallback()[None], out)
    return out, has_mass


def predict(
    p: Pattern | str, ctx: PatternContext, *, normalize: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted attention of one pattern on one sentence: ``(matrix [n, n], has_mass [n])``.

    With ``normalize=True`` every row sums to 1 (rows with no mass of their own take the
    fallback, and ``has_mass`` is False there); see `predict_many` for the whole procedure.
    """
    mats, masks = predict_many([p], ctx, normalize=normalize)
    return mats[0], masks[0]


# ----------------------------------------------------------------------------- baselines


@pattern_factory("shuffled", example="shuffled(previous_token)")
def shuffled(inner_name: str) -> Pattern:
    """``shuffled(name)``: the named pattern with each row's weights moved to random keys.

    Row ``q`` keeps its raw weights (so the same number of targets with the same weights) but
    they are permuted over the keys that row may attend to: all ``n`` keys for an encoder,
    keys ``0..q`` for a causal model. The permutation is seeded by the sentence text and the
    pattern name, so a score table is reproducible. It is the chance-level version of a pattern,
    used by `attn_tools.classify.best_fit` with ``baseline="shuffled"``.
    """
    inner = get_pattern(inner_name)

    def fn(ctx: PatternContext) -> np.ndarray:
        raw, _ = predict(inner, ctx, normalize=False)
        rng = np.random.default_rng(zlib.crc32(f"{inner.name}\x00{ctx.text}".encode()))
        out = np.zeros_like(raw)
        for q in range(ctx.n):
            width = q + 1 if ctx.causal else ctx.n
            out[q, :width] = raw[q, :width][rng.permutation(width)]
        return out

    return Pattern(
        name=f"shuffled({inner.name})",
        family="baseline",
        description=f"{inner.name} with each row's weights moved to random allowed keys",
        fn=fn,
        needs_parse=inner.needs_parse,
    )
