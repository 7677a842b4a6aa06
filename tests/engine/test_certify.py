"""Certified explanations (engine.certify) against brute force on tiny inputs.

Every case is a seeded random data set: N samples with C concepts whose label rows collapse
into M patterns, K units with ties in their activations. The references enumerate every
union of patterns (ceiling) or every formula of the grammar (length <= 2, <= 3) as masks
over the samples (built with :mod:`invert.engine.formula`), scored with mid-ranks and checked
against ``sklearn.metrics.roc_auc_score``.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

from invert._validate import InvalidParameterError
from invert.engine import certify as certify_module
from invert.engine.certify import (
    _ceiling_keys,
    _scorer,
    branch_and_bound_length3,
    ceiling,
    optimal_length2,
    prepare_vocabulary,
    support_limits,
)
from invert.engine.formula import And, Literal, Or, formula_masks
from invert.engine.search import explain
from invert.engine.stats import pattern_ranksums

try:  # the pattern helpers move to engine.patterns in the redesign
    from invert.engine.patterns import _collapse
except ImportError:  # pragma: no cover - before the split
    from invert.engine.search import _collapse


# ----------------------------------------------------------------------------- cases


def _case(seed: int, max_concepts: int = 4):
    """(acts (N, K), labels (N, C), min_fraction, max_fraction, mode) of one random case."""
    rng = np.random.default_rng(seed)
    c = int(rng.integers(1, max_concepts + 1))
    base = rng.random((int(rng.integers(2, 9)), c)) < rng.uniform(0.2, 0.7)
    n = int(rng.integers(base.shape[0] + 2, 50))
    rows = np.concatenate([np.arange(base.shape[0]), rng.integers(0, base.shape[0],
                                                                  n - base.shape[0])])
    y = base[rng.permutation(rows)]
    k = 3
    acts = rng.integers(0, 5, (n, k)).astype(np.float64)
    acts += y[:, 0][:, None] * rng.random(k)  # some signal, many ties
    lo, hi = sorted(rng.random(2).tolist())
    if rng.random() < 0.4:
        lo = 0.0
    if rng.random() < 0.3:
        hi = 1.0
    mode = "positive" if rng.random() < 0.5 else "negative"
    return acts, y, lo, hi, mode


def _patterns(acts, y):
    pats = _collapse(y)
    m = len(pats.counts)
    r2, _ = pattern_ranksums(acts, pats.inverse, m)
    return r2, pats.counts.astype(np.float64), np.asarray(pats.matrix, dtype=bool)


def _scores(masks: np.ndarray, acts: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """AUROC (F, K) of sample masks (F, N) from mid-ranks; NaN outside the limits."""
    n = masks.shape[1]
    lo_n, hi_n = support_limits(n, lo, hi)
    ranks = np.column_stack([rankdata(acts[:, k]) for k in range(acts.shape[1])])
    n1 = masks.sum(1).astype(np.float64)[:, None]
    with np.errstate(all="ignore"):
        auc = (masks.astype(np.float64) @ ranks - n1 * (n1 + 1) / 2) / (n1 * (n - n1))
    auc[((n1 < lo_n) | (n1 > hi_n))[:, 0]] = np.nan
    for f in range(0, len(masks), max(1, len(masks) // 7)):  # spot checks
        for k in range(acts.shape[1]):
            if np.isfinite(auc[f, k]):
                assert auc[f, k] == pytest.approx(roc_auc_score(masks[f], acts[:, k]),
                                                  abs=1e-12)
    return auc


def _defined(y: np.ndarray) -> list[int]:
    s = y.sum(0)
    return [j for j in range(y.shape[1]) if 0 < s[j] < y.shape[0]]


def _literals(y: np.ndarray) -> list[tuple[int, Literal]]:
    """(code, literal) of the defined concepts, in code order (c0.., then ~c0..)."""
    c = y.shape[1]
    ok = _defined(y)
    return ([(j, Literal(j)) for j in ok] + [(c + j, Literal(j, True)) for j in ok])


def _formulas_length2(y: np.ndarray):
    """Every formula of at most two literals, in the documented tie order, with its codes:
    (formula, (l1, l2), op)."""
    lits = _literals(y)
    out = [(f, (code, -1), 0) for code, f in lits]
    for (c1, f1), (c2, f2) in itertools.combinations(lits, 2):
        out.append((And(f1, f2), (c1, c2), 0))
        out.append((Or(f1, f2), (c1, c2), 1))
    return out


def _formulas_length3(y: np.ndarray):
    """Every formula ``(l1 op l2) op l3`` and the shorter ones (any literal order)."""
    lits = [f for _, f in _literals(y)]
    out = list(lits)
    for f1, f2 in itertools.product(lits, repeat=2):
        for g in (And(f1, f2), Or(f1, f2)):
            out.append(g)
            for f3 in lits:
                out.extend([And(g, f3), Or(g, f3)])
    return out


def _best(auc: np.ndarray, mode: str) -> np.ndarray:
    with np.errstate(all="ignore"):
        if np.all(np.isnan(auc), axis=0).any():
            res = np.full(auc.shape[1], np.nan)
            ok = ~np.all(np.isnan(auc), axis=0)
            res[ok] = (np.nanmax if mode == "positive" else np.nanmin)(auc[:, ok], axis=0)
            return res
        return np.nanmax(auc, axis=0) if mode == "positive" else np.nanmin(auc, axis=0)


def _at_least(a, b, mode: str) -> np.ndarray:
    """``a`` is at least as good as ``b`` (NaN b: nothing to beat)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    good = a >= b if mode == "positive" else a <= b
    return good | np.isnan(b)


