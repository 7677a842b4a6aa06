"""The report shows each unit's ceiling (issue 13): the unit page against the best formula's
AUROC, the index as a sortable column with the gap."""

from __future__ import annotations

import json

import numpy as np

import invert
from invert.concepts import ConceptSet
from invert.report import build_report, save_run


def test_ceiling_on_unit_pages_and_index(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.random((300, 6)) < 0.2
    a = np.stack([y[:, 1] * 2.0 + rng.standard_normal(300), rng.standard_normal(300)], 1)
    cs = ConceptSet(y, [f"c{j}" for j in range(6)])
    res = invert.explain(a, cs, length=2, beam_size=3, min_fraction=0.02)
    assert np.all(res.ceiling >= np.array([u[0].auroc for u in res.units]) - 1e-12)
    save_run(tmp_path, {"L": res}, {"L": a}, cs)
    rec = json.loads((tmp_path / "explanations.jsonl").read_text().splitlines()[0])
    assert abs(rec["ceiling"] - res.ceiling[0]) < 1e-12
    build_report(tmp_path, progress=False)
    index = (tmp_path / "report" / "index.html").read_text()
    assert "ceiling (gap)" in index and f"{res.ceiling[0]:.3f}" in index
    pages = sorted((tmp_path / "report" / "units").rglob("*.html"))
    page = pages[0].read_text()
    assert 'id="ceiling"' in page and f"{res.ceiling[0]:.3f}" in page
    gap = res.ceiling[0] - res[0][0].auroc
    assert f"gap of the best formula {gap:.3f}" in page
