"""What the command line and the demo share: load and align inputs, load models, search
layers with progress bars, and the summary table. No click here: user errors are raised as
:class:`CommandError` (one line) or as the library's own
:class:`~invert._validate.InvalidParameterError` and ``FileNotFoundError``; anything else is
a bug and keeps its traceback.

:func:`run_explain` is the work of ``invert explain`` in named stages:
:func:`check_explain_args`, :func:`read_layers`, :func:`check_rows`, :func:`load_concepts` /
:func:`align_concepts` / :func:`prune_concepts`, :func:`search_layers` and
:func:`write_outputs`."""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import pickle
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._files import layer_slug
from ._progress import progress_bar
from ._validate import InvalidParameterError
from .api import explain
from .concepts import IMAGE_EXTENSIONS, ConceptSet, from_folders, from_imagenet_folder, from_table
from .concepts.io import METADATA_KEY
from .distributed import ShardError, explain_sharded
from .engine.inputs import activation_source
from .extract import (
    UnreadableImageError,
    collect_activations,
    efficientnet_lite0,
    load_image_folder,
)
from .report import build_report, save_run
from .trust import permutation_test

__all__ = [
    "CommandError", "install_hints_as_command_errors", "load_activations", "load_concepts",
    "align_concepts", "prune_concepts", "load_model", "explain_layer", "explain_layer_sharded",
    "summary_table", "check_explain_args", "read_layers", "check_rows", "search_layers",
    "write_outputs", "run_explain",
]

logger = logging.getLogger(__name__)

ACTIVATION_SUFFIXES = (".npy", ".pt", ".pth", ".parquet", ".csv")
CONCEPT_TABLE_SUFFIXES = (".csv", ".tsv", ".parquet")
BUILTIN_MODELS = ("efficientnet-lite0",)
#: An ImportError whose message holds one of these was raised by invert with the command
#: that installs the missing package: a user error.
INSTALL_HINTS = ("pip install", "apt-get install")
CLI_EXTRA = "pip install 'invert[cli]'"

#: One layer's activations: (values (N, K) float32, unit ids, sample ids or None).
Layer = tuple[np.ndarray, list, list | None]


class CommandError(Exception):
    """A problem with the user's input or environment: one line, exit code 2."""


@contextlib.contextmanager
def install_hints_as_command_errors() -> Iterator[None]:
    """Turn an ``ImportError`` that invert raised with an install command into a
    :class:`CommandError`; other import errors (bugs) propagate unchanged."""
    try:
        yield
    except CommandError:
        raise
    except ImportError as err:
        if not any(hint in str(err) for hint in INSTALL_HINTS):
            raise
        raise CommandError(str(err)) from err


def _require(module: str, what: str, install: str = CLI_EXTRA) -> Any:
    """Import an optional package, or raise :class:`CommandError` naming its install."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise CommandError(f"{what} needs {module.split('.')[0]}: {install}") from err


def load_activations(
    path: Path, layer: str | None = None, sample_column: str = "sample", *, mmap: bool = False
) -> dict[str, Layer]:
    """Read precomputed activations: ``{layer: (values (N, K), unit_ids, sample_ids or None)}``.

    ``.npy``: an ``(N,)`` or ``(N, K)`` array. ``.pt``/``.pth``: a tensor, or a dict of layer
    name -> tensor. ``.parquet``/``.csv``: one column per unit (the column name is the unit
    id) and optionally a ``sample_column`` of sample ids. With ``mmap``, a ``.npy`` file is
    memory-mapped instead of read. Values are checked by the engine's input path
    (:func:`invert.engine.inputs.activation_source`) and returned as float32.
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
        with _reading(path):
            arr = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
        return {name: _as_2d(arr, path)}
    if suffix in (".pt", ".pth"):
        return _read_torch(path, name)
    return {name: _read_table(path, sample_column)}


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """A file reader's (numpy, torch, pandas) complaint about the user's file as a
    :class:`CommandError`."""
    try:
        yield
    except (ValueError, RuntimeError, EOFError, pickle.UnpicklingError) as err:
        raise CommandError(f"--activations: cannot read {path.name}: {err}") from err


