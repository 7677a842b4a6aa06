"""Exact rank statistics: mid-ranks, AUROC from rank sums, Mann-Whitney p-values.

Everything here is a pure function of arrays. Ranks are *doubled* mid-ranks (integers,
``2 * rank``), so rank sums stay exact integers in float64 up to 2**53 (about 9.5e7 samples),
on CPU and CUDA alike; AUROC and p-values are computed from those exact sums.

Examples
--------
>>> import numpy as np
>>> auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
0.75
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from scipy import special

__all__ = ["midranks2", "auroc", "auroc_from_ranksum", "mannwhitney_pvalues"]

_LN10 = math.log(10.0)


def midranks2(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Doubled mid-ranks of each column, and each column's tie term.

    Parameters
    ----------
    values : torch.Tensor, shape (N, K)
        Activations (any real dtype); each column is ranked on its own.

    Returns
    -------
    ranks2 : torch.Tensor, float64, shape (N, K)
        ``2 * rank`` with ties sharing the mean of their ranks (ranks start at 1), so every
        entry is an integer.
    tie_term : torch.Tensor, float64, shape (K,)
        ``sum over tie groups of (t**3 - t)`` (0 without ties), for the normal approximation.

    Examples
    --------
    >>> r, t = midranks2(torch.tensor([[3.0], [1.0], [3.0]]))
    >>> r[:, 0].tolist(), t.tolist()
    ([5.0, 2.0, 5.0], [6.0])
    """
    n, k = values.shape
    sv, order = torch.sort(values, dim=0)
    pos = torch.arange(n, device=values.device, dtype=torch.int64).unsqueeze(1).expand(n, k)
    starts = torch.ones((n, k), dtype=torch.bool, device=values.device)
    if n > 1:
        starts[1:] = sv[1:] != sv[:-1]
    del sv
    ends = torch.ones_like(starts)
    if n > 1:
        ends[:-1] = starts[1:]
    first = torch.where(starts, pos, 0).cummax(dim=0).values
    last = torch.where(ends, pos, n - 1).flip(0).cummin(dim=0).values.flip(0)
    del starts, ends
    size = last - first + 1
    tie_term = (size * size - 1).sum(dim=0).to(torch.float64)
    r2 = (first + last + 2).to(torch.float64)
    del first, last, size
    ranks2 = torch.empty_like(r2)
    ranks2.scatter_(0, order, r2)
    return ranks2, tie_term


def auroc_from_ranksum(s2: Any, n1: Any, n: Any) -> Any:
    """AUROC from a doubled rank sum ``s2`` of ``n1`` positives among ``n`` samples.

    ``AUROC = (S - n1 (n1 + 1) / 2) / (n1 n0)`` with ``S = s2 / 2``; undefined (NaN) when
    ``n1`` is 0 or ``n``. Works on numpy arrays (and scalars) and torch tensors (float64),
    and returns the same kind.
    """
    n0 = n - n1
    num = s2 - n1 * (n1 + 1)
    den = 2 * n1 * n0
    if isinstance(num, torch.Tensor):
        return torch.where(den > 0, num / torch.where(den > 0, den, 1), torch.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def auroc(scores: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Exact AUROC of ``scores`` for binary ``labels`` (ties count 1/2).

    Equals ``sklearn.metrics.roc_auc_score(labels, scores)``; NaN when ``labels`` is
    constant.

    Parameters
    ----------
    scores : array-like, shape (N,)
    labels : array-like of 0/1 or bool, shape (N,)

    Examples
    --------
    >>> auroc([1.0, 2.0, 2.0, 3.0], [0, 1, 0, 1])
    0.875
    """
    s = torch.as_tensor(np.asarray(scores, dtype=np.float64)).reshape(-1, 1)
    y = np.asarray(labels).astype(bool).ravel()
    if y.shape[0] != s.shape[0]:
        raise ValueError(
            f"labels: expected {s.shape[0]} entries (one per score), got {y.shape[0]}"
        )
    r2, _ = midranks2(s)
    s2 = float(r2[:, 0].numpy()[y].sum())
    return float(auroc_from_ranksum(np.float64(s2), np.float64(y.sum()), np.float64(len(y))))


def mannwhitney_pvalues(
    s2: npt.ArrayLike, n1: npt.ArrayLike, n: int, tie_term: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided Mann-Whitney p-values (normal approximation) and their log10.

    Reproduces ``scipy.stats.mannwhitneyu(outside, inside, method='asymptotic')`` (tie
    and continuity corrections) from rank sums, vectorised; ``log10_p`` is computed from the
    log survival function, so it stays finite where ``p`` underflows to 0.

    Parameters
    ----------
    s2 : array of float64
        Doubled rank sums of the inside group.
    n1 : array of float64
        Inside group sizes (0 < n1 < n).
    n : int
        Number of samples.
    tie_term : array of float64
        ``sum (t**3 - t)`` over the unit's tie groups, broadcast against ``s2``.
    """
    s2 = np.asarray(s2, dtype=np.float64)
    n1 = np.asarray(n1, dtype=np.float64)
    n0 = n - n1
    # statistic of the first sample (outside), as scipy computes it
    u_out = (n * (n + 1.0) - s2) / 2.0 - n0 * (n0 + 1.0) / 2.0
    u = np.maximum(u_out, n1 * n0 - u_out)
    mu = n1 * n0 / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        sd = np.sqrt(n1 * n0 / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0))))
        z = (u - mu - 0.5) / sd
    p = np.clip(2.0 * special.ndtr(-z), 0.0, 1.0)
    log10_p = np.minimum((math.log(2.0) + special.log_ndtr(-z)) / _LN10, 0.0)
    return p, log10_p


