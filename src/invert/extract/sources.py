"""Data sources and batching for :func:`invert.collect_activations`.

:func:`make_source` turns every accepted kind of ``data`` (folder path, tensor / array, mapping
of tensors, ``DataLoader``, ``Dataset``, iterable of batches) into a :class:`Source`: a fresh
iterator of raw batches, a content fingerprint when one can be computed up front, the sample
ids and a description. :class:`Prefetcher` prepares the next batches in a background thread;
the rest moves batches between host and device.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .._validate import InvalidParameterError, bad
from . import cache as _cache
from .data import load_image_folder

__all__ = ["ROW_MASK", "Batch", "Prefetcher", "Source", "make_source", "model_device", "pin",
           "rows", "sample_ids", "split", "to_device", "trim_padding"]

#: Key of a batch mapping that holds the ``(B, T)`` rows ``reduce="tokens"`` keeps (taken out
#: of the batch before the model sees it). :func:`invert.extract.encode_texts` with
#: ``keep_special=False`` sets it (through its ``row_mask`` attribute).
ROW_MASK = "__invert_row_mask__"

_BATCH_KINDS = ("a tensor, a mapping of tensors (e.g. tokenizer output) or a tuple/list whose "
                "first element is one")


@dataclass
class Batch:
    """One prepared batch: model inputs, number of samples, attention mask, content digest."""

    inputs: Any  # tensor or mapping of tensors, fed to the model
    n: int
    mask: torch.Tensor | None
    digest: str | None = None
    row_mask: torch.Tensor | None = None  # rows reduce="tokens" keeps (None: the mask's)


def _bad_batch(x: Any) -> InvalidParameterError:
    return InvalidParameterError(
        f"data: each batch must be {_BATCH_KINDS}, got {type(x).__name__}")


def rows(x: Any) -> int:
    """Number of samples in a batch (the first axis of its first tensor)."""
    if isinstance(x, torch.Tensor | np.ndarray):
        return int(x.shape[0]) if x.ndim else 1
    if isinstance(x, Mapping):
        for v in x.values():
            if isinstance(v, torch.Tensor | np.ndarray):
                return rows(v)
    raise _bad_batch(x)


def as_tensor(x: Any) -> Any:
    """numpy arrays (also inside a mapping) as tensors; anything else as it is."""
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    if isinstance(x, Mapping):
        return {k: as_tensor(v) for k, v in x.items()}
    return x


def split(batch: Any) -> tuple[Any, torch.Tensor | None]:
    """Model inputs and attention mask from a raw batch ((x, y) tuples keep x)."""
    inputs, mask, _rows = split_rows(batch)
    return inputs, mask


def split_rows(batch: Any) -> tuple[Any, torch.Tensor | None, torch.Tensor | None]:
    """:func:`split` plus the :data:`ROW_MASK` of a mapping batch (taken out of it)."""
    if isinstance(batch, list | tuple) and batch:
        batch = batch[0]
    batch = as_tensor(batch)
    if isinstance(batch, Mapping):
        batch = dict(batch)
        row_mask = batch.pop(ROW_MASK, None)
        mask = batch.get("attention_mask")
        mask = mask if isinstance(mask, torch.Tensor) else None
        if row_mask is not None and mask is not None:
            row_mask = row_mask.bool() & mask.bool()
        return batch, mask, row_mask
    if not isinstance(batch, torch.Tensor):
        raise _bad_batch(batch)
    return batch, None, None


def trim_padding(batch: Mapping[str, Any]) -> dict[str, Any]:
    """A token batch cut to its longest document: the trailing positions that are padding
    in every row of ``attention_mask`` are dropped from every ``(B, T, ...)`` tensor.

    Positions keep their meaning (only trailing columns go), so ``token_index`` is the same
    as without trimming.

    Examples
    --------
    >>> b = {"input_ids": torch.tensor([[5, 6, 0, 0], [7, 0, 0, 0]]),
    ...      "attention_mask": torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]])}
    >>> trim_padding(b)["input_ids"].tolist()
    [[5, 6], [7, 0]]
    """
    mask = batch.get("attention_mask")
    if not isinstance(mask, torch.Tensor | np.ndarray) or mask.ndim != 2:
        return dict(batch)
    m = np.asarray(mask) if isinstance(mask, np.ndarray) else mask.detach().cpu().numpy()
    T = m.shape[1]
    used = np.flatnonzero(m.any(0))
    keep = int(used[-1]) + 1 if used.size else 1
    if keep == T:
        return dict(batch)
    return {k: v[:, :keep] if isinstance(v, torch.Tensor | np.ndarray) and v.ndim >= 2
            and v.shape[1] == T else v for k, v in batch.items()}


# =========================================================================================
# Sources
# =========================================================================================
@dataclass
class Source:
    """Where the batches come from."""

    batches: Callable[[], Iterable[Any]]  # fresh iterator of raw batches
    fingerprint: Callable[[], str] | None  # content hash (computed on demand) or None: stream
    ids: Sequence[Any] | None  # sample ids in order, when known
    n: int | None
    description: str


def sample_ids(source: Source, n: int) -> list[Any]:
    """The source's sample ids when it has ``n`` of them, else ``0..n-1``."""
    if source.ids is not None and len(source.ids) == n:
        return list(source.ids)
    return list(range(n))


