"""The one place that checks and reads a search's inputs: activations (numpy, torch, an
activation set, a memory-mapped ``.npy`` read a block of units at a time) and concept labels
(dense, scipy.sparse, torch or a concept set)."""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, TypeAlias

import numpy as np
import scipy.sparse as sp
import torch

from .._validate import bad

__all__ = [
    "ActivationsLike", "ConceptsLike", "ActivationSource", "Labels", "NpyColumns", "InMemory",
    "activation_source", "as_activations", "as_labels",
]


class _NamedMatrix(Protocol):
    names: Any
    matrix: Any


#: What :func:`invert.explain` accepts as activations: (N,) or (N, K) numbers as a numpy
#: array (memory maps included), a torch tensor, anything ``np.asarray`` takes, or an object
#: with ``values`` (and ``unit_ids``) such as :class:`invert.extract.ActivationSet`.
ActivationsLike: TypeAlias = "np.ndarray | torch.Tensor | Any"
#: What :func:`invert.explain` accepts as concepts: an (N, C) 0/1 or boolean numpy array,
#: torch tensor or scipy.sparse matrix, or a concept set (``names`` + ``matrix``).
ConceptsLike: TypeAlias = "np.ndarray | torch.Tensor | sp.spmatrix | sp.sparray | _NamedMatrix"


@dataclass
class NpyColumns:
    """Reads column blocks of a ``.npy`` file with plain reads (no mapping, a bounded buffer
    of ``read_chunk`` bytes), so a layer larger than memory is read a block of units at a
    time."""

    path: str
    offset: int
    shape: tuple[int, int]
    dtype: str
    fortran: bool
    read_chunk: int = 16 << 20

    @classmethod
    def open(cls, path: str | os.PathLike[str], read_chunk: int = 16 << 20,
             memory_bytes: int | None = None) -> NpyColumns:
        """The reader of the ``.npy`` file ``path``. A row-major (C-order) file larger than
        half of ``memory_bytes`` (default: this machine's memory) warns: every chunk of
        units then reads the whole file from disk (write it column-major instead)."""
        m = np.load(path, mmap_mode="r", allow_pickle=False)
        try:
            if m.ndim == 1:
                shape = (int(m.shape[0]), 1)
            elif m.ndim == 2:
                shape = (int(m.shape[0]), int(m.shape[1]))
            else:
                raise bad("activations", "an (N,) or (N, K) array", f"shape {m.shape}", raw=True)
            fortran = bool(m.flags.f_contiguous and not m.flags.c_contiguous)
            if not fortran and shape[1] > 1:
                _warn_row_major(path, int(m.nbytes), memory_bytes)
            return cls(str(Path(path).resolve()), int(m.offset), shape, m.dtype.str, fortran,
                       read_chunk)
        finally:
            del m

    def read(self, start: int, stop: int) -> np.ndarray:
        """Columns ``start:stop`` as an (N, stop - start) array of the file's dtype."""
        n, k = self.shape
        dt = np.dtype(self.dtype)
        width = stop - start
        out = np.empty((n, width), dtype=dt)
        with open(self.path, "rb", buffering=0) as f:
            if self.fortran:  # columns are contiguous: read whole columns, transpose in blocks
                cols = max(1, self.read_chunk // max(1, n * dt.itemsize))
                for c0 in range(0, width, cols):
                    c1 = min(width, c0 + cols)
                    buf = np.empty((c1 - c0, n), dtype=dt)
                    f.seek(self.offset + (start + c0) * n * dt.itemsize)
                    _read_into(f, buf)
                    out[:, c0:c1] = buf.T
            else:
                row_bytes = k * dt.itemsize
                rows = max(1, self.read_chunk // max(1, row_bytes))
                buf = np.empty((min(rows, n), k), dtype=dt)
                for r0 in range(0, n, rows):
                    r1 = min(n, r0 + rows)
                    f.seek(self.offset + r0 * row_bytes)
                    _read_into(f, buf[: r1 - r0])
                    out[r0:r1] = buf[: r1 - r0, start:stop]
        return out


def _physical_memory() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def _warn_row_major(path: Any, nbytes: int, memory_bytes: int | None) -> None:
    """Warn when a row-major layer is too large for the page cache to hold."""
    mem = _physical_memory() if memory_bytes is None else memory_bytes
    if mem is not None and nbytes > mem // 2:
        warnings.warn(
            f"activations: {path} is row-major (C order) and {nbytes / 2**30:.1f} GiB, more "
            f"than half of the {mem / 2**30:.1f} GiB of memory: each chunk of units reads "
            f"the whole file from disk. Write it column-major (np.save(path, "
            f"np.asfortranarray(a))) or shard it (invert.distributed)", RuntimeWarning,
            stacklevel=4)


def _read_into(f: io.FileIO, arr: np.ndarray) -> None:
    """Fill the contiguous array ``arr`` from the file ``f`` (at its position)."""
    view = arr.reshape(-1).data.cast("B")
    got = 0
    while got < len(view):
        n = f.readinto(view[got:])
        if not n:
            raise OSError(f"{f.name}: file ended early (truncated .npy?)")
        got += n


@dataclass
class InMemory:
    """An (N, K) numpy array (memory maps included) or torch tensor, read by column blocks
    (a numpy array is never copied whole)."""

    array: Any

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.array.shape[0]), int(self.array.shape[1]))

    @property
    def dtype(self) -> np.dtype:
        """The dtype :meth:`read` returns (a bfloat16 tensor is read as float32)."""
        a = self.array
        if isinstance(a, torch.Tensor):
            return np.dtype(np.float32) if a.dtype == torch.bfloat16 else np.dtype(
                str(a.dtype).removeprefix("torch."))
        return a.dtype

    def read(self, start: int, stop: int) -> np.ndarray:
        """Columns ``start:stop`` as a C-contiguous numpy array (a bfloat16 tensor's as
        float32, which holds every bfloat16 value exactly)."""
        if isinstance(self.array, torch.Tensor):
            cols = self.array[:, start:stop].detach().cpu()
            if cols.dtype == torch.bfloat16:
                cols = cols.to(torch.float32)
            return np.ascontiguousarray(cols.numpy())
        return np.ascontiguousarray(self.array[:, start:stop])


