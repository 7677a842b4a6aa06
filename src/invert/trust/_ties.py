"""Ties and duplicate samples for the permutation test: which ties matter, random
tie-breaking, and groups of copies of one input.

Part of :mod:`invert.trust`; :func:`duplicate_groups` is exported there.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._validate import bad

__all__ = ["duplicate_groups"]


def tie_keys(a: np.ndarray) -> list[bytes]:
    """Per unit: b'' without ties, else the tie-group sizes in value order (as bytes).

    Two units with the same key have the same multiset of mid-ranks, hence the same null
    distribution of every rank statistic under permutation."""
    keys = []
    for k in range(a.shape[1]):
        v = np.sort(a[:, k])
        starts = np.flatnonzero(np.r_[True, v[1:] != v[:-1]])
        if starts.size == v.size:
            keys.append(b"")
        else:
            keys.append(np.diff(np.r_[starts, v.size]).astype(np.int64).tobytes())
    return keys


def has_ties(a: np.ndarray, units: list[int], step: int = 64) -> np.ndarray:
    """Bool per entry of ``units``: whether the unit's column holds equal values."""
    out = np.zeros(len(units), dtype=bool)
    for s in range(0, len(units), step):
        v = np.sort(a[:, units[s:s + step]], axis=0)
        out[s:s + step] = (v[1:] == v[:-1]).any(axis=0)
    return out


def pattern_ids(y) -> np.ndarray:
    """(N,) int64: equal for samples with equal label rows, exactly (row hashes verified
    against each group's first row; exact grouping where a hash collides)."""
    z = np.random.default_rng(0x7A11).integers(0, 1 << 20, size=(y.shape[1], 2))
    h = np.asarray(y @ z.astype(np.float64)) if sp.issparse(y) else (
        y.astype(np.float64) @ z.astype(np.float64))
    _, first, ids = np.unique(h, axis=0, return_index=True, return_inverse=True)
    ids = ids.ravel()
    rep = first[ids]
    same = ((y != y[rep]).nnz == 0) if sp.issparse(y) else bool(np.array_equal(y, y[rep]))
    if not same:
        dense = y.toarray() if sp.issparse(y) else np.asarray(y)
        ids = np.unique(dense, axis=0, return_inverse=True)[1].ravel()
    return ids.astype(np.int64)


def _equal_rows(a: np.ndarray) -> np.ndarray:
    """(N,) int64 ids, equal exactly for equal rows (-0.0 counts as 0.0)."""
    c = np.ascontiguousarray(a + 0.0)
    rows = c.view(np.dtype((np.void, c.dtype.itemsize * c.shape[1]))).ravel()
    return np.unique(rows, return_inverse=True)[1].ravel().astype(np.int64)


def duplicate_groups(activations) -> np.ndarray | None:
    """Groups of samples that are copies of one input (duplicate files), from activations.

    Samples are copies when their activations are equal in *every* unit and, in at least
    one unit with three or more distinct values, no other sample has their value (and they
    are at most half of the samples). The second condition keeps coincidences out: rows that
    are all zeros in a ReLU layer, or equal rows of binary units, are shared with unrelated
    samples, so they do not make a group.

    Parameters
    ----------
    activations : array-like, shape (N,) or (N, K)
        Finite activations (more units make the detection safer; pass the columns of
        several layers of the same samples side by side).

    Returns
    -------
    numpy.ndarray of int64, shape (N,), or None
        Group ids ``0 .. M-1`` (copies share one id), or None when no sample has a copy.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.random.default_rng(0).standard_normal((6, 3))
    >>> a[4] = a[1]
    >>> duplicate_groups(a).tolist()
    [0, 1, 2, 3, 1, 4]
    >>> duplicate_groups(np.maximum(a, 9.0)) is None  # equal rows, but no value of their own
    True
    """
    a = np.asarray(activations, dtype=np.float64)
    a = a[:, None] if a.ndim == 1 else a
    if a.ndim != 2 or not np.isfinite(a).all():
        raise bad("activations", "a finite (N,) or (N, K) array", f"shape {a.shape}", raw=True)
    ids = _equal_rows(a)
    sizes = np.bincount(ids)
    cand = np.flatnonzero((sizes >= 2) & (2 * sizes <= a.shape[0]))
    if cand.size == 0:
        return None
    first = np.full(sizes.size, -1, dtype=np.int64)
    first[ids[::-1]] = np.arange(a.shape[0])[::-1]
    own = np.zeros(cand.size, dtype=bool)  # a value held by the group only, in some unit
    for k in range(a.shape[1]):
        _, inv, cnt = np.unique(a[:, k], return_inverse=True, return_counts=True)
        if cnt.size >= 3:
            own |= cnt[inv.ravel()[first[cand]]] == sizes[cand]
        if own.all():
            break
    if not own.any():
        return None
    keep = np.zeros(sizes.size, dtype=bool)
    keep[cand[own]] = True
    key = np.where(keep[ids], ids, sizes.size + np.arange(a.shape[0]))
    _, firsts, out = np.unique(key, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(firsts, kind="stable"), kind="stable")
    return order[out.ravel()].astype(np.int64)


