"""Hebrew in figures: the bidi reorder on hand-checked strings, that matplotlib really shows the
letters in reading order, and that the font has real Hebrew glyphs (not tofu).

Expected visual strings were written by hand from UAX #9 and cross-checked once against
python-bidi 0.6, which agrees on the order of every string here; it does not mirror brackets
(UAX #9 rule L4), so the bracket glyphs themselves are checked by hand only.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from attn_tools.viz.charlm import (
    _ink,
    bidi_text,
    display_text,
    matplotlib_applies_bidi,
    missing_glyphs,
    plot_char_head,
)

HEBREW_LETTERS = "אבגדהוזחטיכךלמםנןסעפףצץקרשת"
MISSING = "漢"  # DejaVu Sans has no CJK ideographs


@pytest.mark.parametrize(
    ("logical", "visual"),
    [
        ("שלום.", ".םולש"),  # RTL paragraph: the full stop ends up at the left
        ("Hebrew (עברית)", "Hebrew (תירבע)"),  # LTR paragraph with one Hebrew word
        ("עברית (Hebrew)", "(Hebrew) תירבע"),  # brackets mirror in the RTL run (L4)
        ("הילד אכל 3 תפוחים.", ".םיחופת 3 לכא דליה"),  # digits keep their order
        ("בשנת 1948 קמה", "המק 1948 תנשב"),
        ("עלה ב-15% היום", "םויה 15%-ב הלע"),  # a percent sign stays with its number (W5)
        ('מחיר: 3,000 ש"ח', 'ח"ש 3,000 :ריחמ'),  # a comma inside a number (W4)
        ("abc 1.5 אב", "abc 1.5 בא"),
        ("אב 1.5 abc!", "!abc 1.5 בא"),
        ("L0 H1 · הילד", "L0 H1 · דליה"),
        ("בית־ספר", "רפס־תיב"),  # the maqaf is a neutral between Hebrew letters
        ("דָג", "גָד"),  # a niqqud mark stays on its letter (W1)
        ("שלום  ", "  םולש"),  # trailing spaces stay at the paragraph end (L1)
        # N0: the pair holds only Hebrew but sits in an English context, so both brackets take
        # the paragraph direction (without N0 the closing one would join the Hebrew run)
        ("a [ב] ג", "a [ב] ג"),
    ],
)
def test_bidi_text(logical: str, visual: str) -> None:
    assert bidi_text(logical) == visual


def test_bidi_text_leaves_ltr_alone_and_handles_lines() -> None:
    for s in ["What is the model doing? (L3, H2)", "50% of heads", ""]:
        assert bidi_text(s) == s
    assert bidi_text("English\nעברית") == "English\nתירבע"
    assert bidi_text("abc", base="rtl") == "abc"  # one LTR run in an RTL paragraph
    assert bidi_text("abc אב", base="rtl") == "בא abc"
    with pytest.raises(TypeError, match="str"):
        bidi_text(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="base"):
        bidi_text("x", base="up")  # type: ignore[arg-type]


def _which_letter_at(ink: np.ndarray, side: str) -> str:
    """Whether the glyph at ``side`` of a drawing is alef or bet (pixel agreement)."""
    alef, bet = _ink("א"), _ink("ב")
    width = min(alef.shape[1], bet.shape[1])
    crop = ink[:, :width] if side == "left" else ink[:, -width:]
    a = alef[:, :width] if side == "left" else alef[:, -width:]
    b = bet[:, :width] if side == "left" else bet[:, -width:]
    return "alef" if (crop == a).mean() > (crop == b).mean() else "bet"


def test_drawn_hebrew_reads_right_to_left() -> None:
    """Whatever this matplotlib does itself, the string a figure draws shows "אב" (alef first
    in reading order) with alef at the right."""
    drawn = _ink(display_text("אב"))
    assert _which_letter_at(drawn, "right") == "alef"
    assert _which_letter_at(drawn, "left") == "bet"
    # and the probe agrees with what the raw string looks like
    raw = _ink("אב")
    assert (_which_letter_at(raw, "right") == "alef") == matplotlib_applies_bidi()


def test_display_text_reorders_only_where_matplotlib_does_not(monkeypatch) -> None:
    import attn_tools.viz.charlm as charlm

    monkeypatch.setattr(charlm, "matplotlib_applies_bidi", lambda: False)  # matplotlib < 3.11
    assert charlm.display_text("עברית (Hebrew)") == "(Hebrew) תירבע"
    monkeypatch.setattr(charlm, "matplotlib_applies_bidi", lambda: True)
    assert charlm.display_text("עברית (Hebrew)") == "עברית (Hebrew)"


def test_font_has_hebrew_glyphs_not_tofu() -> None:
    assert missing_glyphs(HEBREW_LETTERS + " .,־") == []
    assert missing_glyphs("a" + MISSING + "b") == [MISSING]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the missing glyph's warning is checked below
        tofu = _ink(MISSING)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        inks = [_ink(c) for c in HEBREW_LETTERS]
    assert not [w for w in caught if "missing from font" in str(w.message)]
    for c, ink in zip(HEBREW_LETTERS, inks):
        assert ink.any(), c  # something is drawn
        assert ink.shape != tofu.shape or not np.array_equal(ink, tofu), c
    # 27 letters, 27 different drawings (tofu boxes would all look alike)
    assert len({(ink.shape, ink.tobytes()) for ink in inks}) == len(HEBREW_LETTERS)
    # the check really catches a missing glyph: matplotlib warns and draws the same box for two
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        other = _ink("字")
    assert any("missing from font" in str(w.message) for w in caught)
    assert np.array_equal(other, tofu)


def test_char_head_title(tmp_path) -> None:
    from attn_tools.extract import SentenceAttention

    text = "הדג שחה."
    n = len(text)
    att = np.tril(np.ones((n, n)))
    att /= att.sum(axis=1, keepdims=True)
    rec = SentenceAttention(
        text=text, tokens=tuple(text), token_ids=tuple(map(ord, text)),
        offsets=tuple((i, i + 1) for i in range(n)), special_mask=np.zeros(n, bool),
        attention=att[None, None].astype(np.float32), model="char-he", kind="causal",
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = plot_char_head(rec, 0, 0, save=tmp_path / "head.png")
    ax = fig.axes[0]
    assert ax.get_title().split("\n")[1] == display_text(text)
    assert [t.get_text() for t in ax.get_xticklabels()][:3] == ["ה", "ד", "ג"]  # logical order
    with pytest.raises(ValueError, match="no glyph"):
        plot_char_head(rec, 0, 0, title=f"head {MISSING}")