ActivationSource: TypeAlias = "NpyColumns | InMemory"


class _Activations:
    """Checked (N, K) activations (finite real numbers), read a block of units at a time as
    floats; ``data`` is the in-memory array or tensor (None for a ``.npy`` file)."""

    def __init__(self, source: NpyColumns | InMemory):
        self.source = source
        self.data = source.array if isinstance(source, InMemory) else None
        self.shape = source.shape

    @property
    def min_read_bytes(self) -> int:
        """The smallest read buffer of a ``.npy`` file: one row (one column of a
        Fortran-order file); 0 in memory."""
        src = self.source
        if not isinstance(src, NpyColumns):
            return 0
        return np.dtype(src.dtype).itemsize * (src.shape[0] if src.fortran else src.shape[1])

    def limit_reads(self, nbytes: int) -> None:
        """Read a ``.npy`` file through a buffer of at most ``nbytes`` (at least one row or
        column of the file)."""
        if isinstance(self.source, NpyColumns):
            self.source = replace(self.source, read_chunk=max(1, min(
                self.source.read_chunk, nbytes)))

    def block(self, sl: slice, exact: bool = False) -> np.ndarray:
        """Columns ``sl`` as a C-contiguous numpy array of floats; with ``exact``, integer
        values keep their integer dtype (int64 above 2**53 stays exact) and float16 is
        widened to float32."""
        start, stop, _ = sl.indices(self.shape[1])
        b = self.source.read(start, stop)
        if b.dtype == np.float16 or b.dtype == np.bool_:
            b = b.astype(np.float32)
        elif not np.issubdtype(b.dtype, np.floating) and not exact:
            b = b.astype(np.float64)
        return np.ascontiguousarray(b)


