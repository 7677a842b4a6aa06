"""Values as given (issue 14 E) and the rest of the bad inputs (issue 14 G): exact float64,
complex refused, memory budgets, CSV headers, ``.pt`` files torch will not load safely."""

from __future__ import annotations

import datetime
import json

import numpy as np
import pandas as pd
import pytest

from invert.cli import main

sklearn_metrics = pytest.importorskip("sklearn.metrics")
torch = pytest.importorskip("torch")


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("invert: error: ") and "\n" not in err, err
    return err


@pytest.fixture
def tiny_offset(tmp_path):
    """float64 activations 1e4 + 1e-3 * signal: float32 would collapse them to few values."""
    rng = np.random.default_rng(3)
    n = 200
    c = rng.random(n) < 0.3
    noise = rng.random(n) < 0.3
    signal = c + rng.normal(scale=0.8, size=n)
    a = 1e4 + 1e-3 * signal
    assert len(np.unique(a.astype(np.float32))) < 20 < len(np.unique(a))
    ids = [f"s{i}" for i in range(n)]
    table = pd.DataFrame({"sample": ids, "c": c.astype(int), "noise": noise.astype(int)})
    table.to_csv(tmp_path / "c.csv", index=False)
    return {"a": a, "c": c, "ids": ids, "concepts": tmp_path / "c.csv"}


def _best_auroc(tmp_path, acts, concepts, *extra):
    out = tmp_path / "out"
    rc = main(["-q", "explain", "--activations", str(acts), "--concepts", str(concepts),
               "--out", str(out), "--no-report", "--length", "1", *extra])
    assert rc == 0
    rec = json.loads((out / "explanations.jsonl").read_text().splitlines()[0])
    return rec["explanations"][0]


@pytest.mark.parametrize("kind", ["npy", "csv", "pt"])
def test_float64_activations_keep_their_distinct_values(tmp_path, tiny_offset, kind):
    a = tiny_offset["a"]
    path = tmp_path / f"acts.{kind}"
    if kind == "npy":
        np.save(path, a)
    elif kind == "csv":
        pd.DataFrame({"sample": tiny_offset["ids"], "u": a}).to_csv(path, index=False)
    else:
        torch.save(torch.from_numpy(a), path)
    best = _best_auroc(tmp_path, path, tiny_offset["concepts"])
    assert best["formula"] == "c"
    exact = sklearn_metrics.roc_auc_score(tiny_offset["c"], a)
    assert best["auroc"] == pytest.approx(exact, abs=1e-12)
    wrong = sklearn_metrics.roc_auc_score(tiny_offset["c"], a.astype(np.float32))
    assert abs(exact - wrong) > 1e-3  # the test would see a float32 cast


def test_complex_activations_are_an_error(tmp_path, planted, capsys):
    path = tmp_path / "complex.npy"
    np.save(path, planted["a"].astype(np.complex128) + 1j)
    rc = main(["explain", "--activations", str(path), "--concepts", str(planted["csv"]),
               "--out", str(tmp_path / "o"), "--no-report"])
    assert rc == 2
    err = _one_line_error(capsys)
    assert "--activations" in err and "real numbers" in err


@pytest.mark.parametrize("budget", ["inf", "1e400", "0", "-1", "1e308GiB", "lots"])
def test_bad_memory_budgets_are_one_line_errors(tmp_path, planted, capsys, budget):
    rc = main(["explain", "--activations", str(planted["npy"]), "--concepts",
               str(planted["csv"]), "--out", str(tmp_path / "o"), "--memory-budget", budget])
    assert rc == 2
    assert "--memory-budget" in _one_line_error(capsys)
    assert not (tmp_path / "o").exists()


def test_a_quoted_comma_in_a_header_is_one_concept(tmp_path, planted):
    table = planted["table"].rename(columns={"cat": "dog, big"})
    path = tmp_path / "quoted.csv"
    table.to_csv(path, index=False)
    assert '"dog, big"' in path.read_text().splitlines()[0]
    out = tmp_path / "out"
    assert main(["-q", "explain", "--activations", str(planted["npy"]), "--concepts",
                 str(path), "--out", str(out), "--no-report", "--length", "1"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert "dog, big" in run["concepts"]["names"]
    rec = json.loads((out / "explanations.jsonl").read_text().splitlines()[0])
    assert "dog, big" in rec["explanations"][0]["formula"]


@pytest.mark.parametrize("header", ["sample,,dog,bird,tree", "sample,cat,cat,bird,tree"])
def test_empty_or_repeated_header_cells_are_errors(tmp_path, planted, capsys, header):
    lines = planted["csv"].read_text().splitlines()
    path = tmp_path / "bad.csv"
    path.write_text("\n".join([header, *lines[1:]]) + "\n")
    rc = main(["explain", "--activations", str(planted["npy"]), "--concepts", str(path),
               "--out", str(tmp_path / "o"), "--no-report"])
    assert rc == 2
    err = _one_line_error(capsys)
    assert "--concepts" in err and ("empty column name" in err or "duplicate" in err)
    assert "Unnamed" not in err


def test_an_empty_activation_header_cell_is_an_error(tmp_path, planted, capsys):
    path = tmp_path / "acts.csv"
    df = pd.DataFrame(planted["a"], columns=["u0", "u1", "u2"])
    df.insert(0, "sample", planted["ids"])
    text = df.to_csv(index=False).splitlines()
    path.write_text("\n".join(["sample,u0,,u2", *text[1:]]) + "\n")
    rc = main(["explain", "--activations", str(path), "--concepts", str(planted["csv"]),
               "--out", str(tmp_path / "o"), "--no-report"])
    assert rc == 2
    assert "empty column name" in _one_line_error(capsys)


def test_a_pt_file_weights_only_refuses_is_a_one_line_error(tmp_path, planted, capsys):
    path = tmp_path / "objects.pt"
    torch.save({"fc": torch.zeros(60, 2), "when": datetime.datetime(2024, 1, 1)}, path)
    rc = main(["explain", "--activations", str(path), "--concepts", str(planted["csv"]),
               "--out", str(tmp_path / "o"), "--no-report"])
    assert rc == 2
    err = _one_line_error(capsys)
    assert "weights_only=True" in err and "--activations" in err and len(err) < 300


def test_bfloat16_and_float16_tensors_are_widened(tmp_path, planted):
    path = tmp_path / "half.pt"
    a = torch.from_numpy(planted["a"])
    torch.save({"bf": a.to(torch.bfloat16), "half": a.to(torch.float16)}, path)
    out = tmp_path / "out"
    assert main(["-q", "explain", "--activations", str(path), "--concepts",
                 str(planted["csv"]), "--out", str(out), "--no-report", "--length", "1"]) == 0
    recs = [json.loads(x) for x in (out / "explanations.jsonl").read_text().splitlines()]
    assert [r["explanations"][0]["formula"] for r in recs if r["unit"] == "0"] == ["cat",
                                                                                 "cat"]
