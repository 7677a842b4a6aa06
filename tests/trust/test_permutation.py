"""Search-aware p-values: calibration on noise units, power on planted units, ties."""

import numpy as np
import pytest
from scipy.stats import kstest

import invert
from invert.engine.synthetic import make_layer
from invert.trust import explain_top, permutation_test, significant_units
from invert.trust.permutation import _tie_keys

KW = {"length": 2, "beam_size": 3}


@pytest.fixture(scope="module")
def layer():
    # N = 600, C = 85; 8 planted units then 300 pure-noise units
    return make_layer(n_leaves=60, samples_per_leaf=10, n_hypernyms=25, n_units=308,
                      n_planted=8, signal=2.5, seed=3)


@pytest.fixture(scope="module")
def tested(layer):
    res = invert.explain(layer.activations, layer.concepts, **KW)
    # empirical p-values only (tail=None): the assertions below are about their floor
    p = permutation_test(layer.activations, layer.concepts, res, n_permutations=999,
                         random_state=0, tail=None)
    return res, p


def test_corrected_pvalues_uniform_on_noise_uncorrected_not(tested):
    res, p = tested
    noise = p[8:]
    assert kstest(noise, "uniform").pvalue > 0.01
    raw = np.array([u[0].p_value for u in res.units[8:]])
    assert kstest(raw, "uniform").pvalue < 1e-10
    assert np.median(raw) < 0.05 < np.median(noise)  # best-of-search p-values look tiny


def test_planted_units_stay_significant(tested):
    res, p = tested
    assert np.all(p[:8] <= 0.01)
    sig = significant_units(res, alpha=0.05, method="bh")
    assert sig[:8].all()
    assert sig[8:].mean() <= 0.05
    # Holm needs p <= alpha / m: with 999 permutations (p >= 0.001) and m = 308 units it
    # cannot reject at 0.05; at 0.5 it keeps the planted units
    assert not significant_units(res, alpha=0.05, method="holm").any()
    holm = significant_units(res, alpha=0.5, method="holm")
    assert holm[:8].all() and np.all(sig[holm])
    e = res[0][0]
    assert e.extras["search_p_value"] == p[0] and e.extras["significant"] is True
    assert e.extras["q_value"] <= e.extras["holm_p_value"]
    assert "search_p_value" not in res[0][1].extras  # unit-level figures on the best only


def test_pvalue_is_rank_of_observed_in_null(layer):
    # a unit whose best AUROC is below every null value gets p = 1
    a = layer.activations[:, 8:10]
    res = invert.explain(a, layer.concepts, **KW)
    res.units[0][0] = res.units[0][0].__class__(**{**res.units[0][0].__dict__, "auroc": 0.5})
    p = permutation_test(a, layer.concepts, res, n_permutations=49, random_state=1,
                         annotate=False)
    assert p[0] == 1.0
    again = permutation_test(a, layer.concepts, res, n_permutations=49, random_state=1,
                             annotate=False)
    np.testing.assert_array_equal(again, p)  # the same random_state gives the same p-values
    assert "search_p_value" not in res[1][0].extras


def test_tie_structure_grouping():
    a = np.array([[0, 5, 0], [0, 5, 1], [1, 7, 1], [2, 9, 2]], dtype=float)
    keys = _tie_keys(a)
    assert keys[0] == keys[1] != keys[2]  # same sizes in value order -> same null
    assert _tie_keys(np.arange(6.0).reshape(-1, 1)) == [b""]


def test_tied_units_calibrated(layer):
    rng = np.random.default_rng(5)
    n = layer.activations.shape[0]
    z = rng.standard_normal((n, 120))
    z = np.maximum(z, np.quantile(z, 0.4, axis=0))  # ReLU-like: 40% tied at the bottom
    assert len(set(_tie_keys(z))) == 1
    res = invert.explain(z, layer.concepts, **KW)
    p = permutation_test(z, layer.concepts, res, n_permutations=499, random_state=2)
    assert kstest(p, "uniform").pvalue > 0.01


def test_validation(layer):
    res = invert.explain(layer.activations[:, :2], layer.concepts, **KW)
    with pytest.raises(ValueError, match="^n_permutations: expected an integer >= 1, got 0"):
        permutation_test(layer.activations[:, :2], layer.concepts, res, n_permutations=0)
    with pytest.raises(ValueError, match="^activations: expected 2 units"):
        permutation_test(layer.activations[:, :3], layer.concepts, res, n_permutations=5)
    with pytest.raises(ValueError, match="^result: expected a result annotated"):
        significant_units(res)


def test_explain_top_finds_the_driver_of_the_highest_activations(rng):
    n = 3000
    y = rng.random((n, 6)) < 0.1
    y[:, 0] = rng.random(n) < 0.3
    # concept 0 raises the unit overall; concept 5 sends a fifth of its samples very high
    a = 1.2 * y[:, 0] + 6.0 * (y[:, 5] & (rng.random(n) < 0.2)) + rng.standard_normal(n)
    assert str(invert.explain(a, y, length=1)[0][0].formula) == "0"
    top = explain_top(a, y, top_q=0.02, length=1)
    e = top[0][0]
    assert str(e.formula) == "5"
    assert e.extras["top_q"] == 0.02 and e.extras["top_size"] == 60
    ind = (a >= np.sort(a)[-60]).astype(float)
    ref = invert.explain(ind, y, length=1)
    assert e.auroc == pytest.approx(ref[0][0].auroc)
    inside = e.formula.evaluate(y)
    assert e.auroc == pytest.approx(0.5 * (1 + ind[inside].mean() - ind[~inside].mean()))