def activation_source(activations: ActivationsLike | str | os.PathLike[str]
                      ) -> tuple[NpyColumns | InMemory, list[Any] | None]:
    """A column reader for a ``.npy`` path, a whole-file ``.npy`` memmap (read with plain
    file reads), or an array-like / tensor / activation set, and the unit ids (or None).

    Checks the shape and dtype (real numbers, (N,) or (N, K), at least one row and
    column); finiteness is checked by :func:`as_activations`."""
    unit_ids = getattr(activations, "unit_ids", None)
    if isinstance(activations, str | os.PathLike):
        path = Path(activations)
        if not path.is_file():
            raise FileNotFoundError(f"activations: file {str(path)!r} not found")
        if path.suffix.lower() != ".npy":
            raise bad("activations", "a .npy file or an array", str(path))
        return _checked(NpyColumns.open(path)), None
    values = activations
    if not isinstance(activations, np.ndarray | torch.Tensor):
        v = getattr(activations, "values", None)  # an activation set: keep its array
        if isinstance(v, np.ndarray | torch.Tensor):
            values = v
    if isinstance(values, np.memmap) and getattr(values, "filename", None):
        fname = str(values.filename)
        if fname.endswith(".npy") and values.ndim in (1, 2):
            src = NpyColumns.open(fname)
            shape2 = values.shape if values.ndim == 2 else (values.shape[0], 1)
            if (tuple(shape2) == src.shape and values.dtype.str == src.dtype
                    and (values.flags.c_contiguous or values.flags.f_contiguous)):
                return _checked(src), _ids(unit_ids, src.shape[1])
    arr = _as_array(values)
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    mem = _checked(InMemory(arr))
    return mem, _ids(unit_ids, mem.shape[1])


def _ids(unit_ids: Any, k: int) -> list[Any] | None:
    if unit_ids is None:
        return None
    unit_ids = list(unit_ids)
    return unit_ids if len(unit_ids) == k else None


def _as_array(values: Any) -> np.ndarray | torch.Tensor:
    if isinstance(values, torch.Tensor):
        tensor = values.detach()
        if tensor.is_complex() or tensor.dtype == torch.bool:
            raise bad("activations", "real numbers", f"dtype {tensor.dtype}", raw=True)
        return tensor
    try:
        arr = values if isinstance(values, np.ndarray) else np.asarray(values)
    except Exception as err:  # noqa: BLE001 - report any conversion failure the same way
        raise bad("activations", "an array-like of numbers, shape (N,) or (N, K)",
                  type(values).__name__, raw=True) from err
    if np.iscomplexobj(arr):
        raise bad("activations", "real numbers", f"dtype {arr.dtype}", raw=True)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise bad("activations", "an array-like of numbers, shape (N,) or (N, K)",
                  f"dtype {arr.dtype}", raw=True)
    return arr


def _checked(src: NpyColumns | InMemory) -> NpyColumns | InMemory:
    """``src`` if it holds a 2-D, non-empty array of real numbers (raises otherwise)."""
    dt = np.dtype(src.dtype)
    if dt.kind == "c":
        raise bad("activations", "real numbers", f"dtype {dt}", raw=True)
    if dt.kind not in "biuf":
        raise bad("activations", "an array of numbers, shape (N,) or (N, K)", f"dtype {dt}",
                  raw=True)
    shape = tuple(src.array.shape) if isinstance(src, InMemory) else src.shape
    if len(shape) != 2:
        raise bad("activations", "shape (N,) or (N, K)", f"shape {shape}", raw=True)
    if shape[0] == 0:
        raise bad("activations", "at least one sample (row)", "0 rows", raw=True)
    if shape[1] == 0:
        raise bad("activations", "at least one unit (column)", "0 columns", raw=True)
    return src


#: Bytes of activations the finiteness check reads (or views) at a time.
_FINITE_CHUNK = 4 << 20


