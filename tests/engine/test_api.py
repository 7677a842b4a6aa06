"""Public API: input kinds, exports, modes, determinism."""

import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import invert
from invert.engine.patterns import _collapse, _ConceptOp
from invert.engine.synthetic import LabelMatrix, make_layer, make_multilabel_layer


@pytest.fixture(scope="module")
def small():
    return make_layer(n_leaves=60, samples_per_leaf=12, n_hypernyms=25, n_units=10,
                      n_planted=8, signal=2.0, seed=3)


def _flat(res):
    return [[(str(e.formula), e.auroc, e.support) for e in u] for u in res]


def test_input_kinds_agree(small):
    a, cs = small.activations, small.concepts
    dense = cs.matrix.toarray()
    ref = _flat(invert.explain(a, dense, min_fraction=0.01))
    assert _flat(invert.explain(torch.from_numpy(a), torch.from_numpy(dense),
                                min_fraction=0.01)) == ref
    assert _flat(invert.explain(a, sp.csr_matrix(dense), min_fraction=0.01)) == ref
    assert _flat(invert.explain(a.astype(np.float64), dense.astype(np.uint8),
                                min_fraction=0.01)) == ref
    named = invert.explain(a, cs, min_fraction=0.01)
    assert [[(e.auroc, e.support) for e in u] for u in named] == [
        [(x[1], x[2]) for x in u] for u in ref]
    assert str(named[0][0].formula) == named[0][0].formula.to_string(cs.names)
    assert any(ch.isalpha() for ch in str(named[0][0].formula))


def test_one_dimensional_activations():
    y = np.random.default_rng(0).random((40, 3)) < 0.4
    a = y[:, 1] + np.linspace(0, 0.5, 40)
    res = invert.explain(a, y, length=1)
    assert len(res) == 1 and str(res[0][0].formula) == "1"


def test_dense_and_sparse_products_agree(small):
    pats = _collapse(small.concepts.matrix)
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 1000, (len(pats.counts), 7))
                         .astype(np.float64))
    d = _ConceptOp(pats.matrix, torch.device("cpu"), sparse=False).tsum(x)
    s = _ConceptOp(pats.matrix, torch.device("cpu"), sparse=True).tsum(x)
    assert torch.equal(d, s)


def test_collapse_groups_identical_rows(rng):
    y = rng.random((300, 5)) < 0.3
    y = np.vstack([y, y[:50]])
    pats = _collapse(y)
    np.testing.assert_array_equal(pats.matrix[pats.inverse], y)
    assert len(pats.counts) == len(np.unique(y, axis=0))
    assert pats.counts.sum() == len(y)


def test_planted_formulas_are_found(small):
    res = invert.explain(small.activations, small.concepts, length=2, beam_size=5,
                         min_fraction=0.01)
    y = small.concepts.matrix
    for k, f in enumerate(small.planted):
        m = f.evaluate(y)
        assert 0.01 <= m.mean() <= 0.5
        planted = invert.auroc(small.activations[:, k], m)
        assert res[k][0].auroc >= planted - 1e-12


def test_negative_mode_mirrors_positive(small):
    a = small.activations[:, :3]
    pos = invert.explain(-a, small.concepts, length=2, min_fraction=0.01)
    neg = invert.explain(a, small.concepts, length=2, min_fraction=0.01, mode="negative")
    for p, q in zip(pos, neg, strict=True):
        assert [1 - e.auroc for e in p] == pytest.approx([e.auroc for e in q], abs=1e-12)


def test_limit_search_restricts_extensions(small):
    res = invert.explain(small.activations[:, :4], small.concepts, length=3,
                         limit_search=4, min_fraction=0.01)
    for unit in res:
        assert unit  # still explained
        for e in unit:
            assert e.length <= 3


def test_results_are_deterministic_and_ranked(small):
    r1 = invert.explain(small.activations, small.concepts, min_fraction=0.01)
    r2 = invert.explain(small.activations, small.concepts, min_fraction=0.01)
    assert _flat(r1) == _flat(r2)
    for unit in r1:
        au = [e.auroc for e in unit]
        assert au == sorted(au, reverse=True)
        assert len(unit) <= 5
        masks = [e.evaluate(small.concepts.matrix).tobytes() for e in unit]
        assert len(set(masks)) == len(masks)  # dedupe: distinct supports


def test_memory_budget_chunking_gives_identical_results(small):
    a = np.tile(small.activations, (1, 4))
    r1 = invert.explain(a, small.concepts, min_fraction=0.01)
    r2 = invert.explain(a, small.concepts, min_fraction=0.01, memory_budget="1MiB")
    assert _flat(r1) == _flat(r2)


def test_exports(small, tmp_path):
    pd = pytest.importorskip("pandas")
    res = invert.explain(small.activations, small.concepts, min_fraction=0.01)
    df = res.to_dataframe()
    assert len(df) == sum(max(1, len(u)) for u in res)
    assert list(df.columns[:4]) == ["unit", "rank", "formula", "auroc"]
    assert df.loc[0, "formula"] == str(res[0][0].formula)
    res.to_csv(tmp_path / "x.csv")
    back = pd.read_csv(tmp_path / "x.csv")
    np.testing.assert_allclose(back["auroc"], df["auroc"])
    doc = json.loads(res.to_json())
    assert doc["units"][0]["explanations"][0]["formula"] == str(res[0][0].formula)
    assert doc["params"]["beam_size"] == 5
    e = doc["units"][0]["explanations"][0]
    assert set(e) == {"formula", "auroc", "p_value", "log10_p_value", "fraction", "support",
                      "length"}


