"""The default search finds the best formula of the whole grammar on tiny inputs."""

import numpy as np
import pytest
from _brute import brute_best

import invert


@pytest.mark.parametrize("seed", range(12))
def test_default_search_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 60))
    c = int(rng.integers(2, 7))  # C <= 6
    length = int(rng.integers(1, 4))  # L <= 3
    y = rng.random((n, c)) < rng.uniform(0.1, 0.6, size=c)
    a = rng.standard_normal(n) + 1.5 * (y[:, 0] & ~y[:, -1]) + (y[:, 1 % c])
    if seed % 3 == 0:
        a = np.round(a)  # ties
    lo = float(rng.choice([0.0, 0.1, 0.3]))
    hi = float(rng.choice([0.5, 0.8, 1.0]))
    mode = "negative" if seed % 4 == 3 else "positive"
    ref = brute_best(a, y, length, lo, hi, mode)
    res = invert.explain(a, y, length=length, beam_size=3000, min_fraction=lo,
                         max_fraction=hi, mode=mode)[0]
    if ref is None:
        assert len(res) == 0 and res.reason
        return
    best = res[0]
    assert best.auroc == pytest.approx(ref, abs=1e-12)
    assert best.length <= length
    assert lo <= best.fraction <= hi
    # the formula really has that AUROC on the data
    assert invert.auroc(a, best.evaluate(y)) == pytest.approx(best.auroc, abs=1e-12)


def test_sub_threshold_literals_are_combined():
    """a | b is found although a and b are each rarer than min_fraction."""
    rng = np.random.default_rng(3)
    n = 1000
    y = np.zeros((n, 8), dtype=bool)
    y[np.arange(0, 40), 0] = True
    y[np.arange(40, 80), 1] = True
    y[:, 2:] = rng.random((n, 6)) < 0.2
    a = rng.standard_normal(n) + 3 * (y[:, 0] | y[:, 1])
    kw = dict(length=2, beam_size=3, min_fraction=0.06)
    best = invert.explain(a, y, **kw)[0][0]
    assert set(best.formula.concepts()) == {0, 1}
    ref = invert.explain(a, y, dedupe=False, **kw)[0][0]
    assert best.auroc > ref.auroc  # the reference search cannot reach it
