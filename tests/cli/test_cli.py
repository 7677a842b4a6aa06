"""``invert explain`` / ``invert report`` on small real inputs, and the error contract."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from invert.cli import main

SCHEMA = {"formula", "auroc", "p_value", "log10_p_value", "fraction", "support", "length"}
#: Every export also says how much of the unit's peak a formula covers; the best formula
#: carries the filler check.
PEAK = {"top_precision", "top_q", "top_size"}
FILLER = {"filler", "simplified", "simplified_auroc", "filler_on"}


def _explain(tmp_path, *extra):
    out = tmp_path / "out"
    return out, main(["-q", "explain", "--out", str(out), *extra])


def test_explain_npy_writes_all_outputs(tmp_path, planted):
    out, rc = _explain(tmp_path, "--activations", str(planted["npy"]), "--concepts",
                       str(planted["csv"]), "--layer", "fc", "--length", "2")
    assert rc == 0
    recs = [json.loads(line) for line in (out / "explanations.jsonl").read_text().splitlines()]
    assert [r["unit"] for r in recs] == ["0", "1", "2"]
    assert all(r["layer"] == "fc" for r in recs)
    assert recs[0]["explanations"][0]["formula"] == "cat"
    assert recs[1]["explanations"][0]["formula"] in ("dog | bird", "bird | dog")
    for e in recs[0]["explanations"]:
        assert set(e) == SCHEMA | PEAK | (FILLER if e is recs[0]["explanations"][0] else set())
    aurocs = [e["auroc"] for e in recs[0]["explanations"]]
    assert aurocs == sorted(aurocs, reverse=True)
    csv = pd.read_csv(out / "explanations.csv")
    pq = pd.read_parquet(out / "explanations.parquet")
    assert list(csv.columns[:3]) == ["layer", "unit", "rank"]
    assert len(csv) == len(pq) == sum(len(r["explanations"]) or 1 for r in recs)
    assert set(pq["layer"]) == {"fc"}
    run = json.loads((out / "run.json").read_text())
    assert run["params"]["length"] == 2
    assert run["sample_ids"] == planted["ids"]
    assert run["layers"][0]["name"] == "fc" and run["layers"][0]["n_units"] == 3
    assert "cat" in run["concepts"]["names"]
    index = (out / "report" / "index.html").read_text()
    assert "cat" in index and index.count("units/fc/") == 3
    page = (out / "report" / "units" / "fc" / "0.html").read_text()
    assert "<svg" in page and "AUROC" in page


def test_explain_parquet_aligns_samples_by_id(tmp_path, planted):
    a, ids = planted["a"], planted["ids"]
    perm = np.random.default_rng(1).permutation(len(ids))
    df = pd.DataFrame(a[perm], columns=["u0", "u1", "u2"])
    df.insert(0, "sample", [ids[i] for i in perm])
    path = tmp_path / "acts.parquet"
    df.to_parquet(path)
    out, rc = _explain(tmp_path, "--activations", str(path), "--concepts", str(planted["csv"]))
    assert rc == 0
    recs = [json.loads(x) for x in (out / "explanations.jsonl").read_text().splitlines()]
    assert [r["unit"] for r in recs] == ["u0", "u1", "u2"]
    assert recs[0]["layer"] == "acts"
    assert recs[0]["explanations"][0]["formula"] == "cat"
    assert recs[0]["explanations"][0]["auroc"] > 0.95


def test_explain_pt_dict_gives_one_record_per_unit_and_layer(tmp_path, planted):
    torch = pytest.importorskip("torch")
    path = tmp_path / "acts.pt"
    a = torch.from_numpy(planted["a"])
    torch.save({"conv": a[:, :2], "logits": a[:, 2:]}, path)
    out, rc = _explain(tmp_path, "--activations", str(path), "--concepts", str(planted["csv"]),
                       "--no-report", "--min-fraction", "0.05")
    assert rc == 0
    recs = [json.loads(x) for x in (out / "explanations.jsonl").read_text().splitlines()]
    assert [(r["layer"], r["unit"]) for r in recs] == [("conv", "0"), ("conv", "1"),
                                                       ("logits", "0")]
    assert not (out / "report").exists()
    assert all(e["fraction"] >= 0.05 for r in recs for e in r["explanations"])


def test_report_rebuilds_from_output_folder(tmp_path, planted):
    out, rc = _explain(tmp_path, "--activations", str(planted["npy"]), "--concepts",
                       str(planted["csv"]), "--no-report")
    assert rc == 0 and not (out / "report").exists()
    assert main(["-q", "report", str(out), "--title", "My run"]) == 0
    index = (out / "report" / "index.html").read_text()
    assert "My run" in index
    assert len(list((out / "report" / "units").rglob("*.html"))) == 3


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("invert: error: ")
    assert "\n" not in err
    return err


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["explain", "--bogus"], "--bogus"),
        (["explain", "--out", "o", "--concepts", "c.csv"], "--activations"),
        (["explain", "--out", "o", "--concepts", "c.csv", "--activations", "missing.npy"],
         "missing.npy"),
        (["explain", "--out", "o", "--concepts", "c.csv", "--activations", "a.npy",
          "--length", "0"], "--length"),
        (["explain", "--out", "o", "--concepts", "c.csv", "--activations", "a.npy",
          "--min-fraction", "0.6", "--max-fraction", "0.5"], "--min-fraction"),
        (["explain", "--out", "o", "--concepts", "c.csv", "--model", "nomodel"], "--data"),
        (["frobnicate"], "frobnicate"),
        (["report"], "OUT"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert needle in _one_line_error(capsys)


def test_no_command_is_an_error(capsys):
    assert main([]) == 2
    _one_line_error(capsys)


def test_bad_input_exits_2(tmp_path, planted, capsys):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((5, 2, 2)))
    _, rc = _explain(tmp_path, "--activations", str(bad), "--concepts", str(planted["csv"]))
    assert rc == 2
    assert "shape" in _one_line_error(capsys)
    short = tmp_path / "short.npy"
    np.save(short, planted["a"][:10])
    table = planted["table"].copy()
    table["sample"] = [f"other{i}" for i in range(len(table))]
    table.to_csv(tmp_path / "other.csv", index=False)
    _, rc = _explain(tmp_path, "--activations", str(short), "--concepts",
                     str(tmp_path / "other.csv"))
    assert rc == 2
    assert "10" in _one_line_error(capsys)
    assert main(["report", str(tmp_path)]) == 2
    assert "run.json" in _one_line_error(capsys)


def test_help_and_version_exit_0(capsys):
    assert main(["--help"]) == 0
    assert "explain" in capsys.readouterr().out
    assert main(["--version"]) == 0
    assert "invert" in capsys.readouterr().out


def test_demo_missing_data_says_how_to_install(tmp_path, capsys):
    rc = main(["demo", "--stamps", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
    assert rc == 2
    err = _one_line_error(capsys)
    assert "apt-get install -y --no-install-recommends tuxpaint-stamps-default" in err \
        or "pip install" in err
