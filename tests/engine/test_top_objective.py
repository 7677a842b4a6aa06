"""The top-F1 search objective: the F1 of a formula against the unit's top activations,
scored exactly from per-pattern counts of top samples (checked by brute force and sklearn)."""

import math

import numpy as np
import pytest
from _brute import all_formula_masks
from sklearn.metrics import f1_score

import invert
from invert.engine.search import explain as engine_explain
from invert.engine.top import DEFAULT_TOP_Q, top_sets, top_shares
from invert.trust.metrics import metric_table


def _top(a, q):
    n = a.shape[0]
    k = max(1, math.ceil(q * n - 1e-9))
    return a >= np.sort(a)[::-1][k - 1]


def _brute_f1(a, y, length, lo, hi, q, min_top=None):
    """Best F1 against the top set over every formula within the support limits
    (``min_top``: the least support as a share of the top set, instead of ``lo``)."""
    x = all_formula_masks(y, length)
    n = a.shape[0]
    top = _top(a, q)
    s = x.sum(1)
    low = s / n >= lo if min_top is None else s >= min_top * top.sum()
    x = x[(s > 0) & (s < n) & low & (s / n <= hi)]
    if len(x) == 0:
        return None
    f1 = 2.0 * (x.astype(np.int64) @ top) / (x.sum(1) + top.sum())
    for i in range(0, len(x), max(1, len(x) // 10)):
        assert f1[i] == pytest.approx(f1_score(top, x[i]), abs=1e-12)
    return f1.max()


def _data(seed, n=50):
    rng = np.random.default_rng(seed)
    c = int(rng.integers(2, 6))
    y = rng.random((n, c)) < rng.uniform(0.1, 0.5, size=c)
    a = rng.standard_normal(n) + 2.0 * (y[:, 0] & ~y[:, -1]) + 0.5 * y[:, 1 % c]
    if seed % 3 == 0:
        a = np.round(a)  # ties, also at the top set's threshold
    return rng, a, y


@pytest.mark.parametrize("seed", range(10))
def test_top_f1_search_equals_brute_force(seed):
    rng, a, y = _data(seed)
    length = int(rng.integers(1, 4))
    q = float(rng.choice([0.05, 0.1, 0.2, 0.3]))
    lo = float(rng.choice([0.0, 0.1]))
    hi = float(rng.choice([0.5, 0.9]))
    ref = _brute_f1(a, y, length, lo, hi, q)
    for dedupe in (True, False):
        res = invert.explain(a, y, length=length, beam_size=3000, min_fraction=lo,
                             max_fraction=hi, metric="top_f1", top_q=q, dedupe=dedupe)[0]
        if ref is None:
            assert len(res) == 0
            continue
        best = res[0]
        assert best.extras["top_f1"] == pytest.approx(ref, abs=1e-12)
        f1s = [e.extras["top_f1"] for e in res]
        assert f1s == sorted(f1s, reverse=True)


@pytest.mark.parametrize("seed", range(4))
def test_top_f1_extras_match_sklearn_and_trust_metrics(seed):
    _, a, y = _data(seed, n=80)
    q = 0.1
    res = invert.explain(a, y, length=2, beam_size=6, metric="top_f1", top_q=q)[0]
    top = _top(a, q)
    masks = np.array([e.evaluate(y) for e in res])
    tab = metric_table(a, masks, q)
    for i, e in enumerate(res):
        m = masks[i]
        assert e.extras["top_f1"] == pytest.approx(f1_score(top, m), abs=1e-12)
        assert e.extras["top_f1"] == pytest.approx(tab["top_f1"][i], abs=1e-12)
        assert e.extras["top_precision"] == pytest.approx(tab["top_precision"][i], abs=1e-12)
        assert e.extras["top_recall"] == pytest.approx(tab["top_recall"][i], abs=1e-12)
        assert e.extras["top_size"] == int(top.sum())
        assert e.extras["top_q"] == q
        assert e.auroc == pytest.approx(invert.auroc(a, m), abs=1e-12)  # still exact AUROC


@pytest.mark.parametrize("kernel", ["auto", "torch"])
def test_several_units_each_their_own_top_set(kernel):
    """Units of one block with different top-set sizes (ties, sparse units) each get their
    own brute-force best; the torch code path gives the same."""
    rng = np.random.default_rng(7)
    n, c = 60, 4
    y = rng.random((n, c)) < 0.3
    cols = [rng.standard_normal(n) + 2 * y[:, j % c] for j in range(5)]
    cols.append(np.round(cols[0]))  # ties at the threshold
    cols.append(np.where(y[:, 2] & (rng.random(n) < 0.7), rng.random(n) + 0.1, 0.0))  # sparse
    a = np.stack(cols, axis=1)
    res = engine_explain(a, y, length=2, beam_size=3000, metric="top_f1", kernel=kernel,
                         max_fraction=0.9)
    q = top_shares(a, None)
    assert q[-1] == pytest.approx(np.mean(a[:, -1] > 0)) and q[0] == DEFAULT_TOP_Q
    for k in range(a.shape[1]):
        ref = _brute_f1(a[:, k], y, 2, 0.0, 0.9, q[k])
        assert res[k][0].extras["top_f1"] == pytest.approx(ref, abs=1e-12)
    # the sparse unit's top set is where it fires
    ind, _ = top_sets(a[:, -1:], None)
    assert np.array_equal(ind[:, 0], a[:, -1] > 0)
    assert res[a.shape[1] - 1][0].extras["top_size"] == int(np.sum(a[:, -1] > 0))


@pytest.mark.parametrize("seed", range(5))
def test_relative_min_fraction(seed):
    """``relative_min``: a formula holds on at least ``min_fraction * |T|`` samples."""
    _, a, y = _data(seed, n=60)
    q = 0.2
    for rel in (0.5, 1.0, 1.5):
        ref = _brute_f1(a, y, 2, 0.0, 0.8, q, min_top=rel)
        res = invert.explain(a, y, length=2, beam_size=3000, min_fraction=rel,
                             max_fraction=0.8, metric="top_f1", top_q=q, relative_min=True)[0]
        t = res[0].extras["top_size"] if len(res) else _top(a, q).sum()
        assert all(e.support >= rel * t for e in res)
        if ref is None:
            assert len(res) == 0
        else:
            assert res[0].extras["top_f1"] == pytest.approx(ref, abs=1e-12)


def test_top_f1_finds_the_peak_where_auroc_finds_the_bulk():
    """A unit raised a little by a common concept and a lot by a rare one: AUROC labels the
    common concept, top F1 the rare one (it covers the top activations)."""
    rng = np.random.default_rng(0)
    n = 4000
    y = np.zeros((n, 3), dtype=bool)
    y[:, 0] = rng.random(n) < 0.4  # common, mild
    y[:, 1] = rng.random(n) < 0.01  # rare, strong
    y[:, 2] = rng.random(n) < 0.2  # noise
    half = rng.random(n) < 0.5  # the rare concept drives the peak on half its samples
    a = 1.5 * y[:, 0] + 6.0 * (y[:, 1] & half) + 0.5 * rng.standard_normal(n)
    by_auroc = invert.explain(a, y, length=1, beam_size=3)[0][0]
    by_top = invert.explain(a, y, length=1, beam_size=3, metric="top_f1", top_q=0.01)[0][0]
    assert str(by_auroc.formula) == "0"
    assert str(by_top.formula) == "1"
    assert by_top.extras["top_precision"] > 0.3 and by_auroc.auroc > 0.95
    assert by_top.auroc < by_auroc.auroc


def test_top_parameters_are_checked():
    a, y = np.arange(10.0), np.eye(10, dtype=bool)[:, :3]
    with pytest.raises(ValueError, match="mode: expected 'positive' with metric='top_f1'"):
        invert.explain(a, y, metric="top_f1", mode="negative")
    with pytest.raises(ValueError, match="relative_min: expected False unless"):
        engine_explain(a, y, relative_min=True)
    with pytest.raises(ValueError, match="top_q: expected a number in"):
        invert.explain(a, y, metric="top_f1", top_q=1.5)
    with pytest.raises(ValueError, match="metric: expected one of 'optimal'|metric"):
        invert.explain(a, y, metric="top_f1", optimal=True)
    res = invert.explain(a, y, metric="top_f1", length=1)
    assert res.params["metric"] == "top_f1" and res.params["top_q"] is None
