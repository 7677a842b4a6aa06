"""Whole-layer beam search for formulas that best separate high from low activations.

The engine behind :func:`invert.explain`. For a chunk of units at a time it

1. ranks each unit once (doubled mid-ranks, exact integers in float64);
2. collapses samples with identical label rows into *patterns* and sums ranks per pattern
   (:mod:`invert.engine.patterns`);
3. runs the beam search on cache-sized blocks of units (:mod:`invert.engine.beam`): every
   candidate of a step is scored, for every unit of the block, from one product of the beam
   entries' masked rank sums with the pattern-by-concept matrix (dense or sparse):
   ``S(b & c) = (r * b) . y_c``, ``S(b & ~c) = S(b) - S(b & c)``,
   ``S(b | l) = S(b) + S(l) - S(b & l)``, and the same for counts, so that
   ``AUROC = (S - n1 (n1 + 1) / 2) / (n1 n0)`` is exact;
4. keeps the beam with a deterministic, stable top-k;
5. turns the best formulas into :class:`~invert.engine.result.Explanation` with exact AUROC
   and p-values.

See the module :mod:`invert` docstring and the README for the semantics.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import numpy as np
import torch
from scipy import stats as sps

from .._validate import bad, check_choice, check_int, check_memory_budget
from .beam import _Beam, _ChunkSearch
from .formula import chain
from .inputs import ActivationsLike, ConceptsLike, _Activations, _as_activations, as_labels
from .params import SEARCH_PARAMS, SearchParams, check_search_params, resolve_device
from .patterns import _collapse, _ConceptOp, _Patterns, _support_hash
from .result import Explanation, ExplanationResult, UnitExplanations
from .stats import (
    auroc_from_ranksum,
    mannwhitney_pvalues,
    pattern_ranksums,
    pattern_ranksums_torch,
)
from .threads import default_threads, ordered_map, torch_threads

__all__ = ["explain", "SEARCH_PARAMS", "check_search_params"]

log = logging.getLogger(__name__)

#: ``"auto"``: scipy and numpy where they are faster (CPU), torch on a GPU; ``"torch"``: the
#: torch-only code path of GPUs (ranking by torch.sort, torch sparse products) on any device.
Kernel = Literal["auto", "torch"]


def explain(
    activations: ActivationsLike,
    concepts: ConceptsLike,
    *,
    length: int = 3,
    beam_size: int = 5,
    min_fraction: float = 0.0,
    max_fraction: float = 0.5,
    mode: str = "positive",
    limit_search: int | None = None,
    dedupe: bool = True,
    device: str | torch.device | None = None,
    memory_budget: int | str | None = None,
    progress: Callable[[int, int], Any] | None = None,
    metric: str = "auroc",
    unit_ids: Sequence[Any] | None = None,
    kernel: Kernel = "auto",
    threads: int | None = None,
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
    kernel : {"auto", "torch"}
        For testing the GPU code path on the CPU: ``"torch"`` runs the torch-only code path
        of GPUs (ranking by ``torch.sort``, torch sparse products) on any device; results
        are identical. ``"auto"`` (default) uses numpy and scipy on the CPU.
    threads : int, optional
        Worker threads, each searching its own blocks of units with one torch thread
        (``torch.set_num_threads(1)`` during the call; the caller's setting is restored).
        Default: the CPUs available to the process, at most 4 (1 on a GPU). Independent
        blocks keep a busy machine from stalling the search (see
        :mod:`invert.engine.threads`); results do not depend on it.

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
    p = SearchParams.from_kwargs(
        None, length=length, beam_size=beam_size, min_fraction=min_fraction,
        max_fraction=max_fraction, mode=mode, dedupe=dedupe, metric=metric)
    budget = check_memory_budget("memory_budget", memory_budget)
    kernel = check_choice("kernel", kernel, ("auto", "torch"))
    if progress is not None and not callable(progress):
        raise bad("progress", "a callable progress(units_done, n_units) or None", progress)
    if threads is not None:
        threads = check_int("threads", threads, minimum=1)
    acts, ids = _activations_and_ids(activations, unit_ids)
    y, names = as_labels(concepts, acts.shape[0])
    p = SearchParams.from_kwargs(y.shape[1], **(p.as_dict() | {"limit_search": limit_search}))
    dev = resolve_device(device, acts)
    workers = default_threads(dev) if threads is None else threads
    layer = _Layer.prepare(y, p, dev, budget, torch_path=dev.type != "cpu" or kernel == "torch",
                           threads=workers)
    with torch_threads(1):
        units, undefined = _search_units(acts, layer, names, ids, progress)
    und_names = [names[i] if names else str(i) for i in np.flatnonzero(undefined)]
    if und_names:
        log.info("%d concepts are all-zero or all-one and were not used: %s",
                 len(und_names), ", ".join(und_names[:10]))
    return ExplanationResult(units=units, concept_names=names, undefined_concepts=und_names,
                             params=p.as_dict(), n_samples=layer.n)


# ----------------------------------------------------------------------------- stages


def _activations_and_ids(activations: ActivationsLike, unit_ids: Sequence[Any] | None
                         ) -> tuple[_Activations, list[Any] | None]:
    """Checked activations and the unit ids: ``unit_ids``, else the activation set's."""
    acts, own_ids = _as_activations(activations)
    k_units = acts.shape[1]
    if unit_ids is None:
        return acts, own_ids
    if len(unit_ids) != k_units:
        raise bad("unit_ids", f"{k_units} ids (one per unit)", f"{len(unit_ids)} ids", raw=True)
    return acts, list(unit_ids)


