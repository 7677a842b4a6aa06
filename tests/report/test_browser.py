"""Open reports in headless Chromium: no console errors, units with formulas, plots, images.

Skipped without ``/usr/bin/chromium`` (Debian ``chromium``). The demo test is ``slow``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from invert.cli import main
from invert.report import build_report

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason="needs Debian chromium (apt-get install chromium)")
PIL = pytest.importorskip("PIL.Image")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--allow-file-access-from-files"]


def chromium(url: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp / f"profile{len(list(tmp.glob('profile*')))}"
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
           *args, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines()
            if "CONSOLE" in line and re.search(r"error|uncaught|failed", line, re.I)]


def check_report(index: Path, tmp: Path, unit_page: Path) -> None:
    res = chromium(index.as_uri(), tmp, "--dump-dom")
    assert res.returncode == 0, res.stderr[-2000:]
    assert console_errors(res.stderr) == []
    dom = res.stdout
    rows = re.findall(r"<tr data-layer=", dom)
    assert len(rows) > 0
    assert re.search(r'<span class="formula">[^<]+</span>', dom)
    assert "units shown" in dom  # the inline script ran
    res = chromium(unit_page.as_uri(), tmp, "--dump-dom")
    assert console_errors(res.stderr) == []
    assert res.stdout.count("<svg") >= 2
    srcs = re.findall(r'<img src="([^"]+)"', res.stdout)
    assert srcs and all((unit_page.parent / s).resolve().is_file() for s in srcs)
    shot = tmp / "unit.png"
    res = chromium(unit_page.as_uri(), tmp, f"--screenshot={shot}", "--window-size=1200,1400")
    assert shot.is_file(), res.stderr[-2000:]
    with PIL.open(shot) as im:
        px = np.asarray(im.convert("L"), dtype=np.float32)
    assert px.std() > 10, "the screenshot is blank"
    assert (px < 128).mean() > 0.005


def test_small_report_in_browser(tmp_path):
    rng = np.random.default_rng(0)
    imgs = tmp_path / "imgs"
    labels = []
    for cls, rgb in (("red", (220, 30, 30)), ("blue", (30, 30, 220))):
        (imgs / cls).mkdir(parents=True)
        for k in range(8):
            PIL.new("RGB", (32, 32), tuple(v + k for v in rgb)).save(imgs / cls / f"{k}.png")
            labels.append((f"{cls}/{k}.png", cls == "red", cls == "blue"))
    import pandas as pd

    pd.DataFrame(labels, columns=["sample", "red", "blue"]).to_csv(tmp_path / "c.csv",
                                                                   index=False)
    a = rng.normal(size=(16, 2)).astype(np.float32)
    a[:8, 0] += 4
    a[8:, 1] += 4
    np.save(tmp_path / "a.npy", a)
    out = tmp_path / "out"
    assert main(["-q", "explain", "--activations", str(tmp_path / "a.npy"), "--concepts",
                 str(tmp_path / "c.csv"), "--images", str(imgs), "--out", str(out),
                 "--length", "1"]) == 0
    check_report(out / "report" / "index.html", tmp_path, out / "report" / "units" / "a" /
                 "0.html")


def _shot(page: Path, tmp: Path, name: str, size: str = "1400,1600") -> np.ndarray:
    shot = tmp / name
    res = chromium(page.as_uri(), tmp, f"--screenshot={shot}", f"--window-size={size}",
                   "--hide-scrollbars")
    assert shot.is_file(), res.stderr[-2000:]
    assert console_errors(res.stderr) == []
    with PIL.open(shot) as im:
        px = np.asarray(im.convert("RGB"), dtype=np.float32)
    assert px.std() > 10, "the screenshot is blank"
    return px


def test_full_report_in_browser(tmp_path):
    """Holdout, permutation test, spatial maps, skipped images, concept sources and hostile
    names: no console error, every feature in the DOM, nothing unescaped, screenshots."""
    from report_runs import HOSTILE, small_run
    from test_report_maps import _write_maps

    extra = {"skipped_images": [{"path": "x/broken.png", "error": HOSTILE}],
             "concept_sources": {"dog": {"word": "dogs", "path": "dogs"}}}
    r = small_run(tmp_path / "out", images=tmp_path / "imgs", hostile=True, extra=extra)
    _write_maps(r["out"], r["a"], crop=(40, 32))
    index = build_report(r["out"], progress=False)
    unit = r["out"] / "report" / "units" / "feat" / "0.html"
    for page in (index, unit):
        res = chromium(page.as_uri(), tmp_path, "--dump-dom")
        assert res.returncode == 0 and console_errors(res.stderr) == []
        dom = res.stdout
        n_scripts = 1 if page == index else 0  # sort.js on the index, nothing else
        assert dom.count("<script") == n_scripts and "<script>alert" not in dom
        assert "&lt;script&gt;" in dom
    dom = chromium(index.as_uri(), tmp_path, "--dump-dom").stdout
    assert "units shown" in dom and 'aria-label="AUROC distribution"' in dom
    assert ">q-value<" in dom and ">significant<" in dom and 'class="badge' in dom
    assert "1 image skipped" in dom and '<td class="strip">' in dom
    dom = chromium(unit.as_uri(), tmp_path, "--dump-dom").stdout
    assert "Search split" in dom and "Held-out split" in dom and 'class="heat"' in dom
    assert "from the word" in dom
    _shot(index, tmp_path, "index.png")
    px = _shot(unit, tmp_path, "unit.png")
    red = (px[..., 0] > 180) & (px[..., 1] < 90) & (px[..., 2] < 90)
    assert red.sum() > 20, "the heat maps are not drawn"


def test_report_without_images_in_browser(tmp_path):
    from report_runs import small_run

    r = small_run(tmp_path / "out")
    index = build_report(r["out"], progress=False)
    unit = r["out"] / "report" / "units" / "feat" / "0.html"
    for page in (index, unit):
        res = chromium(page.as_uri(), tmp_path, "--dump-dom")
        assert console_errors(res.stderr) == [] and "<img" not in res.stdout
    assert 'class="chip' in chromium(unit.as_uri(), tmp_path, "--dump-dom").stdout
    _shot(unit, tmp_path, "unit.png", "1200,1200")


@pytest.mark.slow
def test_demo_end_to_end_in_browser(tmp_path):
    pytest.importorskip("efficientnet_lite_pytorch")
    if not Path("/usr/share/tuxpaint/stamps").is_dir():
        pytest.skip("needs apt-get install -y --no-install-recommends tuxpaint-stamps-default")
    out = tmp_path / "demo"
    assert main(["-q", "demo", "--out", str(out)]) == 0
    for f in ("explanations.jsonl", "explanations.csv", "explanations.parquet", "run.json"):
        assert (out / f).is_file()
    recs = [json.loads(x) for x in (out / "explanations.jsonl").read_text().splitlines()]
    layers = {r["layer"] for r in recs}
    assert layers == {"_blocks.15", "_fc"}
    best = [r["explanations"][0]["auroc"] for r in recs if r["explanations"]]
    assert len(best) > 300 and np.median(best) > 0.75
    run = json.loads((out / "run.json").read_text())
    fc = next(lay for lay in run["layers"] if lay["name"] == "_fc")
    page = out / "report" / "units" / fc["slug"] / f"{fc['unit_ids'][0]}.html"
    check_report(out / "report" / "index.html", tmp_path, page)
