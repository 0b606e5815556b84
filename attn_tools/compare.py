"""Compare models trained on different languages: which patterns their heads fit, how often, and
what kind of heads they have.

`compare_languages` takes, per language, the per-head best-fit table that
`attn_tools.classify.best_fit` already produces (one model each) and, optionally, the
`attn_tools.stats.head_stats` table of the same model; it returns a `LanguageComparison` that
holds tidy tables (``shares``, ``types``, ``table``) and draws the poster figure
(`attn_tools.viz.charlm.plot_language_comparison`). Nothing is scored or classified here: the
inputs carry the rule they were made under (the best-fit ``rule`` column), and the comparison is
only as like-for-like as those inputs are (same patterns, same rule, comparable text).

Pattern names that carry the language (``char_last_vowel(hebrew)``) are compared under their
language-free name (``char_last_vowel``): the vowel rule differs by language, the question "is
there a last-vowel head" does not. The table keeps the original label in ``labels``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from attn_tools.patterns.charlevel import LANGUAGES

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "COMPARISON_COLUMNS",
    "LanguageComparison",
    "canonical_pattern",
    "compare_languages",
]

#: the columns of `LanguageComparison.table`, in order
COMPARISON_COLUMNS = ("language", "model", "what", "name", "labels", "n_heads", "n_total", "share")
_NONE = "none"
_LANGUAGE_ARG = re.compile(r"^(?P<base>.+)\((?P<arg>\s*(?:" + "|".join(LANGUAGES) + r")\s*)\)$")


def canonical_pattern(name: str) -> str:
    """The pattern name without a language argument: ``char_last_vowel(hebrew)`` →
    ``char_last_vowel``; every other name is returned unchanged."""
    m = _LANGUAGE_ARG.match(str(name))
    return m.group("base") if m else str(name)


@dataclass(frozen=True)
class LanguageComparison:
    """What `compare_languages` returns: the inputs and the tidy tables made from them.

    Attributes:
        best: language → that model's best-fit table (as given, in the order given).
        stats: language → that model's `head_stats` table, or None when not given.
        shares: one row per (language, pattern): ``language, model, pattern, labels, n_heads,
            n_total, share`` — the share of the model's heads labelled with the pattern
            (``"none"``: no pattern under the rule; always listed, last). A pattern absent in a
            language gets a row with 0 heads there, so the languages line up.
        types: the same for head types (``head_type`` instead of ``pattern``), or None.
        stat_means: one row per (language, statistic): the mean over heads of each `head_stats`
            statistic, or None.
    """

    best: dict[str, pd.DataFrame]
    stats: dict[str, pd.DataFrame] | None
    shares: pd.DataFrame
    types: pd.DataFrame | None
    stat_means: pd.DataFrame | None
    models: dict[str, str] = field(default_factory=dict)

    @property
    def languages(self) -> list[str]:
        return list(self.best)

    @property
    def table(self) -> pd.DataFrame:
        """Everything in one tidy table (`COMPARISON_COLUMNS`): ``what`` is ``"pattern"`` or
        ``"head_type"``; ``name`` the pattern or head type."""
        parts = [self.shares.rename(columns={"pattern": "name"}).assign(what="pattern")]
        if self.types is not None:
            types = self.types.rename(columns={"head_type": "name"})
            parts.append(types.assign(what="head_type", labels=types["name"]))
        return pd.concat(parts, ignore_index=True)[list(COMPARISON_COLUMNS)]

    def figure(self, **kwargs: Any) -> Figure:
        """The poster figure (`attn_tools.viz.charlm.plot_language_comparison`)."""
        from attn_tools.viz.charlm import plot_language_comparison

        return plot_language_comparison(self, **kwargs)

    def _repr_html_(self) -> str:
        wide = self.shares.pivot_table(
            index="pattern", columns="language", values="share", sort=False
        )
        return "<b>Share of heads per pattern</b>" + wide.to_html(float_format="{:.0%}".format)


def _one_model(table: Any, language: str, what: str, needed: tuple[str, ...]) -> str:
    if not isinstance(table, pd.DataFrame):
        raise TypeError(
            f"{what} for {language!r} is {type(table).__name__}, not a DataFrame. Fix: pass "
            f"{{'{language}': {'classify.best_fit(scores)' if what == 'best' else 'head_stats(records)'}}}."
        )
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise ValueError(
            f"the {what} table for {language!r} lacks columns {missing} (has "
            f"{list(table.columns)[:10]}). Fix: pass "
            f"{'classify.best_fit(...)' if what == 'best' else 'stats.head_stats(...)'} output."
        )
    models = list(dict.fromkeys(table["model"].astype(str)))
    if len(models) != 1:
        raise ValueError(
            f"the {what} table for {language!r} holds {len(models)} models {models[:4]}; a "
            "language is compared through one model. Fix: select one, e.g. "
            "table[table.model == name]."
        )
    if table.duplicated(["layer", "head"]).any():
        raise ValueError(
            f"the {what} table for {language!r} lists a (layer, head) twice. Fix: pass one row "
            "per head, as best_fit / head_stats return."
        )
    return models[0]


def _shares(
    frames: dict[str, pd.DataFrame], models: dict[str, str], column: str, key: str,
    order: list[str] | None = None,
) -> pd.DataFrame:  # fmt: skip
    """Tidy shares of ``column``'s values per language, every value present in every language."""
    rows = []
    for lang, df in frames.items():
        values = df[column].astype(str)
        names = values.map(canonical_pattern) if key == "pattern" else values
        total = len(df)
        for name, group in values.groupby(names, sort=False):
            rows.append((lang, models[lang], name, "|".join(sorted(set(group))), len(group), total))
    out = pd.DataFrame(rows, columns=["language", "model", key, "labels", "n_heads", "n_total"])
    if order is None:
        # most common first over all languages (by mean share), "none" last
        mean = (out["n_heads"] / out["n_total"]).groupby(out[key]).sum()
        order = sorted(mean.index, key=lambda n: (n == _NONE, -mean[n], n))
        if _NONE not in order:  # "no pattern" always has its bar, 0 included
            order.append(_NONE)
    full = pd.MultiIndex.from_product([list(frames), order], names=["language", key])
    out = out.set_index(["language", key]).reindex(full).reset_index()
    out["model"] = out["language"].map(models)
    out["n_total"] = out["language"].map({lang: len(df) for lang, df in frames.items()})
    out["n_heads"] = out["n_heads"].fillna(0).astype(int)
    out["labels"] = out["labels"].fillna("")
    out["share"] = out["n_heads"] / out["n_total"]
    return out[["language", "model", key, "labels", "n_heads", "n_total", "share"]]


