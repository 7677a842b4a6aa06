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
