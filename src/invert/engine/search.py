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
   and p-values;
6. from the same per-pattern sums, bounds what any formula could reach (the *ceiling*) and,
   with ``optimal=True``, proves the best formulas (:mod:`invert.engine.certify`).

See the module :mod:`invert` docstring and the README for the semantics.
"""

from __future__ import annotations

import logging
import math
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, TypeVar

import numpy as np
import torch
from scipy import stats as sps

from .._validate import (
    bad,
    check_bool,
    check_choice,
    check_int,
    check_interval,
    check_memory_budget,
    check_progress,
)
from .beam import _Beam, _ChunkSearch
from .certify import (
    Length3Certificate,
    PatternVocabulary,
    branch_and_bound_length3,
    ceiling,
    optimal_length2,
    prepare_vocabulary,
)
from .formula import LabelColumns, chain
from .inputs import ActivationsLike, ConceptsLike, _Activations, _as_activations, as_labels
from .params import SEARCH_PARAMS, SearchParams, check_search_params, resolve_device
from .patterns import _collapse, _ConceptOp, _Patterns, _support_hash
from .result import Explanation, ExplanationResult, UnitExplanations
from .stats import (
    auroc_from_ranksum,
    centred_activations,
    mannwhitney_pvalues,
    pattern_ranksums,
    pattern_ranksums_torch,
    rank_keys_torch,
)
from .threads import default_threads, ordered_map, torch_threads
from .top import top_sets

__all__ = ["explain", "SEARCH_PARAMS", "check_search_params", "check_certify_params",
           "CERTIFIED_METRICS", "DEFAULT_TIME_BUDGET", "memory_floor"]

log = logging.getLogger(__name__)

R = TypeVar("R")

#: ``"auto"``: scipy and numpy where they are faster (CPU), torch on a GPU; ``"torch"``: the
#: torch-only code path of GPUs (ranking by torch.sort, torch sparse products) on any device.
Kernel = Literal["auto", "torch"]
#: Search metrics whose scores the certificates bound (ceiling, ``optimal=True``).
CERTIFIED_METRICS = ("auroc", "point_biserial")
#: Default seconds of the length-3 branch-and-bound of ``optimal=True``.
DEFAULT_TIME_BUDGET = 60.0


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
    top_q: float | None = None,
    relative_min: bool = False,
    unit_ids: Sequence[Any] | None = None,
    kernel: Kernel = "auto",
    optimal: bool = False,
    time_budget: float = DEFAULT_TIME_BUDGET,
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
        Activations of K units over N samples (finite real numbers), ranked as given:
        float64 as float64, integers exactly (int64 above 2**53 too); float16 and bfloat16
        are widened to float32 (exactly). An object with a ``unit_ids`` attribute (an
        activation set) names the units.
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
        Working memory of the search (bytes, or a size such as ``"2GiB"``; default 1 GiB):
        the chunks of units read, ranked and searched at once, and the read buffer of a
        ``.npy`` file. It does not count the inputs themselves. A budget below the floor of
        the problem (one unit's working memory plus what all units share:
        :func:`invert.engine.search.memory_floor`) warns ``memory_budget X MiB is below the
        floor Y MiB for this problem; using Y MiB`` and uses the floor.
    progress : callable, optional
        Called as ``progress(units_done, n_units)`` after each block of units (e.g. to
        update a progress bar).
    metric : {"auroc", "point_biserial", "top_f1"}
        What the search maximises. ``"point_biserial"`` (the correlation of the formula's
        0/1 labels with the raw activations) decomposes over label patterns like AUROC
        (sums of activations instead of rank sums); ``"top_f1"`` (the F1 of the formula
        against the unit's top set, ``2 |T & m| / (|T| + n1)``: labels for the peak of the
        activations, not the whole distribution) decomposes too (counts of top samples per
        pattern, exact). The reported ``auroc`` and p-values stay exact, and the metric's
        value is an extra of that name (``top_f1`` with ``top_precision`` ``|T & m| / |T|``,
        ``top_recall`` ``|T & m| / n1``, ``top_q`` and ``top_size`` ``|T|``).
        Point-biserial does not depend on the activations' scale (each unit is rescaled by a power
        of two and centred first, so ``1e-300`` to ``1e300`` neither underflow nor
        overflow).
    top_q : float in (0, 1), optional
        With ``metric="top_f1"``: the top set of a unit is every sample at least as high as
        its ``ceil(top_q N)``-th largest activation (ties included, as the ``top_*`` metrics
        of :mod:`invert.trust.metrics`). Default: a sparse unit's firing rate (its positive
        share, when more than half of its activations are 0), else 0.005
        (:mod:`invert.engine.top`).
    relative_min : bool, default False
        With ``metric="top_f1"``: read ``min_fraction`` relative to each unit's top set: a
        returned formula holds on at least ``min_fraction * |T|`` samples (e.g. 0.5: half as
        many as the unit's top samples).
    unit_ids : sequence, optional
        Names of the K units (default: those of an activation set, else positions).
    kernel : {"auto", "torch"}
        For testing the GPU code path on the CPU: ``"torch"`` runs the torch-only code path
        of GPUs (ranking by ``torch.sort``, torch sparse products) on any device; results
        are identical. ``"auto"`` (default) uses numpy and scipy on the CPU.
    optimal : bool, default False
        Prove the answers (see Notes): with ``length <= 2`` return the proven best
        ``beam_size`` formulas of at most ``length`` literals (an exhaustive, pruned search
        instead of the beam); with ``length = 3`` run the beam, then a branch-and-bound from
        its best formula that either proves it optimal or finds a better one (which becomes
        the best explanation) and bounds what any formula of the grammar can reach. Needs
        ``dedupe=True`` and ``length <= 3``; ``limit_search`` limits only the beam.
    time_budget : float, default 60
        Seconds for the length-3 branch-and-bound of all units together (shared out over
        the blocks of units; ``inf``: no limit). Units not reached keep their ceiling as
        their bound.
    threads : int, optional
        Worker threads, each searching its own blocks of units with one torch thread
        (``torch.set_num_threads(1)`` during the call; the caller's setting is restored).
        Default: the CPUs available to the process, at most 4 (1 on a GPU). Independent
        blocks (no barrier, no spinning) keep a busy machine from stalling the search (see
        :mod:`invert.engine.threads`); results do not depend on it.

    Returns
    -------
    ExplanationResult
        ``result[k]`` is the best-first list of :class:`~invert.engine.result.Explanation` of unit
        ``k`` (empty, with a ``reason``, for a constant unit or when no formula fits the
        fraction limits). ``result[k].ceiling`` (and ``result.ceiling``, over units) bounds
        the search metric of any formula within the fraction limits; with ``optimal=True``
        also ``result[k].certified`` and ``result[k].bound``
        (:class:`~invert.engine.result.UnitExplanations`).

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

    Certificates work in pattern space (:mod:`invert.engine.certify`). The *ceiling* of a
    unit is the fractional-knapsack bound on any union of label patterns, so on every
    formula of any length, within the fraction limits (the highest AUROC or r; with
    ``mode="negative"`` the lowest); it costs one sort per unit. ``optimal=True`` at length 2
    scores every literal and every pair of literals, pruned by bounds, and returns the
    ``beam_size`` best distinct supports; ties are broken in the order: literals
    ``c0 .. ~c(C-1)``, then pairs by (smaller literal code, larger code, AND before OR),
    which is the beam's order except among exactly tied pairs of different first literals.
    ``certified`` is then True for every unit with an explanation, and ``bound`` is the best
    formula's score. At length 3 the grammar is the beam's, ``(l1 op l2) op l3``;
    ``certified`` says whether the best formula is proven the best of at most three literals
    within ``time_budget``, and ``bound`` bounds every such formula.

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
    >>> bool(res[0].ceiling >= res[0][0].auroc)
    True
    >>> opt = explain(a, y, length=2, beam_size=3, optimal=True)
    >>> str(opt[0][0].formula), bool(opt[0].certified)
    ('1 | 4', True)
    """
    p = SearchParams.from_kwargs(
        None, length=length, beam_size=beam_size, min_fraction=min_fraction,
        max_fraction=max_fraction, mode=mode, dedupe=dedupe, metric=metric, top_q=top_q,
        relative_min=relative_min)
    optimal, time_budget = check_certify_params(optimal, time_budget, p)
    budget = check_memory_budget("memory_budget", memory_budget)
    kernel = check_choice("kernel", kernel, ("auto", "torch"))
    progress = check_progress("progress", progress)
    if threads is not None:
        threads = check_int("threads", threads, minimum=1)
    acts, ids = _activations_and_ids(activations, unit_ids)
    y, names = as_labels(concepts, acts.shape[0])
    p = SearchParams.from_kwargs(y.shape[1], **(p.as_dict() | {"limit_search": limit_search}))
    dev = resolve_device(device, acts)
    workers = default_threads(dev) if threads is None else threads
    layer = _Layer.prepare(y, p, dev, budget, torch_path=dev.type != "cpu" or kernel == "torch",
                           optimal=optimal, threads=workers, read_bytes=acts.min_read_bytes)
    acts.limit_reads(layer.budget // 8)
    clock = _Clock(time_budget, acts.shape[1])
    with torch_threads(1):
        units, undefined = _search_units(acts, layer, names, ids, progress, clock)
    und_names = [names[i] if names else str(i) for i in np.flatnonzero(undefined)]
    if und_names:
        log.info("%d concepts are all-zero or all-one and were not used: %s",
                 len(und_names), ", ".join(und_names[:10]))
    params = p.as_dict()
    if optimal:
        params |= {"optimal": True, "time_budget": time_budget}
        log.info("optimal: %d of %d units certified at length %d",
                 sum(bool(u.certified) for u in units), len(units), p.length)
    return ExplanationResult(units=units, concept_names=names, undefined_concepts=und_names,
                             params=params, n_samples=layer.n)


def check_certify_params(optimal: Any, time_budget: Any, p: SearchParams
                         ) -> tuple[bool, float]:
    """The checked ``optimal`` and ``time_budget`` of a search with the parameters ``p``."""
    optimal = check_bool("optimal", optimal)
    time_budget = check_interval("time_budget", time_budget, 0.0, low_open=True)
    if not optimal:
        return False, time_budget
    if not p.dedupe:
        raise bad("optimal", "False with dedupe=False (the proofs are of the dedupe search: "
                  "distinct supports, fraction limits on the returned formulas only)", optimal)
    if p.length > 3:
        raise bad("length", "at most 3 with optimal=True (proofs for 1 to 3 literals)",
                  p.length)
    if p.metric not in CERTIFIED_METRICS:
        raise bad("metric", f"one of {CERTIFIED_METRICS} with optimal=True (the metrics the "
                  "bounds cover)", p.metric)
    return True, time_budget


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
    optimal: bool = False  # prove the answers (engine.certify)
    budget: int = 0  # bytes of working memory the chunks and blocks are sized for
    voc: PatternVocabulary | None = None  # the patterns prepared for the proofs
    _columns: LabelColumns | None = None  # the patterns' concept columns (built when needed)

    @classmethod
    def prepare(cls, y: Any, p: SearchParams, dev: torch.device, budget: int,
                torch_path: bool, optimal: bool = False, threads: int = 1,
                read_bytes: int = 0) -> _Layer:
        """Collapse the labels ``y`` (N, C) into patterns and size the chunks within
        ``budget`` bytes, or within the floor (:func:`memory_floor`) when it is higher (with
        a warning); ``read_bytes``: the smallest read of the activations
        (:attr:`~invert.engine.inputs._Activations.min_read_bytes`)."""
        n, c = y.shape
        pats = _collapse(y)
        m = len(pats.counts)
        log.debug("explain: N=%d C=%d -> %d label patterns", n, c, m)
        op = _ConceptOp(pats.matrix, dev, use_scipy=not torch_path)
        floor = memory_floor(p, n, m, c, read_bytes, op_bytes=op.nbytes)
        if budget < floor:
            warnings.warn(f"memory_budget {budget / 2**20:.1f} MiB is below the floor "
                          f"{floor / 2**20:.1f} MiB for this problem; using "
                          f"{floor / 2**20:.1f} MiB", RuntimeWarning, stacklevel=3)
            budget = floor
        voc = (prepare_vocabulary(pats.matrix, pats.counts, n) if optimal and p.length > 1
               else None)
        block = p.search_block(m, c, budget, dev)
        # whole blocks per chunk (blocks of equal size balance the workers)
        chunk = max(block, p.chunk_units(n, m, c, budget) // block * block)
        return cls(
            p=p, n=n, c=c, pats=pats, op=op, device=dev, torch_path=torch_path,
            inverse=torch.from_numpy(pats.inverse).to(dev),
            counts=torch.from_numpy(pats.counts.astype(np.float64)).to(dev),
            zhash=_support_hash(m, dev), chunk=chunk, block=block,
            # no more workers than a chunk has blocks (idle threads only cost memory)
            threads=max(1, min(threads, -(-chunk // block))), optimal=optimal, voc=voc,
            budget=budget,
        )

    @property
    def m(self) -> int:
        """Number of label patterns."""
        return len(self.pats.counts)

    def columns(self) -> LabelColumns:
        """The patterns' concept columns, to evaluate formulas over patterns."""
        if self._columns is None:
            self._columns = LabelColumns(self.pats.matrix)
        return self._columns

    def pattern_mask(self, lits: np.ndarray, ops: np.ndarray) -> np.ndarray:
        """Bool mask (M,) over patterns of the left-deep formula (codes ``lits``, -1 ends)."""
        if self.voc is not None:
            return self.voc.formula(lits, ops)
        ln = int(np.count_nonzero(lits >= 0))
        literals = [(int(x) % self.c, bool(x >= self.c)) for x in lits[:ln]]
        formula = chain(literals, ["|" if o else "&" for o in ops[1:ln]])
        return self.columns().evaluate(formula)

    def certify_kwargs(self) -> dict[str, Any]:
        """The keyword arguments shared by the functions of :mod:`invert.engine.certify`."""
        p = self.p
        return {"min_fraction": p.min_fraction, "max_fraction": p.max_fraction,
                "mode": p.mode, "metric": p.metric}


def memory_floor(p: SearchParams, n: int, m: int, c: int, read_bytes: int = 0,
                 op_bytes: int | None = None) -> int:
    """The working memory (bytes) of a search of ``n`` samples, ``m`` label patterns and
    ``c`` concepts that no ``memory_budget`` can lower: what every chunk shares (the
    label patterns and their hashes, ``64 n + 24 m``, and the pattern-by-concept operator:
    ``op_bytes``, its real size, default the dense ``9 m c``; sparse labels hold about 17
    bytes per nonzero), one unit's chunk and block (:meth:`SearchParams.unit_bytes`,
    :meth:`SearchParams.block_bytes_per_unit`) and the smallest read buffer of a ``.npy``
    file (``read_bytes``: one row). The label matrix the caller passes is not counted."""
    shared = 64 * n + 24 * m + (9 * m * c if op_bytes is None else op_bytes)
    return shared + p.unit_bytes(n, m, c) + p.block_bytes_per_unit(m, c) + read_bytes


class _Clock:
    """The time budget of the length-3 branch-and-bound, shared out over blocks of units:
    each block gets the time left in proportion to its units (unused time carries on).
    Shared by the worker threads: a lock guards the counters."""

    def __init__(self, budget: float, n_units: int):
        self.left = budget
        self.units_left = n_units
        self._lock = threading.Lock()

    def share(self, k: int) -> float:
        """Seconds for the next block of ``k`` units (a token amount once spent: the
        ceilings still certify what they can)."""
        with self._lock:
            return max(1e-6, self.left * k / max(1, self.units_left))

    def spend(self, seconds: float, k: int) -> None:
        with self._lock:
            self.left -= seconds
            self.units_left -= k


@dataclass
class _TopCounts:
    """The top sets of a chunk of units (top-F1 search): samples of each pattern in them
    ``counts`` (M, k) and their sizes ``size`` (k,) (float64, on the device), and the units'
    top shares ``q`` (k,)."""

    counts: torch.Tensor
    size: torch.Tensor
    q: np.ndarray

    @classmethod
    def of(cls, block: np.ndarray, inverse: np.ndarray, m: int, top_q: float | None,
           dev: torch.device) -> _TopCounts:
        """The top sets (:func:`~invert.engine.top.top_sets`) of ``block`` (N, k), summed
        over the patterns ``inverse`` (N,)."""
        ind, q = top_sets(block, top_q)
        counts = np.stack([np.bincount(inverse[ind[:, j]], minlength=m)
                           for j in range(ind.shape[1])], axis=1).astype(np.float64)
        return cls(torch.from_numpy(counts).to(dev),
                   torch.from_numpy(ind.sum(axis=0).astype(np.float64)).to(dev), q)


@dataclass
class _ChunkSums:
    """Per-pattern sums of a chunk of units: doubled rank sums ``pr2`` (M, k) and tie terms
    ``tie`` (k,); for the point-biserial search also sums of the centred activations
    ``centred`` (M, k) and standard deviations ``sd`` (k,); for the top-F1 search the top
    sets' counts ``top``."""

    pr2: torch.Tensor
    tie: np.ndarray
    centred: torch.Tensor | None = None
    sd: torch.Tensor | None = None
    top: _TopCounts | None = None

    def certify_inputs(self) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """What :mod:`invert.engine.certify` reads, as CPU arrays: the sums the metric
        decomposes into (M, k), the standard deviations (point-biserial; else None), and the
        doubled rank sums (M, k)."""
        pr2 = self.pr2.cpu().numpy()
        if self.centred is None:
            return pr2, None, pr2
        assert self.sd is not None
        return self.centred.cpu().numpy(), self.sd.cpu().numpy(), pr2


def _chunk_sums(layer: _Layer, block: np.ndarray) -> _ChunkSums:
    """Rank (and, for point-biserial, centre) the chunk ``block`` (N, k) of activations and
    sum over label patterns."""
    m, dev, inverse = layer.m, layer.device, layer.pats.inverse
    if not layer.torch_path:
        pr2_np, tie_np = pattern_ranksums(block, inverse, m)
        pr2 = torch.from_numpy(pr2_np)
    else:
        a = rank_keys_torch(block, dev)  # exact: int64 stays int64
        pr2, tie = pattern_ranksums_torch(a, layer.inverse, m)
        tie_np = tie.cpu().numpy()
        del a
    out = _ChunkSums(pr2, tie_np)
    if layer.p.metric == "point_biserial":
        centred, sd = centred_activations(block)  # at a safe scale: r does not depend on it
        out.sd = torch.from_numpy(sd).to(dev)
        out.centred = torch.from_numpy(np.stack(
            [np.bincount(inverse, weights=centred[:, j], minlength=m)
             for j in range(pr2.shape[1])], axis=1)).to(dev)
    if layer.p.metric == "top_f1":
        out.top = _TopCounts.of(block, inverse, m, layer.p.top_q, dev)
    return out


def _constant_units(tie: np.ndarray, n: int) -> np.ndarray:
    """Units (k,) whose activations are all equal, from their tie terms."""
    return tie >= float(n) ** 3 - n if n > 1 else np.ones_like(tie, dtype=bool)


@dataclass
class _Found:
    """The formulas kept for a block of k units, best first, as CPU arrays: literal codes
    ``lits`` (k, B, L) (-1 unused), ``ops`` (k, B, L) (the operator before each literal:
    0 AND, 1 OR), ``length``, doubled rank sums ``s2``, supports ``n1``, ``valid`` (k, B);
    the metric's values ``values`` (k, B) for point-biserial and top F1 (None for AUROC);
    the top-F1 search's extras ``top_extras`` (name: (k, B)); and with ``optimal=True`` the
    certificate ``certified``, ``bound`` (k,)."""

    lits: np.ndarray
    ops: np.ndarray
    length: np.ndarray
    s2: np.ndarray
    n1: np.ndarray
    valid: np.ndarray
    values: np.ndarray | None = None
    certified: np.ndarray | None = None
    bound: np.ndarray | None = None
    top_extras: dict[str, np.ndarray] | None = None

    @classmethod
    def from_beam(cls, best: _Beam, values: np.ndarray | None) -> _Found:
        lits, ops, length, s2, n1, valid = (getattr(best, f).cpu().numpy() for f in (
            "lits", "ops", "length", "s2", "n1", "valid"))
        return cls(lits, ops, length, s2, n1, valid, values)

    def scores(self, n: int) -> np.ndarray:
        """The search metric (k, B): AUROC, or the point-biserial values; NaN invalid."""
        vals = auroc_from_ranksum(self.s2, self.n1, float(n)) if self.values is None \
            else self.values
        return np.where(self.valid, vals, np.nan)


def _beam_block(layer: _Layer, sums: _ChunkSums, s0: int, s1: int
                ) -> tuple[_Found, np.ndarray]:
    """The beam search on units ``s0:s1`` of a chunk: (the best formulas with exact doubled
    rank sums, the undefined concepts (C,))."""
    pr2 = sums.pr2[:, s0:s1]
    if sums.top is not None:
        return _top_beam_block(layer, sums.top, pr2, s0, s1)
    if sums.centred is None:
        best, und = _ChunkSearch(pr2.contiguous(), layer.counts, layer.n, layer.op, layer.p,
                                 layer.zhash).run()
        return _Found.from_beam(best, None), und.cpu().numpy()
    assert sums.sd is not None
    search = _ChunkSearch(sums.centred[:, s0:s1].contiguous(), layer.counts, layer.n,
                          layer.op, layer.p, layer.zhash, sums.sd[s0:s1])
    best, und = search.run()
    values = search._value(best.s2, best.n1).cpu().numpy()
    # exact AUROC and p-values of the chosen formulas from the rank sums
    best.s2 = torch.einsum("kwm,mk->kw", best.mask.to(torch.float64), pr2.to(layer.device))
    return _Found.from_beam(best, values), und.cpu().numpy()


def _top_beam_block(layer: _Layer, top: _TopCounts, pr2: torch.Tensor, s0: int, s1: int
                    ) -> tuple[_Found, np.ndarray]:
    """The top-F1 beam search on units ``s0:s1`` of a chunk (the sums are counts of top
    samples): the best formulas with their F1 and top extras, and exact doubled rank sums
    (for AUROC and p-values); the undefined concepts."""
    size = top.size[s0:s1]
    search = _ChunkSearch(top.counts[:, s0:s1].contiguous(), layer.counts, layer.n, layer.op,
                          layer.p, layer.zhash, top=size)
    best, und = search.run()
    values = search._value(best.s2, best.n1).cpu().numpy()
    tp, n1 = best.s2.cpu().numpy(), best.n1.cpu().numpy()
    t = size.cpu().numpy()[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        extras = {"top_precision": tp / t, "top_recall": tp / n1,
                  "top_q": np.broadcast_to(top.q[s0:s1, None], tp.shape),
                  "top_size": np.broadcast_to(t, tp.shape)}
    best.s2 = torch.einsum("kwm,mk->kw", best.mask.to(torch.float64), pr2.to(layer.device))
    found = _Found.from_beam(best, values)
    found.top_extras = extras
    return found, und.cpu().numpy()


def _optimal_block(layer: _Layer, inputs: tuple[np.ndarray, np.ndarray | None, np.ndarray],
                   s0: int, s1: int) -> tuple[_Found, np.ndarray]:
    """The proven best formulas of at most two literals of units ``s0:s1`` of a chunk
    (:func:`~invert.engine.certify.optimal_length2`): (formulas, undefined concepts)."""
    values, sd, pr2 = inputs
    voc = layer.voc
    assert voc is not None
    res = optimal_length2(values[:, s0:s1], layer.pats.counts, voc, layer.n,
                          beam_size=layer.p.beam_size, sd=None if sd is None else sd[s0:s1],
                          **layer.certify_kwargs())
    found = _Found(res.lits, res.ops, res.length, res.s2, res.n1, res.valid)
    if sd is not None:  # point-biserial: the rank sums of the chosen masks
        found.values = res.value
        for i in range(s1 - s0):
            found.s2[i] = res.masks(voc, [i])[0].astype(np.float64) @ pr2[:, s0 + i]
    _certify_exact(found, layer.n)
    return found, ~voc.defined


def _certify_exact(found: _Found, n: int) -> None:
    """The certificate of an exhaustive answer: every unit with a formula is certified."""
    found.certified = found.valid[:, 0].copy()
    found.bound = np.where(found.certified, found.scores(n)[:, 0], np.nan)


def _certify_length3(layer: _Layer, inputs: tuple[np.ndarray, np.ndarray | None, np.ndarray],
                     found: _Found, s0: int, s1: int, constant: np.ndarray,
                     clock: _Clock) -> None:
    """Branch-and-bound from the beam's best (:func:`~invert.engine.certify.
    branch_and_bound_length3`) on the non-constant units ``s0:s1`` of a chunk, within the
    clock's share: sets ``found``'s certificate and puts improved formulas first."""
    values, sd, pr2 = inputs
    k = s1 - s0
    found.certified = np.zeros(k, dtype=bool)
    found.bound = np.full(k, np.nan)
    live = np.flatnonzero(~constant)
    if live.size == 0:
        clock.spend(0.0, k)
        return
    cols = s0 + live
    cert = branch_and_bound_length3(
        values[:, cols], layer.pats.counts, layer.voc, layer.n, found.scores(layer.n)[live, 0],
        sd=None if sd is None else sd[cols], time_budget=clock.share(k),
        **layer.certify_kwargs())
    clock.spend(cert.seconds, k)
    found.certified[live] = cert.certified
    found.bound[live] = cert.bound
    for j in np.flatnonzero(cert.length > 0):
        _put_first(layer, found, int(live[j]), cert, int(j), pr2[:, cols[j]])


def _put_first(layer: _Layer, found: _Found, i: int, cert: Length3Certificate, j: int,
               pr2: np.ndarray) -> None:
    """Make the formula ``j`` that the branch-and-bound found the best of unit ``i`` (the
    others follow, without one of the same support; the last drops out)."""
    lits, ops = cert.lits[j], cert.ops[j]
    mask = layer.pattern_mask(lits, ops)
    rows = [b for b in np.flatnonzero(found.valid[i])
            if not np.array_equal(layer.pattern_mask(found.lits[i, b], found.ops[i, b]), mask)]
    rows = rows[:found.valid.shape[1] - 1]
    width = found.lits.shape[2]
    new = {"lits": np.pad(lits, (0, width - lits.size), constant_values=-1)[:width],
           "ops": np.pad(ops, (0, width - ops.size))[:width].astype(found.ops.dtype),
           "length": cert.length[j], "n1": cert.n1[j], "valid": True,
           "s2": cert.s2[j] if found.values is None else float(mask @ pr2)}
    if found.values is not None:
        new["values"] = cert.value[j]
    for name, first in new.items():
        arr = getattr(found, name)
        kept = arr[i, rows].copy()
        arr[i, 0] = first
        arr[i, 1:1 + len(rows)] = kept
        if name == "valid":
            arr[i, 1 + len(rows):] = False


def _search_units(acts: _Activations, layer: _Layer, names: list[str] | None,
                  unit_ids: list[Any] | None, progress: Callable[[int, int], Any] | None,
                  clock: _Clock) -> tuple[list[UnitExplanations], np.ndarray]:
    """Search every unit, a chunk of units in memory at a time, a block at a time on
    ``layer.threads`` workers (each block ranked, searched, certified and turned into
    results on its own): (the explanations of each unit, the undefined concepts as a (C,)
    bool array). The blocks of all chunks form one stream, so workers never wait at the
    end of a chunk: the next chunk is read while the last blocks of the previous one are
    searched."""
    k_units = acts.shape[1]
    units: list[UnitExplanations] = []
    undefined = np.zeros(layer.c, dtype=bool)

    def jobs() -> Iterator[Callable[[], tuple[list[UnitExplanations], np.ndarray]]]:
        for start in range(0, k_units, layer.chunk):
            block = acts.block(slice(start, min(k_units, start + layer.chunk)), exact=True)
            for s0 in range(0, block.shape[1], layer.block):
                yield partial(_unit_block, layer, block, start, names, unit_ids, clock, s0)
            del block

    for found, und in ordered_map(_call, jobs(), layer.threads):
        units.extend(found)
        undefined |= und
        if progress is not None:
            progress(len(units), k_units)
    return units, undefined


def _call(job: Callable[[], R]) -> R:
    """``job()`` (the task of a worker)."""
    return job()


def _unit_block(layer: _Layer, block: np.ndarray, start: int, names: list[str] | None,
                unit_ids: list[Any] | None, clock: _Clock, s0: int
                ) -> tuple[list[UnitExplanations], np.ndarray]:
    """One worker's job: units ``s0 : s0 + layer.block`` of the chunk ``block`` (whose first
    unit is ``start``) ranked, searched (and certified), and turned into results; also the
    undefined concepts."""
    cols = block[:, s0:min(block.shape[1], s0 + layer.block)]
    sums = _chunk_sums(layer, cols)
    inputs = sums.certify_inputs()
    ceil = _chunk_ceiling(layer, inputs, sums.tie)
    found, und = _find_block(layer, sums, inputs, 0, cols.shape[1], clock)
    return (_to_units(found, sums.tie, layer, start + s0, names, unit_ids, cols, ceil), und)


def _chunk_ceiling(layer: _Layer, inputs: tuple[np.ndarray, np.ndarray | None, np.ndarray],
                   tie: np.ndarray) -> np.ndarray:
    """Each unit's ceiling (k,) (:func:`~invert.engine.certify.ceiling`); NaN for constant
    units, and where the bounds do not cover the metric."""
    values, sd, _ = inputs
    if layer.p.metric not in CERTIFIED_METRICS:
        return np.full(values.shape[1], np.nan)
    ceil = ceiling(values, layer.pats.counts, layer.n, sd=sd, **layer.certify_kwargs())
    ceil[_constant_units(tie, layer.n)] = np.nan
    return ceil


def _find_block(layer: _Layer, sums: _ChunkSums,
                inputs: tuple[np.ndarray, np.ndarray | None, np.ndarray], s0: int, s1: int,
                clock: _Clock) -> tuple[_Found, np.ndarray]:
    """The formulas of units ``s0:s1`` of a chunk: the beam's, or with ``optimal`` the
    proven ones (length 2), the beam's certified (length 1: exhaustive) or improved by the
    branch-and-bound (length 3); and the undefined concepts."""
    if layer.optimal and layer.p.length == 2:
        return _optimal_block(layer, inputs, s0, s1)
    found, und = _beam_block(layer, sums, s0, s1)
    if layer.optimal and layer.p.length == 1:
        _certify_exact(found, layer.n)
    elif layer.optimal:
        _certify_length3(layer, inputs, found, s0, s1,
                         _constant_units(sums.tie[s0:s1], layer.n), clock)
    return found, und


# ----------------------------------------------------------------------------- results


def _to_units(found: _Found, tie: np.ndarray, layer: _Layer, start: int,
              names: list[str] | None, unit_ids: list[Any] | None, block: np.ndarray,
              ceil: np.ndarray) -> list[UnitExplanations]:
    """The explanations of the units ``start, start + 1, ...`` of ``found`` (k, B), with
    exact AUROC and p-values (scipy's exact distribution for small groups without ties),
    and their certificates."""
    n, p = layer.n, layer.p
    constant = _constant_units(tie, n)
    auc = auroc_from_ranksum(found.s2, found.n1, float(n))
    with np.errstate(all="ignore"):
        pv, lp = mannwhitney_pvalues(found.s2, found.n1, n, tie[:, None])
    out = []
    name_tuple = tuple(names) if names is not None else None  # shared by every formula
    for i in range(found.lits.shape[0]):
        unit = start + i
        uid = unit_ids[unit] if unit_ids is not None else unit
        if constant[i]:
            out.append(UnitExplanations(unit=unit, unit_id=uid,
                                        reason="constant unit: all activations are equal",
                                        **_unit_certificate(found, ceil, i, False)))
            continue
        items: list[Explanation] = []
        for j in np.flatnonzero(found.valid[i]):
            ln = int(found.length[i, j])
            codes = found.lits[i, j, :ln]
            literals = [(int(x) % layer.c, bool(x >= layer.c)) for x in codes]
            opstr = ["|" if o else "&" for o in found.ops[i, j, 1:ln]]
            p_val, l_p = float(pv[i, j]), float(lp[i, j])
            nn1 = int(found.n1[i, j])
            if (min(nn1, n - nn1) <= 8) and tie[i] == 0:
                mask = layer.pattern_mask(found.lits[i, j], found.ops[i, j])
                p_val, l_p = _exact_pvalue(mask, layer.pats.inverse, block[:, i], l_p)
            items.append(Explanation(
                formula=chain(literals, opstr, name_tuple), auroc=float(auc[i, j]),
                fraction=nn1 / n, support=nn1, length=ln, p_value=p_val, log10_p_value=l_p,
                unit=unit, rank=len(items), extras=_extras(found, p.metric, i, int(j))))
        reason = None if items else (
            f"no formula with a defined AUROC satisfies min_fraction={p.min_fraction} <= "
            f"fraction <= max_fraction={p.max_fraction}")
        out.append(UnitExplanations(items, unit=unit, unit_id=uid, reason=reason,
                                    **_unit_certificate(found, ceil, i, bool(items))))
    return out


def _extras(found: _Found, metric: str, i: int, j: int) -> dict[str, Any]:
    """The extras of formula ``j`` of unit ``i``: the search metric's value (but AUROC's)
    and the top-F1 search's extras."""
    if found.values is None:
        return {}
    out: dict[str, Any] = {metric: float(found.values[i, j])}
    for name, v in (found.top_extras or {}).items():
        out[name] = int(v[i, j]) if name == "top_size" else float(v[i, j])
    return out


def _unit_certificate(found: _Found, ceil: np.ndarray, i: int, explained: bool
                      ) -> dict[str, Any]:
    """Unit ``i``'s certificate fields: ``certified``, ``bound`` None without
    ``optimal``, False and NaN for a unit without explanations (the ceiling too, for a
    constant unit: ``ceil`` is NaN there)."""
    out: dict[str, Any] = {"ceiling": float(ceil[i])}
    if found.certified is not None and found.bound is not None:
        out["certified"] = bool(found.certified[i]) and explained
        out["bound"] = float(found.bound[i]) if explained else math.nan
    return out


def _exact_pvalue(pattern_mask: np.ndarray, inverse: np.ndarray, acts: np.ndarray,
                  log10_p: float) -> tuple[float, float]:
    """The p-value (and log10) of scipy's 'auto' method, which uses the exact distribution
    for a group of at most 8 samples without ties (``log10_p`` stays where it is 0)."""
    mask = pattern_mask[inverse]
    a_u = sps.rankdata(acts)  # the test depends on ranks only; exact for int64 above 2**53
    p_val = float(sps.mannwhitneyu(a_u[~mask], a_u[mask],
                                   alternative="two-sided", method="auto").pvalue)
    return p_val, (math.log10(p_val) if p_val > 0 else log10_p)