def _slice_batches(obj: Any, n: int, batch_size: int, trim: bool = False
                   ) -> Callable[[], Iterator[Any]]:
    def gen() -> Iterator[Any]:
        for s in range(0, n, batch_size):
            if isinstance(obj, Mapping):
                b = {k: v[s : s + batch_size] for k, v in obj.items()}
                yield trim_padding(b) if trim else b
            else:
                yield obj[s : s + batch_size]

    return gen


def _array_source(data: torch.Tensor | np.ndarray, batch_size: int) -> Source:
    if data.ndim == 0 or data.shape[0] == 0:
        raise InvalidParameterError(f"data: empty array/tensor of shape {tuple(data.shape)}")
    n = int(data.shape[0])
    return Source(_slice_batches(data, n, batch_size),
                  lambda: _cache.Fingerprint().update(data).hexdigest(), None, n,
                  f"{type(data).__name__}{tuple(data.shape)}")


def _mapping_source(data: Mapping[str, Any], batch_size: int) -> Source:
    tens = {k: v for k, v in data.items() if isinstance(v, torch.Tensor | np.ndarray)}
    if not tens:
        raise bad("data", "a mapping that holds tensors (e.g. input_ids, attention_mask)",
                  f"keys {list(data)}", raw=True)
    ns = {k: int(v.shape[0]) for k, v in tens.items()}
    if len(set(ns.values())) != 1:
        raise bad("data", "mapping tensors that agree on the number of rows", ns)
    n = next(iter(ns.values()))
    if n == 0:
        raise bad("data", "at least one row", "a mapping of zero rows", raw=True)
    ids = getattr(data, "sample_ids", None)
    # tokenizer output of encode_texts: padded per batch, special tokens maybe left out
    trim = bool(getattr(data, "pad_per_batch", False))
    row_mask = getattr(data, "row_mask", None)
    sliced = dict(tens)
    if row_mask is not None:
        sliced[ROW_MASK] = torch.as_tensor(np.asarray(row_mask, dtype=bool))

    def fingerprint() -> str:
        fp = _cache.Fingerprint().update(tens)
        if trim or row_mask is not None:  # only then: the key of other mappings is unchanged
            fp.update("pad_per_batch", trim, "row_mask", sliced.get(ROW_MASK))
        return fp.hexdigest()

    return Source(_slice_batches(sliced, n, batch_size, trim), fingerprint, ids, n,
                  f"mapping{sorted(tens)}[{n}]")


def _loader_source(data: torch.utils.data.DataLoader) -> Source:
    ds = data.dataset
    ids = None
    if getattr(ds, "sample_ids", None) is not None and isinstance(
        getattr(data, "sampler", None), torch.utils.data.SequentialSampler
    ):
        ids = list(ds.sample_ids)  # type: ignore[attr-defined]
    try:
        n = len(ds)  # type: ignore[arg-type]
    except TypeError:
        n = None
    return Source(lambda: data, None, ids, n, f"DataLoader({type(ds).__name__})")


