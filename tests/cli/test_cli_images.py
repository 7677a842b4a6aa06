"""``invert explain --model ... --data FOLDER``: everything cheap is checked before the model
runs, unreadable images are skipped on request, and ONNX Runtime gives PyTorch's numbers
(issue 12.2, 12.3)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from invert import workflow
from invert.cli import main

pytest.importorskip("PIL.Image")
pytest.importorskip("torch")


def _explain(tmp_path, data, *extra):
    out = tmp_path / "out"
    return out, main(["explain", "--model", "tinymodel:tiny", "--layer", "1", "--data",
                      str(data), "--out", str(out), "--length", "1", "--no-report",
                      "--batch-size", "8", *extra])


def _last_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("invert: error: ")
    return err[-1]


def _model_must_not_run(monkeypatch):
    def ran(*args, **kwargs):
        pytest.fail("the model ran before the inputs were checked")

    monkeypatch.setattr(workflow, "collect_activations", ran)


def test_unreadable_images_stop_the_run_or_are_skipped_and_listed(tmp_path, image_tree,
                                                                  capsys):
    (image_tree / "light" / "red" / "broken.png").write_bytes(b"not an image")
    _, rc = _explain(tmp_path, image_tree, "--concepts", "folders")
    assert rc == 2
    err = _last_error(capsys)
    assert "broken.png" in err and "--skip-bad-images" in err and "on_error" not in err
    out, rc = _explain(tmp_path, image_tree, "--concepts", "folders", "--skip-bad-images")
    assert rc == 0
    run = json.loads((out / "run.json").read_text())
    assert [s["item"] for s in run["skipped_images"]] == ["light/red/broken.png"]
    assert "light/red/broken.png" not in run["sample_ids"] and len(run["sample_ids"]) == 24


def test_imagenet_concepts_on_other_folders_fail_before_the_model(tmp_path, image_tree,
                                                                  capsys, monkeypatch):
    monkeypatch.setattr(workflow, "load_model", lambda *a: pytest.fail("model loaded"))
    _, rc = _explain(tmp_path, image_tree, "--concepts", "imagenet")
    assert rc == 2
    assert "WNID" in _last_error(capsys) or "wnid" in _last_error(capsys).lower()


def test_missing_wordnet_fails_before_the_model(tmp_path, image_tree, capsys, monkeypatch):
    from invert.concepts import WordNet, WordNetNotFoundError

    def missing(cls):
        raise WordNetNotFoundError("WordNet 3.0 noun files not found: apt-get install "
                                   "wordnet-base")

    monkeypatch.setattr(WordNet, "default", classmethod(missing))
    monkeypatch.setattr(workflow, "load_model", lambda *a: pytest.fail("model loaded"))
    _, rc = _explain(tmp_path, image_tree, "--concepts", "folders", "--wordnet")
    assert rc == 2
    assert "wordnet-base" in _last_error(capsys)


def test_mismatched_ids_and_unknown_layers_fail_before_the_model_runs(tmp_path, image_tree,
                                                                      capsys, monkeypatch):
    _model_must_not_run(monkeypatch)
    table = tmp_path / "labels.csv"
    table.write_text("sample,red\n" + "".join(f"x{i}.png,{i % 2}\n" for i in range(24)))
    _, rc = _explain(tmp_path, image_tree, "--concepts", str(table))
    assert rc == 2
    assert "24 of the 24 activation samples have no concept row" in _last_error(capsys)
    _, rc = main(["explain", "--model", "tinymodel:tiny", "--layer", "nope", "--data",
                  str(image_tree), "--concepts", "folders", "--out", str(tmp_path / "o")]), None
    assert "--layer: no module named 'nope'" in _last_error(capsys)


def test_senses_needs_wordnet_and_an_existing_file(tmp_path, image_tree, capsys):
    _, rc = _explain(tmp_path, image_tree, "--concepts", "folders", "--senses", "x.tsv")
    assert rc == 2 and "--senses needs --wordnet" in _last_error(capsys)
    _, rc = _explain(tmp_path, image_tree, "--concepts", "folders", "--wordnet", "--senses",
                     str(tmp_path / "none.tsv"))
    assert rc == 2 and "--senses" in _last_error(capsys)


def test_onnx_engine_gives_the_torch_numbers(tmp_path, image_tree):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    got = {}
    for engine in ("torch", "onnx"):
        out = tmp_path / engine
        rc = main(["-q", "explain", "--model", "tinymodel:tiny", "--layer", "1", "--data",
                   str(image_tree), "--concepts", "folders", "--out", str(out), "--length", "1",
                   "--no-report", "--engine", engine])
        assert rc == 0
        run = json.loads((out / "run.json").read_text())
        assert run["engine"] == engine
        got[engine] = np.load(out / run["layers"][0]["activations"])
    np.testing.assert_allclose(got["onnx"], got["torch"], rtol=1e-5, atol=1e-6)
