"""What the command line and the demo share: load and align inputs, load models, search
layers with progress bars, and the summary table. No click here: errors are raised as
:class:`CommandError` (a user error, one line) or as the library's own exceptions."""

from __future__ import annotations

import importlib
import logging
import math
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._files import layer_slug
from ._progress import progress_bar
from .api import explain
from .distributed import ShardError, explain_sharded
from .extract import collect_activations, load_image_folder
from .report import build_report, save_run
from .trust import permutation_test

__all__ = [
    "CommandError", "load_activations", "load_concepts", "align_concepts", "prune_concepts",
    "load_model", "explain_layer", "explain_layer_sharded", "summary_table", "run_explain",
]

logger = logging.getLogger(__name__)

ACTIVATION_SUFFIXES = (".npy", ".pt", ".pth", ".parquet", ".csv")
CONCEPT_TABLE_SUFFIXES = (".csv", ".tsv", ".parquet")
BUILTIN_MODELS = ("efficientnet-lite0",)


class CommandError(Exception):
    """A problem with the user's input or environment: one line, exit code 2."""


def load_activations(
    path: Path, layer: str | None = None, sample_column: str = "sample", *, mmap: bool = False
) -> dict[str, tuple[np.ndarray, list, list | None]]:
    """Read precomputed activations: ``{layer: (values (N, K), unit_ids, sample_ids or None)}``.

    ``.npy``: an ``(N,)`` or ``(N, K)`` array. ``.pt``/``.pth``: a tensor, or a dict of layer
    name -> tensor. ``.parquet``/``.csv``: one column per unit (the column name is the unit
    id) and optionally a ``sample_column`` of sample ids. With ``mmap``, a ``.npy`` file is
    memory-mapped instead of read.
    """
    if not path.is_file():
        raise FileNotFoundError(f"--activations: file {str(path)!r} not found")
    suffix = path.suffix.lower()
    name = layer if layer is not None else path.stem
    if suffix not in ACTIVATION_SUFFIXES:
        raise CommandError(
            f"--activations: expected a {', '.join(ACTIVATION_SUFFIXES)} file, got {path.name!r}"
        )
    if suffix == ".npy":
        arr = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
        return {name: _as_2d(arr, path)}
    if suffix in (".pt", ".pth"):
        import torch

        obj = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(obj, dict):
            if not obj:
                raise CommandError(f"--activations: {path.name} holds an empty dict")
            return {str(k): _as_2d(np.asarray(v.float() if hasattr(v, "float") else v), path)
                    for k, v in obj.items()}
        return {name: _as_2d(np.asarray(obj.float() if hasattr(obj, "float") else obj), path)}
    import pandas as pd

    df = pd.read_parquet(path) if suffix == ".parquet" else pd.read_csv(path)
    sids = None
    if sample_column in df.columns:
        sids = df[sample_column].tolist()
        df = df.drop(columns=[sample_column])
    bad = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
    if bad:
        raise CommandError(
            f"--activations: non-numeric column(s) {bad[:5]} in {path.name} (only the "
            f"{sample_column!r} column may hold ids)"
        )
    values, _, _ = _as_2d(df.to_numpy(dtype=np.float32), path)
    return {name: (values, [str(c) for c in df.columns], sids)}


def _as_2d(arr: np.ndarray, path: Path) -> tuple[np.ndarray, list, None]:
    arr = np.asarray(arr)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise CommandError(
            f"--activations: expected an (N, K) array in {path.name}, got shape {arr.shape}"
        )
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise CommandError(f"--activations: expected numbers in {path.name}, got {arr.dtype}")
    return arr.astype(np.float32, copy=False), [str(k) for k in range(arr.shape[1])], None


def load_concepts(spec: str, data: Path | None, *, wordnet: bool):
    """A ConceptSet from ``--concepts``: ``folders``, ``imagenet``, a table or a saved set."""
    from . import concepts as C

    if spec in ("folders", "imagenet"):
        if data is None:
            raise CommandError(f"--concepts {spec}: needs --data FOLDER (the image folder)")
        if spec == "folders":
            return C.from_folders(data, extensions=C.IMAGE_EXTENSIONS, wordnet=wordnet)
        return C.from_imagenet_folder(data)
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(
            f"--concepts: {spec!r} is neither 'folders', 'imagenet' nor an existing file"
        )
    suffix = path.suffix.lower()
    if suffix in (".npz", ".json"):
        return C.ConceptSet.load(path)
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        if b"invert.concepts" in (pq.read_schema(path).metadata or {}):
            return C.ConceptSet.load(path)
    if suffix not in CONCEPT_TABLE_SUFFIXES:
        raise CommandError(
            f"--concepts: expected 'folders', 'imagenet', a .csv/.tsv/.parquet table or a saved "
            f"concept set (.npz), got {path.name!r}"
        )
    return C.from_table(path)


