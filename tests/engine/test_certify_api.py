"""Certificates through the public API: ``ceiling`` on every result, ``optimal=True`` at
lengths 1-3 against brute force, exports, parameter errors, and the torch code path.

The references enumerate every formula as a mask over the samples (all binary trees of
literals, which at three literals are the beam's left-deep ones up to commutativity) and
score it with ``sklearn.metrics.roc_auc_score``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import invert
from invert._validate import InvalidParameterError
from invert.engine import search as engine_search
from invert.engine.search import explain
from invert.engine.synthetic import make_layer, make_multilabel_layer

# ----------------------------------------------------------------------------- references


def _case(seed: int):
    """(acts (N, 3), labels (N, C), min_fraction, max_fraction, mode): few label patterns,
    many ties, some signal."""
    rng = np.random.default_rng(1000 + seed)
    c = int(rng.integers(2, 6))
    base = rng.random((int(rng.integers(3, 9)), c)) < rng.uniform(0.2, 0.7)
    n = int(rng.integers(20, 70))
    y = base[rng.integers(0, base.shape[0], n)]
    acts = rng.integers(0, 6, (n, 3)).astype(np.float64)
    acts += (y[:, 0] | y[:, -1])[:, None] * rng.random(3)
    lo, hi = (0.0, 0.5) if seed % 3 == 0 else sorted(rng.uniform(0.0, 0.8, 2).tolist())
    mode = "negative" if seed % 4 == 1 else "positive"
    return acts, y, lo, hi, mode


def _formula_masks(y: np.ndarray, length: int) -> list[np.ndarray]:
    """Distinct masks of every formula of at most ``length`` literals."""
    c = y.shape[1]
    lits = [y[:, j] for j in range(c)] + [~y[:, j] for j in range(c)]
    by_size = {1: {m.tobytes(): m for m in lits}}
    for size in range(2, length + 1):
        cur: dict[bytes, np.ndarray] = {}
        for left in range(1, size):
            for a in by_size[left].values():
                for b in by_size[size - left].values():
                    for m in (a & b, a | b):
                        cur.setdefault(m.tobytes(), m)
        by_size[size] = cur
    seen: dict[bytes, np.ndarray] = {}
    for d in by_size.values():
        for k, m in d.items():
            seen.setdefault(k, m)
    return list(seen.values())


def _brute_scores(y, acts, length, lo, hi, mode) -> np.ndarray:
    """Signed AUROC (F, K) of every distinct formula mask within the limits (higher is
    better); -inf outside the limits."""
    masks = np.array(_formula_masks(y, length))
    n = y.shape[0]
    s = masks.sum(1)
    ok = (s > 0) & (s < n) & (s / n >= lo) & (s / n <= hi)
    out = np.full((len(masks), acts.shape[1]), -np.inf)
    for f in np.flatnonzero(ok):
        for k in range(acts.shape[1]):
            auc = roc_auc_score(masks[f], acts[:, k])
            out[f, k] = auc if mode == "positive" else -auc
    return out


def _signed(x, mode):
    return np.asarray(x, dtype=np.float64) * (1.0 if mode == "positive" else -1.0)


def _check_unit_list(u, y, acts_k, lo, hi, mode):
    """Returned formulas: AUROC as sklearn, within the limits, distinct, best first."""
    n = y.shape[0]
    masks = [e.evaluate(y) for e in u]
    assert len({m.tobytes() for m in masks}) == len(masks)
    for e, m in zip(u, masks, strict=True):
        assert e.auroc == pytest.approx(roc_auc_score(m, acts_k), abs=1e-12)
        assert lo <= m.sum() / n <= hi and e.support == m.sum()
    signed = _signed([e.auroc for e in u], mode)
    assert np.all(np.diff(signed) <= 1e-12)


SEEDS = range(24)


# ----------------------------------------------------------------------------- ceiling


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("length", [1, 3])
def test_ceiling_bounds_every_returned_formula_and_every_formula(seed, length):
    acts, y, lo, hi, mode = _case(seed)
    res = invert.explain(acts, y, length=length, beam_size=3, min_fraction=lo,
                         max_fraction=hi, mode=mode)
    ceil = _signed(res.ceiling, mode)
    best = _brute_scores(y, acts, 3, lo, hi, mode).max(axis=0)
    for k, u in enumerate(res):
        assert u.ceiling is not None and u.certified is None and u.bound is None
        if np.isinf(best[k]):  # no formula within the limits
            continue
        assert ceil[k] >= best[k] - 1e-12
        for e in u:
            assert ceil[k] >= _signed(e.auroc, mode)


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_ceiling_point_biserial_and_dedupe_false(mode):
    for seed in range(8):
        acts, y, lo, hi, _ = _case(seed)
        for kw in ({"metric": "point_biserial"}, {"dedupe": False}):
            res = explain(acts, y, length=2, beam_size=3, min_fraction=lo, max_fraction=hi,
                          mode=mode, **kw)
            ceil = _signed(res.ceiling, mode)
            for k, u in enumerate(res):
                for e in u:
                    score = e.extras.get("point_biserial", e.auroc)
                    assert ceil[k] >= _signed(score, mode) - 1e-12


def test_constant_unit_has_no_ceiling_and_a_reason():
    rng = np.random.default_rng(3)
    y = rng.random((200, 5)) < 0.3
    a = np.c_[y[:, 0] + rng.standard_normal(200), np.full(200, 2.0)]
    for kw in ({}, {"optimal": True, "length": 2}, {"optimal": True, "length": 3},
               {"metric": "point_biserial", "optimal": True}):
        res = invert.explain(a, y, beam_size=2, **kw)
        assert res[1].reason and not res[1]
        assert np.isnan(res[1].ceiling) and np.isnan(res.ceiling[1])
        best = res[0][0]
        assert res[0].ceiling >= best.extras.get("point_biserial", best.auroc)
        if kw.get("optimal"):
            assert res[1].certified is False and np.isnan(res[1].bound)


def test_planted_layer_ceilings():
    layer = make_layer(n_leaves=60, samples_per_leaf=20, n_hypernyms=25, n_units=10,
                       n_planted=5, seed=4)
    res = invert.explain(layer.activations, layer.concepts, min_fraction=0.01)
    best = np.array([u[0].auroc for u in res])
    assert np.all(res.ceiling >= best)
    assert np.all(res.ceiling <= 1.0)


# ----------------------------------------------------------------------------- optimal


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("length", [1, 2])
def test_optimal_short_formulas_equal_brute_force(seed, length):
    acts, y, lo, hi, mode = _case(seed)
    beam = 1 + seed % 4
    res = invert.explain(acts, y, length=length, beam_size=beam, min_fraction=lo,
                         max_fraction=hi, mode=mode, optimal=True)
    assert res.params["optimal"] is True
    scores = _brute_scores(y, acts, length, lo, hi, mode)
    for k, u in enumerate(res):
        _check_unit_list(u, y, acts[:, k], lo, hi, mode)
        want = np.sort(scores[:, k][np.isfinite(scores[:, k])])[::-1][:beam]
        np.testing.assert_allclose(_signed([e.auroc for e in u], mode), want, atol=1e-12)
        assert all(e.length <= length for e in u)
        if len(u):
            assert u.certified is True and u.bound == u[0].auroc
        else:
            assert u.certified is False


@pytest.mark.parametrize("seed", SEEDS)
def test_optimal_length3_is_certified_and_equals_brute_force(seed):
    acts, y, lo, hi, mode = _case(seed)
    res = invert.explain(acts, y, length=3, beam_size=1 + seed % 3, min_fraction=lo,
                         max_fraction=hi, mode=mode, optimal=True, time_budget=120)
    beam = invert.explain(acts, y, length=3, beam_size=1 + seed % 3, min_fraction=lo,
                          max_fraction=hi, mode=mode)
    best = _brute_scores(y, acts, 3, lo, hi, mode).max(axis=0)
    for k, u in enumerate(res):
        _check_unit_list(u, y, acts[:, k], lo, hi, mode)
        assert len(beam[k]) <= len(u) <= len(beam[k]) + 1
        if not len(u):
            assert u.certified is False and np.isinf(best[k])
            continue
        assert u.certified is True  # tiny cases: always within the budget
        assert _signed(u[0].auroc, mode) == pytest.approx(best[k], abs=1e-12)
        assert u.bound == u[0].auroc
        assert _signed(u[0].auroc, mode) >= _signed(beam[k][0].auroc, mode)
        assert _signed(u.ceiling, mode) >= _signed(u.bound, mode)


def test_optimal_length3_improves_on_the_beam_and_keeps_the_list():
    """Seeds where the beam (B = 1, 2) misses the best formula of three literals: the found
    formula comes first, the beam's follow (distinct, best first, same count)."""
    improved = 0
    for seed in range(40):
        acts, y, lo, hi, mode = _case(seed)
        for b in (1, 2):
            kw = dict(length=3, beam_size=b, min_fraction=lo, max_fraction=hi, mode=mode)
            beam = explain(acts, y, **kw)
            res = explain(acts, y, optimal=True, **kw)
            for k, u in enumerate(res):
                if not len(u):
                    assert not len(beam[k])
                    continue
                was = _signed(beam[k][0].auroc, mode) if len(beam[k]) else -np.inf
                if _signed(u[0].auroc, mode) > was + 1e-12:
                    improved += 1
                    rest = [str(e.formula) for e in beam[k]]
                    assert [str(e.formula) for e in u[1:]] == rest[:b - 1]
                    assert len(u) == min(b, 1 + len(beam[k])) and u.reason is None
                    assert [e.rank for e in u] == list(range(len(u)))
                else:
                    assert [str(e.formula) for e in u] == [str(e.formula) for e in beam[k]]
    assert improved >= 3


