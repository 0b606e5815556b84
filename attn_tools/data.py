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

import csv
import io
import json
import os
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "SENTENCE_SETS",
    "MissingFileError",
    "check_unicode",
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
    if name in SENTENCE_SETS:
        out = _builtin(name)
    elif name == "all":
        out = [s for n in _ANALYSIS_SETS for s in _builtin(n)]
    else:
        path = Path(name).expanduser()
        if path.is_file():
            out = _load_file(path, column=column, paragraphs=paragraphs, encoding=encoding,
                             progress=progress)  # fmt: skip
        elif path.is_dir():
            raise ValueError(
                f"{name!r} is a folder, not a file. Fix: pass one .txt/.jsonl/.csv file in it."
            )
        elif name.startswith("hf:") or ("/" in name and not _looks_like_path(name)):
            out = _load_hf(name.removeprefix("hf:"), column=column, split=split, limit=limit)
        elif _looks_like_path(name):
            raise MissingFileError(
                f"no file at {name!r} (looked for {path.absolute()}). Fix: check the path; a "
                f"relative path starts from the current folder {Path.cwd()}. For a Hugging Face "
                f"dataset, write 'hf:{name}'."
            )
        else:
            sets = ", ".join([*SENTENCE_SETS, "all"])
            raise ValueError(
                f"no sentence set or file named {name!r}. Fix: use a built-in set ({sets}), a "
                "path to a .txt/.jsonl/.csv file, or 'hf:<dataset>' for a Hugging Face dataset."
            )
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
