"""Metric-aware scoring of a candidate program against one head, the built-ins and the library.

Pure functions of attention, contexts and patterns: nothing here writes a file or asks a
hypothesizer. The metric comes from the registry (`attn_tools.scoring.get_metric`): only metrics
whose scores rank patterns (``ranks_patterns``: ``jsd``, ``sae``, ``mae``) can choose a program,
the best pattern is chosen with ``spec.best`` and compared with ``spec.better``, and the
feedback's per-row disagreements use the metric's own per-row values.

Near-duplicates are a separate question from the score: two programs are near-duplicates when
their held-out *predictions* are almost equal (mean row JS distance below a tolerance), whatever
metric ranks them against the head.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from attn_tools.automate.hypothesize.prompt import Disagreement
from attn_tools.automate.hypothesize.search import EXTRA_ATOMS
from attn_tools.automate.library import UserLibrary, prefetch, sandboxed_pattern
from attn_tools.patterns.base import Pattern, PatternContext, get_pattern, list_patterns, predict
from attn_tools.scoring import MetricSpec, ScoreOptions, get_metric, jsd, metric_names, score_pair

__all__ = [
    "HeadScorer",
    "LibraryMatch",
    "beats_by",
    "builtin_patterns",
    "ranking_metric",
]


def builtin_patterns() -> list[Pattern]:
    """The built-in patterns a program is compared with: every registered pattern except user
    and baseline ones, plus the extra offsets program search may use (``offset(±3)``)."""
    pats = [p for p in list_patterns() if p.family not in ("user", "baseline")]
    names = {p.name for p in pats}
    return pats + [get_pattern(n) for n in EXTRA_ATOMS if n not in names]


def ranking_metric(metric: str | MetricSpec) -> MetricSpec:
    """The registry's spec for ``metric``, refused unless its scores rank patterns."""
    spec = metric if isinstance(metric, MetricSpec) else get_metric(metric)
    if not spec.ranks_patterns:
        raise ValueError(
            f"metric {spec.name!r} cannot choose between patterns (its scores of different "
            "patterns do not compare). Fix: use one of "
            f"{', '.join(metric_names(ranks_patterns=True))}."
        )
    return spec


def beats_by(spec: MetricSpec, score: float, reference: float | None, margin: float) -> bool:
    """True when ``score`` is better than ``reference`` by at least ``margin`` under ``spec``'s
    direction (any score beats a missing reference)."""
    if reference is None or not np.isfinite(reference):
        return True
    shifted = score - margin if spec.higher_is_better else score + margin
    return shifted == reference or spec.better(shifted, reference)


def _top3(row: np.ndarray, labels: Sequence[str]) -> tuple[tuple[int, str, float], ...]:
    keys = [k for k in np.argsort(-row)[:3] if row[k] > 0.05]
    return tuple((int(k), labels[k], round(float(row[k]), 3)) for k in keys)


@dataclass(frozen=True)
class LibraryMatch:
    """The library seen from one program: the best entry on the head and a near-duplicate."""

    best_name: str | None = None
    best_score: float | None = None
    duplicate: str | None = None


