"""The search sharded over units: :func:`explain_sharded`, in named stages.

1. :func:`_prepare`: check the inputs and parameters once, as :func:`invert.explain` would,
   and name the run (its key);
2. :func:`_plan`: the shard size, the store's finished shards, the shards to compute;
3. :func:`_search_shards`: each shard searched by :func:`invert.engine.search.explain` on
   its columns only (:func:`_search_shard`, run by :func:`~.backends.run_shards` here or on
   Ray), stored as it finishes;
4. :func:`_gather`: the shards, read back in unit order, as one result.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from .._store import Fingerprint, invert_version
from .._validate import bad, check_choice, check_int, check_memory_budget
from ..engine.inputs import InMemory, Labels, NpyColumns, activation_source, as_labels
from ..engine.params import SEARCH_PARAMS, check_search_params
from ..engine.result import ExplanationResult, UnitExplanations
from ..engine.search import explain
from .backends import Backend, ShardError, open_backend, run_shards
from .store import SHARD_FORMAT, Payload, UnitStore, decode_shard, encode_shard

__all__ = ["explain_sharded", "plan_shard_units"]

log = logging.getLogger(__name__)

#: The keyword arguments of :func:`invert.explain` that a sharded search takes.
SEARCH_KEYS = (*SEARCH_PARAMS, "device")

Span = tuple[int, int]


# ----------------------------------------------------------------------------- planning


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
    n_samples = check_int("n_samples", n_samples, minimum=1)
    n_units = check_int("n_units", n_units, minimum=1)
    budget = check_memory_budget("memory_budget", memory_budget)
    search_budget = max(1 << 20, budget // 2)
    per_unit = n_samples * (itemsize + (0 if floating else 8) + 1)
    units = max(1, min(n_units, (budget - search_budget) // max(1, per_unit)))
    return int(units), int(search_budget)


def _gaps(done: list[Span], k: int, size: int) -> list[Span]:
    """The unit ranges of [0, k) not covered by ``done`` (sorted, disjoint), cut into
    shards of at most ``size``."""
    todo, pos = [], 0
    for a, b in [*done, (k, k)]:
        for s in range(pos, a, size):
            todo.append((s, min(a, s + size)))
        pos = max(pos, b)
    return todo


# ----------------------------------------------------------------------------- the public function


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
        Ray: ``torch.set_num_threads`` in each task and the search's worker threads
        (``threads`` of :func:`invert.engine.search.explain`), so that a task uses the CPU
        it reserves; 0 leaves both at their defaults.
    progress : callable, optional
        ``progress(units_done, n_units)`` after each finished shard.
    **search
        ``length``, ``beam_size``, ``min_fraction``, ``max_fraction``, ``mode``,
        ``limit_search``, ``dedupe``, ``metric``, ``device``: as for :func:`invert.explain`.

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

    Shard files are data, never code: ``units_<start>_<stop>.npz`` (numeric arrays and a
    JSON header, read with ``allow_pickle=False``), each used only after the manifest's run
    key and the shard's SHA-1 recorded there are checked. Any other file in the store (a
    ``.pkl`` among them) is never opened (see :mod:`invert.distributed.store`).

    One run uses an ``out_dir`` at a time: a second run of the same search waits for the
    first and reuses its shards; a run with other activations, concepts or parameters
    raises :class:`~invert._validate.InvalidParameterError` at once (naming the folder and
    what differs) and leaves the running search's shards alone. A different run after
    the first has ended replaces its shards.

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
    backend = check_choice("backend", backend, ("local", "ray"))
    if shard_units is not None:
        shard_units = check_int("shard_units", shard_units, minimum=1)
    if num_workers is not None:
        num_workers = check_int("num_workers", num_workers, minimum=1)
    max_retries = check_int("max_retries", max_retries, minimum=0)
    threads_per_worker = check_int("threads_per_worker", threads_per_worker, minimum=0)
    if address is not None and not isinstance(address, str):
        raise bad("address", "a Ray address string", address)
    budget = check_memory_budget("memory_budget", memory_budget)
    run = _prepare(activations, concepts, unit_ids, search, budget)

    store = None
    try:
        with open_backend(backend, address, num_workers) as be:
            store, done, todo = _plan(run, be, shard_units, out_dir)
            results, errors = _search_shards(run, be, store, done, todo, progress,
                                             max_retries, threads_per_worker, _before_shard)
        if errors:
            raise ShardError("search", list(errors), errors)
        return _gather(run, store, sorted([*done, *todo]), results)
    finally:
        if store is not None:
            store.close()


# ----------------------------------------------------------------------------- 1. the run


@dataclass
class _Run:
    """A checked sharded search: the column reader, the labels, the unit ids, the search
    parameters (``hashed``: those that change results) and the engine's keyword arguments."""

    source: NpyColumns | InMemory
    labels: Labels
    ids: list[Any] | None
    hashed: dict[str, Any]
    engine_kw: dict[str, Any]
    auto_units: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.source.shape

    @property
    def n_concepts(self) -> int:
        return int(self.labels.matrix.shape[1])

    def key(self) -> str:
        """The run key: activations, concepts, search parameters, unit ids, versions."""
        return Fingerprint().update(
            "invert.shards", SHARD_FORMAT, invert_version(),
            "activations", _fingerprint(self.source), "concepts", _labels_fingerprint(self.labels),
            "search", self.hashed, "unit_ids", self.ids,
        ).hexdigest()

    def description(self) -> dict[str, Any]:
        """What the manifest says about the run (for people)."""
        n, k = self.shape
        return {"invert_version": invert_version(), "n_samples": n, "n_units": k,
                "n_concepts": self.n_concepts, "search": self.hashed,
                "activations": getattr(self.source, "path", "array")}