SEEDS = range(40)


# ----------------------------------------------------------------------------- ceiling


@pytest.mark.parametrize("seed", SEEDS)
def test_ceiling_bounds_every_union_and_is_exact_when_integral(seed):
    acts, y, lo, hi, mode = _case(seed)
    r2, counts, pmat = _patterns(acts, y)
    m, n = len(counts), acts.shape[0]
    sc = _scorer(n, lo, hi, mode, "auroc")
    keys, exact = _ceiling_keys(r2, counts, sc)
    unions = np.array(list(itertools.product([False, True], repeat=m)), dtype=bool)
    ukeys = sc.key(unions.astype(np.float64) @ r2, (unions @ counts)[:, None])
    best = ukeys.max(axis=0)
    assert np.all(keys >= best)
    assert np.all(best[exact] == keys[exact])
    got = ceiling(r2, counts, n, min_fraction=lo, max_fraction=hi, mode=mode)
    auc = _scores(unions[:, _collapse(y).inverse], acts, lo, hi)
    assert np.all(_at_least(got, _best(auc, mode), mode))


@pytest.mark.parametrize("seed", SEEDS[:20])
def test_ceiling_bounds_every_formula_and_the_beam(seed):
    acts, y, lo, hi, mode = _case(seed)
    r2, counts, _ = _patterns(acts, y)
    got = ceiling(r2, counts, acts.shape[0], min_fraction=lo, max_fraction=hi, mode=mode)
    forms = _formulas_length3(y)
    if forms:
        auc = _scores(formula_masks(forms, y), acts, lo, hi)
        assert np.all(_at_least(got, _best(auc, mode), mode))
    res = explain(acts, y, length=3, beam_size=3, min_fraction=lo, max_fraction=hi,
                  mode=mode)
    for k, unit in enumerate(res.units):
        for item in unit:
            assert _at_least(got[k], item.auroc, mode)


