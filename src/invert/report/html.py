"""The static HTML report: an index of units and one page per unit.

``build_report(OUT)`` reads an output folder (:func:`invert.report.save_run`) and writes::

    OUT/report/index.html                  per-layer summary, legend, sortable and filterable
                                           table of all units with an exemplar strip
    OUT/report/units/<layer>/<unit>.html   formula, AUROC + CI, p-value, support, held-out
                                           verdict, plots per split, exemplars (with spatial
                                           maps of conv channels), misses, concepts
    OUT/report/assets/                     style.css, sort.js, thumbs/<sample>.jpg

Everything is local (no CDN, no network): open ``index.html`` in any browser. Which samples
each figure uses is in :mod:`invert.report.unit`; what is read and written, and why it stays
inside ``OUT``, in :mod:`invert.report.paths`.
"""

from __future__ import annotations

import logging
import os
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .._progress import progress_bar
from ..engine.formula import LabelColumns
from .index import index_row, layer_summaries, skipped_list, subtitle_params
from .maps import SpatialMaps, load_maps, maps_path
from .outputs import RunData, load_run, unit_slug
from .paths import file_inside, fresh_folder, real_folder, write_text
from .thumbs import Thumbs
from .unit import UnitContext, layer_split, unit_page

__all__ = ["build_report"]

logger = logging.getLogger(__name__)


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
    for name in ("style.css", "sort.js"):
        src = resources.files("invert.report") / "static" / name
        write_text(assets / name, src.read_text(encoding="utf-8"))


def build_report(
    out: str | os.PathLike,
    *,
    images_root: str | os.PathLike | None = None,
    progress: bool = True,
    title: str | None = None,
) -> Path:
    """Write (or rewrite) ``OUT/report/`` from an output folder and return its index path.

    Everything is read and written inside ``OUT`` (thumbnails from inside the images
    folder): a ``run.json`` naming files elsewhere is refused, and symbolic links in place
    of the report's folders are replaced, never followed (:mod:`invert.report.paths`).

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

    Raises
    ------
    invert._validate.InvalidParameterError
        When ``run.json`` names a file outside ``OUT`` or a layer slug that is not a plain
        file name.
    """
    run = load_run(out)
    return _build(run, images_root=images_root, progress=progress, title=title)


def _build(run: RunData, *, images_root, progress: bool, title: str | None) -> Path:
    """Write the report of ``run``: the unit pages, then the index (jinja2 templates)."""
    env = _env()
    meta = run.meta
    rep, thumbs = _prepare(run, images_root)
    version = meta.get("invert_version", "")
    units = _units(run)
    rows = _write_unit_pages(env.get_template("unit.html"), units, run, thumbs, rep,
                             version=version, progress=progress)
    layers = [{"name": lay["name"], "display": lay["name"] or "output",
               "n_units": lay["n_units"]} for lay in run.layers]
    index = env.get_template("index.html").render(
        title=title or meta.get("title") or "invert: unit explanations",
        rows=rows, layers=layers, summaries=layer_summaries(layers, rows),
        n_samples=run.concepts.n_samples, n_concepts=run.concepts.n_concepts,
        has_holdout=any(r.get("holdout_auroc") is not None for r in rows),
        has_search_p=any(r.get("search_p") is not None for r in rows),
        has_q=any(r.get("q_value") is not None for r in rows),
        has_ceiling=any(r.get("ceiling") is not None for r in rows),
        has_top=any(r.get("top_precision") is not None for r in rows),
        has_significant=any(r.get("significant") is not None for r in rows),
        has_strip=any(r["strip"] for r in rows), skipped=skipped_list(meta),
        subtitle=subtitle_params(dict(meta.get("params") or {})), root="", version=version,
        refused=thumbs.refused,
    )
    path = rep / "index.html"
    write_text(path, index)
    return path


def _prepare(run: RunData, images_root) -> tuple[Path, Thumbs]:
    """Make ``OUT/report`` a real folder, empty its unit pages and thumbnails, copy the
    static assets; return it and the thumbnail maker (for the images under
    ``images_root``, default: as recorded)."""
    rep = real_folder(run.out.resolve() / "report")
    fresh_folder(rep / "units")
    assets = real_folder(rep / "assets")
    _copy_static(assets)
    thumbs_dir = fresh_folder(assets / "thumbs")
    root = images_root if images_root is not None else run.meta.get("images_root")
    root_path = Path(root) if root is not None and Path(root).is_dir() else None
    if root is not None and root_path is None:
        logger.warning("images folder %s not found: the report shows sample ids only", root)
    thumbs = Thumbs(root_path, run.sample_ids, thumbs_dir)
    thumbs.texts = run.texts  # text runs: each sample as its token in context
    return rep, thumbs


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


def _context(run: RunData, thumbs: Thumbs) -> UnitContext:
    """What all unit pages share: the concept columns, names, counts and sources."""
    cs = run.concepts
    n_cells = cs.n_samples * cs.n_concepts
    if cs.is_sparse and n_cells <= 50_000_000:
        labels = cs.to_dense()
    elif cs.is_sparse:
        labels = cs.matrix.tocsc()
    else:
        labels = cs.matrix
    sources = run.meta.get("concept_sources")
    return UnitContext(
        cols=LabelColumns(labels), names=list(cs.names),
        counts=np.asarray(cs.counts).ravel(), descriptions=cs.descriptions,
        parents=cs.parents, sources=sources if isinstance(sources, dict) else {},
        thumbs=thumbs, meta=run.meta)


def _layer_extras(run: RunData) -> dict[str, tuple[Any, SpatialMaps | None]]:
    """Per layer: its holdout split and its spatial maps (each None when absent)."""
    out = {}
    n = run.concepts.n_samples
    for lay in run.layers:
        mp = file_inside(run.out, maps_path(lay), f"layer {lay['name']!r}: maps")
        out[lay["name"]] = (layer_split(run.meta, lay, run.concepts), load_maps(mp, n))
    return out


def _write_unit_pages(tmpl, units: list[dict[str, Any]], run: RunData, thumbs: Thumbs,
                      rep: Path, *, version: str, progress: bool) -> list[dict[str, Any]]:
    """Write one page per unit (linked to the previous and next) and return the index rows."""
    ctx = _context(run, thumbs)
    extras = _layer_extras(run)
    rows = []
    with progress_bar(len(units), "report", progress) as tick:
        for idx, u in enumerate(units):
            split, maps = extras[u["layer"]]
            a = np.asarray(run.activations[u["layer"]][:, u["col"]], dtype=np.float64)
            page = unit_page(u, a, ctx, split, maps)
            page["layer_display"] = u["layer_display"]
            path = rep / u["href"]
            path.parent.mkdir(parents=True, exist_ok=True)
            prev = units[idx - 1] if idx > 0 else None
            nxt = units[idx + 1] if idx + 1 < len(units) else None
            html = tmpl.render(
                u=page, root="../../", version=version, n_samples=run.concepts.n_samples,
                prev="../../" + prev["href"] if prev else None, prev_u=prev,
                next="../../" + nxt["href"] if nxt else None, next_u=nxt,
            )
            write_text(path, html)
            rows.append(index_row(u, idx, page))
            if tick is not None:
                tick(idx + 1, len(units))
    return rows
