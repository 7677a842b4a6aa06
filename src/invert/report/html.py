"""The static HTML report: an index of units and one page per unit.

``build_report(OUT)`` reads an output folder (:func:`invert.report.save_run`) and writes::

    OUT/report/index.html                  sortable, filterable table of all units
    OUT/report/units/<layer>/<unit>.html   formula, AUROC + CI, p-value, support, plots,
                                           exemplars, misses, hierarchy, other formulas
    OUT/report/assets/                     style.css, sort.js, thumbs/<sample>.jpg

Everything is local (no CDN, no network): open ``index.html`` in any browser.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from collections.abc import Sequence
from html import escape
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .._progress import progress_bar
from ..engine.formula import parse_formula
from .outputs import RunData, load_run, unit_slug
from .plots import auroc_ci, histogram_svg, roc_svg

__all__ = ["build_report"]

logger = logging.getLogger(__name__)

THUMB_SIZE = 160
N_TOP = 10
N_MISSES = 5


def _p_text(log10_p: float | None) -> str:
    if log10_p is None or not math.isfinite(log10_p):
        return "-"
    if log10_p > -3:
        return f"{10 ** log10_p:.3g}"
    exp = math.floor(log10_p)
    mant = 10 ** (log10_p - exp)
    return f"{mant:.1f}e{exp}"


def _ci_text(lo: float, hi: float) -> str:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "-"
    return f"{lo:.3f}\u2013{hi:.3f}"


def _env():
    try:
        import jinja2
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("the HTML report needs jinja2: pip install 'invert[cli]'") from err
    loader = jinja2.FunctionLoader(_load_template)
    return jinja2.Environment(loader=loader, autoescape=True, trim_blocks=True,
                              lstrip_blocks=True)


def _load_template(name: str) -> str:
    return (resources.files("invert.report") / "templates" / name).read_text(encoding="utf-8")


def _copy_static(assets: Path) -> None:
    assets.mkdir(parents=True, exist_ok=True)
    for name in ("style.css", "sort.js"):
        src = resources.files("invert.report") / "static" / name
        (assets / name).write_text(src.read_text(encoding="utf-8"), encoding="utf-8")


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


class _Thumbs:
    """Thumbnails of image samples, written on demand into ``assets/thumbs``."""

    def __init__(self, root: Path | None, sample_ids: Sequence[Any], folder: Path):
        self.root = root
        self.sample_ids = sample_ids
        self.folder = folder
        self.done: dict[int, str | None] = {}
        self.Image = None
        if root is not None:
            try:
                from PIL import Image

                self.Image = Image
            except ImportError:  # pragma: no cover - depends on the environment
                logger.warning("Pillow is not installed: the report shows no thumbnails")

    def wanted(self) -> bool:
        return self.root is not None and self.Image is not None

    def make(self, i: int) -> str | None:
        """Relative path (from the report root) of sample ``i``'s thumbnail, or None."""
        if i in self.done:
            return self.done[i]
        rel = None
        if self.wanted():
            src = self.root / str(self.sample_ids[i])  # type: ignore[operator]
            dst = self.folder / f"{i}.jpg"
            try:
                if not dst.exists():
                    with self.Image.open(src) as im:  # type: ignore[union-attr]
                        im.thumbnail((THUMB_SIZE, THUMB_SIZE))
                        if im.mode in ("RGBA", "LA", "P"):
                            im = im.convert("RGBA")
                            bg = self.Image.new("RGBA", im.size, (255, 255, 255, 255))
                            im = self.Image.alpha_composite(bg, im)
                        im.convert("RGB").save(dst, quality=85)
                rel = f"assets/thumbs/{i}.jpg"
            except (OSError, ValueError) as err:
                logger.debug("no thumbnail for %s: %s", src, err)
        self.done[i] = rel
        return rel


def _text_html(meta: dict[str, Any], sid: Any, i: int) -> str | None:
    """Highlighted token in context for text runs (``documents`` in run.json), or the text."""
    texts = meta.get("sample_texts")
    if texts is not None:
        return escape(str(texts[i]))
    docs = meta.get("documents")
    if docs is None or not isinstance(sid, list | tuple) or len(sid) != 2:
        return None
    doc, pos = sid
    try:
        toks = docs[int(doc)] if not isinstance(docs, dict) else docs[str(doc)]
        pos = int(pos)
    except (KeyError, IndexError, ValueError, TypeError):
        return None
    lo, hi = max(0, pos - 12), min(len(toks), pos + 13)
    words = [escape(str(t)) for t in toks[lo:hi]]
    if lo <= pos < hi:
        words[pos - lo] = f"<mark>{words[pos - lo]}</mark>"
    return ("&hellip; " if lo else "") + " ".join(words) + (" &hellip;" if hi < len(toks) else "")