@pytest.mark.parametrize("seed", SEEDS[:15])
@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_ceiling_point_biserial(seed, mode):
    acts, y, lo, hi, _ = _case(seed)
    pats = _collapse(y)
    m = len(pats.counts)
    centred = acts - acts.mean(0)
    sums = np.stack([np.bincount(pats.inverse, weights=centred[:, k], minlength=m)
                     for k in range(acts.shape[1])], axis=1)
    sd = np.sqrt((centred ** 2).mean(0))
    counts = pats.counts.astype(np.float64)
    got = ceiling(sums, counts, acts.shape[0], min_fraction=lo, max_fraction=hi, mode=mode,
                  metric="point_biserial", sd=sd)
    unions = np.array(list(itertools.product([False, True], repeat=m)), dtype=bool)
    n1 = (unions @ counts)[:, None]
    n = acts.shape[0]
    lo_n, hi_n = support_limits(n, lo, hi)
    with np.errstate(all="ignore"):
        r = (unions.astype(np.float64) @ sums) / (sd * np.sqrt(n1 * (n - n1)))
    r[((n1 < lo_n) | (n1 > hi_n))[:, 0]] = np.nan
    if np.all(np.isnan(r)):  # no union has an allowed support
        return
    best = np.nanmax(r, 0) if mode == "positive" else np.nanmin(r, 0)
    if mode == "positive":
        assert np.all(got >= best - 1e-12)
    else:
        assert np.all(got <= best + 1e-12)


def test_ceiling_negative_is_the_mirror():
    acts, y, lo, hi, _ = _case(3)
    r2, counts, _ = _patterns(acts, y)
    n = acts.shape[0]
    neg = ceiling(r2, counts, n, min_fraction=lo, max_fraction=hi, mode="negative")
    mirrored = 2.0 * (n + 1) * counts[:, None] - r2  # ranks reversed
    pos = ceiling(mirrored, counts, n, min_fraction=lo, max_fraction=hi)
    np.testing.assert_allclose(neg, 1.0 - pos, atol=1e-12)



def _full_sort_keys(monkeypatch, r2, counts, sc):
    """The ceiling keys of the full sort (the shortcut from the best patterns turned off)."""
    with monkeypatch.context() as mp:
        mp.setattr(certify_module._BestSetup, "of", staticmethod(lambda counts, sc: None))
        return _ceiling_keys(r2, counts, sc)


def _settled(r2, counts, sc) -> np.ndarray:
    """Which units the shortcut settles (without the full sort)."""
    best = certify_module._BestSetup.of(counts, sc)
    if best is None:
        return np.zeros(r2.shape[1], dtype=bool)
    u = np.ascontiguousarray(certify_module._centred(r2, counts, sc).T)
    return certify_module._from_best(u, counts, sc, best)[0]


def _large_case(kind: str, seed: int):
    """(r2, counts, N) of a layer with many patterns: ``multilabel`` (nearly one pattern per
    sample), ``tokens`` (a Zipf word and a tag per row: patterns of very unequal counts) or
    ``ties`` (few activation values)."""
    rng = np.random.default_rng(seed)
    n = 6000
    if kind == "tokens":
        word = np.minimum(rng.zipf(1.3, n), 2000)
        y = np.zeros((n, 2030), dtype=bool)
        y[np.arange(n), word] = True
        y[np.arange(n), 2001 + rng.integers(0, 20, n)] = True
    else:
        y = rng.random((n, 300)) < 0.02
    acts = rng.standard_normal((n, 6))
    acts[:, :3] += 2.0 * y[:, :3]
    if kind == "ties":
        acts = np.round(acts * 2)
    r2, counts, _ = _patterns(acts, y)
    return r2, counts, n


