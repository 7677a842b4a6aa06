"""Held-out evaluation: stratified split, held-out figures, parsimony."""

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.stats import mannwhitneyu
from sklearn.metrics import roc_auc_score

from invert.engine.synthetic import make_layer
from invert.trust import delong_ci, explain_holdout, stratified_split
from invert.trust.holdout import _choose  # the documented rule itself


def _both_sides(y, s, h):
    y = sp.csc_matrix(y)
    counts = np.diff(y.indptr)
    in_s = np.asarray(y[s].sum(0)).ravel()
    in_h = np.asarray(y[h].sum(0)).ravel()
    return counts, in_s, in_h


@pytest.mark.parametrize("holdout", [0.5, 0.2, 0.8])
def test_split_puts_every_concept_in_both_parts_hierarchy(holdout):
    layer = make_layer(n_leaves=80, samples_per_leaf=6, n_hypernyms=40, n_units=2,
                       n_planted=0, seed=4)
    y = layer.concepts.matrix.tolil()
    y[np.arange(0, 480, 97), 0] = True  # make leaf0 overlap a few other samples
    y[5, 1] = False  # and leave a concept with fewer samples
    y = y.tocsr()
    s, h = stratified_split(layer.concepts.__class__(layer.concepts.names, y), holdout, 0)
    assert np.array_equal(np.sort(np.r_[s, h]), np.arange(480))
    assert abs(len(h) - holdout * 480) <= 0.05 * 480
    counts, in_s, in_h = _both_sides(y, s, h)
    two = counts >= 2
    assert two.sum() > 100
    assert np.all(in_s[two] >= 1) and np.all(in_h[two] >= 1)


def test_split_disjoint_and_random_concepts(rng):
    y = np.zeros((300, 40), dtype=bool)
    for j in range(40):  # disjoint rare concepts of 2..6 samples, then random ones
        y[j * 7:j * 7 + 2 + j % 5, j] = True
    s, h = stratified_split(y, 0.3, random_state=rng)
    counts, in_s, in_h = _both_sides(y, s, h)
    assert np.all(in_s >= 1) and np.all(in_h >= 1)
    s2, h2 = stratified_split(y, 0.3, random_state=1)
    s3, h3 = stratified_split(y, 0.3, random_state=1)
    assert np.array_equal(h2, h3)
    with pytest.raises(ValueError, match=r"^holdout: expected a number in \(0, 1\), got 1.0"):
        stratified_split(y, 1.0)


def test_holdout_figures_are_held_out_statistics(rng):
    y = rng.random((1200, 8)) < 0.15
    a = np.c_[1.2 * (y[:, 2] | y[:, 5]) + rng.standard_normal(1200),
              rng.standard_normal(1200)]
    res = explain_holdout(a, y, holdout=0.4, random_state=3,
                          search_kwargs={"length": 2, "beam_size": 3})
    s, h = res.search_index, res.holdout_index
    assert len(h) == pytest.approx(480, abs=30)
    assert res.params["holdout"] == 0.4 and res.params["parsimony"] == 0.005
    checked = 0
    for k, u in enumerate(res):
        for e in u:
            mh = e.formula.evaluate(y[h])
            ms = e.formula.evaluate(y[s])
            assert e.auroc == pytest.approx(roc_auc_score(ms, a[s, k]), abs=1e-12)
            assert e.support == ms.sum()
            x = e.extras
            assert x["holdout_auroc"] == pytest.approx(roc_auc_score(mh, a[h, k]), abs=1e-12)
            assert x["holdout_support"] == mh.sum()
            ref = mannwhitneyu(a[h, k][~mh], a[h, k][mh], method="asymptotic").pvalue
            assert x["holdout_p_value"] == pytest.approx(ref, rel=1e-9)
            lo, hi = delong_ci(a[h, k], mh)
            assert (x["holdout_auroc_ci_low"], x["holdout_auroc_ci_high"]) == pytest.approx(
                (lo, hi))
            checked += 1
    assert checked >= 4
    assert str(res[0][0].formula) in ("2 | 5", "5 | 2")


def test_parsimony_rule_on_crafted_numbers():
    # shortest first; a longer one must beat the running winner by more than the margin
    assert _choose(np.array([2, 1, 3]), np.array([0.300, 0.296, 0.400]), 0.005) == 2
    assert _choose(np.array([2, 1, 3]), np.array([0.300, 0.296, 0.300]), 0.005) == 1
    assert _choose(np.array([2, 1, 3]), np.array([0.302, 0.296, 0.303]), 0.005) == 2 - 2
    # equal lengths: the higher held-out figure wins; ties keep search order
    assert _choose(np.array([1, 1]), np.array([0.2, 0.3]), 0.1) == 1
    assert _choose(np.array([1, 1]), np.array([0.3, 0.3]), 0.1) == 0


def test_parsimony_drops_literals_that_pick_off_noise():
    rng = np.random.default_rng(11)
    n = 3000
    x = rng.random(n) < 0.2
    noise = rng.random((n, 12)) < 0.03  # tiny concepts unrelated to the unit
    y = np.c_[x, noise]
    a = 1.0 * x + rng.standard_normal(n)
    kw = {"length": 3, "beam_size": 5}
    plain = explain_holdout(a, y, holdout=0.5, random_state=0, parsimony=None,
                            search_kwargs=kw)
    assert plain[0][0].length > 1  # the search alone prefers x & ~noise...
    strict = explain_holdout(a, y, holdout=0.5, random_state=0, parsimony=0.02,
                             search_kwargs=kw)
    best = strict[0][0]
    assert str(best.formula) == "0"
    # same split, same search: the rank is the formula's place in the plain search's list
    plain_order = [str(e.formula) for e in plain[0]]
    expected = plain_order.index("0") if "0" in plain_order else None
    assert best.extras["search_rank"] == expected
    assert [e.rank for e in strict[0]] == list(range(len(strict[0])))


def test_holdout_validation():
    y = np.eye(10, 3, dtype=bool)
    with pytest.raises(ValueError, match="^parsimony: expected None, 'auto' or a margin"):
        explain_holdout(np.arange(10.0), y, holdout=0.5, parsimony=-1)
    with pytest.raises(ValueError, match="^search_kwargs: expected search parameters only"):
        explain_holdout(np.arange(10.0), y, holdout=0.5, search_kwargs={"holdout": 0.3})