def build_report(
    out: str | os.PathLike,
    *,
    images_root: str | os.PathLike | None = None,
    progress: bool = True,
    title: str | None = None,
) -> Path:
    """Write (or rewrite) ``OUT/report/`` from an output folder and return its index path.

    Parameters
    ----------
    out : path
        An output folder written by ``invert explain`` / :func:`save_run`.
    images_root : path, optional
        Folder the sample ids are relative image paths in (default: the one in
        ``run.json``); thumbnails are shown when the files exist.
    progress : bool
        Show a progress bar (tqdm) over the units.
    title : str, optional
        Page title (default: from ``run.json``).

    Returns
    -------
    pathlib.Path
        ``OUT/report/index.html``.
    """
    run = load_run(out)
    return _build(run, images_root=images_root, progress=progress, title=title)


def _build(run: RunData, *, images_root, progress: bool, title: str | None) -> Path:
    """Write the report of ``run``: the unit pages, then the index (jinja2 templates)."""
    env = _env()
    meta = run.meta
    rep = run.out / "report"
    thumbs = _fresh_folder(rep, run, images_root)
    cs = run.concepts
    params = dict(meta.get("params") or {})
    for k, v in (("length", "-"), ("beam_size", "-"), ("min_fraction", "-"),
                 ("max_fraction", "-"), ("mode", "positive")):
        params.setdefault(k, v)
    version = meta.get("invert_version", "")
    units = _units(run)
    rows = _write_unit_pages(env.get_template("unit.html"), units, run, thumbs, rep,
                             version=version, progress=progress)
    layers = [{"name": lay["name"], "display": lay["name"] or "output",
               "n_units": lay["n_units"]} for lay in run.layers]
    index = env.get_template("index.html").render(
        title=title or meta.get("title") or "invert: unit explanations",
        rows=rows, layers=layers, n_samples=cs.n_samples, n_concepts=cs.n_concepts,
        has_holdout=any(r.get("holdout_auroc") is not None for r in rows),
        has_search_p=any(r.get("search_p") is not None for r in rows),
        params=params, root="", version=version,
    )
    path = rep / "index.html"
    path.write_text(index, encoding="utf-8")
    return path


def _fresh_folder(rep: Path, run: RunData, images_root) -> _Thumbs:
    """Clear the old unit pages and thumbnails, copy the static assets, and return the
    thumbnail maker (for the images under ``images_root``, default: as recorded)."""
    if (rep / "units").exists():
        shutil.rmtree(rep / "units")
    assets = rep / "assets"
    _copy_static(assets)
    thumbs_dir = assets / "thumbs"
    if thumbs_dir.exists():
        shutil.rmtree(thumbs_dir)
    root = images_root if images_root is not None else run.meta.get("images_root")
    root_path = Path(root) if root is not None and Path(root).is_dir() else None
    if root is not None and root_path is None:
        logger.warning("images folder %s not found: the report shows sample ids only", root)
    thumbs = _Thumbs(root_path, run.sample_ids, thumbs_dir)
    if thumbs.wanted():
        thumbs_dir.mkdir(parents=True, exist_ok=True)
    return thumbs


def _units(run: RunData) -> list[dict[str, Any]]:
    """One entry per unit of every layer, in order: its record and its page's address."""
    units: list[dict[str, Any]] = []
    for lay in run.layers:
        name = lay["name"]
        display = name if name else "output"
        labels_u = lay.get("unit_labels")
        recs = {str(r["unit"]): r for r in run.records.get(name, [])}
        for k, uid in enumerate(lay["unit_ids"]):
            rec = recs.get(str(uid), {"explanations": [], "reason": "missing from the jsonl"})
            units.append({
                "layer": name, "layer_display": display, "slug": lay["slug"], "col": k,
                "unit": str(uid), "label": labels_u[k] if labels_u else None, "rec": rec,
                "href": f"units/{lay['slug']}/{unit_slug(uid)}.html",
            })
    return units


def _write_unit_pages(tmpl, units: list[dict[str, Any]], run: RunData, thumbs: _Thumbs,
                      rep: Path, *, version: str, progress: bool) -> list[dict[str, Any]]:
    """Write one page per unit (linked to the previous and next) and return the index rows."""
    cs = run.concepts
    n_cells = cs.n_samples * cs.n_concepts
    if cs.is_sparse and n_cells <= 50_000_000:
        labels = cs.to_dense()
    elif cs.is_sparse:
        labels = cs.matrix.tocsc()
    else:
        labels = cs.matrix
    names = list(cs.names)
    counts = np.asarray(cs.counts).ravel()
    rows = []
    with progress_bar(len(units), "report", progress) as tick:
        for idx, u in enumerate(units):
            page = _unit_page(u, run, labels, names, counts, cs.descriptions, cs.parents,
                              thumbs, run.meta)
            page["layer_display"] = u["layer_display"]
            path = rep / u["href"]
            path.parent.mkdir(parents=True, exist_ok=True)
            html = tmpl.render(
                u=page, root="../../", version=version, n_samples=cs.n_samples,
                prev="../../" + units[idx - 1]["href"] if idx > 0 else None,
                next="../../" + units[idx + 1]["href"] if idx + 1 < len(units) else None,
            )
            path.write_text(html, encoding="utf-8")
            rows.append(_index_row(u, idx, page))
            if tick is not None:
                tick(idx + 1, len(units))
    return rows