@pytest.mark.parametrize("kind", ["multilabel", "tokens", "ties"])
@pytest.mark.parametrize("mode", ["positive", "negative"])
@pytest.mark.parametrize("limits", [(0.002, 0.5), (0.0, 1.0), (0.01, 0.3)])
def test_ceiling_from_best_patterns_is_the_full_sort(monkeypatch, kind, mode, limits):
    """The keys and flags from the best patterns are bitwise those of the full sort, and
    the shortcut settles units (sorting the default 512 best patterns of the multi-label
    layer's ~6,000, and 128 of the others' ~1,700)."""
    monkeypatch.setattr(certify_module, "_BEST_MIN_RATIO", 4)
    if kind != "multilabel":
        monkeypatch.setattr(certify_module, "_BEST_SORTED", 128)
    r2, counts, n = _large_case(kind, 7)
    sc = _scorer(n, *limits, mode, "auroc")
    keys, exact = _ceiling_keys(r2, counts, sc)
    ref_keys, ref_exact = _full_sort_keys(monkeypatch, r2, counts, sc)
    assert keys.tobytes() == ref_keys.tobytes()
    np.testing.assert_array_equal(exact, ref_exact)
    assert _settled(r2, counts, sc).any()


@pytest.mark.parametrize("seed", range(60))
def test_ceiling_from_few_best_patterns_is_the_full_sort(monkeypatch, seed):
    """With 3 sorted patterns and 4 tail buckets (ties, runs of equal means, prefixes that
    end early) the shortcut still gives the full sort's keys bitwise."""
    monkeypatch.setattr(certify_module, "_BEST_SORTED", 3)
    monkeypatch.setattr(certify_module, "_BEST_MIN_RATIO", 4)
    monkeypatch.setattr(certify_module, "_BEST_EXTRA", 1)
    monkeypatch.setattr(certify_module, "_TAIL_BUCKETS", 4)
    rng = np.random.default_rng(seed)
    n, c = int(rng.integers(40, 300)), int(rng.integers(4, 9))
    y = rng.random((n, c)) < rng.uniform(0.1, 0.6)
    acts = rng.integers(0, int(rng.integers(2, 30)), (n, 6)).astype(np.float64)
    acts += y[:, :1] * rng.random(6) * 3
    r2, counts, _ = _patterns(acts, y)
    lo, hi = sorted(rng.random(2).tolist())
    for mode in ("positive", "negative"):
        sc = _scorer(n, 0.0 if seed % 2 else lo, 1.0 if seed % 3 == 0 else hi, mode, "auroc")
        keys, exact = _ceiling_keys(r2, counts, sc)
        ref_keys, ref_exact = _full_sort_keys(monkeypatch, r2, counts, sc)
        assert keys.tobytes() == ref_keys.tobytes()
        np.testing.assert_array_equal(exact, ref_exact)


def test_ceiling_cap_when_the_top_samples_are_patterns(monkeypatch):
    """Every sample its own pattern: the top samples are a union, the ceiling is AUROC 1
    (0 with mode negative), found from the best patterns, and equal to the best union's."""
    monkeypatch.setattr(certify_module, "_BEST_MIN_RATIO", 4)
    n = 3000
    y = np.zeros((n, 12), dtype=bool)
    y[np.arange(n), :] = (np.arange(n)[:, None] >> np.arange(12)) & 1
    acts = np.random.default_rng(0).standard_normal((n, 4))
    r2, counts, _ = _patterns(acts, y)
    assert counts.max() == 1
    got = ceiling(r2, counts, n, min_fraction=0.01)
    assert np.all(got == 1.0)
    assert np.all(ceiling(r2, counts, n, min_fraction=0.01, mode="negative") == 0.0)
    assert _settled(r2, counts, _scorer(n, 0.01, 0.5, "positive", "auroc")).all()
    top = np.argsort(-acts, axis=0)[:30]  # the best union of 30 samples
    for k in range(4):
        mask = np.zeros(n, dtype=bool)
        mask[top[:, k]] = True
        assert roc_auc_score(mask, acts[:, k]) == 1.0


# ----------------------------------------------------------------------------- length 2