def _read_torch(path: Path, name: str) -> dict[str, Layer]:
    with _reading(path):
        obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict):
        if not obj:
            raise CommandError(f"--activations: {path.name} holds an empty dict")
        return {str(k): _as_2d(np.asarray(v.float() if hasattr(v, "float") else v), path)
                for k, v in obj.items()}
    return {name: _as_2d(np.asarray(obj.float() if hasattr(obj, "float") else obj), path)}


def _read_table(path: Path, sample_column: str) -> Layer:
    pd = _require("pandas", "--activations " + path.suffix)
    if path.suffix.lower() == ".parquet":
        _require("pyarrow", "--activations .parquet")
    with _reading(path):
        df = pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path)
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
    return values, [str(c) for c in df.columns], sids


def _as_2d(arr: Any, path: Path) -> Layer:
    """Values checked by the engine's input path, as (N, K) float32, with unit ids 0..K-1."""
    arr = np.asarray(arr)  # a memory map stays file-backed
    try:
        activation_source(arr)
    except InvalidParameterError as err:
        msg = str(err).removeprefix("activations: ")
        raise CommandError(f"--activations: {msg} (in {path.name})") from err
    if arr.ndim == 1:
        arr = arr[:, None]
    # float32 as before (a later change keeps the file's dtype)
    return arr.astype(np.float32, copy=False), [str(k) for k in range(arr.shape[1])], None


def load_concepts(spec: str, data: Path | None, *, wordnet: bool) -> ConceptSet:
    """A ConceptSet from ``--concepts``: ``folders``, ``imagenet``, a table or a saved set."""
    if spec in ("folders", "imagenet"):
        if data is None:
            raise CommandError(f"--concepts {spec}: needs --data FOLDER (the image folder)")
        if spec == "folders":
            return from_folders(data, extensions=IMAGE_EXTENSIONS, wordnet=wordnet)
        return from_imagenet_folder(data)
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(
            f"--concepts: {spec!r} is neither 'folders', 'imagenet' nor an existing file"
        )
    suffix = path.suffix.lower()
    if suffix in (".npz", ".json"):
        return ConceptSet.load(path)
    if suffix == ".parquet" and _is_saved_concept_set(path):
        return ConceptSet.load(path)
    if suffix not in CONCEPT_TABLE_SUFFIXES:
        raise CommandError(
            f"--concepts: expected 'folders', 'imagenet', a .csv/.tsv/.parquet table or a saved "
            f"concept set (.npz), got {path.name!r}"
        )
    return from_table(path)


def _is_saved_concept_set(path: Path) -> bool:
    """Whether a Parquet file was written by :meth:`ConceptSet.save` (by its metadata)."""
    pq = _require("pyarrow.parquet", "--concepts .parquet")
    try:
        schema = pq.read_schema(path)
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise CommandError(f"--concepts: cannot read {path.name}: {err}") from err
    return METADATA_KEY in (schema.metadata or {})


def align_concepts(cs: ConceptSet, sample_ids: Sequence[Any] | None, n: int
                   ) -> ConceptSet:
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


def prune_concepts(cs: ConceptSet, min_samples: int) -> ConceptSet:
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


def load_model(spec: str) -> tuple[torch.nn.Module, Any]:
    """``(model, transform or None)`` from a built-in name or a ``module:function`` path."""
    if spec in BUILTIN_MODELS:
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
    reduce: str | float = "mean",
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
    """The work of ``invert explain``; returns the output folder and the results per layer.

    The stages: check the combination of arguments, read the layers (a file, or the model
    over ``data``), load and align the concepts, search each layer (with the permutation
    test), write the output folder and the report."""
    check_explain_args(activations=activations, model=model, layers=layers, data=data,
                       backend=backend, address=address, shard_units=shard_units,
                       holdout=search.get("holdout"), permutations=permutations)
    with install_hints_as_command_errors():
        acts = read_layers(activations=activations, model=model, layers=layers, data=data,
                           reduce=reduce, batch_size=batch_size, device=search.get("device"),
                           cache_dir=cache_dir, progress=progress, mmap=backend == "ray")
        n, sids = check_rows(acts)
        cs = load_concepts(concepts_spec, data, wordnet=wordnet)
        cs = prune_concepts(align_concepts(cs, sids, n), min_concept_samples)
        results = search_layers(acts, cs, search, progress=progress, out=out, backend=backend,
                                address=address, shard_units=shard_units,
                                permutations=permutations, fdr=fdr)
        params = dict(search) | {"reduce": reduce, "min_concept_samples": min_concept_samples}
        if permutations:
            params |= {"permutations": permutations, "fdr": fdr}
        write_outputs(out, results, acts, cs, params=params,
                      sample_ids=sids if sids is not None else (cs.sample_ids or list(range(n))),
                      images_root=images if images is not None else data, report=report,
                      progress=progress,
                      extra={"command": "explain", "model": model,
                             "activations_file": None if activations is None
                             else str(activations)}
                      | ({"backend": backend} if backend != "local" else {}))
    return out, results


