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
        density = nnz / max(1, m * c)
        self.sparse = density < 0.1 if sparse is None else sparse
        self._scipy: Any = None  # P^T and P as scipy CSR (sparse products on CPU)
        self._scipy_p: Any = None
        if use_scipy is None:
            use_scipy = device.type == "cpu"
        if self.sparse and use_scipy:
            self._scipy = sp.csr_matrix(pmat.T, dtype=np.float64)
            self._scipy_p = sp.csr_matrix(pmat, dtype=np.float64)
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

    def masked_sums_t(self, mask: torch.Tensor, weights: list[torch.Tensor]) -> Any:
        """``sum_m mask[k, w, m] * weight[m, k] * P[m, c]`` for each weight, as
        (len(weights), C, W, k): the unit axis innermost, for the scan. A numpy array on the
        scipy path (CPU), else a tensor.

        ``weights`` are (M, k) (per unit) or (M,) vectors over patterns. With many patterns on
        CPU the masked weights are a sparse matrix (beam supports are small), so the product
        is sparse x sparse; otherwise it is one dense (or sparse x dense) product. Sums run
        over patterns in ascending order on the scipy paths."""
        k, w, m = mask.shape
        nw = len(weights)
        if self._scipy_p is not None and m > 4096:
            return self._sparse_masked_sums(mask, weights)
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

    def _sparse_masked_sums(self, mask: torch.Tensor, weights: list[torch.Tensor]
                            ) -> np.ndarray:
        """:meth:`masked_sums_t` as scipy sparse x sparse products (CPU, many patterns)."""
        k, w, m = mask.shape
        nw = len(weights)
        # masks denser than half are summed over their complement:
        # sum over b = (sum over all patterns) - (sum over ~b)
        mk = mask.numpy()
        flip = mk.mean(axis=2) > 0.5  # (k, W)
        kk, ww, mm = np.nonzero(mk ^ flip[:, :, None])
        cols = ww * k + kk
        out = np.empty((nw, self.c, w, k), dtype=np.float64)
        fk, fw = np.nonzero(flip)
        for i, wt in enumerate(weights):
            wn = wt.numpy()
            xt = sp.csr_matrix((wn[mm, kk] if wn.ndim == 2 else wn[mm], (mm, cols)),
                               shape=(m, w * k))
            q = (self._scipy @ xt).toarray().reshape(self.c, w, k)
            if fk.size:
                total = np.asarray(self._scipy @ wn.reshape(m, -1))  # (C, k|1)
                tot = total[:, fk] if total.shape[1] > 1 else total[:, :1]
                q[:, fw, fk] = tot - q[:, fw, fk]
            out[i] = q
        return out

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