def _brute_top(y, acts, lo, hi, mode, beam):
    """Per unit, the ``beam`` best distinct masks of <= 2 literals: (codes, op, auroc)."""
    forms = _formulas_length2(y)
    if not forms:
        return [[] for _ in range(acts.shape[1])]
    masks = formula_masks([f for f, _, _ in forms], y)
    auc = _scores(masks, acts, lo, hi)
    first = {}
    for i, mk in enumerate(masks):
        first.setdefault(mk.tobytes(), i)
    keep = sorted(first.values())
    out = []
    for k in range(acts.shape[1]):
        rows = [i for i in keep if np.isfinite(auc[i, k])]
        rows.sort(key=lambda i: -auc[i, k] if mode == "positive" else auc[i, k])  # stable
        out.append([(forms[i][1], forms[i][2], auc[i, k]) for i in rows[:beam]])
    return out


def _got_top(res, k):
    out = []
    for b in np.flatnonzero(res.valid[k]):
        codes = (int(res.lits[k, b, 0]), int(res.lits[k, b, 1]))
        out.append((codes, int(res.ops[k, b, 1]), float(res.value[k, b])))
    return out


@pytest.mark.parametrize("seed", SEEDS)
def test_optimal_length2_equals_brute_force(seed):
    acts, y, lo, hi, mode = _case(seed)
    r2, counts, pmat = _patterns(acts, y)
    beam = 1 + seed % 5
    matrix = [pmat, sp.csr_matrix(pmat), prepare_vocabulary(pmat, counts, acts.shape[0])][
        seed % 3]
    res = optimal_length2(r2, counts, matrix, acts.shape[0], beam_size=beam,
                          min_fraction=lo, max_fraction=hi, mode=mode)
    want = _brute_top(y, acts, lo, hi, mode, beam)
    for k in range(acts.shape[1]):
        assert _got_top(res, k) == want[k], (k, mode, beam)
    masks = res.masks(prepare_vocabulary(pmat, counts, acts.shape[0]))
    np.testing.assert_array_equal(masks.sum(2) > 0, res.valid & (res.n1 > 0))
    np.testing.assert_array_equal((masks * counts).sum(2), np.where(res.valid, res.n1, 0))
    np.testing.assert_array_equal((masks * r2.T[:, None, :]).sum(2),
                                  np.where(res.valid, res.s2, 0))


@pytest.mark.parametrize("seed", SEEDS[:20])
def test_optimal_length2_with_incumbent_and_larger_vocabulary(seed):
    acts, y, lo, hi, mode = _case(1000 + seed, max_concepts=7)
    r2, counts, pmat = _patterns(acts, y)
    n = acts.shape[0]
    beam = 3
    plain = optimal_length2(r2, counts, pmat, n, beam_size=beam, min_fraction=lo,
                            max_fraction=hi, mode=mode)
    want = _brute_top(y, acts, lo, hi, mode, beam)
    res = explain(acts, y, length=2, beam_size=beam, min_fraction=lo, max_fraction=hi,
                  mode=mode)
    # the beam's last answer (when it holds beam_size of them) is a valid incumbent
    inc = np.array([u[beam - 1].auroc if len(u) == beam else np.nan for u in res.units])
    helped = optimal_length2(r2, counts, pmat, n, beam_size=beam, min_fraction=lo,
                             max_fraction=hi, mode=mode, incumbent=inc)
    for k, unit in enumerate(res.units):
        assert _got_top(plain, k) == want[k] == _got_top(helped, k)
        # the i-th proven best is at least the beam's i-th
        for i, item in enumerate(unit):
            assert _at_least(plain.value[k, i], item.auroc, mode)


