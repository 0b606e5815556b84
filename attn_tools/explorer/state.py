"""The explorer's model, without any widget: what is loaded, what is cached, what a head shows.

`ExplorerState` holds the records, the patterns and the metric, and answers the questions the app
asks on every control change (the comparison of a head with a pattern on a sentence, this head's
scores across patterns, its best-fit label) from caches: each sentence's pattern context and each
(sentence, pattern) prediction are computed once; the score table and the best fit once, on first
use. It can be driven and tested without a browser or ipywidgets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from attn_tools.extract import SentenceAttention
    from attn_tools.patterns.base import Pattern, PatternContext
    from attn_tools.report import HeadComparison

__all__ = ["ExplorerState", "HeadScores"]


def _short(text: str, width: int = 70) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


@dataclass(frozen=True)
class HeadScores:
    """One head's mean score for every pattern of the score table (registry order).

    ``best`` indexes the best pattern under the metric's direction, or is -1 when no pattern
    has a score for this head.
    """

    layer: int
    head: int
    names: tuple[str, ...]
    values: np.ndarray  # [P] mean over the scored sentences, NaN where none
    best: int

    @property
    def best_name(self) -> str | None:
        return self.names[self.best] if self.best >= 0 else None


class ExplorerState:
    """Records, patterns and a metric, with the caches the explorer draws from.

    Args:
        records: the sentences' attention (at least one; all of one model).
        patterns: the patterns offered (at least one).
        metric: a registry metric name (``"jsd"``).
        scores: a `scoring.score_heads` table of ``records`` if one exists (else computed on
            first use, with ``uniform`` added as `classify.best_fit`'s default baseline).
        drop_keys: sink keys removed before scoring (``"first"``, ``"special"``,
            ``"special+punct"`` or a callable; see `scoring.score_heads`), in the score table and
            in every live score.
    """

    def __init__(
        self,
        records: Sequence[SentenceAttention],
        patterns: Sequence[Pattern],
        *,
        metric: str = "jsd",
        scores: pd.DataFrame | None = None,
        drop_keys: Any = None,
    ) -> None:
        from attn_tools.scoring import get_metric

        if not records:
            raise ValueError("the explorer needs at least one sentence. Fix: pass sentences=[...]")
        if not patterns:
            raise ValueError("the explorer needs at least one pattern. Fix: pass patterns=[...]")
        self.spec = get_metric(metric)
        self.drop_keys = drop_keys
        self.records: list[SentenceAttention] = list(records)
        self.patterns: dict[str, Pattern] = {p.name: p for p in patterns}
        # the score table covers the sentences loaded at the start, not ones typed in later
        self.scored_records = len(self.records)
        self._scores = scores
        self._best: pd.DataFrame | None = None
        self._score_index: dict[tuple[int, int, str], tuple[float, int]] | None = None
        self._mean_grids: dict[str, np.ndarray] | None = None
        self._contexts: dict[int, PatternContext] = {}
        self._predictions: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]] = {}

    @property
    def metric(self) -> str:
        return self.spec.name

    @property
    def shape(self) -> tuple[int, int]:
        """``(layers, heads)`` of the model."""
        return self.records[0].n_layers, self.records[0].n_heads

    def sentence_options(self) -> list[tuple[str, int]]:
        """``(label, index)`` pairs for a sentence dropdown."""
        return [
            (f"{i}: {_short(r.text)} ({r.n_tokens} tokens)", i) for i, r in enumerate(self.records)
        ]

    def add_record(self, record: SentenceAttention) -> int:
        """Append a sentence's attention; its index."""
        if record.model != self.records[0].model:
            raise ValueError(
                f"this explorer shows {self.records[0].model}, not {record.model}. Fix: extract "
                "the sentence with the explorer's own model"
            )
        self.records.append(record)
        return len(self.records) - 1

    # ------------------------------------------------------------------ per sentence

    def context(self, index: int) -> PatternContext:
        """The pattern context of sentence ``index`` (all missing ones built in one batch)."""
        from attn_tools.patterns.base import build_contexts

        if index not in self._contexts:
            missing = [i for i in range(len(self.records)) if i not in self._contexts]
            for i, ctx in zip(missing, build_contexts([self.records[i] for i in missing])):
                self._contexts[i] = ctx
        return self._contexts[index]

    def prediction(self, index: int, name: str) -> tuple[np.ndarray, np.ndarray]:
        """The cached ``(matrix [n, n], has_mass [n])`` of pattern ``name`` on sentence ``index``."""
        from attn_tools.patterns.base import predict

        key = (index, name)
        if key not in self._predictions:
            self._predictions[key] = predict(self.patterns[name], self.context(index))
        return self._predictions[key]

    def compare(self, index: int, layer: int, head: int, name: str) -> HeadComparison:
        """Head ``(layer, head)`` against pattern ``name`` on sentence ``index``."""
        from attn_tools.report import compare_head

        return compare_head(
            self.records[index], layer, head, self.patterns[name], metric=self.metric,
            context=self.context(index), prediction=self.prediction(index, name),
            drop_keys=self.drop_keys,
        )  # fmt: skip

    # ------------------------------------------------------------------ over the sentence set

    def scores(self) -> pd.DataFrame:
        """The score table of the first `scored_records` sentences (computed once)."""
        if self._scores is None:
            from attn_tools.scoring import score_heads

            pats: list[Pattern | str] = list(self.patterns.values())
            if "uniform" not in self.patterns:
                pats.append("uniform")  # classify.best_fit's default baseline
            self._scores = score_heads(
                self.records[: self.scored_records], pats, metric=self.metric,
                drop_keys=self.drop_keys,
            )  # fmt: skip
        return self._scores

    def best_fit(self) -> pd.DataFrame:
        """`report.default_best_fit` of `scores` (computed once)."""
        if self._best is None:
            from attn_tools.report import default_best_fit

            self._best = default_best_fit(self.scores())
        return self._best

    def has_scores(self) -> bool:
        """Whether a score table exists yet (given, or computed by an earlier call)."""
        return self._scores is not None

    def mean_score(self, layer: int, head: int, name: str) -> tuple[float, int] | None:
        """``(mean, n_sentences)`` of a head for a pattern, when a score table exists."""
        if self._scores is None:
            return None
        if self._score_index is None:
            t = self._scores[["layer", "head", "pattern", "mean", "n_sentences"]]
            self._score_index = {
                (int(r.layer), int(r.head), str(r.pattern)): (float(r.mean), int(r.n_sentences))
                for r in t.itertuples()
            }
        return self._score_index.get((layer, head, name))

    def head_scores(self, layer: int, head: int) -> HeadScores:
        """This head's mean score for every pattern in the score table."""
        from attn_tools.viz import head_grid

        if self._mean_grids is None:
            table = self.scores()
            names = list(dict.fromkeys(table["pattern"].astype(str)))
            self._mean_grids = {
                n: head_grid(table[table["pattern"] == n], "mean", *self.shape) for n in names
            }
        names = tuple(self._mean_grids)
        values = np.array([self._mean_grids[n][layer, head] for n in names])
        best = self.spec.best(values) if np.isfinite(values).any() else -1
        return HeadScores(layer, head, names, values, int(best))

    def label(self, layer: int, head: int) -> str:
        """The head's label in the best-fit grid (``"none"`` when no pattern fits)."""
        best = self.best_fit()
        row = best[(best["layer"] == layer) & (best["head"] == head)]
        return str(row["label"].iloc[0]) if len(row) else "?"
