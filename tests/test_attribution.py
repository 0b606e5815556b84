"""Attribution patching: the estimate is the first-order term of the exact ablation effect."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from test_adapters import save_tiny

from attn_tools import extract, load_model
from attn_tools.interventions import (
    ATTRIBUTION_COLUMNS,
    COMPARE_COLUMNS,
    ablate_heads,
    attribution_patching,
    compare_attribution,
)
from attn_tools.interventions.attribution import spearman
from attn_tools.models.adapters import get_adapter

SENTENCES = [
    "A violinist tuned her strings while the audience whispered.",
    "Nobody expected the ferry to leave forty minutes early.",
]


@pytest.fixture(scope="module")
def tiny64(tmp_path_factory, smollm2):
    """A random GPT-2 in float64, so a finite difference is not rounding noise.

    Not Llama: its RMSNorm computes in float32 whatever the model's dtype, which puts float32
    noise into a float64 model's loss, larger than a finite difference at small ε.
    """
    folder = save_tiny("gpt2", tmp_path_factory.mktemp("g"), smollm2.tokenizer, seed=5)
    bundle = load_model(folder, device="cpu")
    return dataclasses.replace(bundle, model=bundle.model.double())


@torch.no_grad()
def _mean_ce(model, bundle, texts) -> float:
    total, count = 0.0, 0
    for text in texts:
        ids = torch.tensor([list(extract(bundle, text, cache=False, progress=False)[0].token_ids)])
        logits = model(input_ids=ids).logits[0, :-1].double()
        total += F.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
        count += ids.shape[1] - 1
    return total / count


def _scaled_head(model, layer: int, head: int, eps: float, mean: torch.Tensor | None):
    """A copy whose head output is moved ε of the way to its ablation, by editing weights.

    Output projection y = W z + b; z → (1−ε) z + ε m is W[:, slice] scaled by (1−ε) and
    ε · W[:, slice] m added to the bias (m = 0 for zero ablation).
    """
    clone = copy.deepcopy(model)
    adapter = get_adapter(clone)
    proj, cols = adapter.out_proj(layer), adapter.head_slice(head)
    with torch.no_grad():  # GPT-2's Conv1D stores its weight as [in, out]: y = z W + b
        if mean is not None:
            proj.bias += eps * (mean.to(proj.weight.dtype) @ proj.weight[cols, :])
        proj.weight[cols, :] *= 1 - eps
    return clone


@pytest.mark.parametrize("method", ["zero", "mean"])
def test_estimate_is_the_first_order_term(tiny64, method):
    table = attribution_patching(tiny64, SENTENCES, method=method)
    assert tuple(table.columns) == ATTRIBUTION_COLUMNS
    assert len(table) == tiny64.n_layers * tiny64.n_heads
    means = None
    if method == "mean":
        from attn_tools.interventions import mean_head_outputs

        means = mean_head_outputs(tiny64, SENTENCES)
    eps = 1e-3
    for layer, head in [(0, 0), (0, 3), (1, 2)]:
        m = None if means is None else means[layer, head]
        up = _mean_ce(_scaled_head(tiny64.model, layer, head, eps, m), tiny64, SENTENCES)
        down = _mean_ce(_scaled_head(tiny64.model, layer, head, -eps, m), tiny64, SENTENCES)
        slope = (up - down) / (2 * eps)  # central difference of an independent weight edit
        got = table[(table.layer == layer) & (table["head"] == head)].estimate.iloc[0]
        assert abs(slope) > 1e-6
        assert got == pytest.approx(slope, rel=1e-4, abs=1e-9)


def test_compare_joins_exact_and_reports_spearman(tiny64):
    exact = ablate_heads(tiny64, SENTENCES, "all")
    table = compare_attribution(tiny64, SENTENCES, exact=exact)
    assert tuple(table.columns) == COMPARE_COLUMNS
    np.testing.assert_allclose(table.exact, exact.delta_loss)
    want = spearmanr(table.exact, table.estimate).statistic
    assert table.spearman_rho.iloc[0] == pytest.approx(want, abs=1e-12)
    # on a random model full ablation is still close to linear: the ranks agree
    assert table.spearman_rho.iloc[0] > 0.5


def test_spearman_handles_ties_and_constants():
    a, b = np.array([1.0, 2.0, 2.0, 5.0]), np.array([0.3, 0.1, 0.2, 0.9])
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic)
    assert np.isnan(spearman(np.ones(4), b))


def test_encoders_and_bad_input_are_refused(minilm, tiny64):
    with pytest.raises(ValueError, match="encoder.*zero gradient.*Fix"):
        attribution_patching(minilm, SENTENCES)
    with pytest.raises(ValueError, match="method='erase'.*Fix"):
        attribution_patching(tiny64, SENTENCES, method="erase")
    with pytest.raises(ValueError, match="exact lacks columns"):
        compare_attribution(
            tiny64, SENTENCES[:1], exact=ablate_heads(tiny64, SENTENCES[:1])[["layer"]]
        )