def test_optimal_length2_finds_what_the_beam_misses():
    """A unit made of ``a | b`` (disjoint) and a concept ``d`` covering 80% of it: ``d`` is
    the best literal, so the beam with B = 1 extends only ``d``; the optimum is ``a | b``."""
    rng = np.random.default_rng(7)
    n = 1000
    grp = rng.integers(0, 10, n)
    a, b = grp == 0, grp == 1
    d = (a | b) & (rng.random(n) < 0.8)
    y = np.column_stack([a, b, d, rng.random((n, 3)) < 0.2])
    acts = ((a | b) + 0.3 * rng.standard_normal(n))[:, None]
    r2, counts, pmat = _patterns(acts, y)
    opt = optimal_length2(r2, counts, pmat, n, beam_size=1)
    beam = explain(acts, y, length=2, beam_size=1)[0][0]
    want = _brute_top(y, acts, 0.0, 0.5, "positive", 1)[0][0]
    assert _got_top(opt, 0)[0] == want == ((0, 1), 1, want[2])
    assert str(beam.formula) == "2 | 1"
    assert opt.best[0] > beam.auroc + 0.005


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_optimal_length2_point_biserial(mode):
    for seed in range(12):
        acts, y, lo, hi, _ = _case(seed)
        pats = _collapse(y)
        m = len(pats.counts)
        centred = acts - acts.mean(0)
        sums = np.stack([np.bincount(pats.inverse, weights=centred[:, k], minlength=m)
                         for k in range(acts.shape[1])], axis=1)
        sd = np.sqrt((centred ** 2).mean(0))
        res = optimal_length2(sums, pats.counts, np.asarray(pats.matrix), acts.shape[0],
                              beam_size=2, min_fraction=lo, max_fraction=hi, mode=mode,
                              metric="point_biserial", sd=sd)
        forms = [f for f, _, _ in _formulas_length2(y)]
        if not forms:
            continue
        masks = formula_masks(forms, y).astype(np.float64)
        n1 = masks.sum(1)[:, None]
        n = acts.shape[0]
        lo_n, hi_n = support_limits(n, lo, hi)
        with np.errstate(all="ignore"):
            r = (masks @ centred) / (sd * np.sqrt(n1 * (n - n1)))
        r[((n1 < lo_n) | (n1 > hi_n))[:, 0]] = np.nan
        for k in range(acts.shape[1]):
            if np.all(np.isnan(r[:, k])):
                assert not res.valid[k].any()
                continue
            best = np.nanmax(r[:, k]) if mode == "positive" else np.nanmin(r[:, k])
            assert res.best[k] == pytest.approx(best, abs=1e-12)


# ----------------------------------------------------------------------------- length 3


@pytest.mark.parametrize("seed", SEEDS)
def test_branch_and_bound_equals_brute_force(seed):
    acts, y, lo, hi, mode = _case(seed)
    r2, counts, pmat = _patterns(acts, y)
    n = acts.shape[0]
    forms = _formulas_length3(y)
    auc = (_scores(formula_masks(forms, y), acts, lo, hi) if forms
           else np.full((1, acts.shape[1]), np.nan))
    best = _best(auc, mode)
    res = explain(acts, y, length=3, beam_size=2, min_fraction=lo, max_fraction=hi,
                  mode=mode)
    inc = np.array([u[0].auroc if len(u) else np.nan for u in res.units])
    if seed % 3 == 0:  # no incumbent, or a weak one
        inc = np.full_like(inc, np.nan)
    cert = branch_and_bound_length3(r2, counts, pmat, n, inc, min_fraction=lo,
                                    max_fraction=hi, mode=mode, time_budget=30.0)
    assert cert.certified.all()
    np.testing.assert_array_equal(cert.value, best)
    np.testing.assert_array_equal(cert.bound, best)
    assert np.all(_at_least(cert.value, inc, mode))
    for k in np.flatnonzero(cert.length):
        ln = cert.length[k]
        lits = [Literal(int(x) % y.shape[1], bool(x >= y.shape[1])) for x in cert.lits[k, :ln]]
        f = lits[0]
        for lit, op in zip(lits[1:], cert.ops[k, 1:ln], strict=True):
            f = Or(f, lit) if op else And(f, lit)
        mask = f.evaluate(y)
        assert roc_auc_score(mask, acts[:, k]) == pytest.approx(cert.value[k], abs=1e-12)
        assert mask.sum() == cert.n1[k]


