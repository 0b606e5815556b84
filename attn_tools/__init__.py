"""attn_tools — which attention heads of a transformer do what?

Data flow: sentences → `load_model` → `extract` → `SentenceAttention` → patterns → `score_heads`
→ classification → figures, explorer and automation. See README.md for a tour.

``import attn_tools`` is light: the public names below (and the subpackages) are imported on first
use, so torch, transformers and spaCy load only when a model, an extraction or a parse is needed.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name → the module that defines it (imported on first access).
_LAZY = {
    "list_sentence_sets": "attn_tools.data",
    "load_sentences": "attn_tools.data",
    "SentenceAttention": "attn_tools.extract",
    "extract": "attn_tools.extract",
    "iter_extract": "attn_tools.extract",
    "ModelBundle": "attn_tools.models",
    "list_models": "attn_tools.models",
    "load_model": "attn_tools.models",
    "Alignment": "attn_tools.text",
    "Parse": "attn_tools.text",
    "Word": "attn_tools.text",
    "align": "attn_tools.text",
    "parse": "attn_tools.text",
    "to_word_level": "attn_tools.text",
}
_SUBMODULES = frozenset(
    {
        "automate", "bootstrap", "charlm", "classify", "cli", "consistency", "data", "explorer",
        "extract",
        "hints",
        "html_report",
        "interventions",
        "syntax",
        "probes",
        "mixtures", "models", "patterns", "report", "scoring", "text", "viz", "widgets",
        "stats", "compare", "distributed", "runs", "partitioned",
    }
)  # fmt: skip

__all__ = [
    "Alignment",
    "ModelBundle",
    "Parse",
    "SentenceAttention",
    "Word",
    "align",
    "extract",
    "iter_extract",
    "list_models",
    "list_sentence_sets",
    "load_model",
    "load_sentences",
    "parse",
    "to_word_level",
]  # the keys of _LAZY (tests check they agree)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # later lookups skip this function
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"attn_tools.{name}")
    raise AttributeError(f"module 'attn_tools' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | _SUBMODULES)


class _Package(types.ModuleType):
    """The package object: a submodule import never replaces a public function of the same name.

    ``attn_tools.extract`` is both a submodule and its main function. Importing the submodule
    makes Python set the package attribute to the module; the eager package of old then bound the
    function over it. Here the attribute is left unset, so `__getattr__` keeps answering with the
    function (``sys.modules["attn_tools.extract"]`` still holds the module).
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

if TYPE_CHECKING:  # for type checkers and IDEs: the names resolve as if imported eagerly
    from attn_tools.data import list_sentence_sets, load_sentences
    from attn_tools.extract import SentenceAttention, extract, iter_extract
    from attn_tools.models import ModelBundle, list_models, load_model
    from attn_tools.text import Alignment, Parse, Word, align, parse, to_word_level
