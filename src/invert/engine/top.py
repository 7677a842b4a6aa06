"""The top sets of the ``top_f1`` search: which samples are a unit's top activations.

A unit's top set for a share ``q`` is every sample whose activation is at least the
``k``-th largest, ``k = ceil(q N)`` (ties at the threshold are all included, so it is
order-free and can hold more than ``k`` samples), the definition of the ``top_*`` metrics of
:mod:`invert.trust.metrics`. By default ``q`` is, for a sparse unit (more than half of its
activations exactly 0), its firing rate (the share of positive activations: its top set is
where it fires), else :data:`DEFAULT_TOP_Q`.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["DEFAULT_TOP_Q", "top_shares", "top_sets"]

#: The top share of a dense unit (and of a sparse unit that never fires) by default.
DEFAULT_TOP_Q = 0.005


def top_shares(block: np.ndarray, top_q: float | None) -> np.ndarray:
    """The top share ``q`` (k,) of each unit (column) of ``block`` (N, k): ``top_q``, or by
    default the firing rate of a sparse unit (positive share, when more than half of the
    activations are exactly 0 and some are positive), else :data:`DEFAULT_TOP_Q`."""
    n, k = block.shape
    if top_q is not None:
        return np.full(k, float(top_q))
    zeros = np.count_nonzero(block == 0, axis=0)
    fires = np.count_nonzero(block > 0, axis=0)
    sparse = (2 * zeros > n) & (fires > 0)
    return np.where(sparse, fires / max(n, 1), DEFAULT_TOP_Q)


def top_sets(block: np.ndarray, top_q: float | None) -> tuple[np.ndarray, np.ndarray]:
    """(the top sets (N, k) bool, the shares ``q`` (k,)) of the units of ``block`` (N, k)
    (see the module docstring)."""
    n, k = block.shape
    q = top_shares(block, top_q)
    out = np.zeros((n, k), dtype=bool)
    for j in range(k):
        kq = min(n, max(1, math.ceil(q[j] * n - 1e-9)))
        thr = np.partition(block[:, j], n - kq)[n - kq]
        out[:, j] = block[:, j] >= thr
    return out, q