@pytest.mark.parametrize("seed", SEEDS[:20])
def test_literal_node_bounds_cover_every_union_inside_or_around(seed):
    """The B&B's per-literal bounds (unions inside the literal / containing it) are at least
    the brute-force best such union, by the fast (run and range-tree) and the dense path."""
    from invert.engine.certify import _literal_nodes, _literal_nodes_dense, _vocabulary

    acts, y, lo, hi, mode = _case(2000 + seed)
    pats = _collapse(y)
    counts = pats.counts.astype(np.float64)
    pmat = np.asarray(pats.matrix, dtype=bool)
    n, m = acts.shape[0], len(counts)
    metric = "auroc" if seed % 3 else "point_biserial"
    if metric == "auroc":
        v = pattern_ranksums(acts[:, :1], pats.inverse, m)[0][:, 0]
        sd = None
    else:
        cen = acts[:, 0] - acts[:, 0].mean()
        v, sd = np.bincount(pats.inverse, weights=cen, minlength=m), float(cen.std())
    sc = _scorer(n, lo, hi, mode, metric)
    voc = _vocabulary(pmat, counts, n)
    codes = np.flatnonzero(np.concatenate([voc.defined, voc.defined]))
    unions = np.array(list(itertools.product([False, True], repeat=m)), dtype=bool)
    keys = sc.key(unions.astype(np.float64) @ v, unions @ counts, sd)
    c = pmat.shape[1]
    for thr in (-np.inf, float(np.median(keys[np.isfinite(keys)])) if np.isfinite(keys).any()
                else -np.inf):
        fast = _literal_nodes(voc, v, counts, sc, sd, thr, codes)
        dense = _literal_nodes_dense(voc, v, counts, sc, sd, thr, codes)
        for i, code in enumerate(codes):
            x = ~pmat[:, code - c] if code >= c else pmat[:, code]
            inside = keys[~(unions & ~x).any(1)].max(initial=-np.inf)
            around = keys[~(x & ~unions).any(1)].max(initial=-np.inf)
            tol = 0.0 if metric == "auroc" else 1e-12
            assert fast[0, i] >= inside - tol and dense[0, i] >= inside - tol
            assert fast[1, i] >= around - tol and dense[1, i] >= around - tol


@pytest.mark.parametrize("seed", SEEDS[:12])
def test_branch_and_bound_point_biserial(seed):
    acts, y, lo, hi, mode = _case(3000 + seed)
    pats = _collapse(y)
    m, n = len(pats.counts), acts.shape[0]
    centred = acts - acts.mean(0)
    sums = np.stack([np.bincount(pats.inverse, weights=centred[:, k], minlength=m)
                     for k in range(acts.shape[1])], axis=1)
    sd = np.sqrt((centred ** 2).mean(0))
    forms = _formulas_length3(y)
    if not forms:
        return
    masks = formula_masks(forms, y).astype(np.float64)
    n1 = masks.sum(1)[:, None]
    lo_n, hi_n = support_limits(n, lo, hi)
    with np.errstate(all="ignore"):
        r = (masks @ centred) / (sd * np.sqrt(n1 * (n - n1)))
    r[((n1 < lo_n) | (n1 > hi_n))[:, 0]] = np.nan
    best = _best(r, mode)
    cert = branch_and_bound_length3(sums, pats.counts, np.asarray(pats.matrix), n,
                                    np.full(3, np.nan), min_fraction=lo, max_fraction=hi,
                                    mode=mode, metric="point_biserial", sd=sd,
                                    time_budget=30.0)
    assert cert.certified.all()
    np.testing.assert_allclose(cert.value, best, atol=1e-12)
    sign = 1.0 if mode == "positive" else -1.0
    ok = np.isfinite(best)
    assert np.all(sign * cert.bound[ok] >= sign * best[ok] - 1e-12)
    assert np.all(np.abs(cert.bound[ok] - cert.value[ok]) <= 1e-8)