def align_concepts(cs, sample_ids: Sequence[Any] | None, n: int):
    """Reorder ``cs`` to the activations' samples (by id when both have ids)."""
    if sample_ids is not None and cs.sample_ids is not None:
        pos = {str(s): i for i, s in enumerate(cs.sample_ids)}
        missing = [s for s in sample_ids if str(s) not in pos]
        if not missing:
            idx = np.array([pos[str(s)] for s in sample_ids], dtype=np.int64)
            if len(idx) == cs.n_samples and np.array_equal(idx, np.arange(len(idx))):
                return cs
            return cs.subset(samples=idx)
        if cs.n_samples != n:
            raise CommandError(
                f"--concepts: {len(missing)} of the {n} activation samples have no concept row, "
                f"e.g. {[str(m) for m in missing[:3]]}"
            )
        logger.warning("sample ids of activations and concepts differ; matching rows by order")
    if cs.n_samples != n:
        raise CommandError(
            f"--concepts: expected {n} samples (one per activation row), got {cs.n_samples}"
        )
    return cs


def prune_concepts(cs, min_samples: int):
    """Drop concepts on fewer than ``min_samples`` samples and those that hold everywhere."""
    counts = np.asarray(cs.counts).ravel()
    keep = np.flatnonzero((counts >= max(1, min_samples)) & (counts < cs.n_samples))
    if len(keep) == 0:
        raise CommandError(
            f"--concepts: no concept is present on at least {min_samples} and on fewer than all "
            f"{cs.n_samples} samples"
        )
    if len(keep) == cs.n_concepts:
        return cs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cs.subset(concepts=keep)


def load_model(spec: str):
    """``(model, transform or None)`` from a built-in name or a ``module:function`` path."""
    if spec in BUILTIN_MODELS:
        from .extract import efficientnet_lite0

        return efficientnet_lite0()
    if ":" not in spec:
        raise CommandError(
            f"--model: expected one of {list(BUILTIN_MODELS)} or 'module:function', got {spec!r}"
        )
    mod_name, fn_name = spec.split(":", 1)
    added = False
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
        added = True
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as err:
        raise CommandError(f"--model: cannot import module {mod_name!r}: {err}") from err
    finally:
        if added:
            sys.path.remove(str(Path.cwd()))
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise CommandError(f"--model: {mod_name!r} has no function {fn_name!r}")
    obj = fn()
    model, transform = (obj if isinstance(obj, tuple) else (obj, None))[:2]
    import torch

    if not isinstance(model, torch.nn.Module):
        raise CommandError(
            f"--model: {spec} returned {type(model).__name__}, expected a torch.nn.Module "
            "(or a (module, transform) tuple)"
        )
    return model, transform


def explain_layer(values, unit_ids: Sequence[Any], concepts, *, desc: str, progress: bool,
                  **search: Any):
    """:func:`invert.explain` of one layer with a progress bar."""
    with progress_bar(values.shape[1], desc, progress) as tick:
        return explain(values, concepts, unit_ids=list(unit_ids), progress=tick, **search)


def explain_layer_sharded(values, unit_ids: Sequence[Any], concepts, *, desc: str,
                          progress: bool, out_dir: Path, backend: str, address: str | None,
                          shard_units: int | None, **search: Any):
    """:func:`invert.distributed.explain_sharded` of one layer with a progress bar."""
    with progress_bar(values.shape[1], desc, progress) as tick:
        try:
            return explain_sharded(values, concepts, unit_ids=list(unit_ids), out_dir=out_dir,
                                   backend=backend, address=address, shard_units=shard_units,
                                   progress=tick, **search)
        except ShardError as err:
            raise CommandError(f"--backend {backend}: {err}") from err