def _prepare(activations, concepts, unit_ids: Sequence[Any] | None,
             search: Mapping[str, Any], budget: int) -> _Run:
    """Check the inputs and search parameters; plan the per-shard budget."""
    source, attr_ids = _activation_source(activations)
    n, k = source.shape
    if n == 0 or k == 0:
        raise bad("activations", "at least one sample and one unit", f"shape {(n, k)}", raw=True)
    ids = list(unit_ids) if unit_ids is not None else (
        list(attr_ids) if attr_ids is not None else None)
    if ids is not None and len(ids) != k:
        raise bad("unit_ids", f"{k} ids (one per unit)", f"{len(ids)} ids", raw=True)
    y, names = as_labels(concepts, n)
    labels = Labels(names, y)
    hashed, device = _search_params(search, int(y.shape[1]))

    dt = np.dtype(source.dtype)
    auto_units, search_budget = plan_shard_units(
        n, k, budget, itemsize=dt.itemsize, floating=bool(np.issubdtype(dt, np.floating)))
    engine_kw = dict(hashed, memory_budget=search_budget)
    if device is not None:
        engine_kw["device"] = device
    return _Run(source, labels, ids, hashed, engine_kw, auto_units)


def _search_params(search: Mapping[str, Any], n_concepts: int) -> tuple[dict[str, Any], Any]:
    """The checked search parameters (defaults filled in) and the device (or None)."""
    unknown = sorted(set(search) - set(SEARCH_KEYS))
    if unknown:
        raise bad("search", f"keyword arguments of invert.explain ({', '.join(SEARCH_KEYS)})",
                  ", ".join(unknown), raw=True)
    device = search.get("device")
    params = check_search_params({k: v for k, v in search.items() if k != "device"},
                                 n_concepts)
    if device is not None and not isinstance(device, str):
        device = str(device)
    return params, device


def _activation_source(activations) -> tuple[NpyColumns | InMemory, list[Any] | None]:
    """The engine's column reader; tensors become numpy arrays (cheap to ship to Ray)."""
    source, unit_ids = activation_source(activations)
    if isinstance(source, InMemory) and isinstance(source.array, torch.Tensor):
        t = source.array.cpu()
        # numpy has no bfloat16: widen to float32, which holds every bfloat16 value exactly
        source = InMemory((t.float() if t.dtype == torch.bfloat16 else t).numpy())
    return source, unit_ids