def test_time_budget_spent_keeps_valid_bounds():
    layer = make_multilabel_layer(n_samples=3000, n_concepts=60, n_units=6, n_planted=3,
                                  seed=5)
    res = explain(layer.activations, layer.concepts, length=3, beam_size=2,
                  min_fraction=0.01, optimal=True, time_budget=1e-3)
    for u in res:
        assert u.certified in (True, False)
        assert u.bound >= u[0].auroc
        assert u.ceiling >= u.bound - 1e-12


def test_optimal_chunking_gives_identical_results():
    layer = make_layer(n_leaves=40, samples_per_leaf=15, n_hypernyms=15, n_units=12,
                       n_planted=6, seed=8)
    kw = dict(length=3, beam_size=2, min_fraction=0.01, optimal=True, time_budget=np.inf)
    r1 = explain(layer.activations, layer.concepts, **kw)
    r2 = explain(layer.activations, layer.concepts, memory_budget="1MiB", **kw)
    assert _full(r1) == _full(r2)


def _full(res):
    return [([(str(e.formula), e.auroc, e.support, e.p_value, dict(e.extras)) for e in u],
             u.ceiling, u.certified, u.bound, u.reason) for u in res]


# ----------------------------------------------------------------------------- torch path


@pytest.mark.parametrize("metric", ["auroc", "point_biserial"])
@pytest.mark.parametrize("length", [2, 3])
def test_torch_kernel_gives_identical_certificates(metric, length):
    for layer in (make_layer(n_leaves=40, samples_per_leaf=15, n_hypernyms=15, n_units=8,
                             n_planted=4, seed=9),
                  make_multilabel_layer(n_samples=2000, n_concepts=40, n_units=6,
                                        n_planted=3, seed=9)):
        kw = dict(length=length, beam_size=3, min_fraction=0.01, metric=metric,
                  optimal=True, time_budget=np.inf)
        cpu = explain(layer.activations, layer.concepts, **kw)
        tor = explain(layer.activations, layer.concepts, kernel="torch", **kw)
        assert _full(cpu) == _full(tor)
        plain = explain(layer.activations, layer.concepts, length=length, metric=metric,
                        kernel="torch", min_fraction=0.01)
        np.testing.assert_array_equal(plain.ceiling, cpu.ceiling)


