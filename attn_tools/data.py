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
import json
import re
from importlib import resources
from pathlib import Path

__all__ = [
    "SENTENCE_SETS",
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


def split_sentences(text: str, *, pipeline: str | None = None) -> list[str]:
    """Split running text into sentences with spaCy's parser-based sentence boundaries."""
    from attn_tools.text import DEFAULT_PIPELINE, _nlp

    nlp = _nlp(pipeline or DEFAULT_PIPELINE)
    return [s.text.strip() for s in nlp(text).sents if s.text.strip()]


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


def load_sentences(
    name_or_path: str | Path,
    *,
    column: str | None = None,
    paragraphs: bool | None = None,
    split: str = "train",
    limit: int | None = None,
) -> list[str]:
    """Load sentences from a built-in set, a file or a Hugging Face dataset.

    Args:
        name_or_path: a built-in set (see `list_sentence_sets`), a ``.txt`` file, a
            ``.jsonl``/``.csv`` file, or a Hugging Face dataset name (``"hf:NAME"`` or a name with
            no such file; needs the ``datasets`` package and the hub).
        column: the field holding the text in ``.jsonl``/``.csv``/datasets (default: ``text``
            or ``sentence`` when present).
        paragraphs: for ``.txt``: True splits blank-line separated paragraphs into sentences with
            spaCy; False reads one sentence per line; None (default) decides by whether the file
            has blank lines between blocks of text.
        split: dataset split for Hugging Face datasets.
        limit: keep at most this many sentences.

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
            out = _load_file(path, column=column, paragraphs=paragraphs)
        elif name.startswith("hf:") or ("/" in name and not path.suffix and not path.exists()):
            out = _load_hf(name.removeprefix("hf:"), column=column, split=split, limit=limit)
        else:
            sets = ", ".join([*SENTENCE_SETS, "all"])
            raise ValueError(
                f"no sentence set or file named {name!r}. Fix: use a built-in set ({sets}), a "
                "path to a .txt/.jsonl/.csv file, or 'hf:<dataset>' for a Hugging Face dataset."
            )
    out = [s.strip() for s in out if isinstance(s, str) and s.strip()]
    if limit is not None:
        out = out[: int(limit)]
    if not out:
        raise ValueError(f"{name!r} holds no non-empty sentences")
    return out


def _load_file(path: Path, *, column: str | None, paragraphs: bool | None) -> list[str]:
    suffix = path.suffix.lower()
    if suffix in (".txt", ".text", ""):
        raw = path.read_text(encoding="utf-8")
        blocks = [b for b in re.split(r"\n\s*\n", raw) if b.strip()]
        if paragraphs is None:
            paragraphs = len(blocks) > 1
        if paragraphs:
            return [s for b in blocks for s in split_sentences(" ".join(b.split()))]
        return raw.splitlines()
    if suffix == ".jsonl":
        rows = []
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{lineno} is not valid JSON: {exc.msg}") from exc
        if not rows:
            return []
        col = _pick_column(list(rows[0]), column, str(path))
        missing = [i + 1 for i, r in enumerate(rows) if col not in r]
        if missing:
            raise ValueError(f"{path}: rows {missing[:5]} have no {col!r} field")
        return [str(r[col]) for r in rows]
    if suffix in (".csv", ".tsv"):
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ",")
            col = _pick_column(list(reader.fieldnames or []), column, str(path))
            return [row[col] or "" for row in reader]
    raise ValueError(f"unsupported file type {suffix!r} for {path}. Fix: use .txt, .jsonl or .csv.")


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
        raise ValueError(f"could not load Hugging Face dataset {name!r} ({exc})") from exc
    col = _pick_column(list(ds.column_names), column, f"dataset {name!r}")
    if limit is not None:
        ds = ds.select(range(min(int(limit), len(ds))))
    return [str(x) for x in ds[col]]
