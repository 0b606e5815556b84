"""Parity with TransformerLens's head detector on both default models, every head.

TransformerLens builds its detection patterns from token ids and scores one head at a time with
``compute_head_attention_similarity_score``; here the same attention (from our extraction) goes
through both, so any difference is in the patterns or the formulas.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

hd = pytest.importorskip("transformer_lens.head_detector")

from attn_tools import extract, load_sentences  # noqa: E402
from attn_tools.patterns import build_contexts, predict  # noqa: E402
from attn_tools.scoring import score_heads  # noqa: E402

TL_PATTERNS = {
    "previous_token_head": hd.get_previous_token_head_detection_pattern,
    "duplicate_token_head": hd.get_duplicate_token_head_detection_pattern,
    "induction_head": hd.get_induction_head_detection_pattern,
}
FLAGS = list(itertools.product([False, True], [False, True]))


def _case(bundle):
    # repeated words, so duplicate and induction patterns are not empty
    sentences = load_sentences("repetition")[:3] + load_sentences("punctuation")[:1]
    records = extract(bundle, sentences, progress=False)
    return bundle.kind, records, build_contexts(records, with_parse=False)


@pytest.fixture(scope="module")
def tl_encoder(minilm):
    return _case(minilm)


@pytest.fixture(scope="module")
def tl_decoder(smollm2):
    return _case(smollm2)


@pytest.fixture(params=["tl_encoder", "tl_decoder"])
def tl_case(request):
    return request.getfixturevalue(request.param)


def _tl_score(att: np.ndarray, det: torch.Tensor, metric: str, eb: bool, ec: bool) -> float:
    return hd.compute_head_attention_similarity_score(
        torch.from_numpy(att),
        det,
        exclude_bos=eb,
        exclude_current_token=ec,
        error_measure=metric,
    )


def test_detection_patterns_equal_transformer_lens(tl_case):
    _, records, contexts = tl_case
    non_empty = dict.fromkeys(TL_PATTERNS, 0)
    for ctx in contexts:
        ids = torch.tensor([ctx.token_ids])
        for name, make in TL_PATTERNS.items():
            ours, _ = predict(name, ctx, normalize=False)
            theirs = make(ids).numpy()
            np.testing.assert_array_equal(ours, theirs, err_msg=f"{name} on {ctx.text!r}")
            non_empty[name] += int(theirs.sum() > 0)
    assert all(v == len(contexts) for v in non_empty.values()), non_empty


@pytest.mark.parametrize(("exclude_bos", "exclude_current_token"), FLAGS)
def test_mul_equals_transformer_lens_for_every_head(tl_case, exclude_bos, exclude_current_token):
    _, records, contexts = tl_case
    df = score_heads(
        records,
        list(TL_PATTERNS),
        metric="mul",
        contexts=contexts,
        per_sentence=True,
        exclude_bos=exclude_bos,
        exclude_current_token=exclude_current_token,
    )
    L, H = records[0].attention.shape[:2]
    assert len(df) == L * H * 3
    worst = 0.0
    for name, make in TL_PATTERNS.items():
        sub = df[df["pattern"] == name]
        ours = np.stack(sub["per_sentence"].to_numpy())  # [L*H, sentences]
        for s, rec in enumerate(records):
            det = make(torch.tensor([rec.token_ids]))
            theirs = [
                _tl_score(
                    rec.attention[layer, head], det, "mul", exclude_bos, exclude_current_token
                )
                for layer in range(L)
                for head in range(H)
            ]
            worst = max(worst, np.abs(ours[:, s] - theirs).max())
        # detect_head on a list of prompts averages the per-prompt scores: so does `mean`
        np.testing.assert_allclose(sub["mean"], ours.mean(axis=1), atol=1e-12)
    assert worst <= 1e-4


@pytest.mark.parametrize(("exclude_bos", "exclude_current_token"), FLAGS)
def test_abs_equals_transformer_lens_for_every_decoder_head(
    tl_decoder, exclude_bos, exclude_current_token
):
    """TransformerLens rounds ``abs`` to 3 decimals (``decimals=3`` here). It computes in float32,
    so where the unrounded error sits on a rounding midpoint the two may round apart by 0.001:
    those cases are allowed only when our unrounded value is within 1e-6 of the midpoint."""
    _, records, contexts = tl_decoder
    opts = dict(exclude_bos=exclude_bos, exclude_current_token=exclude_current_token)
    names = list(TL_PATTERNS)
    rounded = score_heads(
        records, names, metric="abs", contexts=contexts, per_sentence=True, decimals=3, **opts
    )
    exact = score_heads(records, names, metric="abs", contexts=contexts, per_sentence=True, **opts)
    L, H = records[0].attention.shape[:2]
    midpoints = 0
    for name, make in TL_PATTERNS.items():
        ours_r = np.stack(rounded[rounded["pattern"] == name]["per_sentence"].to_numpy())
        ours_x = np.stack(exact[exact["pattern"] == name]["per_sentence"].to_numpy())
        for s, rec in enumerate(records):
            det = make(torch.tensor([rec.token_ids]))
            theirs = np.array(
                [
                    _tl_score(
                        rec.attention[layer, head], det, "abs", exclude_bos, exclude_current_token
                    )
                    for layer in range(L)
                    for head in range(H)
                ]
            )
            # unrounded: within the rounding step
            assert np.abs(ours_x[:, s] - theirs).max() <= 5e-4 + 1e-6
            off = np.abs(ours_r[:, s] - theirs) > 1e-4
            err = 1.0 - ours_x[off, s]
            assert np.all(np.abs(err * 1000 - np.floor(err * 1000) - 0.5) < 1e-3), err
            midpoints += int(off.sum())
    assert midpoints <= 3


def test_abs_on_an_encoder_follows_the_same_formula(tl_encoder):
    """TransformerLens refuses ``abs`` for bidirectional attention; ours uses its formula."""
    _, records, contexts = tl_encoder
    rec = records[0]
    det = hd.get_previous_token_head_detection_pattern(torch.tensor([rec.token_ids]))
    with pytest.raises(AssertionError):
        _tl_score(rec.attention[0, 0], det, "abs", False, False)
    df = score_heads([rec], ["previous_token_head"], metric="abs", contexts=contexts[:1])
    att = rec.attention.astype(np.float64)
    want = 1 - np.abs(att - det.numpy()).sum(axis=(-2, -1)) / rec.n_tokens
    np.testing.assert_allclose(df["mean"].to_numpy(), want.ravel(), atol=1e-12)
