"""`invert explain` with a holdout, the permutation test and another search metric."""

import json

import numpy as np
import pandas as pd

from invert.cli import main
from invert.engine.synthetic import make_layer


def _inputs(tmp_path):
    layer = make_layer(n_leaves=60, samples_per_leaf=15, n_hypernyms=25, n_units=5,
                       n_planted=4, seed=4)
    np.save(tmp_path / "a.npy", layer.activations)
    df = pd.DataFrame(layer.concepts.matrix.toarray().astype(int),
                      columns=layer.concepts.names)
    df.insert(0, "sample", range(len(df)))
    df.to_csv(tmp_path / "c.csv", index=False)
    return layer


def test_holdout_permutations_and_metric_reach_the_outputs(tmp_path):
    _inputs(tmp_path)
    out = tmp_path / "out"
    rc = main(["-q", "explain", "--activations", str(tmp_path / "a.npy"), "--concepts",
               str(tmp_path / "c.csv"), "--out", str(out), "--holdout", "0.5",
               "--random-state", "1", "--permutations", "30", "--no-report"])
    assert rc == 0
    recs = [json.loads(x) for x in (out / "explanations.jsonl").read_text().splitlines()]
    best = recs[0]["explanations"][0]
    for key in ("holdout_auroc", "holdout_auroc_ci_low", "holdout_p_value", "search_p_value",
                "q_value", "significant"):
        assert key in best, key
    assert 0 < best["search_p_value"] <= 1
    df = pd.read_csv(out / "explanations.csv")
    assert "holdout_auroc" in df.columns
    run = json.loads((out / "run.json").read_text())
    assert run["params"]["holdout"] == 0.5 and run["params"]["permutations"] == 30

    out2 = tmp_path / "out2"
    assert main(["-q", "explain", "--activations", str(tmp_path / "a.npy"), "--concepts",
                 str(tmp_path / "c.csv"), "--out", str(out2), "--metric", "point_biserial",
                 "--no-report"]) == 0
    rec = json.loads((out2 / "explanations.jsonl").read_text().splitlines()[0])
    assert "point_biserial" in rec["explanations"][0]


def test_bad_holdout_is_a_one_line_error(tmp_path, capsys):
    _inputs(tmp_path)
    rc = main(["explain", "--activations", str(tmp_path / "a.npy"), "--concepts",
               str(tmp_path / "c.csv"), "--out", str(tmp_path / "o"), "--holdout", "1.5"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("invert: error:") and "--holdout" in err and "\n" not in err