# ----------------------------------------------------------------------------- exports


def test_exports_carry_the_certificates(tmp_path):
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    y = rng.random((300, 6)) < 0.25
    a = np.c_[(y[:, 1] | y[:, 4]) + 0.3 * rng.standard_normal(300), np.zeros(300)]
    plain = invert.explain(a, y, length=2, beam_size=3)
    df = plain.to_dataframe()
    assert "ceiling" in df and "certified" not in df and "bound" not in df
    assert df["ceiling"].iloc[0] == plain[0].ceiling and np.isnan(df["ceiling"].iloc[-1])
    res = invert.explain(a, y, length=3, beam_size=3, optimal=True)
    df = res.to_dataframe()
    assert list(df.columns[10:13]) == ["ceiling", "certified", "bound"]
    assert df["certified"].dtype == "boolean" and bool(df["certified"].iloc[0])
    res.to_csv(tmp_path / "x.csv")
    back = pd.read_csv(tmp_path / "x.csv")
    np.testing.assert_allclose(back["ceiling"], df["ceiling"])
    np.testing.assert_allclose(back["bound"], df["bound"])
    doc = json.loads(res.to_json())
    u0, u1 = doc["units"]
    assert u0["ceiling"] == res[0].ceiling and u0["certified"] is True
    assert u0["bound"] == res[0].bound
    assert u1["ceiling"] is None and u1["bound"] is None and u1["certified"] is False
    assert set(u0["explanations"][0]) == {"formula", "auroc", "p_value", "log10_p_value",
                                          "fraction", "support", "length"}
    recs = res.to_unit_records("fc")
    assert list(recs[0])[:6] == ["layer", "unit", "reason", "ceiling", "certified", "bound"]
    np.testing.assert_array_equal(res.certified, [True, False])
    assert res.bound[0] == res[0].bound and np.isnan(res.bound[1])