def test_unit_ids_from_activation_objects(small):
    class Acts:
        unit_ids = [f"conv.{i}" for i in range(10)]

        def __array__(self, dtype=None, copy=None):
            return small.activations

    res = invert.explain(Acts(), small.concepts, min_fraction=0.01)
    assert res.unit_ids[3] == "conv.3" and res[3].unit_id == "conv.3"


def test_exact_pvalue_regime_matches_scipy():
    import scipy.stats as st

    rng = np.random.default_rng(5)
    a = rng.standard_normal(30)  # no ties
    y = np.zeros((30, 2), bool)
    y[np.argsort(a)[-4:], 0] = True  # 4 samples: scipy uses the exact distribution
    y[rng.random(30) < 0.5, 1] = True
    e = invert.explain(a, y, length=1, max_fraction=1.0)[0][0]
    m = e.evaluate(y)
    assert e.support == 4
    ref = st.mannwhitneyu(a[~m], a[m], alternative="two-sided", method="auto").pvalue
    assert e.p_value == pytest.approx(ref, rel=1e-12)


def test_multilabel_rows_do_not_collapse_but_work():
    layer = make_multilabel_layer(n_samples=2000, n_concepts=60, n_units=6, n_planted=6,
                                  seed=2)
    res = invert.explain(layer.activations, layer.concepts, length=2, min_fraction=0.005)
    y = layer.concepts.matrix
    for k, f in enumerate(layer.planted):
        assert res[k][0].auroc >= invert.auroc(layer.activations[:, k], f.evaluate(y)) - 1e-12


def test_label_matrix_names_must_match():
    with pytest.raises(ValueError, match="concepts.names"):
        invert.explain(np.arange(4.0), LabelMatrix(["a"], np.ones((4, 2), bool)))


def test_memory_mapped_activations_are_read_by_chunks(small, tmp_path):
    path = tmp_path / "acts.npy"
    np.save(path, np.tile(small.activations, (1, 3)))
    mm = np.load(path, mmap_mode="r")
    r1 = invert.explain(np.array(mm), small.concepts, min_fraction=0.01)
    r2 = invert.explain(mm, small.concepts, min_fraction=0.01, memory_budget="1MiB")
    assert _flat(r1) == _flat(r2)
    bad = np.lib.format.open_memmap(tmp_path / "bad.npy", mode="w+", dtype=np.float32,
                                    shape=mm.shape)
    bad[:] = mm
    bad[5, 17] = np.nan
    bad.flush()
    with pytest.raises(ValueError, match="row 5, unit 17"):
        invert.explain(np.load(tmp_path / "bad.npy", mmap_mode="r"), small.concepts)


def test_progress_callback_reports_every_unit(small):
    seen = []
    invert.explain(small.activations, small.concepts, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (10, 10)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_masked_sums_sparse_and_dense_paths_agree():
    rng = np.random.default_rng(3)
    m, c, k, w = 6000, 40, 3, 4  # m > 4096: the sparse x sparse path on CPU
    pmat = sp.csr_matrix(rng.random((m, c)) < 0.1)
    mask = torch.from_numpy(rng.random((k, w, m)) < 0.05)
    weights = [torch.from_numpy(rng.integers(0, 10**6, (m, k)).astype(np.float64)),
               torch.from_numpy(rng.integers(1, 5, m).astype(np.float64))]
    sparse = _ConceptOp(pmat, torch.device("cpu"), sparse=True).masked_sums(mask, weights)
    dense = _ConceptOp(pmat, torch.device("cpu"), sparse=False).masked_sums(mask, weights)
    assert torch.equal(sparse, dense)
    ref = np.einsum("kwm,mk,mc->kwc", mask.numpy().astype(float), weights[0].numpy(),
                    pmat.toarray().astype(float))
    np.testing.assert_array_equal(sparse[0].numpy(), ref)


def test_masked_sums_with_dense_masks_use_complements_exactly():
    rng = np.random.default_rng(4)
    m, c, k, w = 5000, 30, 2, 3
    pmat = sp.csr_matrix(rng.random((m, c)) < 0.1)
    mask = torch.from_numpy(rng.random((k, w, m)) < np.array([0.02, 0.7, 0.99])[None, :, None])
    weights = [torch.from_numpy(rng.integers(0, 10**6, (m, k)).astype(np.float64)),
               torch.from_numpy(rng.integers(1, 5, m).astype(np.float64))]
    sparse = _ConceptOp(pmat, torch.device("cpu"), sparse=True).masked_sums(mask, weights)
    dense = _ConceptOp(pmat, torch.device("cpu"), sparse=False).masked_sums(mask, weights)
    assert torch.equal(sparse, dense)
