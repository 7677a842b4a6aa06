"""The plain-text summary of a run, and the warnings about formulas that hold on very few
samples.

Units are ranked by what does not put a formula that fits one or two samples first: the
held-out AUROC where there is a holdout, else the lower end of the AUROC's 95% confidence
interval (:func:`invert.trust.auroc_ci`, from the formula's support)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..engine.result import rank_score

__all__ = ["summary_table", "rank_score", "support_warnings", "TINY_SUPPORT"]

#: A best formula holding on this many samples or fewer is warned about.
TINY_SUPPORT = 2
#: A layer whose median best AUROC is this high, with a median support this small, is too.
SUSPECT_AUROC = 0.99
SUSPECT_SUPPORT = 5


def _shown(e: Any) -> str:
    held = e.extras.get("holdout_auroc")
    if held is not None and math.isfinite(held):
        return f"[{e.auroc:.3f}, held-out {held:.3f}]"
    return f"[{e.auroc:.3f}, support {e.support}]"


def summary_table(results: dict[str, Any], unit_labels: dict[str, list[str]] | None = None,
                  top: int = 3) -> str:
    """A plain-text summary: per layer, units explained, median AUROC, the best units
    (ranked by :func:`rank_score`)."""
    lines = [f"{'layer':<14} {'units':>6} {'explained':>9} {'median AUROC':>12}  best units"]
    for layer, res in results.items():
        mode = res.params.get("mode", "positive")
        ok = [(u.unit_id, u.best, k) for k, u in enumerate(res.units) if u.best is not None]
        med = float(np.median([e.auroc for _, e, _ in ok])) if ok else math.nan
        ok.sort(key=lambda t: -rank_score(t[1], mode))
        lab = (unit_labels or {}).get(layer)
        tops = [f"{uid}{f' ({lab[k]})' if lab else ''}: {e.formula} {_shown(e)}"
                for uid, e, k in ok[:top]]
        shown = layer or "output"
        lines.append(f"{shown:<14} {len(res):>6} {len(ok):>9} {med:>12.3f}  "
                     + ("; ".join(tops) if tops else "-"))
    return "\n".join(lines)


def support_warnings(results: dict[str, Any]) -> list[str]:
    """One line per layer whose best formulas hold on very few samples: units whose best
    formula has support <= :data:`TINY_SUPPORT`, or a median best AUROC >= 0.99 with a
    median support <= :data:`SUSPECT_SUPPORT`."""
    out = []
    for layer, res in results.items():
        best = [(u.unit_id, u.best) for u in res.units if u.best is not None]
        if not best:
            continue
        name = layer or "output"
        tiny = [(uid, e) for uid, e in best if e.support <= TINY_SUPPORT]
        if tiny:
            eg = ", ".join(f"{uid}: {e.formula} (support {e.support})" for uid, e in tiny[:3])
            out.append(f"layer {name}: the best formula of {len(tiny)} of {len(best)} units "
                       f"holds on {TINY_SUPPORT} or fewer samples, e.g. {eg}; such labels fit "
                       "single samples (raise --min-support, use --holdout)")
        med_auc = float(np.median([e.auroc for _, e in best]))
        med_sup = float(np.median([e.support for _, e in best]))
        if med_auc >= SUSPECT_AUROC and med_sup <= SUSPECT_SUPPORT:
            out.append(f"layer {name}: median best AUROC {med_auc:.3f} with a median support "
                       f"of {med_sup:g} samples: the formulas likely pick out a few samples, "
                       "not a concept (raise --min-support or --min-concept-samples)")
    return out