def test_derive_keeps_the_certificate():
    rng = np.random.default_rng(1)
    y = rng.random((200, 4)) < 0.3
    a = y[:, 2] + rng.standard_normal(200)
    u = invert.explain(a, y, length=2, beam_size=2, optimal=True)[0]
    v = u.derive(u[:1], unit_id="x")
    assert (v.unit_id, v.unit, v.ceiling, v.certified, v.bound) == (
        "x", u.unit, u.ceiling, u.certified, u.bound)
    assert list(v) == u[:1]


def test_holdout_keeps_the_search_split_ceiling():
    rng = np.random.default_rng(2)
    y = rng.random((600, 6)) < 0.2
    a = np.c_[y[:, 3] + rng.standard_normal(600), rng.standard_normal(600)]
    res = invert.explain(a, y, length=2, beam_size=2, holdout=0.5, random_state=0,
                         optimal=True)
    for u in res:
        assert u.ceiling is not None and u.certified is not None
        assert u.ceiling >= max(e.auroc for e in u)


# ----------------------------------------------------------------------------- errors


def test_bad_certificate_parameters_name_the_parameter(monkeypatch):
    rng = np.random.default_rng(0)
    y = rng.random((100, 4)) < 0.3
    a = rng.standard_normal((100, 2))
    for fn in (invert.explain, explain):
        with pytest.raises(InvalidParameterError, match="^optimal.*dedupe=False"):
            fn(a, y, optimal=True, dedupe=False)
        for tb in (0, -1.0, float("nan"), "10", True):
            with pytest.raises(InvalidParameterError, match="^time_budget"):
                fn(a, y, time_budget=tb)
        with pytest.raises(InvalidParameterError, match="^length.*optimal"):
            fn(a, y, optimal=True, length=4)
        with pytest.raises(InvalidParameterError, match="^optimal"):
            fn(a, y, optimal="yes")
    with pytest.raises(InvalidParameterError, match="^optimal"):
        invert.explain(a, y, optimal=True, dedupe=False, holdout=0.5)
    monkeypatch.setattr(engine_search, "CERTIFIED_METRICS", ("auroc",))
    with pytest.raises(InvalidParameterError, match="^metric"):
        explain(a, y, optimal=True, metric="point_biserial")
    res = explain(a, y, metric="point_biserial")  # no ceiling where not covered
    assert np.isnan(res.ceiling).all()
