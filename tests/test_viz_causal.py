"""The causal figures draw what their tables hold and name a wrong table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from attn_tools import viz


def _grid(values: np.ndarray, **extra) -> pd.DataFrame:
    layers, heads = values.shape
    return pd.DataFrame(
        {
            "layer": np.repeat(np.arange(layers), heads),
            "head": np.tile(np.arange(heads), layers),
            **{k: np.asarray(v).ravel() for k, v in extra.items()},
        }
    )


def test_ablation_and_attribution_maps_hold_the_table(tmp_path):
    exact = np.arange(12.0).reshape(3, 4) / 10 - 0.3
    table = _grid(exact, delta_loss=exact)
    table["measure"], table["method"] = "delta_next_token_ce_nats", "zero"
    fig = viz.plot_ablation_matrix(table, save=tmp_path / "a.png")
    image = fig.axes[0].images[0].get_array()
    np.testing.assert_allclose(np.asarray(image), exact)  # layer 0 is the first row (bottom)
    assert (tmp_path / "a.png").stat().st_size > 1000
    both = _grid(exact, exact=exact, estimate=exact * 0.9, spearman_rho=np.full(12, 1.0))
    fig = viz.plot_attribution(both)
    assert any("ρ = 1.00" in ax.get_title() for ax in fig.axes)
    np.testing.assert_allclose(np.asarray(fig.axes[1].images[0].get_array()), exact * 0.9)


def test_explains_bars_mark_undefined_heads():
    table = pd.DataFrame(
        {
            "layer": [1, 2],
            "head": [0, 3],
            "pattern": ["previous_token", "self"],
            "explained": [0.8, np.nan],
            "ci_low": [0.6, np.nan],
            "ci_high": [0.9, np.nan],
        }
    )
    fig = viz.plot_explains(table)
    ax = fig.axes[0]
    assert [round(p.get_width(), 6) for p in ax.patches] == [0.8, 0.0]
    assert any("too small" in t.get_text() for t in ax.texts)


def test_lens_grid_and_bad_tables():
    lens = pd.DataFrame(
        {
            "layer": [0, 0, 1, 1],
            "position": [0, 1, 0, 1],
            "token": ["A", "Ġcat", "A", "Ġcat"],
            "top_token": ["x", "y", "Ġdog", "Ġsat"],
            "prob": [0.1, 0.2, 0.7, 0.9],
        }
    )
    fig = viz.plot_logit_lens(lens, layers=1)
    assert np.asarray(fig.axes[0].images[0].get_array()).shape == (1, 2)
    assert [t.get_text() for t in fig.axes[0].texts] == ["·dog", "·sat"]
    with pytest.raises(ValueError, match="lacks columns.*Fix"):
        viz.plot_ablation_matrix(pd.DataFrame({"layer": [0]}))
    with pytest.raises(TypeError, match="DataFrame"):
        viz.plot_explains([1, 2])
