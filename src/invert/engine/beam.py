"""The beam search over formulas for one block of units (all tensors on one device).

Every candidate of a step is scored, for every unit of the block, from the beam entries'
masked sums over label patterns: ``S(b & c) = (r * b) . y_c``, ``S(b & ~c) = S(b) -
S(b & c)``, ``S(b | l) = S(b) + S(l) - S(b & l)``, and the same for counts (and support
hashes), so that ``AUROC = (S - n1 (n1 + 1) / 2) / (n1 n0)`` is exact. The beam is kept with
a deterministic, stable top-k.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from .params import _EXPLORE_FACTOR, SearchParams
from .patterns import _ConceptOp
from .scan import Found, ScanInputs, scan

__all__: list[str] = []

_NEG_INF = -math.inf
#: Extension literals per unit whose candidates are selected exactly before the scan, for
#: a tight lower bound on the keys that enter the beam.
PROBE_LITERALS = 16

#: ``tiepos(rows, cols)``: the position that breaks ties among equal keys (lower first).
TiePos = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------------------- selection


def _topk_stable(key: torch.Tensor, t: int, tiepos: TiePos | None = None) -> torch.Tensor:
    """Indices of the ``t`` largest finite keys per row; -1 pads.

    Ordered by key descending, then by ``tiepos(rows, cols)`` (default: the column)
    ascending. Returns (rows, t) int64.
    """
    rows, width = key.shape
    t_eff = min(t, width)
    out = torch.full((rows, t), -1, dtype=torch.int64, device=key.device)
    if t_eff == 0 or rows == 0:
        return out
    thr = torch.topk(key, t_eff, dim=1, sorted=True).values[:, -1:]
    cand = (key >= thr) & (key > _NEG_INF)
    r, c = torch.nonzero(cand, as_tuple=True)
    if r.numel() == 0:
        return out
    v = key[r, c]
    pos = c if tiepos is None else tiepos(r, c)
    perm = torch.argsort(pos, stable=True)
    perm = perm[torch.argsort(-v[perm], stable=True)]
    perm = perm[torch.argsort(r[perm], stable=True)]
    r, c = r[perm], c[perm]
    counts = torch.bincount(r, minlength=rows)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(r.numel(), device=key.device) - starts[r]
    keep = rank < t
    out[r[keep], rank[keep]] = c[keep]
    return out


def _first_occurrence(sig: torch.Tensor, valid: torch.Tensor, prior: torch.Tensor | None,
                      prior_valid: torch.Tensor | None) -> torch.Tensor:
    """Per row, True where entry j is valid and no earlier entry of the row (nor any valid
    ``prior`` entry) has the same signature. ``sig``: (rows, T, S); ``prior``: (rows, P, S).

    Sort-based: entries are ordered by (row, signature, position) with successive stable
    sorts, so equal signatures are adjacent and the earliest comes first."""
    rows, t, _ = sig.shape
    dev = sig.device
    pos = torch.arange(t, device=dev).expand(rows, t)
    if prior is not None and prior_valid is not None:
        sig = torch.cat([prior, sig], dim=1)
        valid = torch.cat([prior_valid, valid], dim=1)
        pos = torch.cat([torch.full(prior.shape[:2], -1, device=dev, dtype=pos.dtype), pos],
                        dim=1)
    width = sig.shape[1]
    row = torch.arange(rows, device=dev).unsqueeze(1).expand(rows, width).reshape(-1)
    flat = sig.reshape(-1, sig.shape[2])
    v = valid.reshape(-1)
    order = torch.argsort(pos.reshape(-1), stable=True)
    for j in range(flat.shape[1] - 1, -1, -1):
        order = order[torch.argsort(flat[order, j], stable=True)]
    order = order[torch.argsort(row[order], stable=True)]
    order = order[v[order]]  # valid entries only, still grouped
    fs, fr = flat[order], row[order]
    same = torch.zeros(order.numel(), dtype=torch.bool, device=dev)
    if order.numel() > 1:
        same[1:] = (fs[1:] == fs[:-1]).all(-1) & (fr[1:] == fr[:-1])
    # a group is a duplicate from its second member on; prior entries (pos -1) come first
    keep = torch.zeros(rows * width, dtype=torch.bool, device=dev)
    keep[order] = ~same
    keep = keep.view(rows, width)
    if prior is not None:
        keep = keep[:, prior.shape[1]:]
    return keep


def _first_of_each(sig: torch.Tensor) -> torch.Tensor:
    """True at the first row of ``sig`` (P, S) among the rows equal to it."""
    p = sig.shape[0]
    order = torch.arange(p, device=sig.device)
    for j in range(sig.shape[1] - 1, -1, -1):  # stable sorts: equal rows keep their order
        order = order[torch.argsort(sig[order, j], stable=True)]
    fs = sig[order]
    same = torch.zeros(p, dtype=torch.bool, device=sig.device)
    if p > 1:
        same[1:] = (fs[1:] == fs[:-1]).all(-1)
    keep = torch.empty(p, dtype=torch.bool, device=sig.device)
    keep[order] = ~same
    return keep


# ----------------------------------------------------------------------------- the beam


@dataclass
class _Beam:
    """Formulas of each unit of a block: (k, W) entries, best first."""

    lits: torch.Tensor  # (k, W, L) int64 literal codes, -1 unused
    ops: torch.Tensor  # (k, W, L) int8 op before literal j (0 AND, 1 OR)
    length: torch.Tensor  # (k, W) int64 number of literals
    mask: torch.Tensor  # (k, W, M) bool
    s2: torch.Tensor  # (k, W) float64 doubled rank sum
    n1: torch.Tensor  # (k, W) float64 support
    h: torch.Tensor  # (k, W) float64 hash of the support (exact integer)
    valid: torch.Tensor  # (k, W) bool
    fresh: torch.Tensor  # (k, W) bool: created at the last depth (not yet extended)

    _FIELDS: ClassVar[tuple[str, ...]] = (
        "lits", "ops", "length", "mask", "s2", "n1", "h", "valid", "fresh")

    def signature(self) -> torch.Tensor:
        """(support, rank sum, support hash) of each entry: (k, W, 3)."""
        return torch.stack([self.n1, self.s2, self.h], dim=-1)

    def take(self, idx: torch.Tensor) -> _Beam:
        """Entries at ``idx`` (k, T) (-1: empty slot)."""
        j = idx.clamp(min=0)

        rows = torch.arange(j.shape[0], device=j.device).unsqueeze(1)

        def g(a: torch.Tensor) -> torch.Tensor:
            if a.ndim == 2:
                return torch.gather(a, 1, j)
            return a[rows, j]  # whole rows (masks, literals) copied at once

        out = _Beam(*(g(getattr(self, f)) for f in self._FIELDS))
        out.valid &= idx >= 0
        return out

    @staticmethod
    def cat(a: _Beam, b: _Beam) -> _Beam:
        """The entries of ``a`` then those of ``b``."""
        return _Beam(*(torch.cat([getattr(a, f), getattr(b, f)], dim=1) for f in _Beam._FIELDS))


class _LiteralPool:
    """The depth-1 pool: literal codes ``c0 .. c(C-1), ~c0 .. ~c(C-1)``."""

    def __init__(self, search: _ChunkSearch):
        self.search = search

    def build(self, idx: torch.Tensor) -> _Beam:
        """One-literal formulas of the literal codes ``idx`` (k, T) (-1: empty slot)."""
        s = self.search
        k, length, dev = s.k, s.p.length, s.r2.device
        j = idx.clamp(min=0)
        t = idx.shape[1]
        lits = torch.full((k, t, length), -1, dtype=torch.int64, device=dev)
        lits[:, :, 0] = j
        return _Beam(
            lits=lits,
            ops=torch.zeros((k, t, length), dtype=torch.int8, device=dev),
            length=torch.ones((k, t), dtype=torch.int64, device=dev),
            mask=s.op.literal_rows(j),
            s2=torch.gather(s.s_lit, 1, j),
            n1=torch.gather(s.n_lit, 1, j),
            h=torch.gather(s.h_lit, 1, j),
            valid=idx >= 0,
            fresh=torch.ones((k, t), dtype=torch.bool, device=dev),
        )

    def signature(self, idx: torch.Tensor) -> torch.Tensor:
        """(support, rank sum, hash) of the literal codes ``idx``: (k, T, 3)."""
        s = self.search
        j = idx.clamp(min=0)
        return torch.stack([torch.gather(a, 1, j) for a in (s.n_lit, s.s_lit, s.h_lit)],
                           dim=-1)


@dataclass
class _Parents:
    """The beam entries a step extends, packed to the front of each row: ``slot`` (k, P)
    their positions in the beam, ``ok`` (k, P) False for the empty slots after them."""

    slot: torch.Tensor
    ok: torch.Tensor

    @classmethod
    def of(cls, beam: _Beam, p: SearchParams) -> _Parents:
        """Valid entries shorter than ``length`` (with dedupe: created at the last depth)."""
        ok = beam.valid & (beam.length < p.length)
        if p.dedupe:
            ok = ok & beam.fresh
        width = int(ok.sum(dim=1).max()) if ok.numel() else 0
        order = torch.argsort((~ok).to(torch.int8), dim=1, stable=True)[:, :width]
        return cls(order, torch.gather(ok, 1, order))


@dataclass
class _Pool:
    """What a step selects from, flat: the previous beam's ``k * W`` entries (position
    ``row * W + slot``), then the kept candidates (and one empty one, so that gathers
    never meet an empty tensor). ``key_in``, ``key_out``: the score within / outside the
    fraction limits (-inf where excluded); ``tie``: the tie order (the beam first, then
    parent, extension rank of the literal, AND before OR); ``sig``: (support, rank sum,
    hash). For candidates: ``parent`` (beam slot), ``lit``, ``op`` and ``s``, ``n``,
    ``h`` (doubled rank sum, support, support hash)."""

    row: torch.Tensor
    key_in: torch.Tensor
    key_out: torch.Tensor
    tie: torch.Tensor
    sig: torch.Tensor
    n_old: int
    parent: torch.Tensor
    lit: torch.Tensor
    op: torch.Tensor
    s: torch.Tensor
    n: torch.Tensor
    h: torch.Tensor


def _pick(pool: _Pool, key: torch.Tensor, want: int, k: int, dedupe: bool,
          exact: bool) -> torch.Tensor:
    """Per row, the pool positions of the first ``want`` entries with a finite ``key`` in
    the order (key descending, tie ascending); with ``dedupe`` only the first entry of each
    signature (support, rank sum (``exact`` only), hash). (k, want) int64, -1 pads."""
    dev = key.device
    out = torch.full((k, want), -1, dtype=torch.int64, device=dev)
    cand = torch.nonzero(key > _NEG_INF).squeeze(1)
    if cand.numel() == 0:
        return out
    perm = torch.argsort(pool.tie[cand], stable=True)
    perm = perm[torch.argsort(-key[cand][perm], stable=True)]
    perm = perm[torch.argsort(pool.row[cand][perm], stable=True)]
    cand = cand[perm]
    r = pool.row[cand]
    if dedupe:
        sig = pool.sig[cand] if exact else pool.sig[cand][:, [0, 2]]
        first = _first_of_each(torch.cat([r.unsqueeze(1).to(sig.dtype), sig], dim=1))
        cand, r = cand[first], r[first]
    counts = torch.bincount(r, minlength=k)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(r.numel(), device=dev) - starts[r]
    sel = rank < want
    out[r[sel], rank[sel]] = cand[sel]
    return out

# ----------------------------------------------------------------------------- the search


class _ChunkSearch:
    """The beam search for one block of units (all tensors on one device).

    ``r2``: per-pattern doubled rank sums of each unit (AUROC), per-pattern sums of the
    centred activations (point-biserial, with ``sd`` the units' standard deviations), or
    per-pattern counts of the units' top samples (top F1, with ``top`` the sizes of the top
    sets), (M, k); ``counts``: samples per pattern; ``zhash``: the patterns' support-hash
    weights."""

    # literal statistics (k, 2C) and the extension order, set by :meth:`run`
    s_lit: torch.Tensor
    n_lit: torch.Tensor
    h_lit: torch.Tensor
    def_lit: torch.Tensor  # (k, 2C) bool: the literal's AUROC is defined
    undefined: torch.Tensor  # (C,) bool: all-zero or all-one concepts
    ls: int  # number of extension literals
    ext_rank: torch.Tensor  # (k, 2C) position in the extension order (ls: not an extension)
    ext_ok: torch.Tensor  # (k, 2C) bool: the literal extends formulas
    ext_order: torch.Tensor  # (k, ls) the extension literals, in order
    _totals: list[torch.Tensor]  # each product weight summed over all patterns (C, k | 1)

    def __init__(self, r2: torch.Tensor, counts: torch.Tensor, n: int, op: _ConceptOp,
                 p: SearchParams, zhash: torch.Tensor, sd: torch.Tensor | None = None,
                 top: torch.Tensor | None = None):
        self.r2, self.counts, self.n, self.op, self.p, self.z = r2, counts, n, op, p, zhash
        self.sd = sd
        self.top = top
        self.k = r2.shape[1]
        self.c = op.c
        self.sign = 1.0 if p.mode == "positive" else -1.0
        self.lo, self.hi = p.count_limits(n)
        # with relative_min (top F1): each unit's smallest support (k,)
        self.lo_unit = p.relative_min_support(top) if p.relative_min and top is not None \
            else None

    # -- scoring helpers
    def _value(self, s2: torch.Tensor, n1: torch.Tensor, rows: torch.Tensor | None = None
               ) -> torch.Tensor:
        """The search metric from sums over the support (NaN where undefined); ``s2`` is
        (k, ...) per unit, or flat with the unit of each entry in ``rows``."""
        n = float(self.n)
        if self.p.metric == "auroc":
            return (s2 - n1 * (n1 + 1.0)) / (2.0 * n1 * (n - n1))  # NaN where n1 is 0 or n
        if self.top is not None:  # F1 against the top set: 2 |T & m| / (|T| + n1)
            t = self._per_unit(self.top, s2, rows)
            f1 = (2.0 * s2) / (n1 + t)  # the scan's operations
            return torch.where((n1 > 0) & (n1 < n), f1, torch.nan)
        # point-biserial r of the 0/1 support with the centred activations
        assert self.sd is not None  # given with metric="point_biserial"
        sd = self.sd[rows] if rows is not None else self.sd.view(-1, *([1] * (s2.ndim - 1)))
        r = s2 / (sd * torch.sqrt(n1 * (n - n1)))
        return torch.where((n1 > 0) & (n1 < n), r, torch.nan)

    def _keys(self, s2: torch.Tensor, n1: torch.Tensor, ok: torch.Tensor | None,
              rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(score within the fraction limits, score outside them), -inf where excluded."""
        auc = self._value(s2, n1, rows)
        if self.sign < 0:
            auc = auc.neg_()
        score = torch.nan_to_num_(auc, nan=_NEG_INF, posinf=_NEG_INF, neginf=_NEG_INF)
        if ok is not None:
            score = score.masked_fill_(~ok, _NEG_INF)
        lo = self.lo if self.lo_unit is None else self._per_unit(self.lo_unit, n1, rows)
        inside = (n1 >= lo) & (n1 <= self.hi)
        return torch.where(inside, score, _NEG_INF), score.masked_fill_(inside, _NEG_INF)

    @staticmethod
    def _per_unit(v: torch.Tensor, like: torch.Tensor, rows: torch.Tensor | None
                  ) -> torch.Tensor:
        """The per-unit values ``v`` (k,) shaped for entries ``like`` (k, ...), or for flat
        entries of the units ``rows``."""
        return v[rows] if rows is not None else v.view(-1, *([1] * (like.ndim - 1)))

    def _select(self, key: torch.Tensor, want: int, build: Callable[[torch.Tensor], _Beam],
                sig_of: Callable[[torch.Tensor], torch.Tensor], prior: _Beam | None,
                tiepos: TiePos | None = None) -> _Beam:
        """Top ``want`` entries by ``key``; with dedupe, distinct supports only (and none
        equal to an entry of ``prior``). ``sig_of(idx)`` gives (support, rank sum, hash) of
        pool entries, ``build(idx)`` materialises them."""
        if not self.p.dedupe:
            return build(_topk_stable(key, want, tiepos))
        t = 2 * want + 64
        exact = self.p.metric == "auroc"  # float sums of activations are not exact: no s

        def sig(x: torch.Tensor) -> torch.Tensor:
            return x if exact else x[..., [0, 2]]

        psig = sig(prior.signature()) if prior is not None else None
        pvalid = prior.valid if prior is not None else None
        while True:
            idx = _topk_stable(key, t, tiepos)
            valid = idx >= 0
            keep = _first_occurrence(sig(sig_of(idx)), valid, psig, pvalid)
            rank = torch.cumsum(keep.to(torch.int64), dim=1)
            short = (rank[:, -1] < want) & valid[:, -1]
            if not bool(short.any()) or t >= key.shape[1]:
                break
            t *= 4
        sel = keep & (rank <= want)
        order = torch.argsort((~sel).to(torch.int8), dim=1, stable=True)[:, :want]
        chosen = torch.gather(idx, 1, order)
        return build(torch.where(torch.gather(sel, 1, order), chosen, -1))

    # -- the search
    def run(self) -> tuple[_Beam, torch.Tensor]:
        """The search: the best ``beam_size`` formulas of each unit within the fraction
        limits (k, B), and the undefined (all-zero or all-one) concepts (C,)."""
        self._literal_stats()
        self._extension_order()
        b = self.p.beam_size
        # formulas outside the fraction limits are kept apart (as seeds) only where some
        # can exist: 0 < support < N and outside [lo, hi]
        lo = self.lo if self.lo_unit is None else float(self.lo_unit.max())
        can_be_outside = lo > 1 or self.hi < self.n - 1
        bx = _EXPLORE_FACTOR * b if self.p.dedupe and can_be_outside else 0
        best, beam = self._first_beam(b, bx)
        for depth in range(2, self.p.length + 1):
            best, beam = self._step(beam, b, bx, last=depth == self.p.length)
        return best, self.undefined

    def _literal_stats(self) -> None:
        """Rank sums, supports and support hashes of the ``2 C`` literals of each unit."""
        k, c, n = self.k, self.c, self.n
        sc = self.op.tsum(self.r2).T  # (k, C)
        nc = self.op.tsum(self.counts.unsqueeze(1))[:, 0]  # (C,)
        stot: float | torch.Tensor = float(n) * (n + 1) if self.p.metric == "auroc" else 0.0
        if self.top is not None:  # top counts total the top sets' sizes
            stot = self.top.unsqueeze(1)
        self.s_lit = torch.cat([sc, stot - sc], dim=1)  # (k, 2C)
        self.n_lit = torch.cat([nc, n - nc]).unsqueeze(0).expand(k, 2 * c)
        self._totals = [sc.T, nc.unsqueeze(1)]  # sums over all patterns (C, k | 1)
        if self.p.dedupe:
            hc = self.op.tsum(self.z.unsqueeze(1))[:, 0]
            self.h_lit = torch.cat([hc, float(self.z.sum()) - hc]).unsqueeze(0).expand(k, 2 * c)
            self._totals.append(hc.unsqueeze(1))
        else:
            self.h_lit = torch.zeros_like(self.n_lit)
        self.def_lit = (self.n_lit > 0) & (self.n_lit < n)
        self.undefined = ~self.def_lit[0, :c]

    def _extension_order(self) -> None:
        """The literals that extend formulas: depth-1 order, then by ``|AUROC - 0.5|``
        descending (stable), the first ``limit_search`` of them."""
        k, c, def_lit = self.k, self.c, self.def_lit
        dev = self.r2.device
        auc_lit = self._value(self.s_lit, self.n_lit)
        center = 0.5 if self.p.metric == "auroc" else 0.0
        score_lit = torch.where(def_lit, self.sign * auc_lit, _NEG_INF)
        diff = torch.where(def_lit, (auc_lit - center).abs(), -1.0)
        if dev.type == "cpu":  # one lexicographic sort: |AUROC - 0.5|, score, position
            pos = np.broadcast_to(np.arange(2 * c), (k, 2 * c))
            ext = torch.from_numpy(np.lexsort(
                (pos, (-score_lit).numpy(), (-diff).numpy()), axis=1).astype(np.int64))
        else:
            order1 = torch.argsort(-score_lit, dim=1, stable=True)
            ext = torch.gather(order1, 1, torch.argsort(-torch.gather(diff, 1, order1),
                                                        dim=1, stable=True))
        ls = self.p.n_extensions(c)
        ext = ext[:, :ls]
        self.ls = ls
        # position of each literal in the extension order (ls where not an extension)
        self.ext_order = ext
        self.ext_rank = torch.full((k, 2 * c), ls, dtype=torch.int64, device=dev)
        self.ext_rank.scatter_(1, ext, torch.arange(ls, device=dev).expand(k, ls))
        self.ext_ok = (self.ext_rank < ls) & def_lit  # (k, 2C)

    def _first_beam(self, b: int, bx: int) -> tuple[_Beam, _Beam]:
        """Depth 1: (the best ``b`` literals, the beam: those and ``bx`` explorers)."""
        pool = _LiteralPool(self)
        key_in, key_out = self._keys(self.s_lit, self.n_lit, None)
        best = self._select(key_in, b, pool.build, pool.signature, None)
        if not bx:
            return best, best
        explore = self._select(key_out, bx, pool.build, pool.signature, None)
        return best, _Beam.cat(best, explore)

    def _step(self, beam: _Beam, b: int, bx: int, last: bool) -> tuple[_Beam, _Beam]:
        """One depth: every fresh entry of ``beam`` (every entry without dedupe) extended by
        every extension literal with AND and OR; returns (the best ``b`` of the previous
        beam and the candidates, the next beam: those and ``bx`` explorers; at the ``last``
        depth no explorers).

        Only candidates whose key reaches the previous beam's ``b``-th (``bx``-th explorer)
        key are kept by the scan: the previous entries stay in the pool, so the new ``b``-th
        key is at least that; the selection among them is the exact, stable one."""
        explore = bool(bx) and not last
        old_in, old_out = self._keys(beam.s2, beam.n1, beam.valid)
        par = _Parents.of(beam, self.p)
        q = self._products(beam, par)
        exact = self.p.metric == "auroc"
        bounds = self._probe_bound(beam, par, q, old_in, old_out, b, bx if explore else 0)
        self._beam_s2, self._beam_n1 = beam.s2, beam.n1
        found = self._scan(q, par, bounds, (b, bx if explore else 0))
        pool = self._pool(beam, par, q, found, old_in, old_out)
        del q, found
        best = self._build(beam, pool, _pick(pool, pool.key_in, b, self.k, self.p.dedupe,
                                             exact))
        if not explore:
            return best, best
        more = self._build(beam, pool, _pick(pool, pool.key_out, bx, self.k, self.p.dedupe,
                                             exact))
        return best, _Beam.cat(best, more)

    def _products(self, beam: _Beam, par: _Parents) -> Any:
        """The parents' masked sums ``S(b & c)``, ``n(b & c)`` (and hashes): (nw, C, P, k)."""
        rows = torch.arange(self.k, device=par.slot.device).unsqueeze(1)
        mask = beam.mask[rows, par.slot]
        if not bool(par.ok.all()):
            mask &= par.ok.unsqueeze(-1)
        weights = [self.r2, self.counts] + ([self.z] if self.p.dedupe else [])
        return self.op.masked_sums_t(mask, weights, self._totals)

    def _probe_bound(self, beam: _Beam, par: _Parents, q: Any, old_in: torch.Tensor,
                     old_out: torch.Tensor, b: int, bx: int
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Lower bounds (k,) on the keys the step's selections end at: the ``b``-th best
        (and ``bx``-th explorer) key among the previous beam and the candidates of the first
        :data:`PROBE_LITERALS` extension literals of each unit (the strongest literals,
        so the bound is tight), selected exactly."""
        k, c, dev = self.k, self.c, par.ok.device
        t = min(PROBE_LITERALS, self.ls)
        lits = self.ext_order[:, :t]  # (k, t)
        pw = par.slot.shape[1]
        shape = (k, t, pw, 2)
        row = torch.arange(k, device=dev).view(k, 1, 1, 1).expand(shape)
        lit = lits.view(k, t, 1, 1).expand(shape)
        slot = torch.arange(pw, device=dev).view(1, 1, pw, 1).expand(shape)
        op = torch.arange(2, device=dev).view(1, 1, 1, 2).expand(shape)
        kind = (lit >= c).to(torch.int64) + 2 * op
        probe = Found(kind.reshape(-1), (lit % c).reshape(-1), slot.reshape(-1),
                      row.reshape(-1))
        pool = self._pool(beam, par, q, probe, old_in, old_out)
        n_old, width = pool.n_old, t * pw * 2
        keep = par.ok.view(k, 1, pw, 1).expand(shape).reshape(k, width)
        exact = self.p.metric == "auroc"
        rows = torch.arange(k, device=dev)

        def last_key(key: torch.Tensor, want: int) -> torch.Tensor:
            # the exact selection among the previous beam and each unit's best probed
            # candidates (any subset of the pool gives a valid bound)
            probed = key[n_old:n_old + k * width].reshape(k, width).masked_fill(~keep, _NEG_INF)
            top = torch.topk(probed, min(width, 2 * want + 16), dim=1).indices
            sub = torch.full_like(key, _NEG_INF)
            sub[:n_old] = key[:n_old]
            pos = n_old + rows.unsqueeze(1) * width + top
            sub[pos] = probed.gather(1, top)
            sel = _pick(pool, sub, want, k, self.p.dedupe, exact)[:, want - 1]
            return torch.where(sel >= 0, key[sel.clamp(min=0)], _NEG_INF)

        bound_in = torch.maximum(last_key(pool.key_in, b), old_in[rows, b - 1])
        if not bx:
            return bound_in, None
        return bound_in, torch.maximum(last_key(pool.key_out, bx), old_out[rows, b + bx - 1])

    def _scan(self, q: Any, par: _Parents, bounds: tuple[torch.Tensor, torch.Tensor | None],
              wants: tuple[int, int]) -> Found:
        """The candidates whose key reaches its bound (k,) (see :mod:`invert.engine.scan`)."""
        c = self.c
        nan = torch.tensor(math.nan, dtype=torch.float64, device=par.ok.device)
        sb = torch.where(par.ok, torch.gather(self._beam_s2, 1, par.slot), nan)
        nb = torch.where(par.ok, torch.gather(self._beam_n1, 1, par.slot), nan)
        scale = 2.0 if self.p.metric == "auroc" else 1.0  # scan keys: twice the AUROC
        conv = (lambda t: t.numpy()) if isinstance(q, np.ndarray) else (lambda t: t)
        thr_in, thr_out = bounds
        inp = ScanInputs(
            q=q, sb=conv(sb.T.contiguous()), nb=conv(nb.T.contiguous()),
            s_pos=conv(self.s_lit[:, :c].T.contiguous()),
            s_neg=conv(self.s_lit[:, c:].T.contiguous()), n_pos=conv(self.n_lit[0, :c]),
            n_neg=conv(self.n_lit[0, c:]), thr_in=conv(scale * thr_in),
            thr_out=conv(scale * thr_out) if thr_out is not None else None,
            lo=self.lo if self.lo_unit is None else conv(self.lo_unit), hi=self.hi, n=self.n,
            negative=self.sign < 0,
            dedupe=self.p.dedupe, sd=conv(self.sd) if self.sd is not None else None,
            top=conv(self.top) if self.top is not None else None,
            want_in=wants[0], want_out=wants[1], ext_ok=self.ext_ok, n_lit=self.n_lit[0])
        return scan(inp)

    def _pool(self, beam: _Beam, par: _Parents, q: Any, f: Found, old_in: torch.Tensor,
              old_out: torch.Tensor) -> _Pool:
        """The previous beam and the kept candidates ``f`` with their exact sums, supports,
        hashes, keys and tie order (the operations of the reference order: see
        :mod:`invert.engine.scan`)."""
        k, c = self.k, self.c
        w = beam.mask.shape[1]
        dev = old_in.device
        slot = par.slot[f.row, f.slot]
        neg = (f.kind == 1) | (f.kind == 3)
        op = f.kind >= 2
        lit = f.concept + c * neg
        if isinstance(q, np.ndarray):
            qa = torch.from_numpy(q[:, f.concept.numpy(), f.slot.numpy(), f.row.numpy()])
        else:
            qa = q[:, f.concept, f.slot, f.row]
        row = f.row

        def combine(a: torch.Tensor, ab: torch.Tensor, al: torch.Tensor) -> torch.Tensor:
            pb = ab[row, slot]  # the parent's
            a_and = torch.where(neg, pb - a, a)  # b & c, b & ~c
            return torch.where(op, (pb + al[row, lit]) - a_and, a_and)

        s = combine(qa[0], beam.s2, self.s_lit)
        n = combine(qa[1], beam.n1, self.n_lit)
        h = combine(qa[2], beam.h, self.h_lit) if self.p.dedupe else torch.zeros_like(n)
        ok = self.ext_ok[row, lit]
        if self.p.dedupe:  # new formulas only: b & l, b | l equal to neither b nor l
            ok &= (n != beam.n1[row, slot]) & (n != self.n_lit[row, lit])
        key_in, key_out = self._keys(s, n, ok, row)
        tie = w + (slot * self.ls + self.ext_rank[row, lit]) * 2 + op.to(torch.int64)
        one = torch.zeros(1, dtype=torch.int64, device=dev)
        inf1 = torch.full((1,), _NEG_INF, dtype=torch.float64, device=dev)
        zero1 = torch.zeros(1, dtype=torch.float64, device=dev)
        rows_old = torch.arange(k, device=dev).repeat_interleave(w)
        slots_old = torch.arange(w, device=dev).repeat(k)
        return _Pool(
            row=torch.cat([rows_old, row, one]),
            key_in=torch.cat([old_in.reshape(-1), key_in, inf1]),
            key_out=torch.cat([old_out.reshape(-1), key_out, inf1]),
            tie=torch.cat([slots_old, tie, one]),
            sig=torch.cat([beam.signature().reshape(-1, 3), torch.stack([n, s, h], dim=1),
                           torch.zeros((1, 3), dtype=torch.float64, device=dev)]),
            n_old=k * w,
            parent=torch.cat([slot, one]), lit=torch.cat([lit, one]),
            op=torch.cat([op.to(torch.int8), one.to(torch.int8)]),
            s=torch.cat([s, zero1]), n=torch.cat([n, zero1]), h=torch.cat([h, zero1]),
        )

    def _build(self, beam: _Beam, pool: _Pool, idx: torch.Tensor) -> _Beam:
        """The pool entries at ``idx`` (k, T) (-1: empty slot) as a beam: a previous entry
        is copied, a candidate is its parent's entry with the literal and op appended (its
        mask computed for the new entries only)."""
        w = beam.mask.shape[1]
        ok_i = idx >= 0
        old = ok_i & (idx < pool.n_old)
        new = ok_i & ~old
        rows = torch.arange(idx.shape[0], device=idx.device).unsqueeze(1)
        j = torch.where(new, idx - pool.n_old, pool.parent.numel() - 1)
        src = torch.where(old, idx - rows * w, torch.where(new, pool.parent[j], 0))
        base = beam.take(src)  # the entry itself, or the candidate's parent
        lit, op_i = pool.lit[j], pool.op[j]
        if bool(new.any()):
            lm = self.op.literal_rows(lit[new])  # (n_new, M)
            m_new = base.mask[new]
            is_or = op_i[new].bool()
            m_new[~is_or] &= lm[~is_or]
            m_new[is_or] |= lm[is_or]
            base.mask[new] = m_new
        slot = base.length.unsqueeze(-1)  # the new literal goes after the parent's
        new_lits = base.lits.scatter(2, slot.clamp(max=base.lits.shape[2] - 1),
                                     lit.unsqueeze(-1))
        new_ops = base.ops.scatter(2, slot.clamp(max=base.ops.shape[2] - 1),
                                   op_i.unsqueeze(-1))
        sel_new = new.unsqueeze(-1)
        return _Beam(
            lits=torch.where(sel_new, new_lits, base.lits),
            ops=torch.where(sel_new, new_ops, base.ops),
            length=torch.where(new, base.length + 1, base.length),
            mask=base.mask,
            s2=torch.where(new, pool.s[j], base.s2),
            n1=torch.where(new, pool.n[j], base.n1),
            h=torch.where(new, pool.h[j], base.h),
            valid=base.valid & ok_i,
            fresh=new,
        )
