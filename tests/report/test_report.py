"""The report's statistics helpers and the written pages."""

from __future__ import annotations

import math

import numpy as np
import pytest

from invert.report import auroc_ci, histogram_svg, roc_curve, roc_svg


def test_auroc_ci_matches_hanley_mcneil_and_shrinks_with_n():
    # Hanley & McNeil (1982), eq. 2: A = 0.8, n1 = n0 = 50: SE = sqrt(4.951 / 2500) = 0.0445
    lo, hi = auroc_ci(0.8, 50, 50)
    se = (hi - lo) / (2 * 1.959964)
    assert se == pytest.approx(0.04450, abs=1e-4)
    assert lo < 0.8 < hi
    lo2, hi2 = auroc_ci(0.8, 500, 500)
    assert hi2 - lo2 < hi - lo
    assert auroc_ci(1.0, 5, 5) == (1.0, 1.0)
    assert all(math.isnan(x) for x in auroc_ci(0.7, 0, 10))
    with pytest.raises(ValueError):
        auroc_ci(0.7, 5, 5, level=1.5)


def test_roc_curve_area_is_the_auroc():
    rng = np.random.default_rng(0)
    y = rng.random(200) < 0.3
    s = rng.normal(size=200) + y + np.round(rng.normal(size=200), 1) * 0  # with ties
    s = np.round(s, 1)
    fpr, tpr = roc_curve(s, y)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    from scipy.stats import mannwhitneyu

    u = mannwhitneyu(s[y], s[~y]).statistic / (y.sum() * (~y).sum())
    assert area == pytest.approx(u, abs=1e-12)


def test_svg_plots_are_well_formed():
    import xml.etree.ElementTree as ET

    v = np.r_[np.zeros(10), np.ones(10)]
    m = v > 0.5
    for svg in (histogram_svg(v, m), roc_svg(v, m, 1.0), histogram_svg(np.zeros(5), m[:5])):
        root = ET.fromstring(svg)
        assert root.tag.endswith("svg")
    assert "n=10" in histogram_svg(v, m)