def compare_languages(
    best: Mapping[str, pd.DataFrame],
    *,
    stats: Mapping[str, pd.DataFrame] | None = None,
) -> LanguageComparison:
    """Line up the best-fit tables (and head statistics) of models trained on different languages.

    Args:
        best: language → `classify.best_fit` table of one model, e.g.
            ``{"English": best_fit(scores_en), "Hebrew": best_fit(scores_he)}``; the keys are the
            names figures show (any text, Hebrew included), in the order given.
        stats: optional language → `stats.head_stats` table of the same model (same keys).

    Returns:
        A `LanguageComparison`: ``.shares`` (heads per pattern), ``.types`` (heads per head type),
        ``.stat_means``, ``.table`` (all in one tidy table) and ``.figure()``.

    Example:
        >>> cmp = compare_languages({"English": fit_en, "Hebrew": fit_he},
        ...                         stats={"English": stats_en, "Hebrew": stats_he})
        >>> cmp.table.query("what == 'pattern'")
        >>> cmp.figure(save="outputs/languages.png")
    """
    if not isinstance(best, Mapping) or not best:
        raise TypeError(
            f"best must be a non-empty mapping language → best-fit table, got {type(best).__name__}"
            ". Fix: compare_languages({'English': fit_en, 'Hebrew': fit_he})."
        )
    frames = {str(k): v for k, v in best.items()}
    models = {
        lang: _one_model(df, lang, "best", ("model", "layer", "head", "label"))
        for lang, df in frames.items()
    }
    shares = _shares(frames, models, "label", "pattern")
    types = stat_means = None
    stat_frames = None
    if stats is not None:
        from attn_tools.stats import HEAD_TYPES, STAT_COLUMNS

        stat_frames = {str(k): v for k, v in stats.items()}
        if set(stat_frames) != set(frames):
            raise ValueError(
                f"stats has languages {sorted(stat_frames)}, best has {sorted(frames)}. Fix: "
                "pass one head_stats table per language of best, under the same keys."
            )
        stat_frames = {lang: stat_frames[lang] for lang in frames}  # best's order
        for lang, df in stat_frames.items():
            name = _one_model(df, lang, "stats", ("model", "layer", "head", "head_type"))
            if name != models[lang]:
                raise ValueError(
                    f"for {lang!r} best is about model {models[lang]!r} but stats about {name!r}. "
                    "Fix: pass the head_stats of the same model."
                )
            if len(df) != len(frames[lang]):
                raise ValueError(
                    f"for {lang!r} best has {len(frames[lang])} heads, stats {len(df)}. Fix: "
                    "compute both on the whole model."
                )
        types = _shares(stat_frames, models, "head_type", "head_type", order=list(HEAD_TYPES))
        rows = []
        for lang, df in stat_frames.items():
            for col in STAT_COLUMNS:
                if col in df.columns:
                    vals = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)
                    rows.append((lang, models[lang], col, float(np.nanmean(vals)),
                                 float(np.nanmedian(vals))))  # fmt: skip
        stat_means = pd.DataFrame(
            rows, columns=["language", "model", "statistic", "mean", "median"]
        )
    return LanguageComparison(
        best=frames,
        stats=stat_frames,
        shares=shares,
        types=types,
        stat_means=stat_means,
        models=models,
    )