def _pieces(source: NpyColumns | InMemory, nbytes: int) -> Iterator[tuple[int, int, Any]]:
    """The whole (N, K) layer as pieces ``(row, column, array)`` of about ``nbytes``,
    in storage order: a ``.npy`` file read front to back (row bands, or column bands of a
    Fortran-order file) into one reused buffer; an in-memory array or tensor as row bands
    (views, no copies)."""
    n, k = source.shape
    if isinstance(source, InMemory):
        a = source.array
        itemsize = a.element_size() if isinstance(a, torch.Tensor) else a.itemsize
        rows = max(1, nbytes // max(1, k * itemsize))
        for r0 in range(0, n, rows):
            yield r0, 0, a[r0:r0 + rows]
        return
    dt = np.dtype(source.dtype)
    if source.fortran:  # stored column after column
        width, count, outer = n, k, 1
    else:
        width, count, outer = k, n, 0
    lines = max(1, nbytes // max(1, width * dt.itemsize))
    buf = np.empty((min(lines, count), width), dtype=dt)
    with open(source.path, "rb", buffering=0) as f:
        f.seek(source.offset)
        for l0 in range(0, count, lines):
            part = buf[: min(lines, count - l0)]
            _read_into(f, part)
            yield (0, l0, part.T) if outer else (l0, 0, part)


def _check_finite(src: _Activations) -> None:
    """Raise unless every activation is finite; reads the layer once, a bounded piece at a
    time (:data:`_FINITE_CHUNK` bytes: a memory-mapped or on-disk layer is never read
    whole, nor widened). Integer and boolean activations are finite by type."""
    if not np.issubdtype(np.dtype(src.source.dtype), np.floating):
        return
    bad_count, first = 0, None
    for r0, c0, piece in _pieces(src.source, _FINITE_CHUNK):
        nonfinite = (~torch.isfinite(piece)).cpu().numpy() if isinstance(
            piece, torch.Tensor) else ~np.isfinite(piece)
        hits = int(np.count_nonzero(nonfinite))
        if hits and first is None:
            i, j = np.argwhere(nonfinite)[0]
            first = (r0 + int(i), c0 + int(j))
        bad_count += hits
    if first is not None:
        raise bad("activations", "finite numbers (no NaN or inf)",
                  f"{bad_count} non-finite values, the first at row {first[0]}, "
                  f"unit {first[1]}", raw=True)


def _as_activations(activations: ActivationsLike) -> tuple[_Activations, list[Any] | None]:
    source, unit_ids = activation_source(activations)
    acts = _Activations(source)
    _check_finite(acts)
    return acts, unit_ids


@dataclass
class Labels:
    """A concept matrix with optional names: the smallest concept set ``explain`` takes."""

    names: list[str] | None
    matrix: Any


def _as_concepts(concepts: ConceptsLike, n: int) -> tuple[Any, list[str] | None]:
    """(N, C) labels as a numpy bool array or scipy CSR bool matrix, plus names or None."""
    names = None
    if hasattr(concepts, "matrix") and hasattr(concepts, "names"):
        if concepts.names is not None:  # a concept set; None: a plain matrix
            names = [str(x) for x in concepts.names]
        concepts = concepts.matrix
    if isinstance(concepts, torch.Tensor):
        concepts = concepts.detach().cpu().numpy()
    if sp.issparse(concepts):
        y = sp.csr_matrix(concepts, copy=True)
        if y.ndim != 2:
            raise bad("concepts", "a 2-D (N, C) matrix", f"shape {y.shape}", raw=True)
        y.eliminate_zeros()
        data = y.data
        if data.size and not np.all(data == 1):
            v = data[data != 1][0]
            raise bad("concepts", "0/1 or boolean labels", f"a value {v.item()!r}", raw=True)
        y = y.astype(bool)
    else:
        try:
            arr = np.asarray(concepts)
        except Exception as err:  # noqa: BLE001
            raise bad("concepts", "a boolean (N, C) array, scipy.sparse matrix or concept set",
                      type(concepts).__name__, raw=True) from err
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number)
                                       or arr.dtype == bool):
            raise bad("concepts", "a boolean (N, C) array, scipy.sparse matrix or concept set",
                      f"dtype {arr.dtype}", raw=True)
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2:
            raise bad("concepts", "a 2-D (N, C) matrix", f"shape {arr.shape}", raw=True)
        if arr.dtype != bool:
            nonbin = (arr != 0) & (arr != 1)
            if nonbin.any():
                i, j = np.argwhere(nonbin)[0]
                raise bad("concepts", "0/1 or boolean labels",
                          f"{arr[i, j].item()!r} at row {i}, column {j}", raw=True)
            arr = arr != 0
        y = arr
    if y.shape[0] != n:
        raise bad("concepts", f"{n} rows (one per activation sample)", f"{y.shape[0]} rows",
                  raw=True)
    if y.shape[1] == 0:
        raise bad("concepts", "at least one concept (column)", "0 columns", raw=True)
    if names is not None and len(names) != y.shape[1]:
        raise bad("concepts.names", f"{y.shape[1]} names (one per column)", len(names))
    return y, names


def as_activations(activations: ActivationsLike) -> tuple[_Activations, list[Any] | None]:
    """Checked (N, K) activations read a block of units at a time, and their unit ids."""
    return _as_activations(activations)


def as_labels(concepts: ConceptsLike, n: int) -> tuple[Any, list[str] | None]:
    """Checked (N, C) labels (numpy bool or scipy CSR bool) and concept names or None."""
    return _as_concepts(concepts, n)
