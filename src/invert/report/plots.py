"""Small, dependency-free plots for the report: inline SVG strings, plus the AUROC interval.

Inline SVG keeps the report one static folder, fast to write (hundreds of unit pages in
seconds) and crisp at any zoom; no matplotlib is needed.
"""

from __future__ import annotations

import math
from html import escape

import numpy as np

from ..trust.metrics import auroc_ci

__all__ = ["auroc_ci", "roc_curve", "histogram_svg", "roc_svg", "auroc_distribution_svg"]

INSIDE = "#d95f02"
OUTSIDE = "#1b9e77"
HELD = "#7570b3"


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates over all thresholds (ties grouped), from (0, 0) to (1, 1)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return np.array([0.0, 1.0]), np.array([0.0, 1.0])
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    tp = np.cumsum(y)
    fp = np.cumsum(~y)
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]
    fpr = np.r_[0.0, fp[last] / n0]
    tpr = np.r_[0.0, tp[last] / n1]
    return fpr, tpr


def _fmt(x: float) -> str:
    if x == 0 or not math.isfinite(x):
        return "0"
    if abs(x) >= 1000 or abs(x) < 0.01:
        return f"{x:.2g}"
    return f"{x:.3g}"


def histogram_svg(
    values: np.ndarray,
    mask: np.ndarray,
    *,
    bins: int = 30,
    width: int = 420,
    height: int = 220,
    inside_label: str = "inside formula",
    outside_label: str = "outside",
) -> str:
    """Overlaid, separately normalised histograms of ``values`` inside vs outside ``mask``."""
    v = np.asarray(values, dtype=np.float64)
    m = np.asarray(mask, dtype=bool)
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    hin = np.histogram(v[m], edges)[0].astype(float)
    hout = np.histogram(v[~m], edges)[0].astype(float)
    hin /= max(1.0, hin.sum())
    hout /= max(1.0, hout.sum())
    top = max(float(hin.max(initial=0)), float(hout.max(initial=0)), 1e-12)
    ml, mr, mt, mb = 40, 10, 24, 34
    pw, ph = width - ml - mr, height - mt - mb

    def path(h: np.ndarray) -> str:
        pts = [f"M{ml},{mt + ph}"]
        for k in range(bins):
            x0 = ml + pw * k / bins
            x1 = ml + pw * (k + 1) / bins
            y = mt + ph - ph * h[k] / top
            pts.append(f"L{x0:.1f},{y:.1f}L{x1:.1f},{y:.1f}")
        pts.append(f"L{ml + pw},{mt + ph}Z")
        return "".join(pts)

    parts = [
        f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="activation histogram">',
        f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#ccc"/>',
        f'<path d="{path(hout)}" fill="{OUTSIDE}" fill-opacity="0.45" stroke="{OUTSIDE}"/>',
        f'<path d="{path(hin)}" fill="{INSIDE}" fill-opacity="0.45" stroke="{INSIDE}"/>',
        f'<text x="{ml}" y="{height - 18}" font-size="11">{_fmt(lo)}</text>',
        f'<text x="{ml + pw}" y="{height - 18}" font-size="11" text-anchor="end">{_fmt(hi)}'
        "</text>",
        f'<text x="{ml + pw / 2}" y="{height - 4}" font-size="11" text-anchor="middle">'
        "activation</text>",
        f'<text x="12" y="{mt + ph / 2}" font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 12 {mt + ph / 2})">share of samples</text>',
        f'<rect x="{ml + 6}" y="6" width="10" height="10" fill="{INSIDE}" fill-opacity="0.6"/>',
        f'<text x="{ml + 20}" y="15" font-size="11">{escape(inside_label)} '
        f"(n={int(m.sum())})</text>",
        f'<rect x="{ml + pw / 2 + 20}" y="6" width="10" height="10" fill="{OUTSIDE}" '
        'fill-opacity="0.6"/>',
        f'<text x="{ml + pw / 2 + 34}" y="15" font-size="11">{escape(outside_label)} '
        f"(n={int((~m).sum())})</text>",
        "</svg>",
    ]
    return "".join(parts)


