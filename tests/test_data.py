"""Built-in sentence sets and the file/dataset loaders."""

from __future__ import annotations

import json
import re

import pytest

from attn_tools import list_sentence_sets, load_sentences
from attn_tools.data import SENTENCE_SETS


def test_builtin_sets_are_large_distinct_and_heldout_is_separate():
    sets = {name: load_sentences(name) for name in SENTENCE_SETS}
    assert sum(len(s) for s in sets.values()) >= 200
    assert all(len(s) >= 40 for s in sets.values())
    everything = [s for v in sets.values() for s in v]
    assert len(everything) == len(set(everything)), "a sentence appears twice"
    assert not set(sets["heldout"]) & set(load_sentences("all"))
    assert load_sentences("all") == [
        s for n in ("story", "punctuation", "repetition", "syntax") for s in sets[n]
    ]
    assert set(list_sentence_sets()) == {*SENTENCE_SETS, "all"}


def test_sets_serve_their_purpose():
    import string

    punct = load_sentences("punctuation")
    assert all(sum(c in string.punctuation for c in s) >= 3 for s in punct)
    rep = load_sentences("repetition")
    words = [[w.strip(string.punctuation).lower() for w in s.split()] for s in rep]
    function_words = {"the", "and", "was", "but", "for", "her", "his", "she", "they", "with"}
    assert all(
        any(ws.count(w) >= 2 and len(w) >= 3 and w not in function_words for w in ws)
        for ws in words
    )
    assert any(not s.isascii() for s in load_sentences("all") + load_sentences("heldout"))


