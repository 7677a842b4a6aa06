"""Inputs taken as given (issue 14, E and G): exact ranks of int64 above 2**53, float16 and
bfloat16 widened, complex refused, a scale-invariant point-biserial, the memory budget's
floor, and a finiteness check that reads a layer in bounded pieces."""

import math
import re
import tracemalloc
import warnings

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.metrics import roc_auc_score

import invert
from invert import engine
from invert._validate import InvalidParameterError
from invert.engine.inputs import as_activations

BASE = 2**60  # float64 cannot tell BASE + 1 from BASE


def _labels(n, c, seed, p=0.3):
    return np.random.default_rng(seed).random((n, c)) < p


def _big_ints(y, seed):
    """int64 activations 2**60 + small integers: every distinct value collapses to one
    float64."""
    rng = np.random.default_rng(seed)
    small = 3 * y[:, 0] + 2 * y[:, 2] + rng.integers(0, 8, (y.shape[0], 2)).T
    a = BASE + small.T.astype(np.int64)
    assert len(np.unique(a[:, 0].astype(np.float64))) == 1  # the float64 path loses it
    return a


def _check_aurocs(res, a, y):
    """Every explanation's AUROC is scikit-learn's on the values as given, and the exact
    reference from scipy's ranks (of Python ints, for integers) agrees."""
    seen = 0
    for k, unit in enumerate(res):
        col = a[:, k]
        ranks = stats.rankdata(np.array([int(v) for v in col], dtype=object)
                               if col.dtype.kind in "iu" else col)
        for e in unit:
            mask = e.formula.evaluate(y)
            n1, n0 = mask.sum(), (~mask).sum()
            exact = (ranks[mask].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)
            assert e.auroc == pytest.approx(roc_auc_score(mask, a[:, k]), abs=1e-12)
            assert e.auroc == pytest.approx(exact, abs=1e-12)
            seen += 1
    assert seen > 0


def test_sklearn_ranks_int64_exactly():
    """The reference itself: scikit-learn's AUROC of int64 values above 2**53 is that of the
    values less 2**60 (exact), not that of their float64 conversion (0.5)."""
    y = _labels(300, 3, 0)
    a = _big_ints(y, 1)[:, 0]
    assert roc_auc_score(y[:, 0], a) == roc_auc_score(y[:, 0], a - BASE)
    assert roc_auc_score(y[:, 0], a) > 0.7
    assert roc_auc_score(y[:, 0], a.astype(np.float64)) == 0.5


@pytest.mark.parametrize("kernel", ["auto", "torch"])
def test_int64_above_2_53_ranks_exactly(kernel):
    y = _labels(300, 4, 2)
    a = _big_ints(y, 3)
    res = engine.explain(a, y, length=2, beam_size=3, kernel=kernel)
    assert all(len(u) == 3 for u in res)  # not "constant units"
    assert str(res[0][0].formula).startswith("0")
    _check_aurocs(res, a, y)


def test_int64_above_2_53_with_a_holdout():
    y = _labels(400, 4, 4)
    a = _big_ints(y, 5)
    res = invert.explain(a, y, length=1, beam_size=2, holdout=0.5, random_state=0)
    s, h = res.search_index, res.holdout_index
    for k, unit in enumerate(res):
        assert len(unit) == 2
        for e in unit:
            mask = e.formula.evaluate(y)
            assert e.auroc == pytest.approx(roc_auc_score(mask[s], a[s, k]), abs=1e-12)
            assert e.extras["holdout_auroc"] == pytest.approx(
                roc_auc_score(mask[h], a[h, k]), abs=1e-12)


def test_uint64_and_exact_pvalue_of_a_small_group():
    """Distinct values above 2**53 (no ties): a support of 5 samples gets scipy's exact
    Mann-Whitney p-value of the values as given (float64 would tie them all)."""
    n = 60
    y = np.zeros((n, 2), bool)
    y[:5, 0] = True
    y[::3, 1] = True
    order = np.random.default_rng(6).permutation(n)
    order[:5] = np.arange(n - 5, n)  # the concept's samples are the top five
    order[5:] = np.random.default_rng(7).permutation(n - 5)
    for a in (BASE + order.astype(np.int64), np.uint64(2**63) + order.astype(np.uint64)):
        res = invert.explain(a, y, length=1, beam_size=1)
        e = res[0][0]
        assert str(e.formula) == "0" and e.auroc == 1.0
        ref = stats.mannwhitneyu(order[5:], order[:5], alternative="two-sided",
                                 method="exact").pvalue
        assert e.p_value == pytest.approx(ref, rel=1e-12)


