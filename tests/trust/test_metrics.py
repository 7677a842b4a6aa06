"""Metrics, confidence intervals and corrections against independent implementations."""

import math

import numpy as np
import pytest
from scipy.stats import norm, pointbiserialr, rankdata
from sklearn.metrics import average_precision_score, roc_auc_score

import invert
from invert.trust import add_metrics, auroc_ci, correct_pvalues, delong_ci, metrics


def _data(rng, n=400, rounding=None):
    a = rng.standard_normal(n)
    m = rng.random(n) < 0.25
    a[m] += 0.7
    if rounding is not None:
        a = np.round(a, rounding)  # many ties
    return a, m


@pytest.mark.parametrize("rounding", [None, 1, 0])
def test_metrics_match_sklearn_scipy_and_direct(rounding):
    rng = np.random.default_rng(rounding or 7)
    for _ in range(5):
        a, m = _data(rng, rounding=rounding)
        q = 0.1
        res = metrics(a, m, top_q=q)
        assert res["auroc"] == pytest.approx(roc_auc_score(m, a), abs=1e-12)
        assert res["auprc"] == pytest.approx(average_precision_score(m, a), abs=1e-12)
        assert res["point_biserial"] == pytest.approx(pointbiserialr(m, a)[0], abs=1e-10)
        mad = (a[m].mean() - a[~m].mean()) / a[~m].std(ddof=1)
        assert res["mad"] == pytest.approx(mad, rel=1e-10)
        k = math.ceil(q * len(a))
        thr = np.sort(a)[::-1][k - 1]
        top = a >= thr
        inter = (top & m).sum()
        assert res["top_precision"] == pytest.approx(inter / top.sum())
        assert res["top_recall"] == pytest.approx(inter / m.sum())
        p, r = inter / top.sum(), inter / m.sum()
        assert res["top_f1"] == pytest.approx(2 * p * r / (p + r))
        assert res["top_iou"] == pytest.approx(inter / (top | m).sum())


def test_metrics_undefined_and_validation():
    a = np.arange(10.0)
    res = metrics(a, np.zeros(10, bool))
    assert math.isnan(res["auroc"]) and math.isnan(res["mad"]) and math.isnan(res["auprc"])
    with pytest.raises(ValueError, match=r"^top_q: expected a number in \(0, 1\], got 0"):
        metrics(a, a > 5, top_q=0)
    with pytest.raises(ValueError, match="^mask: expected 10 entries"):
        metrics(a, np.ones(3, bool))


def test_add_metrics_fills_every_formula(rng):
    y = rng.random((600, 6)) < 0.2
    a = np.c_[y[:, 1] + rng.standard_normal(600), rng.standard_normal(600)]
    res = add_metrics(invert.explain(a, y, length=2, beam_size=3), a, y, top_q=0.05)
    n_checked = 0
    for k, u in enumerate(res):
        for e in u:
            mask = e.formula.evaluate(y)
            ref = metrics(a[:, k], mask, top_q=0.05)
            for key in ("auprc", "mad", "point_biserial", "top_f1", "top_iou"):
                assert e.extras[key] == pytest.approx(ref[key], nan_ok=True)
            assert e.extras["auprc"] == pytest.approx(average_precision_score(mask, a[:, k]))
            n_checked += 1
    assert n_checked == 6
    df_cols = set(res.to_records()[0])
    assert {"auprc", "mad", "top_q"} <= df_cols
    rows = np.arange(300)
    add_metrics(res, a, y, rows=rows, prefix="holdout_")
    e = res[0][0]
    assert e.extras["holdout_auroc"] == pytest.approx(
        roc_auc_score(e.formula.evaluate(y[rows]), a[rows, 0]))


def _delong_direct(s, y):
    pos, neg = s[y], s[~y]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    auc = psi.mean()
    v10, v01 = psi.mean(1), psi.mean(0)
    se = math.sqrt(v10.var(ddof=1) / len(pos) + v01.var(ddof=1) / len(neg))
    return auc, se


