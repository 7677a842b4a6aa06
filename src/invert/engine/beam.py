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
from typing import ClassVar

import torch

from .params import _EXPLORE_FACTOR, SearchParams
from .patterns import _ConceptOp

__all__: list[str] = []

_NEG_INF = -math.inf

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

        def g(a: torch.Tensor) -> torch.Tensor:
            shape = (*j.shape, *a.shape[2:])
            return torch.gather(a, 1, j.view(*j.shape, *([1] * (a.ndim - 2))).expand(shape))

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


class _StepPool:
    """The pool of one step: the previous beam (positions ``< W``), then the candidates
    ``W + (parent * 2C + literal) * 2 + op`` (op 0 AND, 1 OR) whose sums, counts and hashes
    are ``s``, ``n``, ``h`` (k, W * 2C * 2)."""

    def __init__(self, search: _ChunkSearch, beam: _Beam, s: torch.Tensor, n: torch.Tensor,
                 h: torch.Tensor | None):
        self.search, self.beam = search, beam
        self.s, self.n, self.h = s, n, h
        self.w = beam.mask.shape[1]
        self.c2 = 2 * search.c

    def tiepos(self, r: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
        """Tie order: the beam first, then (parent, extension rank of the literal, op)."""
        w, c2 = self.w, self.c2
        q_i = (col - w).clamp(min=0)
        par = torch.div(q_i, 2 * c2, rounding_mode="floor")
        lit = torch.div(q_i, 2, rounding_mode="floor") % c2
        pos = w + (par * self.search.ls + self.search.ext_rank[r, lit]) * 2 + q_i % 2
        return torch.where(col < w, col, pos)

    def build(self, idx: torch.Tensor) -> _Beam:
        """The pool entries at ``idx`` (k, T) (-1: empty slot) as a beam."""
        w, c2, beam = self.w, self.c2, self.beam
        ok_i = idx >= 0
        old = idx < w
        old_part = beam.take(torch.where(old & ok_i, idx, -1))
        q_i = (idx - w).clamp(min=0)
        parent = torch.div(q_i, 2 * c2, rounding_mode="floor")
        lit = torch.div(q_i, 2, rounding_mode="floor") % c2
        op_i = (q_i % 2).to(torch.int8)
        par = beam.take(torch.where(~old & ok_i, parent, -1))
        lmask = self.search.op.literal_rows(lit)
        new_mask = torch.where(op_i.bool().unsqueeze(-1), par.mask | lmask, par.mask & lmask)
        slot = par.length.unsqueeze(-1)  # the new literal goes after the parent's
        new_lits = par.lits.scatter(2, slot, lit.unsqueeze(-1))
        new_ops = par.ops.scatter(2, slot, op_i.unsqueeze(-1))
        sel_old = old.unsqueeze(-1)
        return _Beam(
            lits=torch.where(sel_old, old_part.lits, new_lits),
            ops=torch.where(sel_old, old_part.ops, new_ops),
            length=torch.where(old, old_part.length, par.length + 1),
            mask=torch.where(sel_old, old_part.mask, new_mask),
            s2=torch.where(old, old_part.s2, torch.gather(self.s, 1, q_i)),
            n1=torch.where(old, old_part.n1, torch.gather(self.n, 1, q_i)),
            h=(torch.where(old, old_part.h, torch.gather(self.h, 1, q_i)) if self.h is not None
               else old_part.h),
            valid=torch.where(old, old_part.valid, par.valid) & ok_i,
            fresh=~old,
        )

    def signature(self, idx: torch.Tensor) -> torch.Tensor:
        """(support, rank sum, hash) of the pool entries at ``idx`` (dedupe only)."""
        assert self.h is not None  # hashes exist with dedupe
        w, beam = self.w, self.beam
        old = idx < w
        j = idx.clamp(min=0)
        q_i = (idx - w).clamp(min=0)
        return torch.stack([
            torch.where(old, torch.gather(bf, 1, j.clamp(max=w - 1)), torch.gather(cf, 1, q_i))
            for bf, cf in ((beam.n1, self.n), (beam.s2, self.s), (beam.h, self.h))], dim=-1)


# ----------------------------------------------------------------------------- the search


class _ChunkSearch:
    """The beam search for one block of units (all tensors on one device).

    ``r2``: per-pattern doubled rank sums of each unit (AUROC), or per-pattern sums of the
    centred activations (point-biserial, with ``sd`` the units' standard deviations), (M, k);
    ``counts``: samples per pattern; ``zhash``: the patterns' support-hash weights."""

    # literal statistics (k, 2C) and the extension order, set by :meth:`run`
    s_lit: torch.Tensor
    n_lit: torch.Tensor
    h_lit: torch.Tensor
    def_lit: torch.Tensor  # (k, 2C) bool: the literal's AUROC is defined
    undefined: torch.Tensor  # (C,) bool: all-zero or all-one concepts
    ls: int  # number of extension literals
    ext_rank: torch.Tensor  # (k, 2C) position in the extension order (ls: not an extension)
    ext_ok: torch.Tensor  # (k, 2C) bool: the literal extends formulas

    def __init__(self, r2: torch.Tensor, counts: torch.Tensor, n: int, op: _ConceptOp,
                 p: SearchParams, zhash: torch.Tensor, sd: torch.Tensor | None = None):
        self.r2, self.counts, self.n, self.op, self.p, self.z = r2, counts, n, op, p, zhash
        self.sd = sd
        self.k = r2.shape[1]
        self.c = op.c
        self.sign = 1.0 if p.mode == "positive" else -1.0
        self.lo, self.hi = p.count_limits(n)

    # -- scoring helpers
    def _value(self, s2: torch.Tensor, n1: torch.Tensor) -> torch.Tensor:
        """The search metric from sums over the support (NaN where undefined)."""
        n = float(self.n)
        if self.p.metric == "auroc":
            return (s2 - n1 * (n1 + 1.0)) / (2.0 * n1 * (n - n1))  # NaN where n1 is 0 or n
        # point-biserial r of the 0/1 support with the centred activations
        assert self.sd is not None  # given with metric="point_biserial"
        sd = self.sd.view(-1, *([1] * (s2.ndim - 1)))
        r = s2 / (sd * torch.sqrt(n1 * (n - n1)))
        return torch.where((n1 > 0) & (n1 < n), r, torch.nan)

    def _keys(self, s2: torch.Tensor, n1: torch.Tensor, ok: torch.Tensor | None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """(score within the fraction limits, score outside them), -inf where excluded."""
        auc = self._value(s2, n1)
        if self.sign < 0:
            auc = auc.neg_()
        score = torch.nan_to_num_(auc, nan=_NEG_INF, posinf=_NEG_INF, neginf=_NEG_INF)
        if ok is not None:
            score = score.masked_fill_(~ok, _NEG_INF)
        inside = (n1 >= self.lo) & (n1 <= self.hi)
        return torch.where(inside, score, _NEG_INF), score.masked_fill_(inside, _NEG_INF)

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
        can_be_outside = self.lo > 1 or self.hi < self.n - 1
        bx = _EXPLORE_FACTOR * b if self.p.dedupe and can_be_outside else 0
        best, beam = self._first_beam(b, bx)
        for _depth in range(2, self.p.length + 1):
            best, beam = self._step(beam, b, bx)
        return best, self.undefined

    def _literal_stats(self) -> None:
        """Rank sums, supports and support hashes of the ``2 C`` literals of each unit."""
        k, c, n = self.k, self.c, self.n
        sc = self.op.tsum(self.r2).T  # (k, C)
        nc = self.op.tsum(self.counts.unsqueeze(1))[:, 0]  # (C,)
        stot = float(n) * (n + 1) if self.p.metric == "auroc" else 0.0  # centred sums total 0
        self.s_lit = torch.cat([sc, stot - sc], dim=1)  # (k, 2C)
        self.n_lit = torch.cat([nc, n - nc]).unsqueeze(0).expand(k, 2 * c)
        if self.p.dedupe:
            hc = self.op.tsum(self.z.unsqueeze(1))[:, 0]
            self.h_lit = torch.cat([hc, float(self.z.sum()) - hc]).unsqueeze(0).expand(k, 2 * c)
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
        order1 = torch.argsort(-score_lit, dim=1, stable=True)
        diff = torch.where(def_lit, (auc_lit - center).abs(), -1.0)
        ext = torch.gather(order1, 1, torch.argsort(-torch.gather(diff, 1, order1), dim=1,
                                                    stable=True))
        ls = self.p.n_extensions(c)
        ext = ext[:, :ls]
        self.ls = ls
        # position of each literal in the extension order (ls where not an extension)
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

    def _step(self, beam: _Beam, b: int, bx: int) -> tuple[_Beam, _Beam]:
        """One depth: every fresh entry of ``beam`` (every entry without dedupe) extended by
        every extension literal with AND and OR; returns (the best ``b`` of the previous
        beam and the candidates, the next beam: those and ``bx`` explorers)."""
        k = self.k
        s_c, n_c, h_c = self._candidate_stats(beam)
        key_in, key_out = self._keys(s_c, n_c, self._candidate_ok(beam, n_c))
        key_in, key_out = key_in.reshape(k, -1), key_out.reshape(k, -1)
        pool = _StepPool(self, beam, s_c.reshape(k, -1), n_c.reshape(k, -1),
                         h_c.reshape(k, -1) if h_c is not None else None)
        del s_c, n_c, h_c
        bkey_in, bkey_out = self._keys(beam.s2, beam.n1, beam.valid)
        best = self._select(torch.cat([bkey_in, key_in], dim=1), b, pool.build,
                            pool.signature, None, pool.tiepos)
        if not bx:
            return best, best
        explore = self._select(torch.cat([bkey_out, key_out], dim=1), bx, pool.build,
                               pool.signature, None, pool.tiepos)
        return best, _Beam.cat(best, explore)

    def _candidate_stats(self, beam: _Beam
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Rank sums, supports and (with dedupe) hashes of every ``entry op literal``:
        (k, W, 2C, 2) in literal-code order, the last axis AND, OR."""
        k, c = self.k, self.c
        w = beam.mask.shape[1]
        c2 = 2 * c
        weights = [self.r2, self.counts] + ([self.z] if self.p.dedupe else [])
        q = self.op.masked_sums(beam.mask, weights)  # (2 or 3, k, W, C)
        sa, na = q[0], q[1]
        sb, nb = beam.s2.unsqueeze(2), beam.n1.unsqueeze(2)  # (k, W, 1)
        s_c = torch.empty((k, w, c2, 2), dtype=torch.float64, device=sa.device)
        n_c = torch.empty_like(s_c)
        s_c[:, :, :c, 0] = sa
        torch.sub(sb, sa, out=s_c[:, :, c:, 0])
        n_c[:, :, :c, 0] = na
        torch.sub(nb, na, out=n_c[:, :, c:, 0])
        del sa, na
        sl, nl = self.s_lit.unsqueeze(1), self.n_lit.unsqueeze(1)  # (k, 1, 2C)
        torch.sub(sb + sl, s_c[..., 0], out=s_c[..., 1])
        torch.sub(nb + nl, n_c[..., 0], out=n_c[..., 1])
        h_c = None
        if self.p.dedupe:
            ha, hb = q[2], beam.h.unsqueeze(2)
            h_c = torch.empty_like(s_c)
            h_c[:, :, :c, 0] = ha
            torch.sub(hb, ha, out=h_c[:, :, c:, 0])
            torch.sub(hb + self.h_lit.unsqueeze(1), h_c[..., 0], out=h_c[..., 1])
        return s_c, n_c, h_c

    def _candidate_ok(self, beam: _Beam, n_c: torch.Tensor) -> torch.Tensor:
        """Which candidates may enter (k, W, 2C, 2): their parent is extended (valid,
        shorter than ``length``, fresh with dedupe), their literal is an extension, and with
        dedupe they are new formulas (``b & l``, ``b | l`` equal to neither ``b`` nor ``l``)."""
        k, w, c2 = self.k, beam.mask.shape[1], 2 * self.c
        parent_ok = beam.valid & (beam.length < self.p.length)
        if self.p.dedupe:
            parent_ok &= beam.fresh
        ok = parent_ok.view(k, w, 1, 1) & self.ext_ok.view(k, 1, c2, 1)
        if self.p.dedupe:
            nb, nl = beam.n1.unsqueeze(2), self.n_lit.unsqueeze(1)
            ok = ok & (n_c != nb.unsqueeze(3)) & (n_c != nl.unsqueeze(3))
        return ok
