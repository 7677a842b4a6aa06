"""Rank statistics against scikit-learn and scipy."""

import numpy as np
import pytest
import scipy.stats as st
import torch
from sklearn.metrics import roc_auc_score

from invert.engine.stats import (
    auroc,
    mannwhitney_pvalues,
    midranks2,
    pattern_ranksums,
    pattern_ranksums_torch,
)


@pytest.mark.parametrize("ties", [False, True])
def test_auroc_matches_sklearn(rng, ties):
    for _ in range(20):
        n = int(rng.integers(2, 300))
        x = rng.standard_normal(n)
        if ties:
            x = np.round(x * 2) / 2
        y = rng.random(n) < rng.uniform(0.05, 0.9)
        if y.all() or not y.any():
            continue
        assert auroc(x, y) == pytest.approx(roc_auc_score(y, x), abs=1e-12)


def test_auroc_undefined_for_constant_labels():
    assert np.isnan(auroc([1.0, 2.0, 3.0], [1, 1, 1]))


def test_midranks_match_scipy_rankdata(rng):
    x = np.round(rng.standard_normal((500, 7)), 1)
    r2, tie = midranks2(torch.from_numpy(x))
    np.testing.assert_array_equal(r2.numpy(), 2 * st.rankdata(x, axis=0))
    for k in range(x.shape[1]):
        _, counts = np.unique(x[:, k], return_counts=True)
        assert tie[k].item() == float((counts**3 - counts).sum())


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.int32])
def test_pattern_ranksums_numpy_equals_torch(rng, dtype):
    x = (rng.standard_normal((3000, 9)) * (1000 if dtype == np.int32 else 1)).astype(dtype)
    x[:, 1] = np.round(x[:, 1])  # many ties
    x[:, 2] = 0.0  # constant
    x[:500, 3] = -0.0  # signed zeros are equal
    x[500:900, 3] = 0.0
    if dtype == np.float64:
        x[:, 4] += 1e-12 * rng.random(3000)  # not representable in float32
    inv = rng.integers(0, 40, 3000)
    a, ta = pattern_ranksums(x, inv, 40, block=4)
    b, tb = pattern_ranksums_torch(torch.from_numpy(x.astype(np.float64)),
                                   torch.from_numpy(inv), 40)
    np.testing.assert_array_equal(a, b.numpy())
    np.testing.assert_array_equal(ta, tb.numpy())
    # against scipy directly
    ref = 2 * st.rankdata(x.astype(np.float64), axis=0)
    direct = np.stack([np.bincount(inv, weights=ref[:, k], minlength=40) for k in range(9)], 1)
    np.testing.assert_array_equal(a, direct)


@pytest.mark.parametrize("ties", [False, True])
def test_pvalues_match_scipy_asymptotic(rng, ties):
    n = 400
    x = rng.standard_normal(n)
    if ties:
        x = np.round(x)
    r2, tie = midranks2(torch.from_numpy(x[:, None]))
    for _ in range(20):
        m = rng.random(n) < rng.uniform(0.03, 0.6)
        s2 = r2[:, 0].numpy()[m].sum()
        p, lp = mannwhitney_pvalues(np.array([s2]), np.array([m.sum()], float), n,
                                    tie.numpy())
        ref = st.mannwhitneyu(x[~m], x[m], alternative="two-sided",
                              method="asymptotic").pvalue
        assert p[0] == pytest.approx(ref, rel=1e-9, abs=1e-300)
        if ref > 0:
            assert lp[0] == pytest.approx(np.log10(ref), rel=1e-9)


def test_log10_p_does_not_underflow():
    n = 20000
    x = np.arange(n, dtype=float)
    m = x >= n // 2  # perfect separation: p underflows to 0 in float64
    r2, tie = midranks2(torch.from_numpy(x[:, None]))
    p, lp = mannwhitney_pvalues(np.array([r2[:, 0].numpy()[m].sum()]),
                                np.array([float(m.sum())]), n, tie.numpy())
    assert p[0] == 0.0
    assert np.isfinite(lp[0]) and lp[0] < -300