def _fingerprint(source: NpyColumns | InMemory) -> str:
    """A ``.npy`` file: path, size, mtime, layout and the bytes of its first and last MiB of
    data; an in-memory array: all its bytes."""
    if isinstance(source, NpyColumns):
        st = os.stat(source.path)
        fp = Fingerprint().update("npy", source.path, st.st_size, st.st_mtime_ns,
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


def _labels_fingerprint(labels: Labels) -> str:
    """The concept names and the positions of the true labels."""
    fp = Fingerprint().update("labels", labels.names)
    y = labels.matrix
    if sp.issparse(y):
        y = sp.csr_matrix(y)
        y.sort_indices()
        fp.update("csr", y.shape, y.indptr.astype(np.int64), y.indices.astype(np.int64))
    else:
        fp.update("dense", np.packbits(np.asarray(y, dtype=bool), axis=1), y.shape)
    return fp.hexdigest()


# ----------------------------------------------------------------------------- 2. the plan


def _plan(run: _Run, be: Backend, shard_units: int | None,
          out_dir: str | os.PathLike[str] | None
          ) -> tuple[UnitStore | None, list[Span], list[Span]]:
    """The store (None without ``out_dir``), its finished shards and the shards to compute.

    Shards hold ``shard_units`` units, else as many as the budget allows (on Ray at most
    ``ceil(K / (4 * workers))``, so the workers stay busy)."""
    k = run.shape[1]
    size = shard_units
    if size is None:
        size = run.auto_units
        if be.ray is not None:
            size = max(1, min(size, -(-k // (4 * be.workers))))
    store, done = None, []
    if out_dir is not None:
        store = UnitStore(out_dir, run.key(), run.description())
        done = store.open()
    todo = _gaps(done, k, size)
    if done:
        log.info("resuming: %d shards (%d units) done, computing %d shards: %s",
                 len(done), sum(b - a for a, b in done), len(todo),
                 ", ".join(f"[{a}, {b})" for a, b in todo[:20]))
    else:
        log.info("computing %d shards of up to %d units (backend %s)", len(todo), size,
                 be.name)
    return store, done, todo


# ----------------------------------------------------------------------------- 3. the search


def _search_shard(source, labels: Labels, start: int, stop: int, search: Mapping[str, Any],
                  hook: Callable[[int, int], Any] | None) -> Payload:
    """Search units ``[start, stop)`` (a job of :func:`~.backends.run_shards`)."""
    if hook is not None:
        hook(start, stop)
    if isinstance(source, np.ndarray):  # shared as an array (resolved from Ray's store)
        source = InMemory(source)
    block = source.read(start, stop)
    # explain() copies sparse labels, so the read-only object store is safe
    res = explain(block, labels, **search)
    del block
    return encode_shard(res, start, stop)


def _search_shards(run: _Run, be: Backend, store: UnitStore | None, done: list[Span],
                   todo: list[Span], progress: Callable[[int, int], Any] | None,
                   max_retries: int, threads: int, hook: Callable[[int, int], Any] | None
                   ) -> tuple[dict[Span, Payload], dict[Span, str]]:
    """Run the shards to compute; each finished one goes to the store (or is kept in
    memory without one). Returns the kept payloads and the errors of failed shards."""
    k = run.shape[1]
    results: dict[Span, Payload] = {}
    finished = sum(b - a for a, b in done)
    if progress is not None and finished:
        progress(finished, k)

    def on_done(span: Span, payload: Payload) -> None:
        nonlocal finished
        if store is not None:
            store.write(payload)
        else:
            results[span] = payload
        finished += span[1] - span[0]
        log.debug("shard [%d, %d) done", *span)
        if progress is not None:
            progress(finished, k)

    if not todo:
        return results, {}
    errors = run_shards(be, _search_shard, _shard_jobs(run, be, todo, threads, hook), on_done,
                        max_retries=max_retries, threads=threads)
    return results, errors


def _shard_jobs(run: _Run, be: Backend, todo: list[Span], threads: int,
                hook: Callable[[int, int], Any] | None) -> list[tuple[Span, tuple]]:
    """The jobs of :func:`~.backends.run_shards`: the shared activations and labels, each
    shard's span and the engine's keyword arguments (on Ray with ``threads`` worker threads:
    a task reserves one CPU, and the engine's default would use every CPU it sees)."""
    src = be.share(run.source.array) if isinstance(run.source, InMemory) else run.source
    labels = be.share(run.labels)
    kw = run.engine_kw if be.ray is None or not threads else {**run.engine_kw,
                                                              "threads": threads}
    return [((a, b), (src, labels, a, b, kw, hook)) for a, b in todo]


# ----------------------------------------------------------------------------- 4. the result


def _gather(run: _Run, store: UnitStore | None, spans: list[Span],
            results: dict[Span, Payload]) -> ExplanationResult:
    """The shards in unit order as one result (read back from the store, when there is
    one: a shard is checked before it is used)."""
    units: list[UnitExplanations] = []
    first: dict[str, Any] | None = None
    for a, b in spans:
        if store is not None:
            header, got = store.read(a, b, run.ids, run.n_concepts)
        else:
            payload = results.pop((a, b))
            header, got = payload[0], decode_shard(payload, run.ids, run.n_concepts)
        first = first or header
        units.extend(got)
    if first is None or len(units) != run.shape[1]:  # pragma: no cover - a bug, not input
        raise RuntimeError(f"gathered {len(units)} units of {run.shape[1]}")
    return ExplanationResult(units=units, concept_names=first["concept_names"],
                             undefined_concepts=first["undefined_concepts"],
                             params=first["params"], n_samples=first["n_samples"])
