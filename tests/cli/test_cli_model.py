"""``invert explain --model module:function --data FOLDER --concepts folders`` end to end."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from invert.cli import main

PIL = pytest.importorskip("PIL.Image")
torch = pytest.importorskip("torch")

MODEL_SRC = textwrap.dedent(
    '''
    import torch

    def tiny():
        """Channel 0 = mean red, 1 = mean green, 2 = mean blue (a fixed 1x1 conv)."""
        conv = torch.nn.Conv2d(3, 3, 1, bias=False)
        with torch.no_grad():
            conv.weight.copy_(torch.eye(3).reshape(3, 3, 1, 1))
        return torch.nn.Sequential(conv, torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                   torch.nn.Flatten())
    '''
)


@pytest.fixture
def image_tree(tmp_path, monkeypatch):
    colours = {"red": (250, 10, 10), "green": (10, 250, 10), "blue": (10, 10, 250)}
    root = tmp_path / "data"
    for shade in ("light", "dark"):
        for name, rgb in colours.items():
            d = root / shade / name
            d.mkdir(parents=True)
            for k in range(4):
                scale = 1.0 if shade == "light" else 0.6
                c = tuple(int(v * scale) + k for v in rgb)
                PIL.new("RGB", (16, 16), c).save(d / f"img{k}.png")
    (tmp_path / "tinymodel.py").write_text(MODEL_SRC)
    monkeypatch.chdir(tmp_path)
    yield root
    sys.modules.pop("tinymodel", None)


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
