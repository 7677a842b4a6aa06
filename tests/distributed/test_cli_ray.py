"""``invert explain --backend ray`` writes the same output folder as the local path."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("click")
pytest.importorskip("pandas")
pytest.importorskip("ray")

from invert.cli import main  # noqa: E402


@pytest.fixture
def files(tmp_path, layer):
    import pandas as pd

    a, cs = layer
    np.save(tmp_path / "acts.npy", a)
    table = pd.DataFrame(cs.matrix.toarray().astype(int), columns=cs.names)
    table.insert(0, "sample", [f"s{i}" for i in range(a.shape[0])])
    table.to_csv(tmp_path / "concepts.csv", index=False)
    return tmp_path


def _run(files, out, *extra):
    return main(["-q", "explain", "--activations", str(files / "acts.npy"), "--concepts",
                 str(files / "concepts.csv"), "--out", str(files / out), "--no-report",
                 "--length", "2", "--beam-size", "3", *extra])


def test_cli_ray_same_outputs(ray_session, files):
    assert _run(files, "local") == 0
    assert _run(files, "ray", "--backend", "ray", "--shard-units", "5",
                "--memory-budget", "64MiB") == 0
    local = (files / "local" / "explanations.jsonl").read_text()
    ray_out = (files / "ray" / "explanations.jsonl").read_text()
    assert ray_out == local and local.count("\n") == 12
    assert (files / "ray" / "explanations.csv").read_text() == (
        files / "local" / "explanations.csv").read_text()
    run = json.loads((files / "ray" / "run.json").read_text())
    assert run["backend"] == "ray"
    assert sorted(p.name for p in (files / "ray" / "sharded" / "acts" / "shards").iterdir()) == [
        "manifest.json", "units_0_5.npz", "units_10_12.npz", "units_5_10.npz"]
    np.testing.assert_array_equal(np.load(files / "ray" / "activations_acts.npy"),
                                  np.load(files / "acts.npy"))


def test_cli_errors(files, capsys):
    assert _run(files, "x", "--address", "auto") == 2
    assert "need --backend ray" in capsys.readouterr().err
    assert _run(files, "x", "--backend", "spark") == 2


class _Planted:
    """Unpickling this creates ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_cli_ray_rerun_never_unpickles(ray_session, files):
    """``invert explain --backend ray --out OUT`` rerun after a shard was replaced by a
    pickle: the pickle is not opened and the outputs are the plain ones."""
    import pickle

    args = ("--backend", "ray", "--shard-units", "5")
    assert _run(files, "ray", *args) == 0
    want = (files / "ray" / "explanations.jsonl").read_text()
    shards = files / "ray" / "sharded" / "acts" / "shards"
    (shards / "units_0_5.npz").unlink()
    marker = files / "marker"
    (shards / "units_0_5.pkl").write_bytes(pickle.dumps(_Planted(marker)))
    assert _run(files, "ray", *args) == 0
    assert not marker.exists()
    assert (files / "ray" / "explanations.jsonl").read_text() == want
