"""The error contract of ``invert``: user errors exit 2 with one line, bugs keep their traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from invert import workflow
from invert._validate import InvalidParameterError, bad
from invert.cli import is_user_error, main


def _explain(tmp_path, planted):
    return main(["-q", "explain", "--activations", str(planted["npy"]), "--concepts",
                 str(planted["csv"]), "--out", str(tmp_path / "out"), "--no-report"])


def _raise(err):
    def fail(*args, **kwargs):
        raise err

    return fail


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("invert: error: ")
    assert "\n" not in err
    return err


@pytest.mark.parametrize("err", [ValueError("boom"), TypeError("boom"), KeyError("boom"),
                                 ImportError("boom"), RuntimeError("boom")])
def test_an_internal_error_propagates(err, tmp_path, planted, monkeypatch, capsys):
    monkeypatch.setattr(workflow, "save_run", _raise(err))
    with pytest.raises(type(err), match="boom"):
        _explain(tmp_path, planted)
    assert "invert: error" not in capsys.readouterr().err


def test_an_internal_error_in_the_search_propagates(tmp_path, planted, monkeypatch):
    monkeypatch.setattr(workflow, "explain", _raise(ValueError("boom")))
    with pytest.raises(ValueError, match="boom"):
        _explain(tmp_path, planted)


@pytest.mark.parametrize("err, needle", [
    (bad("length", "an integer >= 1", 0), "length: expected an integer >= 1, got 0"),
    (workflow.CommandError("--concepts: no concept"), "--concepts: no concept"),
    (FileNotFoundError("x.npy: not found"), "x.npy"),
    (PermissionError(13, "Permission denied", "/root/out"), "Permission denied"),
    (ImportError("the HTML report needs jinja2: pip install 'invert[cli]'"), "pip install"),
])
def test_a_user_error_exits_2_with_one_line(err, needle, tmp_path, planted, monkeypatch,
                                            capsys):
    monkeypatch.setattr(workflow, "save_run", _raise(err))
    assert _explain(tmp_path, planted) == 2
    assert needle in _one_line_error(capsys)


def test_is_user_error():
    assert is_user_error(InvalidParameterError("x: expected 1, got 2"))
    assert is_user_error(workflow.CommandError("x"))
    assert is_user_error(FileNotFoundError("x"))
    assert is_user_error(IsADirectoryError(21, "Is a directory", "out"))
    assert not is_user_error(OSError("no path named"))
    assert not is_user_error(ValueError("boom"))
    assert not is_user_error(TypeError("boom"))
    assert not is_user_error(ImportError("boom"))


def test_report_without_jinja2_names_the_install(tmp_path, planted, monkeypatch, capsys):
    assert _explain(tmp_path, planted) == 0
    from invert import cli

    monkeypatch.setattr(cli, "build_report", _raise(
        ImportError("the HTML report needs jinja2: pip install 'invert[cli]'")))
    assert main(["report", str(tmp_path / "out")]) == 2
    assert "pip install 'invert[cli]'" in _one_line_error(capsys)


def test_bad_activation_files_are_user_errors(tmp_path, planted, capsys):
    cases = {"text.npy": b"not a numpy file", "junk.pt": b"not a torch file",
             "strings.csv": b"sample,u0\ns0,abc\n"}
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        rc = main(["-q", "explain", "--activations", str(path), "--concepts",
                   str(planted["csv"]), "--out", str(tmp_path / "o"), "--no-report"])
        assert rc == 2, name
        assert "--activations" in _one_line_error(capsys)


def test_python_m_invert_shows_the_traceback_of_an_internal_error(tmp_path, planted):
    code = (
        "import runpy, sys\n"
        "import invert.workflow as w\n"
        "def boom(*a, **k):\n"
        "    raise ValueError('boom')\n"
        "w.save_run = boom\n"
        f"sys.argv = ['invert', '-q', 'explain', '--activations', {str(planted['npy'])!r},\n"
        f"            '--concepts', {str(planted['csv'])!r}, '--out', {str(tmp_path / 'o')!r},\n"
        "            '--no-report']\n"
        "runpy.run_module('invert', run_name='__main__')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "ValueError: boom" in proc.stderr
    assert "invert: error" not in proc.stderr
