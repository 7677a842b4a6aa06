"""Scale-out: the search sharded over units and extraction sharded over samples, on Ray or not.

:func:`explain_sharded` runs :func:`invert.explain` on contiguous shards of units and
gathers one :class:`~invert.engine.result.ExplanationResult`, equal to ``explain`` on the whole
array (the search of a unit does not depend on the other units). It

* reads only each shard's columns (a ``.npy`` file is read with plain file reads in row
  chunks, never mapped or loaded whole), so activations larger than memory are searched
  within ``memory_budget`` per worker;
* writes each finished shard atomically to ``out_dir/shards/units_<start>_<stop>.pkl``
  with a ``manifest.json`` that names the run (a hash of the activations, the concepts,
  the search parameters and the invert version): a rerun of the same run computes only
  the missing shards, a rerun of a different run starts afresh;
* runs the shards in this process (``backend="local"``) or as Ray tasks
  (``backend="ray"``: local mode on one machine, or a cluster by ``address``). A worker
  that dies loses only its own shard: the others finish and are kept, and a
  :class:`ShardError` lists the missing ones, which a rerun completes.

:func:`collect_activations_sharded` splits a data set into contiguous sample shards, runs
:func:`invert.collect_activations` on each (one cached shard each, in a Ray task or in this
process) and writes the ``(N, K)`` activations in sample order to ``.npy`` files.

Ray is an optional extra (``pip install 'invert[ray]'``), imported only when used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pickle
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from .._files import layer_slug
from .._validate import bad, check_choice, check_int
from ..engine.inputs import InMemory, Labels, NpyColumns, activation_source
from ..engine.params import SEARCH_PARAMS, check_search_params
from ..engine.result import ExplanationResult, UnitExplanations
from ..extract import cache as _cache

__all__ = [
    "ShardError",
    "explain_sharded",
    "collect_activations_sharded",
    "plan_shard_units",
]

log = logging.getLogger(__name__)

#: Version of the shard files and manifest; a change rebuilds old stores.
SHARD_FORMAT = 1
_SEARCH_KEYS = (*SEARCH_PARAMS, "device")
_DEFAULT_BUDGET = 1 << 30
_SHARD_RE = re.compile(r"^units_(\d+)_(\d+)\.pkl$")
_RAY_HINT = "pip install 'invert[ray]'"


class ShardError(RuntimeError):
    """Some shards failed; the finished ones are kept and a rerun computes only these.

    Attributes
    ----------
    missing : list of (int, int)
        ``(start, stop)`` of each failed shard (units, or samples for extraction).
    errors : dict
        ``(start, stop)`` -> one-line error.
    """

    def __init__(self, what: str, missing: list[tuple[int, int]],
                 errors: Mapping[tuple[int, int], str]):
        self.missing = sorted(missing)
        self.errors = dict(errors)
        shown = ", ".join(f"[{a}, {b})" for a, b in self.missing[:10])
        more = f" and {len(self.missing) - 10} more" if len(self.missing) > 10 else ""
        first = self.errors.get(self.missing[0], "") if self.missing else ""
        super().__init__(
            f"{len(self.missing)} {what} shard(s) failed: {shown}{more} (first error: {first}); "
            "finished shards are kept, rerun to compute only the missing ones")


def _import_ray():
    try:
        import ray
    except ImportError as err:
        raise ImportError(f"backend='ray' needs Ray: {_RAY_HINT}") from err
    return ray


# ----------------------------------------------------------------------------- sources


def _fingerprint(source: NpyColumns | InMemory) -> str:
    """A ``.npy`` file: path, size, mtime, layout and the bytes of its first and last MiB of
    data; an in-memory array: all its bytes."""
    if isinstance(source, NpyColumns):
        st = os.stat(source.path)
        fp = _cache.Fingerprint().update("npy", source.path, st.st_size, st.st_mtime_ns,
                                         source.shape, source.dtype, source.fortran)
        with open(source.path, "rb") as f:
            f.seek(source.offset)
            fp.update(f.read(1 << 20))
            f.seek(max(source.offset, st.st_size - (1 << 20)))
            fp.update(f.read(1 << 20))
        return fp.hexdigest()
    a = source.array
    h = hashlib.sha1(f"mem{a.dtype.str}{a.shape}".encode())
    step = max(1, (64 << 20) // max(1, a.shape[1] * a.dtype.itemsize))
    for r in range(0, a.shape[0], step):
        h.update(np.ascontiguousarray(a[r:r + step]).data)
    return h.hexdigest()


def _activation_source(activations) -> tuple[NpyColumns | InMemory, list[Any] | None]:
    """The engine's column reader; tensors become numpy arrays (picklable for Ray)."""
    source, unit_ids = activation_source(activations)
    if isinstance(source, InMemory) and isinstance(source.array, torch.Tensor):
        source = InMemory(source.array.cpu().numpy())
    return source, unit_ids


