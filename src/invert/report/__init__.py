"""Output folders and the static HTML report of invert runs.

- :func:`save_run` writes ``explanations.jsonl`` / ``.csv`` / ``.parquet``, ``run.json``, the
  activations and the concept set into an output folder; :func:`load_run` reads it back.
- :func:`build_report` writes ``OUT/report/`` (index + one page per unit), static and offline.
- :func:`auroc_ci` is the Hanley-McNeil interval shown next to each AUROC.

Needs the ``cli`` extra (jinja2, pandas, pyarrow; Pillow for thumbnails).
"""

from .html import build_report
from .outputs import RunData, layer_slug, load_run, save_run, unit_slug
from .plots import auroc_ci, histogram_svg, roc_curve, roc_svg

__all__ = [
    "build_report",
    "save_run",
    "load_run",
    "RunData",
    "layer_slug",
    "unit_slug",
    "auroc_ci",
    "roc_curve",
    "histogram_svg",
    "roc_svg",
]
