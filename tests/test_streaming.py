"""Streaming input: `iter_sentences` reads a corpus only as far as its sentences are taken."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from attn_tools import extract, load_sentences
from attn_tools.data import MissingFileError, iter_sentences
from attn_tools.extract import iter_extract

N_LINES = 1_000_000


@pytest.fixture(scope="module")
def big_file(tmp_path_factory) -> Path:
    """A 1M-line corpus (about 55 MB); line i names i, so order and completeness are checkable."""
    path = tmp_path_factory.mktemp("big") / "corpus.txt"
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(N_LINES):
            fh.write(f"Sentence {i} walks past {i % 97} red doors before dawn.\n")
    return path


def _bytes_read() -> int | None:
    """Bytes this process has read through read() calls so far (Linux), else None."""
    try:
        text = Path("/proc/self/io").read_text()
    except OSError:
        return None
    return int(next(line.split()[1] for line in text.splitlines() if line.startswith("rchar")))


def test_first_sentences_arrive_without_reading_the_rest(big_file):
    size = big_file.stat().st_size
    before = _bytes_read()
    tracemalloc.start()
    try:
        stream = iter_sentences(big_file)
        first = list(itertools.islice(stream, 10))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    after = _bytes_read()
    assert first == [f"Sentence {i} walks past {i % 97} red doors before dawn." for i in range(10)]
    assert peak < size / 20, f"{peak} bytes allocated for 10 sentences of a {size}-byte file"
    if before is not None and after is not None:
        # the paragraph check reads the first 1 Mi characters, the stream a buffer: not 55 MB
        assert after - before < 4 * 2**20, f"read {after - before} of {size} bytes"
    stream.close()


def test_a_million_lines_stream_in_bounded_memory(big_file):
    size = big_file.stat().st_size
    tracemalloc.start()
    try:
        count, last = 0, ""
        for count, last in enumerate(iter_sentences(big_file), 1):  # noqa: B007
            pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == N_LINES and last.startswith(f"Sentence {N_LINES - 1} ")
    # holding the lines would take more than the file (55 MB); the stream holds a buffer
    assert peak < size / 20, f"peak {peak / 2**20:.1f} MiB while streaming {size / 2**20:.0f} MiB"


def test_limit_stops_reading(big_file):
    assert list(iter_sentences(big_file, limit=3)) == [
        f"Sentence {i} walks past {i % 97} red doors before dawn." for i in range(3)
    ]


CASES = {
    "crlf_bom.txt": "\ufeffFirst line.\r\nSecond line.\r\n\r\n  \r\nThird\u2028Fourth.\n",
    "para.txt": "The river rose. Nobody slept.\n\nBy morning the\nwater had gone down. Good.\n",
    "rows.jsonl": '{"text": "One row."}\n\n{"text": "Two rows.", "n": 2}\n',
    "rows.csv": 'id,sentence\n1,"A, quoted one."\n2,Plain two.\n3,\n',
    "rows.tsv": "text\tx\nTab one.\t1\nTab two.\t2\n",
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("limit", [None, 2])
def test_same_sentences_as_load_sentences(tmp_path, name, limit):
    path = tmp_path / name
    path.write_bytes(CASES[name].encode("utf-8"))
    want = load_sentences(path, limit=limit, progress=False)
    assert list(iter_sentences(path, limit=limit)) == want
    assert len(want) == (2 if limit else len(want)) and all(s == s.strip() and s for s in want)


def test_builtin_sets_stream_too():
    assert list(iter_sentences("story", limit=5)) == load_sentences("story")[:5]


def test_bad_sources_fail_at_the_call(tmp_path):
    with pytest.raises(MissingFileError, match=r"no file at .*Fix"):
        iter_sentences(str(tmp_path / "missing.txt"))
    (tmp_path / "a.txt").write_text("x\n")
    with pytest.raises(ValueError, match=r"unknown encoding 'klingon'.*Fix"):
        iter_sentences(tmp_path / "a.txt", encoding="klingon")
    (tmp_path / "a.pdf").write_text("x\n")
    with pytest.raises(ValueError, match=r"unsupported file type '.pdf'.*Fix"):
        iter_sentences(tmp_path / "a.pdf")
    with pytest.raises(ValueError, match=r"no sentence set or file named 'nonsense'"):
        iter_sentences("nonsense")


def test_damage_late_in_a_file_is_named_when_reached(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        "".join(json.dumps({"text": f"Row {i}."}) + "\n" for i in range(500)) + "{oops\n"
    )
    stream = iter_sentences(rows)
    assert next(stream) == "Row 0."  # the good part streams before the damage is seen
    with pytest.raises(ValueError, match=r"rows.jsonl:501 is not valid JSON"):
        list(stream)
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"Plain first line.\n" * 3 + "Caf\u00e9 cr\u00e8me.\n".encode("latin-1"))
    stream = iter_sentences(latin)
    assert next(stream) == "Plain first line."
    with pytest.raises(ValueError, match=r"not valid utf-8 .*line.*latin-1.*encoding='latin-1'"):
        list(stream)
    assert list(iter_sentences(latin, encoding="latin-1"))[-1] == "Caf\u00e9 cr\u00e8me."
    empty = tmp_path / "empty.txt"
    empty.write_text("\n   \n")
    with pytest.raises(ValueError, match="holds no non-empty sentences"):
        list(iter_sentences(empty))


def test_hf_dataset_streams(tmp_path):
    """A local dataset folder through `datasets.load_dataset(..., streaming=True)`."""
    pytest.importorskip("datasets")
    folder = tmp_path / "ds"
    folder.mkdir()
    rows = "".join(json.dumps({"text": f"Dataset row {i}.", "id": i}) + "\n" for i in range(40))
    (folder / "train.jsonl").write_text(rows)
    got = list(iter_sentences(f"hf:{folder}", limit=7))
    assert got == [f"Dataset row {i}." for i in range(7)]
    assert got == load_sentences(f"hf:{folder}", limit=7)
    with pytest.raises(ValueError, match=r"column 'body' is not in dataset"):
        list(iter_sentences(f"hf:{folder}", column="body"))


def test_iter_extract_on_a_stream_equals_extract_on_the_list(minilm, tmp_path):
    path = tmp_path / "few.txt"
    path.write_text(
        "Owls hunt at night.\nThe ferry left late, again.\n\n"
        "A hundred and one kites flew.\nShe read it twice.\n"
    )
    texts = load_sentences(path, paragraphs=False)
    want = extract(minilm, texts, cache=False, progress=False, batch_size=2)
    got = list(
        iter_extract(minilm, iter_sentences(path, paragraphs=False), cache=False, progress=False,
                     batch_size=2)
    )  # fmt: skip
    assert [r.text for r in got] == texts
    for a, b in zip(want, got):
        assert np.array_equal(a.attention, b.attention)


@pytest.mark.parametrize("stream_from", ["0", str(16 * 1024**2)])
def test_cli_extract_streams_a_big_file_and_reads_a_small_one(tmp_path, stream_from):
    # files above ATTN_TOOLS_STREAM_FROM_BYTES are streamed (the bar has no total); smaller ones
    # are read whole (the bar shows n/N and an ETA); the result is the same
    src = tmp_path / "s.jsonl"
    src.write_text("".join(json.dumps({"text": f"Bird {i} sang."}) + "\n" for i in range(5)))
    env = {
        **os.environ,
        "TOKENIZERS_PARALLELISM": "false",
        "ATTN_TOOLS_STREAM_FROM_BYTES": stream_from,
    }
    r = subprocess.run(
        [sys.executable, "-m", "attn_tools.cli", "extract", "--model", "minilm",
         "--sentences", str(src), "--out", str(tmp_path)],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    (summary,) = json.loads((tmp_path / "summary.json").read_text())
    assert summary["sentences"] == 5 and summary["tokens"] == 5 * 6  # [CLS] bird i sang . [SEP]
    bar = [ln for ln in r.stderr.replace("\r", "\n").splitlines() if "attention ·" in ln]
    assert bar and ("5/5" in bar[-1]) == (stream_from != "0"), bar[-1]


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16", "cp1252"])
def test_lines_split_across_read_blocks_match_load_sentences(tmp_path, encoding):
    """Line ends, CRLF pairs and multi-byte characters that straddle the 64 KiB read blocks."""
    rng = np.random.default_rng(3)
    ends = ["\n", "\r\n", "\r", "\n\n"] + (["\u2028"] if encoding != "cp1252" else [])
    words = ["déjà", "vu", "naïve", "café", "x", "Zoë", "end."]
    if encoding != "cp1252":
        words += ["日本語", "🙂"]
    text = "".join(
        " ".join(rng.choice(words, size=rng.integers(1, 40))) + rng.choice(ends)
        for _ in range(12_000)
    )
    path = tmp_path / "mixed.txt"
    path.write_bytes(text.encode(encoding))
    assert path.stat().st_size > 3 * 2**16
    want = load_sentences(path, paragraphs=False, encoding=encoding, progress=False)
    assert list(iter_sentences(path, paragraphs=False, encoding=encoding)) == want
