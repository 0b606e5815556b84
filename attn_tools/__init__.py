"""attn_tools — which attention heads of a transformer do what?

Data flow: sentences → `load_model` → `extract` → `SentenceAttention` → patterns → `score_heads`
→ classification → figures, explorer and automation. See README.md for a tour.
"""

from __future__ import annotations

__version__ = "0.1.0"

from attn_tools.data import list_sentence_sets, load_sentences
from attn_tools.extract import SentenceAttention, extract, iter_extract
from attn_tools.models import ModelBundle, list_models, load_model
from attn_tools.text import Alignment, Parse, Word, align, parse, to_word_level

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
]