def roc_svg(values: np.ndarray, mask: np.ndarray, auroc: float | None = None,
            *, size: int = 220) -> str:
    """The ROC curve of the unit's activations as a score for membership in ``mask``."""
    fpr, tpr = roc_curve(values, mask)
    if len(fpr) > 400:  # thin for size; keep the ends
        idx = np.unique(np.r_[np.linspace(0, len(fpr) - 1, 400).astype(int), len(fpr) - 1])
        fpr, tpr = fpr[idx], tpr[idx]
    m = 30
    p = size - m - 8
    pts = " ".join(f"{m + p * x:.1f},{8 + p * (1 - y):.1f}" for x, y in zip(fpr, tpr,
                                                                             strict=True))
    label = "" if auroc is None or not math.isfinite(auroc) else f"AUROC {auroc:.3f}"
    return (
        f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {size} {size}" '
        f'width="{size}" height="{size}" role="img" aria-label="ROC curve">'
        f'<rect x="{m}" y="8" width="{p}" height="{p}" fill="#fafafa" stroke="#ccc"/>'
        f'<line x1="{m}" y1="{8 + p}" x2="{m + p}" y2="8" stroke="#bbb" stroke-dasharray="4 3"/>'
        f'<polyline points="{pts}" fill="none" stroke="{INSIDE}" stroke-width="2"/>'
        f'<text x="{m + p - 4}" y="{8 + p - 6}" font-size="12" text-anchor="end">{label}</text>'
        f'<text x="{m + p / 2}" y="{size - 2}" font-size="11" text-anchor="middle">'
        "false positive rate</text>"
        f'<text x="10" y="{8 + p / 2}" font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 10 {8 + p / 2})">true positive rate</text>'
        "</svg>"
    )


def _bin_range(values: list[np.ndarray], step: float) -> tuple[float, int]:
    """Lower edge (a multiple of 0.05, at most 0.5) and number of ``step`` bins up to 1."""
    finite = [v[np.isfinite(v)] for v in values]
    low = min([0.5] + [float(v.min()) for v in finite if v.size])
    low = max(0.0, math.floor(low / 0.05 + 1e-9) * 0.05)
    return low, max(1, round((1.0 - low) / step))


def auroc_distribution_svg(aurocs, held_out=None, *, width: int = 360, height: int = 170,
                           step: float = 0.025) -> str:
    """Histogram of the units' best AUROCs (bars) and, when given, their held-out AUROCs
    (an outline), in bins of ``step`` up to 1."""
    series = [np.asarray(aurocs, dtype=np.float64)]
    if held_out is not None:
        series.append(np.asarray(held_out, dtype=np.float64))
    low, bins = _bin_range(series, step)
    edges = np.linspace(low, 1.0, bins + 1)
    counts = [np.histogram(np.clip(v[np.isfinite(v)], low, 1.0), edges)[0] for v in series]
    top = max(1, *(int(c.max(initial=0)) for c in counts))
    ml, mr, mt, mb = 34, 8, 22, 30
    pw, ph = width - ml - mr, height - mt - mb
    bw = pw / bins
    parts = [
        f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="AUROC distribution">',
        f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#ccc"/>',
    ]
    for k, c in enumerate(counts[0]):
        if c:
            h = ph * c / top
            parts.append(f'<rect x="{ml + k * bw + 0.5:.1f}" y="{mt + ph - h:.1f}" '
                         f'width="{max(bw - 1, 0.5):.1f}" height="{h:.1f}" fill="{INSIDE}" '
                         'fill-opacity="0.7"/>')
    if len(counts) > 1:
        pts = [f"M{ml},{mt + ph}"]
        for k, c in enumerate(counts[1]):
            y = mt + ph - ph * c / top
            pts.append(f"L{ml + k * bw:.1f},{y:.1f}L{ml + (k + 1) * bw:.1f},{y:.1f}")
        pts.append(f"L{ml + pw},{mt + ph}")
        parts.append(f'<path d="{"".join(pts)}" fill="none" stroke="{HELD}" '
                     'stroke-width="1.6"/>')
    for x in np.arange(math.ceil(low * 10 - 1e-9) / 10, 1.0 + 1e-9, 0.1):
        px = ml + pw * (x - low) / (1.0 - low)
        parts.append(f'<text x="{px:.1f}" y="{mt + ph + 13}" font-size="10" '
                     f'text-anchor="middle">{x:.1f}</text>')
    parts += [
        f'<text x="{ml + pw / 2}" y="{height - 3}" font-size="11" text-anchor="middle">'
        "best AUROC per unit</text>",
        f'<text x="{ml - 4}" y="{mt + 8}" font-size="10" text-anchor="end">{top}</text>',
        f'<text x="{ml - 4}" y="{mt + ph}" font-size="10" text-anchor="end">0</text>',
        f'<rect x="{ml + 4}" y="6" width="10" height="10" fill="{INSIDE}" fill-opacity="0.7"/>',
        f'<text x="{ml + 18}" y="15" font-size="11">'
        f'{"search split" if len(series) > 1 else "units"} (n={int(np.isfinite(series[0]).sum())})'
        "</text>",
    ]
    if len(series) > 1:
        parts += [
            f'<line x1="{ml + pw / 2 + 10}" y1="11" x2="{ml + pw / 2 + 22}" y2="11" '
            f'stroke="{HELD}" stroke-width="2"/>',
            f'<text x="{ml + pw / 2 + 26}" y="15" font-size="11">held out '
            f"(n={int(np.isfinite(series[1]).sum())})</text>",
        ]
    parts.append("</svg>")
    return "".join(parts)
