"""Small real inputs for the CLI tests: planted activations, concept tables, tiny images."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("click")
pytest.importorskip("jinja2")
pytest.importorskip("pandas")
pytest.importorskip("pyarrow")

N = 60


@pytest.fixture
def planted(tmp_path):
    """Activations (N, 3) where unit 0 fires on concept 'cat', unit 1 on 'dog | bird'."""
    rng = np.random.default_rng(0)
    names = ["cat", "dog", "bird", "tree"]
    y = np.zeros((N, 4), dtype=bool)
    y[:12, 0] = True
    y[12:20, 1] = True
    y[20:26, 2] = True
    y[::3, 3] = True
    a = rng.normal(size=(N, 3)).astype(np.float32)
    a[:, 0] += 5 * y[:, 0]
    a[:, 1] += 5 * (y[:, 1] | y[:, 2])
    ids = [f"s{i:03d}" for i in range(N)]
    import pandas as pd

    table = pd.DataFrame(y.astype(int), columns=names)
    table.insert(0, "sample", ids)
    csv = tmp_path / "concepts.csv"
    table.to_csv(csv, index=False)
    npy = tmp_path / "acts.npy"
    np.save(npy, a)
    return {"a": a, "y": y, "names": names, "ids": ids, "csv": csv, "npy": npy,
            "table": table}


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
    """24 coloured squares under light|dark/red|green|blue/, and tinymodel.py in the cwd."""
    PIL = pytest.importorskip("PIL.Image")
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
