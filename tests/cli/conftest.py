"""Small real inputs for the CLI tests: planted activations, concept tables, tiny images."""

from __future__ import annotations

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
