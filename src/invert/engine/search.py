"""Whole-layer beam search for formulas that best separate high from low activations.

The engine behind :func:`invert.explain`. For a chunk of units at a time it

1. ranks each unit once (doubled mid-ranks, exact integers in float64);
2. collapses samples with identical label rows into *patterns* and sums ranks per pattern;
3. scores every candidate of a beam step, for every unit of the chunk, from one product of the
   beam entries' masked rank sums with the pattern-by-concept matrix (dense or sparse):
   ``S(b & c) = (r * b) . y_c``, ``S(b & ~c) = S(b) - S(b & c)``,
   ``S(b | l) = S(b) + S(l) - S(b & l)``, and the same for counts, so that
   ``AUROC = (S - n1 (n1 + 1) / 2) / (n1 n0)`` is exact;
4. keeps the beam with a deterministic, stable top-k.

See the module :mod:`invert` docstring and the README for the semantics.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from scipy import stats as sps

from .._validate import bad, check_memory_budget
from .formula import chain
from .inputs import _Activations, _as_activations, _as_concepts
from .params import SEARCH_PARAMS, check_search_params
from .result import Explanation, ExplanationResult, UnitExplanations
from .stats import (
    auroc_from_ranksum,
    mannwhitney_pvalues,
    pattern_ranksums,
    pattern_ranksums_torch,
)

__all__ = ["explain", "SEARCH_PARAMS", "check_search_params"]

log = logging.getLogger(__name__)

_NEG_INF = -math.inf
_DEFAULT_BUDGET = 1 << 30  # bytes of working memory per chunk of units
_HASH_SEED = 0x1A7E57
#: The default (dedupe) search keeps, besides the ``beam_size`` best formulas within the
#: fraction limits, this many more formulas chosen without the fraction limits (times
#: ``beam_size``), so that e.g. ``a | b`` is reachable when ``a`` and ``b`` are each rarer
#: than ``min_fraction``.
_EXPLORE_FACTOR = 1
#: Tests set this to run the torch-only code path of GPUs (ranking by torch.sort, torch
#: sparse products) on the CPU, so that it is checked where no GPU is available.
_TORCH_PATH_ON_CPU = False


# ----------------------------------------------------------------------------- patterns


@dataclass
class _Patterns:
    """Distinct label rows: ``inverse[i]`` is the pattern of sample ``i``."""

    inverse: np.ndarray  # (N,) int64
    counts: np.ndarray  # (M,) int64
    matrix: np.ndarray | sp.csr_matrix  # (M, C) bool


def _row_hashes(y, z: np.ndarray) -> np.ndarray:
    if sp.issparse(y):
        return np.asarray(y.astype(np.float64) @ z)
    out = np.empty((y.shape[0], z.shape[1]), dtype=np.float64)
    step = max(1, (1 << 22) // max(1, y.shape[1]))  # about 32 MiB of float64 at a time
    for s in range(0, y.shape[0], step):
        out[s:s + step] = y[s:s + step].astype(np.float64) @ z
    return out


def _collapse(y) -> _Patterns:
    """Group identical label rows (exact: hashes are verified, with a fallback)."""
    c = y.shape[1]
    rng = np.random.default_rng(_HASH_SEED)
    z = rng.integers(0, 1 << 30, size=(c, 2)).astype(np.float64)
    h = _row_hashes(y, z)
    _, first, inverse = np.unique(h, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    rep = first[inverse]
    if sp.issparse(y):
        same = (y != y[rep]).nnz == 0
    else:
        same = all(
            np.array_equal(y[s:s + 65536], y[rep[s:s + 65536]])
            for s in range(0, y.shape[0], 65536)
        )
    if not same:  # a hash collision: exact but slower grouping
        dense = y.toarray() if sp.issparse(y) else y
        _, first, inverse = np.unique(dense, axis=0, return_index=True, return_inverse=True)
        inverse = inverse.ravel()
    counts = np.bincount(inverse, minlength=len(first))
    return _Patterns(inverse=inverse.astype(np.int64), counts=counts, matrix=y[first])


class _ConceptOp:
    """Products of pattern-indexed vectors with the concept columns, dense or sparse."""

    def __init__(self, pmat, device: torch.device, sparse: bool | None = None,
                 use_scipy: bool | None = None):
        m, c = pmat.shape
        self.m, self.c = m, c
        nnz = pmat.nnz if sp.issparse(pmat) else int(np.count_nonzero(pmat))
        density = nnz / max(1, m * c)
        self.sparse = density < 0.1 if sparse is None else sparse
        self._scipy = self._scipy_p = None
        if use_scipy is None:
            use_scipy = device.type == "cpu"
        if self.sparse and use_scipy:
            self._scipy = sp.csr_matrix(pmat.T, dtype=np.float64)
            self._scipy_p = sp.csr_matrix(pmat, dtype=np.float64)
        elif self.sparse:
            pt = sp.csr_matrix(pmat.T, dtype=np.float64)
            pt.sort_indices()
            with warnings.catch_warnings():  # "sparse CSR support is in beta"
                warnings.simplefilter("ignore", UserWarning)
                self.pt = torch.sparse_csr_tensor(
                    torch.from_numpy(pt.indptr.astype(np.int64)),
                    torch.from_numpy(pt.indices.astype(np.int64)),
                    torch.from_numpy(pt.data),
                    size=(c, m), dtype=torch.float64, check_invariants=False,
                ).to(device)
        else:
            dense = pmat.toarray() if sp.issparse(pmat) else pmat
            self.pt = torch.from_numpy(np.ascontiguousarray(dense.T, dtype=np.float64)).to(device)
        # bool rows of P^T for materialising literal masks
        if m * c <= (1 << 28):
            dense = pmat.toarray() if sp.issparse(pmat) else pmat
            self.rows = torch.from_numpy(np.ascontiguousarray(dense.T)).to(device)
            self._csr = None
        else:
            self.rows = None
            self._csr = sp.csr_matrix(pmat.T).astype(bool)
        self.device = device

    def tsum(self, x: torch.Tensor) -> torch.Tensor:
        """``P^T @ x`` for ``x`` of shape (M, R): (C, R), exact for integer-valued x."""
        if self._scipy is not None:
            return torch.from_numpy(np.asarray(self._scipy @ x.numpy()))
        return self.pt @ x

    def masked_sums(self, mask: torch.Tensor, weights: list[torch.Tensor]) -> torch.Tensor:
        """``sum_m mask[k, w, m] * weight[m, k] * P[m, c]`` for each weight: (len, k, W, C).

        ``weights`` are (M, k) (per unit) or (M,) vectors over patterns. With many patterns on
        CPU the masked weights are a sparse matrix (beam supports are small), so the product
        is sparse x sparse; otherwise it is one dense (or dense x sparse) product."""
        k, w, m = mask.shape
        nw = len(weights)
        if self._scipy_p is not None and m > 4096:
            # masks denser than half are summed over their complement:
            # sum over b = (sum over all patterns) - (sum over ~b)
            mk = mask.numpy()
            flip = mk.mean(axis=2) > 0.5  # (k, W)
            kk, ww, mm = np.nonzero(mk ^ flip[:, :, None])
            rows = kk * w + ww
            vals = [(wt.numpy()[mm, kk] if wt.ndim == 2 else wt.numpy()[mm]) for wt in weights]
            x = sp.csr_matrix(
                (np.concatenate(vals),
                 (np.concatenate([rows + i * k * w for i in range(nw)]), np.tile(mm, nw))),
                shape=(nw * k * w, m))
            q = (x @ self._scipy_p).toarray().reshape(nw, k, w, self.c)
            if flip.any():
                for i, wt in enumerate(weights):
                    total = np.asarray(self._scipy @ wt.numpy().reshape(m, -1)).T  # (k|1, C)
                    fk, fw = np.nonzero(flip)
                    q[i, fk, fw] = total[fk if total.shape[0] > 1 else 0] - q[i, fk, fw]
            return torch.from_numpy(q)
        maskf = mask.to(torch.float64)
        parts = [maskf * (wt.T.unsqueeze(1) if wt.ndim == 2 else wt.view(1, 1, -1))
                 for wt in weights]
        x = torch.cat([part.reshape(k * w, m) for part in parts], dim=0)
        del maskf, parts
        return self.tsum(x.T).T.reshape(nw, k, w, self.c)

    def literal_rows(self, lit: torch.Tensor) -> torch.Tensor:
        """Bool masks over patterns of literal codes ``lit`` (any shape): (..., M)."""
        conc = lit % self.c
        neg = (lit >= self.c).unsqueeze(-1)
        if self.rows is not None:
            rows = self.rows[conc]
        else:
            flat = conc.reshape(-1).cpu().numpy()
            rows = torch.from_numpy(self._csr[flat].toarray()).to(self.device)
            rows = rows.reshape(*conc.shape, self.m)
        return rows ^ neg


# ----------------------------------------------------------------------------- selection


def _topk_stable(key: torch.Tensor, t: int, tiepos=None) -> torch.Tensor:
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
    if prior is not None:
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


# ----------------------------------------------------------------------------- the search


@dataclass
class _Beam:
    lits: torch.Tensor  # (k, W, L) int64 literal codes, -1 unused
    ops: torch.Tensor  # (k, W, L) int8 op before literal j (0 AND, 1 OR)
    length: torch.Tensor  # (k, W) int64 number of literals
    mask: torch.Tensor  # (k, W, M) bool
    s2: torch.Tensor  # (k, W) float64 doubled rank sum
    n1: torch.Tensor  # (k, W) float64 support
    h: torch.Tensor  # (k, W) float64 hash of the support (exact integer)
    valid: torch.Tensor  # (k, W) bool
    fresh: torch.Tensor  # (k, W) bool: created at the last depth (not yet extended)

    _FIELDS = ("lits", "ops", "length", "mask", "s2", "n1", "h", "valid", "fresh")

    def signature(self) -> torch.Tensor:
        return torch.stack([self.n1, self.s2, self.h], dim=-1)

    def take(self, idx: torch.Tensor) -> _Beam:
        """Entries at ``idx`` (k, T) (-1: empty slot)."""
        j = idx.clamp(min=0)

        def g(a):
            shape = (*j.shape, *a.shape[2:])
            return torch.gather(a, 1, j.view(*j.shape, *([1] * (a.ndim - 2))).expand(shape))

        out = _Beam(*(g(getattr(self, f)) for f in self._FIELDS))
        out.valid &= idx >= 0
        return out

    @staticmethod
    def cat(a: _Beam, b: _Beam) -> _Beam:
        return _Beam(*(torch.cat([getattr(a, f), getattr(b, f)], dim=1) for f in _Beam._FIELDS))


@dataclass
class _Params:
    length: int
    beam_size: int
    min_fraction: float
    max_fraction: float
    mode: str
    limit_search: int | None
    dedupe: bool
    metric: str = "auroc"

    @property
    def width(self) -> int:
        """Largest beam: the best ``beam_size`` plus, with dedupe, the exploration part."""
        return self.beam_size * (1 + (_EXPLORE_FACTOR if self.dedupe else 0))


def _count_limits(n: int, lo: float, hi: float) -> tuple[float, float]:
    """Smallest and largest support ``s`` with ``lo <= s / n <= hi`` (float comparison)."""
    s = np.arange(n + 1, dtype=np.float64)
    ok = np.flatnonzero((s / n >= lo) & (s / n <= hi))
    if ok.size == 0:
        return math.inf, -math.inf
    return float(ok[0]), float(ok[-1])


class _ChunkSearch:
    """The beam search for one chunk of units (all tensors on one device)."""

    def __init__(self, r2: torch.Tensor, counts: torch.Tensor, n: int, op: _ConceptOp,
                 p: _Params, zhash: torch.Tensor, sd: torch.Tensor | None = None):
        # r2: per-pattern doubled rank sums (AUROC), or per-pattern sums of the centred
        # activations (point-biserial, with ``sd`` the units' standard deviations)
        self.r2, self.counts, self.n, self.op, self.p, self.z = r2, counts, n, op, p, zhash
        self.sd = sd
        self.k = r2.shape[1]
        self.c = op.c
        self.sign = 1.0 if p.mode == "positive" else -1.0
        self.lo, self.hi = _count_limits(n, p.min_fraction, p.max_fraction)

    # -- scoring helpers
    def _value(self, s2: torch.Tensor, n1: torch.Tensor) -> torch.Tensor:
        """The search metric from sums over the support (NaN where undefined)."""
        n = float(self.n)
        if self.p.metric == "auroc":
            return (s2 - n1 * (n1 + 1.0)) / (2.0 * n1 * (n - n1))  # NaN where n1 is 0 or n
        # point-biserial r of the 0/1 support with the centred activations
        sd = self.sd.view(-1, *([1] * (s2.ndim - 1)))
        r = s2 / (sd * torch.sqrt(n1 * (n - n1)))
        return torch.where((n1 > 0) & (n1 < n), r, torch.nan)

    def _keys(self, s2: torch.Tensor, n1: torch.Tensor, ok: torch.Tensor | None):
        """(score within the fraction limits, score outside them), -inf where excluded."""
        auc = self._value(s2, n1)
        if self.sign < 0:
            auc = auc.neg_()
        score = torch.nan_to_num_(auc, nan=_NEG_INF, posinf=_NEG_INF, neginf=_NEG_INF)
        if ok is not None:
            score = score.masked_fill_(~ok, _NEG_INF)
        inside = (n1 >= self.lo) & (n1 <= self.hi)
        return torch.where(inside, score, _NEG_INF), score.masked_fill_(inside, _NEG_INF)

    def _select(self, key: torch.Tensor, want: int, build, sig_of, prior: _Beam | None,
                tiepos=None) -> _Beam:
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
        p, k, c, n = self.p, self.k, self.c, self.n
        dev = self.r2.device
        sc = self.op.tsum(self.r2).T  # (k, C)
        nc = self.op.tsum(self.counts.unsqueeze(1))[:, 0]  # (C,)
        stot = float(n) * (n + 1) if p.metric == "auroc" else 0.0  # centred sums total 0
        self.s_lit = torch.cat([sc, stot - sc], dim=1)  # (k, 2C)
        self.n_lit = torch.cat([nc, n - nc]).unsqueeze(0).expand(k, 2 * c)
        if p.dedupe:
            hc = self.op.tsum(self.z.unsqueeze(1))[:, 0]
            self.h_lit = torch.cat([hc, float(self.z.sum()) - hc]).unsqueeze(0).expand(k, 2 * c)
        else:
            self.h_lit = torch.zeros_like(self.n_lit)
        def_lit = (self.n_lit > 0) & (self.n_lit < n)
        key_in, key_out = self._keys(self.s_lit, self.n_lit, None)
        self.undefined = ~def_lit[0, :c]

        # extension literals: depth-1 order, then by |AUROC - 0.5| descending (stable)
        auc_lit = self._value(self.s_lit, self.n_lit)
        center = 0.5 if p.metric == "auroc" else 0.0
        score_lit = torch.where(def_lit, self.sign * auc_lit, _NEG_INF)
        order1 = torch.argsort(-score_lit, dim=1, stable=True)
        diff = torch.where(def_lit, (auc_lit - center).abs(), -1.0)
        ext = torch.gather(order1, 1, torch.argsort(-torch.gather(diff, 1, order1), dim=1,
                                                    stable=True))
        ls = 2 * c if p.limit_search is None else p.limit_search
        ext = ext[:, :ls]
        self.ls = ls
        # position of each literal in the extension order (ls where not an extension)
        self.ext_rank = torch.full((k, 2 * c), ls, dtype=torch.int64, device=dev)
        self.ext_rank.scatter_(1, ext, torch.arange(ls, device=dev).expand(k, ls))
        self.ext_ok = (self.ext_rank < ls) & def_lit  # (k, 2C)

        L = p.length

        def build_literals(idx: torch.Tensor) -> _Beam:
            j = idx.clamp(min=0)
            t = idx.shape[1]
            lits = torch.full((k, t, L), -1, dtype=torch.int64, device=dev)
            lits[:, :, 0] = j
            return _Beam(
                lits=lits,
                ops=torch.zeros((k, t, L), dtype=torch.int8, device=dev),
                length=torch.ones((k, t), dtype=torch.int64, device=dev),
                mask=self.op.literal_rows(j),
                s2=torch.gather(self.s_lit, 1, j),
                n1=torch.gather(self.n_lit, 1, j),
                h=torch.gather(self.h_lit, 1, j),
                valid=idx >= 0,
                fresh=torch.ones((k, t), dtype=torch.bool, device=dev),
            )

        def sig_literals(idx: torch.Tensor) -> torch.Tensor:
            j = idx.clamp(min=0)
            return torch.stack([torch.gather(a, 1, j)
                                for a in (self.n_lit, self.s_lit, self.h_lit)], dim=-1)

        b = p.beam_size
        # formulas outside the fraction limits are kept apart (as seeds) only where some
        # can exist: 0 < support < N and outside [lo, hi]
        can_be_outside = self.lo > 1 or self.hi < n - 1
        bx = _EXPLORE_FACTOR * b if p.dedupe and can_be_outside else 0
        best = self._select(key_in, b, build_literals, sig_literals, None)
        beam = best
        if bx:
            beam = _Beam.cat(best, self._select(key_out, bx, build_literals, sig_literals,
                                                None))
        for _depth in range(2, L + 1):
            best, beam = self._step(beam, b, bx)
        return best, self.undefined

    def _step(self, beam: _Beam, b: int, bx: int):
        k, c = self.k, self.c
        w = beam.mask.shape[1]
        c2 = 2 * c
        # which entries get extended: all (reference), or those not extended before
        parent_ok = beam.valid & (beam.length < self.p.length)
        if self.p.dedupe:
            parent_ok &= beam.fresh
        weights = [self.r2, self.counts] + ([self.z] if self.p.dedupe else [])
        q = self.op.masked_sums(beam.mask, weights)  # (2 or 3, k, W, C)
        sa, na = q[0], q[1]
        sb, nb = beam.s2.unsqueeze(2), beam.n1.unsqueeze(2)  # (k, W, 1)
        # candidate statistics in literal-code order: (k, W, 2C, 2), last axis AND, OR
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
            h_c = h_c.reshape(k, -1)
        ok = parent_ok.view(k, w, 1, 1) & self.ext_ok.view(k, 1, c2, 1)
        if self.p.dedupe:
            # b & l == b, b & l == l, b | l == b, b | l == l: not new formulas
            ok = ok & (n_c != nb.unsqueeze(3)) & (n_c != nl.unsqueeze(3))
        key_in, key_out = self._keys(s_c, n_c, ok)
        del ok
        key_in, key_out = key_in.reshape(k, -1), key_out.reshape(k, -1)
        s_c, n_c = s_c.reshape(k, -1), n_c.reshape(k, -1)

        bkey_in, bkey_out = self._keys(beam.s2, beam.n1, beam.valid)
        ls = self.ls

        def tiepos(r: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
            q_i = (col - w).clamp(min=0)
            par = torch.div(q_i, 2 * c2, rounding_mode="floor")
            lit = torch.div(q_i, 2, rounding_mode="floor") % c2
            pos = w + (par * ls + self.ext_rank[r, lit]) * 2 + q_i % 2
            return torch.where(col < w, col, pos)

        def build(idx: torch.Tensor) -> _Beam:
            ok_i = idx >= 0
            old = idx < w
            old_part = beam.take(torch.where(old & ok_i, idx, -1))
            q_i = (idx - w).clamp(min=0)
            parent = torch.div(q_i, 2 * c2, rounding_mode="floor")
            lit = torch.div(q_i, 2, rounding_mode="floor") % c2
            op_i = (q_i % 2).to(torch.int8)
            par = beam.take(torch.where(~old & ok_i, parent, -1))
            lmask = self.op.literal_rows(lit)
            new_mask = torch.where(op_i.bool().unsqueeze(-1), par.mask | lmask,
                                   par.mask & lmask)
            slot = par.length.unsqueeze(-1)  # the new literal goes after the parent's
            new_lits = par.lits.scatter(2, slot, lit.unsqueeze(-1))
            new_ops = par.ops.scatter(2, slot, op_i.unsqueeze(-1))
            sel_old = old.unsqueeze(-1)
            return _Beam(
                lits=torch.where(sel_old, old_part.lits, new_lits),
                ops=torch.where(sel_old, old_part.ops, new_ops),
                length=torch.where(old, old_part.length, par.length + 1),
                mask=torch.where(sel_old, old_part.mask, new_mask),
                s2=torch.where(old, old_part.s2, torch.gather(s_c, 1, q_i)),
                n1=torch.where(old, old_part.n1, torch.gather(n_c, 1, q_i)),
                h=(torch.where(old, old_part.h, torch.gather(h_c, 1, q_i)) if h_c is not None
                   else old_part.h),
                valid=torch.where(old, old_part.valid, par.valid) & ok_i,
                fresh=~old,
            )

        def sig_of(idx: torch.Tensor) -> torch.Tensor:
            old = idx < w
            j = idx.clamp(min=0)
            q_i = (idx - w).clamp(min=0)
            return torch.stack([
                torch.where(old, torch.gather(bf, 1, j.clamp(max=w - 1)), torch.gather(cf, 1, q_i))
                for bf, cf in ((beam.n1, n_c), (beam.s2, s_c), (beam.h, h_c))], dim=-1)

        best = self._select(torch.cat([bkey_in, key_in], dim=1), b, build, sig_of, None,
                            tiepos)
        if bx:
            explore = self._select(torch.cat([bkey_out, key_out], dim=1), bx, build, sig_of,
                                   None, tiepos)
            return best, _Beam.cat(best, explore)
        return best, best


# ----------------------------------------------------------------------------- public API


def _parse_budget(memory_budget) -> int:
    return check_memory_budget("memory_budget", memory_budget)


def _chunk_units(n: int, m: int, c: int, p: _Params, budget: int) -> int:
    w = p.width
    ls = 2 * c if p.limit_search is None else p.limit_search
    per_unit = (
        8 * 7 * n  # ranking
        + 8 * 3 * m  # pattern rank sums
        + 8 * 2 * 2 * w * m  # masked rank sums and counts
        + 8 * 2 * w * c  # products
        + 8 * 2 * w * ls * 9  # candidate statistics
        + 2 * w * m * 8  # materialised masks
    )
    return max(1, min(4096, budget // max(1, per_unit)))


def _search_block(m: int, c: int, p: _Params, budget: int, device: torch.device) -> int:
    """Units searched at once. On CPU, candidate arrays of about 8 MB stay in cache; on a
    GPU, blocks are as large as the memory budget allows (fewer, larger kernels). The masked
    rank sums over patterns take at most an eighth of the budget."""
    w = p.width
    per_unit_candidates = 8 * w * 4 * c
    per_unit_patterns = 8 * 4 * w * m
    cache = (8 << 20) if device.type == "cpu" else budget // 16
    return max(1, min(4096, cache // per_unit_candidates, (budget // 8) // per_unit_patterns))


def _resolve_device(device, activations: _Activations) -> torch.device:
    if device is None:
        data = activations.data
        return data.device if isinstance(data, torch.Tensor) else torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise bad("device", "a torch device such as 'cpu' or 'cuda'", device) from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise bad("device", "an available device (CUDA is not available here)", device)
    return dev


def explain(
    activations,
    concepts,
    *,
    length: int = 3,
    beam_size: int = 5,
    min_fraction: float = 0.0,
    max_fraction: float = 0.5,
    mode: str = "positive",
    limit_search: int | None = None,
    dedupe: bool = True,
    device=None,
    memory_budget: int | str | None = None,
    progress: Callable[[int, int], Any] | None = None,
    metric: str = "auroc",
    unit_ids: Sequence[Any] | None = None,
) -> ExplanationResult:
    """Explain every unit of a layer with logical formulas over concepts (INVERT).

    For each unit, a beam search over formulas built from concepts with NOT (on single
    concepts), AND and OR finds those whose 0/1 labels best separate the unit's high from
    its low activations, scored by exact AUROC, among formulas whose support fraction lies
    in ``[min_fraction, max_fraction]``.

    Parameters
    ----------
    activations : array-like or torch.Tensor, shape (N,) or (N, K)
        Activations of K units over N samples (finite numbers). An object with a
        ``unit_ids`` attribute (an activation set) names the units.
    concepts : array-like, torch.Tensor, scipy.sparse matrix or concept set, shape (N, C)
        Boolean (or 0/1) concept labels. A concept set (an object with ``names`` and
        ``matrix``) makes formulas print concept names.
    length : int, default 3
        Maximum number of literals in a formula (``L``).
    beam_size : int, default 5
        Beam width ``B`` and the number of explanations returned per unit.
    min_fraction, max_fraction : float, default 0.0 and 0.5
        Limits on the share of samples where a returned formula holds.
    mode : {"positive", "negative"}
        ``positive`` seeks formulas with high AUROC (the concept raises the unit),
        ``negative`` with low AUROC.
    limit_search : int, optional
        Only the ``limit_search`` literals furthest from AUROC 0.5 extend formulas
        (default: all ``2 C`` literals).
    dedupe : bool, default True
        The improved search (see Notes). ``False`` reproduces the reference implementation's
        beam exactly: every intermediate formula must satisfy the fraction limits, and
        duplicates are kept.
    device : str or torch.device, optional
        Where to compute (``"cpu"``, ``"cuda"``); default: where ``activations`` lives.
    memory_budget : int or str, optional
        Working memory per chunk of units (bytes, or a size such as ``"2GiB"``);
        default 1 GiB.
    progress : callable, optional
        Called as ``progress(units_done, n_units)`` after each block of units (e.g. to
        update a progress bar).
    metric : {"auroc", "point_biserial"}
        What the search maximises. ``"point_biserial"`` (the correlation of the formula's
        0/1 labels with the raw activations) decomposes over label patterns like AUROC
        (sums of activations instead of rank sums); the reported ``auroc`` and p-values stay
        exact, and the metric's value is the ``point_biserial`` extra.
    unit_ids : sequence, optional
        Names of the K units (default: those of an activation set, else positions).

    Returns
    -------
    ExplanationResult
        ``result[k]`` is the best-first list of :class:`~invert.engine.result.Explanation` of unit
        ``k`` (empty, with a ``reason``, for a constant unit or when no formula fits the
        fraction limits).

    Notes
    -----
    AUROC is the Mann-Whitney ``U / (n1 n0)`` from float64 mid-rank sums of the raw
    activations, exact on CPU and CUDA. Concepts that are all-zero or all-one have no AUROC
    and never enter a formula (``result.undefined_concepts``).

    With ``dedupe=True`` (default), the beam holds the ``beam_size`` best formulas within
    the fraction limits *and* ``beam_size`` best formulas regardless of them, so
    formulas such as ``a | b`` with ``a`` and ``b`` each rarer than ``min_fraction`` are
    reachable; only returned formulas must satisfy the limits. A candidate whose support
    equals that of a formula already kept, of its parent or of its new literal is dropped
    (the shorter, earlier one stays).

    Ties in AUROC are broken by position: the formula found earlier wins. At depth 1 the
    order is ``c0 .. c(C-1), ~c0 .. ~c(C-1)``; at later depths the previous beam comes
    first (best first), then new candidates in the order (beam entry, extension literal,
    AND before OR); extension literals are ordered by ``|AUROC - 0.5|`` descending, ties
    in the depth-1 order. With ``dedupe=False`` this is exactly the reference's stable
    order.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = rng.random((400, 6)) < 0.2
    >>> a = (y[:, 1] | y[:, 4]) + 0.1 * rng.standard_normal(400)
    >>> res = explain(a, y, length=2, beam_size=3)
    >>> str(res[0][0].formula)
    '4 | 1'
    >>> round(res[0][0].auroc, 3) > 0.95
    True
    """
    checked = check_search_params(
        dict(length=length, beam_size=beam_size, min_fraction=min_fraction,
             max_fraction=max_fraction, mode=mode, dedupe=dedupe, metric=metric), None)
    length, beam_size = checked["length"], checked["beam_size"]
    min_fraction, max_fraction = checked["min_fraction"], checked["max_fraction"]
    mode, dedupe, metric = checked["mode"], checked["dedupe"], checked["metric"]
    budget = _parse_budget(memory_budget)

    acts, own_ids = _as_activations(activations)
    n, k_units = acts.shape
    if unit_ids is None:
        unit_ids = own_ids
    elif len(unit_ids) != k_units:
        raise bad("unit_ids", f"{k_units} ids (one per unit)", f"{len(unit_ids)} ids", raw=True)
    else:
        unit_ids = list(unit_ids)
    y, names = _as_concepts(concepts, n)
    c = y.shape[1]
    limit_search = check_search_params({"limit_search": limit_search}, c)["limit_search"]
    dev = _resolve_device(device, acts)
    p = _Params(length, beam_size, min_fraction, max_fraction, mode, limit_search, dedupe,
                metric)

    pats = _collapse(y)
    m = len(pats.counts)
    log.debug("explain: N=%d K=%d C=%d -> %d label patterns", n, k_units, c, m)
    torch_path = dev.type != "cpu" or _TORCH_PATH_ON_CPU
    op = _ConceptOp(pats.matrix, dev, use_scipy=not torch_path)
    inverse_t = torch.from_numpy(pats.inverse).to(dev)
    counts_t = torch.from_numpy(pats.counts.astype(np.float64)).to(dev)
    hash_bits = min(52, 53 - max(1, m).bit_length())  # sums over patterns stay < 2**53
    zhash = torch.from_numpy(
        np.random.default_rng(_HASH_SEED + 1).integers(0, 1 << hash_bits, size=m)
        .astype(np.float64)).to(dev)
    chunk = _chunk_units(n, m, c, p, budget)
    sub = _search_block(m, c, p, budget, dev)

    units: list[UnitExplanations] = []
    undefined = np.zeros(c, dtype=bool)
    for start in range(0, k_units, chunk):
        sl = slice(start, min(k_units, start + chunk))
        block = acts.block(sl)  # only this chunk of units is in memory
        if not torch_path:
            pr2_np, tie_np = pattern_ranksums(block, pats.inverse, m)
            pr2 = torch.from_numpy(pr2_np)
        else:
            a = torch.from_numpy(block).to(device=dev, dtype=torch.float64)
            pr2, tie = pattern_ranksums_torch(a, inverse_t, m)
            tie_np = tie.cpu().numpy()
            del a
        kc = pr2.shape[1]
        sums = sd = None
        if metric == "point_biserial":
            centred = block.astype(np.float64) - block.mean(axis=0, dtype=np.float64)
            sd = torch.from_numpy(np.sqrt((centred**2).mean(axis=0))).to(dev)
            sums = torch.from_numpy(np.stack([np.bincount(pats.inverse, weights=centred[:, j],
                                                          minlength=m)
                                              for j in range(kc)], axis=1)).to(dev)
            del centred
        for s0 in range(0, kc, sub):  # cache-sized blocks of units for the beam search
            s1 = min(kc, s0 + sub)
            values = None
            if sums is None:
                best, und = _ChunkSearch(pr2[:, s0:s1].contiguous(), counts_t, n, op, p,
                                         zhash).run()
            else:
                search = _ChunkSearch(sums[:, s0:s1].contiguous(), counts_t, n, op, p, zhash,
                                      sd[s0:s1])
                best, und = search.run()
                values = search._value(best.s2, best.n1).cpu().numpy()
                # exact AUROC and p-values of the chosen formulas from the rank sums
                best.s2 = torch.einsum("kwm,mk->kw", best.mask.to(torch.float64),
                                       pr2[:, s0:s1].to(dev))
            undefined |= und.cpu().numpy()
            units.extend(_to_units(best, tie_np[s0:s1], n, c, start + s0, p, names, unit_ids,
                                   pats.inverse, block[:, s0:s1], values))
            if progress is not None:
                progress(len(units), k_units)
        del block

    params = {key: value for key, value in zip(SEARCH_PARAMS, (
        length, beam_size, min_fraction, max_fraction, mode, limit_search, dedupe, metric),
        strict=True)}
    und_names = [names[i] if names else str(i) for i in np.flatnonzero(undefined)]
    if und_names:
        log.info("%d concepts are all-zero or all-one and were not used: %s",
                 len(und_names), ", ".join(und_names[:10]))
    return ExplanationResult(units=units, concept_names=names, undefined_concepts=und_names,
                             params=params, n_samples=n)


def _to_units(best: _Beam, tie: np.ndarray, n: int, c: int, start: int, p: _Params, names,
              unit_ids, inverse: np.ndarray, block: np.ndarray,
              values: np.ndarray | None = None) -> list[UnitExplanations]:
    lits = best.lits.cpu().numpy()
    ops = best.ops.cpu().numpy()
    lens = best.length.cpu().numpy()
    s2 = best.s2.cpu().numpy()
    n1 = best.n1.cpu().numpy()
    valid = best.valid.cpu().numpy()
    constant = tie >= float(n) ** 3 - n if n > 1 else np.ones_like(tie, dtype=bool)
    auc = auroc_from_ranksum(s2, n1, float(n))
    with np.errstate(all="ignore"):
        pv, lp = mannwhitney_pvalues(s2, n1, n, tie[:, None])
    out = []
    for i in range(lits.shape[0]):
        unit = start + i
        uid = unit_ids[unit] if unit_ids is not None else unit
        if constant[i]:
            out.append(UnitExplanations(unit=unit, unit_id=uid,
                                        reason="constant unit: all activations are equal"))
            continue
        items = []
        for j in np.flatnonzero(valid[i]):
            ln = int(lens[i, j])
            codes = lits[i, j, :ln]
            literals = [(int(x) % c, bool(x >= c)) for x in codes]
            opstr = ["|" if o else "&" for o in ops[i, j, 1:ln]]
            formula = chain(literals, opstr, names)
            p_val, l_p = float(pv[i, j]), float(lp[i, j])
            nn1 = int(n1[i, j])
            if (min(nn1, n - nn1) <= 8) and tie[i] == 0:
                # scipy's 'auto' uses the exact distribution here
                mask = best.mask[i, j].cpu().numpy()[inverse]
                a_u = block[:, i].astype(np.float64)
                p_val = float(sps.mannwhitneyu(a_u[~mask], a_u[mask],
                                               alternative="two-sided", method="auto").pvalue)
                l_p = math.log10(p_val) if p_val > 0 else l_p
            items.append(Explanation(
                formula=formula, auroc=float(auc[i, j]), fraction=nn1 / n, support=nn1,
                length=ln, p_value=p_val, log10_p_value=l_p, unit=unit, rank=len(items),
                extras={} if values is None else {p.metric: float(values[i, j])}))
        reason = None if items else (
            f"no formula with a defined AUROC satisfies min_fraction={p.min_fraction} <= "
            f"fraction <= max_fraction={p.max_fraction}")
        out.append(UnitExplanations(items, unit=unit, unit_id=uid, reason=reason))
    return out
