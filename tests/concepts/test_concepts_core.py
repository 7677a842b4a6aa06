"""ConceptSet: validation, selection, union, persistence, summary, formula round trip."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from invert.concepts import ConceptSet, ConstantConceptWarning
from invert.engine.formula import parse_formula


def small(**kw) -> ConceptSet:
    m = np.array([[1, 0, 1], [0, 1, 1], [1, 1, 0], [0, 0, 1]], dtype=bool)
    return ConceptSet(m, ["a", "b", "c"], sample_ids=["s0", "s1", "s2", "s3"], **kw)


def test_exposes_names_and_matrix_as_the_engine_reads_them():
    cs = small()
    assert cs.names == ["a", "b", "c"]
    assert isinstance(cs.matrix, np.ndarray) and cs.matrix.dtype == bool
    assert cs.matrix.shape == (cs.n_samples, cs.n_concepts) == (4, 3)
    assert len(cs) == 3


@pytest.mark.parametrize(
    "matrix, names, match",
    [
        (np.zeros((3, 2)), ["a"], "names: expected 2"),
        (np.zeros(3), ["a"], "2 dimensions"),
        (np.array([[0, 2], [1, 0]]), ["a", "b"], "0/1"),
        (np.array([[0.5, 1], [1, 0]]), ["a", "b"], "0/1"),
        (np.array([[np.nan, 1], [1, 0]]), ["a", "b"], "0/1"),
        (sp.csr_matrix(np.array([[0, 3], [1, 0]])), ["a", "b"], "0/1"),
        (np.array([[0, 1], [1, 0]]), ["a", "a"], "duplicates"),
        (np.array([[0, 1], [1, 0]]), ["a", " "], "non-empty"),
    ],
)
def test_bad_matrices_and_names_raise_naming_the_parameter(matrix, names, match):
    with pytest.raises(ValueError, match=match):
        ConceptSet(matrix, names)


def test_bad_types_raise_type_error():
    with pytest.raises(TypeError, match="matrix"):
        ConceptSet("not a matrix", ["a"])
    with pytest.raises(TypeError, match="names"):
        ConceptSet(np.zeros((2, 1)), "a")
    with pytest.raises(TypeError, match="names"):
        ConceptSet(np.zeros((2, 1)), [1])


def test_duplicate_sample_ids_and_bad_parents_raise():
    m = np.array([[0, 1], [1, 0]])
    with pytest.raises(ValueError, match="sample_ids: expected unique"):
        ConceptSet(m, ["a", "b"], sample_ids=["x", "x"])
    with pytest.raises(ValueError, match="sample_ids: expected 2"):
        ConceptSet(m, ["a", "b"], sample_ids=["x"])
    with pytest.raises(ValueError, match="parents"):
        ConceptSet(m, ["a", "b"], parents={"a": ["zzz"]})
    with pytest.raises(ValueError, match="ids: expected 2"):
        ConceptSet(m, ["a", "b"], ids=["x"])


def test_constant_concepts_are_kept_reported_and_warned():
    m = np.array([[1, 0, 1], [1, 1, 0], [1, 0, 0]])
    with pytest.warns(ConstantConceptWarning, match="1 of 2"):
        cs = ConceptSet(m[:, [0, 1]], ["always", "b"])
    assert cs.constant_concepts == ["always"]
    with pytest.warns(ConstantConceptWarning):
        cs2 = ConceptSet(np.c_[m, np.zeros(3)], ["x", "y", "z", "never"])
    assert cs2.constant_concepts == ["x", "never"]
    assert cs2.n_concepts == 4  # not dropped


def test_sparse_torch_and_list_inputs_agree():
    torch = pytest.importorskip("torch")
    dense = small().matrix
    for given_ in (sp.csr_matrix(dense.astype(int)), sp.coo_array(dense), torch.tensor(dense),
                   dense.astype(np.float32).tolist()):
        cs = ConceptSet(given_, ["a", "b", "c"])
        np.testing.assert_array_equal(cs.to_dense(), dense)
    assert ConceptSet(sp.csr_matrix(dense), ["a", "b", "c"]).is_sparse


def test_subset_by_names_positions_masks_keeps_metadata():
    cs = small(ids=["ia", "ib", "ic"], parents={"a": [], "b": ["a"], "c": ["b"]})
    sub = cs.subset(concepts=["c", "a"], samples=[True, False, True, True])
    assert sub.names == ["c", "a"]
    assert sub.ids == ["ic", "ia"]
    assert sub.sample_ids == ["s0", "s2", "s3"]
    np.testing.assert_array_equal(sub.matrix, cs.matrix[[0, 2, 3]][:, [2, 0]])
    # b was dropped: c is linked to b's parent a
    assert sub.parents == {"c": ["a"], "a": []}
    np.testing.assert_array_equal(cs.subset(samples=cs.sample_positions(["s3", "s1"])).matrix,
                                  cs.matrix[[3, 1]])
    with pytest.raises(ValueError, match="unknown concept names"):
        cs.subset(concepts=["nope"])
    with pytest.raises(ValueError, match="boolean mask must have length 4"):
        cs.subset(samples=[True])
    with pytest.raises(ValueError, match="more than once"):
        cs.subset(concepts=[0, 0])


def test_union_requires_same_samples_and_distinct_names():
    a = small()
    b = ConceptSet(sp.csr_array(np.eye(4, 2, dtype=bool)), ["d", "e"],
                   sample_ids=["s0", "s1", "s2", "s3"])
    u = a.union(b)
    assert u.names == ["a", "b", "c", "d", "e"]
    assert u.is_sparse
    np.testing.assert_array_equal(u.to_dense(), np.hstack([a.matrix, np.eye(4, 2, dtype=bool)]))
    with pytest.raises(ValueError, match="overlap"):
        a.union(a)
    assert a.union(a.with_prefix("x:")).names[3:] == ["x:a", "x:b", "x:c"]
    other = ConceptSet(np.eye(4, 1, dtype=bool), ["z"], sample_ids=["s0", "s1", "s3", "s2"])
    with pytest.raises(ValueError, match="row 2"):
        a.union(other)
    with pytest.raises(ValueError, match="same samples"):
        a.union(ConceptSet(np.eye(3, 1, dtype=bool), ["z"]))


@pytest.mark.parametrize("suffix", ["", ".parquet"])
@pytest.mark.parametrize("sparse", [False, True])
def test_save_load_round_trip(tmp_path, suffix, sparse):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    m = small().matrix
    cs = ConceptSet(
        sp.csr_array(m) if sparse else m,
        ["great_white_shark.n.01", "pos:NOUN", "it's a-name"],
        ids=["n01484850", None, "x"],
        descriptions=["shark", None, "odd"],
        sample_ids=[("doc", 0), ("doc", 1), 7, "s"],
        parents={"pos:NOUN": ["great_white_shark.n.01"]},
        skipped=[{"item": "f.txt", "reason": "extension"}],
        source="test",
    )
    written = cs.save(tmp_path / f"set{suffix}")
    assert written.exists()
    back = ConceptSet.load(written)
    assert back.names == cs.names and back.ids == cs.ids
    assert back.descriptions == cs.descriptions
    assert back.sample_ids == [("doc", 0), ("doc", 1), 7, "s"]
    assert back.parents == cs.parents and back.skipped == cs.skipped and back.source == "test"
    assert back.is_sparse == sparse
    np.testing.assert_array_equal(back.to_dense(), m)


def test_load_rejects_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="npz"):
        ConceptSet.load(tmp_path / "missing")
    (tmp_path / "x.json").write_text('{"format": "other"}')
    np.savez(tmp_path / "x.npz", shape=np.array([1, 1]), matrix=np.packbits([True]))
    with pytest.raises(ValueError, match="not an invert concept set"):
        ConceptSet.load(tmp_path / "x")


@settings(max_examples=25, deadline=None)
@given(
    st.integers(1, 12).flatmap(
        lambda n: st.tuples(
            st.lists(st.lists(st.booleans(), min_size=n, max_size=n), min_size=1, max_size=10),
            st.booleans(),
        )
    )
)
def test_npz_round_trip_property(tmp_path_factory, data):
    rows, sparse = data
    m = np.array(rows, dtype=bool)
    names = [f"c{j}" for j in range(m.shape[1])]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantConceptWarning)
        cs = ConceptSet(sp.csr_array(m) if sparse else m, names)
    back = ConceptSet.load(cs.save(tmp_path_factory.mktemp("rt") / "s"))
    np.testing.assert_array_equal(back.to_dense(), m)


def test_summary_counts_coverage_and_depth():
    m = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0], [1, 0, 1]], dtype=bool)
    cs = ConceptSet(m, ["animal", "bird", "fish"],
                    parents={"animal": [], "bird": ["animal"], "fish": ["animal"]})
    rows = {r["name"]: r for r in cs.summary()}
    assert [rows[n]["count"] for n in cs.names] == m.sum(axis=0).tolist()
    assert rows["bird"]["fraction"] == pytest.approx(0.25)
    assert rows["animal"]["depth"] == 0 and rows["fish"]["depth"] == 1
    assert cs.coverage == pytest.approx(0.75)
    assert cs.unlabelled_samples.tolist() == [2]
    pytest.importorskip("pandas")
    assert list(cs.summary_frame()["count"]) == [3, 1, 1]


def test_formula_over_concept_names_round_trips():
    names = ["great_white_shark.n.01", "pos:NOUN", "word:don't", "a b", "x-y"]
    rng = np.random.default_rng(0)
    m = rng.random((50, len(names))) < 0.5
    cs = ConceptSet(m, names)
    f = parse_formula("(great_white_shark.n.01 | ~pos:NOUN) & word:don't", cs.names)
    text = f.to_string(cs.names)
    g = parse_formula(text, cs.names)
    assert g.to_string(cs.names) == text
    expected = (m[:, 0] | ~m[:, 1]) & m[:, 2]
    np.testing.assert_array_equal(g.evaluate(cs.matrix), expected)
    quoted = parse_formula(parse_formula('"a b" | x-y', cs.names).to_string(cs.names), cs.names)
    np.testing.assert_array_equal(quoted.evaluate(cs.matrix), m[:, 3] | m[:, 4])


def test_from_labels_builds_the_expected_matrix():
    cs = ConceptSet.from_labels([["a"], ["b", "a"], []], names=["a", "b"], sample_ids=[1, 2, 3])
    np.testing.assert_array_equal(cs.matrix, [[1, 0], [1, 1], [0, 0]])
    with pytest.raises(ValueError, match="not in names"):
        ConceptSet.from_labels([["q"]], names=["a"])


def test_every_builder_style_name_prints_and_parses_back():
    from invert.concepts import imagenet_hierarchy

    names = imagenet_hierarchy().names + [
        "001", "super:animal", "word:'s", "ent:WORK_OF_ART", "penguin_with spider", 'say "hi"',
        "a&b", "(x)", "~y", "word:|",
    ]
    for j, name in enumerate(names):
        text = parse_formula(str(j)).to_string(names)
        back = parse_formula(text, names)
        assert back.concepts() == [j], (name, text)
