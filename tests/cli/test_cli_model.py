"""``invert explain --model module:function --data FOLDER --concepts folders`` end to end."""

from __future__ import annotations

import json

import pytest

from invert.cli import main

pytest.importorskip("PIL.Image")
pytest.importorskip("torch")


def test_explain_model_on_image_folder(tmp_path, image_tree):
    out = tmp_path / "out"
    rc = main(["-q", "explain", "--model", "tinymodel:tiny", "--layer", "1", "--data",
               str(image_tree), "--concepts", "folders", "--out", str(out), "--length", "1",
               "--cache-dir", str(tmp_path / "cache"), "--batch-size", "8"])
    assert rc == 0
    recs = [json.loads(x) for x in (out / "explanations.jsonl").read_text().splitlines()]
    best = {r["unit"]: r["explanations"][0]["formula"] for r in recs}
    assert best == {"0": "red", "1": "green", "2": "blue"}
    run = json.loads((out / "run.json").read_text())
    assert run["sample_ids"][0] == "dark/blue/img0.png"
    thumbs = list((out / "report" / "assets" / "thumbs").glob("*.jpg"))
    assert thumbs, "the report should show image thumbnails"
    page = (out / "report" / "units" / "1" / "0.html").read_text()
    assert "assets/thumbs/" in page
    assert any((tmp_path / "cache").iterdir())


def test_unknown_layer_is_a_one_line_error(tmp_path, image_tree, capsys):
    rc = main(["explain", "--model", "tinymodel:tiny", "--layer", "nope", "--data",
               str(image_tree), "--concepts", "folders", "--out", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("invert: error: ") and "\n" not in err and "nope" in err