def _dataset_source(data: torch.utils.data.Dataset, batch_size: int, num_workers: int,
                    pin_memory: bool) -> Source:
    n = len(data)  # type: ignore[arg-type]
    if n == 0:
        raise InvalidParameterError(
            f"data: the dataset {type(data).__name__} is empty (len 0)")
    fp = getattr(data, "fingerprint", None)
    fp = fp if callable(fp) else None
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False,
                                         num_workers=num_workers, pin_memory=pin_memory,
                                         persistent_workers=False)
    ids = getattr(data, "sample_ids", None)
    return Source(lambda: loader, fp, list(ids) if ids is not None else None, n,
                  f"{type(data).__name__}[{n}]")


def make_source(
    data: Any, batch_size: int, num_workers: int, transform: Any, pin_memory: bool
) -> Source:
    """The :class:`Source` for any ``data`` that :func:`invert.collect_activations` accepts."""
    from torch.utils.data import DataLoader, Dataset, IterableDataset

    if isinstance(data, str | os.PathLike):
        data = load_image_folder(data, transform=transform)
    elif transform is not None:
        raise InvalidParameterError(
            "transform: only used when data is a folder path; got it with data of type "
            f"{type(data).__name__}")
    if isinstance(data, torch.Tensor | np.ndarray):
        return _array_source(data, batch_size)
    if isinstance(data, Mapping):
        return _mapping_source(data, batch_size)
    if isinstance(data, DataLoader):
        return _loader_source(data)
    if isinstance(data, Dataset) and not isinstance(data, IterableDataset) and hasattr(
        data, "__len__"
    ):
        return _dataset_source(data, batch_size, num_workers, pin_memory)
    if isinstance(data, IterableDataset):
        loader = DataLoader(data, batch_size=batch_size, num_workers=num_workers,
                            pin_memory=pin_memory)
        return Source(lambda: loader, None, None, None, type(data).__name__)
    if isinstance(data, Iterable):  # list of batches, generator, ...: hashed as it streams
        return Source(lambda: data, None, None, None, type(data).__name__)
    raise bad("data", "a Dataset, DataLoader, tensor/array, mapping of tensors, iterable of "
              "batches or a folder path", type(data).__name__, raw=True)


# =========================================================================================
# Prefetching and device moves
# =========================================================================================
class Prefetcher:
    """Runs ``prepare(raw_batch)`` for upcoming batches in a background thread."""

    def __init__(self, it: Iterable[Any], prepare: Callable[[Any], Any], depth: int = 2):
        self._q: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(it, prepare), name="invert-prefetch", daemon=True
        )
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, it: Iterable[Any], prepare: Callable[[Any], Any]) -> None:
        try:
            for raw in it:
                if not self._put(("ok", prepare(raw))):
                    return
            self._put(("end", None))
        except BaseException as e:  # noqa: BLE001 - forwarded to the consumer
            self._put(("err", e))

    def __iter__(self) -> Iterator[Any]:
        while True:
            kind, val = self._q.get()
            if kind == "ok":
                yield val
            elif kind == "end":
                return
            else:
                raise val

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._q.get_nowait()
        self._thread.join(timeout=5)


def to_device(x: Any, device: torch.device) -> Any:
    """A tensor (or mapping of tensors) on ``device``, copied without blocking."""
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, Mapping):
        return {k: to_device(v, device) for k, v in x.items()}
    return x


def pin(x: Any) -> Any:
    """A CPU tensor (or mapping of them) in page-locked memory, for overlapped copies."""
    if isinstance(x, torch.Tensor):
        return x if x.is_pinned() or x.device.type != "cpu" else x.pin_memory()
    if isinstance(x, Mapping):
        return {k: pin(v) for k, v in x.items()}
    return x


def model_device(model: torch.nn.Module | None) -> torch.device:
    """The device of the model's first parameter (or buffer); CPU without any."""
    if model is not None:
        for p in model.parameters():
            return p.device
        for b in model.buffers():
            return b.device
    return torch.device("cpu")