def _float_case(seed=8):
    y = _labels(500, 5, seed)
    rng = np.random.default_rng(seed)
    a = (y[:, [1, 3]] * [1.0, -0.5] + 0.6 * rng.standard_normal((500, 2))).astype(np.float32)
    return a, y


@pytest.mark.parametrize("kind", ["numpy16", "torch16", "bfloat16"])
def test_half_precision_is_widened(kind):
    a, y = _float_case()
    if kind == "numpy16":
        x, wide = a.astype(np.float16), a.astype(np.float16).astype(np.float32)
    else:
        dt = torch.float16 if kind == "torch16" else torch.bfloat16
        x = torch.from_numpy(a).to(dt)
        wide = x.to(torch.float32).numpy()
    assert len(np.unique(wide[:, 0])) < len(np.unique(a[:, 0]))  # ties from the rounding
    res = invert.explain(x, y, length=2, beam_size=3)
    ref = invert.explain(wide, y, length=2, beam_size=3)
    for u, r in zip(res, ref, strict=True):
        assert [(str(e.formula), e.auroc, e.p_value) for e in u] == \
            [(str(e.formula), e.auroc, e.p_value) for e in r]
    _check_aurocs(res, wide, y)


def test_bfloat16_tensor_of_one_unit_and_with_a_holdout():
    a, y = _float_case(9)
    x = torch.from_numpy(a[:, 0]).to(torch.bfloat16)
    wide = x.to(torch.float32).numpy()
    res = invert.explain(x, y, length=1, beam_size=2, holdout=0.3, random_state=1)
    e = res[0][0]
    mask = e.formula.evaluate(y)
    assert e.auroc == pytest.approx(roc_auc_score(mask[res.search_index],
                                                  wide[res.search_index]), abs=1e-12)


def test_complex_input_is_refused(tmp_path):
    a = np.random.default_rng(10).standard_normal((40, 2)) + 1j
    y = _labels(40, 3, 11)
    path = tmp_path / "complex.npy"
    np.save(path, a)
    for x in (a, torch.from_numpy(a), str(path), np.load(path, mmap_mode="r")):
        with pytest.raises(InvalidParameterError, match=r"^activations: expected real "
                           r"numbers, got dtype (torch\.)?complex128"):
            invert.explain(x, y, length=1)


def test_strings_in_a_npy_file_are_refused(tmp_path):
    path = tmp_path / "text.npy"
    np.save(path, np.array([["1.5"], ["2.5"]]))
    with pytest.raises(InvalidParameterError, match=r"^activations: expected an array of "
                       r"numbers.*got dtype <U3"):
        invert.explain(path, np.array([[True], [False]]), length=1)


# ----------------------------------------------------------------------------- point-biserial


def _pb_case():
    y = _labels(400, 5, 12)
    rng = np.random.default_rng(13)
    a = y[:, [0, 2]] * [1.0, 2.0] + y[:, [4, 1]] * 0.5 + rng.standard_normal((400, 2))
    return a, y


@pytest.mark.parametrize("scale", [1e160, 1e-175, 2.0**600, 1e300])
def test_point_biserial_is_scale_invariant(scale):
    a, y = _pb_case()
    kw = dict(length=3, beam_size=4, metric="point_biserial")
    ref = invert.explain(a, y, **kw)
    res = invert.explain(a * scale, y, **kw)
    for u, r in zip(res, ref, strict=True):
        assert len(u) == len(r) == 4
        if math.log2(scale).is_integer():  # exact scaling: the very same formulas
            assert [str(e.formula) for e in u] == [str(e.formula) for e in r]
        for e, f in zip(u, r, strict=True):
            # else the same supports (equivalent formulas such as 0 & 4 and 4 & 0 may swap:
            # the scaled inputs are rounded, and such formulas tie exactly)
            assert np.array_equal(e.formula.evaluate(y), f.formula.evaluate(y))
            assert e.extras["point_biserial"] == pytest.approx(
                f.extras["point_biserial"], rel=1e-9)
            assert e.auroc == f.auroc
    _check_point_biserial(res, a, y)


