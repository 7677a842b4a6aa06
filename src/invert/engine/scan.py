"""The candidate scan of one beam step: every ``entry op literal`` of a block of units scored
from the entries' masked sums over label patterns, in cache-sized slices of concepts, and
only the candidates that can enter a beam kept (their key reaches a lower bound on the
beam's last key).

The four candidate kinds of a beam entry ``b`` and a concept ``c`` (literal order: ``c``
then ``~c``; AND before OR) follow from ``S(b & c)``, its support ``n(b & c)`` and the
literals' sums::

    b & c:   S(b & c)
    b & ~c:  S(b) - S(b & c)
    b | c:   (S(b) + S(c)) - S(b & c)
    b | ~c:  (S(b) + S(~c)) - S(b & ~c)

for rank sums and supports alike (the order of operations is fixed: the point-biserial
search sums floats). The AUROC key is ``(S - n (n + 1)) / (n (N - n))`` (twice the AUROC,
exactly rounded from exact integers, so ties stay ties); the point-biserial key is
``S / (sd sqrt(n (N - n)))``; the top-F1 key (``S`` counts top samples, ``T`` the size of
the unit's top set) is ``2 S / (n + T)``, exactly rounded too.

The same code runs on numpy arrays (CPU) and torch tensors (GPUs, ``kernel="torch"``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__: list[str] = []

#: Elements (entries x concepts of a block) scored at once: the slice's few float64
#: buffers stay in the CPU's L2 and L3 caches, and the operations are long enough that
#: their Python overhead (which holds the GIL while other workers wait) is small. On the
#: paper-scale layer, 2 threads, 2**16 took 1.07-1.21 s where 2**15 took 1.19-1.47 s.
SCAN_ELEMENTS = 1 << 16


class _Numpy:
    """Array operations on numpy arrays (the CPU kernel)."""

    add, sub, mul, div, full_like = np.add, np.subtract, np.multiply, np.divide, np.full_like
    copy = np.copy
    ge, le, ne, minimum, where = (np.greater_equal, np.less_equal, np.not_equal, np.minimum,
                                  np.where)

    @staticmethod
    def empty(shape: tuple[int, ...], like: Any, dtype: Any = None) -> Any:
        return np.empty(shape, dtype=np.float64 if dtype is None else dtype)

    @staticmethod
    def rsub(scalar: float, x: Any, out: Any) -> Any:
        return np.subtract(scalar, x, out=out)

    @staticmethod
    def sqrt(x: Any, out: Any) -> Any:
        # torch's float64 sqrt, which is not always numpy's (the keys are the torch path's)
        torch.sqrt(torch.from_numpy(x), out=torch.from_numpy(out))
        return out

    count_nonzero, cat = np.count_nonzero, np.concatenate

    @staticmethod
    def nonzero(x: Any) -> tuple[Any, ...]:
        return np.unravel_index(np.flatnonzero(x), x.shape)

    @staticmethod
    def as_torch(x: Any) -> torch.Tensor:
        return torch.from_numpy(x)

    @staticmethod
    def from_torch(x: torch.Tensor) -> Any:
        return x.numpy()


class _Torch:
    """The same operations on torch tensors (any device)."""

    add, sub, mul, div, sqrt = torch.add, torch.sub, torch.mul, torch.div, torch.sqrt
    full_like, copy = torch.full_like, torch.clone
    ge, le, ne, minimum, where = torch.ge, torch.le, torch.ne, torch.minimum, torch.where

    @staticmethod
    def empty(shape: tuple[int, ...], like: Any, dtype: Any = None) -> Any:
        return torch.empty(shape, dtype=torch.float64 if dtype is None else torch.bool,
                           device=like.device)

    @staticmethod
    def rsub(scalar: float, x: Any, out: Any) -> Any:
        torch.mul(x, -1.0, out=out)
        out += scalar
        return out

    count_nonzero, cat = torch.count_nonzero, torch.cat

    @staticmethod
    def nonzero(x: Any) -> tuple[Any, ...]:
        return torch.nonzero(x, as_tuple=True)

    @staticmethod
    def as_torch(x: Any) -> torch.Tensor:
        return x

    @staticmethod
    def from_torch(x: torch.Tensor) -> Any:
        return x


def array_ops(x: Any) -> type[_Numpy] | type[_Torch]:
    """The operations for arrays like ``x``."""
    return _Torch if isinstance(x, torch.Tensor) else _Numpy


@dataclass
class ScanInputs:
    """What the scan of one step needs, for ``k`` units and ``P`` parent slots.

    ``q``: (nw, C, P, k) masked sums ``S(b & c)``, ``n(b & c)`` (and hashes) per concept;
    ``sb``, ``nb``: (P, k) the parents' sums and supports (NaN for empty slots);
    ``s_pos``, ``s_neg``: (C, k) the literals' sums ``S(c)``, ``S(~c)``; ``n_pos``,
    ``n_neg``: (C,) their supports; ``thr_in``, ``thr_out``: (k,) the bounds in key
    units for candidates within / outside the support limits ``lo <= n <= hi``
    (``thr_out`` None: only those within are wanted; ``-inf``: keep every defined
    candidate; with ``relative_min`` ``lo`` is per unit, (k,)); ``sd``: (k,) the units'
    standard deviations (point-biserial only); ``top``: (k,) the sizes of their top sets
    (top F1 only);
    ``dedupe``: drop candidates equal to their parent (``n == nb``); ``want_in``,
    ``want_out``: the entries the step selects on each side (for rising bounds);
    ``ext_ok`` (k, 2C) and ``n_lit`` (2C,): which literals extend each unit's formulas and
    their supports (torch), so that only candidates the step may select are kept."""

    q: Any
    sb: Any
    nb: Any
    s_pos: Any
    s_neg: Any
    n_pos: Any
    n_neg: Any
    thr_in: Any
    thr_out: Any
    lo: float
    hi: float
    n: int
    negative: bool
    dedupe: bool
    sd: Any = None
    want_in: int = 0
    want_out: int = 0
    ext_ok: torch.Tensor | None = None
    n_lit: torch.Tensor | None = None
    top: Any = None


@dataclass
class Found:
    """Candidates of one step whose key reaches the bound: their kind (0 ``b & c``,
    1 ``b & ~c``, 2 ``b | c``, 3 ``b | ~c``), concept, parent slot and unit (row of the
    block), as torch int64 vectors."""

    kind: torch.Tensor
    concept: torch.Tensor
    slot: torch.Tensor
    row: torch.Tensor


def scan(inp: ScanInputs, elements: int = SCAN_ELEMENTS) -> Found:
    """The candidates whose key reaches their bound (NaN keys, undefined candidates, never
    do), in slices of concepts of about ``elements`` (k x P x concepts) entries. The bounds
    rise as candidates are kept (:class:`_Kept`)."""
    xp = array_ops(inp.q)
    _, c, p, k = inp.q.shape
    width = max(1, elements // max(1, k * p))
    shape = (min(width, c), p, k)
    bufs = [xp.empty(shape, inp.q) for _ in range(6)] + [
        xp.empty(shape, inp.q, dtype=bool) for _ in range(2)]
    kept = _Kept(inp)
    with np.errstate(divide="ignore", invalid="ignore"):  # undefined keys are NaN
        _scan_slices(xp, inp, width, bufs, kept)
    return kept.found()


def _scan_slices(xp: Any, inp: ScanInputs, width: int, bufs: list[Any], kept: _Kept) -> None:
    """The loop of :func:`scan` over slices of ``width`` concepts."""
    c = inp.q.shape[1]
    sb, nb = inp.sb[None], inp.nb[None]
    keep = _Keep(xp, inp, nb, kept)
    for c0 in range(0, c, width):
        c1 = min(c, c0 + width)
        w = c1 - c0
        sa, na = inp.q[0, c0:c1], inp.q[1, c0:c1]
        s1, n1, s, nn, u, d, g, g2 = (b[:w] for b in bufs)
        keep.bufs = (u, d, g, g2)
        keep.thr = kept.lower(xp)
        keep(sa, na, 0, c0)
        keep(xp.sub(sb, sa, out=s1), xp.sub(nb, na, out=n1), 1, c0)
        xp.add(sb, inp.s_pos[c0:c1, None, :], out=s)
        s -= sa
        xp.add(nb, inp.n_pos[c0:c1][:, None, None], out=nn)
        nn -= na
        keep(s, nn, 2, c0)
        xp.add(sb, inp.s_neg[c0:c1, None, :], out=s)
        s -= s1
        xp.add(nb, inp.n_neg[c0:c1][:, None, None], out=nn)
        nn -= n1
        keep(s, nn, 3, c0)
        kept.tighten()


class _Keep:
    """Scores one candidate kind of a slice and hands those that reach the lower of their
    unit's bounds to :class:`_Kept`."""

    def __init__(self, xp: Any, inp: ScanInputs, nb: Any, kept: _Kept):
        self.xp, self.inp, self.nb, self.kept = xp, inp, nb, kept
        self.sd = inp.sd[None, None, :] if inp.sd is not None else None
        self.top = inp.top[None, None, :] if inp.top is not None else None
        self.bufs: tuple[Any, ...] = ()
        self.thr: Any = None

    def __call__(self, s: Any, n: Any, kind: int, c0: int) -> None:
        """Score ``s``, ``n`` (w, P, k) and keep the candidates that reach the bound."""
        xp, inp = self.xp, self.inp
        u, d, g, g2 = self.bufs
        xp.rsub(float(inp.n), n, out=d)  # N - n
        d *= n
        if self.top is not None:  # 2 S / (n + T): the F1 against the top set
            xp.add(n, self.top, out=u)
            xp.mul(s, 2.0, out=d)
            xp.div(d, u, out=u)
        elif self.sd is None:  # (S - n (n + 1)) / (n (N - n)): twice the AUROC
            xp.add(n, 1.0, out=u)
            u *= n
            xp.sub(s, u, out=u)
            u /= d
        else:  # S / (sd sqrt(n (N - n))), the operations of the point-biserial metric
            xp.sqrt(d, out=d)
            xp.mul(self.sd, d, out=d)
            xp.div(s, d, out=u)
        if inp.negative:  # key = -value >= thr  <=>  value <= -thr
            xp.le(u, -self.thr, out=g)
        else:
            xp.ge(u, self.thr, out=g)
        if inp.dedupe:  # b op l equal to b
            g &= xp.ne(n, self.nb, out=g2)
        if not xp.count_nonzero(g):
            return
        idx = xp.nonzero(g)
        key = -u[idx] if inp.negative else u[idx]
        self.kept.add(xp, kind, idx[0] + c0, idx[1], idx[2], key, n[idx])


