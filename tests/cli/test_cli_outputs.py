"""The output folder is written whole or not at all (issue 14 D), and unwritable folders are
one-line errors before any work (issue 14 G)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pandas as pd
import pytest

from invert.cli import main
from invert.workflow import outputs


def _explain(out, planted, *extra, report=False):
    return main(["-q", "explain", "--activations", str(planted["npy"]), "--concepts",
                 str(planted["csv"]), "--out", str(out), "--length", "1",
                 *([] if report else ["--no-report"]), *extra])


def _snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file()}


def _leftovers(out: Path) -> list[str]:
    return [p.name for p in out.parent.iterdir() if ".invert-" in p.name] + \
        [p.name for p in out.iterdir() if ".invert-" in p.name or p.name.endswith(".tmp")]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("invert: error: ") and "\n" not in err, err
    return err


def test_a_full_disk_mid_way_leaves_the_previous_outputs_whole(tmp_path, planted, capsys,
                                                               monkeypatch):
    out = tmp_path / "out"
    assert _explain(out, planted, report=True) == 0
    before = _snapshot(out)
    assert "explanations.jsonl" in before and "report/index.html" in before

    def disk_full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", disk_full)  # after the .jsonl and .csv
    capsys.readouterr()
    assert _explain(out, planted, "--length", "2", report=True) == 2
    err = _one_line_error(capsys)
    assert "No space left on device" in err and "--out" in err and "unchanged" in err
    assert _snapshot(out) == before
    assert _leftovers(out) == []


def test_an_interrupted_run_leaves_the_previous_outputs_whole(tmp_path, planted, capsys,
                                                              monkeypatch):
    out = tmp_path / "out"
    assert _explain(out, planted) == 0
    before = _snapshot(out)

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, "to_csv", interrupt)
    assert _explain(out, planted, "--length", "2") == 130
    assert _snapshot(out) == before
    assert _leftovers(out) == []


def test_a_new_output_folder_appears_only_when_complete(tmp_path, planted, monkeypatch):
    out = tmp_path / "new" / "out"
    monkeypatch.setattr(pd.DataFrame, "to_parquet", lambda *a, **k: (_ for _ in ()).throw(
        OSError(errno.ENOSPC, "No space left on device")))
    assert _explain(out, planted) == 2
    assert not out.exists()
    monkeypatch.undo()
    assert _explain(out, planted) == 0
    assert {"run.json", "explanations.jsonl", "explanations.csv",
            "explanations.parquet"} <= set(os.listdir(out))


def test_rerun_replaces_the_outputs(tmp_path, planted):
    out = tmp_path / "out"
    assert _explain(out, planted, report=True) == 0
    (out / "notes.txt").write_text("mine")
    assert _explain(out, planted, "--length", "2", report=True) == 0
    assert (out / "notes.txt").read_text() == "mine"  # other files are left alone
    assert (out / "report" / "index.html").is_file()
    assert _leftovers(out) == []


def test_unwritable_out_is_a_one_line_error_before_any_work(tmp_path, planted, capsys,
                                                            monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path))

    monkeypatch.setattr(outputs.tempfile, "mkdtemp", refuse)
    monkeypatch.setattr("invert.workflow.load_concepts", lambda *a, **k: pytest.fail("ran"))
    assert _explain(tmp_path / "out", planted) == 2
    err = _one_line_error(capsys)
    assert "--out" in err and "Permission denied" in err


def test_out_that_is_a_file_is_a_one_line_error(tmp_path, planted, capsys):
    f = tmp_path / "out"
    f.write_text("x")
    assert _explain(f, planted) == 2
    assert "--out" in _one_line_error(capsys)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_and_cache_dir(tmp_path, planted, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert _explain(ro, planted) == 2
        assert "Permission denied" in _one_line_error(capsys)
        assert _explain(ro / "out", planted) == 2
        assert "Permission denied" in _one_line_error(capsys)
    finally:
        ro.chmod(0o755)


def test_unwritable_cache_dir_is_a_one_line_error(tmp_path, planted, capsys, monkeypatch):
    cache = tmp_path / "cache"
    real = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if self == cache:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    assert _explain(tmp_path / "out", planted, "--cache-dir", str(cache)) == 2
    err = _one_line_error(capsys)
    assert "--cache-dir" in err and "Permission denied" in err
    assert _explain(tmp_path / "out", planted, "--cache-dir",
                    str(planted["npy"] / "cache")) == 2
    assert "--cache-dir" in _one_line_error(capsys)


def test_staging_folders_of_killed_runs_are_cleaned_up(tmp_path, planted):
    out = tmp_path / "out"
    stale = tmp_path / ".out.invert-staging-999999999-x1"
    (stale / "report").mkdir(parents=True)
    mine = tmp_path / f".out.invert-staging-{os.getpid()}-x2"  # a live process: kept
    mine.mkdir()
    assert _explain(out, planted) == 0
    assert not stale.exists() and mine.exists()
