"""Built-in sentence sets and the file/dataset loaders."""

from __future__ import annotations

import json

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
