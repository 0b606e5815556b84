"""`compare_languages`: shares of heads per pattern and per head type, written out by hand for
small best-fit tables, the errors, the tidy table, and the poster figure (drawn from tables made
end to end: synthetic character records → score_heads → best_fit / head_stats)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from attn_tools.classify import best_fit
from attn_tools.compare import (
    COMPARISON_COLUMNS,
    LanguageComparison,
    canonical_pattern,
    compare_languages,
)
from attn_tools.extract import SentenceAttention
from attn_tools.patterns import build_context, char_patterns, predict
from attn_tools.scoring import score_heads
from attn_tools.stats import HEAD_TYPES, head_stats
from attn_tools.viz.charlm import display_text, plot_language_comparison


def fit_table(model: str, labels: list[str], n_heads: int = 2) -> pd.DataFrame:
    """A best-fit table as `best_fit` returns it (the columns the comparison reads)."""
    return pd.DataFrame(
        {
            "model": model,
            "layer": [i // n_heads for i in range(len(labels))],
            "head": [i % n_heads for i in range(len(labels))],
            "best_pattern": labels,
            "best_score": 0.1,
            "label": labels,
            "tied": [() for _ in labels],
            "rule": "baseline",
        }
    )


EN = fit_table("char-en", ["char_previous", "char_previous", "none", "char_last_vowel(english)"])
HE = fit_table(
    "char-he",
    ["char_previous", "char_last_vowel(hebrew)", "char_last_vowel(hebrew)", "char_same"],
)


def test_canonical_pattern() -> None:
    assert canonical_pattern("char_last_vowel(hebrew)") == "char_last_vowel"
    assert canonical_pattern("char_last_consonant( english )") == "char_last_consonant"
    assert canonical_pattern("offset(-2)") == "offset(-2)"
    assert canonical_pattern("dep(nsubj)") == "dep(nsubj)"


def test_shares_by_hand() -> None:
    cmp = compare_languages({"English": EN, "Hebrew": HE})
    got = cmp.shares.set_index(["language", "pattern"])["n_heads"].to_dict()
    assert got == {
        ("English", "char_previous"): 2, ("English", "char_last_vowel"): 1,
        ("English", "char_same"): 0, ("English", "none"): 1,
        ("Hebrew", "char_previous"): 1, ("Hebrew", "char_last_vowel"): 2,
        ("Hebrew", "char_same"): 1, ("Hebrew", "none"): 0,
    }  # fmt: skip
    # order: summed share over languages (previous 3/4 and last_vowel 3/4 tie: by name), none last
    assert list(cmp.shares["pattern"][:4]) == [
        "char_last_vowel", "char_previous", "char_same", "none",
    ]  # fmt: skip
    assert np.allclose(cmp.shares["share"], cmp.shares["n_heads"] / 4)
    he_vowel = cmp.shares.query("language == 'Hebrew' and pattern == 'char_last_vowel'")
    assert he_vowel["labels"].item() == "char_last_vowel(hebrew)"
    assert cmp.types is None and cmp.stat_means is None
    assert cmp.models == {"English": "char-en", "Hebrew": "char-he"}
    table = cmp.table
    assert tuple(table.columns) == COMPARISON_COLUMNS and set(table["what"]) == {"pattern"}
    assert "Hebrew" in cmp._repr_html_()


def test_table_survives_csv(tmp_path) -> None:
    cmp = compare_languages({"English": EN, "עברית": HE})
    path = tmp_path / "cmp.csv"
    cmp.table.to_csv(path, index=False)
    back = pd.read_csv(path, keep_default_na=False)
    pd.testing.assert_frame_equal(back, cmp.table, check_dtype=False)


def test_bad_inputs() -> None:
    with pytest.raises(TypeError, match="Fix:"):
        compare_languages([EN, HE])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="'Hebrew'.*Fix:"):
        compare_languages({"English": EN, "Hebrew": "fit.csv"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="lacks columns \\['label'\\]"):
        compare_languages({"English": EN.drop(columns="label")})
    with pytest.raises(ValueError, match="2 models.*Fix: select one"):
        compare_languages({"English": pd.concat([EN, HE])})
    with pytest.raises(ValueError, match="twice"):
        compare_languages({"English": pd.concat([EN, EN])})
    stats = pd.DataFrame({"model": "char-en", "layer": [0, 0, 1, 1], "head": [0, 1, 0, 1],
                          "head_type": "self"})  # fmt: skip
    with pytest.raises(ValueError, match="stats has languages"):
        compare_languages({"English": EN, "Hebrew": HE}, stats={"English": stats})
    with pytest.raises(ValueError, match="same model"):
        compare_languages({"Hebrew": HE}, stats={"Hebrew": stats})
    with pytest.raises(ValueError, match="best has 4 heads, stats 2"):
        compare_languages({"English": EN}, stats={"English": stats.iloc[:2]})
    with pytest.raises(TypeError, match="compare_languages"):
        plot_language_comparison(EN)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- end to end

ENGLISH = [
    "Old maps hang in the hall of the inn.",
    "Two crows sat on a wire, watching us.",
    "The kettle sang while we set the table.",
    "Bring a coat; the wind is cold by the lake.",
    "Tom fixed the gate and painted it green.",
]
HEBREW = [
    "הדייג יצא לים עם שחר.",
    "הספרים על המדף מאובקים.",
    "אמא אפתה עוגה, והבית הריח טוב.",
    "התלמידים שרו שיר חדש בכיתה.",
    "הרוח נשבה חזק כל הלילה.",
]


def records(texts: list[str], heads: list[list[str]], model: str) -> list[SentenceAttention]:
    """Records of a causal character "model" whose head ``[l][h]`` attends like that pattern."""
    out = []
    for text in texts:
        n = len(text)
        rec = SentenceAttention(
            text=text, tokens=tuple(text), token_ids=tuple(map(ord, text)),
            offsets=tuple((i, i + 1) for i in range(n)), special_mask=np.zeros(n, bool),
            attention=np.zeros((1, 1, n, n), np.float32), model=model, kind="causal",
        )  # fmt: skip
        ctx = build_context(rec, with_parse=False)
        causal = np.tril(np.ones((n, n)))
        causal /= causal.sum(axis=1, keepdims=True)
        att = np.array([[0.85 * predict(p, ctx)[0] + 0.15 * causal for p in layer]
                        for layer in heads])  # fmt: skip
        out.append(SentenceAttention(**{**rec.__dict__, "attention": att.astype(np.float32)}))
    return out


@pytest.fixture(scope="module")
def comparison() -> LanguageComparison:
    layout = {
        "English": [["char_previous", "char_offset(-2)", "first_token"],
                    ["char_last_space", "char_previous", "char_last_vowel(english)"]],
        "עברית": [["char_previous", "char_previous", "char_word_start"],
                  ["char_last_consonant(hebrew)", "self", "char_last_vowel(hebrew)"]],
    }  # fmt: skip
    fits, stats = {}, {}
    for (lang, heads), texts, code in zip(layout.items(), (ENGLISH, HEBREW), ("english", "hebrew")):
        recs = records(texts, heads, f"char-{code}")
        fits[lang] = best_fit(score_heads(recs, char_patterns(code)))  # type: ignore[arg-type]
        stats[lang] = head_stats(recs)
    return compare_languages(fits, stats=stats)


def test_end_to_end_tables(comparison: LanguageComparison) -> None:
    shares = comparison.shares.set_index(["language", "pattern"])["n_heads"]
    assert shares["English", "char_previous"] == 2 and shares["עברית", "char_previous"] == 2
    assert shares["English", "char_last_vowel"] == 1 and shares["עברית", "char_last_vowel"] == 1
    assert shares["עברית", "char_word_start"] == 1 and shares["English", "char_word_start"] == 0
    assert shares["English", "none"] == 0 and shares["עברית", "none"] == 0
    types = comparison.types
    assert types is not None and list(types["head_type"][: len(HEAD_TYPES)]) == list(HEAD_TYPES)
    for lang, sub in types.groupby("language"):
        assert sub["share"].sum() == pytest.approx(1.0)
        counts = comparison.stats[lang]["head_type"].value_counts()
        for row in sub.itertuples():
            assert row.n_heads == counts.get(row.head_type, 0)
    # the previous-character heads are previous-token heads by the statistics too
    assert types.query("head_type == 'previous-token'")["n_heads"].tolist() == [2, 2]
    means = comparison.stat_means
    prev = means[means["statistic"] == "prev_mass"].set_index("language")["mean"]
    expected = comparison.stats["English"]["prev_mass"].mean()
    assert prev["English"] == pytest.approx(expected)
    assert set(comparison.table["what"]) == {"pattern", "head_type"}


def test_figure(comparison: LanguageComparison, tmp_path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a missing glyph would warn
        fig = comparison.figure(save=tmp_path / "languages.png")
    assert isinstance(fig, Figure) and (tmp_path / "languages.png").stat().st_size > 10_000
    grids = [ax for ax in fig.axes if ax.get_xlabel() == "head"]
    assert len(grids) == 2
    for ax, lang in zip(grids, comparison.languages):
        cells = {p.get_gid() for p in ax.patches}
        assert cells == {f"cell-{layer}-{head}" for layer in range(2) for head in range(3)}
        assert ax.get_title() == display_text(f"{lang} · {comparison.models[lang]}")
    bars = [ax for ax in fig.axes if ax.get_ylabel().startswith("share of heads")]
    assert len(bars) == 2
    # bar heights are the table's shares, language by language
    pattern_ax = bars[0]
    names = list(dict.fromkeys(comparison.shares["pattern"]))
    heights = [b.get_height() for b in pattern_ax.patches]
    want = [
        comparison.shares.set_index(["language", "pattern"])["share"][lang, name]
        for lang in comparison.languages
        for name in names
    ]
    np.testing.assert_allclose(heights, want)
    labels = [t.get_text() for t in pattern_ax.get_legend().get_texts()]
    assert labels == [display_text(lang) for lang in comparison.languages]
    assert "עברית" in fig.get_suptitle() or display_text("עברית") in fig.get_suptitle()


def test_figure_without_stats_and_a_label_the_font_lacks() -> None:
    fig = plot_language_comparison(compare_languages({"English": EN, "Hebrew": HE}))
    assert len([ax for ax in fig.axes if ax.get_ylabel().startswith("share of heads")]) == 1
    # models of different sizes: each grid keeps its own layers × heads
    big = fit_table("char-big", ["char_previous"] * 6 + ["none"] * 6, n_heads=4)
    fig = compare_languages({"English": EN, "Hebrew": big}).figure()
    grids = [ax for ax in fig.axes if ax.get_xlabel() == "head"]
    assert [len({p.get_gid() for p in ax.patches}) for ax in grids] == [4, 12]
    assert grids[1].get_xlim() == (-0.5, 3.5) and grids[1].get_ylim() == (-0.5, 2.5)
    with pytest.raises(ValueError, match="no glyph for '漢字'.*Fix:"):
        plot_language_comparison(compare_languages({"漢字": EN}))
