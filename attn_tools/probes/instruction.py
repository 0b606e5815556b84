"""Instruction heads: attention surplus on directive words in instructions vs matched prose.

Design: pairs ``(instruction, prose)`` of nearly the same words, where the instruction uses a
verb as a directive ("Please **write** a short summary") and the prose uses the same verb in a
narrative ("She **wrote** a short summary"). Feature (per text, per head): the mean over query
rows of the attention mass on the marked verb's tokens (`attn_tools.probes.features`). Effect:
mean over pairs of ``feature(instruction) − feature(prose)``: > 0 means the head attends more to
the verb when it is an instruction. Sign-flip permutation test as in the bias probe.

Marks: by default the texts carry ``[brackets]`` around the marked word (the built-in pairs do);
the brackets are removed before the model sees the text. With ``markers=`` a word counts when its
lowercase form is in ``markers`` (e.g. ``{"write", "wrote", "list", "listed"}``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pandas as pd

from attn_tools.probes.bias import check_pairs, paired_features
from attn_tools.probes.features import Feature, bracket_spans, word_spans
from attn_tools.probes.stats import heads_table

__all__ = ["instruction_heads"]


def _marks(texts: Sequence[str], markers: Iterable[str] | None, side: str):
    clean, spans = [], []
    for i, text in enumerate(texts):
        if markers is None:
            plain, found = bracket_spans(text)
            if not found:
                raise ValueError(
                    f"{side}[{i}] {text!r:.80} has no [bracketed] word and markers=None. "
                    "Fix: bracket the directive word, e.g. 'Please [write] a note', or pass "
                    "markers={'write', 'wrote', ...}."
                )
        else:
            plain, found = text, word_spans(text, markers)
        clean.append(plain)
        spans.append(found)
    return clean, spans


def instruction_heads(
    bundle_or_records: object,
    instructions: Sequence[str],
    prose: Sequence[str],
    *,
    markers: Iterable[str] | None = None,
    feature: Feature = "surplus",
    n_permutations: int = 1000,
    n_bootstrap: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    cache: bool | str = True,
) -> pd.DataFrame:
    """Heads that attend more (or less) to a verb when it is a directive than in plain prose.

    Args:
        bundle_or_records: a `ModelBundle`, or the records of the (bracket-free) instructions
            followed by the prose texts.
        instructions, prose: matched texts, one prose text per instruction.
        markers: words to measure; None → the ``[bracketed]`` word of each text.
        feature: ``"surplus"`` (mass above uniform attention, default) or ``"mass"``.
        n_permutations, n_bootstrap, seed, alpha: see `attn_tools.probes.stats.heads_table`.

    Returns:
        The probe table; effect = mean mass difference (instruction − prose).
    """
    instructions, prose = list(instructions), list(prose)
    if len(instructions) != len(prose):
        raise ValueError(
            f"{len(instructions)} instructions but {len(prose)} prose texts. "
            "Fix: give one matched prose text per instruction."
        )
    check_pairs(list(zip(instructions, prose)), "instruction/prose pairs")
    markers = None if markers is None else frozenset(m.lower() for m in markers)
    texts_a, spans_a = _marks(instructions, markers, "instructions")
    texts_b, spans_b = _marks(prose, markers, "prose")
    diffs, rec = paired_features(bundle_or_records, texts_a, texts_b, spans_a, spans_b, cache=cache)
    return heads_table(
        diffs.reshape(len(texts_a), -1),
        model=rec.model,
        n_layers=rec.n_layers,
        n_heads=rec.n_heads,
        probe="instruction",
        statistic=f"mean_diff_{feature}_directive_minus_prose",
        n_permutations=n_permutations,
        n_bootstrap=n_bootstrap,
        seed=seed,
        alpha=alpha,
    )
