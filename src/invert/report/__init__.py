"""Output folders and the static HTML report of invert runs.

- :func:`save_run` writes ``explanations.jsonl`` / ``.csv`` / ``.parquet``, ``run.json``, the
  activations and the concept set into an output folder; :func:`load_run` reads it back.
- :func:`build_report` writes ``OUT/report/`` (index + one page per unit), static and offline.
- :func:`auroc_score_ci` is the interval shown next to each AUROC (Newcombe's score
  interval, honest for few samples); :func:`auroc_ci` is the Hanley-McNeil (Wald) interval of
  :mod:`invert.trust`.

What each figure shows and which samples it uses: :mod:`invert.report.unit`; the spatial
maps file: :mod:`invert.report.maps`; what ``invert report`` reads and writes (only inside
the output folder): :mod:`invert.report.paths`.

Needs the ``cli`` extra (jinja2, pandas, pyarrow; Pillow for thumbnails).
"""

from .html import build_report
from .outputs import RunData, layer_slug, load_run, save_run, unit_slug
from .plots import auroc_ci, auroc_distribution_svg, histogram_svg, roc_curve, roc_svg
from .stats import auroc_score_ci, holdout_status

__all__ = [
    "build_report",
    "save_run",
    "load_run",
    "RunData",
    "layer_slug",
    "unit_slug",
    "auroc_ci",
    "auroc_score_ci",
    "holdout_status",
    "auroc_distribution_svg",
    "roc_curve",
    "histogram_svg",
    "roc_svg",
]
