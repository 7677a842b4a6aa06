"""The index page's rows and its per-layer summary."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from .plots import auroc_distribution_svg

__all__ = ["index_row", "layer_summaries", "skipped_list", "N_STRIP"]

#: Thumbnails per unit in the index's exemplar strip.
N_STRIP = 5
#: Concepts listed per layer as explaining the most units.
N_TOP_CONCEPTS = 8


def index_row(u: dict[str, Any], idx: int, page: dict[str, Any]) -> dict[str, Any]:
    """One row of the index table (the unit page's figures that the index shows)."""
    keys = ("formula", "auroc", "ci", "ci_low", "log10_p", "p_text", "fraction", "support",
            "reason", "holdout_auroc", "holdout_ci", "holdout_ci_low", "status",
            "status_text", "q_value", "significant", "badges", "ceiling", "gap", "certified",
            "top_precision", "top_q", "filler")
    row = {k: page.get(k) for k in keys}
    row.update(layer=u["layer"], layer_display=u["layer_display"], unit=u["unit"],
               order=idx, label=u["label"], href=u["href"], search_p=page.get("search_p_value"),
               concepts=[h["name"] for h in page.get("hierarchy") or []],
               strip=[{"thumb": e["thumb"], "sid": e["sid"], "inside": e["inside"]}
                      for e in page.get("top", [])[:N_STRIP] if e.get("thumb")])
    return row


def _summary(layer: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    explained = [r for r in rows if r["formula"]]
    aurocs = [r["auroc"] for r in explained if r["auroc"] is not None]
    held = [r["holdout_auroc"] for r in explained if r["holdout_auroc"] is not None]
    tested = [r for r in explained if r["significant"] is not None]
    judged = [r for r in explained if r["status"] is not None]
    concepts = Counter(c for r in explained for c in set(r["concepts"]))
    return {
        "name": layer["name"], "display": layer["name"] or "output",
        "n_units": len(rows), "n_explained": len(explained),
        "n_tested": len(tested), "n_significant": sum(bool(r["significant"]) for r in tested),
        "n_judged": len(judged),
        "n_holds": sum(r["status"] == "holds" for r in judged),
        "n_fails": sum(r["status"] == "fails" for r in judged),
        "n_both": sum(bool(r["significant"]) and r["status"] == "holds" for r in explained),
        "median_auroc": _median(aurocs), "median_holdout": _median(held),
        "top_concepts": concepts.most_common(N_TOP_CONCEPTS),
        "plot": auroc_distribution_svg(aurocs, held if held else None) if aurocs else None,
    }


def _median(xs: list[float]) -> float | None:
    xs = sorted(x for x in xs if x == x)
    if not xs:
        return None
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2


def layer_summaries(layers: list[dict[str, Any]], rows: list[dict[str, Any]]
                    ) -> list[dict[str, Any]]:
    """Per layer: units explained, significant, holding up out of sample, the concepts in
    the most best formulas and the AUROC distribution (inline SVG)."""
    return [_summary(lay, [r for r in rows if r["layer"] == lay["name"]]) for lay in layers]


def skipped_list(meta: dict[str, Any]) -> list[dict[str, str | None]]:
    """``run.json``'s ``skipped_images``: a list of paths, or of ``{"path", "error"}``."""
    raw = meta.get("skipped_images") or []
    out: list[dict[str, str | None]] = []
    for item in raw if isinstance(raw, list) else []:
        if isinstance(item, dict):
            err = item.get("error", item.get("reason"))
            out.append({"path": str(item.get("path", "?")),
                        "error": None if err is None else str(err)})
        else:
            out.append({"path": str(item), "error": None})
    return out


def subtitle_params(params: dict[str, Any]) -> str:
    """``formulas up to length 3, beam 5, ...`` from the run's parameters."""
    bits = [f"formulas up to length {params.get('length', '-')}",
            f"beam {params.get('beam_size', '-')}",
            f"fraction in [{params.get('min_fraction', '-')}, {params.get('max_fraction', '-')}]",
            f"mode {params.get('mode', 'positive')}"]
    if params.get("holdout") is not None:
        bits.append(f"holdout {params['holdout']}")
    if params.get("permutations"):
        bits.append(f"{params['permutations']} permutations")
    return re.sub(r"\s+", " ", ", ".join(bits))