def summary_table(results: dict[str, Any], unit_labels: dict[str, list[str]] | None = None,
                  top: int = 3) -> str:
    """A plain-text summary: per layer, units explained, median AUROC, the best units."""
    lines = [f"{'layer':<14} {'units':>6} {'explained':>9} {'median AUROC':>12}  best units"]
    for layer, res in results.items():
        best = [(u.unit_id, u.best, k) for k, u in enumerate(res.units)]
        ok = [(uid, e, k) for uid, e, k in best if e is not None]
        med = float(np.median([e.auroc for _, e, _ in ok])) if ok else math.nan
        ok.sort(key=lambda t: -t[1].auroc)
        tops = []
        for uid, e, k in ok[:top]:
            lab = (unit_labels or {}).get(layer)
            name = f"{uid}" + (f" ({lab[k]})" if lab else "")
            tops.append(f"{name}: {e.formula} [{e.auroc:.3f}]")
        shown = layer or "output"
        lines.append(f"{shown:<14} {len(res):>6} {len(ok):>9} {med:>12.3f}  "
                     + ("; ".join(tops) if tops else "-"))
    return "\n".join(lines)


def run_explain(
    *,
    out: Path,
    concepts_spec: str,
    activations: Path | None = None,
    model: str | None = None,
    layers: Sequence[str] = (),
    data: Path | None = None,
    images: Path | None = None,
    wordnet: bool = False,
    reduce: str = "mean",
    batch_size: int = 32,
    cache_dir: Path | None = None,
    min_concept_samples: int = 1,
    report: bool = True,
    progress: bool = True,
    search: dict[str, Any],
    backend: str = "local",
    address: str | None = None,
    shard_units: int | None = None,
    permutations: int = 0,
    fdr: float = 0.05,
) -> tuple[Path, dict[str, Any]]:
    """The work of ``invert explain``; returns the output folder and the results per layer."""
    if (activations is None) == (model is None):
        raise CommandError("give either --activations FILE or --model NAME (with --data)")
    if model is not None and (data is None or not layers):
        raise CommandError("--model needs --data FOLDER and at least one --layer")
    if activations is not None and len(layers) > 1:
        raise CommandError("--activations takes at most one --layer (the name to record)")
    if data is not None and not data.is_dir():
        raise FileNotFoundError(f"--data: folder {str(data)!r} not found")
    if backend != "ray" and (address is not None or shard_units is not None):
        raise CommandError("--address and --shard-units need --backend ray")
    if backend == "ray" and (search.get("holdout") is not None or permutations):
        raise CommandError("--holdout and --permutations are not available with --backend ray")
    acts: dict[str, tuple[np.ndarray, list, list | None]]
    images_root = images if images is not None else data
    if activations is not None:
        acts = load_activations(activations, layers[0] if layers else None,
                                mmap=backend == "ray")
    else:
        net, transform = load_model(model)  # type: ignore[arg-type]
        ds = load_image_folder(data, transform)  # type: ignore[arg-type]
        got = collect_activations(net, ds, list(layers), reduce=reduce, batch_size=batch_size,
                                  device=search.get("device"), cache_dir=cache_dir,
                                  progress=progress)
        acts = {k: (np.asarray(v.values, dtype=np.float32), list(v.unit_ids), list(v.sample_ids))
                for k, v in got.items()}
    n = next(iter(acts.values()))[0].shape[0]
    sids = next(iter(acts.values()))[2]
    for name, (v, _, _s) in acts.items():
        if v.shape[0] != n:
            raise CommandError(f"--activations: layer {name!r} has {v.shape[0]} rows, not {n}")
    cs = load_concepts(concepts_spec, data, wordnet=wordnet)
    cs = align_concepts(cs, sids, n)
    cs = prune_concepts(cs, min_concept_samples)
    sample_ids = sids if sids is not None else (cs.sample_ids or list(range(n)))
    results = {}
    for name, (v, uids, _) in acts.items():
        if backend == "ray":
            results[name] = explain_layer_sharded(
                v, uids, cs, desc=f"search {name or 'output'}", progress=progress,
                out_dir=out / "sharded" / layer_slug(name), backend=backend, address=address,
                shard_units=shard_units, **search)
            continue
        results[name] = explain_layer(v, uids, cs, desc=f"search {name or 'output'}",
                                      progress=progress, **search)
        if permutations:  # p-values corrected for the search, BH q-values, survivors at fdr
            permutation_test(v, cs, results[name], n_permutations=permutations,
                             random_state=search.get("random_state"), alpha=fdr)
    params = dict(search) | {"reduce": reduce, "min_concept_samples": min_concept_samples}
    if permutations:
        params |= {"permutations": permutations, "fdr": fdr}
    save_run(out, results, {k: v[0] for k, v in acts.items()}, cs, params=params,
             sample_ids=sample_ids, images_root=images_root,
             extra={"command": "explain", "model": model,
                    "activations_file": None if activations is None else str(activations)}
             | ({"backend": backend} if backend != "local" else {}))
    if report:
        build_report(out, progress=progress)
    return out, results
