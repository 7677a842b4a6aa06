"""No silent misalignment (issue 14 B): sample ids are text, and any mismatch is an error
unless ``--match-by-order``; matching by order when one side has no ids is said."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from invert.cli import main


def _acts_csv(tmp_path, a, ids, name="acts.csv"):
    df = pd.DataFrame(a, columns=["u0", "u1", "u2"])
    df.insert(0, "sample", ids)
    path = tmp_path / name
    df.to_csv(path, index=False)
    return path


def _concepts_csv(tmp_path, planted, ids, order=None, name="c.csv"):
    table = planted["table"].copy()
    table["sample"] = ids
    if order is not None:
        table = table.iloc[order]
    path = tmp_path / name
    table.to_csv(path, index=False)
    return path


def _run(tmp_path, acts, concepts, *extra):
    out = tmp_path / "out"
    rc = main(["explain", "--activations", str(acts), "--concepts", str(concepts),
               "--out", str(out), "--no-report", "--length", "1", *extra])
    return out, rc


def _best(out):
    recs = [json.loads(x) for x in (out / "explanations.jsonl").read_text().splitlines()]
    return {r["unit"]: r["explanations"][0] for r in recs}


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("invert: error: ")
    return err[-1]


def test_zero_padded_ids_and_reversed_rows_line_up_by_id(tmp_path, planted, capsys):
    ids = [f"{i:03d}" for i in range(len(planted["ids"]))]  # "007" must not become 7
    acts = _acts_csv(tmp_path, planted["a"], ids)
    concepts = _concepts_csv(tmp_path, planted, ids, order=np.arange(len(ids))[::-1])
    out, rc = _run(tmp_path, acts, concepts)
    assert rc == 0
    best = _best(out)
    assert best["u0"]["formula"] == "cat" and best["u0"]["auroc"] > 0.99
    run = json.loads((out / "run.json").read_text())
    assert run["sample_ids"][:3] == ["000", "001", "002"]
    assert run["sample_matching"]["by"] == "id"


@pytest.mark.parametrize("n_unknown", [1, 30, 60])
def test_unknown_ids_are_an_error_naming_how_many(tmp_path, planted, capsys, n_unknown):
    ids = list(planted["ids"])
    acts_ids = [f"x{i}" if i < n_unknown else s for i, s in enumerate(ids)]
    perm = np.random.default_rng(0).permutation(len(ids))
    acts = _acts_csv(tmp_path, planted["a"][perm], [acts_ids[i] for i in perm])
    concepts = _concepts_csv(tmp_path, planted, ids)
    out, rc = _run(tmp_path, acts, concepts)
    assert rc == 2
    err = _error(capsys)
    assert f"{n_unknown} of the 60 activation samples have no concept row" in err
    assert "'x" in err and "--match-by-order" in err
    assert not out.exists()


def test_match_by_order_matches_differing_ids_by_position_and_says_so(tmp_path, planted,
                                                                     capsys):
    acts = _acts_csv(tmp_path, planted["a"], [f"other{i}" for i in range(60)])
    concepts = _concepts_csv(tmp_path, planted, planted["ids"])
    out, rc = _run(tmp_path, acts, concepts, "--match-by-order")
    assert rc == 0
    assert "matched by order" in capsys.readouterr().err
    assert _best(out)["u0"]["formula"] == "cat"
    run = json.loads((out / "run.json").read_text())
    assert run["sample_matching"]["by"] == "order"
    assert "--match-by-order" in run["sample_matching"]["note"]


def test_npy_without_ids_and_a_table_with_ids_is_matched_by_order_out_loud(tmp_path, planted,
                                                                          capsys):
    perm = np.random.default_rng(1).permutation(60)
    concepts = _concepts_csv(tmp_path, planted, planted["ids"], order=perm)
    out, rc = _run(tmp_path, planted["npy"], concepts)
    assert rc == 0
    err = capsys.readouterr().err
    assert "invert: warning: the activations have no sample ids; rows matched by order" in err
    run = json.loads((out / "run.json").read_text())
    assert run["sample_matching"] == {"by": "order", "concept_rows_left_out": 0,
                                      "note": "the activations have no sample ids; rows "
                                              "matched by order"}


def test_a_table_without_sample_column_needs_match_by_order(tmp_path, planted, capsys):
    table = planted["table"].drop(columns=["sample"])
    path = tmp_path / "nosample.csv"
    table.to_csv(path, index=False)
    _, rc = _run(tmp_path, planted["npy"], path)
    assert rc == 2
    err = _error(capsys)
    assert "'sample' column" in err and "--match-by-order" in err and "sample_column" not in err
    out, rc = _run(tmp_path, planted["npy"], path, "--match-by-order")
    assert rc == 0 and _best(out)["0"]["formula"] == "cat"


def test_extra_concept_rows_are_left_out_with_a_warning(tmp_path, planted, capsys):
    ids = planted["ids"]
    acts = _acts_csv(tmp_path, planted["a"][:50], ids[:50])
    concepts = _concepts_csv(tmp_path, planted, ids)
    out, rc = _run(tmp_path, acts, concepts)
    assert rc == 0
    assert "10 concept row(s) have no activation row" in capsys.readouterr().err
    assert json.loads((out / "run.json").read_text())["sample_matching"][
        "concept_rows_left_out"] == 10


def test_duplicate_activation_ids_are_an_error(tmp_path, planted, capsys):
    ids = list(planted["ids"])
    ids[1] = ids[0]
    acts = _acts_csv(tmp_path, planted["a"], ids)
    _, rc = _run(tmp_path, acts, _concepts_csv(tmp_path, planted, planted["ids"]))
    assert rc == 2 and "more than once" in _error(capsys)
