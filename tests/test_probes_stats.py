"""The probe statistics against scipy, planted effects and their error messages (no model)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from attn_tools.probes.stats import (
    PROBE_COLUMNS,
    bh_qvalues,
    correlation_test,
    heads_table,
    paired_test,
    split_halves,
)


def test_bh_matches_scipy_with_ties_and_extremes():
    rng = np.random.default_rng(4)
    p = np.concatenate([rng.uniform(size=60), rng.uniform(0, 0.01, 20), [0.0, 1.0, 0.03, 0.03]])
    rng.shuffle(p)
    np.testing.assert_allclose(bh_qvalues(p), stats.false_discovery_control(p, method="bh"))
    # q is monotone in p and never below p
    order = np.argsort(p)
    assert np.all(np.diff(bh_qvalues(p)[order]) >= -1e-15)
    assert np.all(bh_qvalues(p) >= p)


def test_bh_rejects_values_outside_unit_interval():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        bh_qvalues([0.2, 1.5])


def test_correlation_p_value_agrees_with_scipy_permutation_test():
    rng = np.random.default_rng(0)
    y = np.repeat([0.0, 1.0], 15)
    x = 0.45 * y + rng.normal(size=30)  # a moderate effect: p around 0.05
    ours = correlation_test(x, y, n_permutations=19999, n_bootstrap=0, seed=1)

    def abs_r(a, b, axis):
        ac = a - a.mean(axis, keepdims=True)
        bc = b - b.mean(axis, keepdims=True)
        num = (ac * bc).sum(axis)
        return np.abs(num / np.sqrt((ac**2).sum(axis) * (bc**2).sum(axis)))

    # |r| with alternative="greater" is the same two-sided test; scipy adds the same +1
    ref = stats.permutation_test(
        (x, y), abs_r, permutation_type="pairings", n_resamples=19999, alternative="greater",
        random_state=2, vectorized=True,
    )  # fmt: skip
    assert ours.effect[0] == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert 0.005 < ref.pvalue < 0.3  # the case is informative (not 0, not 1)
    assert ours.p_value[0] == pytest.approx(ref.pvalue, abs=0.01)


def test_paired_p_value_agrees_with_scipy_sign_flip_test():
    rng = np.random.default_rng(3)
    a = rng.normal(size=25)
    b = a - 0.3 + 0.8 * rng.normal(size=25)
    ours = paired_test(a - b, n_permutations=19999, n_bootstrap=0, seed=5)
    ref = stats.permutation_test(
        (a, b), lambda u, v, axis: np.abs(np.mean(u - v, axis=axis)), permutation_type="samples",
        n_resamples=19999, alternative="greater", random_state=6, vectorized=True,
    )  # fmt: skip
    assert ours.effect[0] == pytest.approx(np.mean(a - b))
    assert 0.005 < ref.pvalue < 0.3
    assert ours.p_value[0] == pytest.approx(ref.pvalue, abs=0.01)


def test_p_values_have_the_plus_one_floor_and_constant_columns_get_one():
    y = np.repeat([0.0, 1.0], 20)
    x = np.column_stack([y * 5.0, np.ones(40)])  # perfect correlation, constant column
    res = correlation_test(x, y, n_permutations=99, n_bootstrap=0)
    assert res.p_value[0] == pytest.approx(1 / 100)
    assert res.effect[1] == 0.0 and res.p_value[1] == 1.0
    d = np.column_stack([np.full(10, 2.0), np.zeros(10)])
    res = paired_test(d, n_permutations=99, n_bootstrap=0)
    # 10 pairs all +2: only the all-plus flip reaches |mean| = 2, so p ≈ (1 + 99/1024) / 100
    assert res.p_value[0] <= 3 / 100
    assert res.p_value[1] == 1.0


@pytest.mark.parametrize("rho", [0.35, -0.5])
def test_planted_correlation_found_with_sign_and_size(rho):
    rng = np.random.default_rng(11)
    n, f = 300, 24
    y = np.repeat([0.0, 1.0], n // 2)
    z = (y - y.mean()) / y.std()
    x = rng.normal(size=(n, f))
    x[:, 7] = rho * z + np.sqrt(1 - rho**2) * rng.normal(size=n)
    table = heads_table(
        x, labels=y, model="toy", n_layers=4, n_heads=6, probe="sentiment", statistic="r",
        n_permutations=999, n_bootstrap=500, seed=0,
    )  # fmt: skip
    assert tuple(table.columns) == PROBE_COLUMNS
    hit = table.iloc[7]
    assert (hit["layer"], hit["head"]) == (1, 1)
    assert np.sign(hit.effect) == np.sign(rho)
    assert hit.effect == pytest.approx(rho, abs=0.1)
    assert hit.ci_low < rho < hit.ci_high
    assert hit.q_value < 0.05 and hit.replicated
    others = table.drop(index=7)
    assert (others.q_value < 0.05).sum() <= 1
    assert not others.replicated.any()


def test_planted_paired_shift_found_and_interval_covers_it():
    rng = np.random.default_rng(2)
    d = rng.normal(size=(80, 12))
    d[:, 3] += 0.5
    table = heads_table(
        d, model="toy", n_layers=2, n_heads=6, probe="bias", statistic="mean_diff",
        n_permutations=999, n_bootstrap=800, seed=3,
    )  # fmt: skip
    hit = table.iloc[3]
    assert hit.effect == pytest.approx(0.5, abs=0.25)
    assert hit.ci_low < 0.5 < hit.ci_high and hit.ci_low > 0
    assert hit.q_value < 0.05 and hit.replicated
    assert (table.drop(index=3).q_value < 0.05).sum() <= 1


def test_split_halves_is_a_stratified_partition():
    labels = np.array([0] * 31 + [1] * 20)
    a, b = split_halves(51, seed=4, strata=labels)
    assert sorted(np.concatenate([a, b])) == list(range(51))
    assert abs(labels[a].sum() - labels[b].sum()) <= 1
    assert abs((labels[a] == 0).sum() - (labels[b] == 0).sum()) <= 1
    a2, _ = split_halves(51, seed=5, strata=labels)
    assert not np.array_equal(a, a2)


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="labels has 3 entries"):
        correlation_test(np.zeros((4, 2)), [0, 1, 0])
    with pytest.raises(ValueError, match="at least two label values"):
        correlation_test(np.random.rand(5, 2), [1, 1, 1, 1, 1])
    with pytest.raises(ValueError, match="non-finite value at row 1"):
        paired_test([[0.0], [np.nan], [1.0]])
    with pytest.raises(ValueError, match="n_permutations"):
        paired_test(np.ones((5, 1)), n_permutations=0)
    with pytest.raises(ValueError, match="layers × heads"):
        heads_table(np.ones((5, 7)), model="m", n_layers=2, n_heads=3, probe="p", statistic="s")
