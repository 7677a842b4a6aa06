"""CLI habits (issue 12.4): -q/-v anywhere, warnings as one line each unless -q, a bare
``invert`` lists the commands, messages name CLI flags, the run says what it explains."""

from __future__ import annotations

import logging

import pytest

from invert.cli import main


def _explain(tmp_path, planted, *extra):
    return main(["explain", "--activations", str(planted["npy"]), "--concepts",
                 str(planted["csv"]), "--out", str(tmp_path / "out"), "--no-report",
                 "--length", "1", *extra])


def test_bare_invert_lists_the_commands(capsys):
    assert main([]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("invert: error: ") and "\n" not in err
    assert "demo, explain, report" in err


@pytest.mark.parametrize("where", ["before", "after"])
def test_quiet_before_or_after_the_command_silences_warnings_and_bars(tmp_path, planted,
                                                                     capsys, where):
    argv = ["explain", "--activations", str(planted["npy"]), "--concepts", str(planted["csv"]),
            "--out", str(tmp_path / "out"), "--no-report", "--length", "1"]
    argv = ["-q", *argv] if where == "before" else [*argv, "-q"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert "samples x" not in captured.out and "best units" in captured.out


def test_warnings_are_one_line_each_by_default(tmp_path, planted, capsys):
    assert _explain(tmp_path, planted) == 0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("invert: warning: ")]
    # 23 samples of the planted table have no concept; rows are matched by order
    assert any("23 sample(s) have no concept" in ln for ln in lines)
    assert any("rows matched by order" in ln for ln in lines)
    assert len(lines) == len(set(lines))
    assert all(len(ln) <= 320 for ln in lines)


def test_verbose_after_the_command_logs_more(tmp_path, planted, capsys):
    assert _explain(tmp_path, planted, "-v") == 0
    err = capsys.readouterr().err
    assert "INFO invert" in err
    assert logging.getLogger("invert").handlers == []  # removed again


def test_the_run_starts_with_what_it_explains(tmp_path, planted, capsys):
    assert _explain(tmp_path, planted, "--layer", "fc") == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith(
        "60 samples x 4 concepts (0 skipped: on fewer than 3 samples or on all), layers fc "
        "(3 units)")


def test_table_errors_name_no_python_parameters(tmp_path, planted, capsys):
    table = planted["table"].copy()
    table.loc[3, "cat"] = 7
    path = tmp_path / "bad.csv"
    table.to_csv(path, index=False)
    rc = main(["explain", "--activations", str(planted["npy"]), "--concepts", str(path),
               "--out", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("invert: error: --concepts: bad.csv:") and "is not 0/1" in err
    assert "errors=" not in err and "sample_column" not in err


def test_min_support_raises_min_fraction_and_is_recorded(tmp_path, planted):
    import json

    assert _explain(tmp_path, planted, "-q", "--min-support", "10") == 0
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["params"]["min_support"] == 10
    assert run["params"]["min_fraction"] == pytest.approx(9.5 / 60)
    recs = [json.loads(x) for x in (tmp_path / "out" / "explanations.jsonl").read_text()
            .splitlines()]
    assert all(e["support"] >= 10 for r in recs for e in r["explanations"])
    assert _explain(tmp_path, planted, "-q", "--min-support", "40") == 2


def test_formulas_of_single_samples_are_warned_about_and_ranked_last(tmp_path, planted,
                                                                     capsys):
    """With the safe defaults lowered, one concept per sample fits every unit at AUROC 1."""
    table = planted["table"].copy()
    for i in range(60):
        table[f"file{i}"] = (table.index == i).astype(int)
    path = tmp_path / "files.csv"
    table.to_csv(path, index=False)
    rc = main(["explain", "--activations", str(planted["npy"]), "--concepts", str(path),
               "--out", str(tmp_path / "out"), "--no-report", "--length", "1", "--layer",
               "fc", "--min-concept-samples", "1", "--min-support", "1"])
    assert rc == 0
    captured = capsys.readouterr()
    assert "holds on 2 or fewer samples" in captured.err
    assert "median best AUROC 1.000" in captured.err
    row = next(ln for ln in captured.out.splitlines() if ln.startswith("fc "))
    assert row.split("  ")[-1].startswith("0: cat [")  # support 12 before support 1


def test_safe_defaults_drop_single_sample_concepts(tmp_path, planted, capsys):
    table = planted["table"].copy()
    for i in range(60):
        table[f"file{i}"] = (table.index == i).astype(int)
    path = tmp_path / "files.csv"
    table.to_csv(path, index=False)
    rc = main(["-q", "explain", "--activations", str(planted["npy"]), "--concepts", str(path),
               "--out", str(tmp_path / "out"), "--no-report", "--length", "1"])
    assert rc == 0
    import json

    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["concepts"]["names"] == ["cat", "dog", "bird", "tree"]
