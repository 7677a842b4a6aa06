"""The result of an extraction: :class:`ActivationSet`, one layer's ``(N, K)`` units plus ids."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .._validate import bad
from .maps import SpatialMaps

__all__ = ["ActivationSet"]


@dataclass(eq=False)
class ActivationSet:
    """Activations of one layer's units over a data set: an ``(N, K)`` float32 array plus ids.

    Attributes
    ----------
    values : np.ndarray or np.memmap
        ``(n_samples, n_units)`` float32. A read-only memmap when it came from the cache.
    layer : str
        Layer name as in ``model.named_modules()`` (``""`` is the model output, e.g. logits) or
        the ``__name__`` of a callable unit source.
    unit_ids : list of str
        One per column. Channel / feature / direction index as a string (``"12"``); with
        ``reduce="none"`` on a feature map the position is appended: ``"12@3,4"`` is channel
        12 at row 3, column 4.
    sample_ids : list
        One per row. For images from a folder the relative path; for data with a
        ``sample_ids`` attribute those ids; else the running sample index (int). With
        ``reduce="tokens"`` a ``(document_id, position)`` tuple per token.
    reduction : str
        What was applied: ``"mean"``, ``"max"``, ``"quantile(0.9)"``, ``"none"`` (kept
        spatial, or a 2-D output that needs none), ``"last"``, ``"first"``, ``"tokens"``,
        prefixed by ``"directions+"`` when a direction matrix was applied.
    token_index : np.ndarray or None
        With ``reduce="tokens"``: ``(N, 2)`` int64 ``(document row, token position)`` per row,
        where document row indexes the input documents in order.
    cache_path : str or None
        The cache folder the values came from, if any.
    maps : SpatialMaps or None
        With ``keep_maps=T``: the spatial maps of each unit's top ``T`` samples
        (:class:`invert.extract.SpatialMaps`).
    row_kind : str or None
        What a row is when it is not a sample: ``"piece"`` for one row per tokenizer token
        (``reduce="tokens"``). Token concepts built for these rows carry the same kind, so
        rows of another kind (e.g. spaCy tokens) are not matched against them by mistake.

    Examples
    --------
    >>> import numpy as np
    >>> a = ActivationSet(np.zeros((3, 2), np.float32), "fc", ["0", "1"], [0, 1, 2], "none")
    >>> a.shape, a.n_samples, a.n_units, np.asarray(a).dtype
    ((3, 2), 3, 2, dtype('float32'))
    """

    values: np.ndarray
    layer: str
    unit_ids: list[str]
    sample_ids: list[Any]
    reduction: str
    token_index: np.ndarray | None = None
    cache_path: str | None = None
    maps: SpatialMaps | None = None
    row_kind: str | None = None

    def __post_init__(self) -> None:
        if self.values.ndim != 2:
            raise bad("values", "a 2-D (N, K) array", f"shape {self.values.shape}", raw=True)
        n, k = self.values.shape
        if len(self.unit_ids) != k:
            raise bad("unit_ids", f"{k} ids", len(self.unit_ids))
        if len(self.sample_ids) != n:
            raise bad("sample_ids", f"{n} ids", len(self.sample_ids))

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.values.shape[0]), int(self.values.shape[1]))

    @property
    def n_samples(self) -> int:
        return int(self.values.shape[0])

    @property
    def n_units(self) -> int:
        return int(self.values.shape[1])

    def __len__(self) -> int:
        return self.n_samples

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        v = self.values
        if dtype is not None and np.dtype(dtype) != v.dtype:
            if copy is False:  # numpy's protocol: a ValueError when a copy is needed
                raise ValueError(f"cannot convert {v.dtype} activations to {dtype} without a copy")
            return np.asarray(v, dtype=dtype)
        if copy:
            return np.array(v, copy=True)
        return np.asarray(v)

    def unit(self, unit_id: str | int) -> np.ndarray:
        """Column of one unit, by unit id (``"12"``) or column position (``12``)."""
        if isinstance(unit_id, str):
            try:
                column = self.unit_ids.index(unit_id)
            except ValueError:
                close = difflib.get_close_matches(unit_id, self.unit_ids, n=5)
                raise KeyError(f"unit_id {unit_id!r} not found; closest: {close}") from None
        else:
            column = unit_id
        return np.asarray(self.values[:, column])

    def to_torch(self) -> torch.Tensor:
        """The values as a CPU tensor (copies a read-only memmap)."""
        v = self.values
        return torch.from_numpy(np.array(v) if isinstance(v, np.memmap) else v)

    def __repr__(self) -> str:
        return (
            f"ActivationSet(layer={self.layer!r}, shape={self.shape}, "
            f"reduction={self.reduction!r}, cached={self.cache_path is not None})"
        )
