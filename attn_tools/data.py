"""Sentence sets: built-in sets written for this project, files, and Hugging Face datasets.

Built-in sets (one sentence per line in ``attn_tools/sentences/``):

=============  ==========================================================================
``story``      short everyday story sentences — the clean baseline
``punctuation`` sentences with several punctuation marks — punctuation and sink heads
``repetition`` sentences that repeat words and phrases — duplicate-token and induction heads
``syntax``     relative clauses, passives, questions, coordination — dependency heads
``heldout``    a mix of all four, used only to validate findings (never to choose them)
``all``        story + punctuation + repetition + syntax (not heldout)
=============  ==========================================================================
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import re
from collections.abc import Iterable, Iterator
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "SENTENCE_SETS",
    "MissingFileError",
    "check_unicode",
    "iter_sentences",
    "list_sentence_sets",
    "load_sentences",
    "split_sentences",
]

SENTENCE_SETS: dict[str, str] = {
    "story": "short everyday story sentences (the clean baseline)",
    "punctuation": "punctuation-rich sentences (punctuation and sink heads)",
    "repetition": "repeated words and phrases (duplicate-token and induction heads)",
    "syntax": "relative clauses, passives, questions, coordination (dependency heads)",
    "heldout": "a mix of all styles, for validation only",
}
_ANALYSIS_SETS = ("story", "punctuation", "repetition", "syntax")


def check_unicode(index: int, text: str) -> None:
    """Raise a ValueError naming sentence ``index`` if ``text`` holds a lone surrogate.

    Lone surrogates (``"\\ud83d"`` without its partner) come from text decoded with
    ``errors="surrogateescape"`` or JSON that split an emoji; tokenizers and spaCy fail on them
    with messages that name neither the sentence nor the character.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        around = text[max(0, exc.start - 20) : exc.end + 20]
        raise ValueError(
            f"sentence {index} holds a lone surrogate {text[exc.start]!r} at character "
            f"{exc.start} ({around!r}), which is not valid Unicode. Fix: decode the source with "
            "its real encoding, or drop the character, e.g. "
            "text.encode('utf-8', 'replace').decode('utf-8')."
        ) from None


