"""The output folder of a run: writing it (:func:`save_run`) and reading it back (:func:`load_run`).

Layout of ``OUT/``::

    explanations.jsonl     one record per unit: layer, unit, reason, explanations (best first)
    explanations.csv       one row per (layer, unit, rank); a unit without explanation: one row
    explanations.parquet   the same table (needs pandas + pyarrow)
    run.json               parameters, layers (unit ids, labels, held-out samples), sample
                           ids, invert version
    activations_<layer>.npy  (N, K) float32 activations of each layer, for the report
    concepts.npz, concepts.json  the concept set (:meth:`ConceptSet.save`)
    texts.json             text runs: the documents and each row's token span
                           (:mod:`invert.report.texts`), for the report
    report/                the HTML report (:func:`invert.report.build_report`)

Entries of ``run.json`` that the report reads besides those :func:`save_run` writes (each
optional; other writers put them in through ``extra``):

``skipped_images``
    Images left out as unreadable: a list of relative paths, or of
    ``{"path": str, "error": str}``.
``concept_sources``
    Where each concept came from: ``{concept name: {"word": str, "path": str}}`` (or a
    list of such objects when several words gave one concept), e.g. the folder word
    ``"toys"`` at path ``"toys"`` that gave ``toy.n.01``.
layer ``"maps"``
    The file of the layer's spatial maps (default ``maps_<slug>.npz``; the format is in
    :mod:`invert.report.maps`).

A layer's ``holdout_index`` (sorted positions of its held-out samples; the search split is
the rest) is written for results of a holdout search (``holdout_index`` attribute).

Every export (``explanations.jsonl``, ``.csv``, ``.parquet``) reports, beside AUROC, how much
of the unit's peak each formula covers: ``top_precision`` (the share of the unit's top
activations where the formula holds), with ``top_q`` and ``top_size``
(:func:`invert.trust.add_top_precision`; ``holdout_top_precision`` etc. on the held-out
samples of a holdout search), and the filler check of each unit's best formula
(``filler``, ``simplified``, ``simplified_auroc``, ``filler_on``:
:func:`invert.trust.check_filler`). Figures a result already has are kept; the caller's
result is not modified.

:func:`load_run` reads only files inside ``OUT`` (:mod:`invert.report.paths`).
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._files import layer_slug, unit_slug
from .._store import replacing
from .._validate import bad
from .._version import __version__
from ..concepts import ConceptSet
from ..engine.params import SEARCH_PARAMS
from ..engine.result import COLUMNS, ExplanationResult, json_safe
from ..trust.baseline import random_baseline, run_figures
from ..trust.filler import check_filler
from ..trust.metrics import add_top_precision
from .paths import check_slug, file_inside
from .texts import SampleTexts, read_texts, write_texts

__all__ = ["save_run", "load_run", "RunData", "layer_slug", "unit_slug", "RUN_FILE",
           "record_baseline"]

logger = logging.getLogger(__name__)

RUN_FILE = "run.json"
JSONL_FILE = "explanations.jsonl"
CSV_FILE = "explanations.csv"
PARQUET_FILE = "explanations.parquet"
CONCEPTS_BASE = "concepts"
FORMAT_VERSION = 1



def _invert_version() -> str:
    return __version__


def save_run(
    out: str | os.PathLike,
    results: Mapping[str, ExplanationResult],
    activations: Mapping[str, Any],
    concepts: ConceptSet,
    *,
    params: Mapping[str, Any] | None = None,
    sample_ids: Sequence[Any] | None = None,
    images_root: str | os.PathLike | None = None,
    unit_labels: Mapping[str, Sequence[str]] | None = None,
    extra: Mapping[str, Any] | None = None,
    texts: SampleTexts | None = None,
) -> Path:
    """Write the explanations and what the report needs into the folder ``out``.

    Parameters
    ----------
    out : path
        The output folder (created).
    results : mapping of str to ExplanationResult
        Layer name -> result of :func:`invert.explain` on that layer.
    activations : mapping of str to array-like (N, K)
        Layer name -> the activations explained (same unit order as the result).
    concepts : ConceptSet
        The concepts, rows aligned with the activations.
    params : mapping, optional
        Search and run parameters, stored in ``run.json``.
    sample_ids : sequence, optional
        One id per sample (default: the concept set's sample ids, else ``0..N-1``).
    images_root : path, optional
        Folder that the sample ids (relative image paths) live under; the report then shows
        thumbnails.
    unit_labels : mapping of str to sequence of str, optional
        Layer -> a human label per unit (e.g. class names of logits).
    extra : mapping, optional
        More entries for ``run.json``.
    texts : SampleTexts, optional
        For text runs: the documents and each row's span
        (:func:`invert.report.texts.texts_of_encoding`), written as ``texts.json``; the
        report then shows each sample as its token in context.

    Returns
    -------
    pathlib.Path
        The path of ``run.json``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if set(results) != set(activations):
        raise bad("activations", f"the layers of results {sorted(results)}",
                  f"{sorted(activations)}", raw=True)
    n = concepts.n_samples
    if sample_ids is None:
        sample_ids = concepts.sample_ids if concepts.sample_ids is not None else list(range(n))
    sample_ids = list(sample_ids)
    if len(sample_ids) != n:
        raise bad("sample_ids", f"{n} ids (one per sample)", f"{len(sample_ids)}", raw=True)
    results = {layer: _with_peak_figures(res, activations[layer], concepts)
               for layer, res in results.items()}
    layers_meta, records = _save_layers(out, results, activations, n, unit_labels)
    with replacing(out / JSONL_FILE) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(json_safe(rec), allow_nan=False) + "\n")
    _write_tables(out, list(results.items()))
    concepts.save(out / CONCEPTS_BASE)
    if texts is not None and texts.n_rows != n:
        raise bad("texts", f"{n} rows (one per sample)", f"{texts.n_rows}", raw=True)
    meta = {
        "format": "invert.run",
        "format_version": FORMAT_VERSION,
        "invert_version": _invert_version(),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "params": dict(params or {}),
        "n_samples": n,
        "sample_ids": sample_ids,
        "images_root": None if images_root is None else str(Path(images_root).resolve()),
        "layers": layers_meta,
        "concepts": {
            "file": CONCEPTS_BASE + ".npz",
            "n_concepts": concepts.n_concepts,
            "names": list(concepts.names),
            "parents": concepts.parents,
        },
        "files": {"jsonl": JSONL_FILE, "csv": CSV_FILE, "parquet": PARQUET_FILE},
    }
    meta.update(dict(extra or {}))
    if texts is not None:
        meta["texts"] = write_texts(out, texts)
    path = out / RUN_FILE
    with replacing(path) as tmp:  # last: a run.json names only files written whole
        tmp.write_text(json.dumps(json_safe(meta), indent=1, allow_nan=False), encoding="utf-8")
    return path


