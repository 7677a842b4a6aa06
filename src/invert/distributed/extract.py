"""Extraction sharded over samples: :func:`collect_activations_sharded`, in named stages.

1. :func:`_sliceable`: the data as something cut into contiguous sample shards, its length
   and sample ids;
2. :func:`_extract_shard`: :func:`invert.collect_activations` of one shard (its own entry in
   the activation cache), run by :func:`~.backends.run_shards` here or on Ray;
3. :class:`_Assembly`: each finished shard written into its rows of one ``(N, K)`` float32
   temporary ``.npy`` per layer, moved into place when every shard is in.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._files import layer_slug
from .._store import Fingerprint, atomic_write
from .._validate import bad, check_choice, check_int
from ..extract import ActivationSet, collect_activations, load_image_folder
from .backends import ShardError, open_backend, run_shards

__all__ = ["collect_activations_sharded"]

log = logging.getLogger(__name__)

Span = tuple[int, int]


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
        As for :func:`~invert.distributed.explain_sharded`.
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
    backend = check_choice("backend", backend, ("local", "ray"))
    shard_samples = check_int("shard_samples", shard_samples, minimum=1)
    max_retries = check_int("max_retries", max_retries, minimum=0)
    if kwargs.get("reduce") == "tokens":
        raise bad("reduce", "a per-sample reduction (reduce='tokens' is not sharded)", "tokens")
    for name in ("progress", "cache_dir"):
        kwargs.pop(name, None)
    data, n, sample_ids = _sliceable(data, kwargs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    kwargs["cache_dir"] = str(cache_dir if cache_dir is not None else out_dir / "cache")
    spans = [(s, min(n, s + shard_samples)) for s in range(0, n, shard_samples)]

    assembly = _Assembly(out_dir, n)
    with open_backend(backend, address, num_workers) as be:
        model_arg, data_arg = be.share(model), be.share(data)
        jobs = [((a, b), (model_arg, data_arg, a, b, layers, kwargs, _before_shard))
                for a, b in spans]
        errors = run_shards(be, _extract_shard, jobs, assembly.add, max_retries=max_retries,
                            threads=threads_per_worker)
    if errors:
        assembly.discard()
        raise ShardError("extraction", list(errors), errors)
    sets = assembly.finish(sample_ids, kwargs["cache_dir"])
    if isinstance(layers, str) or callable(layers):
        return next(iter(sets.values()))
    return sets


# ----------------------------------------------------------------------------- 1. the data


def _sliceable(data, kwargs: dict[str, Any]) -> tuple[Any, int, list[Any]]:
    """The data (a folder path loaded as an image folder), its length and sample ids."""
    if isinstance(data, str | os.PathLike):
        data = load_image_folder(data, transform=kwargs.pop("transform", None))
    try:
        n = len(next(v for v in data.values() if hasattr(v, "shape"))) if isinstance(
            data, Mapping) else len(data)
    except (TypeError, StopIteration) as err:
        raise bad("data", "a tensor, array, mapping of tensors, map-style Dataset or folder "
                  "path (with a length)", type(data).__name__, raw=True) from err
    if n == 0:
        raise bad("data", "at least one sample", "0 samples", raw=True)
    if isinstance(data, torch.utils.data.DataLoader | torch.utils.data.IterableDataset):
        raise bad("data", "data that can be sliced (not a DataLoader or iterable)",
                  type(data).__name__, raw=True)
    sample_ids = getattr(data, "sample_ids", None)
    sample_ids = list(sample_ids) if sample_ids is not None else list(range(n))
    return data, n, sample_ids


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
        return Fingerprint().update("rows", self.data.fingerprint(), self.start,
                                    self.stop).hexdigest()


def _slice_data(data, start: int, stop: int):
    if isinstance(data, torch.Tensor | np.ndarray):
        return data[start:stop]
    if isinstance(data, Mapping):
        return {k: v[start:stop] for k, v in data.items()
                if isinstance(v, torch.Tensor | np.ndarray)}
    return _DatasetShard(data, start, stop)


# ----------------------------------------------------------------------------- 2. a shard


def _extract_shard(model, data, start: int, stop: int, layers, kwargs: Mapping[str, Any],
                   hook: Callable[[int, int], Any] | None) -> dict[str, Any]:
    """Activations of samples ``[start, stop)`` (a job of :func:`~.backends.run_shards`):
    per layer its float32 values, unit ids and reduction."""
    if hook is not None:
        hook(start, stop)
    got = collect_activations(model, _slice_data(data, start, stop), layers, progress=False,
                              **kwargs)
    sets = got if isinstance(got, dict) else {got.layer: got}
    return {"start": start, "stop": stop, "layers": {
        name: (np.array(s.values, dtype=np.float32), list(s.unit_ids), s.reduction)
        for name, s in sets.items()}}


# ----------------------------------------------------------------------------- 3. assembly


class _Assembly:
    """One temporary ``(N, K)`` float32 ``.npy`` per layer, filled shard by shard."""

    def __init__(self, out_dir: Path, n: int):
        self.out_dir, self.n = out_dir, n
        self.files: dict[str, np.memmap] = {}
        self.meta: dict[str, tuple[list[Any], str]] = {}
        self.tmp: dict[str, Path] = {}

    def add(self, span: Span, out: Mapping[str, Any]) -> None:
        """Write a finished shard's rows (the ``on_done`` of :func:`run_shards`)."""
        for name, (vals, uids, red) in out["layers"].items():
            if name not in self.files:
                self.tmp[name] = self.out_dir / f".activations_{layer_slug(name)}.npy.tmp"
                self.files[name] = np.lib.format.open_memmap(
                    self.tmp[name], mode="w+", dtype=np.float32, shape=(self.n, vals.shape[1]))
                self.meta[name] = (uids, red)
            self.files[name][span[0]:span[1]] = vals
        log.debug("samples [%d, %d) extracted", *span)

    def discard(self) -> None:
        """Drop the temporary files (a shard failed)."""
        self.files.clear()
        for p in self.tmp.values():
            p.unlink(missing_ok=True)

    def finish(self, sample_ids: list[Any], cache_dir: str) -> dict[str, ActivationSet]:
        """Move each layer's file into place; write ``activations.json``; the sets."""
        for f in self.files.values():
            f.flush()
        self.files.clear()  # closes the maps
        sets = {}
        for name, path in self.tmp.items():
            final = self.out_dir / f"activations_{layer_slug(name)}.npy"
            os.replace(path, final)
            uids, red = self.meta[name]
            sets[name] = ActivationSet(np.load(final, mmap_mode="r", allow_pickle=False), name,
                                       uids, sample_ids, red, cache_path=cache_dir)
        doc = {name: {"file": f"activations_{layer_slug(name)}.npy", "unit_ids": s.unit_ids,
                      "reduction": s.reduction} for name, s in sets.items()}
        data_json = json.dumps({"n_samples": self.n, "layers": doc}, indent=1,
                               default=str).encode()
        atomic_write(self.out_dir / "activations.json", lambda fh: fh.write(data_json))
        return sets