#: Bytes of ranking keys per block of units (a block's arrays stay in the CPU caches).
_RANK_BLOCK_BYTES = 12 << 20
#: Bits of a pattern id that fit beside a float32 value in one 64-bit radix-sort payload.
_PID_BITS = 32
_EXACT_IN_F32 = (np.float16, np.float32, np.int8, np.uint8, np.int16, np.uint16, np.bool_)


def _float32_exact(values: np.ndarray) -> bool:
    """Whether every value of ``values`` is a float32 number (so it is ranked exactly by
    its float32 bits)."""
    if values.dtype.type in _EXACT_IN_F32:
        return True
    if values.size == 0:
        return True
    if np.issubdtype(values.dtype, np.integer):  # exact in float32 up to 2**24
        return bool(values.min() >= -(1 << 24) and values.max() <= (1 << 24))
    if values.dtype != np.float64:
        return False  # longdouble
    with np.errstate(over="ignore"):  # |x| > 3.4e38 casts to inf: not float32-exact
        return bool(np.array_equal(values.astype(np.float32), values))


def _transpose_into(out: np.ndarray, vals: np.ndarray, rows: int = 512) -> None:
    """``out[...] = vals.T`` (converting), a band of ``rows`` samples at a time: a copy that
    reads the (N, k) source in cache-sized tiles instead of column by column."""
    for s in range(0, vals.shape[0], rows):
        out[:, s:s + rows] = vals[s:s + rows].T


