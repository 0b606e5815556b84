"""Sentiment heads: does a head's attention to sentiment words follow the text's label?

Feature (per text, per head): the mean over query rows of the attention mass on **keyword
tokens**, minus what uniform attention would put there (``feature="surplus"``, the default;
``"mass"`` keeps the raw mass) — the word pieces of every word in ``keywords`` (case-insensitive; positive and negative
words together), as defined in `attn_tools.probes.features`. Effect: Pearson r between that
feature and the numeric label over texts (point-biserial r for 0 = negative / 1 = positive), so
r > 0 means the head attends more to sentiment words in positive texts. Texts that hold no
keyword are left out (the ``n`` column counts the texts used).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from attn_tools.probes.features import Feature, marked_mass, records_for, token_mask, word_spans
from attn_tools.probes.stats import heads_table

__all__ = ["NEGATIVE_WORDS", "POSITIVE_WORDS", "SENTIMENT_KEYWORDS", "sentiment_heads"]

# Written for this project: common evaluative English words, inflections listed explicitly.
_POSITIVE = """
    adorable admire amazing bright good
    attentive beautiful beautifully best better brilliant calm caring
    charming cheerful clean clever comfortable comforting confident convenient cosy delicious
    delight delighted delightful easier efficient enjoy enjoyed entertaining excellent exciting
    fair fantastic fascinating fast fresh friendly fun generous gentle glad gorgeous grateful
    great happy healthy heavenly helpful honest impressed informative inspiring joy joyful kind
    lively love loved lovely magnificent moving nice overjoyed patient peaceful perfect pleasant
    pleased praised pretty promptly proud quick refreshing relaxing reliable reassuring rewarded
    rewarding rich safe satisfying smooth smoothly soft splendid steady stunning sturdy success
    superb supportive sweet tasty thoughtful thrilled useful vivid warm welcoming wonderful
    """
_NEGATIVE = """
    angry anxious awful late letdown uncomfortable
    bad badly bitter bland blurry boring broken bumpy burnt careless
    carelessly chaotic clumsy cold complained confusing cramped crashes damaged damp dangerous
    depressing destructive dirty disappointing disastrous disgusting dismissive dishonest
    dreadful dreary dull failed failure filthy flat flimsy frightened frightening frowned
    frustrated furious gloomy grimy grudging grumpy harsh hate hated hopeless horrible hostile
    hurt ignored ignores ill impatient inconvenient inedible infuriating lonely lukewarm
    miserable misleading nasty nervous noisy obnoxious offensive overpriced painful pointless
    polluted poor poorly pushy regret rough rude sad scratchy shameful shocked sick slow slower
    sorry sour spoiled stale stressful tedious tense terrible tinny tiresome ugly unfair
    unfriendly unhappy unhelpful unpleasant unreliable unwelcoming upset useless waste wastes
    watery worse worst
    """
POSITIVE_WORDS = frozenset(_POSITIVE.split())
NEGATIVE_WORDS = frozenset(_NEGATIVE.split())
#: the default keywords: positive and negative words together
SENTIMENT_KEYWORDS = POSITIVE_WORDS | NEGATIVE_WORDS


def sentiment_features(
    records: Sequence, keywords: Iterable[str], *, feature: Feature = "surplus"
) -> tuple[np.ndarray, np.ndarray]:
    """``([n_used, L, H] features, [n_used] indices of the texts used)``."""
    words = frozenset(keywords)
    feats, used = [], []
    for i, rec in enumerate(records):
        mask = token_mask(rec, word_spans(rec.text, words))
        if mask.any():
            feats.append(marked_mass(rec, mask, feature=feature))
            used.append(i)
    if not feats:
        raise ValueError(
            "no text holds a keyword. Fix: pass keywords= that occur in the texts, or use the "
            "default SENTIMENT_KEYWORDS on English text."
        )
    return np.stack(feats), np.asarray(used)


def sentiment_heads(
    bundle_or_records: object,
    texts: Sequence[str],
    labels: Sequence[float],
    *,
    keywords: Iterable[str] | None = None,
    feature: Feature = "surplus",
    n_permutations: int = 1000,
    n_bootstrap: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    cache: bool | str = True,
) -> pd.DataFrame:
    """Heads whose attention to sentiment words correlates with the sentiment label.

    Args:
        bundle_or_records: a `ModelBundle` (attention is extracted once, cached) or the
            `SentenceAttention` records of ``texts``.
        texts: the texts; ``labels``: one number per text (1 positive, 0 negative).
        keywords: sentiment words; default `SENTIMENT_KEYWORDS`.
        feature: ``"surplus"`` (default): keyword mass above uniform attention, so a class
            whose keywords are more or longer tokens does not win by token count alone;
            ``"mass"``: the raw mass (see `attn_tools.probes.features.marked_mass`).
        n_permutations, n_bootstrap, seed, alpha: see `attn_tools.probes.stats.heads_table`.
        cache: passed to `extract`.

    Returns:
        The probe table (`attn_tools.probes.stats.PROBE_COLUMNS`), effect = Pearson r.

    Example:
        >>> texts, labels = load_sentiment()
        >>> sentiment_heads(load_model("minilm"), texts, labels, n_permutations=200).head()
    """
    texts = list(texts)
    y = np.asarray(labels, dtype=np.float64).ravel()
    if len(texts) != len(y):
        raise ValueError(f"{len(texts)} texts but {len(y)} labels. Fix: give one label per text.")
    records = records_for(bundle_or_records, texts, cache=cache)
    feats, used = sentiment_features(
        records, SENTIMENT_KEYWORDS if keywords is None else keywords, feature=feature
    )
    if len(used) < len(texts):
        warnings.warn(
            f"{len(texts) - len(used)} of {len(texts)} texts hold no keyword and were left out "
            f"(first: {texts[int(np.setdiff1d(np.arange(len(texts)), used)[0])][:60]!r}).",
            stacklevel=2,
        )
    rec = records[0]
    return heads_table(
        feats.reshape(len(used), -1),
        labels=y[used],
        model=rec.model,
        n_layers=rec.n_layers,
        n_heads=rec.n_heads,
        probe="sentiment",
        statistic=f"pearson_r_keyword_{feature}_vs_label",
        n_permutations=n_permutations,
        n_bootstrap=n_bootstrap,
        seed=seed,
        alpha=alpha,
    )