def ties_matter(a: np.ndarray, units: list[int], y, gid: np.ndarray | None) -> np.ndarray:
    """Bool per entry of ``units``: whether some tie needs breaking.

    A group of equal values needs nothing where its samples all have one label row (a
    formula never puts a tied pair on both sides, so no AUROC changes) or all belong to one
    group of copies ``gid`` (the null keeps them tied as well)."""
    tied = has_ties(a, units)
    if not tied.any():
        return tied
    pid = pattern_ids(y)
    g_all = np.arange(a.shape[0]) if gid is None else gid
    for i in np.flatnonzero(tied):
        col = a[:, units[i]]
        order = np.argsort(col, kind="stable")
        v = col[order]
        idx = np.flatnonzero(np.r_[True, v[1:] != v[:-1]])
        p, g = pid[order], g_all[order]
        rows_differ = np.minimum.reduceat(p, idx) != np.maximum.reduceat(p, idx)
        groups_differ = np.minimum.reduceat(g, idx) != np.maximum.reduceat(g, idx)
        tied[i] = bool(np.any(rows_differ & groups_differ))
    return tied


def rank_dtype(n: int):
    return np.float32 if n < (1 << 24) else np.float64


def tie_broken_ranks(a: np.ndarray, cols: list[int], rng: np.random.Generator,
                     gid: np.ndarray | None) -> np.ndarray:
    """(N, len(cols)) ranks of the columns with ties broken uniformly at random; with
    groups of copies ``gid``, ranks of the groups (copies stay tied).

    Under exchangeability of the samples (of the groups) these are a uniformly random
    permutation of the samples (of the groups), exactly like the rankings of the null."""
    n = a.shape[0]
    m = n if gid is None else int(gid.max()) + 1
    out = np.empty((n, len(cols)), dtype=rank_dtype(n))
    ramp = np.arange(m, dtype=out.dtype)
    r = np.empty(m, dtype=out.dtype)
    for j, k in enumerate(cols):
        v = a[:, k] if gid is None else group_means(a[:, k], gid, m)
        r[np.lexsort((rng.random(m), v))] = ramp
        out[:, j] = r if gid is None else r[gid]
    return out


def group_means(values: np.ndarray, gid: np.ndarray, m: int) -> np.ndarray:
    """(M,) mean value of each group (the value itself for copies)."""
    return np.bincount(gid, weights=values, minlength=m) / np.bincount(gid, minlength=m)


def vary_within_groups(a: np.ndarray, units: list[int], gid: np.ndarray) -> np.ndarray:
    """Bool per entry of ``units``: whether some group's members differ in the unit."""
    m = int(gid.max()) + 1
    out = np.zeros(len(units), dtype=bool)
    for i, k in enumerate(units):
        lo = np.full(m, np.inf)
        hi = np.full(m, -np.inf)
        np.minimum.at(lo, gid, a[:, k])
        np.maximum.at(hi, gid, a[:, k])
        out[i] = bool(np.any(lo != hi))
    return out


def resolve_groups(groups, a: np.ndarray, rows: np.ndarray | None, n_total: int
                   ) -> np.ndarray | None:
    """Group ids ``0 .. M-1`` of the searched samples from ``groups`` ("auto", None or one
    id per sample of the whole data), or None where every sample is its own group."""
    if groups is None:
        return None
    if isinstance(groups, str):
        if groups != "auto":
            raise bad("groups", "'auto', None or one group id per sample", groups)
        return duplicate_groups(a)
    g = np.asarray(groups)
    if g.ndim != 1 or g.size != n_total or not np.issubdtype(g.dtype, np.integer):
        raise bad("groups", f"'auto', None or {n_total} integer group ids",
                  f"{g.dtype} array of shape {g.shape}", raw=True)
    g = g if rows is None else g[rows]
    ids = np.unique(g, return_inverse=True)[1].ravel().astype(np.int64)
    return None if ids.max() + 1 == ids.size else ids