class _Ranker:
    """Ranks blocks of units of one chunk and sums the doubled mid-ranks over patterns,
    reusing its buffers (sized for ``block`` units of ``n`` samples)."""

    def __init__(self, n: int, inverse: np.ndarray, n_patterns: int, block: int):
        self.n, self.m, self.block = n, n_patterns, block
        bits = max(1, (n_patterns - 1).bit_length())
        self.pid = inverse.astype(np.uint64) if bits <= _PID_BITS else None
        self.inverse = inverse.astype(np.int64, copy=False)
        self.key = np.empty((block, n), dtype=np.float32)
        self.groups = np.empty((block, n), dtype=np.int64)
        self.eq = np.empty((block, max(0, n - 1)), dtype=bool)
        self.r2 = np.empty((block, n), dtype=np.float64)
        self.r2[...] = 2.0 * np.arange(n, dtype=np.float64) + 2.0  # ranks without ties
        self.offsets = (np.arange(block, dtype=np.int64) * n_patterns)[:, None]

    def sums(self, vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(per-pattern doubled rank sums (M, k), tie terms (k,)) of ``vals`` (N, k)."""
        k = vals.shape[1]
        if self.pid is not None and _float32_exact(vals):
            groups, eq = self._radix(vals)
        else:
            groups, eq = self._sorted(vals)
        r2 = self.r2[:k]
        rows, pos, mid, ties = _tie_groups(eq, k)
        del eq
        r2[rows, pos] = mid  # tied positions get their group's mid-rank
        groups += self.offsets[:k]
        flat = np.bincount(groups.ravel(), weights=r2.ravel(), minlength=k * self.m)
        r2[rows, pos] = 2.0 * pos + 2.0  # the buffer holds plain ranks again
        return flat.reshape(k, self.m).T, ties

    def _radix(self, vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sort float32-exact values by an LSD radix sort of their order-preserving 32-bit
        keys (two stable 16-bit passes, numpy's counting sort), one unit at a time (its
        arrays stay in the CPU cache), carrying the pattern id in the low half of a 64-bit
        payload: (pattern of each sorted position (k, N) int64, equal-to-previous
        (k, N - 1)). Ties keep the samples' order; their ranks are shared anyway."""
        k = vals.shape[1]
        assert self.pid is not None  # packable: the pattern ids fit the payload
        key = self.key[:k]
        _transpose_into(key, vals)
        key += 0.0  # -0.0 becomes +0.0: equal values get equal keys
        u = key.view(np.uint32)
        flip = (u >> np.uint32(31)) * np.uint32(0x7FFFFFFF)  # negatives: all bits
        flip |= np.uint32(0x80000000)  # positives: the sign bit
        u ^= flip  # unsigned order of u = order of the values
        del flip
        groups, eq = self.groups[:k], self.eq[:k]
        shift, low = np.uint64(32), np.uint64(0xFFFFFFFF)
        for i in range(k):
            ui = u[i]
            w = ui.astype(np.uint64) << shift
            w |= self.pid
            w = w[np.argsort(ui.astype(np.uint16), kind="stable")]  # by the low 16 bits
            w = w[np.argsort((w >> np.uint64(48)).astype(np.uint16), kind="stable")]
            hi = w >> shift
            np.equal(hi[1:], hi[:-1], out=eq[i])
            np.bitwise_and(w, low, out=groups[i].view(np.uint64))
        return groups, eq

    def _sorted(self, vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_radix` for any real dtype (float64, int64, uint64 compared exactly) by
        an argsort and a gather."""
        at = np.ascontiguousarray(vals.T)
        order = np.argsort(at, axis=1)
        sv = np.take_along_axis(at, order, axis=1)
        eq = sv[:, 1:] == sv[:, :-1]
        del sv
        return self.inverse[order], eq


def _tie_groups(eq: np.ndarray, k: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The tied sorted positions of ``k`` units from ``eq`` (k, N - 1) (position ``j + 1``
    holds the value of position ``j``): (rows, positions, their doubled mid-rank
    ``first + last + 2``, each unit's tie term ``sum (t**3 - t)``). Work in the number of
    tied positions only."""
    ties = np.zeros(k, dtype=np.float64)
    width = eq.shape[1]
    pair = np.flatnonzero(eq)  # tied neighbour pairs (row * width + j)
    if pair.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.float64), ties
    row, j = np.divmod(pair, width)
    new = np.ones(pair.size, dtype=bool)  # a run of tied pairs (one tie group) starts
    new[1:] = pair[1:] != pair[:-1] + 1
    new[1:] |= row[1:] != row[:-1]
    group = np.cumsum(new) - 1
    first = j[new]  # first position of each group
    ends = np.flatnonzero(np.append(new[1:], True))  # last pair of each group
    last = j[ends] + 1
    size = (last - first + 1).astype(np.float64)
    np.add.at(ties, row[new], size**3 - size)
    mid = (first + last + 2).astype(np.float64)[group]
    rows = np.concatenate([row, row])
    pos = np.concatenate([j, j + 1])
    return rows, pos, np.concatenate([mid, mid]), ties


def pattern_ranksums(values: np.ndarray, inverse: np.ndarray, n_patterns: int,
                     block: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Doubled mid-rank sums of each unit over groups of samples, and tie terms (CPU).

    Ranks come from the values as given: float64 and integers (int64 above 2**53 too) are
    compared exactly. Float32-exact values are radix-sorted by their 32-bit keys,
    carrying the sample's group beside them (two counting-sort passes per unit).

    Parameters
    ----------
    values : numpy.ndarray, shape (N, K)
        Finite real activations (any real dtype).
    inverse : numpy.ndarray of int, shape (N,)
        Group (label pattern) of each sample, in ``[0, n_patterns)``.
    n_patterns : int
    block : int, optional
        Units ranked at once (default: about 12 MiB of keys; the working memory is about
        ``25 * N * block`` bytes).

    Returns
    -------
    ranksums : numpy.ndarray, float64, shape (n_patterns, K)
        ``sum_{i in group m} 2 * rank_i`` (exact integers).
    tie_term : numpy.ndarray, float64, shape (K,)
    """
    n, k = values.shape
    out = np.empty((n_patterns, k), dtype=np.float64)
    ties = np.empty(k, dtype=np.float64)
    if block is None:
        block = max(1, _RANK_BLOCK_BYTES // (8 * n))
    ranker = _Ranker(n, inverse, n_patterns, min(block, k))
    for s in range(0, k, ranker.block):
        e = min(k, s + ranker.block)
        out[:, s:e], ties[s:e] = ranker.sums(values[:, s:e])
    return out, ties


def pattern_ranksums_torch(values: torch.Tensor, inverse: torch.Tensor,
                           n_patterns: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`pattern_ranksums` with torch (any device): same exact results."""
    r2, tie = midranks2(values)
    out = torch.zeros((n_patterns, values.shape[1]), dtype=torch.float64, device=values.device)
    out.index_add_(0, inverse, r2)
    return out, tie


def rank_keys_torch(values: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """``values`` (N, K) as a tensor that sorts and ties exactly as the values do: floats as
    float64 (float16 and float32 widen exactly), integers and booleans as int64 (uint64
    shifted by ``2**63``, which keeps its order), so int64 values above ``2**53`` keep
    their distinct ranks on the torch path too."""
    if values.dtype == np.uint64:
        keys = (values ^ np.uint64(1 << 63)).view(np.int64)
        return torch.from_numpy(np.ascontiguousarray(keys)).to(device)
    if np.issubdtype(values.dtype, np.integer) or values.dtype == np.bool_:
        return torch.from_numpy(values.astype(np.int64, copy=False)).to(device)
    return torch.from_numpy(values.astype(np.float64, copy=False)).to(device)


def centred_activations(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each unit's centred activations and standard deviation, computed at a scale where
    neither overflows nor underflows (for the point-biserial correlation, which does not
    depend on the scale).

    Each column is first divided by the power of two just above its largest absolute value
    (exact in floating point), so activations of any magnitude (``1e160``,
    ``1e-175``) give the same correlations; integers (int64 above ``2**53`` too) are taken
    exactly as differences from the column's minimum before conversion.

    Parameters
    ----------
    values : numpy.ndarray, shape (N, K)
        Finite real activations (any real dtype).

    Returns
    -------
    centred : numpy.ndarray, float64, shape (N, K)
        ``(x - mean) / 2**e`` per column.
    sd : numpy.ndarray, float64, shape (K,)
        The population standard deviation of ``centred`` (0 for a constant unit).
    """
    if np.issubdtype(values.dtype, np.integer):
        low = values.min(axis=0)  # differences modulo 2**64: exact for any int64/uint64
        d = (values.astype(np.uint64) - low.astype(np.uint64)).astype(np.float64)
    else:
        d = values.astype(np.float64)
    _, expo = np.frexp(np.abs(d).max(axis=0))
    d = np.ldexp(d, -expo)  # entries within [-1, 1]
    d -= d.mean(axis=0)
    return d, np.sqrt((d * d).mean(axis=0))


def hanley_mcneil_interval(auroc, n_pos, n_neg, z: float = 1.959963984540054):
    """Hanley & McNeil (1982) Wald interval ``A -/+ z sqrt(Var)`` of an AUROC, clipped to
    [0, 1] (vectorised; NaN where a group is empty). ``Var = (A (1 - A) + (n1 - 1)(Q1 - A^2)
    + (n0 - 1)(Q2 - A^2)) / (n1 n0)``, ``Q1 = A / (2 - A)``, ``Q2 = 2 A^2 / (1 + A)``.
    :func:`invert.trust.auroc_ci` is the checked public form."""
    a = np.asarray(auroc, dtype=np.float64)
    n1 = np.asarray(n_pos, dtype=np.float64)
    n0 = np.asarray(n_neg, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        q1 = a / (2.0 - a)
        q2 = 2.0 * a * a / (1.0 + a)
        var = (a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n0 - 1) * (q2 - a * a)) / (n1 * n0)
        var = np.where((n1 > 0) & (n0 > 0), np.maximum(var, 0.0), np.nan)
    half = z * np.sqrt(var)
    return np.clip(a - half, 0.0, 1.0), np.clip(a + half, 0.0, 1.0)


# Newcombe's score interval of an AUROC (2006, method 5): the AUROCs t with
# (A - t)^2 <= z^2 V(t), V the Hanley-McNeil variance with both group sizes replaced by
# N* = (n1 + n0) / 2 - 1. Unlike a Wald interval it does not collapse to 1.000-1.000 at
# A = 1 (5 of 200 samples perfectly separated: about 0.81-1.00).


def _score_gap(t, a, n1, n0, z: float):
    """``(a - t)^2 - z^2 V(t)``: negative inside the score interval."""
    nstar = (n1 + n0) / 2.0 - 1.0
    shape = (1.0 - t) / (2.0 - t) + t / (1.0 + t)
    var = t * (1.0 - t) / (n1 * n0) * (1.0 + (nstar - 1.0) * shape)
    return (a - t) ** 2 - z * z * var


def _bisect(lo: np.ndarray, hi: np.ndarray, a, n1, n0, z: float,
            inside_at_hi: bool) -> np.ndarray:
    """The boundary between ``lo`` and ``hi`` where the gap changes sign (60 halvings)."""
    for _ in range(60):
        mid = (lo + hi) / 2.0
        inside = _score_gap(mid, a, n1, n0, z) <= 0
        move_hi = inside if inside_at_hi else ~inside
        hi = np.where(move_hi, mid, hi)
        lo = np.where(move_hi, lo, mid)
    return (lo + hi) / 2.0


def _scalar_ci(a: float, n1: float, n0: float, z: float) -> tuple[float, float]:
    """:func:`auroc_score_ci` of one AUROC (plain floats: fast for one unit at a time)."""
    if not (math.isfinite(a) and n1 > 0 and n0 > 0 and 0.0 <= a <= 1.0):
        return math.nan, math.nan
    ends = []
    for lo, hi, inside_at_hi in ((0.0, a, True), (a, 1.0, False)):
        for _ in range(60):
            mid = (lo + hi) / 2.0
            inside = _score_gap(mid, a, n1, n0, z) <= 0
            if inside == inside_at_hi:
                hi = mid
            else:
                lo = mid
        ends.append((lo + hi) / 2.0)
    return min(max(ends[0], 0.0), a), min(max(ends[1], a), 1.0)


def newcombe_interval(auroc, n_pos, n_neg, z: float = 1.959963984540054):
    """Newcombe's score interval of AUROCs (vectorised; floats for scalar input; NaN where
    the AUROC is NaN or a group is empty). :func:`invert.report.stats.auroc_score_ci` is the
    checked public form."""
    if all(np.ndim(x) == 0 for x in (auroc, n_pos, n_neg)):
        return _scalar_ci(float(auroc), float(n_pos), float(n_neg), z)
    a, n1, n0 = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64)
                                      for x in (auroc, n_pos, n_neg)))
    ok = np.isfinite(a) & (n1 > 0) & (n0 > 0) & (a >= 0) & (a <= 1)
    a_ = np.where(ok, a, 0.5)
    n1_ = np.where(ok, n1, 1.0)
    n0_ = np.where(ok, n0, 1.0)
    low = _bisect(np.zeros_like(a_), a_.copy(), a_, n1_, n0_, z, inside_at_hi=True)
    high = _bisect(a_.copy(), np.ones_like(a_), a_, n1_, n0_, z, inside_at_hi=False)
    low = np.where(ok, np.clip(low, 0.0, a_), np.nan)
    high = np.where(ok, np.clip(high, a_, 1.0), np.nan)
    if low.ndim == 0:
        return float(low), float(high)
    return low, high