def test_txt_one_per_line_and_paragraphs(tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_text("First sentence here.\n\nSecond one, after a blank.\n", encoding="utf-8")
    assert load_sentences(lines, paragraphs=False) == [
        "First sentence here.",
        "Second one, after a blank.",
    ]
    para = tmp_path / "para.txt"
    para.write_text(
        "The river rose. Nobody slept that night.\n\nBy morning the\nwater had gone down.\n",
        encoding="utf-8",
    )
    assert load_sentences(para) == [
        "The river rose.",
        "Nobody slept that night.",
        "By morning the water had gone down.",
    ]
    flat = tmp_path / "flat.txt"
    flat.write_text("A. B is here.\nC\n", encoding="utf-8")
    assert load_sentences(flat) == ["A. B is here.", "C"]  # no blank lines: one per line


def test_jsonl_and_csv_columns(tmp_path):
    jl = tmp_path / "s.jsonl"
    jl.write_text("\n".join(json.dumps({"id": i, "sentence": f"Line {i}."}) for i in range(3)))
    assert load_sentences(jl) == ["Line 0.", "Line 1.", "Line 2."]
    with pytest.raises(ValueError, match=r"column 'body' is not in .*\['id', 'sentence'\]"):
        load_sentences(jl, column="body")
    csvf = tmp_path / "s.csv"
    csvf.write_text('id,body\n1,"Hello, there."\n2,Bye.\n', encoding="utf-8")
    assert load_sentences(csvf, column="body") == ["Hello, there.", "Bye."]
    with pytest.raises(ValueError, match="pass column="):
        load_sentences(csvf)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{oops\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2 is not valid JSON"):
        load_sentences(bad)


def test_bad_sources_have_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="no sentence set or file named 'storyy'"):
        load_sentences("storyy")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n   \n")
    with pytest.raises(ValueError, match="holds no non-empty sentences"):
        load_sentences(empty)
    odd = tmp_path / "x.xlsx"
    odd.write_bytes(b"PK")
    with pytest.raises(ValueError, match="unsupported file type"):
        load_sentences(odd)


def test_hf_dataset_without_hub_fails_clearly(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="Hugging Face dataset"):
        load_sentences("hf:attn-tools-test/no-such-dataset")


def test_limit():
    assert load_sentences("story", limit=5) == load_sentences("story")[:5]


# ----------------------------------------------------------------------------- encodings


@pytest.mark.parametrize(
    ("codec", "text", "suggested"),
    [
        ("latin-1", "Zoë drank a café crème.\nÀ bientôt.\n", "latin-1"),
        ("cp1252", "\u201cQuoted\u201d \u2013 and Zoë.\nSecond line.\n", "cp1252"),
        ("utf-16", "Zoë drank a café crème.\nÀ bientôt.\n", "utf-16"),  # with a byte-order mark
        ("utf-16-le", "Plain ASCII, no mark.\nSecond line.\n", "utf-16-le"),
        ("utf-16-be", "Plain ASCII, no mark.\nSecond line.\n", "utf-16-be"),
    ],
)
def test_other_encodings_name_the_file_and_the_encoding(tmp_path, codec, text, suggested):
    path = tmp_path / f"notes-{codec}.txt"
    path.write_bytes(text.encode(codec))
    with pytest.raises(ValueError, match=r"notes-.*\.txt.*encoding='" + re.escape(suggested)):
        load_sentences(path)
    assert load_sentences(path, encoding=suggested) == text.splitlines()


def test_unknown_encoding_name_is_refused(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("Hello.\n")
    with pytest.raises(ValueError, match=r"unknown encoding 'latin-9x'"):
        load_sentences(path, encoding="latin-9x")


def test_utf8_byte_order_mark_is_dropped(tmp_path):
    bom = "\ufeff"
    txt = tmp_path / "bom.txt"
    txt.write_text(bom + "First line.\nSecond line.\n", encoding="utf-8")
    assert load_sentences(txt) == ["First line.", "Second line."]
    csvf = tmp_path / "bom.csv"
    csvf.write_text(bom + "text,id\nHello there.,1\n", encoding="utf-8")
    assert load_sentences(csvf) == ["Hello there."]  # the column is "text", not "\ufefftext"
    jl = tmp_path / "bom.jsonl"
    jl.write_text(bom + '{"text": "A line."}\n', encoding="utf-8")
    assert load_sentences(jl) == ["A line."]


# ----------------------------------------------------------------------------- JSONL values


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"text": 3}', r"s\.jsonl:2: 'text' is int \(3\), not a string"),
        ('{"text": null}', r"s\.jsonl:2: 'text' is NoneType \(None\), not a string"),
        ('{"text": ["a", "b"]}', r"s\.jsonl:2: 'text' is list"),
        ('{"text": {"en": "Hi."}}', r"s\.jsonl:2: 'text' is dict"),
        ('["text", "Hi."]', r"s\.jsonl:2 is a JSON list, not an object"),
        ('"Just a string."', r"s\.jsonl:2 is a JSON str, not an object"),
    ],
)
def test_jsonl_values_that_are_not_strings_are_refused(tmp_path, line, message):
    jl = tmp_path / "s.jsonl"
    jl.write_text('{"text": "Fine."}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        load_sentences(jl)


def test_lone_surrogate_from_a_file_names_the_file_and_sentence(tmp_path):
    jl = tmp_path / "emoji.jsonl"
    jl.write_text('{"text": "Fine."}\n{"text": "Half \\ud83d an emoji."}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"emoji\.jsonl: sentence 1 holds a lone surrogate"):
        load_sentences(jl)


# ----------------------------------------------------------------------------- paths


def test_missing_relative_paths_are_missing_files_not_datasets(tmp_path, monkeypatch):
    from attn_tools.data import MissingFileError

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "data").mkdir()
    for name in ("data/sentences", "notes.txt", "./corpus", "~/no-such-folder-xyz/a", "a/b/c"):
        with pytest.raises(MissingFileError, match=rf"no file at '{re.escape(name)}'.*hf:"):
            load_sentences(name)
    assert issubclass(MissingFileError, ValueError) and issubclass(MissingFileError, OSError)
    with pytest.raises(ValueError, match=r"'data' is a folder, not a file"):
        load_sentences("data")
    # an owner/name with no such local folder is still a dataset name (here: offline, so it fails)
    with pytest.raises(ValueError, match=r"Hugging Face dataset .*no local file"):
        load_sentences("someone/corpus")


# ----------------------------------------------------------------------------- paragraphs


def test_paragraphs_are_split_by_the_light_sentence_splitter(tmp_path):
    from attn_tools.data import _splitter
    from attn_tools.text import DEFAULT_PIPELINE

    source = load_sentences("all")
    paragraphs = [source[i : i + 4] for i in range(0, len(source) - 3, 4)]
    big = tmp_path / "book.txt"
    big.write_text("\n\n".join(" ".join(p) for p in paragraphs) + "\n", encoding="utf-8")
    # every paragraph's sentences come back exactly, in order
    assert load_sentences(big, progress=False) == [s for p in paragraphs for s in p]
    # only the statistical sentence splitter runs: no tagger, parser or entity recogniser
    assert _splitter(DEFAULT_PIPELINE).pipe_names == ["senter"]
