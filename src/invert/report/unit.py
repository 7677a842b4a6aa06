"""What a unit page shows, computed from the run: every figure names the samples it uses.

Samples
    With a holdout (``holdout_*`` figures in the explanations), the search saw only the
    *search split*: its AUROC, p-value, support and fraction are of those samples, and the
    held-out figures of the rest. The split is read from the layer's ``holdout_index`` in
    ``run.json`` (sorted positions of the held-out samples, written by :func:`save_run`), else
    recomputed from ``params.holdout`` and ``params.random_state``
    (:func:`invert.trust.stratified_split`) and checked against each unit's search and
    held-out support. The page then draws one histogram and one ROC per split, each labelled
    and with the AUROC of that split. Without a holdout (or when the split cannot be
    recovered) every figure is of all samples, and says so.

Exemplars
    *Top-activating samples* are the ``N_TOP`` samples of highest activation among all
    samples (a held-out one is marked). *Members the unit misses* are the samples where the
    formula holds (all samples) that fall below the unit's threshold at the formula's
    support: with ``k`` members, the threshold is the ``k``-th highest activation (the
    ``k``-th lowest for an AUROC below 0.5), and a member strictly below it is one the unit's
    top ``k`` leaves out. The lowest ``N_MISSES`` of them are shown, with their count (one
    already among the top-activating samples, when ``k < N_TOP``, is not repeated).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import rankdata

from ..engine.formula import LabelColumns, parse_formula
from .maps import SpatialMaps
from .plots import histogram_svg, roc_svg
from .stats import HOLDOUT_STATUS_TEXT, auroc_score_ci, holdout_status
from .thumbs import Thumbs, exemplar

__all__ = ["Split", "layer_split", "UnitContext", "unit_page", "N_TOP", "N_MISSES"]

logger = logging.getLogger(__name__)

N_TOP = 10
N_MISSES = 5
#: A best formula with at most this support gets a warning badge.
TINY_SUPPORT = 2


def p_text(log10_p: float | None) -> str:
    """A p-value from its log10: ``0.0123``, or ``3.2e-12`` below 0.001."""
    if log10_p is None or not math.isfinite(log10_p):
        return "-"
    if log10_p > -3:
        return f"{10 ** log10_p:.3g}"
    exp = math.floor(log10_p)
    mant = 10 ** (log10_p - exp)
    return f"{mant:.1f}e{exp}"


def ordinal(k: int) -> str:
    """``1st``, ``2nd``, ``3rd``, ``11th``, ``22nd``..."""
    if 10 <= k % 100 <= 20:
        return f"{k}th"
    return f"{k}{ {1: 'st', 2: 'nd', 3: 'rd'}.get(k % 10, 'th')}"


def ci_text(lo: float, hi: float) -> str:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "-"
    return f"{lo:.3f}\u2013{hi:.3f}"


# ----------------------------------------------------------------------------- the split


@dataclass(frozen=True)
class Split:
    """The held-out samples of a layer (a bool mask over all samples) and where it came
    from (``"recorded"`` in run.json or ``"recomputed"`` from the parameters)."""

    held: np.ndarray
    source: str

    @property
    def n_search(self) -> int:
        return int((~self.held).sum())

    @property
    def n_held(self) -> int:
        return int(self.held.sum())


def layer_split(meta: dict[str, Any], layer: dict[str, Any], concepts) -> Split | None:
    """The layer's split: recorded (``holdout_index``), recomputed, or None."""
    n = concepts.n_samples
    idx = layer.get("holdout_index", meta.get("holdout_index"))
    if idx is not None:
        try:
            pos = np.asarray(idx, dtype=np.int64).ravel()
        except (TypeError, ValueError):
            pos = np.array([-1])
        if pos.size and (pos.min() < 0 or pos.max() >= n):
            logger.warning("layer %r: holdout_index outside [0, %d): not used", layer["name"], n)
            return None
        held = np.zeros(n, dtype=bool)
        held[pos] = True
        return Split(held, "recorded")
    params = meta.get("params") or {}
    holdout, seed = params.get("holdout"), params.get("random_state")
    if holdout is None or seed is None:
        return None
    from ..trust.holdout import stratified_split

    try:
        _, h_idx = stratified_split(concepts, float(holdout), random_state=int(seed))
    except (ValueError, TypeError) as err:
        logger.warning("layer %r: the holdout split could not be recomputed: %s",
                       layer["name"], err)
        return None
    held = np.zeros(n, dtype=bool)
    held[h_idx] = True
    return Split(held, "recomputed")