def _check_point_biserial(res, a, y):
    for k, unit in enumerate(res):
        for e in unit:
            ref = stats.pointbiserialr(e.formula.evaluate(y), a[:, k]).statistic
            assert e.extras["point_biserial"] == pytest.approx(ref, rel=1e-9)


def test_point_biserial_certified_at_any_scale():
    a, y = _pb_case()
    kw = dict(length=2, beam_size=2, metric="point_biserial", optimal=True)
    ref = invert.explain(a, y, **kw)
    res = invert.explain(a * 1e-175, y, **kw)
    assert [str(u[0].formula) for u in res] == [str(u[0].formula) for u in ref]
    assert all(u.certified for u in res)
    for u, r in zip(res, ref, strict=True):
        assert u.bound == pytest.approx(r.bound, rel=1e-9)
        assert u.ceiling == pytest.approx(r.ceiling, rel=1e-9)
    _check_point_biserial(res, a, y)


def test_point_biserial_of_int64_above_2_53():
    y = _labels(300, 4, 14)
    a = _big_ints(y, 15)
    res = invert.explain(a, y, length=2, beam_size=2, metric="point_biserial")
    assert all(len(u) == 2 for u in res)
    _check_point_biserial(res, a - BASE, y)  # the exact differences


def test_centred_activations_are_scaled_exactly():
    from invert.engine.stats import centred_activations

    a, _ = _pb_case()
    c1, sd1 = centred_activations(a)
    c2, sd2 = centred_activations(a * 2.0**700)  # a power of two: bit for bit the same
    assert np.array_equal(c1, c2) and np.array_equal(sd1, sd2)
    c3, sd3 = centred_activations(a * 1e-300)
    assert np.all(np.isfinite(c3)) and np.all(sd3 > 0.1)
    assert np.allclose(c3 / sd3, c1 / sd1, rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------- progress


@pytest.mark.parametrize("progress", [5, "bar", 1.5])
def test_progress_fails_at_once(progress, tmp_path):
    """A non-callable progress is refused before anything is read: the activations here
    do not even exist."""
    y = _labels(50, 3, 16)
    missing = tmp_path / "missing.npy"
    for call in (lambda: invert.explain(missing, y, progress=progress),
                 lambda: invert.explain(missing, y, progress=progress, holdout=0.3),
                 lambda: engine.explain(missing, y, progress=progress)):
        with pytest.raises(InvalidParameterError, match=r"^progress: expected a callable"):
            call()


# ----------------------------------------------------------------------------- memory


def test_budget_below_the_floor_warns_and_names_both_figures():
    rng = np.random.default_rng(17)
    y = _labels(30_000, 4, 18, p=0.2)
    a = (y[:, 1] + rng.standard_normal(30_000)).astype(np.float32)
    with pytest.warns(RuntimeWarning) as rec:
        res = invert.explain(a, y, length=2, beam_size=2, memory_budget="1MiB")
    msgs = [str(w.message) for w in rec if "memory_budget" in str(w.message)]
    assert len(msgs) == 1
    m = re.fullmatch(r"memory_budget 1\.0 MiB is below the floor (\d+\.\d) MiB for this "
                     r"problem; using (\d+\.\d) MiB", msgs[0])
    assert m is not None, msgs[0]
    assert float(m.group(1)) == float(m.group(2)) > 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default budget is above the floor: no warning
        ref = invert.explain(a, y, length=2, beam_size=2)
    assert [(str(e.formula), e.auroc) for e in res[0]] == \
        [(str(e.formula), e.auroc) for e in ref[0]]


def test_memory_floor_grows_with_the_problem():
    from invert.engine.params import SearchParams
    from invert.engine.search import memory_floor

    p = SearchParams.from_kwargs(10, length=3, beam_size=5, min_fraction=0.0,
                                 max_fraction=0.5, mode="positive", dedupe=True,
                                 limit_search=None)
    small, big = memory_floor(p, 1000, 50, 10), memory_floor(p, 100_000, 50, 10)
    assert 0 < small < big and big >= 64 * 100_000 + p.unit_bytes(100_000, 50, 10)
    assert memory_floor(p, 1000, 50, 10, read_bytes=4096) == small + 4096


def _npy(tmp_path, n, k, fortran=False):
    a = np.random.default_rng(19).standard_normal((n, k)).astype(np.float32)
    a = np.asfortranarray(a) if fortran else a
    path = tmp_path / ("f.npy" if fortran else "c.npy")
    np.save(path, a)
    return path, a


@pytest.mark.parametrize("fortran", [False, True])
def test_finiteness_check_reads_a_file_in_pieces(tmp_path, fortran):
    """Checking a 32 MiB layer allocates a few MiB (a bounded buffer), not the layer (or
    a float64 copy of it), and still finds the one NaN at its place."""
    n, k = 4096, 2048
    path, a = _npy(tmp_path, n, k, fortran)
    size = a.nbytes
    for src in (str(path), np.load(path, mmap_mode="r")):
        tracemalloc.start()
        try:
            as_activations(src)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < size / 4, (peak, size)
    a[n - 2, k - 3] = np.nan
    np.save(path, a)
    with pytest.raises(InvalidParameterError,
                       match=rf"1 non-finite values, the first at row {n - 2}, unit {k - 3}"):
        as_activations(str(path))


def test_finiteness_check_of_in_memory_arrays_does_not_copy_them():
    a = np.random.default_rng(20).standard_normal((4096, 1024)).astype(np.float32)
    tracemalloc.start()
    try:
        as_activations(a)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < a.nbytes / 2, (peak, a.nbytes)
    t = torch.from_numpy(a.copy()).to(torch.bfloat16)
    t[5, 7] = float("inf")
    with pytest.raises(InvalidParameterError, match="the first at row 5, unit 7"):
        as_activations(t)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_int64_above_2_53_on_cuda():
    y = _labels(300, 4, 21)
    a = _big_ints(y, 22)
    res = engine.explain(torch.from_numpy(a).cuda(), y, length=2, beam_size=3)
    assert all(len(u) == 3 for u in res)
    _check_aurocs(res, a, y)


def test_memory_floor_counts_sparse_labels_as_sparse():
    """Sparse labels with many concepts: the floor is what the sparse operator holds, not
    the dense pattern-by-concept matrix (9 bytes per pattern and concept), so a budget
    far below the dense size but above the real need does not warn."""
    import scipy.sparse as sp

    n, c = 20_000, 5_000
    rng = np.random.default_rng(3)
    y = sp.csr_matrix((np.ones(n, bool), (np.arange(n), rng.integers(0, c, n))), (n, c))
    a = rng.standard_normal((n, 2)).astype(np.float32)
    m = len(np.unique(y.indices))
    assert 9 * m * c > 64 * 2**20  # the old, dense floor was above the budget
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        res = invert.explain(a, y, length=1, beam_size=2, memory_budget="64MiB")
    assert len(res) == 2
    with pytest.warns(RuntimeWarning, match=r"memory_budget 1\.0 MiB is below the floor"):
        invert.explain(a, y, length=1, beam_size=2, memory_budget="1MiB")


def test_a_row_major_layer_larger_than_memory_warns(tmp_path):
    """Each chunk of units reads a row-major file whole: said, when it cannot be cached."""
    from invert.engine.inputs import NpyColumns

    a = np.zeros((1000, 8), np.float32)
    np.save(tmp_path / "c.npy", a)
    np.save(tmp_path / "f.npy", np.asfortranarray(a))
    with pytest.warns(RuntimeWarning, match=r"row-major \(C order\).*column-major"):
        NpyColumns.open(tmp_path / "c.npy", memory_bytes=10_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        NpyColumns.open(tmp_path / "f.npy", memory_bytes=10_000)  # column-major: fine
        NpyColumns.open(tmp_path / "c.npy", memory_bytes=10**9)  # fits: fine
