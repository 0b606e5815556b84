"""Gender-bias heads: differential attention to "his" vs "her" in otherwise identical sentences.

Design: matched pairs ``(a, b)`` where ``a`` holds ``targets[0]`` ("his") and ``b`` the same
sentence with ``targets[1]`` ("her"). Feature (per sentence, per head): the mean over query rows
of the attention mass on the target pronoun's tokens (`attn_tools.probes.features`). Effect: the
mean over pairs of ``feature(a) − feature(b)``, so effect > 0 means the head attends more to
"his" than to "her" in the same context. The null swaps the two members of each pair at random
(sign-flip permutation test), which is exact for a paired design.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from attn_tools.probes.features import Feature, marked_mass, records_for, token_mask, word_spans
from attn_tools.probes.stats import heads_table

__all__ = ["bias_heads", "check_pairs", "paired_features"]


def check_pairs(pairs: object, name: str = "pairs", minimum: int = 3) -> list[tuple[str, str]]:
    """``pairs`` as a list of 2-tuples of non-empty strings, or a ValueError naming the bad one.

    ``minimum`` pairs are required (3 for a test statistic).
    """
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sequence) or len(pairs) < minimum:
        raise ValueError(
            f"{name} must be a list of at least {minimum} (text_a, text_b) pairs, got "
            f"{pairs!r:.80}. "
            "Fix: pass e.g. load_bias_pairs()."
        )
    out = []
    for i, pair in enumerate(pairs):
        if (
            not isinstance(pair, (tuple, list))
            or len(pair) != 2
            or not all(isinstance(t, str) and t.strip() for t in pair)
        ):
            raise ValueError(
                f"{name}[{i}] is {pair!r:.80}, not a pair of non-empty strings. "
                "Fix: give (text_a, text_b) tuples."
            )
        out.append((pair[0], pair[1]))
    return out


def paired_features(
    bundle_or_records: object,
    texts_a: Sequence[str],
    texts_b: Sequence[str],
    spans_a: Sequence[Sequence[tuple[int, int]]],
    spans_b: Sequence[Sequence[tuple[int, int]]],
    *,
    feature: Feature = "surplus",
    cache: bool | str = True,
) -> tuple[np.ndarray, object]:
    """``[n_pairs, L, H]`` differences of marked-token mass (a − b), and the first record.

    One extraction for all ``2 × n_pairs`` texts (the cache makes a rerun free).
    """
    records = records_for(bundle_or_records, [*texts_a, *texts_b], cache=cache)
    n = len(texts_a)
    diffs = []
    for i in range(n):
        ra, rb = records[i], records[n + i]
        ma, mb = token_mask(ra, spans_a[i]), token_mask(rb, spans_b[i])
        for rec, mask, side in ((ra, ma, "first"), (rb, mb, "second")):
            if not mask.any():
                raise ValueError(
                    f"pair {i}: the {side} text {rec.text!r} has no token for its marked word. "
                    "Fix: check that the target word occurs in it (whole word, any case)."
                )
        diffs.append(marked_mass(ra, ma, feature=feature) - marked_mass(rb, mb, feature=feature))
    return np.stack(diffs), records[0]


def bias_heads(
    bundle_or_records: object,
    pairs: Sequence[tuple[str, str]],
    *,
    targets: tuple[str, str] = ("his", "her"),
    feature: Feature = "surplus",
    n_permutations: int = 1000,
    n_bootstrap: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    cache: bool | str = True,
) -> pd.DataFrame:
    """Heads that attend differently to ``targets[0]`` and ``targets[1]`` in matched pairs.

    Args:
        bundle_or_records: a `ModelBundle`, or the records of ``[a for a, b in pairs] +
            [b for a, b in pairs]`` in that order.
        pairs: ``(sentence with targets[0], same sentence with targets[1])``.
        targets: the two words compared (whole words, case-insensitive).
        feature: ``"surplus"`` (mass above uniform attention, default) or ``"mass"``; they
            differ only where the two targets are different numbers of tokens.
        n_permutations, n_bootstrap, seed, alpha: see `attn_tools.probes.stats.heads_table`.

    Returns:
        The probe table; effect = mean attention-mass difference (targets[0] − targets[1]).

    Example:
        >>> bias_heads(load_model("smollm2"), load_bias_pairs(), n_permutations=500)
    """
    pairs = check_pairs(pairs)
    if len(targets) != 2 or not all(isinstance(t, str) and t.strip() for t in targets):
        raise ValueError(f"targets must be two words, got {targets!r}. Fix: ('his', 'her').")
    texts_a = [a for a, _ in pairs]
    texts_b = [b for _, b in pairs]
    spans_a = [word_spans(t, [targets[0]]) for t in texts_a]
    spans_b = [word_spans(t, [targets[1]]) for t in texts_b]
    diffs, rec = paired_features(bundle_or_records, texts_a, texts_b, spans_a, spans_b, cache=cache)
    return heads_table(
        diffs.reshape(len(pairs), -1),
        model=rec.model,
        n_layers=rec.n_layers,
        n_heads=rec.n_heads,
        probe="bias",
        statistic=f"mean_diff_{feature}_{targets[0]}_minus_{targets[1]}",
        n_permutations=n_permutations,
        n_bootstrap=n_bootstrap,
        seed=seed,
        alpha=alpha,
    )