# ----------------------------------------------------------------------------- a unit


@dataclass
class UnitContext:
    """What every unit page of a run shares."""

    cols: LabelColumns
    names: list[str]
    counts: np.ndarray
    descriptions: list[str] | None
    parents: dict[str, list[str]] | None
    sources: dict[str, Any]
    thumbs: Thumbs
    meta: dict[str, Any]


def _auroc(a: np.ndarray, mask: np.ndarray) -> float:
    n1 = int(mask.sum())
    n0 = len(mask) - n1
    if n1 == 0 or n0 == 0:
        return math.nan
    r = rankdata(a)
    return float((r[mask].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _figure(title: str, what: str, a: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    """A histogram and a ROC of one set of samples, with their label and AUROC."""
    auc = _auroc(a, mask)
    return {"title": title, "what": what, "n": len(a), "n_in": int(mask.sum()), "auroc": auc,
            "hist": histogram_svg(a, mask, width=360, height=210),
            "roc": roc_svg(a, mask, auc, size=210)}


def _split_fits(split: Split | None, mask: np.ndarray, best: dict[str, Any]) -> bool:
    """Whether ``split`` gives the explanation's search and held-out support."""
    if split is None or best.get("holdout_auroc") is None:
        return False
    ok = int(mask[~split.held].sum()) == best.get("support")
    hs = best.get("holdout_support")
    return ok and (hs is None or int(mask[split.held].sum()) == hs)


def _figures(a: np.ndarray, mask: np.ndarray, split: Split | None, fits: bool
             ) -> list[dict[str, Any]]:
    n = len(a)
    if not fits:
        return [_figure("All samples", f"all {n} samples", a, mask)]
    s, h = ~split.held, split.held  # type: ignore[union-attr]
    return [
        _figure("Search split", f"the {int(s.sum())} samples the search used", a[s], mask[s]),
        _figure("Held-out split", f"the {int(h.sum())} held-out samples", a[h], mask[h]),
    ]


def _misses(a: np.ndarray, mask: np.ndarray, auroc: float | None) -> tuple[np.ndarray, float]:
    """Members below the unit's threshold at the formula's support (lowest first), and the
    threshold (see the module text)."""
    k = int(mask.sum())
    if k == 0:
        return np.array([], dtype=np.int64), math.nan
    sign = -1.0 if auroc is not None and auroc < 0.5 else 1.0
    s = sign * a
    thr = float(np.sort(s)[::-1][k - 1])
    inside = np.flatnonzero(mask & (s < thr))
    return inside[np.argsort(s[inside], kind="stable")], sign * thr


def _concepts(f, ctx: UnitContext) -> list[dict[str, Any]]:
    """The formula's concepts: hierarchy chain, description, count and where they came
    from (``concept_sources``)."""
    out = []
    for j in f.concepts():
        nm = ctx.names[j]
        src = ctx.sources.get(nm)
        srcs = [src] if isinstance(src, dict) else [s for s in (src or [])
                                                    if isinstance(s, dict)]
        out.append({
            "name": nm, "chain": _chain(nm, ctx.parents),
            "description": ctx.descriptions[j] if ctx.descriptions else None,
            "count": int(ctx.counts[j]),
            "sources": [{"word": s.get("word"), "path": s.get("path")} for s in srcs],
        })
    return out


def _chain(name: str, parents: dict[str, list[str]] | None, limit: int = 30) -> list[str]:
    """Ancestors of ``name`` from the top down, following the first parent."""
    out: list[str] = []
    seen = {name}
    cur = name
    while parents and parents.get(cur) and len(out) < limit:
        nxt = parents[cur][0]
        if nxt in seen:
            break
        seen.add(nxt)
        out.append(nxt)
        cur = nxt
    return out[::-1]


def _holdout_figures(best: dict[str, Any], split: Split | None, fits: bool
                     ) -> dict[str, Any]:
    """The held-out card: AUROC, score interval, p-value, support and the verdict."""
    ha, hs = best["holdout_auroc"], best.get("holdout_support")
    n_h = split.n_held if fits else None  # type: ignore[union-attr]
    if n_h is not None and hs is not None:
        lo, hi = auroc_score_ci(ha, hs, n_h - hs)
    else:  # the split is unknown: the interval invert.trust stored (DeLong)
        lo = best.get("holdout_auroc_ci_low", math.nan)
        hi = best.get("holdout_auroc_ci_high", math.nan)
    status = holdout_status(best["auroc"], ha, (lo, hi))
    return {"holdout_auroc": ha, "holdout_ci": ci_text(lo, hi), "holdout_ci_low": lo,
            "holdout_p_text": p_text(best.get("holdout_log10_p_value")),
            "holdout_support": hs, "n_holdout": n_h, "status": status,
            "status_text": HOLDOUT_STATUS_TEXT.get(status or "", None)}


def _badges(page: dict[str, Any]) -> list[dict[str, str]]:
    """Verdicts shown beside the formula (and in the index)."""
    out = []
    st = page.get("status")
    if st is not None:
        cls = {"holds": "ok", "fails": "bad", "unconfirmed": "warn"}[st]
        out.append({"cls": cls, "text": page["status_text"],
                    "title": f"search AUROC {page['auroc']:.3f}, held-out AUROC "
                             f"{page['holdout_auroc']:.3f} (95% CI {page['holdout_ci']})"})
    if page.get("significant") is not None:
        q = page.get("q_value")
        qt = f" (q {q:.3g})" if q is not None else ""
        out.append({"cls": "ok" if page["significant"] else "muted",
                    "text": ("significant" if page["significant"] else "not significant") + qt,
                    "title": "permutation test of the whole search, Benjamini-Hochberg q"})
    if page.get("support") is not None and page["support"] <= TINY_SUPPORT:
        out.append({"cls": "warn", "text": f"support {page['support']}",
                    "title": "the formula holds for very few samples: its AUROC says little"})
    return out


def _certificate(rec: dict[str, Any], exps: list[dict[str, Any]]) -> dict[str, Any]:
    """The unit's ceiling (the best AUROC any formula within the fraction limits could
    reach), the gap of its best formula to it, and the length-3 certificate when present."""
    ceiling = rec.get("ceiling")
    best = exps[0].get("auroc") if exps else None
    gap = None
    if ceiling is not None and best is not None and ceiling == ceiling:
        gap = abs(float(ceiling) - float(best))
    return {"ceiling": ceiling, "gap": gap, "certified": rec.get("certified"),
            "bound": rec.get("bound")}


def _best_figures(page: dict[str, Any], best: dict[str, Any], mask: np.ndarray,
                  split: Split | None, fits: bool) -> None:
    """The stat cards of the best explanation, on the samples the search used."""
    n1 = int(best["support"])
    has_h = best.get("holdout_auroc") is not None
    if fits:
        n_scope = split.n_search  # type: ignore[union-attr]
    elif has_h and best.get("fraction"):  # the split is not known: its size is
        n_scope = round(n1 / best["fraction"])
    else:
        n_scope = len(mask)
    auroc = best["auroc"]
    lo, hi = auroc_score_ci(auroc if auroc is not None else math.nan, n1, n_scope - n1)
    page.update(
        formula=best["formula"], auroc=auroc, ci=ci_text(lo, hi), ci_low=lo,
        log10_p=best.get("log10_p_value"), p_text=p_text(best.get("log10_p_value")),
        fraction=best["fraction"], support=n1, length=best["length"], n_scope=n_scope,
        scope="search split" if fits or has_h else "all samples",
        split_unknown=has_h and not fits,
    )
    page.update({k: best.get(k) for k in ("top_precision", "top_q", "top_size",
                                          "holdout_top_precision", "filler", "simplified",
                                          "simplified_auroc", "filler_on")})
    if best.get("holdout_auroc") is not None:
        page.update(_holdout_figures(best, split, fits))
    if best.get("search_p_value") is not None:  # permutation test of the whole search
        page.update(search_p_value=best["search_p_value"])
    if best.get("q_value") is not None or best.get("significant") is not None:
        page.update(q_value=best.get("q_value"), significant=best.get("significant"))


def unit_page(u: dict[str, Any], a: np.ndarray, ctx: UnitContext, split: Split | None,
              maps: SpatialMaps | None) -> dict[str, Any]:
    """Everything a unit page shows (see the module text for which samples each uses)."""
    rec = u["rec"]
    page: dict[str, Any] = {"unit": u["unit"], "label": u["label"], "reason": rec.get("reason"),
                            "n_samples": len(a), "badges": [], "figures": []}
    exps = rec.get("explanations") or []
    page.update(_certificate(rec, exps))
    mask = np.zeros(len(a), dtype=bool)
    fits = False
    if exps:
        best = exps[0]
        f = parse_formula(best["formula"], names=ctx.names)
        mask = np.asarray(f.evaluate(ctx.cols), dtype=bool)
        fits = _split_fits(split, mask, best)
        _best_figures(page, best, mask, split, fits)
        page["figures"] = _figures(a, mask, split, fits)
        page["badges"] = _badges(page)
        page["hierarchy"] = _concepts(f, ctx)
        page["others"] = _others(exps)
        page["has_holdout_others"] = any(o["holdout_auroc"] is not None for o in page["others"])
    held = split.held if fits else None  # type: ignore[union-attr]

    def ex(i: int) -> dict[str, Any]:
        return exemplar(int(i), a, mask, ctx.thumbs, ctx.meta, unit=u["unit"], maps=maps,
                        held_out=held)

    _exemplars(page, a, mask, ex)
    page["split_source"] = split.source if fits else None  # type: ignore[union-attr]
    return page


def _exemplars(page: dict[str, Any], a: np.ndarray, mask: np.ndarray, ex) -> None:
    """The top-activating samples and the members the unit misses (``ex(i)`` draws one)."""
    order = np.argsort(-a, kind="stable")
    page["top"] = [ex(i) for i in order[:N_TOP]]
    missed, thr = _misses(a, mask, page.get("auroc"))
    shown = set(order[:N_TOP].tolist())
    rest = [int(i) for i in missed if int(i) not in shown]
    page["misses"] = [ex(i) for i in rest[:N_MISSES]]
    low = page.get("auroc") is not None and page["auroc"] < 0.5
    page["mw"] = ({"end": "bottom", "side": "above", "rank": "lowest", "far": "highest"} if low
                  else {"end": "top", "side": "below", "rank": "highest", "far": "lowest"})
    k = int(mask.sum())
    page.update(n_members=k, nth=ordinal(k), n_missed=len(missed), threshold=thr,
                n_missed_above=len(missed) - len(rest),
                has_maps=any(e["heat"] for e in page["top"] + page["misses"]))


def _others(exps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"rank": r + 1, "formula": e["formula"], "auroc": e["auroc"],
         "p_text": p_text(e.get("log10_p_value")), "fraction": e["fraction"],
         "support": e["support"], "holdout_auroc": e.get("holdout_auroc")}
        for r, e in enumerate(exps) if r > 0
    ]