def test_branch_and_bound_budget_gives_a_valid_bound():
    """With almost no time the units not reached keep the ceiling as their bound."""
    acts, y, lo, hi, mode = _case(5, max_concepts=6)
    r2, counts, pmat = _patterns(acts, y)
    n = acts.shape[0]
    cert = branch_and_bound_length3(r2, counts, pmat, n, np.full(3, np.nan),
                                    min_fraction=lo, max_fraction=hi, mode=mode,
                                    time_budget=1e-9)
    top = ceiling(r2, counts, n, min_fraction=lo, max_fraction=hi, mode=mode)
    for k in range(3):
        if not cert.certified[k]:
            assert cert.stage[k] in (0, 4)
            if cert.stage[k] == 0:
                assert cert.bound[k] == top[k]
    forms = _formulas_length3(y)
    best = _best(_scores(formula_masks(forms, y), acts, lo, hi), mode)
    assert np.all(_at_least(cert.bound, best, mode) | np.isnan(best))


def test_planted_units_are_certified_on_a_small_synthetic_layer():
    from invert.engine.synthetic import make_layer

    layer = make_layer(n_leaves=60, samples_per_leaf=20, n_hypernyms=25, n_units=8,
                       n_planted=4, seed=2)
    y = layer.concepts.matrix
    r2, counts, pmat = _patterns(layer.activations, y.toarray())
    n = layer.activations.shape[0]
    res = explain(layer.activations, layer.concepts, length=3, beam_size=3,
                  min_fraction=0.01)
    inc = np.array([u[0].auroc for u in res.units])
    cert = branch_and_bound_length3(r2, counts, sp.csr_matrix(pmat), n, inc,
                                    min_fraction=0.01, time_budget=60.0)
    assert cert.certified[:4].all()
    assert np.all(cert.value >= inc)
    opt = optimal_length2(r2, counts, pmat, n, beam_size=3, min_fraction=0.01)
    res2 = explain(layer.activations, layer.concepts, length=2, beam_size=3,
                   min_fraction=0.01)
    assert np.all(opt.best >= np.array([u[0].auroc for u in res2.units]))


# ----------------------------------------------------------------------------- checks


def test_bad_parameters_name_the_parameter():
    acts, y, lo, hi, mode = _case(1)
    r2, counts, pmat = _patterns(acts, y)
    n = acts.shape[0]
    with pytest.raises(InvalidParameterError, match="time_budget"):
        branch_and_bound_length3(r2, counts, pmat, n, np.zeros(3), time_budget=0)
    with pytest.raises(InvalidParameterError, match="mode"):
        ceiling(r2, counts, n, mode="up")
    with pytest.raises(InvalidParameterError, match="metric"):
        ceiling(r2, counts, n, metric="iou")
    with pytest.raises(InvalidParameterError, match="sd"):
        ceiling(r2, counts, n, metric="point_biserial")
    with pytest.raises(InvalidParameterError, match="beam_size"):
        optimal_length2(r2, counts, pmat, n, beam_size=0)
    with pytest.raises(InvalidParameterError, match="matrix"):
        optimal_length2(r2, counts, pmat[:-1], n)
    with pytest.raises(InvalidParameterError, match="n_samples"):
        ceiling(r2, counts, n + 1)
    with pytest.raises(InvalidParameterError, match="min_fraction"):
        ceiling(r2, counts, n, min_fraction=0.6, max_fraction=0.5)


def test_support_limits_match_the_beam():
    try:
        from invert.engine.params import _count_limits
    except ImportError:  # pragma: no cover - before the split
        from invert.engine.search import _count_limits

    for n in (1, 2, 7, 50, 999):
        for lo, hi in ((0.0, 0.5), (0.002, 0.5), (0.1, 0.1), (0.3, 1.0), (0.0, 1.0)):
            a, b = _count_limits(n, lo, hi)
            want = (max(a, 1), min(b, n - 1))
            got = support_limits(n, lo, hi)
            if want[0] > want[1]:
                assert got[0] > got[1]
            else:
                assert got == want
