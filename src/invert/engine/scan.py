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
``S / (sd sqrt(n (N - n)))``.

The same code runs on numpy arrays (CPU) and torch tensors (GPUs, ``kernel="torch"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__: list[str] = []

#: Elements (entries x concepts of a block) scored at once: the slice's few float64
#: buffers stay in the CPU's L2 cache.
SCAN_ELEMENTS = 1 << 14


class _Numpy:
    """Array operations on numpy arrays (the CPU kernel)."""

    add, sub, mul, div = np.add, np.subtract, np.multiply, np.divide
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


class _Torch:
    """The same operations on torch tensors (any device)."""

    add, sub, mul, div, sqrt = torch.add, torch.sub, torch.mul, torch.div, torch.sqrt
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
    candidate); ``sd``: (k,) the units' standard deviations (point-biserial only);
    ``dedupe``: drop candidates equal to their parent (``n == nb``)."""

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
    do), in slices of concepts of about ``elements`` (k x P x concepts) entries."""
    xp = array_ops(inp.q)
    _, c, p, k = inp.q.shape
    width = max(1, elements // max(1, k * p))
    shape = (min(width, c), p, k)
    bufs = [xp.empty(shape, inp.q) for _ in range(6)] + [
        xp.empty(shape, inp.q, dtype=bool) for _ in range(2)]
    parts: list[list[Any]] = [[], [], [], []]
    with np.errstate(divide="ignore", invalid="ignore"):  # undefined keys are NaN
        _scan_slices(xp, inp, width, bufs, parts)
    return _found(parts, inp.q)


def _scan_slices(xp: Any, inp: ScanInputs, width: int, bufs: list[Any],
                 parts: list[list[Any]]) -> None:
    """The loop of :func:`scan` over slices of ``width`` concepts."""
    c, k = inp.q.shape[1], inp.q.shape[3]
    sb, nb = inp.sb[None], inp.nb[None]
    thr = inp.thr_in if inp.thr_out is None else xp.minimum(inp.thr_in, inp.thr_out)
    keep = _Keep(xp, inp, thr.reshape(1, 1, k), nb)
    for c0 in range(0, c, width):
        c1 = min(c, c0 + width)
        w = c1 - c0
        sa, na = inp.q[0, c0:c1], inp.q[1, c0:c1]
        s1, n1, s, nn, u, d, g, g2 = (b[:w] for b in bufs)
        keep.bufs = (u, d, g, g2)
        keep(sa, na, parts[0], c0)
        keep(xp.sub(sb, sa, out=s1), xp.sub(nb, na, out=n1), parts[1], c0)
        xp.add(sb, inp.s_pos[c0:c1, None, :], out=s)
        s -= sa
        xp.add(nb, inp.n_pos[c0:c1][:, None, None], out=nn)
        nn -= na
        keep(s, nn, parts[2], c0)
        xp.add(sb, inp.s_neg[c0:c1, None, :], out=s)
        s -= s1
        xp.add(nb, inp.n_neg[c0:c1][:, None, None], out=nn)
        nn -= n1
        keep(s, nn, parts[3], c0)


class _Keep:
    """Scores one candidate kind of a slice and keeps those that reach their bound."""

    def __init__(self, xp: Any, inp: ScanInputs, thr: Any, nb: Any):
        self.xp, self.inp, self.thr, self.nb = xp, inp, thr, nb
        self.sd = inp.sd[None, None, :] if inp.sd is not None else None
        self.split = inp.thr_out is not None and bool((inp.thr_in != inp.thr_out).any())
        self.bufs: tuple[Any, ...] = ()

    def __call__(self, s: Any, n: Any, out: list[Any], c0: int) -> None:
        """Score ``s``, ``n`` (w, P, k) and append the (concept, slot, row) of the kept
        candidates to ``out``."""
        xp, inp = self.xp, self.inp
        u, d, g, g2 = self.bufs
        xp.rsub(float(inp.n), n, out=d)  # N - n
        d *= n
        if self.sd is None:  # (S - n (n + 1)) / (n (N - n)): twice the AUROC
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
        if self.split:
            idx = self._route(idx, u[idx], n[idx])
        if idx[0].shape[0]:
            out.append((idx[0] + c0, idx[1], idx[2]))

    def _route(self, idx: tuple[Any, ...], u: Any, n: Any) -> tuple[Any, ...]:
        """Of the candidates ``idx`` that reach the lower bound, those that reach the bound
        of their side of the support limits."""
        xp, inp = self.xp, self.inp
        rows = idx[2]
        inside = (n >= inp.lo) & (n <= inp.hi)
        thr = xp.where(inside, inp.thr_in[rows], inp.thr_out[rows])
        ok = (u <= -thr) if inp.negative else (u >= thr)
        return tuple(i[ok] for i in idx)


def _found(parts: list[list[Any]], like: Any) -> Found:
    """The kept candidates of all slices as one :class:`Found`."""
    xp = array_ops(like)
    dev = like.device if isinstance(like, torch.Tensor) else torch.device("cpu")
    sizes = [sum(int(t[0].shape[0]) for t in chunks) for chunks in parts]
    if not sum(sizes):
        empty = torch.zeros(0, dtype=torch.int64, device=dev)
        return Found(empty, empty, empty, empty)
    cols = [xp.as_torch(xp.cat([t[j] for chunks in parts for t in chunks])).to(torch.int64)
            for j in range(3)]
    kind = torch.repeat_interleave(torch.arange(4, device=dev),
                                   torch.tensor(sizes, device=dev))
    return Found(kind, *cols)
