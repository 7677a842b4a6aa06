"""Search-corrected p-values below 1/(P+1), their calibration (with ties), the statistic
tested, progress and the floor (issue 11)."""

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.stats import kstest

import invert
from invert.engine.synthetic import make_layer
from invert.trust import (
    correct_pvalues,
    duplicate_groups,
    fit_tail,
    permutation_floor,
    permutation_null,
    permutation_test,
    significant_units,
)
from invert.trust._ties import pattern_ids as _pattern_ids
from invert.trust.tail import null_pvalues

KW = {"length": 2, "beam_size": 3}
# Calibration: 10 layers (N = 200, C = 28, 10% of the samples copies of others), each with
# its own null of 999 permutations, and 20 planted, 200 noise units (every other one
# ReLU-tied, 30-70% zeros) and a dead unit.
# Noise units of one layer share its null, so their p-values are dependent through it: with
# about 5 times more permutations than noise units per null, that adds under 10% to the
# spread of the pooled p-values, and the Kolmogorov-Smirnov test stays near its level.
N_PLANTED, N_NOISE, N_PERM = 20, 200, 999
N_UNITS = N_PLANTED + N_NOISE + 1
SEEDS = tuple(range(40, 50))


def _relu_noise(a: np.ndarray, cols: np.ndarray, rng) -> None:
    """Turn the columns into ReLU outputs with 30-70% zeros (in place)."""
    for k, f in zip(cols, rng.uniform(0.3, 0.7, cols.size), strict=True):
        a[:, k] = np.maximum(a[:, k] - np.quantile(a[:, k], f), 0.0)