@dataclasses.dataclass
class _Labels(Labels):
    """Validated concept labels (bool array or CSR) and names; picklable, cheap to ship."""

    def fingerprint(self) -> str:
        fp = _cache.Fingerprint().update("labels", self.names)
        y = self.matrix
        if sp.issparse(y):
            y = sp.csr_matrix(y)
            y.sort_indices()
            fp.update("csr", y.shape, y.indptr.astype(np.int64), y.indices.astype(np.int64))
        else:
            fp.update("dense", np.packbits(np.asarray(y, dtype=bool), axis=1), y.shape)
        return fp.hexdigest()


# ----------------------------------------------------------------------------- planning


def _check_search(search: Mapping[str, Any], n_concepts: int) -> dict[str, Any]:
    unknown = sorted(set(search) - set(_SEARCH_KEYS))
    if unknown:
        raise TypeError(f"search: expected keyword arguments of invert.explain "
                        f"({', '.join(_SEARCH_KEYS)}), got {', '.join(unknown)}")
    device = search.get("device")
    s = check_search_params({k: v for k, v in search.items() if k != "device"}, n_concepts)
    s["device"] = str(device) if device is not None and not isinstance(device, str) else device
    return s


def plan_shard_units(n_samples: int, n_units: int, memory_budget: int | str | None = None, *,
                     itemsize: int = 4, floating: bool = True) -> tuple[int, int]:
    """Units per shard and the per-shard search budget that keep a worker within a budget.

    Half of ``memory_budget`` holds the shard's activation columns (their dtype, a float64
    copy when they are not floating point, and the finiteness mask); the other half is the
    working memory of :func:`invert.explain` for its chunks of units.

    Parameters
    ----------
    n_samples, n_units : int
        The activations' shape ``(N, K)``.
    memory_budget : int or str, optional
        Bytes per worker, or a size such as ``"2GiB"`` (default 1 GiB).
    itemsize : int, default 4
        Bytes per activation value in the source (4 for float32).
    floating : bool, default True
        Whether the source values are floating point (otherwise the search copies them to
        float64).

    Returns
    -------
    (int, int)
        Units per shard (at least 1, at most ``n_units``) and the ``memory_budget`` to
        pass to :func:`invert.explain` for one shard.

    Examples
    --------
    >>> plan_shard_units(200_000, 512, "256MiB")
    (134, 134217728)
    """
    from ..engine.search import _parse_budget

    n_samples = check_int("n_samples", n_samples, minimum=1)
    n_units = check_int("n_units", n_units, minimum=1)
    budget = _parse_budget(memory_budget)
    search_budget = max(1 << 20, budget // 2)
    per_unit = n_samples * (itemsize + (0 if floating else 8) + 1)
    units = max(1, min(n_units, (budget - search_budget) // max(1, per_unit)))
    return int(units), int(search_budget)


def _gaps(done: list[tuple[int, int]], k: int, size: int) -> list[tuple[int, int]]:
    """The unit ranges of [0, k) not covered by ``done`` (sorted, disjoint), cut into
    shards of at most ``size``."""
    todo, pos = [], 0
    for a, b in [*done, (k, k)]:
        for s in range(pos, a, size):
            todo.append((s, min(a, s + size)))
        pos = max(pos, b)
    return todo


class _Store:
    """``<out_dir>/shards/``: the manifest and one pickle per finished shard."""

    def __init__(self, out_dir: str | os.PathLike[str], key: str, meta: Mapping[str, Any]):
        self.dir = Path(out_dir) / "shards"
        self.key = key
        self.meta = dict(meta)

    def open(self) -> list[tuple[int, int]]:
        """Check the manifest (clearing shards of another run) and list finished shards."""
        self.dir.mkdir(parents=True, exist_ok=True)
        mpath = self.dir / "manifest.json"
        old = None
        if mpath.exists():
            try:
                old = json.loads(mpath.read_text(encoding="utf-8")).get("key")
            except (OSError, ValueError):
                old = None
        if old != self.key:
            stale = [p for p in self.dir.iterdir() if _SHARD_RE.match(p.name)]
            if stale:
                log.warning("%s holds %d shards of a different run (activations, concepts, "
                            "parameters or invert version changed); recomputing all",
                            self.dir, len(stale))
            for p in stale:
                p.unlink()
            data = json.dumps({"key": self.key, **self.meta}, indent=1, sort_keys=True,
                              default=str).encode()
            _cache.atomic_write(mpath, lambda f: f.write(data))
        for p in self.dir.glob(".units_*.tmp"):  # left by a killed writer
            p.unlink(missing_ok=True)
        spans = []
        for p in self.dir.iterdir():
            m = _SHARD_RE.match(p.name)
            if m:
                spans.append((int(m.group(1)), int(m.group(2))))
        spans.sort()
        kept, end = [], 0
        k = int(self.meta["n_units"])
        for a, b in spans:  # disjoint and inside [0, k); anything else is dropped
            if a >= end and a < b <= k:
                kept.append((a, b))
                end = b
            else:
                (self.dir / f"units_{a}_{b}.pkl").unlink(missing_ok=True)
        return kept

    def path(self, start: int, stop: int) -> Path:
        return self.dir / f"units_{start}_{stop}.pkl"

    def write(self, out: Mapping[str, Any]) -> None:
        data = pickle.dumps({"key": self.key, "format": SHARD_FORMAT, **out},
                            protocol=pickle.HIGHEST_PROTOCOL)
        _cache.atomic_write(self.path(out["start"], out["stop"]), lambda f: f.write(data))

    def read(self, start: int, stop: int) -> dict[str, Any]:
        p = self.path(start, stop)
        try:
            with open(p, "rb") as f:
                out = pickle.load(f)
            if out.get("key") != self.key or (out["start"], out["stop"]) != (start, stop):
                raise ValueError("shard of another run")
        except (OSError, ValueError, EOFError, pickle.UnpicklingError, KeyError) as err:
            p.unlink(missing_ok=True)
            raise ShardError("search", [(start, stop)],
                             {(start, stop): f"unreadable shard file {p.name}: {err}"}) from err
        return out


# ----------------------------------------------------------------------------- workers


def _shift_units(units: Sequence[UnitExplanations], start: int,
                 unit_ids: Sequence[Any] | None) -> list[UnitExplanations]:
    out = []
    for u in units:
        pos = start + u.unit
        items = [dataclasses.replace(e, unit=start + e.unit) for e in u]
        uid = unit_ids[u.unit] if unit_ids is not None else pos
        out.append(UnitExplanations(items, unit=pos, unit_id=uid, reason=u.reason))
    return out


def _run_shard(source, labels: _Labels, start: int, stop: int, unit_ids: list[Any] | None,
               search: Mapping[str, Any], hook: Callable[[int, int], Any] | None
               ) -> dict[str, Any]:
    """Search units ``[start, stop)``; positions and ids already global."""
    from ..engine.search import explain

    if hook is not None:
        hook(start, stop)
    if isinstance(source, np.ndarray):  # resolved from the Ray object store
        source = InMemory(source)
    block = source.read(start, stop)
    # explain() copies sparse labels, so the read-only object store is safe
    res = explain(block, labels, **search)
    del block
    return {
        "start": start, "stop": stop,
        "units": _shift_units(res.units, start, unit_ids),
        "undefined_concepts": list(res.undefined_concepts),
        "concept_names": res.concept_names, "params": dict(res.params),
        "n_samples": res.n_samples,
    }


def _ray_shard(source, labels, start, stop, unit_ids, search, hook, threads):
    if threads:
        torch.set_num_threads(threads)
    return _run_shard(source, labels, start, stop, unit_ids, search, hook)


class _RaySession:
    """``ray.init`` unless Ray already runs (then the caller's session is used as is)."""

    def __init__(self, address: str | None, num_cpus: int | None):
        self.ray = _import_ray()
        self.started = False
        if self.ray.is_initialized():
            if address is not None:
                log.info("Ray is already initialised; address %r is not used", address)
            return
        kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                              "logging_level": logging.WARNING}
        if address is not None:
            kw["address"] = address
        elif num_cpus is not None:
            kw["num_cpus"] = num_cpus
        try:
            self.ray.init(**kw)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise bad("address", "a reachable Ray cluster ('auto', 'ray://host:port') or "
                      f"none for a local one (ray.init failed: {' '.join(str(err).split())})",
                      address) from err
        self.started = True

    def cpus(self) -> int:
        return max(1, int(self.ray.cluster_resources().get("CPU", 1)))

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


def _run_ray(ray, fn: Callable[..., Any], jobs: list[tuple[tuple[int, int], tuple]],
             window: int, max_retries: int,
             on_done: Callable[[tuple[int, int], Any], None]) -> dict[tuple[int, int], str]:
    """Run ``fn(*args)`` per job as Ray tasks, at most ``window`` at once; returns errors."""
    remote = ray.remote(num_cpus=1, max_retries=max_retries, retry_exceptions=False)(fn)
    errors: dict[tuple[int, int], str] = {}
    queue = list(reversed(jobs))
    pending: dict[Any, tuple[int, int]] = {}
    while queue or pending:
        while queue and len(pending) < window:
            span, args = queue.pop()
            pending[remote.remote(*args)] = span
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            span = pending.pop(ref)
            try:
                out = ray.get(ref)
            except Exception as err:  # noqa: BLE001 - a dead worker or a failing shard
                cause = getattr(err, "cause", None) or err  # RayTaskError wraps the exception
                msg = " ".join(str(cause).split())
                errors[span] = f"{type(cause).__name__}: {msg[:300]}"
                log.warning("shard [%d, %d) failed: %s", span[0], span[1], errors[span])
                continue
            on_done(span, out)
            del out
    return errors


# ----------------------------------------------------------------------------- search


def explain_sharded(
    activations,
    concepts,
    *,
    shard_units: int | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    backend: str = "local",
    address: str | None = None,
    memory_budget: int | str | None = None,
    num_workers: int | None = None,
    unit_ids: Sequence[Any] | None = None,
    max_retries: int = 3,
    threads_per_worker: int = 1,
    progress: Callable[[int, int], Any] | None = None,
    _before_shard: Callable[[int, int], Any] | None = None,
    **search: Any,
) -> ExplanationResult:
    """:func:`invert.explain` sharded over units, out of core, resumable, locally or on Ray.

    Parameters
    ----------
    activations : path, array-like, np.memmap or activation set, shape (N,) or (N, K)
        A ``.npy`` path (or a memmap of a whole ``.npy`` file) is read shard by shard with
        file reads and never loaded whole; other arrays are sliced in memory (on Ray they
        are put in the object store once).
    concepts : array-like, scipy.sparse matrix or concept set, shape (N, C)
        As for :func:`invert.explain`.
    shard_units : int, optional
        Units per shard (default: from ``memory_budget``, see :func:`plan_shard_units`; on
        Ray also at most ``ceil(K / (4 * workers))`` so the workers stay busy).
    out_dir : path, optional
        Folder for the shard store ``out_dir/shards/`` (finished shards and
        ``manifest.json``). With it a rerun computes only missing shards; without it
        nothing is written and nothing can be resumed.
    backend : {"local", "ray"}
        ``local`` runs the shards one after another in this process; ``ray`` runs each as a
        Ray task (1 CPU each).
    address : str, optional
        ``ray.init(address=...)`` of a cluster; default a local Ray with ``num_workers``
        CPUs. When Ray is already initialised, that session is used as it is.
    memory_budget : int or str, optional
        Peak working memory per worker (bytes, or a size such as ``"2GiB"``; default 1 GiB):
        half for the shard's activation columns, half for the search. The concept matrix,
        which every worker holds once, comes on top.
    num_workers : int, optional
        Ray: shards run at once (default: the cluster's CPUs).
    unit_ids : sequence, optional
        One id per unit (default: the activations' ``unit_ids`` attribute, else positions).
    max_retries : int, default 3
        Ray: times a task is retried when its worker dies (not when the search raises).
    threads_per_worker : int, default 1
        Ray: ``torch.set_num_threads`` in each task (0 leaves it alone).
    progress : callable, optional
        ``progress(units_done, n_units)`` after each finished shard.
    **search
        ``length``, ``beam_size``, ``min_fraction``, ``max_fraction``, ``mode``,
        ``limit_search``, ``dedupe``, ``device``: as for :func:`invert.explain`.

    Returns
    -------
    ExplanationResult
        Equal to ``invert.explain(activations, concepts, **search)`` (formulas, AUROC,
        support, p-values, unit positions and ids).

    Raises
    ------
    ShardError
        When shards failed (a worker died, a task raised); the finished shards are in
        ``out_dir`` and a rerun computes only the missing ones.
    ImportError
        ``backend="ray"`` without Ray installed.

    Notes
    -----
    The store is keyed by a hash of the activations (for a file: path, size, modification
    time, shape, dtype and its first and last MiB; for an in-memory array: all its bytes),
    the concepts, the search parameters (not ``device`` or ``memory_budget``, which do not
    change results) and the invert version. Shard boundaries are free: a rerun with another
    ``shard_units`` keeps finished shards and fills the gaps. On a cluster, ``out_dir`` is
    written by the driver only; a ``.npy`` path must be readable by every worker.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = rng.random((300, 5)) < 0.3
    >>> a = y[:, [0, 2, 4]] + 0.1 * rng.standard_normal((300, 3))
    >>> res = explain_sharded(a, y, shard_units=2, length=1, beam_size=1)
    >>> [str(u[0].formula) for u in res]
    ['0', '2', '4']
    """
    from ..engine.inputs import _as_concepts
    from ..engine.search import _parse_budget

    backend = check_choice("backend", backend, ("local", "ray"))
    if shard_units is not None:
        shard_units = check_int("shard_units", shard_units, minimum=1)
    if num_workers is not None:
        num_workers = check_int("num_workers", num_workers, minimum=1)
    max_retries = check_int("max_retries", max_retries, minimum=0)
    threads_per_worker = check_int("threads_per_worker", threads_per_worker, minimum=0)
    if address is not None and not isinstance(address, str):
        raise bad("address", "a Ray address string", address, exc=TypeError)
    budget = _parse_budget(memory_budget)

    source, attr_ids = _activation_source(activations)
    n, k = source.shape
    if n == 0 or k == 0:
        raise bad("activations", "at least one sample and one unit", f"shape {(n, k)}", raw=True)
    ids = list(unit_ids) if unit_ids is not None else (
        list(attr_ids) if attr_ids is not None else None)
    if ids is not None and len(ids) != k:
        raise bad("unit_ids", f"{k} ids (one per unit)", f"{len(ids)} ids", raw=True)
    y, names = _as_concepts(concepts, n)
    labels = _Labels(names, y)
    search = _check_search(search, y.shape[1])

    dt = np.dtype(source.dtype if isinstance(source, NpyColumns) else source.array.dtype)
    auto_units, search_budget = plan_shard_units(
        n, k, budget, itemsize=dt.itemsize, floating=bool(np.issubdtype(dt, np.floating)))
    search_kw = dict(search, memory_budget=search_budget)
    if search_kw["device"] is None:
        search_kw.pop("device")

    session = _RaySession(address, num_workers) if backend == "ray" else None
    try:
        window = 1
        if session is not None:
            window = num_workers or session.cpus()
        size = shard_units
        if size is None:
            size = auto_units
            if session is not None:
                size = max(1, min(size, -(-k // (4 * window))))
        hashed = {key: v for key, v in search.items() if key != "device"}
        key = _cache.Fingerprint().update(
            "invert.shards", SHARD_FORMAT, _cache.invert_version(),
            "activations", _fingerprint(source), "concepts", labels.fingerprint(),
            "search", hashed, "unit_ids", ids,
        ).hexdigest()
        store = None
        done: list[tuple[int, int]] = []
        if out_dir is not None:
            store = _Store(out_dir, key, {
                "format": SHARD_FORMAT, "invert_version": _cache.invert_version(),
                "n_samples": n, "n_units": k, "n_concepts": int(y.shape[1]),
                "search": hashed, "activations": getattr(source, "path", "array"),
            })
            done = store.open()
        todo = _gaps(done, k, size)
        if done:
            log.info("resuming: %d shards (%d units) done, computing %d shards: %s",
                     len(done), sum(b - a for a, b in done), len(todo),
                     ", ".join(f"[{a}, {b})" for a, b in todo[:20]))
        else:
            log.info("computing %d shards of up to %d units (backend %s)", len(todo), size,
                     backend)
        results: dict[tuple[int, int], dict[str, Any]] = {}
        finished = sum(b - a for a, b in done)
        if progress is not None and finished:
            progress(finished, k)

        def on_done(span: tuple[int, int], out: dict[str, Any]) -> None:
            nonlocal finished
            if store is not None:
                store.write(out)
            else:
                results[span] = out
            finished += span[1] - span[0]
            log.debug("shard [%d, %d) done", *span)
            if progress is not None:
                progress(finished, k)

        errors: dict[tuple[int, int], str] = {}
        if session is None:
            for a, b in todo:
                sub = ids[a:b] if ids is not None else None
                on_done((a, b), _run_shard(source, labels, a, b, sub, search_kw, _before_shard))
        elif todo:
            ray = session.ray
            src_arg = ray.put(source.array) if isinstance(source, InMemory) else source
            lab_ref = ray.put(labels)
            jobs = [((a, b), (src_arg, lab_ref, a, b, ids[a:b] if ids is not None else None,
                              search_kw, _before_shard, threads_per_worker)) for a, b in todo]
            errors = _run_ray(ray, _ray_shard, jobs, window, max_retries, on_done)
    finally:
        if session is not None:
            session.close()
    if errors:
        raise ShardError("search", list(errors), errors)

    units: list[UnitExplanations] = []
    first: dict[str, Any] | None = None
    for a, b in sorted([*done, *(todo if store is not None else results)]):
        out = store.read(a, b) if store is not None else results.pop((a, b))
        first = first or {key_: out[key_] for key_ in
                          ("undefined_concepts", "concept_names", "params", "n_samples")}
        units.extend(out["units"])
    assert first is not None and len(units) == k
    return ExplanationResult(units=units, concept_names=first["concept_names"],
                             undefined_concepts=first["undefined_concepts"],
                             params=first["params"], n_samples=first["n_samples"])


# ----------------------------------------------------------------------------- extraction


class _DatasetShard(torch.utils.data.Dataset):
    """Rows ``[start, stop)`` of a map-style dataset; fingerprinted when the parent is."""

    def __init__(self, data, start: int, stop: int):
        self.data, self.start, self.stop = data, start, stop
        if callable(getattr(data, "fingerprint", None)):
            self.fingerprint = self._fingerprint

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, i: int):
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self.data[self.start + i]

    def _fingerprint(self) -> str:
        return _cache.Fingerprint().update("rows", self.data.fingerprint(), self.start,
                                           self.stop).hexdigest()


def _slice_data(data, start: int, stop: int):
    if isinstance(data, torch.Tensor | np.ndarray):
        return data[start:stop]
    if isinstance(data, Mapping):
        return {k: v[start:stop] for k, v in data.items()
                if isinstance(v, torch.Tensor | np.ndarray)}
    return _DatasetShard(data, start, stop)


def _extract_shard(model, data, start: int, stop: int, layers, kwargs: Mapping[str, Any],
                   threads: int, hook) -> dict[str, Any]:
    from ..extract import collect_activations

    if threads:
        torch.set_num_threads(threads)
    if hook is not None:
        hook(start, stop)
    got = collect_activations(model, _slice_data(data, start, stop), layers, progress=False,
                              **kwargs)
    sets = got if isinstance(got, dict) else {got.layer: got}
    return {"start": start, "stop": stop, "layers": {
        name: (np.array(s.values, dtype=np.float32), list(s.unit_ids), s.reduction)
        for name, s in sets.items()}}


def collect_activations_sharded(
    model,
    data,
    layers,
    *,
    out_dir: str | os.PathLike[str],
    shard_samples: int = 4096,
    backend: str = "local",
    address: str | None = None,
    num_workers: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    max_retries: int = 3,
    threads_per_worker: int = 1,
    _before_shard: Callable[[int, int], Any] | None = None,
    **kwargs: Any,
):
    """:func:`invert.collect_activations` sharded over contiguous samples, locally or on Ray.

    Each shard of ``shard_samples`` rows is extracted (in a Ray task, or in this process)
    with its own entry in the activation cache ``cache_dir``, so a rerun after a failure
    extracts only the missing shards. The driver then writes each layer's ``(N, K)``
    float32 array in sample order to ``out_dir/activations_<layer>.npy`` (atomically) and
    returns it memory-mapped.

    Parameters
    ----------
    model : torch.nn.Module
        Shipped to each worker (CPU); for ``device=`` pass it in ``kwargs``.
    data : tensor, array, mapping of tensors, map-style Dataset or folder path
        Sliced into contiguous sample shards (DataLoaders and iterables cannot be).
    layers : str or list of str
        As for :func:`invert.collect_activations` (names, or picklable callables).
    out_dir : path
        Where the assembled ``activations_<layer>.npy`` files go.
    shard_samples : int, default 4096
        Samples per shard (a multiple of ``batch_size`` keeps batching as in one run).
    backend, address, num_workers, max_retries, threads_per_worker
        As for :func:`explain_sharded`.
    cache_dir : path, optional
        Activation cache of the shards (default ``out_dir/cache``).
    **kwargs
        More arguments of :func:`invert.collect_activations` (``reduce``, ``batch_size``,
        ``device``, ``directions``, ...); ``reduce="tokens"`` is not supported here.

    Returns
    -------
    ActivationSet or dict of str to ActivationSet
        As :func:`invert.collect_activations` (values are read-only memmaps).

    Raises
    ------
    ShardError
        When shards failed; finished shards stay in the cache and a rerun extracts only
        the missing ones.
    """
    from ..extract import ActivationSet, load_image_folder

    backend = check_choice("backend", backend, ("local", "ray"))
    shard_samples = check_int("shard_samples", shard_samples, minimum=1)
    max_retries = check_int("max_retries", max_retries, minimum=0)
    if kwargs.get("reduce") == "tokens":
        raise bad("reduce", "a per-sample reduction (reduce='tokens' is not sharded)", "tokens")
    for name in ("progress", "cache_dir"):
        kwargs.pop(name, None)
    if isinstance(data, str | os.PathLike):
        data = load_image_folder(data, transform=kwargs.pop("transform", None))
    try:
        n = len(next(v for v in data.values() if hasattr(v, "shape"))) if isinstance(
            data, Mapping) else len(data)
    except (TypeError, StopIteration) as err:
        raise bad("data", "a tensor, array, mapping of tensors, map-style Dataset or folder "
                  "path (with a length)", type(data).__name__, exc=TypeError, raw=True) from err
    if n == 0:
        raise bad("data", "at least one sample", "0 samples", raw=True)
    if isinstance(data, torch.utils.data.DataLoader | torch.utils.data.IterableDataset):
        raise bad("data", "data that can be sliced (not a DataLoader or iterable)",
                  type(data).__name__, exc=TypeError, raw=True)
    sample_ids = getattr(data, "sample_ids", None)
    sample_ids = list(sample_ids) if sample_ids is not None else list(range(n))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    kwargs["cache_dir"] = str(cache_dir if cache_dir is not None else out_dir / "cache")
    spans = [(s, min(n, s + shard_samples)) for s in range(0, n, shard_samples)]
    single = isinstance(layers, str) or callable(layers)

    files: dict[str, np.memmap] = {}
    meta: dict[str, tuple[list[str], str]] = {}
    tmp: dict[str, Path] = {}

    def on_done(span: tuple[int, int], out: Mapping[str, Any]) -> None:
        for name, (vals, uids, red) in out["layers"].items():
            if name not in files:
                tmp[name] = out_dir / f".activations_{layer_slug(name)}.npy.tmp"
                files[name] = np.lib.format.open_memmap(
                    tmp[name], mode="w+", dtype=np.float32, shape=(n, vals.shape[1]))
                meta[name] = (uids, red)
            files[name][span[0]:span[1]] = vals
        log.debug("samples [%d, %d) extracted", *span)

    errors: dict[tuple[int, int], str] = {}
    if backend == "local":
        for a, b in spans:
            on_done((a, b), _extract_shard(model, data, a, b, layers, kwargs, 0, _before_shard))
    else:
        session = _RaySession(address, num_workers)
        try:
            ray = session.ray
            model_ref, data_ref = ray.put(model), ray.put(data)
            jobs = [((a, b), (model_ref, data_ref, a, b, layers, kwargs, threads_per_worker,
                              _before_shard)) for a, b in spans]
            errors = _run_ray(ray, _extract_shard, jobs, num_workers or session.cpus(),
                              max_retries, on_done)
        finally:
            session.close()
    if errors:
        files.clear()
        for p in tmp.values():
            p.unlink(missing_ok=True)
        raise ShardError("extraction", list(errors), errors)
    for f in files.values():
        f.flush()
    files.clear()  # closes the maps
    sets = {}
    for name, path in tmp.items():
        final = out_dir / f"activations_{layer_slug(name)}.npy"
        os.replace(path, final)
        uids, red = meta[name]
        sets[name] = ActivationSet(np.load(final, mmap_mode="r"), name, uids, sample_ids, red,
                                   cache_path=kwargs["cache_dir"])
    doc = {name: {"file": f"activations_{layer_slug(name)}.npy", "unit_ids": s.unit_ids,
                  "reduction": s.reduction} for name, s in sets.items()}
    data_json = json.dumps({"n_samples": n, "layers": doc}, indent=1, default=str).encode()
    _cache.atomic_write(out_dir / "activations.json", lambda fh: fh.write(data_json))
    if single:
        return next(iter(sets.values()))
    return sets
