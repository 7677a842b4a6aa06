"""Row kinds kept through subset/union/save/load and checked by invert.explain; subsets by
sample id (tuples, lists from JSON)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import invert
from invert.concepts import ConceptSet, check_aligned
from invert.extract import ActivationSet


def _piece_set(kind: str | None = "piece") -> ConceptSet:
    rng = np.random.default_rng(0)
    m = rng.random((12, 3)) < 0.4
    m[:2] = True
    m[2:4] = False
    ids = [("doc", i) if i % 3 else ("other", i) for i in range(12)]
    return ConceptSet(m, ["word:a", "pos:NOUN", "piece:start"], sample_ids=ids,
                      row_kind=kind, warn_constant=False)


@pytest.mark.parametrize("suffix", ["", ".parquet"])
def test_row_kind_survives_subset_union_prefix_and_save(tmp_path, suffix):
    if suffix:
        pytest.importorskip("pyarrow")
    cs = _piece_set()
    assert cs.row_kind == "piece"
    assert cs.subset(concepts=[0, 2]).row_kind == "piece"
    assert cs.subset(samples=[1, 4, 5]).row_kind == "piece"
    assert cs.with_prefix("x_").row_kind == "piece"
    other = ConceptSet(np.arange(12)[:, None] % 2, ["z"], sample_ids=cs.sample_ids)
    assert cs.union(other).row_kind == "piece" and other.union(cs).row_kind == "piece"
    back = ConceptSet.load(cs.save(tmp_path / f"set{suffix}"))
    assert back.row_kind == "piece" and back.sample_ids == cs.sample_ids
    plain = ConceptSet.load(other.save(tmp_path / f"plain{suffix}"))
    assert plain.row_kind is None


def test_row_kinds_that_differ_do_not_unite_or_pair():
    pieces, spacy_rows = _piece_set("piece"), _piece_set("spacy-token")
    with pytest.raises(ValueError, match="same kind"):
        pieces.union(spacy_rows.with_prefix("s_"))
    with pytest.raises(ValueError, match="kind 'spacy-token' cannot be matched against "
                                         "activation rows of kind 'piece'"):
        check_aligned(spacy_rows, pieces)
    with pytest.raises(ValueError, match="row_kind"):
        ConceptSet(np.ones((2, 1)), ["a"], row_kind="")


def _acts(kind: str | None, ids) -> ActivationSet:
    v = np.random.default_rng(1).standard_normal((12, 2)).astype(np.float32)
    v[:, 0] += 3 * np.arange(12) % 2
    return ActivationSet(v, "layer", ["0", "1"], list(ids), "tokens", row_kind=kind)


def test_explain_refuses_spacy_tokens_against_word_pieces():
    spacy_rows = _piece_set("spacy-token")
    acts = _acts("piece", spacy_rows.sample_ids)
    with pytest.raises(ValueError, match="cannot be matched"):
        invert.explain(acts, spacy_rows, length=1)
    with pytest.raises(ValueError, match="cannot be matched"):
        invert.explain(acts, spacy_rows, length=1, holdout=0.5, random_state=0)
    # piece concepts against per-document rows of an activation set: refused too
    with pytest.raises(ValueError, match="kind 'piece' cannot be matched against activation "
                                         "rows of kind 'sample'"):
        invert.explain(_acts(None, spacy_rows.sample_ids), _piece_set("piece"), length=1)
    # the same kind, ids in another order: the first differing row is named
    shuffled = list(reversed(spacy_rows.sample_ids))
    with pytest.raises(ValueError, match=r"row 0 is sample \('other', 0\), the "
                                         r"activations' row 0 is \('doc', 11\)"):
        invert.explain(_acts("piece", shuffled), _piece_set("piece"), length=1)
    ok = invert.explain(_acts("piece", spacy_rows.sample_ids), _piece_set("piece"), length=1)
    assert len(ok) == 2
    # a plain array has no row kind: spaCy-token concepts with it are fine
    assert len(invert.explain(np.asarray(acts.values), spacy_rows, length=1)) == 2


def test_subset_by_tuple_and_list_ids():
    cs = _piece_set()
    want = [("doc", 4), ("other", 0), ("doc", 1)]
    sub = cs.subset(samples=want)
    assert sub.sample_ids == want
    np.testing.assert_array_equal(sub.to_dense(), cs.to_dense()[[4, 0, 1]])
    from_json = json.loads(json.dumps(want))  # lists, as read back from a JSON file
    assert isinstance(from_json[0], list)
    assert cs.subset(samples=from_json).sample_ids == want
    assert cs.subset(samples=(t for t in want)).sample_ids == want
    with pytest.raises(KeyError, match="not in this concept set"):
        cs.subset(samples=[("doc", 99)])
    with pytest.raises(ValueError, match="more than once"):
        cs.subset(samples=[("doc", 4), ["doc", 4]])
    named = ConceptSet(np.eye(3, dtype=bool), ["a", "b", "c"], sample_ids=["x", "y", "z"])
    assert named.subset(samples=["z", "x"]).sample_ids == ["z", "x"]
    assert named.subset(samples="y").sample_ids == ["y"]
    assert named.subset(samples=[2, 0]).sample_ids == ["z", "x"]  # ints are positions
    no_ids = ConceptSet(np.eye(3, dtype=bool), ["a", "b", "c"])
    with pytest.raises(ValueError, match="no sample ids"):
        no_ids.subset(samples=[("doc", 1)])
    with pytest.raises(ValueError, match="flat sequence"):
        no_ids.subset(samples=np.array([[0, 1], [1, 2]]))