def _calibration_run(seed: int):
    layer = make_layer(n_leaves=20, samples_per_leaf=10, n_hypernyms=8, n_units=N_UNITS,
                       n_planted=N_PLANTED, signal=2.5, seed=seed)
    rng = np.random.default_rng(seed)
    n = layer.activations.shape[0]
    rows = np.arange(n)
    copies = rng.choice(n, n // 10, replace=False)
    rows[copies] = rng.choice(np.setdiff1d(rows, copies), copies.size)  # duplicate samples
    a = layer.activations.astype(np.float64)[rows]
    y = layer.concepts.matrix[rows]
    tied = np.arange(N_PLANTED, N_PLANTED + N_NOISE, 2)
    _relu_noise(a, tied, rng)
    a[:, -1] = 0.0  # a dead unit
    assert duplicate_groups(a).max() + 1 == n - copies.size
    res = invert.explain(a, y, **KW)
    p = permutation_test(a, y, res, n_permutations=N_PERM, random_state=seed)
    return res, p, tied


@pytest.fixture(scope="module")
def runs():
    return [_calibration_run(s) for s in SEEDS]


NOISE = np.arange(N_PLANTED, N_PLANTED + N_NOISE)


@pytest.mark.slow
def test_noise_units_uniform_over_seeds_tied_or_not(runs):
    noise = np.concatenate([p[NOISE] for _, p, _ in runs])
    assert noise.size >= 2000 and not np.isnan(noise).any()
    assert kstest(noise, "uniform").pvalue > 0.01
    tied = np.concatenate([p[t] for _, p, t in runs])
    untied = np.concatenate([p[np.setdiff1d(NOISE, t)] for _, p, t in runs])
    assert tied.size >= 1000
    assert kstest(tied, "uniform").pvalue > 0.01
    assert kstest(untied, "uniform").pvalue > 0.01
    for res, p, t in runs:
        assert all(res[k][0].extras["tie_broken"] for k in t)
        assert not any(res[k][0].extras["tie_broken"] for k in range(N_PLANTED))
        assert np.isnan(p[-1]) and res[-1].reason.startswith("constant")  # no test


@pytest.mark.slow
def test_planted_units_far_below_the_floor_and_bh_keeps_fdr(runs):
    fdp, power = [], []
    sub = np.random.default_rng(0)
    for res, p, _ in runs:
        planted = p[:N_PLANTED]
        # below the empirical floor 1 / (P + 1) = 0.001 (N = 200: AUROC about 0.95)
        assert np.median(planted) < 3e-4 and planted.max() < 1 / (N_PERM + 1)
        methods = [res[k][0].extras["search_p_method"] for k in range(N_PLANTED)]
        assert methods.count("gpd") >= 0.9 * N_PLANTED
        # BH at 0.05 on random layers of as many planted as noise units of this run
        for _ in range(100):
            units = np.r_[np.arange(N_PLANTED), sub.choice(NOISE, N_PLANTED, replace=False)]
            rej = correct_pvalues(p[units], "bh") <= 0.05
            fdp.append(rej[N_PLANTED:].sum() / max(1, rej.sum()))
            power.append(rej[:N_PLANTED].mean())
        sig = significant_units(res, 0.05)  # BH over the whole layer
        assert sig[:N_PLANTED].mean() >= 0.9
    assert np.mean(fdp) <= 0.05
    assert np.mean(power) >= 0.9


def test_statistic_tested_is_the_search_maximum_whatever_parsimony_reports():
    # issue 11: with the default parsimony, the shorter formula it reports was compared with
    # a null of the search maximum (59 vs 31 of 100 units significant)
    rng = np.random.default_rng(0)
    y = rng.random((2000, 12)) < 0.15
    a = rng.standard_normal((2000, 100)) + 0.3 * y[:, [0]]
    counts, results = [], []
    for kw in ({"parsimony": None}, {}):
        r = invert.explain(a, y, length=3, beam_size=5, min_fraction=0.05, holdout=0.5,
                           random_state=0, **kw)
        invert.trust.permutation_test(a, y, r, n_permutations=200, random_state=1)
        counts.append(int(invert.trust.significant_units(r).sum()))
        results.append(r)
    assert abs(counts[0] - counts[1]) <= 0.1 * max(counts)
    assert counts[0] >= 50
    moved = 0
    for u0, u1 in zip(*(r.units for r in results), strict=True):
        e0, e1 = u0[0].extras, u1[0].extras
        assert e1["tested_formula"] == e0["tested_formula"] == str(u0[0].formula)
        assert e1["tested_auroc"] == e0["tested_auroc"] == u0[0].auroc
        assert e1["search_p_value"] == e0["search_p_value"]
        search_best = next(e for e in u1 if e.extras["search_rank"] == 0)
        assert str(search_best.formula) == e1["tested_formula"]
        moved += str(u1[0].formula) != e1["tested_formula"]
    assert moved > 0  # parsimony reported another formula for some units


@pytest.fixture(scope="module")
def small():
    return make_layer(n_leaves=30, samples_per_leaf=10, n_hypernyms=12, n_units=12,
                      n_planted=4, signal=2.5, seed=5)


def test_ties_share_one_null_with_progress_and_estimate(small):
    rng = np.random.default_rng(1)
    a = small.activations.astype(np.float64)
    _relu_noise(a, np.arange(a.shape[1]), rng)
    a[:, 11] = 0.0  # dead
    a = np.r_[a, a[:30]]  # 30 duplicate samples
    y = np.r_[small.concepts.matrix.toarray(), small.concepts.matrix[:30].toarray()]
    res = invert.explain(a, y, **KW)
    calls, estimates = [], []
    p = permutation_test(a, y, res, n_permutations=40, random_state=0, block=16,
                         progress=lambda d, t: calls.append((d, t)),
                         on_estimate=estimates.append)
    (est,) = estimates
    assert (est.n_nulls, est.n_units, est.n_tie_broken) == (1, 11, 11)
    assert est.seconds > 0 and est.floor.empirical_floor == 1 / 41
    assert "40 permutations" in str(est) and "11 tied units" in str(est)
    total = 40 + 11  # the permutations, then the tie-broken units: not one null per unit
    assert calls[-1] == (total, total)
    assert all(b[0] > a_[0] for a_, b in zip(calls, calls[1:], strict=False))
    assert [c[0] for c in calls[:4]] == [2, 8, 24, 32]  # warm-up, then two timed batches
    assert np.isnan(p[11]) and not np.isnan(p[:11]).any()
    assert all(res[k][0].extras["tie_broken"] for k in range(11))
    again = permutation_test(a, y, res, n_permutations=40, random_state=0, annotate=False)
    np.testing.assert_array_equal(again, p)
    exact = []
    permutation_test(a, y, res, n_permutations=20, random_state=0, ties="exact",
                     on_estimate=exact.append, annotate=False)
    assert exact[0].n_nulls > 1 and exact[0].n_tie_broken == 0  # one null per tie structure


def test_duplicate_samples_alone_need_no_tie_breaking(small):
    a = small.activations.astype(np.float64)
    dense = small.concepts.matrix.toarray()
    a, y = np.r_[a, a[:40]], np.r_[dense, dense[:40]]
    res = invert.explain(a, y, **KW)
    est = []
    permutation_test(a, y, res, n_permutations=40, random_state=0, on_estimate=est.append)
    assert est[0].n_tie_broken == 0
    assert not any(u[0].extras["tie_broken"] for u in res.units)
    ids = _pattern_ids(sp.csr_matrix(y))
    np.testing.assert_array_equal(ids, _pattern_ids(y))
    assert np.array_equal(ids[-40:], ids[:40]) and len(set(ids)) == len({r.tobytes()
                                                                          for r in y})


def test_groups_of_copies_move_together(small):
    rng = np.random.default_rng(4)
    a = small.activations.astype(np.float64)
    a[:, 11] = np.maximum(a[:, 11], 0.0)  # one ReLU unit
    dense = small.concepts.matrix.toarray()
    rows = np.r_[np.arange(300), rng.choice(300, 30, replace=False)]
    a, y = a[rows], dense[rows]
    g = duplicate_groups(a)
    assert g.max() + 1 == 300 and np.array_equal(g[300:], g[rows[300:]])
    assert duplicate_groups(np.maximum(a[:300, [11]], 1.0)) is None  # ReLU ties: no copies
    res = invert.explain(a, y, **KW)
    est = []
    p = permutation_test(a, y, res, n_permutations=40, random_state=0, on_estimate=est.append)
    assert est[0].n_tie_broken == 1  # the ReLU unit; copies alone need no tie-breaking
    assert res[11][0].extras["tie_broken"] and not res[0][0].extras["tie_broken"]
    same = permutation_test(a, y, res, n_permutations=40, random_state=0, groups=g,
                            annotate=False)
    np.testing.assert_array_equal(same, p)
    # groups given by hand whose members differ: those units are tested on group means
    mine = np.r_[np.arange(300), np.arange(30)]
    est = []
    permutation_test(a, y, res, n_permutations=40, random_state=0, groups=mine,
                     on_estimate=est.append, annotate=False)
    assert est[0].n_tie_broken == 12
    with pytest.raises(ValueError, match="^groups: expected 'auto', None or 330 integer"):
        permutation_test(a, y, res, n_permutations=5, groups=np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match="^groups: expected 'auto', None or one group id"):
        permutation_test(a, y, res, n_permutations=5, groups="copies")


def test_one_null_for_several_layers(small):
    y = small.concepts
    a, b = small.activations[:, :6], small.activations[:, 6:]
    ra, rb = (invert.explain(x, y, **KW) for x in (a, b))
    null = permutation_null(y, ra, n_permutations=150, random_state=0)
    assert null.n_permutations == 150 and null.tail is not None
    assert np.all(np.diff(null.values) >= 0)
    pa = permutation_test(a, y, ra, null=null, random_state=1)
    pb = permutation_test(b, y, rb, null=null, random_state=1)
    own = permutation_test(b, y, rb, n_permutations=150, random_state=0, annotate=False)
    np.testing.assert_array_equal(pb, own)  # the same permutations as its own null
    assert np.all(pa[:4] < 1e-3) and rb[0][0].extras["n_permutations"] == 150
    other = invert.explain(a, y, length=1, beam_size=3)
    with pytest.raises(ValueError, match="^null: expected a null of the same 300 samples"):
        permutation_test(a, y, other, null=null)
    with pytest.raises(ValueError, match="^ties: expected 'break' with a given null"):
        permutation_test(a, y, ra, null=null, ties="exact")


def test_tail_none_and_gpd(small):
    a = small.activations
    res = invert.explain(a, small.concepts, **KW)
    p0 = permutation_test(a, small.concepts, res, n_permutations=199, random_state=0,
                          tail=None)
    assert np.all(p0[:4] == 1 / 200)
    assert {res[k][0].extras["search_p_method"] for k in range(12)} == {"empirical"}
    p1 = permutation_test(a, small.concepts, res, n_permutations=199, random_state=0)
    assert np.all(p1[:4] < 1e-3 / 2)
    for k in range(12):
        e = res[k][0].extras
        assert e["search_log10_p_value"] == pytest.approx(np.log10(e["search_p_value"]))
        assert (e["search_p_method"] == "gpd") == (p1[k] != p0[k])


def test_fit_tail_and_pvalues():
    rng = np.random.default_rng(3)
    null = np.sort(rng.exponential(size=1000))
    fit = fit_tail(null, random_state=0)
    assert fit.n_exceedances == 250 and fit.shape >= 0 and fit.gof_p_value >= 0.05
    assert fit.scale == pytest.approx(1.0, rel=0.2)
    obs = np.array([np.nan, 0.0, 2.0, null[-5], 10.0, 30.0, 800.0])
    p, lp, how = null_pvalues(null, obs, fit)
    assert np.isnan(p[0]) and how[0] == ""
    assert list(how[1:]) == ["empirical", "empirical", "gpd", "gpd", "gpd", "gpd"]
    assert np.all(np.diff(p[1:]) <= 0) and p[-1] > 0 and lp[-1] < -300
    assert abs(lp[5] + 30 / np.log(10)) < 3  # P(Exp(1) >= 30) = 1e-13
    assert fit_tail(null[:100]) is None  # fewer than 4 x 30 permutations
    assert fit_tail(np.repeat([0.5, 0.6, 0.7], 400)) is None  # few distinct values
    # a clearly non-Pareto tail is rejected at 250 exceedances, then fitted higher up
    mix = np.sort(np.r_[rng.uniform(0, 1, 760), rng.uniform(5, 6, 240)])
    f2 = fit_tail(mix, random_state=0)
    assert f2 is None or f2.n_exceedances < 250


def test_permutation_floor_arithmetic():
    f = permutation_floor(999, 308, 0.05, method="holm", tail=None)
    assert not f.alone and f.units_needed is None and not f.possible
    assert "no unit can be significant" in f.warning
    f = permutation_floor(999, 308, 0.05, tail=None)
    assert f.units_needed == 7 and f.possible and f.p_min == 1e-3
    assert permutation_floor(19999, 576, 0.05, tail=None).warning is None
    g = permutation_floor(1000, 576, 0.05)
    assert g.tail_possible and g.p_min < 1e-300 and g.warning is None
    assert "tail" in str(g)
    assert permutation_floor(100, 576, 0.05).warning is not None  # too few for a tail
    with pytest.raises(ValueError, match="^tail: expected one of 'gpd', None"):
        permutation_floor(100, 5, tail="normal")


def test_validation_of_the_new_parameters(small):
    res = invert.explain(small.activations[:, :2], small.concepts, **KW)
    with pytest.raises(ValueError, match="^ties: expected one of 'break', 'exact'"):
        permutation_test(small.activations[:, :2], small.concepts, res, n_permutations=5,
                         ties="mid")
    with pytest.raises(ValueError, match="^tail: expected one of"):
        permutation_test(small.activations[:, :2], small.concepts, res, n_permutations=5,
                         tail="pareto")
