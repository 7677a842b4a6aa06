"""The one place that checks and reads a search's inputs: activations (numpy, torch, an
activation set, a memory-mapped ``.npy`` read a block of units at a time) and concept labels
(dense, scipy.sparse, torch or a concept set)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias

import numpy as np
import scipy.sparse as sp
import torch

from .._validate import bad

__all__ = ["ActivationsLike", "ConceptsLike", "Labels", "as_activations", "as_labels"]


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


class _Activations:
    """A validated (N, K) activation source, read a block of units at a time.

    numpy arrays (memory maps included) are not copied whole: blocks of columns are read
    when needed, so activations larger than memory are searched chunk by chunk."""

    def __init__(self, data: np.ndarray | torch.Tensor):
        self.data = data
        self.shape = tuple(data.shape)

    def block(self, sl: slice) -> np.ndarray:
        """Columns ``sl`` as a numpy array (float, C-contiguous)."""
        if isinstance(self.data, torch.Tensor):
            b = self.data[:, sl].detach().cpu().numpy()
        else:
            b = np.asarray(self.data[:, sl])
        if not np.issubdtype(b.dtype, np.floating):
            b = b.astype(np.float64)
        return np.ascontiguousarray(b)


def _as_activations(activations) -> tuple[_Activations, list[Any] | None]:
    unit_ids = getattr(activations, "unit_ids", None)
    if isinstance(activations, torch.Tensor):
        arr = activations.detach()
        if arr.is_complex() or arr.dtype == torch.bool:
            raise bad("activations", "real numbers", f"dtype {arr.dtype}", exc=TypeError,
                      raw=True)
    else:
        values = getattr(activations, "values", None)
        if isinstance(values, np.ndarray) and not isinstance(activations, np.ndarray):
            activations = values  # an activation set: keep its (memory-mapped) array
        try:
            arr = activations if isinstance(activations, np.ndarray) else np.asarray(
                activations)
        except Exception as err:  # noqa: BLE001 - report any conversion failure the same way
            raise bad("activations", "an array-like of numbers, shape (N,) or (N, K)",
                      type(activations).__name__, exc=TypeError, raw=True) from err
        if np.iscomplexobj(arr):
            raise bad("activations", "real numbers", f"dtype {arr.dtype}", exc=TypeError,
                      raw=True)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number)
                                       or arr.dtype == bool):
            raise bad("activations", "an array-like of numbers, shape (N,) or (N, K)",
                      f"dtype {arr.dtype}", exc=TypeError, raw=True)
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2:
        raise bad("activations", "shape (N,) or (N, K)", f"shape {tuple(arr.shape)}", raw=True)
    if arr.shape[0] == 0:
        raise bad("activations", "at least one sample (row)", "0 rows", raw=True)
    if arr.shape[1] == 0:
        raise bad("activations", "at least one unit (column)", "0 columns", raw=True)
    src = _Activations(arr)
    step = max(1, (1 << 26) // (8 * arr.shape[0]))  # about 64 MiB per check
    for s0 in range(0, arr.shape[1], step):
        blk = src.block(slice(s0, s0 + step))
        finite = np.isfinite(blk)
        if not finite.all():
            rows, cols = np.nonzero(~finite)
            raise bad("activations", "finite numbers (no NaN or inf)",
                      f"{int((~finite).sum())} non-finite values in units {s0}.."
                      f"{s0 + blk.shape[1] - 1}, the first at row {int(rows[0])}, "
                      f"unit {s0 + int(cols[0])}", raw=True)
    if unit_ids is not None:
        unit_ids = list(unit_ids)
        if len(unit_ids) != arr.shape[1]:
            unit_ids = None
    return src, unit_ids


@dataclass
class Labels:
    """A concept matrix with optional names: the smallest concept set ``explain`` takes."""

    names: list[str] | None
    matrix: Any


def _as_concepts(concepts, n: int):
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
                      type(concepts).__name__, exc=TypeError, raw=True) from err
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number)
                                       or arr.dtype == bool):
            raise bad("concepts", "a boolean (N, C) array, scipy.sparse matrix or concept set",
                      f"dtype {arr.dtype}", exc=TypeError, raw=True)
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