class _Kept:
    """The candidates kept so far and each unit's bounds (key units) within and outside
    the support limits, which rise as candidates come: a unit with ``want`` kept
    candidates of pairwise different keys within (outside) the limits has ``want``
    different formulas there (equal formulas have equal exact AUROC keys), so the
    ``want``-th largest distinct key is a bound; without dedupe, the ``want``-th largest
    key. Not for the point-biserial search with dedupe (float keys of one formula may
    differ). Arrays are those of the scan (numpy on CPU)."""

    def __init__(self, inp: ScanInputs):
        xp = self.xp = array_ops(inp.q)
        self.inp = inp
        self.thr_in = xp.copy(inp.thr_in)
        self.thr_out = None if inp.thr_out is None else xp.copy(inp.thr_out)
        self.k = int(self.thr_in.shape[0])
        self.ext_ok = None if inp.ext_ok is None else xp.from_torch(inp.ext_ok)
        self.n_lit = None if inp.n_lit is None else xp.from_torch(inp.n_lit)
        self.parts: list[list[Any]] = []
        self.pending = 0
        self.can_tighten = inp.sd is None or not inp.dedupe
        self.every = 2 * self.k * (inp.want_in + inp.want_out) + 256

    def lower(self, xp: Any) -> Any:
        """The lower of each unit's bounds, shaped (1, 1, k) for the scan's arrays."""
        t = self.thr_in if self.thr_out is None else xp.minimum(self.thr_in, self.thr_out)
        return t.reshape(1, 1, -1)

    def add(self, xp: Any, kind: int, conc: Any, slot: Any, row: Any, key: Any, n: Any
            ) -> None:
        """Keep the candidates (of one kind) whose key reaches their side's bound and that
        the step may select."""
        inp = self.inp
        lo = inp.lo if isinstance(inp.lo, float) else inp.lo[row]
        inside = (n >= lo) & (n <= inp.hi)
        if self.thr_out is None:
            ok = inside & (key >= self.thr_in[row])
        else:
            ok = key >= xp.where(inside, self.thr_in[row], self.thr_out[row])
        if inp.top is not None:  # the F1 key is finite where the formula is undefined
            ok &= (n > 0) & (n < inp.n)
        if self.ext_ok is not None:  # the literal extends formulas (with dedupe: the
            lit = conc + inp.s_pos.shape[0] if kind in (1, 3) else conc  # result is new)
            ok &= self.ext_ok[row, lit]
            if inp.dedupe and self.n_lit is not None:
                ok &= n != self.n_lit[lit]
        cnt = int(xp.count_nonzero(ok))
        if not cnt:
            return
        self.parts.append([xp.full_like(row[ok], kind), conc[ok], slot[ok], row[ok],
                           key[ok], inside[ok]])
        self.pending += cnt

    def tighten(self) -> None:
        """Raise the bounds from the kept candidates and drop those below, when enough
        have come since the last time."""
        if not self.can_tighten or self.pending <= self.every:
            return
        xp = self.xp
        cols = self._merged()
        _, _, _, row, key, inside = cols
        row_t, key_t, in_t = (xp.as_torch(x) for x in (row, key, inside))
        for side, want, thr in ((True, self.inp.want_in, self.thr_in),
                                (False, self.inp.want_out, self.thr_out)):
            if thr is None or not want:
                continue
            sel = in_t if side else ~in_t
            kth = _kth_key(row_t[sel], key_t[sel], want, self.k, self.inp.dedupe)
            thr_t = xp.as_torch(thr)
            thr_t.copy_(torch.maximum(thr_t, kth))
        out = self.thr_out if self.thr_out is not None else self.thr_in + math.inf
        ok = key >= xp.where(inside, self.thr_in[row], out[row])
        self.parts = [[x[ok] for x in cols]]
        self.pending = 0

    def _merged(self) -> list[Any]:
        cols = [self.xp.cat([p[j] for p in self.parts]) for j in range(6)]
        self.parts = [cols]
        return cols

    def found(self) -> Found:
        """Every candidate kept, as one :class:`Found` (torch, on the scan's device)."""
        if not self.parts:
            dev = self.inp.q.device if isinstance(self.inp.q, torch.Tensor) else "cpu"
            empty = torch.zeros(0, dtype=torch.int64, device=dev)
            return Found(empty, empty, empty, empty)
        kind, conc, slot, row, _, _ = (self.xp.as_torch(x) for x in self._merged())
        return Found(*(x.to(torch.int64) for x in (kind, conc, slot, row)))


def _kth_key(row: torch.Tensor, key: torch.Tensor, want: int, k: int, distinct: bool
             ) -> torch.Tensor:
    """Each row's ``want``-th largest key (-inf where a row has fewer): (k,); with
    ``distinct``, among its different key values."""
    out = torch.full((k,), -math.inf, dtype=torch.float64, device=key.device)
    if key.numel() == 0:
        return out
    order = torch.argsort(-key, stable=True)
    order = order[torch.argsort(row[order], stable=True)]
    r, v = row[order], key[order]
    new_row = torch.ones_like(r, dtype=torch.bool)
    new_row[1:] = r[1:] != r[:-1]
    step = new_row.clone()
    if distinct:
        step[1:] |= v[1:] != v[:-1]
    else:
        step[:] = True
    count = torch.cumsum(step.to(torch.int64), 0)
    first = torch.nonzero(new_row).squeeze(1)
    start = torch.zeros_like(count)
    start[first] = count[first] - 1
    start = torch.cummax(start, 0).values
    rank = count - start  # 1 for the row's largest (distinct) key
    hit = step & (rank == want)
    out[r[hit]] = v[hit]
    return out