@dataclass
class _Layer:
    """What every chunk of units shares: the label patterns, the concept products, the
    parameters, and the chunk and block sizes."""

    p: SearchParams
    n: int  # samples
    c: int  # concepts
    pats: _Patterns
    op: _ConceptOp
    device: torch.device
    torch_path: bool  # rank and multiply with torch (GPUs), not numpy and scipy
    inverse: torch.Tensor  # (N,) pattern of each sample, on the device
    counts: torch.Tensor  # (M,) float64 samples per pattern, on the device
    zhash: torch.Tensor  # (M,) support-hash weights, on the device
    chunk: int  # units read at once
    block: int  # units ranked and searched at once (by one worker)
    threads: int  # workers

    @classmethod
    def prepare(cls, y: Any, p: SearchParams, dev: torch.device, budget: int,
                torch_path: bool, threads: int = 1) -> _Layer:
        """Collapse the labels ``y`` (N, C) into patterns and size the chunks."""
        n, c = y.shape
        pats = _collapse(y)
        m = len(pats.counts)
        log.debug("explain: N=%d C=%d -> %d label patterns", n, c, m)
        op = _ConceptOp(pats.matrix, dev, use_scipy=not torch_path)
        return cls(
            p=p, n=n, c=c, pats=pats, op=op, device=dev, torch_path=torch_path,
            inverse=torch.from_numpy(pats.inverse).to(dev),
            counts=torch.from_numpy(pats.counts.astype(np.float64)).to(dev),
            zhash=_support_hash(m, dev),
            chunk=p.chunk_units(n, m, c, budget),
            block=p.search_block(m, c, budget, dev),
            threads=threads,
        )

    @property
    def m(self) -> int:
        """Number of label patterns."""
        return len(self.pats.counts)


@dataclass
class _ChunkSums:
    """Per-pattern sums of a chunk of units: doubled rank sums ``pr2`` (M, k) and tie terms
    ``tie`` (k,); for the point-biserial search also sums of the centred activations
    ``centred`` (M, k) and standard deviations ``sd`` (k,)."""

    pr2: torch.Tensor
    tie: np.ndarray
    centred: torch.Tensor | None = None
    sd: torch.Tensor | None = None


def _chunk_sums(layer: _Layer, block: np.ndarray) -> _ChunkSums:
    """Rank (and, for point-biserial, centre) the chunk ``block`` (N, k) of activations and
    sum over label patterns."""
    m, dev, inverse = layer.m, layer.device, layer.pats.inverse
    if not layer.torch_path:
        pr2_np, tie_np = pattern_ranksums(block, inverse, m)
        pr2 = torch.from_numpy(pr2_np)
    else:
        a = torch.from_numpy(block).to(device=dev, dtype=torch.float64)
        pr2, tie = pattern_ranksums_torch(a, layer.inverse, m)
        tie_np = tie.cpu().numpy()
        del a
    out = _ChunkSums(pr2, tie_np)
    if layer.p.metric == "point_biserial":
        centred = block.astype(np.float64) - block.mean(axis=0, dtype=np.float64)
        out.sd = torch.from_numpy(np.sqrt((centred**2).mean(axis=0))).to(dev)
        out.centred = torch.from_numpy(np.stack(
            [np.bincount(inverse, weights=centred[:, j], minlength=m)
             for j in range(pr2.shape[1])], axis=1)).to(dev)
    return out


def _search_block(layer: _Layer, sums: _ChunkSums, s0: int, s1: int
                  ) -> tuple[_Beam, torch.Tensor, np.ndarray | None]:
    """The beam search on units ``s0:s1`` of a chunk: (the best formulas with exact doubled
    rank sums, the undefined concepts, the metric's values or None for AUROC)."""
    pr2 = sums.pr2[:, s0:s1]
    if sums.centred is None:
        best, und = _ChunkSearch(pr2.contiguous(), layer.counts, layer.n, layer.op, layer.p,
                                 layer.zhash).run()
        return best, und, None
    assert sums.sd is not None
    search = _ChunkSearch(sums.centred[:, s0:s1].contiguous(), layer.counts, layer.n,
                          layer.op, layer.p, layer.zhash, sums.sd[s0:s1])
    best, und = search.run()
    values = search._value(best.s2, best.n1).cpu().numpy()
    # exact AUROC and p-values of the chosen formulas from the rank sums
    best.s2 = torch.einsum("kwm,mk->kw", best.mask.to(torch.float64), pr2.to(layer.device))
    return best, und, values


