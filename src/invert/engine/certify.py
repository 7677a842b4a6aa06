"""Certified explanations in pattern space: how good any formula could be, the proven best
formula of at most two literals, and a branch-and-bound certificate at length three.

Every formula is constant on each label pattern (a distinct label row), so its mask is a
union of patterns, and its support ``n`` and sum ``s`` are sums of per-pattern counts and
per-pattern sums. The functions here work on those per-pattern arrays only:

``values`` (M, K)
    per-pattern sums for each of K units: doubled mid-rank sums ``r2`` (metric ``"auroc"``,
    :func:`invert.engine.stats.pattern_ranksums`, exact integers in float64) or sums of the
    centred activations (metric ``"point_biserial"``, with the units' standard deviations
    ``sd``).
``counts`` (M,)
    samples per pattern; ``matrix`` (M, C) bool (dense or CSR): the patterns' label rows.

The *search key* of a mask with support ``n`` and sum ``s`` is the AUROC
``(s - n (n + 1)) / (2 n (N - n))`` (the beam's exact expression), or the point-biserial
``r = s / (sd sqrt(n (N - n)))``; with ``mode="negative"`` it is minus that (the beam's
mirror), and it is ``-inf`` outside the support limits (integer supports ``s`` with
``min_fraction <= s / N <= max_fraction``, and ``0 < n < N``). Larger keys are better.

Formulas are reported as the beam reports them: literal codes ``0 .. C-1`` for concept ``c``
and ``C .. 2C-1`` for ``~c``, ``ops[j]`` the operator before literal ``j`` (0 AND, 1 OR).

Three results (all vectorised over units):

* :func:`ceiling`: an upper bound on the key of *any* union of patterns within the limits,
  hence of every formula of any length (the fractional knapsack per support).
* :func:`optimal_length2`: the ``beam_size`` best distinct formulas of at most two literals,
  exactly (with the beam's tie order, see its Notes).
* :func:`branch_and_bound_length3`: from an incumbent score, a proof that no formula of at
  most three literals (``(l1 op l2) op l3``) beats it, or the best formula found and an upper
  bound, within a time budget.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from .._validate import bad, check_choice, check_fraction, check_int, check_interval

__all__ = [
    "ceiling", "optimal_length2", "branch_and_bound_length3", "support_limits",
    "prepare_vocabulary", "PatternVocabulary", "Length2Result", "Length3Certificate", "STAGES",
]

log = logging.getLogger(__name__)

_NEG_INF = -math.inf
#: relative error of one float64 product and one division, with room to spare
_REL_ULP = 2.0 ** -50
#: absolute slack when a float bound (not an exact key) is compared with a threshold
_BOUND_SLACK = 1e-12
#: point-biserial certificates close a bound within this much of the incumbent (their sums
#: are floats, so the bounds carry room for rounding)
_PB_TOL = 1e-9
#: elements per temporary array in the vectorised stages (about 8 MiB of float64)
_BLOCK_ELEMS = 1 << 20


# ----------------------------------------------------------------------------- scoring


def support_limits(n_samples: int, min_fraction: float, max_fraction: float) -> tuple[int, int]:
    """Smallest and largest support ``n`` with a defined score and ``min_fraction <= n / N
    <= max_fraction`` (the beam's float comparison); ``(1, 0)`` when there is none."""
    s = np.arange(n_samples + 1, dtype=np.float64)
    ok = (s / n_samples >= min_fraction) & (s / n_samples <= max_fraction)
    ok &= (s > 0) & (s < n_samples)
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return 1, 0
    return int(idx[0]), int(idx[-1])


@dataclass(frozen=True)
class _Score:
    """The search key of (sum, support) pairs, and float bounds on it.

    Arrays put problems (units, or nodes of one unit) on their *last* axis, so ``sd`` (J,)
    broadcasts. The key domain's centred sum of a mask is ``E = sign * (s - n * mu)`` with
    ``mu = N + 1`` (the mean doubled rank) for AUROC and 0 for point-biserial: then
    ``key = off + E / g(n)`` with ``g(n) = 2 n (N - n)`` or ``sd sqrt(n (N - n))`` and
    ``off = sign / 2`` or 0, and ``E`` adds up over disjoint unions."""

    n: float
    lo: float
    hi: float
    sign: float
    auroc: bool

    @property
    def mu(self) -> float:
        return self.n + 1.0 if self.auroc else 0.0

    @property
    def off(self) -> float:
        return 0.5 * self.sign if self.auroc else 0.0

    def key(self, s, n, sd=None) -> np.ndarray:
        """Exact key of sums ``s`` over supports ``n`` (the beam's expressions)."""
        with np.errstate(all="ignore"):
            if self.auroc:
                v = (s - n * (n + 1.0)) / (2.0 * n * (self.n - n))
            else:
                v = s / (sd * np.sqrt(n * (self.n - n)))
        if self.sign < 0:
            v = -v
        return np.where((n >= self.lo) & (n <= self.hi), v, _NEG_INF)

    def key_e(self, e, n, sd=None) -> np.ndarray:
        """Key from centred sums ``e`` (exact for AUROC: integers stay integers)."""
        return self.key(n * self.mu + self.sign * e, n, sd)

    def g(self, n, sd=None) -> np.ndarray:
        with np.errstate(all="ignore"):
            if self.auroc:
                return 2.0 * n * (self.n - n)
            return sd * np.sqrt(n * (self.n - n))

    def crude(self, e, nlo, nhi, sd=None) -> np.ndarray:
        """Upper bound on ``off + e / g(n)`` for all integers ``n`` in ``[nlo, nhi]`` within
        the limits (``g`` is concave: its minimum is at an end, its maximum nearest N/2);
        -inf where that range is empty."""
        a = np.maximum(nlo, self.lo)
        b = np.minimum(nhi, self.hi)
        gmin = np.minimum(self.g(a, sd), self.g(b, sd))
        gmax = self.g(np.clip(self.n / 2.0, a, b), sd)
        with np.errstate(all="ignore"):
            v = self.off + np.where(e >= 0, e / gmin, e / gmax)
            v = v + _BOUND_SLACK * (1.0 + np.abs(v))
        return np.where((a <= b) & np.isfinite(v), v, _NEG_INF)


def _scorer(n: int, min_fraction: float, max_fraction: float, mode: str, metric: str) -> _Score:
    lo, hi = support_limits(n, min_fraction, max_fraction)
    return _Score(float(n), float(lo), float(hi), 1.0 if mode == "positive" else -1.0,
                  metric == "auroc")


def _user_value(key: np.ndarray, sc: _Score) -> np.ndarray:
    """Keys back as the metric's value (AUROC or r; NaN for -inf)."""
    out = np.where(np.isfinite(key), key, np.nan)
    return -out if sc.sign < 0 else out


def _key_of_value(value, sc: _Score, k: int) -> np.ndarray:
    """A per-unit score of the metric (AUROC or r, NaN: none) as a key (-inf: none)."""
    v = np.broadcast_to(np.asarray(value, dtype=np.float64), (k,))
    key = -v if sc.sign < 0 else v.copy()
    return np.where(np.isfinite(key), key, _NEG_INF)


# ----------------------------------------------------------------------------- knapsack


def _centred(values: np.ndarray, counts: np.ndarray, sc: _Score) -> np.ndarray:
    """Per-pattern centred sums in the key domain, ``sign * (v - c * mu)`` (M, J)."""
    c = counts if counts.ndim == values.ndim else counts[:, None]
    return sc.sign * (values - c * sc.mu)


def _sorted_by_mean(u: np.ndarray, cnt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each problem's patterns (a row of ``u``: (J, M)) in order of ``u / count``, best
    first (patterns with count 0 last); ``cnt`` is (M,) or (J, M)."""
    cnt = np.broadcast_to(cnt, u.shape)
    with np.errstate(all="ignore"):
        ratio = np.where(cnt > 0, u / np.where(cnt > 0, cnt, 1.0), _NEG_INF)
    order = np.argsort(-ratio, axis=1)  # ties: any order gives the same curve
    return np.take_along_axis(u, order, 1), np.take_along_axis(cnt, order, 1)


def _stationary(n0, e0, us, cs, sc: _Score) -> np.ndarray:
    """Real supports where ``off + F(n) / g(n)`` is stationary on a segment of the
    knapsack curve, ``F(n) = e0 + (n - n0) us / cs`` (S, 2), NaN where none.

    With ``F = a + m n``: AUROC (g = 2n(N-n)) gives ``m n^2 + 2 a n - a N = 0``;
    point-biserial (g ~ sqrt(n(N-n))) gives ``n (m N + 2 a) = a N``."""
    m = us / cs
    a = e0 - m * n0
    big_n = sc.n
    with np.errstate(all="ignore"):
        if not sc.auroc:
            r = a * big_n / (m * big_n + 2.0 * a)
            return np.stack([r, np.full_like(r, np.nan)], axis=-1)
        qa, qb, qc = m, 2.0 * a, -a * big_n
        disc = qb * qb - 4.0 * qa * qc
        sq = np.sqrt(np.where(disc >= 0, disc, np.nan))
        q = -0.5 * (qb + np.copysign(sq, qb))
        r1 = np.where(qa != 0, q / qa, -qc / qb)
        r2 = np.where(q != 0, qc / q, np.nan)
    return np.stack([r1, r2], axis=-1)


def _interior(n0, e0, us, cs, sc: _Score, sd=None) -> np.ndarray:
    """Largest key at integer supports strictly inside the given segments (flat arrays of
    length S), -inf where there is none within the limits.

    Between the segment's ends, the limits and the stationary points the smooth curve is
    monotone, so its largest value at an integer is next to one of them: the candidates
    are ``floor(root) - 1 .. floor(root) + 2`` for each root (one unit of slack for its
    rounding) and the limits. At a candidate ``n`` the fractional sum is rounded *up* to an
    integer with margin (AUROC), so every key evaluated is exact and at least the curve's."""
    roots = _stationary(n0, e0, us, cs, sc)
    with np.errstate(invalid="ignore"):
        base = np.floor(roots)[..., None] + np.array([-1.0, 0.0, 1.0, 2.0])
    cand = np.concatenate([base.reshape(len(n0), 8),
                           np.broadcast_to([sc.lo, sc.hi], (len(n0), 2))], axis=1)
    n0c, csc = n0[:, None], cs[:, None]
    with np.errstate(invalid="ignore"):
        ok = (cand > n0c) & (cand < n0c + csc) & (cand >= sc.lo) & (cand <= sc.hi)
    cand = np.where(ok, cand, n0c + 1.0)
    t = (cand - n0c) * us[:, None] / csc
    # AUROC: sums of unions are integers, so rounding up keeps every key exact and valid
    e = e0[:, None] + (np.ceil(t + np.abs(t) * _REL_ULP) if sc.auroc else t)
    sdc = None if sd is None else sd[:, None]
    key = np.where(ok, sc.key_e(e, cand, sdc), _NEG_INF)
    return key.max(axis=1)


def _prefix_bound(us: np.ndarray, cs: np.ndarray, n_f, e_f, sc: _Score, sd=None,
                  slack=None, thr=None) -> tuple[np.ndarray, np.ndarray]:
    """Upper bound on the key of every union ``F | W``, ``W`` a union of the allowed
    patterns, from the patterns sorted by mean (``us``, ``cs``: (J, M), count 0 where not
    allowed; ``n_f``, ``e_f``: (J,) the forced set's support and centred sum; ``sd``,
    ``slack``: (J,) or None).

    The largest centred sum of a union of support ``n`` is at most the fractional knapsack
    ``F(n)``: the piecewise-linear curve through the prefix sums of the sorted patterns.
    Its key is evaluated exactly at every breakpoint, and at the integer candidates of each
    segment (:func:`_interior`) where the segment's cheap bound (:meth:`_Score.crude`)
    exceeds the breakpoints' best (and ``thr``, when given; elsewhere the cheap bound stands,
    so the result stays a valid bound). Returns (bound, whether a breakpoint attains it)."""
    j = us.shape[0]
    sl = np.zeros(j) if slack is None else slack
    sdc = None if sd is None else np.broadcast_to(sd, (j,))[:, None]
    ce = (e_f + sl)[:, None] + np.cumsum(us, axis=1)
    cn = np.asarray(n_f, dtype=np.float64)[:, None] + np.cumsum(cs, axis=1)
    best = np.maximum(sc.key_e(ce, cn, sdc).max(axis=1, initial=_NEG_INF),
                      sc.key_e(e_f + sl, n_f, None if sdc is None else sdc[:, 0]))
    seg = cs >= 2
    e0 = ce - us
    n0 = cn - cs
    crude = np.where(seg, sc.crude(np.maximum(e0, ce), n0, cn, sdc), _NEG_INF)
    seg &= crude > (best if thr is None else np.maximum(best, thr))[:, None]
    inner = np.where(seg, _NEG_INF, crude).max(axis=1, initial=_NEG_INF)
    row, i = np.nonzero(seg)
    if row.size:
        kin = _interior(n0[row, i], e0[row, i], us[row, i], cs[row, i], sc,
                        None if sdc is None else sdc[row, 0])
        np.maximum.at(inner, row, kin)
    return np.maximum(best, inner), best >= inner


def _pb_slack(u: np.ndarray, e_f, m: int) -> np.ndarray:
    """Room for the rounding of float sums of activations (point-biserial bounds), per row
    of ``u`` (J, M)."""
    return 2.0 * (m + 2) * 2.0 ** -52 * (np.abs(u).sum(axis=1) + np.abs(e_f))


def _check_common(values, counts, n_samples, min_fraction, max_fraction, mode, metric, sd):
    """Validated (values (M, K) float64, counts (M,) float64, n, sd or None, scorer)."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2:
        raise bad("values", "an (M, K) array of per-pattern sums", f"shape {values.shape}",
                  raw=True)
    counts = np.asarray(counts, dtype=np.float64).ravel()
    if counts.shape[0] != values.shape[0] or np.any(counts < 1):
        raise bad("counts", f"{values.shape[0]} positive pattern counts",
                  f"shape {counts.shape}", raw=True)
    n = check_int("n_samples", n_samples, minimum=1)
    if int(counts.sum()) != n:
        raise bad("n_samples", f"the sum of counts ({int(counts.sum())})", n_samples)
    min_fraction = check_fraction("min_fraction", min_fraction)
    max_fraction = check_fraction("max_fraction", max_fraction)
    if min_fraction > max_fraction:
        raise bad("min_fraction", f"a value <= max_fraction ({max_fraction})", min_fraction)
    check_choice("mode", mode, ("positive", "negative"))
    check_choice("metric", metric, ("auroc", "point_biserial"))
    if metric == "point_biserial":
        if sd is None:
            raise bad("sd", "the units' standard deviations (metric 'point_biserial')", sd)
        sd = np.broadcast_to(np.asarray(sd, dtype=np.float64), (values.shape[1],)).copy()
        sd[~(sd > 0)] = np.nan  # constant units: no score
    else:
        sd = None
    return values, counts, n, sd, _scorer(n, min_fraction, max_fraction, mode, metric)


def ceiling(values, counts, n_samples: int, *, min_fraction: float = 0.0,
            max_fraction: float = 0.5, mode: str = "positive", metric: str = "auroc",
            sd=None) -> np.ndarray:
    """For each unit, an upper bound on the score of any formula within the support limits.

    Parameters
    ----------
    values : array, shape (M, K)
        Per-pattern doubled rank sums (``metric="auroc"``) or sums of the centred
        activations (``"point_biserial"``).
    counts : array, shape (M,)
        Samples per pattern; ``n_samples`` is their sum.
    min_fraction, max_fraction, mode, metric
        As in :func:`invert.explain`.
    sd : array, shape (K,), optional
        The units' standard deviations (point-biserial only).

    Returns
    -------
    numpy.ndarray, shape (K,)
        The highest AUROC (or r) any union of patterns can reach; with ``mode="negative"``
        the lowest. NaN where no support is allowed.

    Notes
    -----
    Proof of validity: a union of patterns with support ``n`` is a 0/1 solution of the
    knapsack ``max sum_p x_p u_p subject to sum_p x_p c_p = n``, whose linear relaxation is
    solved by taking patterns in order of ``u_p / c_p`` (the last one fractionally); so its
    centred sum is at most that curve at ``n``, its key (increasing in the sum at fixed
    ``n``) at most the curve's key at ``n``, and the maximum over the allowed integers
    ``n`` is attained at a breakpoint or next to a stationary point of a segment, all of
    which are evaluated with sums rounded up to integers and the key's exact (correctly
    rounded, hence monotone) expression. Point-biserial bounds add room for the rounding
    of float sums. When the maximum is at a breakpoint the bound is the score of an actual
    union (the best patterns).
    """
    values, counts, n, sd, sc = _check_common(values, counts, n_samples, min_fraction,
                                              max_fraction, mode, metric, sd)
    return _user_value(_ceiling_keys(values, counts, sc, sd)[0], sc)


def _ceiling_keys(values, counts, sc: _Score, sd=None) -> tuple[np.ndarray, np.ndarray]:
    """Ceiling keys (K,) and whether a breakpoint (an actual union) attains each.

    AUROC units are first bounded from their best patterns only (:func:`_from_best`); the
    others, and point-biserial units, sort all patterns and bound the prefix that reaches
    the largest support (:func:`_within_limit`). Both give the same keys."""
    m, k = values.shape
    out = np.full(k, _NEG_INF)
    exact = np.zeros(k, dtype=bool)
    step = max(1, _BLOCK_ELEMS // max(1, m))
    zeros = np.zeros(min(step, k))
    best = _BestSetup.of(counts, sc)
    for s in range(0, k, step):
        e = min(k, s + step)
        u = np.ascontiguousarray(_centred(values[:, s:e], counts, sc).T)  # (J, M)
        rest = np.arange(e - s)
        if best is not None:
            done, key, ex = _from_best(u, counts, sc, best)
            out[s:e][done], exact[s:e][done] = key[done], ex[done]
            rest = np.flatnonzero(~done)
            if rest.size == 0:
                continue
            u = u[rest]
        us, cs = _within_limit(*_sorted_by_mean(u, counts), sc)
        j = rest.size
        sdb = None if sd is None else sd[s:e][rest]
        slack = None if sc.auroc else _pb_slack(u, 0.0, m)
        out[s + rest], exact[s + rest] = _prefix_bound(us, cs, zeros[:j], zeros[:j], sc, sdb,
                                                       slack)
    return out, exact


def _within_limit(us: np.ndarray, cs: np.ndarray, sc: _Score) -> tuple[np.ndarray, np.ndarray]:
    """The sorted patterns (J, M) cut after the last column where some row's segment starts
    at or below the largest support: later segments start past it, so their breakpoints,
    crude bounds and interiors are all -inf in :func:`_prefix_bound` (an exact cut)."""
    start = np.cumsum(cs, axis=1) - cs  # exact: sums of integer counts
    width = int((start <= sc.hi).sum(axis=1).max(initial=0))  # starts increase along a row
    width = max(width, 1)
    return us[:, :width], cs[:, :width]


# ------------------------------------------------------------------ ceiling from the best


#: patterns of largest mean sorted per unit by :func:`_from_best` (at least ``lo + 64``)
_BEST_SORTED = 512
_BEST_EXTRA = 64
#: the shortcut runs where there are more than this many times ``t`` patterns (below, the
#: full sort costs about as much: measured on a token-style layer with 4,413 patterns)
_BEST_MIN_RATIO = 16
#: tail buckets (by mean) of :func:`_tail_bound`
_TAIL_BUCKETS = 512
#: (count x |centred sum|) below which a pattern's interior keys provably stay under the cap
_CAP_INTERIOR = 2.0 ** 48


@dataclass(frozen=True)
class _BestSetup:
    """What :func:`_from_best` needs of the patterns: how many to sort, the patterns whose
    interior rounding the cap must check per unit, and the rounding room of an interior
    sum (``1 + 2**-48 max(c) N``, plus one)."""

    t: int
    risky: np.ndarray
    bump: float

    @staticmethod
    def of(counts: np.ndarray, sc: _Score) -> _BestSetup | None:
        """None where the shortcut does not apply: point-biserial, no allowed support, sums
        not exact in float64, or too few patterns to gain from a partial sort."""
        m = counts.shape[0]
        t = max(_BEST_SORTED, int(sc.lo) + _BEST_EXTRA)
        if not sc.auroc or sc.lo > sc.hi or sc.n * sc.n >= 2.0 ** 52 or _BEST_MIN_RATIO * t >= m:
            return None
        risky = np.flatnonzero((counts >= 2) & (counts * counts * sc.n >= _CAP_INTERIOR))
        return _BestSetup(t, risky, 2.0 + 2.0 ** -48 * float(counts.max()) * sc.n)


def _from_best(u: np.ndarray, counts: np.ndarray, sc: _Score,
               best: _BestSetup) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ceiling keys of the rows of ``u`` (J, M; AUROC centred sums) from their ``t`` patterns
    of largest mean: (which rows are settled, their keys, whether a breakpoint attains it).

    The full path's key is the largest of the values it evaluates: breakpoint keys and the
    interior keys of segments (the crude bounds only count where a breakpoint is above
    them, and an interior key is at most its segment's crude bound). Its order by mean is
    the same as the sorted top patterns' up to a *prefix end* where the mean strictly
    drops, except inside runs of equal means of patterns that differ, whose order is
    arbitrary. A row is settled (1) by the cap (:func:`_cap_hits`), or (2) when the prefix
    before its first such run (and before the end of the sorted top) has a key ``R`` above
    a bound on every value of the rest, in any order (:func:`_tail_bound`): then ``R`` is
    the full path's key, attained the same way."""
    j, m = u.shape
    t = best.t
    ratio = u / counts
    top, rt = _top_sorted(ratio, t)  # rt[:, t]: the largest mean of the rest
    ut, ct = np.take_along_axis(u, top, 1), counts[top]
    ce, cn = np.cumsum(ut, axis=1), np.cumsum(ct, axis=1)  # exact: integer sums < 2**53
    drop = rt[:, :-1] > rt[:, 1:]  # (J, t): a prefix may end after column i
    finite = np.isfinite(u).all(axis=1)  # else the full path (NaN stays NaN)
    done, key = _cap_hits(u, counts, sc, best, ce, cn, drop & finite[:, None])
    exact = done.copy()
    mixed = ~drop & ((ut[:, :-1] != ut[:, 1:]) | (ct[:, :-1] != ct[:, 1:]))
    stop = np.where(mixed.any(axis=1), mixed.argmax(axis=1), t)  # first run of ties
    run = np.where(drop, np.arange(1, t + 1), 0)
    run = np.maximum.accumulate(run, axis=1)  # the last prefix end at or before each column
    end = run[np.arange(j), np.maximum(stop - 1, 0)]
    end = np.where(stop > 0, end, 0)
    live = ~done & (end > 0) & finite
    if not live.any():
        return done, key, exact
    rows = np.flatnonzero(live)
    p = end[rows]
    keep = np.arange(t)[None, :] < p[:, None]
    zero = np.zeros(rows.size)
    r_key, r_ex = _prefix_bound(np.where(keep, ut[rows, :t], 0.0),
                                np.where(keep, ct[rows, :t], 0.0), zero, zero, sc)
    last = p - 1
    tail = _tail_bound(ratio[rows], u[rows], counts, sc, best, rt[rows, p],
                       cn[rows, last], ce[rows, last])
    ok = tail < r_key
    key[rows[ok]], exact[rows[ok]] = r_key[ok], r_ex[ok]
    done[rows[ok]] = True
    return done, key, exact


def _top_sorted(ratio: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
    """Columns (J, t + 1) of each row's ``t + 1`` largest values, largest first (ties in any
    order), and those values.

    A threshold from every 16th value keeps about ``2 t`` candidates per row, which are
    sorted; rows left with fewer than ``t + 1`` candidates are selected by
    ``np.argpartition`` instead."""
    j, m = ratio.shape
    sub = ratio[:, ::16]
    q = min(sub.shape[1], max(1, -(-2 * (t + 1) // 16)))
    with np.errstate(invalid="ignore"):
        thr = -np.partition(-sub, q - 1, axis=1)[:, q - 1]
        cand = ratio > thr[:, None]
    enough = cand.sum(axis=1) >= t + 1
    cand &= enough[:, None]
    top = np.empty((j, t + 1), dtype=np.int64)
    row, col = np.nonzero(cand)
    val = ratio[row, col]
    order = np.lexsort((-val, row))
    start = np.searchsorted(row, np.arange(j))  # row-major: each row's candidates
    pos = np.arange(row.size) - start[row[order]]
    keep = order[pos <= t]
    top[enough] = col[keep].reshape(-1, t + 1)
    few = np.flatnonzero(~enough)
    if few.size:
        sel = np.argpartition(-ratio[few], t, axis=1)[:, :t + 1]
        srt = np.argsort(-np.take_along_axis(ratio[few], sel, 1), axis=1)
        top[few] = np.take_along_axis(sel, srt, 1)
    return top, np.take_along_axis(ratio, top, 1)


def _cap_hits(u, counts, sc: _Score, best: _BestSetup, ce, cn, drop):
    """Rows whose ceiling is the cap, from their sorted top patterns (``ce``, ``cn``: prefix
    sums, ``drop``: where the mean strictly drops): (which rows, their keys).

    The cap: a union of ``n`` samples has centred doubled mid-rank sum ``e <= S(n) = n (N -
    n)`` (the top ``n`` ranks), so its key is at most 1 (``-0.0`` with ``mode="negative"``),
    and ``e = S(n)`` means the union is exactly the top ``n`` samples with no tie across its
    edge. A row is a hit when a prefix of support ``n`` in the limits, followed by a strict
    drop of the mean, has ``e = S(n)``: every sort by mean starts with the same patterns,
    so the full path has this breakpoint, with this exact key. Nothing it evaluates exceeds
    it: breakpoints are unions; at an interior support ``n0 + j`` of a pattern of count
    ``c >= 2`` (``0 < j < c``) the fractional sum ``e0 + j u / c`` is at most the union of
    the first ``n0`` samples with the pattern's best ``j``, hence at most ``S``, and strictly
    below it (equality needs all the pattern's samples tied, and then the tie crosses the
    edge), so at least ``1 / c`` below the integer ``S``; the rounding up adds less than that
    while ``c |u| < 2**48`` (else the row is not a hit), so the rounded sum stays at most
    ``S``. Needs ``values`` to be doubled mid-rank sums (as documented)."""
    j = u.shape[0]
    n = sc.n
    ok = np.ones(j, dtype=bool)
    if best.risky.size:
        ok = (np.abs(u[:, best.risky]) * counts[best.risky] < _CAP_INTERIOR).all(axis=1)
    ce, cn = ce[:, :-1], cn[:, :-1]
    good = (ce == cn * (n - cn)) & (cn >= sc.lo) & (cn <= sc.hi) & drop & ok[:, None]
    hit = good.any(axis=1)
    key = np.full(j, _NEG_INF)
    row = np.flatnonzero(hit)
    if row.size:
        i = good[row].argmax(axis=1)
        key[row] = sc.key_e(ce[row, i], cn[row, i])
    return hit, key


def _tail_bound(ratio, u, counts, sc: _Score, best: _BestSetup, rho, n_t, e_t) -> np.ndarray:
    """Upper bound (J,) on every value the full path evaluates past a prefix (support
    ``n_t``, centred sum ``e_t``, exact), whose other patterns have means ``<= rho``, in any
    order of those.

    Those patterns are cut into buckets by mean (``b = floor((rho - mean) / d)``, monotone in
    the mean, so each bucket is a stretch of the full path's curve with exact ends, the last
    holding all lower means); on bucket ``b`` the curve lies below the line from its start
    with the bucket's largest mean as slope (plus room for the rounding up of interior sums,
    :class:`_BestSetup`), whose key is bounded by :func:`_line_sup`."""
    j, m = ratio.shape
    nb = _TAIL_BUCKETS
    n = sc.n
    d = np.maximum((rho + n) / nb, 1.0)
    with np.errstate(invalid="ignore"):
        b = np.floor((rho[:, None] - ratio) / d[:, None])
    rest = ratio <= rho[:, None]
    b = np.where(rest, np.clip(b, 0, nb - 1), nb).astype(np.int64)
    flat = (np.arange(j)[:, None] * (nb + 1) + b).ravel()
    cnt = np.bincount(flat, np.broadcast_to(counts, (j, m)).ravel(), j * (nb + 1))
    tot = np.bincount(flat, u.ravel(), j * (nb + 1))
    cnt, tot = cnt.reshape(j, nb + 1)[:, :nb], tot.reshape(j, nb + 1)[:, :nb]
    n0 = n_t[:, None] + np.cumsum(cnt, axis=1) - cnt
    e0 = e_t[:, None] + np.cumsum(tot, axis=1) - tot
    room = 2.0 ** -30 * (np.abs(rho) + n)  # covers the bucketing's rounding
    slope = rho[:, None] - np.arange(nb) * d[:, None] + room[:, None]
    sup = _line_sup(e0 + best.bump, n0, slope, np.maximum(n0, sc.lo),
                    np.minimum(n0 + cnt, sc.hi), sc)
    return np.where(cnt > 0, sup, _NEG_INF).max(axis=1)


def _line_sup(e1, n1, m, lo, hi, sc: _Score) -> np.ndarray:
    """Upper bound on ``off + (e1 + m (n - n1)) / g(n)`` over real ``n`` in ``[lo, hi]``
    (AUROC, arrays): at the better end where it is monotone there; -inf where the range is
    empty. Its derivative has the sign of ``P(n) = m n^2 + 2 a n - a N`` with
    ``a = e1 - m n1``; P is checked at the ends and at its vertex ``-a / m``, with room for
    the rounding of ``a`` and ``P``. Where it may not be monotone: the crude bound of the
    largest sum over the range (:meth:`_Score.crude`)."""
    big_n = sc.n
    with np.errstate(all="ignore"):
        a = e1 - m * n1
        mag_a = np.abs(e1) + np.abs(m) * n1

        def poly(x):
            return m * x * x + 2.0 * a * x - a * big_n

        def room(x):
            return 1e-12 * (np.abs(m) * x * x + mag_a * (2.0 * x + big_n))

        vert = np.clip(-a / np.where(m != 0, m, 1.0), lo, hi)
        p_lo, p_hi, p_v = poly(lo), poly(hi), poly(vert)
        tol = np.maximum(np.maximum(room(lo), room(hi)), room(vert))
        pmax = np.maximum(np.maximum(p_lo, p_hi), np.where(m < 0, p_v, -np.inf))
        pmin = np.minimum(np.minimum(p_lo, p_hi), np.where(m > 0, p_v, np.inf))
        at = np.where(pmax <= -tol, lo, np.where(pmin >= tol, hi, np.nan))
        e = e1 + m * (at - n1)
        v = sc.off + e / sc.g(at)
        v = v + 1e-12 * (1.0 + np.abs(v)) + 2.0 ** -50 * (mag_a + np.abs(m * at)) / sc.g(at)
        e_max = np.maximum(e1 + m * (lo - n1), e1 + m * (hi - n1))
        e_max = e_max + 2.0 ** -50 * (mag_a + np.abs(m) * hi)
    v = np.where(np.isfinite(v), v, sc.crude(e_max, lo, hi))
    v = np.where(np.isnan(v), np.inf, v)
    return np.where(lo <= hi, v, _NEG_INF)


# ----------------------------------------------------------------------------- vocabulary

#: concepts per bucket when disjoint pairs ``a | b`` are bounded by groups of ``b``, and
#: buckets per coarse group (bounded first)
_BUCKET = 16
_COARSE = 16


@dataclass
class PatternVocabulary:
    """The patterns' concept matrix, prepared for literal and pair sums
    (:func:`prepare_vocabulary`; the functions here accept it in place of ``matrix``, so a
    search calling them per chunk of units prepares it once).

    ``pa < pb`` are the pairs of defined concepts that co-occur in some pattern (sorted, with
    ``pkeys = pa * C + pb``) and ``q`` (P, M) their pattern incidence, so that
    ``S(a & b) = q @ values``; every other pair is disjoint. ``bconc`` holds the defined
    concepts by support, cut into buckets at ``bstart``, grouped at ``cstart``."""

    m: int
    c: int
    yt: sp.csr_matrix
    ycsc: sp.csc_matrix
    n_concept: np.ndarray
    defined: np.ndarray
    pa: np.ndarray
    pb: np.ndarray
    pkeys: np.ndarray
    q: sp.csr_matrix
    bconc: np.ndarray
    bstart: np.ndarray
    cstart: np.ndarray
    _cols: dict = field(default_factory=dict, repr=False)

    def column(self, concept: int) -> np.ndarray:
        """Concept ``concept``'s bool mask over patterns (cached)."""
        col = self._cols.get(concept)
        if col is None:
            col = np.zeros(self.m, dtype=bool)
            lo, hi = self.ycsc.indptr[concept], self.ycsc.indptr[concept + 1]
            col[self.ycsc.indices[lo:hi]] = True
            self._cols[concept] = col
        return col

    def literal(self, code: int) -> np.ndarray:
        col = self.column(int(code) % self.c)
        return ~col if code >= self.c else col.copy()

    def formula(self, lits, ops) -> np.ndarray:
        """Bool mask over patterns of the left-deep formula (codes ``lits``, -1 ends)."""
        mask = self.literal(lits[0])
        for code, op in zip(lits[1:], ops[1:], strict=False):
            if code < 0:
                break
            mask = (mask | self.literal(code)) if op else (mask & self.literal(code))
        return mask

    def literal_rows(self, codes: np.ndarray) -> np.ndarray:
        """Bool masks (len(codes), M) of literal codes."""
        out = np.zeros((len(codes), self.m), dtype=bool)
        for i, code in enumerate(codes):
            out[i] = self.literal(code)
        return out


def _cooccurring(y: sp.csr_matrix, defined: np.ndarray):
    """Distinct pairs ``a < b`` of defined concepts sharing a pattern, and the incidence
    matrix (pairs x patterns)."""
    m, c = y.shape
    deg = np.diff(y.indptr)
    a_parts, b_parts, r_parts = [], [], []
    for d in np.unique(deg[deg >= 2]):
        rows = np.flatnonzero(deg == d)
        idx = y.indices[y.indptr[rows][:, None] + np.arange(d)]
        iu, ju = np.triu_indices(int(d), 1)
        a_parts.append(idx[:, iu].ravel())
        b_parts.append(idx[:, ju].ravel())
        r_parts.append(np.repeat(rows, len(iu)))
    if not a_parts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, sp.csr_matrix((0, m))
    a, b, r = (np.concatenate(x).astype(np.int64) for x in (a_parts, b_parts, r_parts))
    keep = defined[a] & defined[b]
    keys = a[keep] * c + b[keep]
    uk, inv = np.unique(keys, return_inverse=True)
    q = sp.csr_matrix((np.ones(inv.size), (inv.ravel(), r[keep])), shape=(uk.size, m))
    return uk // c, uk % c, uk, q


def _vocabulary(matrix, counts: np.ndarray, n: int) -> PatternVocabulary:
    """Prepare the (M, C) pattern matrix (dense or sparse) for :func:`_solve_pairs`."""
    y = sp.csr_matrix(matrix).astype(bool)
    y.sum_duplicates()
    y.eliminate_zeros()
    y.sort_indices()
    m, c = y.shape
    yt = y.T.tocsr().astype(np.float64)
    n_concept = yt @ counts
    defined = (n_concept > 0) & (n_concept < n)
    pa, pb, pkeys, q = _cooccurring(y, defined)
    dc = np.flatnonzero(defined)
    bconc = dc[np.argsort(n_concept[dc], kind="stable")]
    bstart = np.append(np.arange(0, bconc.size, _BUCKET), bconc.size)
    nb = bstart.size - 1
    cstart = np.append(np.arange(0, nb, _COARSE), nb)
    return PatternVocabulary(m, c, yt, y.tocsc(), n_concept, defined, pa, pb, pkeys, q, bconc,
                       bstart, cstart)


def prepare_vocabulary(matrix, counts, n_samples: int) -> PatternVocabulary:
    """The (M, C) pattern label matrix prepared for :func:`optimal_length2` and
    :func:`branch_and_bound_length3` (literal and co-occurring pair incidences, buckets);
    pass it as their ``matrix`` to reuse it across chunks of units."""
    counts = np.asarray(counts, dtype=np.float64).ravel()
    matrix = _check_matrix(matrix, counts.size)
    return _vocabulary(matrix, counts, check_int("n_samples", n_samples, minimum=1))


def _as_vocabulary(matrix, counts: np.ndarray, n: int) -> PatternVocabulary:
    if isinstance(matrix, PatternVocabulary):
        if matrix.m != counts.size:
            raise bad("matrix", f"a vocabulary of {counts.size} patterns",
                      f"one of {matrix.m}", raw=True)
        return matrix
    return _vocabulary(_check_matrix(matrix, counts.size), counts, n)


def _check_matrix(matrix, m: int):
    if hasattr(matrix, "detach"):
        matrix = matrix.detach().cpu().numpy()
    if not sp.issparse(matrix):
        matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] != m:
        raise bad("matrix", f"an (M, C) pattern label matrix with M = {m}",
                  f"shape {matrix.shape}", raw=True)
    return matrix


# ----------------------------------------------------------------------------- length <= 2


@dataclass
class _Batch:
    """J problems sharing the vocabulary: the formulas ``F | (Z & g)``, ``g`` a formula of
    at most two literals. ``w`` (M, J) are the values on ``Z`` (0 elsewhere), ``cnt`` (M, 1)
    or (M, J) the counts on ``Z``; ``s_f``, ``n_f`` (J,) the sum and support of ``F``; keys
    below ``thr`` (J,) are not wanted."""

    w: np.ndarray
    cnt: np.ndarray
    s_f: np.ndarray
    n_f: np.ndarray
    sd: np.ndarray | None
    thr: np.ndarray

    @property
    def j(self) -> int:
        return self.w.shape[1]


class _Pool:
    """Candidate formulas of a batch: problem, key, order, sum, support, l1, l2, op."""

    _FIELDS = ("prob", "key", "order", "s", "n", "l1", "l2", "op")

    def __init__(self):
        self.parts: list[tuple[np.ndarray, ...]] = []

    def add(self, keep, prob, key, order, s, n, l1, l2, op):
        """Add the entries where ``keep`` and the key is finite; other arguments broadcast
        against ``keep``."""
        idx = np.nonzero(keep & (key > _NEG_INF))
        if idx[0].size == 0:
            return
        arrs = [np.broadcast_to(x, keep.shape)[idx] for x in (prob, key, order, s, n, l1, l2,
                                                               op)]
        self.parts.append(tuple(arrs))

    def arrays(self) -> dict[str, np.ndarray]:
        if not self.parts:
            return {f: np.zeros(0, dtype=np.float64 if f in ("key", "s", "n") else np.int64)
                    for f in self._FIELDS}
        out = {f: np.concatenate([p[i] for p in self.parts]) for i, f in
               enumerate(self._FIELDS)}
        self.parts = [tuple(out[f] for f in self._FIELDS)]
        return out

    def prune(self, thr: np.ndarray):
        a = self.arrays()
        keep = a["key"] >= thr[a["prob"]]
        self.parts = [tuple(a[f][keep] for f in self._FIELDS)]


def _raise_thresholds(pool: _Pool, thr: np.ndarray, beam: int, exact: bool) -> None:
    """Raise each problem's threshold to the ``beam``-th best key among candidates with
    pairwise different signatures (support and sum for exact AUROC sums, support only
    otherwise): those are distinct formulas, so the final ``beam`` best are at least as
    good. Then drop candidates below it."""
    a = pool.arrays()
    if a["key"].size == 0:
        return
    sig = [a["prob"], a["n"]] + ([a["s"]] if exact else [])
    order = np.lexsort((-a["key"],) + tuple(reversed(sig)))  # by signature, best first
    srt = [x[order] for x in sig]
    first = np.ones(order.size, dtype=bool)
    first[1:] = np.any([x[1:] != x[:-1] for x in srt], axis=0)
    keys, probs = a["key"][order][first], a["prob"][order][first]
    o2 = np.lexsort((-keys, probs))
    keys, probs = keys[o2], probs[o2]
    start = np.searchsorted(probs, probs, side="left")
    rank = np.arange(probs.size) - start
    hit = rank == beam - 1
    np.maximum.at(thr, probs[hit], keys[hit])
    pool.prune(thr)


def _order_key(c2: int, l1, l2, op):
    """Position of a pair formula in the tie order (after the 2C literals)."""
    return c2 + (l1 * c2 + l2) * 2 + op


def _literal_stats(voc: PatternVocabulary, bt: _Batch):
    """Per-concept sums (C, J) and supports (C, 1|J) on Z, and Z's totals."""
    s_c = np.asarray(voc.yt @ bt.w)
    n_c = np.asarray(voc.yt @ bt.cnt)
    return s_c, n_c, bt.w.sum(axis=0), bt.cnt.sum(axis=0)


def _add_literals(pool, voc, bt, sc, st, beam) -> None:
    """Length-1 candidates ``F | (Z & l)``."""
    s_c, n_c, s_z, n_z = st
    s = np.concatenate([s_c, s_z - s_c]) + bt.s_f
    n = np.concatenate([np.broadcast_to(n_c, s_c.shape),
                        np.broadcast_to(n_z - n_c, s_c.shape)]) + bt.n_f
    key = sc.key(s, n, bt.sd)
    key[~np.concatenate([voc.defined, voc.defined])] = _NEG_INF
    codes = np.arange(2 * voc.c)[:, None]
    pool.add(key >= bt.thr, np.arange(bt.j), key, codes, s, n, codes, -1, 0)
    _raise_thresholds(pool, bt.thr, beam, sc.auroc)


def _add_cooccurring(pool, voc, bt, sc, st, beam) -> None:
    """All eight formulas of two literals over each co-occurring concept pair ``a < b``
    (inclusion-exclusion from ``S(a)``, ``S(b)``, ``S(a & b)``), except those whose support
    equals one of their literals' (the mask is then that literal's)."""
    s_c, n_c, s_z, n_z = st
    c, c2 = voc.c, 2 * voc.c
    step = max(1, _BLOCK_ELEMS // (8 * bt.j))
    for p0 in range(0, voc.pa.size, step):
        p1 = min(voc.pa.size, p0 + step)
        a, b = voc.pa[p0:p1], voc.pb[p0:p1]
        q = voc.q[p0:p1]
        sab, nab = np.asarray(q @ bt.w), np.asarray(q @ bt.cnt)
        sa, sb, na, nb = s_c[a], s_c[b], n_c[a], n_c[b]
        # (l1, l2) codes and sums of a&b, a&~b, b&~a, ~a&~b; the ORs are their complements
        # a|b = ~(~a&~b), a|~b = ~(b&~a), b|~a = ~(a&~b), ~a|~b = ~(a&b)
        ands = [((a, b), sab, nab, (na, nb)),
                ((a, c + b), sa - sab, na - nab, (na, n_z - nb)),
                ((b, c + a), sb - sab, nb - nab, (nb, n_z - na)),
                ((c + a, c + b), s_z - sa - sb + sab, n_z - na - nb + nab,
                 (n_z - na, n_z - nb))]
        for t in range(8):
            op, i = divmod(t, 4)
            (l1, l2), s, n, (n1, n2) = ands[i]
            if op:  # l1 | l2 = ~(~l1 & ~l2), the complement of AND number 3 - i
                s, n = s_z - ands[3 - i][1], n_z - ands[3 - i][2]
            key = sc.key(s + bt.s_f, n + bt.n_f, bt.sd)
            keep = (key >= bt.thr) & (n != n1) & (n != n2)
            pool.add(keep, np.arange(bt.j), key, _order_key(c2, l1, l2, op)[:, None],
                     s + bt.s_f, n + bt.n_f, l1[:, None], l2[:, None], op)
    _raise_thresholds(pool, bt.thr, beam, sc.auroc)


def _bucket_bounds(voc, sc, st):
    """Per bucket of concepts (nb, J), for the fine buckets and the coarse groups of them:
    the largest and smallest centred sum and the smallest and largest support on Z."""
    s_c, n_c, _, _ = st
    e_c = sc.sign * (s_c - n_c * sc.mu)
    eb = e_c[voc.bconc]
    nb = np.broadcast_to(n_c[voc.bconc], eb.shape)
    fine = [np.maximum.reduceat(eb, voc.bstart[:-1], axis=0),
            np.minimum.reduceat(eb, voc.bstart[:-1], axis=0),
            np.minimum.reduceat(nb, voc.bstart[:-1], axis=0),
            np.maximum.reduceat(nb, voc.bstart[:-1], axis=0)]
    cs = voc.cstart[:-1]
    coarse = [f.reduceat(x, cs, axis=0) for f, x in zip(
        (np.maximum, np.minimum, np.minimum, np.maximum), fine, strict=True)]
    return e_c, fine, coarse


def _expand(starts: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (entry i, member of range ``starts[k[i]] .. starts[k[i] + 1]``): (i, member)."""
    sizes = starts[k + 1] - starts[k]
    rep = np.repeat(np.arange(k.size), sizes)
    within = np.arange(rep.size) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    return rep, starts[k][rep] + within


def _disjoint_bound(sc, bt, op, e_a, n_a, ext, jj, e_z, n_z):
    """Bound on ``F | (Z & (a | b))`` (op 1) or ``F | (Z & ~a & ~b)`` (op 0) over partners
    ``b`` with the extremes ``ext`` (emax, emin, nmin, nmax) of their bucket; problems
    ``jj``."""
    emax, emin, nmin, nmax = ext
    e_f = sc.sign * (bt.s_f[jj] - bt.n_f[jj] * sc.mu)
    sd = None if bt.sd is None else bt.sd[jj]
    if op:
        return sc.crude(e_f + e_a + emax, bt.n_f[jj] + n_a + nmin, bt.n_f[jj] + n_a + nmax, sd)
    return sc.crude(e_f + e_z - e_a - emin, bt.n_f[jj] + n_z - n_a - nmax,
                    bt.n_f[jj] + n_z - n_a - nmin, sd)


def _coarse_entries(voc, bt, sc, op, e_c, n_c, coarse, e_z, n_z):
    """(first concept, coarse bucket, problem, bound) of every coarse entry reaching the
    threshold, best bound first."""
    firsts = np.flatnonzero(voc.defined)
    nbc = coarse[0].shape[0]
    step = max(1, _BLOCK_ELEMS // max(1, nbc * bt.j))
    parts = [(np.zeros(0, dtype=np.int64),) * 3 + (np.zeros(0),)]
    for a0 in range(0, firsts.size, step):
        a_ids = firsts[a0:a0 + step]
        jj = np.arange(bt.j)
        n_a = n_c[a_ids][:, None]
        bound = _disjoint_bound(sc, bt, op, e_c[a_ids][:, None], n_a, coarse, jj,
                                e_z, n_z)  # (As, nbc, J)
        ia, kc, j = np.nonzero(bound >= bt.thr)
        parts.append((a_ids[ia], kc, j, bound[ia, kc, j]))
    a, kc, j, bnd = (np.concatenate(x) for x in zip(*parts, strict=True))
    order = np.argsort(-bnd, kind="stable")
    return a[order], kc[order], j[order], bnd[order]


def _fine_pairs(voc, bt, sc, op, a, kc, jj, e_c, n_c, fine, e_z, n_z):
    """Refine coarse entries into fine buckets, keep those reaching the threshold, and
    expand them into the disjoint pairs ``a < b``: (a, b, problem)."""
    rep, kf = _expand(voc.cstart, kc)
    a, jj = a[rep], jj[rep]
    ext = [x[kf, jj] if x.shape[1] > 1 else x[kf, 0] for x in fine]
    n_a = n_c[a, jj] if n_c.shape[1] > 1 else n_c[a, 0]
    bound = _disjoint_bound(sc, bt, op, e_c[a, jj], n_a, ext, jj, e_z[jj],
                            n_z[jj] if n_z.size > 1 else n_z[0])
    ok = bound >= bt.thr[jj]
    rep, pos = _expand(voc.bstart, kf[ok])
    a, b, j = a[ok][rep], voc.bconc[pos], jj[ok][rep]
    keep = b > a
    if voc.pkeys.size:
        pk = a * voc.c + b
        at = np.minimum(np.searchsorted(voc.pkeys, pk), voc.pkeys.size - 1)
        keep &= voc.pkeys[at] != pk
    return a[keep], b[keep], j[keep]


def _add_disjoint(pool, voc, bt, sc, st, beam) -> None:
    """``a | b`` and ``~a & ~b`` for the disjoint concept pairs ``a < b`` (the other six
    formulas of such a pair repeat a literal's mask or are empty/full): sums ``S(a) +
    S(b)``. Pairs are enumerated only where a bound over the bucket of ``b`` (its extreme
    sums and supports; coarse groups of buckets first) reaches the threshold, best bounds
    first, raising the threshold after each growing chunk."""
    s_c, n_c, s_z, n_z = st
    c = voc.c
    e_c, fine, coarse = _bucket_bounds(voc, sc, st)
    e_z = sc.sign * (s_z - n_z * sc.mu)
    for op in (1, 0):  # a | b, then ~a & ~b
        ca, ckc, cj, cb = _coarse_entries(voc, bt, sc, op, e_c, n_c, coarse, e_z, n_z)
        done, chunk = 0, 64
        while done < ca.size:
            sl = slice(done, done + chunk)
            done, chunk = done + chunk, min(4 * chunk, 1 << 14)
            live = cb[sl] >= bt.thr[cj[sl]]
            a, b, j = _fine_pairs(voc, bt, sc, op, ca[sl][live], ckc[sl][live], cj[sl][live],
                                  e_c, n_c, fine, e_z, n_z)
            nj = j if n_c.shape[1] > 1 else np.zeros_like(j)
            na, nb = n_c[a, nj], n_c[b, nj]
            s, n = s_c[a, j] + s_c[b, j], na + nb
            if not op:
                s, n = s_z[j] - s, n_z[nj if n_z.size > 1 else 0] - n
            s, n = s + bt.s_f[j], n + bt.n_f[j]
            key = sc.key(s, n, None if bt.sd is None else bt.sd[j])
            keep = (key >= bt.thr[j]) & (na > 0) & (nb > 0)
            l1, l2 = (a, b) if op else (c + a, c + b)
            pool.add(keep, j, key, _order_key(2 * c, l1, l2, op), s, n, l1, l2, op)
            _raise_thresholds(pool, bt.thr, beam, sc.auroc)


def _solve_pairs(voc: PatternVocabulary, bt: _Batch, sc: _Score, beam: int) -> _Pool:
    """Every formula ``F | (Z & g)`` with ``g`` of at most two literals whose key may be
    among the ``beam`` best of its problem (``bt.thr`` is raised on the way)."""
    pool = _Pool()
    st = _literal_stats(voc, bt)
    _add_literals(pool, voc, bt, sc, st, beam)
    _add_cooccurring(pool, voc, bt, sc, st, beam)
    _add_disjoint(pool, voc, bt, sc, st, beam)
    return pool


@dataclass
class Length2Result:
    """The proven best formulas of at most two literals, ``beam_size`` per unit, in the
    beam's layout: ``lits`` (K, B, 2) literal codes (-1 unused), ``ops`` (K, B, 2) the
    operator before each literal (0 AND, 1 OR; ``ops[..., 0]`` is 0), ``length`` (K, B),
    ``s2`` the masks' sums (doubled rank sums, or centred sums for point-biserial),
    ``n1`` their supports, ``value`` the metric (AUROC or r), ``valid`` (K, B)."""

    lits: np.ndarray
    ops: np.ndarray
    length: np.ndarray
    s2: np.ndarray
    n1: np.ndarray
    value: np.ndarray
    valid: np.ndarray

    @property
    def best(self) -> np.ndarray:
        """The best value of each unit (K,), NaN where no formula fits the limits."""
        return np.where(self.valid[:, 0], self.value[:, 0], np.nan)

    def masks(self, vocabulary: PatternVocabulary, units=None) -> np.ndarray:
        """Bool masks (K', B, M) over patterns of the formulas of ``units`` (default all;
        False rows where invalid), e.g. for the p-values of small supports."""
        units = np.arange(self.lits.shape[0]) if units is None else np.asarray(units)
        out = np.zeros((units.size, self.lits.shape[1], vocabulary.m), dtype=bool)
        for i, u in enumerate(units):
            for r in np.flatnonzero(self.valid[u]):
                out[i, r] = vocabulary.formula(self.lits[u, r], self.ops[u, r])
        return out


def _select(pool: _Pool, voc: PatternVocabulary, j: int, beam: int) -> list[list[int]]:
    """Per problem, the pool rows of the ``beam`` best distinct masks: by key, ties by
    order; a mask equal to an earlier one's is skipped (exact comparison)."""
    a = pool.arrays()
    order = np.lexsort((a["order"], -a["key"], a["prob"]))
    probs = a["prob"][order]
    bounds = np.searchsorted(probs, np.arange(j + 1))
    chosen: list[list[int]] = []
    for p in range(j):
        rows, seen = [], set()
        for r in order[bounds[p]:bounds[p + 1]]:
            mask = voc.formula([a["l1"][r], a["l2"][r]], [0, a["op"][r]]).tobytes()
            if mask in seen:
                continue
            seen.add(mask)
            rows.append(int(r))
            if len(rows) == beam:
                break
        chosen.append(rows)
    return chosen


def _fill_length2(res: Length2Result, offset: int, pool: _Pool, chosen, sc: _Score) -> None:
    a = pool.arrays()
    for p, rows in enumerate(chosen):
        u = offset + p
        for slot, r in enumerate(rows):
            two = a["l2"][r] >= 0
            res.lits[u, slot] = (a["l1"][r], a["l2"][r] if two else -1)
            res.ops[u, slot, 1] = a["op"][r] if two else 0
            res.length[u, slot] = 2 if two else 1
            res.s2[u, slot], res.n1[u, slot] = a["s"][r], a["n"][r]
            res.value[u, slot] = _user_value(a["key"][r:r + 1], sc)[0]
            res.valid[u, slot] = True


def optimal_length2(values, counts, matrix, n_samples: int, *, beam_size: int = 5,
                    min_fraction: float = 0.0, max_fraction: float = 0.5,
                    mode: str = "positive", metric: str = "auroc", sd=None,
                    incumbent=None) -> Length2Result:
    """The proven best formulas of at most two literals of every unit (exhaustive, pruned).

    Parameters
    ----------
    values, counts, n_samples, min_fraction, max_fraction, mode, metric, sd
        As in :func:`ceiling`.
    matrix : array, scipy.sparse matrix or PatternVocabulary, shape (M, C)
        The patterns' bool label rows (or them prepared by :func:`prepare_vocabulary`).
    beam_size : int, default 5
        Distinct formulas returned per unit.
    incumbent : array, shape (K,), optional
        Per unit, the score (AUROC or r) of the ``beam_size``-th of ``beam_size`` known
        distinct formulas within the limits (e.g. the beam's last answer), or NaN; a valid
        starting threshold that speeds up the pruning.

    Returns
    -------
    Length2Result

    Notes
    -----
    The candidates are every literal and every formula ``l1 & l2``, ``l1 | l2`` of two
    literals of defined concepts (not all-zero, not all-one). Over a pair of concepts
    ``a < b`` that share a pattern all eight formulas are scored from ``S(a)``, ``S(b)`` and
    ``S(a & b) = q @ values`` by inclusion-exclusion; over a disjoint pair only ``a | b`` and
    ``~a & ~b`` are new (the others repeat a literal's mask or are empty/full), and they are
    enumerated only where a bound over a bucket of partners ``b`` (largest centred sum,
    range of supports) reaches the threshold: the ``beam_size``-th best key among
    distinct candidates found so far.

    Ties are broken by the order: the literals ``c0 .. c(C-1), ~c0 .. ~c(C-1)`` first, then
    the pairs in the order of ``(l1, l2, op)`` with codes ``l1 < l2`` and AND before OR (a
    formula is named by its smallest-code first literal). Formulas whose mask equals an
    earlier one's are skipped, so the result holds ``beam_size`` distinct masks, best
    first. This equals the beam's order at depth 1 and among pairs from the same first
    literal, where its extension literals keep the depth-1 order (ties in ``|AUROC - 0.5|``).
    """
    values, counts, n, sd, sc = _check_common(values, counts, n_samples, min_fraction,
                                              max_fraction, mode, metric, sd)
    beam = check_int("beam_size", beam_size, minimum=1)
    voc = _as_vocabulary(matrix, counts, n)
    m, k = values.shape
    thr0 = _key_of_value(np.nan if incumbent is None else incumbent, sc, k)
    thr0 = thr0 - _BOUND_SLACK * (1.0 + np.abs(thr0))
    res = Length2Result(np.full((k, beam, 2), -1, dtype=np.int64),
                        np.zeros((k, beam, 2), dtype=np.int8), np.zeros((k, beam), np.int64),
                        np.zeros((k, beam)), np.zeros((k, beam)), np.full((k, beam), np.nan),
                        np.zeros((k, beam), dtype=bool))
    step = max(1, min(64, _BLOCK_ELEMS // max(1, 2 * voc.c)))
    for s in range(0, k, step):
        e = min(k, s + step)
        bt = _Batch(np.ascontiguousarray(values[:, s:e]), counts[:, None], np.zeros(e - s),
                    np.zeros(e - s), None if sd is None else sd[s:e], thr0[s:e].copy())
        pool = _solve_pairs(voc, bt, sc, beam)
        _fill_length2(res, s, pool, _select(pool, voc, e - s, beam), sc)
    return res


# ----------------------------------------------------------------------------- length 3

#: how a unit's certificate was settled (``Length3Certificate.stage``)
STAGES = ("not reached", "ceiling", "literal bounds", "search complete", "budget spent")


@dataclass
class Length3Certificate:
    """Per unit (K,): ``certified`` (no formula of at most three literals beats ``value``),
    ``bound`` (an upper bound on any such formula's score: the highest AUROC or r, with
    ``mode="negative"`` the lowest; equal to ``value`` when certified), ``value`` (the best
    known score: the incumbent's, or the formula found), the formula found when it beats the
    incumbent (``lits`` (K, 3) codes, ``ops`` (K, 3), ``length``, 0 where the incumbent
    stands; ``s2``, ``n1`` its sum and support), ``stage`` (index into :data:`STAGES`) and
    ``seconds`` (the time spent)."""

    certified: np.ndarray
    bound: np.ndarray
    value: np.ndarray
    lits: np.ndarray
    ops: np.ndarray
    length: np.ndarray
    s2: np.ndarray
    n1: np.ndarray
    stage: np.ndarray
    seconds: float = 0.0


@dataclass
class _UnitState:
    """The branch-and-bound of one unit: its best key (incumbent or found), the formula
    found, and the open nodes' bounds."""

    thr: float
    tol: float = 0.0
    lits: tuple[int, ...] = ()
    ops: tuple[int, ...] = ()
    s2: float = np.nan
    n1: float = np.nan
    open_bound: float = _NEG_INF
    complete: bool = False


def _dense_literals(voc: PatternVocabulary, codes: np.ndarray) -> np.ndarray:
    """Bool masks (len(codes), M) of literal codes, from a cached dense copy of the matrix
    when it is small."""
    if voc.m * voc.c <= (1 << 26):
        dense = voc._cols.get("dense")
        if dense is None:
            dense = voc.ycsc.T.toarray().astype(bool)  # (C, M)
            voc._cols["dense"] = dense
        rows = dense[codes % voc.c]
        return rows ^ (codes >= voc.c)[:, None]
    return voc.literal_rows(codes)


@dataclass
class _Curve:
    """One unit's patterns sorted by mean (``us``, ``cs``) and the knapsack curve's points
    ``ce``, ``cn`` (M + 1,: point ``i`` after the first ``i`` patterns, ``ce`` with the
    point-biserial slack added), each pattern's position ``pos``, and a range-maximum table
    of ``ce`` (``table[k, i] = max(ce[i : i + 2**k])``)."""

    us: np.ndarray
    cs: np.ndarray
    ce: np.ndarray
    cn: np.ndarray
    pos: np.ndarray
    table: np.ndarray
    total: float
    slack: float

    def range_max(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``max(ce[a .. b])`` (inclusive, ``a <= b``)."""
        k = np.floor(np.log2(b - a + 1)).astype(np.int64)
        return np.maximum(self.table[k, a], self.table[k, b - (1 << k) + 1])


def _unit_curve(v: np.ndarray, counts: np.ndarray, sc: _Score) -> _Curve:
    u = sc.sign * (v - counts * sc.mu)
    order = np.argsort(-(u / counts))
    us, cs = u[order], counts[order]
    slack = 0.0 if sc.auroc else float(_pb_slack(u[None, :], 0.0, u.size)[0])
    ce = np.concatenate([[slack], slack + np.cumsum(us)])
    cn = np.concatenate([[0.0], np.cumsum(cs)])
    pos = np.empty(u.size, dtype=np.int64)
    pos[order] = np.arange(u.size)
    levels = [ce]
    while (1 << len(levels)) <= ce.size:
        half = 1 << (len(levels) - 1)
        levels.append(np.maximum(levels[-1][:-half], levels[-1][half:]))
    table = np.full((len(levels), ce.size), _NEG_INF)
    for k, lev in enumerate(levels):
        table[k, :lev.size] = lev
    return _Curve(us, cs, ce, cn, pos, table, float(u.sum()), slack)


def _concept_entries(voc: PatternVocabulary, cv: _Curve):
    """The defined concepts' patterns by position in the curve: (concepts, start of each
    concept's run, positions, running support and centred sum within the run)."""
    y = voc.ycsc
    conc = np.flatnonzero(voc.defined)
    sizes = np.diff(y.indptr)[conc]
    col = np.repeat(np.arange(conc.size), sizes)
    pos = cv.pos[np.concatenate([y.indices[y.indptr[c]:y.indptr[c + 1]] for c in conc])
                 if conc.size else np.zeros(0, dtype=np.int64)]
    order = np.lexsort((pos, col))
    pos = pos[order]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    run_n = _run_cumsum(cv.cs[pos], starts, sizes)
    run_e = _run_cumsum(cv.us[pos], starts, sizes)
    return conc, starts, sizes, pos, run_n, run_e


def _run_cumsum(x: np.ndarray, starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Cumulative sums restarting at each run (exact for integer-valued x)."""
    total = np.cumsum(x)
    before = np.repeat(total[starts] - x[starts], sizes) if x.size else total
    return total - before


def _subset_bounds(cv, sc, sd, thr, ent, n_f, e_f) -> np.ndarray:
    """Bound per concept on unions ``F | W`` with ``W`` inside the concept's patterns
    (``n_f``, ``e_f``: the forced set per concept): the knapsack over the run of the
    concept's patterns, exactly at its breakpoints, with the segments' cheap bounds refined
    where they matter (as in :func:`_prefix_bound`)."""
    conc, starts, sizes, pos, run_n, run_e = ent
    owner = np.repeat(np.arange(conc.size), sizes)
    n1, e1 = n_f[owner] + run_n, e_f[owner] + cv.slack + run_e
    best = sc.key_e(e_f + cv.slack, n_f, sd)
    if pos.size:
        np.maximum.at(best, owner, sc.key_e(e1, n1, sd))
    us, cs = cv.us[pos], cv.cs[pos]
    seg = cs >= 2
    crude = np.where(seg, sc.crude(np.maximum(e1 - us, e1), n1 - cs, n1, sd), _NEG_INF)
    refine = seg & (crude > np.maximum(best, thr)[owner])
    bound = best.copy()
    np.maximum.at(bound, owner[~refine], crude[~refine])
    if refine.any():
        i = np.flatnonzero(refine)
        kin = _interior(n1[i] - cs[i], e1[i] - us[i], us[i], cs[i], sc,
                        None if sd is None else np.full(i.size, sd))
        np.maximum.at(bound, owner[i], kin)
    return bound


class _OutOfTime(Exception):
    """The time budget ran out inside a unit's literal bounds."""


def _complement_bounds(cv, sc, sd, thr, ent, n_f, e_f, deadline=math.inf,
                       leaf: int = 16) -> np.ndarray:
    """Bound per concept on unions ``F | W`` with ``W`` outside the concept's patterns: the
    knapsack curve with the concept's patterns taken out is the unit's curve translated
    on each run of positions between them, so ranges of segments are bounded from the
    range-maximum table (:meth:`_Score.crude`) and split until short, then evaluated
    exactly; ranges that cannot beat ``thr`` (or the concept's best so far) stop. Raises
    :class:`_OutOfTime` past ``deadline``."""
    conc, starts, sizes, pos, run_n, run_e = ent
    m = cv.us.size
    best = sc.key_e(e_f + cv.slack, n_f, sd)
    bound = best.copy()
    # intervals between the concept's positions: before each, after the last
    owner = np.repeat(np.arange(conc.size), sizes + 1)
    first = np.concatenate([[0], np.cumsum(sizes + 1)[:-1]]).astype(np.int64)
    k = np.arange(owner.size) - first[owner]  # patterns of the concept before the interval
    idx = starts[owner] + k - 1
    prev = np.where(k > 0, pos[np.maximum(idx, 0)], -1)
    nxt = np.where(k < sizes[owner], pos[np.minimum(idx + 1, pos.size - 1)], m)
    a_n = np.where(k > 0, run_n[np.maximum(idx, 0)], 0.0)
    a_e = np.where(k > 0, run_e[np.maximum(idx, 0)], 0.0)
    i0, i1 = prev + 1, nxt - 1
    dn, de = n_f[owner] - a_n, e_f[owner] - a_e
    live = i0 <= i1
    node, i0, i1, dn, de = owner[live], i0[live], i1[live], dn[live], de[live]
    while node.size:
        if time.perf_counter() > deadline:
            raise _OutOfTime
        b = sc.crude(cv.range_max(i0, i1 + 1) + de, cv.cn[i0] + dn, cv.cn[i1 + 1] + dn, sd)
        keep = b > np.maximum(best[node], thr)
        np.maximum.at(bound, node[~keep], b[~keep])
        short = keep & (i1 - i0 < leaf)
        if short.any():
            rep, seg = _expand_ranges(i0[short], i1[short])
            nd, dns, des = node[short][rep], dn[short][rep], de[short][rep]
            e1, n1 = cv.ce[seg + 1] + des, cv.cn[seg + 1] + dns
            np.maximum.at(best, nd, sc.key_e(e1, n1, sd))
            e0, n0 = cv.ce[seg] + des, cv.cn[seg] + dns
            crude = np.where(cv.cs[seg] >= 2, sc.crude(np.maximum(e0, e1), n0, n1, sd),
                             _NEG_INF)
            inner = crude > np.maximum(best[nd], thr)
            np.maximum.at(bound, nd[~inner], crude[~inner])
            if inner.any():
                j = np.flatnonzero(inner)
                kin = _interior(n0[j], e0[j], cv.us[seg[j]], cv.cs[seg[j]], sc,
                                None if sd is None else np.full(j.size, sd))
                np.maximum.at(best, nd[j], kin)
        split = keep & ~short
        mid = (i0[split] + i1[split]) // 2
        node = np.concatenate([node[split], node[split]])
        dn, de = np.concatenate([dn[split], dn[split]]), np.concatenate([de[split], de[split]])
        i0, i1 = np.concatenate([i0[split], mid + 1]), np.concatenate([mid, i1[split]])
    return np.maximum(bound, best)


def _expand_ranges(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (range r, integer in ``a[r] .. b[r]``)."""
    sizes = b - a + 1
    rep = np.repeat(np.arange(a.size), sizes)
    return rep, a[rep] + np.arange(rep.size) - np.repeat(np.cumsum(sizes) - sizes, sizes)


def _literal_nodes(voc, v, counts, sc, sd, thr, codes, deadline=math.inf):
    """Bounds (2, L) of the nodes ``(x, AND)`` (formulas inside literal ``x``: ``g & x``) and
    ``(x, OR)`` (formulas containing it: ``g | x``) for the literal codes ``codes``.

    With ``x = c`` a concept, ``g & c`` are unions inside ``c``'s patterns and ``g | ~c``
    the unions of ``~c`` with them (:func:`_subset_bounds`); ``g | c`` and ``g & ~c`` are
    unions of ``c`` (or of nothing) with patterns outside ``c``
    (:func:`_complement_bounds`). Both cost about the concept's patterns, not all M."""
    cv = _unit_curve(v, counts, sc)
    ent = _concept_entries(voc, cv)
    conc = ent[0]
    n_c = np.zeros(conc.size)
    e_c = np.zeros(conc.size)
    if ent[3].size:
        last = ent[1] + ent[2] - 1
        n_c, e_c = ent[4][last], ent[5][last]
    zero = np.zeros(conc.size)
    n = sc.n
    fam = {  # (op, negated literal): bounds per defined concept
        (0, False): _subset_bounds(cv, sc, sd, thr, ent, zero, zero),
        (1, True): _subset_bounds(cv, sc, sd, thr, ent, n - n_c, cv.total - e_c),
        (1, False): _complement_bounds(cv, sc, sd, thr, ent, n_c, e_c, deadline),
        (0, True): _complement_bounds(cv, sc, sd, thr, ent, zero, zero, deadline),
    }
    where = np.full(voc.c, -1, dtype=np.int64)
    where[conc] = np.arange(conc.size)
    j = where[codes % voc.c]
    neg = codes >= voc.c
    out = np.full((2, codes.size), _NEG_INF)
    for op in (0, 1):
        out[op] = np.where(neg, fam[(op, True)][j], fam[(op, False)][j])
    return out


def _literal_nodes_dense(voc, v, counts, sc, sd, thr, codes):
    """:func:`_literal_nodes` by dense masks over all patterns (a slower reference)."""
    u = sc.sign * (v - counts * sc.mu)
    order = np.argsort(-(u / counts), kind="stable")
    us, cs = u[order], counts[order]
    slack = None if sc.auroc else _pb_slack(u[None, :], 0.0, voc.m)
    out = np.full((2, codes.size), _NEG_INF)
    step = max(1, _BLOCK_ELEMS // (4 * voc.m))
    for s in range(0, codes.size, step):
        x = _dense_literals(voc, codes[s:s + step])[:, order]
        rows = x.shape[0]
        sl = None if slack is None else np.broadcast_to(slack, (rows,))
        zero = np.zeros(rows)
        out[0, s:s + rows] = _prefix_bound(us * x, cs * x, zero, zero, sc, sd, sl, thr)[0]
        out[1, s:s + rows] = _prefix_bound(us * ~x, cs * ~x, (cs * x).sum(1), (us * x).sum(1),
                                           sc, sd, sl, thr)[0]
    return out


def _search_nodes(voc, v, counts, sc, sd, state: _UnitState, nodes, deadline) -> None:
    """Solve the open nodes ``(code, op, bound)`` best bound first: node ``(x, op)`` holds
    the formulas ``g op x``, i.e. ``F | (Z & g)`` with ``F, Z = {}, x`` (AND) or
    ``x, ~x`` (OR), which :func:`_solve_pairs` searches exactly for ``g`` of at most two
    literals. Stops at ``deadline``; leaves the largest unexplored bound in the state."""
    codes, opers, bounds = nodes
    done = 0
    while done < codes.size:
        live = bounds[done:] > state.thr + state.tol
        codes, opers, bounds = (np.concatenate([x[:done], x[done:][live]])
                                for x in (codes, opers, bounds))
        if done >= codes.size or time.perf_counter() > deadline:
            break
        sl = slice(done, min(codes.size, done + 8))
        x = _dense_literals(voc, codes[sl]).T  # (M, J)
        z = np.where(opers[sl] == 1, ~x, x)
        f = np.where(opers[sl] == 1, x, False)
        bt = _Batch(v[:, None] * z, counts[:, None] * z, v @ f, counts @ f,
                    None if sd is None else np.full(z.shape[1], sd),
                    np.full(z.shape[1], state.thr))
        a = _solve_pairs(voc, bt, sc, 1).arrays()
        if a["key"].size and a["key"].max() > state.thr:
            r = int(np.lexsort((a["order"], -a["key"]))[0])
            node = int(a["prob"][r]) + sl.start
            x3, op3 = int(codes[node]), int(opers[node])
            if a["l2"][r] >= 0:
                state.lits, state.ops = (int(a["l1"][r]), int(a["l2"][r]), x3), (
                    0, int(a["op"][r]), op3)
            else:
                state.lits, state.ops = (int(a["l1"][r]), x3), (0, op3)
            state.thr, state.s2, state.n1 = float(a["key"][r]), float(a["s"][r]), float(
                a["n"][r])
        done = sl.stop
    rest = bounds[done:]
    state.complete = rest.size == 0 or bool(np.all(rest <= state.thr + state.tol))
    state.open_bound = float(rest.max()) if rest.size else _NEG_INF


def _certify_unit(voc, v, counts, sc, sd, state: _UnitState, deadline) -> int:
    """Branch-and-bound of one unit past its ceiling; returns the stage reached."""
    codes = np.flatnonzero(np.concatenate([voc.defined, voc.defined]))
    try:
        nb = _literal_nodes(voc, v, counts, sc, sd, state.thr, codes, deadline)
    except _OutOfTime:
        return 0  # not reached: the ceiling stays the bound
    op, idx = np.nonzero(nb > state.thr + state.tol)
    if idx.size == 0:
        state.complete = True
        return 2
    order = np.argsort(-nb[op, idx], kind="stable")
    _search_nodes(voc, v, counts, sc, sd, state,
                  (codes[idx][order], op[order], nb[op, idx][order]), deadline)
    return 3 if state.complete else 4


def branch_and_bound_length3(values, counts, matrix, n_samples: int, incumbent, *,
                             min_fraction: float = 0.0, max_fraction: float = 0.5,
                             mode: str = "positive", metric: str = "auroc", sd=None,
                             time_budget: float = 10.0) -> Length3Certificate:
    """Certify, unit by unit, that no formula of at most three literals beats an incumbent.

    Parameters
    ----------
    values, counts, matrix, n_samples, min_fraction, max_fraction, mode, metric, sd
        As in :func:`optimal_length2`.
    incumbent : array, shape (K,)
        Each unit's best known score (AUROC or r of e.g. the beam's best formula; NaN: none).
    time_budget : float, default 10
        Seconds for all units together (the ceilings are always computed); units not
        reached keep the ceiling as their bound.

    Returns
    -------
    Length3Certificate

    Notes
    -----
    The grammar's formulas ``(l1 op2 l2) op3 l3`` (and the shorter ones, ``l1 = l2`` or
    ``l2 = l3``) are searched by their last literal: ``g & x`` lies inside ``x``, ``g | x``
    contains ``x``. Stage 1: if the ceiling (any union) does not beat the incumbent, the unit
    is certified. Stage 2: for each literal ``x`` the knapsack bound restricted to subsets of
    ``x`` (or to supersets of ``x``) bounds every ``g & x`` (``g | x``); nodes that cannot
    beat the incumbent are closed. Stage 3: the open nodes, best bound first, are solved
    exactly: ``g op x = F | (Z & g)`` (``F, Z = {}, x`` or ``x, ~x``) is the length-2 problem
    restricted to the patterns of ``Z`` (:func:`optimal_length2`'s search, with its own
    pruning), and each improvement raises the incumbent. A unit is certified when every node
    is closed; otherwise its bound is the largest bound of the nodes left open (or of the
    ceiling, for units not reached). Units are taken in order of their gap (ceiling minus
    incumbent), smallest first. Point-biserial bounds within 1e-9 of the incumbent count as
    closed (their float sums carry room for rounding).
    """
    values, counts, n, sd, sc = _check_common(values, counts, n_samples, min_fraction,
                                              max_fraction, mode, metric, sd)
    budget = check_interval("time_budget", time_budget, 0.0, low_open=True)
    t0 = time.perf_counter()
    deadline = t0 + budget
    k = values.shape[1]
    voc = _as_vocabulary(matrix, counts, n)
    thr = _key_of_value(incumbent, sc, k)
    tol = 0.0 if sc.auroc else _PB_TOL
    ceil_key = _ceiling_keys(values, counts, sc, sd)[0]
    done = ceil_key <= thr + tol
    cert = Length3Certificate(done, np.where(done, np.maximum(thr, ceil_key), ceil_key),
                              thr.copy(), np.full((k, 3), -1, dtype=np.int64),
                              np.zeros((k, 3), dtype=np.int8), np.zeros(k, dtype=np.int64),
                              np.full(k, np.nan), np.full(k, np.nan), done.astype(np.int8))
    todo = np.flatnonzero(~cert.certified)
    for u in todo[np.argsort(ceil_key[todo] - thr[todo], kind="stable")]:
        if time.perf_counter() > deadline:
            break
        state = _UnitState(float(thr[u]), tol)
        cert.stage[u] = _certify_unit(voc, values[:, u], counts, sc,
                                      None if sd is None else float(sd[u]), state, deadline)
        if cert.stage[u]:
            _store_state(cert, u, state)
    cert.bound = _user_value(cert.bound, sc)
    cert.value = _user_value(cert.value, sc)
    cert.seconds = time.perf_counter() - t0
    return cert


def _store_state(cert: Length3Certificate, u: int, state: _UnitState) -> None:
    cert.certified[u] = state.complete
    cert.value[u] = state.thr
    cert.bound[u] = max(state.thr, state.open_bound)
    if state.lits:
        ln = len(state.lits)
        cert.lits[u, :ln], cert.ops[u, :ln], cert.length[u] = state.lits, state.ops, ln
        cert.s2[u], cert.n1[u] = state.s2, state.n1
