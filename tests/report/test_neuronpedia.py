"""The Neuronpedia / SAELens export: its schema, and the examples against a hand computation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from invert.api import explain
from invert.extract import ActivationSet
from invert.report.neuronpedia import FORMAT, SCHEMA, export_neuronpedia, neuronpedia_records


def _validate(doc):
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(doc, SCHEMA)


def _check_explicitly(doc):
    """The schema's core, checked without jsonschema."""
    assert doc["format"] == FORMAT and doc["version"] == 1
    for f in doc["features"]:
        assert isinstance(f["index"], str) and isinstance(f["featureIndex"], int)
        for e in f["explanations"]:
            assert e["typeName"] == "invert-formula" and e["description"]
            assert e["modelId"] == f["modelId"] and e["index"] == f["index"]
        for a in f["activations"]:
            assert len(a["tokens"]) == len(a["values"]) >= 1
            assert a["values"][a["maxValueTokenIndex"]] == a["maxValue"] == max(a["values"])


def _samples(seed: int = 0, n: int = 300):
    rng = np.random.default_rng(seed)
    y = rng.random((n, 4)) < 0.3
    v = np.stack([y[:, 1] + 0.1 * rng.standard_normal(n),
                  y[:, 2] * rng.random(n), rng.standard_normal(n)], 1).astype("f4")
    v[5, 0] = v[9, 0] = v[:, 0].max() + 1  # a tie at the top: the earlier sample first
    ids = [f"img{i:03d}.png" for i in range(n)]
    acts = ActivationSet(v, "features.3", ["u0", "u1", "u2"], ids, "mean")
    from invert.concepts import ConceptSet

    cs = ConceptSet(y, ["red", "round", "furry", "shiny"], sample_ids=ids)
    return acts, cs


def test_sample_export_matches_the_schema_and_a_hand_computation(tmp_path):
    acts, cs = _samples()
    result = explain(acts, cs, length=2, beam_size=3)
    path = export_neuronpedia(result, acts, tmp_path / "np" / "layer.json", top_k=4,
                              model_id="efficientnet-lite0")
    doc = json.loads(path.read_text())
    _validate(doc)
    _check_explicitly(doc)
    assert doc["modelId"] == "efficientnet-lite0" and doc["layer"] == "features.3"
    assert doc["n_samples"] == 300 and len(doc["features"]) == 3
    for k, f in enumerate(doc["features"]):
        col = acts.values[:, k].astype(np.float64)
        order = np.argsort(-col, kind="stable")[:4]
        assert [a["dataIndex"] for a in f["activations"]] == order.tolist()
        assert [a["sampleId"] for a in f["activations"]] == [acts.sample_ids[i] for i in order]
        assert [a["tokens"] for a in f["activations"]] == [[acts.sample_ids[i]] for i in order]
        assert [a["maxValue"] for a in f["activations"]] == pytest.approx(col[order].tolist())
        best = result[k][0]
        assert f["label"] == str(best.formula) == f["explanations"][0]["description"]
        assert f["score"] == pytest.approx(best.auroc) and f["scoreType"] == "auroc"
        assert len(f["explanations"]) == len(result[k])
        assert f["maxActApprox"] == pytest.approx(col.max())
        assert f["frac_nonzero"] == pytest.approx((col != 0).mean())
        assert f["index"] == acts.unit_ids[k] and f["featureIndex"] == k
    assert doc["features"][0]["activations"][0]["dataIndex"] == 5  # tie: earlier first
    assert doc["features"][0]["label"] == "round"


def test_held_out_auroc_is_the_score():
    acts, cs = _samples(1)
    result = explain(acts, cs, length=1, beam_size=2, holdout=0.5, random_state=0)
    doc = neuronpedia_records(result, acts, top_k=2)
    _validate(doc)
    f = doc["features"][0]
    assert f["scoreType"] == "holdout_auroc"
    assert f["score"] == pytest.approx(result[0][0].extras["holdout_auroc"])
    assert f["explanations"][0]["holdout_auroc"] == f["score"]


def _token_set(n_docs: int = 700, seed: int = 2):
    """Token rows of documents of 2..40 tokens (more rows than one read chunk)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, 40, size=n_docs)
    tok = np.array([(d, p) for d in range(n_docs) for p in range(lengths[d])], dtype=np.int64)
    v = rng.standard_normal((len(tok), 2)).astype("f4")
    v[:, 1] = np.maximum(v[:, 1], 0)  # a feature that is mostly zero
    doc_ids = [("fortune", d) for d in range(n_docs)]
    ids = [(doc_ids[d], int(p)) for d, p in tok]
    tokens = [[f"t{d}_{p}" for p in range(lengths[d] + 3)] for d in range(n_docs)]
    acts = ActivationSet(v, "encoder.layer.3.output", ["0", "1"], ids, "tokens",
                         token_index=tok, row_kind="piece")
    return acts, tokens, doc_ids


def test_token_examples_are_whole_documents_best_first():
    acts, tokens, doc_ids = _token_set()
    assert acts.n_samples > 8192  # the running top list spans several chunks
    rng = np.random.default_rng(3)
    labels = rng.random((acts.n_samples, 3)) < 0.2
    result = explain(acts, labels, length=1, beam_size=1)
    doc = neuronpedia_records(result, acts, top_k=5, tokens=tokens, model_id="minilm")
    _validate(doc)
    _check_explicitly(doc)
    tok = acts.token_index
    for k, f in enumerate(doc["features"]):
        col = acts.values[:, k].astype(np.float64)
        per_doc = np.array([col[tok[:, 0] == d].max() for d in range(len(tokens))])
        want = np.argsort(-per_doc, kind="stable")[:5]
        got = f["activations"]
        assert [a["dataIndex"] for a in got] == want.tolist()
        assert [a["sampleId"] for a in got] == [list(doc_ids[d]) for d in want]
        for a, d in zip(got, want, strict=True):
            rows = np.flatnonzero(tok[:, 0] == d)
            assert a["tokens"] == [tokens[d][p] for p in tok[rows, 1]]
            assert a["values"] == pytest.approx(col[rows].tolist())
            assert a["maxValue"] == pytest.approx(per_doc[d])
        assert f["frac_nonzero"] == pytest.approx((col != 0).mean())
    assert doc["features"][1]["frac_nonzero"] < 0.6


def test_wrong_activations_are_refused(tmp_path):
    acts, cs = _samples()
    result = explain(acts, cs, length=1, beam_size=1)
    other = ActivationSet(acts.values, "x", ["a", "b", "c"], acts.sample_ids, "mean")
    with pytest.raises(ValueError, match="unit 'u0' is column 0"):
        export_neuronpedia(result, other, tmp_path / "x.json")
    with pytest.raises(ValueError, match="top_k"):
        export_neuronpedia(result, acts, tmp_path / "x.json", top_k=-1)
