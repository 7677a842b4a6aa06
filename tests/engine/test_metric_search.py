"""Searching by the point-biserial correlation (decomposes over label patterns like AUROC)."""

import numpy as np
import pytest
import scipy.stats as st

import invert


def _brute_r(a, y, length, lo, hi):
    n, c = y.shape
    lits = [y[:, j] for j in range(c)] + [~y[:, j] for j in range(c)]
    sets = {m.tobytes(): m for m in lits}
    level = dict(sets)
    for _ in range(length - 1):
        nxt = {}
        for f in level.values():
            for lit in lits:
                for m in (f & lit, f | lit):
                    nxt.setdefault(m.tobytes(), m)
        sets.update(nxt)
        level = nxt
    best = -np.inf
    for m in sets.values():
        s = m.sum()
        if 0 < s < n and lo <= s / n <= hi:
            best = max(best, st.pointbiserialr(m, a).statistic)
    return best


@pytest.mark.parametrize("seed", range(6))
def test_point_biserial_search_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    n, c = 50, int(rng.integers(2, 5))
    y = rng.random((n, c)) < 0.35
    a = rng.standard_normal(n) + 2 * (y[:, 0] & ~y[:, 1 % c])
    res = invert.explain(a, y, length=2, beam_size=2000, max_fraction=0.9,
                         metric="point_biserial")[0]
    e = res[0]
    m = e.evaluate(y)
    assert e.extras["point_biserial"] == pytest.approx(st.pointbiserialr(m, a).statistic,
                                                       abs=1e-10)
    assert e.extras["point_biserial"] == pytest.approx(_brute_r(a, y, 2, 0.0, 0.9), abs=1e-10)
    assert e.auroc == pytest.approx(invert.auroc(a, m), abs=1e-12)  # still exact AUROC
    rs = [x.extras["point_biserial"] for x in res]
    assert rs == sorted(rs, reverse=True)


def test_unknown_metric_is_rejected():
    with pytest.raises(ValueError, match="metric: expected one of 'auroc', 'point_biserial'"):
        invert.explain(np.arange(5.0), np.eye(5, dtype=bool), metric="f1")