def _builtin(name: str) -> list[str]:
    text = resources.files("attn_tools").joinpath("sentences", f"{name}.txt").read_text("utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def list_sentence_sets() -> dict[str, str]:
    """Built-in set names with their purpose and size, e.g. ``{"story": "... (60 sentences)"}``."""
    out = {
        name: f"{purpose} ({len(_builtin(name))} sentences)"
        for name, purpose in SENTENCE_SETS.items()
    }
    out["all"] = (
        f"{' + '.join(_ANALYSIS_SETS)} ({sum(len(_builtin(n)) for n in _ANALYSIS_SETS)} sentences)"
    )
    return out


class MissingFileError(FileNotFoundError, ValueError):
    """A sentence source that looks like a file path names no file (a ValueError too)."""


@lru_cache(maxsize=4)
def _splitter(pipeline: str) -> Any:
    """A light spaCy pipeline that only finds sentence boundaries.

    The full pipeline tags, parses and recognises entities, which takes minutes on a megabyte of
    text; sentence boundaries need only the statistical ``senter`` (which the default pipeline
    ships, disabled). A pipeline without one keeps just its parser, and a blank one gets the
    rule-based ``sentencizer``.
    """
    import spacy

    from attn_tools.text import _nlp

    names = _nlp(pipeline).component_names  # raises the clear "not installed" error
    if "senter" in names:
        nlp = spacy.load(pipeline, exclude=[n for n in names if n != "senter"])
        nlp.enable_pipe("senter")
    elif "parser" in names:
        nlp = spacy.load(pipeline, exclude=[n for n in names if n not in ("tok2vec", "parser")])
    else:
        nlp = spacy.blank(_nlp(pipeline).lang)
        nlp.add_pipe("sentencizer")
    return nlp


def _split_blocks(blocks: list[str], pipeline: str | None, progress: bool) -> list[str]:
    from attn_tools.text import DEFAULT_PIPELINE

    nlp = _splitter(pipeline or DEFAULT_PIPELINE)
    # the limit guards the parser's memory; the senter alone is linear in the text
    nlp.max_length = max(nlp.max_length, max((len(b) for b in blocks), default=0) + 1)
    docs = nlp.pipe(blocks, batch_size=256)
    if progress:
        from tqdm.auto import tqdm

        # delay: small files finish before a bar would appear
        docs = tqdm(docs, total=len(blocks), desc="splitting", unit="para", delay=1, leave=False)
    return [s.text.strip() for doc in docs for s in doc.sents if s.text.strip()]


def split_sentences(text: str, *, pipeline: str | None = None) -> list[str]:
    """Split running text into sentences with spaCy's statistical sentence splitter.

    Only the pipeline's ``senter`` runs (see `_splitter`), so this is fast on long texts.
    """
    if not isinstance(text, str):
        raise TypeError(f"text is {type(text).__name__}, not a string. Fix: pass a string.")
    return _split_blocks([text], pipeline, progress=False)


def _pick_column(columns: list[str], column: str | None, source: str) -> str:
    if column is not None:
        if column not in columns:
            raise ValueError(
                f"column {column!r} is not in {source}; its columns are {columns}. "
                "Fix: pass column= one of those."
            )
        return column
    for guess in ("text", "sentence", "sentences", "content"):
        if guess in columns:
            return guess
    raise ValueError(
        f"cannot tell which column of {source} holds the sentences (columns: {columns}). "
        "Fix: pass column=..."
    )


_FILE_SUFFIXES = (".txt", ".text", ".jsonl", ".csv", ".tsv", ".json")


def _looks_like_path(name: str) -> bool:
    """True for a name meant as a file: ``./x``, ``~/x``, ``/x``, ``a/b/c``, ``x.txt``, or
    ``data/x`` where ``data`` is a local folder. Only ``owner/name`` is left for the hub."""
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep in name.replace("/", ""):
        return True
    if Path(name).suffix.lower() in _FILE_SUFFIXES:
        return True
    return "/" in name and Path(name.split("/", 1)[0]).is_dir()


def load_sentences(
    name_or_path: str | Path,
    *,
    column: str | None = None,
    paragraphs: bool | None = None,
    split: str = "train",
    limit: int | None = None,
    encoding: str = "utf-8",
    progress: bool = True,
) -> list[str]:
    """Load sentences from a built-in set, a file or a Hugging Face dataset.

    Args:
        name_or_path: a built-in set (see `list_sentence_sets`), a ``.txt`` file, a
            ``.jsonl``/``.csv`` file, or a Hugging Face dataset (``"hf:NAME"``, or an
            ``"owner/name"`` that is not a local path; needs the ``datasets`` package and the hub).
            A name that looks like a path (``./x``, ``a/b/c``, ``x.txt``, ``data/x`` with a local
            ``data`` folder) and names no file raises `MissingFileError`.
        column: the field holding the text in ``.jsonl``/``.csv``/datasets (default: ``text``
            or ``sentence`` when present). Its values must be strings.
        paragraphs: for ``.txt``: True splits blank-line separated paragraphs into sentences with
            spaCy's sentence splitter; False reads one sentence per line; None (default) decides
            by whether the file has blank lines between blocks of text.
        split: dataset split for Hugging Face datasets.
        limit: keep at most this many sentences.
        encoding: the files' text encoding (a UTF-8 byte-order mark is dropped). A file that does
            not decode names the encoding it most likely has.
        progress: show a bar while splitting paragraphs (only when it takes over a second).

    Returns:
        A list of non-empty sentences, in file order.
    """
    name = str(name_or_path)
    kind, where = _source(name)
    if kind == "builtin":
        out = where
    elif kind == "file":
        out = _load_file(where, column=column, paragraphs=paragraphs, encoding=encoding,
                         progress=progress)  # fmt: skip
    else:
        out = _load_hf(where, column=column, split=split, limit=limit)
    out = [s.strip() for s in out if s.strip()]
    if limit is not None:
        out = out[: int(limit)]
    if not out:
        raise ValueError(f"{name!r} holds no non-empty sentences")
    for index, sentence in enumerate(out):
        try:
            check_unicode(index, sentence)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    return out


def _source(name: str) -> tuple[Literal["builtin", "file", "hf"], Any]:
    """What ``name`` refers to: a built-in set (its sentences), a file (its path) or a dataset."""
    if name in SENTENCE_SETS:
        return "builtin", _builtin(name)
    if name == "all":
        return "builtin", [s for n in _ANALYSIS_SETS for s in _builtin(n)]
    path = Path(name).expanduser()
    if path.is_file():
        return "file", path
    if path.is_dir():
        raise ValueError(
            f"{name!r} is a folder, not a file. Fix: pass one .txt/.jsonl/.csv file in it."
        )
    if name.startswith("hf:") or ("/" in name and not _looks_like_path(name)):
        return "hf", name.removeprefix("hf:")
    if _looks_like_path(name):
        raise MissingFileError(
            f"no file at {name!r} (looked for {path.absolute()}). Fix: check the path; a "
            f"relative path starts from the current folder {Path.cwd()}. For a Hugging Face "
            f"dataset, write 'hf:{name}'."
        )
    sets = ", ".join([*SENTENCE_SETS, "all"])
    raise ValueError(
        f"no sentence set or file named {name!r}. Fix: use a built-in set ({sets}), a "
        "path to a .txt/.jsonl/.csv file, or 'hf:<dataset>' for a Hugging Face dataset."
    )


def _guess_encoding(raw: bytes) -> str:
    """The encoding a file that is not UTF-8 most likely has (for the error message)."""
    if raw.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        return "utf-32"
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    sample = raw[:4096]
    if sample.count(0) > len(sample) // 4:  # ASCII text in UTF-16 is every other byte NUL
        odd_nuls = sample[1::2].count(0)
        return "utf-16-le" if odd_nuls > sample[0::2].count(0) else "utf-16-be"
    try:
        raw.decode("cp1252")
    except UnicodeDecodeError:
        return "latin-1"
    # bytes 0x80-0x9f are control codes in latin-1 but quotes and dashes in Windows-1252
    return "cp1252" if any(0x80 <= b <= 0x9F for b in raw) else "latin-1"


def _read_text(path: Path, encoding: str) -> str:
    raw = path.read_bytes()
    codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        text = raw.decode(codec)
    except LookupError:
        raise ValueError(
            f"unknown encoding {encoding!r} for {path}. Fix: pass a Python codec name, e.g. "
            "encoding='latin-1'."
        ) from None
    except UnicodeDecodeError as exc:
        guess = _guess_encoding(raw)
        raise ValueError(
            f"{path} is not valid {encoding} (byte {exc.start}: {raw[exc.start : exc.start + 4]!r}); "
            f"it looks like {guess}. Fix: load_sentences({str(path)!r}, encoding={guess!r})."
        ) from None
    if "\x00" in text:  # UTF-16 without a byte-order mark decodes "fine" as UTF-8, with NULs
        guess = _guess_encoding(raw)
        raise ValueError(
            f"{path} decoded as {encoding} holds NUL characters; it looks like {guess}. "
            f"Fix: load_sentences({str(path)!r}, encoding={guess!r})."
        )
    return text.removeprefix("\ufeff")  # a byte-order mark is not part of the text


def _load_file(
    path: Path, *, column: str | None, paragraphs: bool | None, encoding: str, progress: bool
) -> list[str]:
    suffix = path.suffix.lower()
    if suffix not in (".txt", ".text", "", ".jsonl", ".csv", ".tsv"):
        raise ValueError(
            f"unsupported file type {suffix!r} for {path}. Fix: use .txt, .jsonl or .csv."
        )
    raw = _read_text(path, encoding)
    if suffix in (".txt", ".text", ""):
        blocks = [b for b in re.split(r"\n\s*\n", raw) if b.strip()]
        if paragraphs is None:
            paragraphs = len(blocks) > 1
        if paragraphs:
            return _split_blocks([" ".join(b.split()) for b in blocks], None, progress)
        return raw.splitlines()
    if suffix == ".jsonl":
        return _load_jsonl(path, raw, column)
    reader = csv.DictReader(
        io.StringIO(raw, newline=""), delimiter="\t" if suffix == ".tsv" else ","
    )
    col = _pick_column(list(reader.fieldnames or []), column, str(path))
    return [row[col] or "" for row in reader]


def _load_jsonl(path: Path, raw: str, column: str | None) -> list[str]:
    rows: list[tuple[int, object]] = []
    for lineno, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append((lineno, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{lineno} is not valid JSON: {exc.msg}") from exc
    if not rows:
        return []
    for lineno, row in rows:
        if not isinstance(row, dict):
            raise ValueError(
                f"{path}:{lineno} is a JSON {type(row).__name__}, not an object. Fix: write one "
                'object per line, e.g. {"text": "A sentence."}.'
            )
    col = _pick_column(list(rows[0][1]), column, str(path))  # type: ignore[arg-type]
    missing = [lineno for lineno, r in rows if col not in r]  # type: ignore[operator]
    if missing:
        raise ValueError(f"{path}: lines {missing[:5]} have no {col!r} field")
    out = []
    for lineno, row in rows:
        value = row[col]  # type: ignore[index]
        if not isinstance(value, str):
            # stringifying would turn 3 into "3" and null into "None": refuse instead
            raise ValueError(
                f"{path}:{lineno}: {col!r} is {type(value).__name__} ({value!r:.40}), not a "
                "string. Fix: store the sentence as a JSON string, or pick another column=."
            )
        out.append(value)
    return out


def _load_hf(name: str, *, column: str | None, split: str, limit: int | None) -> list[str]:
    try:
        import datasets
    except ImportError as exc:
        raise ValueError(
            f"loading the Hugging Face dataset {name!r} needs the `datasets` package. "
            "Fix: pip install datasets (and network access to the hub)."
        ) from exc
    config = None
    if ":" in name:
        name, config = name.split(":", 1)
    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as exc:
        raise ValueError(
            f"could not load Hugging Face dataset {name!r} ({exc}); there is no local file of "
            "that name either. Fix: check the name, or pass the path of a local file."
        ) from exc
    col = _pick_column(list(ds.column_names), column, f"dataset {name!r}")
    if limit is not None:
        ds = ds.select(range(min(int(limit), len(ds))))
    values = list(ds[col])
    for row, value in enumerate(values):
        if not isinstance(value, str):
            raise ValueError(
                f"dataset {name!r} row {row}: {col!r} is {type(value).__name__} "
                f"({value!r:.40}), not a string. Fix: pick a text column with column=."
            )
    return values


# ----------------------------------------------------------------------------- streaming

#: ``paragraphs=None`` in `iter_sentences` decides from this many leading characters of a file
PARAGRAPH_PEEK_CHARS = 1 << 20


def iter_sentences(
    name_or_path: str | Path,
    *,
    column: str | None = None,
    paragraphs: bool | None = None,
    split: str = "train",
    limit: int | None = None,
    encoding: str = "utf-8",
) -> Iterator[str]:
    """Yield sentences one at a time, reading a file or dataset only as far as they are taken.

    The streaming form of `load_sentences`, for corpora too large to hold (a 1M-line file, a
    ``hf:`` dataset): memory stays at one line (one paragraph with ``paragraphs=True``) plus the
    reader's buffer, and the first sentences arrive before the rest is read. Feed it straight
    to `attn_tools.extract.iter_extract`. The arguments are those of `load_sentences`; on the
    same source both give the same sentences in the same order, with two differences:

    - ``paragraphs=None`` decides from the file's first `PARAGRAPH_PEEK_CHARS` (1 Mi)
      characters (blank lines between blocks of text there → paragraphs); pass True/False to
      decide yourself;
    - a problem further into the file (bad JSON, a bytes that does not decode, a non-string
      field) is raised when the stream reaches it; the error names the line.

    The source (its name, that the file exists, its type, the encoding's name) is checked at
    the call. Hugging Face datasets are opened with ``streaming=True``.

    Example:
        >>> from attn_tools.extract import iter_extract
        >>> for rec in iter_extract(bundle, iter_sentences("corpus.txt")):
        ...     ...
    """
    name = str(name_or_path)
    if limit is not None and (isinstance(limit, bool) or int(limit) < 0):
        raise ValueError(f"limit={limit!r} must be a non-negative integer or None.")
    kind, where = _source(name)
    if kind == "builtin":
        items: Iterable[tuple[int | str, str]] = ((name, s) for s in where)
    elif kind == "file":
        items = _stream_file(where, column, paragraphs, _text_codec(where, encoding), encoding)
    else:
        items = _stream_hf(where, column=column, split=split)
    return _clean(name, items, limit)


def _clean(name: str, items: Iterable[tuple[int | str, str]], limit: int | None) -> Iterator[str]:
    """Strip, drop empty ones, check Unicode, stop at ``limit``.

    Each item comes with where it was read: a line number of the file ``name`` (an int, so no
    string is built per line) or a description.
    """
    count = 0
    if limit is not None and int(limit) == 0:
        return
    for where, text in items:
        text = text.strip()
        if not text:
            continue
        try:
            check_unicode(count, text)
        except ValueError as exc:
            place = f"{name}:{where}" if isinstance(where, int) else where
            raise ValueError(f"{place}: {exc}") from None
        count += 1
        yield text
        if limit is not None and count >= int(limit):
            return  # nothing past the last sentence taken is read
    if count == 0:
        raise ValueError(f"{name!r} holds no non-empty sentences")


def _text_codec(path: Path, encoding: str) -> str:
    codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        codecs.lookup(codec)
    except LookupError:
        raise ValueError(
            f"unknown encoding {encoding!r} for {path}. Fix: pass a Python codec name, e.g. "
            "encoding='latin-1'."
        ) from None
    suffix = path.suffix.lower()
    if suffix not in (".txt", ".text", "", ".jsonl", ".csv", ".tsv"):
        raise ValueError(
            f"unsupported file type {suffix!r} for {path}. Fix: use .txt, .jsonl or .csv."
        )
    return codec


_READ_BLOCK = 1 << 16


def _ends_line(part: str) -> bool:
    return len(part.splitlines()[0]) != len(part) if part else False


def _numbered_lines(path: Path, codec: str, encoding: str) -> Iterator[tuple[int, str]]:
    """``(line number, line with its end)``, read and decoded a 64 KiB block at a time.

    Lines end where ``str.splitlines`` ends them, as in `load_sentences`. Bytes that do not
    decode are reported with their line number, after every complete line before them was
    yielded; NUL characters (UTF-16 read as UTF-8) likewise.
    """
    decoder = codecs.getincrementaldecoder(codec)()
    pending = ""
    lineno = 0
    with open(path, "rb") as fh:
        while True:
            block = fh.read(_READ_BLOCK)
            bad = None
            try:
                text = decoder.decode(block, final=not block)
            except UnicodeDecodeError as exc:
                # the lines before the bad bytes are good: hand them out first
                text = codecs.decode(exc.object[: exc.start], codec)
                bad = exc.object[exc.start : exc.start + 4]
            parts = (pending + text).splitlines(keepends=True)
            # a last line without its end may continue in the next block ("\r" may be "\r\n")
            pending = parts.pop() if parts and block and not bad and (
                not _ends_line(parts[-1]) or parts[-1].endswith("\r")
            ) else ""  # fmt: skip
            if bad is not None and parts and not _ends_line(parts[-1]):
                parts.pop()  # the start of the bad line
            for line in parts:
                lineno += 1
                if "\x00" in line:
                    guess = _guess_encoding(_head(path))
                    raise ValueError(
                        f"{path}:{lineno} decoded as {encoding} holds NUL characters; it looks "
                        f"like {guess}. Fix: iter_sentences({str(path)!r}, encoding={guess!r})."
                    )
                yield lineno, line
            if bad is not None:
                guess = _guess_encoding(_head(path))
                raise ValueError(
                    f"{path} is not valid {encoding} at line {lineno + 1} (bytes {bad!r}); it "
                    f"looks like {guess}. Fix: iter_sentences({str(path)!r}, encoding={guess!r})."
                )
            if not block:
                return


def _head(path: Path, size: int = 1 << 16) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(size)


def _stream_file(
    path: Path, column: str | None, paragraphs: bool | None, codec: str, encoding: str
) -> Iterator[tuple[int | str, str]]:
    suffix = path.suffix.lower()
    lines = _numbered_lines(path, codec, encoding)
    if suffix == ".jsonl":
        yield from _stream_jsonl(path, lines, column)
        return
    if suffix in (".csv", ".tsv"):
        text = (line for _, line in lines)
        reader = csv.DictReader(text, delimiter="\t" if suffix == ".tsv" else ",")
        col = _pick_column(list(reader.fieldnames or []), column, str(path))
        for row in reader:
            yield reader.line_num, row[col] or ""
        return
    if paragraphs is None:
        paragraphs = _looks_like_paragraphs(path, codec)
    if not paragraphs:
        for lineno, line in lines:
            for piece in line.splitlines():  # as load_sentences: \u2028, \x0c... end lines too
                yield lineno, piece
        return
    yield from _stream_paragraphs(path, lines)


def _looks_like_paragraphs(path: Path, codec: str) -> bool:
    """`load_sentences`' rule (blank lines between blocks of text) on the file's first chars."""
    try:
        with open(path, encoding=codec, newline="") as fh:
            head = fh.read(PARAGRAPH_PEEK_CHARS)
    except UnicodeDecodeError:
        return False  # the stream itself reports the bad bytes, naming their line
    return sum(1 for b in re.split(r"\n\s*\n", head) if b.strip()) > 1


def _iter_blocks(lines: Iterator[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    """Blank-line separated blocks as ``(first line number, text joined on single spaces)``."""
    block: list[str] = []
    first = 0
    for lineno, line in lines:
        if line.strip():
            if not block:
                first = lineno
            block.append(line)
        elif block:
            yield first, " ".join("".join(block).split())
            block = []
    if block:
        yield first, " ".join("".join(block).split())


def _stream_paragraphs(
    path: Path, lines: Iterator[tuple[int, str]]
) -> Iterator[tuple[int | str, str]]:
    from attn_tools.text import DEFAULT_PIPELINE

    nlp = _splitter(DEFAULT_PIPELINE)
    starts: list[int] = []

    def texts() -> Iterator[str]:
        for first, block in _iter_blocks(lines):
            nlp.max_length = max(nlp.max_length, len(block) + 1)
            starts.append(first)
            yield block

    # nlp.pipe reads blocks a batch at a time, so memory is one batch of paragraphs
    for number, doc in enumerate(nlp.pipe(texts(), batch_size=64)):
        for sent in doc.sents:
            yield f"{path}: paragraph at line {starts[number]}", sent.text


def _stream_jsonl(
    path: Path, lines: Iterator[tuple[int, str]], column: str | None
) -> Iterator[tuple[int | str, str]]:
    col = None
    for lineno, line in lines:
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{lineno} is not valid JSON: {exc.msg}") from exc
        if not isinstance(row, dict):
            raise ValueError(
                f"{path}:{lineno} is a JSON {type(row).__name__}, not an object. Fix: write one "
                'object per line, e.g. {"text": "A sentence."}.'
            )
        if col is None:
            col = _pick_column(list(row), column, str(path))
        if col not in row:
            raise ValueError(f"{path}:{lineno} has no {col!r} field")
        value = row[col]
        if not isinstance(value, str):
            raise ValueError(
                f"{path}:{lineno}: {col!r} is {type(value).__name__} ({value!r:.40}), not a "
                "string. Fix: store the sentence as a JSON string, or pick another column=."
            )
        yield lineno, value


def _stream_hf(name: str, *, column: str | None, split: str) -> Iterator[tuple[int | str, str]]:
    try:
        import datasets
    except ImportError as exc:
        raise ValueError(
            f"streaming the Hugging Face dataset {name!r} needs the `datasets` package. "
            "Fix: pip install datasets (and network access to the hub)."
        ) from exc
    config = None
    if ":" in name:
        name, config = name.split(":", 1)
    try:
        ds = datasets.load_dataset(name, config, split=split, streaming=True)
    except Exception as exc:
        raise ValueError(
            f"could not open Hugging Face dataset {name!r} for streaming ({exc}); there is no "
            "local file of that name either. Fix: check the name, or pass a local file."
        ) from exc
    return _hf_rows(ds, name, column)


def _hf_rows(ds: Any, name: str, column: str | None) -> Iterator[tuple[int | str, str]]:
    col = None
    for number, row in enumerate(ds):
        if col is None:
            col = _pick_column(list(row), column, f"dataset {name!r}")
        value = row[col]
        if not isinstance(value, str):
            raise ValueError(
                f"dataset {name!r} row {number}: {col!r} is {type(value).__name__} "
                f"({value!r:.40}), not a string. Fix: pick a text column with column=."
            )
        yield f"dataset {name!r} row {number}", value
