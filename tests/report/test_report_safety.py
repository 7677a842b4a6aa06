"""Issue 14 F: ``invert report`` reads and writes only inside OUT (and the images folder),
whatever ``run.json`` says, and never deletes through a symbolic link."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from report_runs import small_run

from invert._validate import InvalidParameterError
from invert.cli import main
from invert.report import build_report

pytest.importorskip("jinja2")


def _edit_run(out, fn) -> None:
    run = json.loads((out / "run.json").read_text())
    fn(run)
    (out / "run.json").write_text(json.dumps(run))


def _tree(path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


def test_a_crafted_slug_writes_nothing_outside_out(tmp_path, capsys):
    deep = tmp_path / "a" / "b" / "c"
    out = small_run(deep / "out")["out"]
    before = _tree(tmp_path)

    def slug(run):
        run["layers"][0]["slug"] = "../../.."

    _edit_run(out, slug)
    with pytest.raises(InvalidParameterError, match="slug"):
        build_report(out, progress=False)
    assert main(["-q", "report", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("invert: error:") and "slug" in err and "\n" not in err.strip()
    assert _tree(tmp_path) == before  # not a file more, inside OUT or out


@pytest.mark.parametrize("where", ["relative", "absolute", "symlink"])
def test_an_activations_file_outside_out_is_refused(tmp_path, capsys, where):
    out = small_run(tmp_path / "out")["out"]
    secret = tmp_path / "secret.npy"
    np.save(secret, np.zeros((120, 3), dtype=np.float32))
    name = {"relative": "../secret.npy", "absolute": str(secret), "symlink": "link.npy"}[where]
    if where == "symlink":
        os.symlink(secret, out / "link.npy")

    def acts(run):
        run["layers"][0]["activations"] = name

    _edit_run(out, acts)
    with pytest.raises(InvalidParameterError, match="activations"):
        build_report(out, progress=False)
    assert main(["-q", "report", str(out)]) == 2
    assert "activations" in capsys.readouterr().err
    assert not (out / "report").exists()


def test_concepts_and_maps_files_outside_out_are_refused(tmp_path):
    out = small_run(tmp_path / "out")["out"]

    def concepts(run):
        run["concepts"]["file"] = "../../elsewhere/concepts.npz"

    _edit_run(out, concepts)
    with pytest.raises(InvalidParameterError, match="concepts"):
        build_report(out, progress=False)
    out = small_run(tmp_path / "out2")["out"]

    def maps(run):
        run["layers"][0]["maps"] = "../maps.npz"

    _edit_run(out, maps)
    with pytest.raises(InvalidParameterError, match="maps"):
        build_report(out, progress=False)


def test_a_thumbnail_outside_the_images_folder_is_refused(tmp_path):
    from PIL import Image

    pytest.importorskip("PIL")
    r = small_run(tmp_path / "out", images=tmp_path / "imgs")
    out = r["out"]
    (tmp_path / "secret").mkdir()
    Image.new("RGB", (30, 30), (255, 0, 0)).save(tmp_path / "secret" / "private.png")
    Image.new("RGB", (30, 30), (0, 0, 255)).save(tmp_path / "private2.png")
    top = int(np.argmax(r["a"][:, 0]))
    second = int(np.argsort(-r["a"][:, 0])[1])

    def ids(run):
        run["sample_ids"][top] = "../secret/private.png"
        run["sample_ids"][second] = str(tmp_path / "private2.png")

    _edit_run(out, ids)
    build_report(out, images_root=tmp_path / "imgs", progress=False)
    thumbs = out / "report" / "assets" / "thumbs"
    assert not (thumbs / f"{top}.jpg").exists() and not (thumbs / f"{second}.jpg").exists()
    assert len(list(thumbs.glob("*.jpg"))) > 5  # the others are shown
    page = (out / "report" / "units" / "feat" / "0.html").read_text()
    assert "../secret/private.png" in page  # named, not shown
    assert f"thumbs/{top}.jpg" not in page
    index = (out / "report" / "index.html").read_text()
    assert "2 sample ids lead outside the images folder" in index


def test_a_symlinked_report_folder_is_not_followed(tmp_path):
    out = small_run(tmp_path / "out")["out"]
    target = tmp_path / "precious"
    (target / "units" / "keep").mkdir(parents=True)
    (target / "units" / "keep" / "data.txt").write_text("mine")
    (target / "index.html").write_text("my page")
    (out / "report").symlink_to(target, target_is_directory=True)
    path = build_report(out, progress=False)
    assert (target / "units" / "keep" / "data.txt").read_text() == "mine"
    assert (target / "index.html").read_text() == "my page"
    assert _tree(target) == {"units", "units/keep", "units/keep/data.txt", "index.html"}
    rep = out / "report"
    assert not rep.is_symlink() and rep.is_dir() and path == rep.resolve() / "index.html"
    assert (rep / "units" / "feat" / "0.html").is_file()


def test_symlinks_inside_the_report_folder_are_not_followed(tmp_path):
    out = small_run(tmp_path / "out")["out"]
    build_report(out, progress=False)
    rep = out / "report"
    victim = tmp_path / "victim"
    (victim / "sub").mkdir(parents=True)
    (victim / "sub" / "x.txt").write_text("keep")
    outside_file = tmp_path / "notes.txt"
    outside_file.write_text("keep me")
    import shutil

    shutil.rmtree(rep / "units")
    (rep / "units").symlink_to(victim, target_is_directory=True)
    (rep / "index.html").unlink()
    (rep / "index.html").symlink_to(outside_file)
    shutil.rmtree(rep / "assets")
    (rep / "assets").symlink_to(victim, target_is_directory=True)
    build_report(out, progress=False)
    assert (victim / "sub" / "x.txt").read_text() == "keep"
    assert _tree(victim) == {"sub", "sub/x.txt"}
    assert outside_file.read_text() == "keep me"
    for p in (rep / "units", rep / "index.html", rep / "assets"):
        assert not p.is_symlink()