def _with_peak_figures(res: ExplanationResult, values: Any, concepts: ConceptSet
                       ) -> ExplanationResult:
    """A copy of ``res`` (the explanations copied on write) with ``top_precision`` (also
    held out, for a holdout search) and the filler check where they are missing."""
    vals = np.asarray(values)
    if vals.ndim == 1:
        vals = vals[:, None]
    if vals.shape != (concepts.n_samples, len(res)):
        return res  # _save_layers says what is wrong
    out = copy.copy(res)
    out.units = [u.derive(list(u)) for u in res.units]
    add_top_precision(out, vals, concepts)
    held = getattr(res, "holdout_index", None)
    if held is not None:
        add_top_precision(out, vals, concepts, rows=held, prefix="holdout_")
    if any(u and "filler" not in u[0].extras for u in out.units):
        check_filler(out, vals, concepts)
    return out


def _save_layers(out: Path, results: Mapping[str, ExplanationResult],
                 activations: Mapping[str, Any], n: int,
                 unit_labels: Mapping[str, Sequence[str]] | None
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Write each layer's activations (float32 ``.npy``); return the layers' entries of
    ``run.json`` and the unit records of ``explanations.jsonl``."""
    layers_meta: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    slugs: set[str] = set()
    for layer, res in results.items():
        vals = np.asarray(activations[layer], dtype=np.float32)
        if vals.ndim == 1:
            vals = vals[:, None]
        if vals.shape != (n, len(res)):
            raise bad(f"activations[{layer!r}]", f"shape ({n}, {len(res)})", f"{vals.shape}",
                      raw=True)
        slug = layer_slug(layer)
        while slug in slugs:
            slug += "_"
        slugs.add(slug)
        act_file = f"activations_{slug}.npy"
        with replacing(out / act_file) as tmp, open(tmp, "wb") as fh:
            np.save(fh, vals)
        labels = None if unit_labels is None else unit_labels.get(layer)
        if labels is not None and len(labels) != len(res):
            raise bad(f"unit_labels[{layer!r}]", f"{len(res)} labels", f"{len(labels)}",
                      raw=True)
        layers_meta.append({
            "name": layer,
            "slug": slug,
            "n_units": len(res),
            "unit_ids": list(res.unit_ids),
            "unit_labels": None if labels is None else [str(x) for x in labels],
            "activations": act_file,
            "undefined_concepts": list(res.undefined_concepts),
        } | _split_entry(res, n))
        records.extend(res.to_unit_records(layer))
    return layers_meta, records


def _split_entry(res: ExplanationResult, n: int) -> dict[str, Any]:
    """``{"holdout_index": [...]}`` for a result of a holdout search, else ``{}``."""
    held = getattr(res, "holdout_index", None)
    if held is None:
        return {}
    held = np.asarray(held, dtype=np.int64).ravel()
    if held.size and (held.min() < 0 or held.max() >= n):
        return {}
    return {"holdout_index": np.unique(held).tolist()}


def _write_tables(out: Path, frames: list[tuple[str, ExplanationResult]]) -> None:
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - depends on the environment
        logger.warning("pandas is not installed: explanations.csv/.parquet not written "
                       "(pip install 'invert[cli]')")
        return
    cols = ["layer", *COLUMNS]
    parts = []
    for layer, res in frames:
        df = res.to_dataframe()
        df.insert(0, "layer", layer)
        parts.append(df)
    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)
    df["unit"] = df["unit"].astype(str)
    with replacing(out / CSV_FILE) as tmp:
        df.to_csv(tmp, index=False)
    try:
        with replacing(out / PARQUET_FILE) as tmp:
            df.to_parquet(tmp, index=False)
    except ImportError:  # pragma: no cover - depends on the environment
        logger.warning("pyarrow is not installed: explanations.parquet not written")


def _concepts_file(meta: dict[str, Any]) -> Any:
    entry = meta.get("concepts")
    return entry.get("file") if isinstance(entry, dict) else None


@dataclass
class RunData:
    """A run read back from its output folder (see :func:`load_run`)."""

    out: Path
    meta: dict[str, Any]
    records: dict[str, list[dict[str, Any]]]
    concepts: ConceptSet
    activations: dict[str, np.ndarray] = field(default_factory=dict)
    #: the documents of a text run (``texts.json``), or None
    texts: SampleTexts | None = None

    @property
    def layers(self) -> list[dict[str, Any]]:
        return list(self.meta["layers"])

    @property
    def sample_ids(self) -> list[Any]:
        return list(self.meta["sample_ids"])


def load_run(out: str | os.PathLike) -> RunData:
    """Read an output folder written by :func:`save_run` (activations are memory-mapped).

    Raises
    ------
    FileNotFoundError
        When ``out`` has no ``run.json`` or a file it names is missing.
    invert._validate.InvalidParameterError
        (a ``ValueError``) when ``run.json`` is not an invert run, names a file outside
        ``out`` (symbolic links followed) or a layer slug that is not a plain file name.
    """
    out = Path(out)
    path = out / RUN_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{out}: not an invert output folder (no {RUN_FILE}; make one with 'invert explain')"
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise bad("out", "an invert output folder", f"{path}, which is not valid JSON ({err})",
                  raw=True) from err
    if not isinstance(meta, dict) or meta.get("format") != "invert.run":
        raise bad("out", "an invert output folder", f"{path}, which is not an invert run "
                  "description", raw=True)
    records: dict[str, list[dict[str, Any]]] = {lay["name"]: [] for lay in meta["layers"]}
    jsonl = out / JSONL_FILE
    if not jsonl.is_file():
        raise FileNotFoundError(f"{jsonl}: missing")
    with open(jsonl, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                rec = json.loads(line)
                records.setdefault(rec["layer"], []).append(rec)
    concepts = ConceptSet.load(file_inside(out, _concepts_file(meta), "run.json: concepts"))
    acts = {}
    for lay in meta["layers"]:
        check_slug(lay.get("slug"), f"run.json: slug of layer {lay.get('name')!r}")
        f = file_inside(out, lay.get("activations"),
                        f"run.json: activations of layer {lay.get('name')!r}")
        if not f.is_file():
            raise FileNotFoundError(f"{f}: missing (needed to draw the report)")
        acts[lay["name"]] = np.load(f, mmap_mode="r")
    return RunData(out=out, meta=meta, records=records, concepts=concepts, activations=acts,
                   texts=_texts(out, meta, concepts.n_samples))


def _texts(out: Path, meta: dict[str, Any], n: int) -> SampleTexts | None:
    """The run's ``texts.json`` (None without one, or when it does not fit: logged)."""
    name = meta.get("texts")
    if not name:
        return None
    f = file_inside(out, name, "run.json: texts")
    texts = read_texts(f, n) if f.is_file() else None
    if texts is None:
        logger.warning("%s: missing or not the texts of these %d rows; the report shows "
                       "sample ids", f, n)
    return texts


def record_baseline(out: str | os.PathLike, results: Mapping[str, ExplanationResult],
                    n_directions: int, search: Mapping[str, Any], *, random_state=None
                    ) -> list[str]:
    """The random-direction baseline of each layer of the run in ``out``
    (:func:`invert.trust.random_baseline` on the layer's saved activations and concepts,
    with the run's search parameters), stored in ``run.json`` as ``"baseline"``
    (``{layer: summary | {"run": the run's medians}}``); returns one line per layer that sets
    it beside the run's figures."""
    run = load_run(out)
    kw = {k: v for k, v in search.items() if k in (*SEARCH_PARAMS, "device", "memory_budget")}
    entries, lines = {}, []
    for layer, res in results.items():
        vals = np.asarray(run.activations[layer], dtype=np.float64)
        base = random_baseline(vals, run.concepts, n_directions=n_directions,
                               random_state=random_state,
                               held_out=getattr(res, "holdout_index", None), **kw)
        figs = run_figures(res, vals, run.concepts)
        entries[layer] = base.summary() | {"run": figs}
        lines.append(f"{layer or 'output'}: {base.line(figs)}")
    meta = dict(run.meta) | {"baseline": entries}
    with replacing(Path(out) / RUN_FILE) as tmp:
        tmp.write_text(json.dumps(json_safe(meta), indent=1, allow_nan=False), encoding="utf-8")
    return lines