def _index_row(u: dict[str, Any], idx: int, page: dict[str, Any]) -> dict[str, Any]:
    return {
        "layer": u["layer"], "layer_display": u["layer_display"], "unit": u["unit"],
        "order": idx, "label": u["label"], "href": u["href"],
        "formula": page.get("formula"), "auroc": page.get("auroc"),
        "ci": page.get("ci"), "log10_p": page.get("log10_p"),
        "p_text": page.get("p_text"), "fraction": page.get("fraction"),
        "support": page.get("support"), "reason": page.get("reason"),
        "holdout_auroc": page.get("holdout_auroc"),
        "holdout_ci": page.get("holdout_ci"),
        "search_p": page.get("search_p_value"),
    }


def _unit_page(u, run: RunData, labels, names, counts, descriptions, parents, thumbs,
               meta) -> dict[str, Any]:
    rec = u["rec"]
    a = np.asarray(run.activations[u["layer"]][:, u["col"]], dtype=np.float64)
    page: dict[str, Any] = {"unit": u["unit"], "label": u["label"], "reason": rec.get("reason")}
    exps = rec.get("explanations") or []
    mask = np.zeros(len(a), dtype=bool)
    if exps:
        best = exps[0]
        f = parse_formula(best["formula"], names=names)
        mask = np.asarray(f.evaluate(labels), dtype=bool)
        n1, n0 = int(mask.sum()), int((~mask).sum())
        auroc = best["auroc"]
        lo, hi = auroc_ci(auroc if auroc is not None else math.nan, n1, n0)
        page.update(
            formula=best["formula"], auroc=auroc, ci=_ci_text(lo, hi),
            log10_p=best.get("log10_p_value"),
            p_text=_p_text(best.get("log10_p_value")), fraction=best["fraction"],
            support=best["support"], length=best["length"],
            hist_svg=histogram_svg(a, mask), roc_svg=roc_svg(a, mask, auroc),
        )
        if best.get("holdout_auroc") is not None:  # held-out figures (invert.trust)
            page.update(
                holdout_auroc=best["holdout_auroc"],
                holdout_ci=_ci_text(best.get("holdout_auroc_ci_low", math.nan),
                                    best.get("holdout_auroc_ci_high", math.nan)),
                holdout_p_text=_p_text(best.get("holdout_log10_p_value")),
                holdout_support=best.get("holdout_support"),
            )
        if best.get("search_p_value") is not None:  # permutation test of the whole search
            page.update(search_p_value=best["search_p_value"], q_value=best.get("q_value"),
                        significant=best.get("significant"))
        hier = []
        for j in f.concepts():
            nm = names[j]
            hier.append({
                "name": nm, "chain": _chain(nm, parents),
                "description": descriptions[j] if descriptions else None,
                "count": int(counts[j]),
            })
        page["hierarchy"] = hier
        page["others"] = [
            {"rank": r + 1, "formula": e["formula"], "auroc": e["auroc"],
             "p_text": _p_text(e.get("log10_p_value")), "fraction": e["fraction"],
             "support": e["support"]}
            for r, e in enumerate(exps) if r > 0
        ]
    order = np.argsort(-a, kind="stable")
    page["top"] = [_exemplar(int(i), a, mask, thumbs, meta) for i in order[:N_TOP]]
    if mask.any():
        inside = np.flatnonzero(mask)
        worst = inside[np.argsort(a[inside], kind="stable")][:N_MISSES]
        page["misses"] = [_exemplar(int(i), a, mask, thumbs, meta) for i in worst]
    else:
        page["misses"] = []
    return page


def _exemplar(i: int, a: np.ndarray, mask: np.ndarray, thumbs: _Thumbs, meta) -> dict[str, Any]:
    sid = thumbs.sample_ids[i]
    src = thumbs.make(i)
    return {
        "sid": str(sid), "act": f"{a[i]:.3g}", "inside": bool(mask[i]),
        "src": "../../" + src if src else None,
        "html": None if src else _text_html(meta, sid, i),
    }