def check_explain_args(*, activations: Path | None, model: str | None, layers: Sequence[str],
                       data: Path | None, backend: str, address: str | None,
                       shard_units: int | None, holdout: float | None,
                       permutations: int) -> None:
    """Raise :class:`CommandError` for a combination of ``invert explain`` options that does
    not go together (``FileNotFoundError`` for a missing ``--data`` folder)."""
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
    if backend == "ray" and (holdout is not None or permutations):
        raise CommandError("--holdout and --permutations are not available with --backend ray")


def read_layers(*, activations: Path | None, model: str | None, layers: Sequence[str],
                data: Path | None, reduce: str | float, batch_size: int, device: str | None,
                cache_dir: Path | None, progress: bool, mmap: bool) -> dict[str, Layer]:
    """The layers to explain: read from the ``activations`` file, or recorded from ``model``
    over the image folder ``data`` (through the activation cache ``cache_dir``)."""
    if activations is not None:
        return load_activations(activations, layers[0] if layers else None, mmap=mmap)
    assert model is not None and data is not None  # checked by check_explain_args
    net, transform = load_model(model)
    try:
        ds = load_image_folder(data, transform)
        got = collect_activations(net, ds, list(layers), reduce=reduce, batch_size=batch_size,
                                  device=device, cache_dir=cache_dir, progress=progress)
    except UnreadableImageError as err:
        raise CommandError(f"--data: {err}") from err
    return {k: (np.asarray(v.values, dtype=np.float32), list(v.unit_ids), list(v.sample_ids))
            for k, v in got.items()}


def check_rows(acts: dict[str, Layer]) -> tuple[int, list | None]:
    """The number of samples (the same in every layer) and the first layer's sample ids."""
    first = next(iter(acts.values()))
    n, sids = first[0].shape[0], first[2]
    for name, (v, _, _s) in acts.items():
        if v.shape[0] != n:
            raise CommandError(f"--activations: layer {name!r} has {v.shape[0]} rows, not {n}")
    return n, sids


def search_layers(acts: dict[str, Layer], cs: ConceptSet, search: dict[str, Any], *,
                  progress: bool, out: Path, backend: str, address: str | None,
                  shard_units: int | None, permutations: int, fdr: float) -> dict[str, Any]:
    """Explain every layer: locally (then the permutation test when ``permutations``), or
    in shards on ``backend`` (resumable from ``out/sharded/<layer>``)."""
    results = {}
    for name, (v, uids, _) in acts.items():
        desc = f"search {name or 'output'}"
        if backend == "ray":
            results[name] = explain_layer_sharded(
                v, uids, cs, desc=desc, progress=progress,
                out_dir=out / "sharded" / layer_slug(name), backend=backend, address=address,
                shard_units=shard_units, **search)
            continue
        results[name] = explain_layer(v, uids, cs, desc=desc, progress=progress, **search)
        if permutations:  # p-values corrected for the search, BH q-values, survivors at fdr
            permutation_test(v, cs, results[name], n_permutations=permutations,
                             random_state=search.get("random_state"), alpha=fdr)
    return results


def write_outputs(out: Path, results: dict[str, Any], acts: dict[str, Layer], cs: ConceptSet,
                  *, params: dict[str, Any], sample_ids: Sequence[Any],
                  images_root: Path | None, report: bool, progress: bool,
                  extra: dict[str, Any]) -> None:
    """The output folder (:func:`invert.report.save_run`) and, with ``report``, its HTML
    report."""
    save_run(out, results, {k: v[0] for k, v in acts.items()}, cs, params=params,
             sample_ids=sample_ids, images_root=images_root, extra=extra)
    if report:
        build_report(out, progress=progress)
