"""Label patterns: samples with identical label rows collapsed into one pattern, and the
products of pattern-indexed vectors with the concept columns (dense or sparse, scipy on CPU,
torch elsewhere)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

__all__: list[str] = []

_HASH_SEED = 0x1A7E57


@dataclass
class _Patterns:
    """Distinct label rows: ``inverse[i]`` is the pattern of sample ``i``."""

    inverse: np.ndarray  # (N,) int64
    counts: np.ndarray  # (M,) int64
    matrix: Any  # (M, C) bool: a numpy array or a scipy CSR matrix


def _row_hashes(y: Any, z: np.ndarray) -> np.ndarray:
    """``y @ z`` in float64 for a dense (in blocks) or sparse bool matrix ``y``."""
    if sp.issparse(y):
        return np.asarray(y.astype(np.float64) @ z)
    out = np.empty((y.shape[0], z.shape[1]), dtype=np.float64)
    step = max(1, (1 << 22) // max(1, y.shape[1]))  # about 32 MiB of float64 at a time
    for s in range(0, y.shape[0], step):
        out[s:s + step] = y[s:s + step].astype(np.float64) @ z
    return out


def _collapse(y: Any) -> _Patterns:
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


def _support_hash(m: int, device: torch.device) -> torch.Tensor:
    """Random integer weights of the ``m`` patterns whose sum over a support identifies it
    (with high probability); sums over patterns stay exact integers (< 2**53)."""
    hash_bits = min(52, 53 - max(1, m).bit_length())
    z = np.random.default_rng(_HASH_SEED + 1).integers(0, 1 << hash_bits, size=m)
    return torch.from_numpy(z.astype(np.float64)).to(device)


class _ConceptOp:
    """Products of pattern-indexed vectors with the concept columns, dense or sparse."""

    def __init__(self, pmat: Any, device: torch.device, sparse: bool | None = None,
                 use_scipy: bool | None = None):
        m, c = pmat.shape
        self.m, self.c = m, c
        nnz = pmat.nnz if sp.issparse(pmat) else int(np.count_nonzero(pmat))
        self.nnz = nnz
        density = nnz / max(1, m * c)
        self.sparse = density < 0.1 if sparse is None else sparse
        # P as scipy CSR and P^T as its CSC transpose (products with dense operands walk
        # the patterns in order, adding into the concepts' rows: ascending pattern order,
        # as a CSR P^T would, and several times faster)
        self._scipy: Any = None
        self._scipy_p: Any = None
        if use_scipy is None:
            use_scipy = device.type == "cpu"
        if self.sparse and use_scipy:
            self._scipy_p = sp.csr_matrix(pmat, dtype=np.float64)
            self._scipy_p.sort_indices()
            self._scipy = self._scipy_p.T
        elif self.sparse:
            self.pt = _torch_csr(pmat, device)
        else:
            dense = pmat.toarray() if sp.issparse(pmat) else pmat
            self.pt = torch.from_numpy(np.ascontiguousarray(dense.T, dtype=np.float64)).to(device)
        # bool rows of P^T for materialising literal masks
        self.rows: torch.Tensor | None = None
        self._csr: Any = None
        if m * c <= (1 << 28):
            dense = pmat.toarray() if sp.issparse(pmat) else pmat
            self.rows = torch.from_numpy(np.ascontiguousarray(dense.T)).to(device)
        else:
            self._csr = sp.csr_matrix(pmat.T).astype(bool)
        self.device = device

    @property
    def nbytes(self) -> int:
        """Memory the operator holds: the float64 products' matrix (dense, or CSR with
        its transpose sharing the data) and the bool literal rows (dense or CSR)."""
        m, c = self.m, self.c
        prods = 12 * self.nnz + 8 * (m + 1) if self.sparse else 8 * m * c
        rows = m * c if self.rows is not None else 5 * self.nnz + 8 * (c + 1)
        return prods + rows

    def tsum(self, x: torch.Tensor) -> torch.Tensor:
        """``P^T @ x`` for ``x`` of shape (M, R): (C, R), exact for integer-valued x."""
        if self._scipy is not None:
            return torch.from_numpy(np.asarray(self._scipy @ x.numpy()))
        return self.pt @ x

    def masked_sums(self, mask: torch.Tensor, weights: list[torch.Tensor]) -> torch.Tensor:
        """``sum_m mask[k, w, m] * weight[m, k] * P[m, c]`` for each weight: (len, k, W, C)
        (a view of :meth:`masked_sums_t`)."""
        q = self.masked_sums_t(mask, weights)
        return (torch.from_numpy(q) if isinstance(q, np.ndarray) else q).permute(0, 3, 2, 1)

    def masked_sums_t(self, mask: torch.Tensor, weights: list[torch.Tensor],
                      totals: list[torch.Tensor] | None = None) -> Any:
        """``sum_m mask[k, w, m] * weight[m, k] * P[m, c]`` for each weight, as
        (len(weights), C, W, k): the unit axis innermost, for the scan. A numpy array on the
        scipy path (CPU), else a tensor.

        ``weights`` are (M, k) (per unit) or (M,) vectors over patterns. With many patterns on
        CPU the masked weights are a sparse matrix (beam supports are small), so the product
        is sparse x sparse; otherwise it is one dense (or sparse x dense) product. Sums run
        over patterns in ascending order on the scipy paths. ``totals``: each weight's sums
        over all patterns, ``P^T @ weight`` (C, k | 1), if known (the sparse path sums dense
        masks over their complement)."""
        k, w, m = mask.shape
        nw = len(weights)
        if self._scipy_p is not None and m > 4096:
            return self._sparse_masked_sums(mask, weights, totals)
        if self._scipy is not None:
            mk = mask.numpy().transpose(2, 1, 0)  # (M, W, k)
            xt = np.empty((m, w, k), dtype=np.float64)
            out = np.empty((nw, self.c, w, k), dtype=np.float64)
            for i, wt in enumerate(weights):
                wn = wt.numpy()
                np.multiply(mk, wn[:, None, :] if wn.ndim == 2 else wn[:, None, None], out=xt)
                out[i] = np.asarray(self._scipy @ xt.reshape(m, -1)).reshape(self.c, w, k)
            return out
        maskf = mask.to(torch.float64)
        x = torch.cat([(maskf * (wt.T.unsqueeze(1) if wt.ndim == 2 else wt.view(1, 1, -1)))
                       .reshape(k * w, m) for wt in weights], dim=0)  # (nw k W, M)
        del maskf
        return (self.pt @ x.T).reshape(self.c, nw, k, w).permute(1, 0, 3, 2).contiguous()

    def _sparse_masked_sums(self, mask: torch.Tensor, weights: list[torch.Tensor],
                            totals: list[torch.Tensor] | None = None) -> np.ndarray:
        """:meth:`masked_sums_t` from the masks' nonzeros (CPU, many patterns): each
        (pattern, entry) of a mask adds its weight to the entry's sums of the pattern's
        concepts (:func:`_scatter_sums`); masks denser than half are summed over their
        complement: sum over b = (sum over all patterns) - (sum over ~b)."""
        k, w, m = mask.shape
        nw = len(weights)
        mk = mask.numpy()
        flip = 2 * np.count_nonzero(mk, axis=2) > m  # (k, W)
        nz = np.flatnonzero(mk ^ flip[:, :, None] if flip.any() else mk)
        kk, rest = np.divmod(nz, w * m)
        ww, mm = np.divmod(rest, m)
        del nz, rest
        vals = [(wt.numpy()[mm, kk] if wt.ndim == 2 else wt.numpy()[mm]) for wt in weights]
        out = _scatter_sums(self._scipy_p, mm, ww * k + kk, vals, w * k)
        out = out.reshape(nw, self.c, w, k)
        fk, fw = np.nonzero(flip)
        if fk.size:
            for i, wt in enumerate(weights):
                wn = wt.numpy()
                total = (totals[i].numpy() if totals is not None
                         else np.asarray(self._scipy @ wn.reshape(m, -1)))  # (C, k|1)
                tot = total[:, fk] if total.shape[1] > 1 else total[:, :1]
                out[i][:, fw, fk] = tot - out[i][:, fw, fk]
        return out

    def literal_rows(self, lit: torch.Tensor) -> torch.Tensor:
        """Bool masks over patterns of literal codes ``lit`` (any shape): (..., M)."""
        conc = lit % self.c
        neg = (lit >= self.c).unsqueeze(-1)
        if self.rows is not None:
            rows = self.rows[conc]
        else:  # rows of the CSR P^T, written out
            flat = conc.reshape(-1).cpu().numpy()
            ptr, ind = self._csr.indptr, self._csr.indices
            lens = ptr[flat + 1] - ptr[flat]
            owner = np.repeat(np.arange(flat.size), lens)
            pos = np.arange(owner.size) - np.repeat(np.cumsum(lens) - lens, lens)
            out = np.zeros((flat.size, self.m), dtype=bool)
            out[owner, ind[ptr[flat][owner] + pos]] = True
            rows = torch.from_numpy(out).to(self.device).reshape(*conc.shape, self.m)
        return rows ^ neg


#: (pattern, entry, concept) triples handled at once by :func:`_scatter_sums`.
_SCATTER_PAIRS = 1 << 23


def _scatter_sums(p: Any, pat: np.ndarray, col: np.ndarray, vals: list[np.ndarray],
                  width: int) -> np.ndarray:
    """``out[i, c, r] = sum over nonzeros t with col[t] == r of vals[i][t] * P[pat[t], c]``
    for the 0/1 CSR matrix ``p`` (M, C): (len(vals), C, width).

    The nonzeros come grouped by ``col`` (an entry) with ascending patterns within, so each
    output is summed in ascending pattern order, as a sparse product would; batches of about
    :data:`_SCATTER_PAIRS` triples end where an entry ends."""
    c = p.shape[1]
    out = np.zeros((len(vals), c * width), dtype=np.float64)
    deg = np.diff(p.indptr)[pat]
    ends = np.cumsum(deg)
    bounds = np.append(np.flatnonzero(col[1:] != col[:-1]) + 1, pat.size)  # entries end
    t0 = 0
    while t0 < pat.size:
        base = ends[t0 - 1] if t0 else 0
        target = int(np.searchsorted(ends, base + _SCATTER_PAIRS, side="right"))
        j = int(np.searchsorted(bounds, target, side="right")) - 1
        if j >= 0 and bounds[j] > t0:
            t1 = int(bounds[j])
        else:  # one entry alone is larger than a batch
            t1 = int(bounds[np.searchsorted(bounds, t0, side="right")])
        d = deg[t0:t1]
        owner = np.repeat(np.arange(t1 - t0), d)
        pos = np.arange(owner.size) - np.repeat(ends[t0:t1] - d - base, d)
        pos += p.indptr[pat[t0:t1]][owner]
        flat = p.indices[pos].astype(np.int64) * width + col[t0:t1][owner]
        del pos
        for i, v in enumerate(vals):
            out[i] += np.bincount(flat, weights=v[t0:t1][owner], minlength=c * width)
        t0 = t1
    return out


def _torch_csr(pmat: Any, device: torch.device) -> torch.Tensor:
    """``P^T`` as a float64 torch sparse CSR tensor on ``device``."""
    m, c = pmat.shape
    pt = sp.csr_matrix(pmat.T, dtype=np.float64)
    pt.sort_indices()
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(pt.indptr.astype(np.int64)),
            torch.from_numpy(pt.indices.astype(np.int64)),
            torch.from_numpy(pt.data),
            size=(c, m), dtype=torch.float64, check_invariants=False,
        ).to(device)