def test_delong_matches_direct_structural_components(rng):
    for rounding in (None, 1):
        a, m = _data(rng, n=300, rounding=rounding)
        auc, se = _delong_direct(a, m)
        low, high = delong_ci(a, m, level=0.9)
        z = norm.ppf(0.95)
        assert low == pytest.approx(auc - z * se, abs=1e-12)
        assert high == pytest.approx(auc + z * se, abs=1e-12)


def test_hanley_mcneil_formula():
    a, n1, n0 = np.array([0.6, 0.8, 0.95]), np.array([30, 50, 10]), np.array([70, 200, 90])
    low, high = auroc_ci(a, n1, n0, level=0.95)
    q1, q2 = a / (2 - a), 2 * a**2 / (1 + a)
    se = np.sqrt((a * (1 - a) + (n1 - 1) * (q1 - a**2) + (n0 - 1) * (q2 - a**2)) / (n1 * n0))
    np.testing.assert_allclose(low, np.clip(a - 1.959963984540054 * se, 0, 1))
    np.testing.assert_allclose(high, np.clip(a + 1.959963984540054 * se, 0, 1))
    with pytest.raises(ValueError, match="^method: expected one of 'hanley-mcneil'"):
        auroc_ci(0.7, 10, 10, method="delong")
    with pytest.raises(ValueError, match=r"^level: expected a number in \(0, 1\)"):
        auroc_ci(0.7, 10, 10, level=1.0)


def test_ci_coverage_small_simulation():
    rng = np.random.default_rng(2026)
    n1, n0, shift, sims = 40, 80, 1.0, 300
    true = norm.cdf(shift / math.sqrt(2))
    y = np.arange(n1 + n0) < n1
    cover_d = cover_h = 0
    for _ in range(sims):
        s = rng.standard_normal(n1 + n0) + shift * y
        lo, hi = delong_ci(s, y)
        cover_d += lo <= true <= hi
        auc = (rankdata(s)[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)
        lo, hi = auroc_ci(auc, n1, n0)
        cover_h += lo <= true <= hi
    # nominal 0.95; binomial sd about 0.013 for 300 simulations
    assert 0.90 <= cover_d / sims <= 0.99
    assert 0.90 <= cover_h / sims <= 0.99


def _bh_reject(p, alpha):
    m = len(p)
    order = np.argsort(p)
    ks = [k for k in range(1, m + 1) if p[order[k - 1]] <= k * alpha / m]
    kmax = max(ks) if ks else 0
    out = np.zeros(m, bool)
    out[order[:kmax]] = True
    return out


def _holm_reject(p, alpha):
    m = len(p)
    out = np.zeros(m, bool)
    for step, i in enumerate(np.argsort(p, kind="stable")):
        if p[i] > alpha / (m - step):
            break
        out[i] = True
    return out


def test_bh_and_holm_against_brute_force(rng):
    for _ in range(30):
        m = int(rng.integers(1, 40))
        p = np.where(rng.random(m) < 0.3, rng.random(m) * 0.01, rng.random(m))
        q = correct_pvalues(p, "bh")
        h = correct_pvalues(p, "holm")
        assert np.all((q >= p - 1e-15) & (q <= 1)) and np.all(h >= q - 1e-15)
        for alpha in (0.001, 0.01, 0.05, 0.1, 0.3):
            np.testing.assert_array_equal(q <= alpha, _bh_reject(p, alpha))
            np.testing.assert_array_equal(h <= alpha, _holm_reject(p, alpha))


def test_corrections_skip_nan_and_validate():
    p = np.array([0.01, np.nan, 0.02])
    q = correct_pvalues(p, "bh")
    assert np.isnan(q[1]) and q[0] == pytest.approx(0.02) and q[2] == pytest.approx(0.02)
    with pytest.raises(ValueError, match="^method: expected one of 'bh', 'holm', got 'fdr'"):
        correct_pvalues(p, "fdr")
    with pytest.raises(ValueError, match=r"^p: expected p-values in \[0, 1\]"):
        correct_pvalues([1.5], "bh")