class HeadScorer:
    """Scores patterns against one head on one set of sentences with one metric.

    Args:
        records: the sentences' `SentenceAttention`.
        contexts: their `PatternContext` s (same order).
        layer, head: the head.
        metric: a registry metric that ranks patterns (default ``jsd``).
        table: a `score_heads` table of `builtin_patterns` on these sentences with this metric
            (computed on first use when not given).
    """

    def __init__(
        self,
        records: Sequence[Any],
        contexts: Sequence[PatternContext],
        layer: int,
        head: int,
        metric: str | MetricSpec = "jsd",
        *,
        table: pd.DataFrame | None = None,
    ) -> None:
        self.records = list(records)
        self.contexts = list(contexts)
        if len(self.records) != len(self.contexts):
            raise ValueError(
                f"{len(self.records)} records but {len(self.contexts)} contexts; they must pair up"
            )
        self.layer, self.head = int(layer), int(head)
        self.spec = ranking_metric(metric)
        if table is not None and set(table["metric"]) != {self.spec.name}:
            raise ValueError(
                f"the built-in score table holds metric {sorted(set(table['metric']))}, not "
                f"{self.spec.name!r}. Fix: score it with metric={self.spec.name!r}."
            )
        self._table = table
        self.attention = [rec.head(self.layer, self.head) for rec in self.records]

    @property
    def table(self) -> pd.DataFrame:
        """`score_heads` of the built-in patterns on these sentences (computed once)."""
        if self._table is None:
            from attn_tools.scoring import score_heads

            self._table = score_heads(
                self.records, builtin_patterns(), contexts=self.contexts, metric=self.spec.name
            )
        return self._table

    def predictions(self, pattern: Pattern) -> list[np.ndarray]:
        """The pattern's prediction on each sentence, as the metric compares it."""
        return [predict(pattern, ctx, normalize=not self.spec.raw)[0] for ctx in self.contexts]

    def score(self, pattern: Pattern) -> float:
        """Mean over sentences of the head's score against ``pattern`` (the engine's numbers)."""
        preds = self.predictions(pattern)
        return float(
            np.mean([score_pair(a, p, self.spec.name) for a, p in zip(self.attention, preds)])
        )

    def best_builtin(self) -> tuple[str, float]:
        """The best built-in pattern on this head and its score (by ``spec.best``)."""
        t = self.table
        rows = t[(t["layer"] == self.layer) & (t["head"] == self.head)]
        best = rows.iloc[self.spec.best(rows["mean"].to_numpy())]
        return str(best["pattern"]), float(best["mean"])

    def better(self, a: float, b: float | None) -> bool:
        """True when score ``a`` is strictly better than ``b`` (any score beats None)."""
        return b is None or self.spec.better(a, b)

    def beats(self, score: float, reference: float | None, margin: float) -> bool:
        """True when ``score`` is better than ``reference`` by at least ``margin``."""
        return beats_by(self.spec, score, reference, margin)

    def disagreements(self, pattern: Pattern, *, top: int = 5) -> tuple[Disagreement, ...]:
        """The query rows where the pattern's prediction is worst for the head, by the metric's
        per-row values (``Disagreement.jsd`` then holds that row value)."""
        opt = ScoreOptions(metric=self.spec.name)
        found: list[tuple[float, Disagreement]] = []
        for s, (att, pred, ctx) in enumerate(
            zip(self.attention, self.predictions(pattern), self.contexts)
        ):
            att = att.astype(np.float64)
            if self.spec.paired is not None:
                values = np.asarray(self.spec.paired(att, pred, opt), dtype=np.float64)
                badness = self.spec.signed(values)  # larger is worse
            else:  # a registered metric without a per-row form: rank rows by JS distance
                values = badness = np.asarray(jsd(att, pred, axis=-1), dtype=np.float64)
            labels = ctx.token_texts
            for q in np.argsort(-badness)[:top]:
                item = Disagreement(
                    sentence=s,
                    text=ctx.text,
                    query=int(q),
                    query_token=labels[q],
                    head_top=_top3(att[q], labels),
                    program_top=_top3(pred[q], labels),
                    jsd=round(float(values[q]), 3),
                )
                found.append((float(badness[q]), item))
        found.sort(key=lambda t: -t[0])
        return tuple(d for _, d in found[:top])

    def compare_library(
        self,
        library: UserLibrary,
        program: Pattern,
        *,
        duplicate_tol: float,
        limits: dict[str, Any],
    ) -> LibraryMatch:
        """The best library entry on this head and the program's nearest near-duplicate.

        Entries that fail in the sandbox or were edited on disk are skipped (they cannot be
        compared, and a comparison must not stop a run).
        """
        best: tuple[str, float] | None = None
        duplicate, closest = None, np.inf
        ours = [predict(program, ctx)[0] for ctx in self.contexts]
        for entry in library.entries:
            try:
                source = library.source(entry.name)
            except (OSError, ValueError):
                continue
            status, _ = prefetch(source, self.contexts, **limits)
            if status != "ok":
                continue
            pat = sandboxed_pattern(entry.name, source, entry.hypothesis, **limits)
            score = self.score(pat)
            if best is None or self.spec.better(score, best[1]):
                best = (entry.name, score)
            theirs = [predict(pat, ctx)[0] for ctx in self.contexts]
            dist = float(np.mean([jsd(a, b, axis=-1).mean() for a, b in zip(ours, theirs)]))
            if dist < duplicate_tol and dist < closest:
                duplicate, closest = entry.name, dist
        if best is None:
            return LibraryMatch(duplicate=duplicate)
        return LibraryMatch(best_name=best[0], best_score=best[1], duplicate=duplicate)