def _search_units(acts: _Activations, layer: _Layer, names: list[str] | None,
                  unit_ids: list[Any] | None, progress: Callable[[int, int], Any] | None
                  ) -> tuple[list[UnitExplanations], np.ndarray]:
    """Search every unit, a chunk of units in memory at a time, a block at a time on
    ``layer.threads`` workers (each block ranked, searched and turned into results on its
    own): (the explanations of each unit, the undefined concepts as a (C,) bool array)."""
    k_units = acts.shape[1]
    units: list[UnitExplanations] = []
    undefined = np.zeros(layer.c, dtype=bool)
    for start in range(0, k_units, layer.chunk):
        block = acts.block(slice(start, min(k_units, start + layer.chunk)), exact=True)
        one = partial(_unit_block, layer, block, start, names, unit_ids)
        for found, und in ordered_map(one, range(0, block.shape[1], layer.block),
                                      layer.threads):
            units.extend(found)
            undefined |= und
            if progress is not None:
                progress(len(units), k_units)
        del block, one
    return units, undefined


def _unit_block(layer: _Layer, block: np.ndarray, start: int, names: list[str] | None,
                unit_ids: list[Any] | None, s0: int
                ) -> tuple[list[UnitExplanations], np.ndarray]:
    """One worker's job: units ``s0 : s0 + layer.block`` of the chunk ``block`` (whose first
    unit is ``start``) ranked, searched and turned into results; also the undefined
    concepts."""
    cols = block[:, s0:min(block.shape[1], s0 + layer.block)]
    sums = _chunk_sums(layer, cols)
    best, und, values = _search_block(layer, sums, 0, cols.shape[1])
    return (_to_units(best, sums.tie, layer.n, layer.c, start + s0, layer.p, names, unit_ids,
                      layer.pats.inverse, cols, values), und.cpu().numpy())


# ----------------------------------------------------------------------------- results


def _to_units(best: _Beam, tie: np.ndarray, n: int, c: int, start: int, p: SearchParams,
              names: list[str] | None, unit_ids: list[Any] | None, inverse: np.ndarray,
              block: np.ndarray, values: np.ndarray | None = None) -> list[UnitExplanations]:
    """The explanations of the units ``start, start + 1, ...`` of ``best`` (k, B), with
    exact AUROC and p-values (scipy's exact distribution for small groups without ties)."""
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
    name_tuple = tuple(names) if names is not None else None  # shared by every formula
    for i in range(lits.shape[0]):
        unit = start + i
        uid = unit_ids[unit] if unit_ids is not None else unit
        if constant[i]:
            out.append(UnitExplanations(unit=unit, unit_id=uid,
                                        reason="constant unit: all activations are equal"))
            continue
        items: list[Explanation] = []
        for j in np.flatnonzero(valid[i]):
            ln = int(lens[i, j])
            codes = lits[i, j, :ln]
            literals = [(int(x) % c, bool(x >= c)) for x in codes]
            opstr = ["|" if o else "&" for o in ops[i, j, 1:ln]]
            p_val, l_p = float(pv[i, j]), float(lp[i, j])
            nn1 = int(n1[i, j])
            if (min(nn1, n - nn1) <= 8) and tie[i] == 0:
                p_val, l_p = _exact_pvalue(best.mask[i, j], inverse, block[:, i], l_p)
            items.append(Explanation(
                formula=chain(literals, opstr, name_tuple), auroc=float(auc[i, j]),
                fraction=nn1 / n, support=nn1, length=ln, p_value=p_val, log10_p_value=l_p,
                unit=unit, rank=len(items),
                extras={} if values is None else {p.metric: float(values[i, j])}))
        reason = None if items else (
            f"no formula with a defined AUROC satisfies min_fraction={p.min_fraction} <= "
            f"fraction <= max_fraction={p.max_fraction}")
        out.append(UnitExplanations(items, unit=unit, unit_id=uid, reason=reason))
    return out


def _exact_pvalue(pattern_mask: torch.Tensor, inverse: np.ndarray, acts: np.ndarray,
                  log10_p: float) -> tuple[float, float]:
    """The p-value (and log10) of scipy's 'auto' method, which uses the exact distribution
    for a group of at most 8 samples without ties (``log10_p`` stays where it is 0)."""
    mask = pattern_mask.cpu().numpy()[inverse]
    a_u = acts.astype(np.float64)
    p_val = float(sps.mannwhitneyu(a_u[~mask], a_u[mask],
                                   alternative="two-sided", method="auto").pvalue)
    return p_val, (math.log10(p_val) if p_val > 0 else log10_p)
