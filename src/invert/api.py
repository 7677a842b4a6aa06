"""The public entry point :func:`invert.explain`: the engine's whole-layer search, or with a
``holdout`` the held-out evaluation of :mod:`invert.trust`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ._validate import bad, check_bool, check_int, check_memory_budget, check_progress
from .concepts.tokens import check_aligned
from .engine.inputs import ActivationsLike, ConceptsLike, Labels, activation_source
from .engine.result import ExplanationResult
from .engine.search import DEFAULT_TIME_BUDGET
from .engine.search import explain as _search
from .trust.filler import check_filler as _check_filler
from .trust.holdout import explain_holdout, frequent_concepts

__all__ = ["explain"]


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
    device=None,
    memory_budget: int | str | None = None,
    progress: Callable[[int, int], Any] | None = None,
    holdout: float | None = None,
    random_state=None,
    parsimony: float | str | None = "auto",
    metric: str = "auroc",
    top_q: float | None = None,
    relative_min: bool = False,
    unit_ids: Sequence[Any] | None = None,
    optimal: bool = False,
    time_budget: float = DEFAULT_TIME_BUDGET,
    check_filler: bool = False,
    min_count: int | None = None,
    groups: Sequence[Any] | None = None,
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
    holdout : float, optional
        Share of samples held out: the search runs on the rest (split stratified so that
        every concept with >= 2 samples lands in both parts), and each returned formula gets
        its held-out AUROC, DeLong 95% interval, p-value and support as ``holdout_*`` extras
        (the main figures stay those of the search split). See :mod:`invert.trust`.
    random_state : int or numpy Generator, optional
        Seed of the holdout split.
    parsimony : float, "auto" or None
        With a holdout: a longer formula replaces a shorter one only when its held-out AUROC
        is higher by more than this margin ("auto": 0.005; None: off).
    metric : {"auroc", "point_biserial", "top_f1"}
        What the search maximises. ``"point_biserial"`` (the correlation of the formula's
        0/1 labels with the raw activations) decomposes over label patterns like AUROC
        (sums of activations instead of rank sums); ``"top_f1"`` (the F1 of the formula
        against the unit's top activations: labels for the peak) too (counts of top samples).
        The reported ``auroc`` and p-values stay exact, and the metric's value is an extra of
        that name (with ``top_f1`` also ``top_precision``, ``top_recall``, ``top_q``,
        ``top_size``).
        Point-biserial does not depend on the activations' scale (each unit is rescaled by a power
        of two and centred first, so ``1e-300`` to ``1e300`` neither underflow nor
        overflow).
    top_q : float in (0, 1), optional
        With ``metric="top_f1"``, the share of top activations (default: a sparse unit's
        firing rate, else 0.005; see :func:`invert.engine.search.explain`).
    relative_min : bool, default False
        With ``metric="top_f1"``, ``min_fraction`` is relative to each unit's top set (a
        formula holds on at least ``min_fraction`` times as many samples).
    unit_ids : sequence, optional
        Names of the K units (default: those of an activation set, else positions).
    optimal : bool, default False
        Prove the answers: with ``length <= 2`` return the proven best ``beam_size``
        formulas (an exhaustive, pruned search instead of the beam); with ``length = 3``
        run the beam, then a branch-and-bound from its best formula that proves it optimal
        or finds a better one (which becomes the best explanation). Needs ``dedupe=True``
        and ``length <= 3``. With a holdout, the proofs are of the search split.
    time_budget : float, default 60
        Seconds for the length-3 branch-and-bound of all units together.
    check_filler : bool, default False
        Flag the literals of each unit's best formula that can be dropped (the shorter
        formula's AUROC stays within the full one's 95% interval, held out when there is a
        holdout): the extras ``filler``, ``simplified``, ``simplified_auroc``
        (:func:`invert.trust.check_filler`). The CLI's exports always have them.
    min_count : int, optional
        Leave out the concepts on fewer than ``min_count`` samples (of all samples) before
        the search, as ``invert explain --min-concept-samples`` does: a concept seen on two
        samples cannot be a trustworthy label. ``result.concept_names`` are then the kept
        concepts (a plain matrix's columns named by position, ``"7"``, so formulas still
        name the columns given) and ``result.params["min_count"]`` records it, which
        :func:`~invert.trust.permutation_test` follows. Default: every concept.
    groups : sequence of hashable, optional
        With ``holdout``: one group label per sample (e.g. the document of each token), so
        that each group lands whole in one split and the held-out figures are of unseen
        groups (``holdout`` is then the share of groups). See
        :func:`~invert.trust.stratified_split`.

    Returns
    -------
    ExplanationResult
        ``result[k]`` is the best-first list of :class:`~invert.engine.result.Explanation` of unit
        ``k`` (empty, with a ``reason``, for a constant unit or when no formula fits the
        fraction limits). ``result[k].ceiling`` (``result.ceiling`` over units) is an upper
        bound on the search metric of *any* formula within the fraction limits (lower bound
        for ``mode="negative"``; of the search split, with a holdout); with ``optimal=True``,
        ``result[k].certified`` says whether the best formula is proven the best of at most
        ``length`` literals and ``result[k].bound`` bounds every such formula
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
    order. See :func:`invert.engine.search.explain` for the certificates.

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
    # checked here, before a holdout reads the activations (the search checks the rest)
    check_progress("progress", progress)
    check_memory_budget("memory_budget", memory_budget)
    if getattr(concepts, "row_kind", None) is not None or getattr(
            activations, "row_kind", None) is not None:
        check_aligned(concepts, activations)  # word pieces vs spaCy tokens, ids row by row
    if groups is not None and holdout is None:
        raise bad("groups", "to go with holdout= (groups keep each group in one split)",
                  "groups without a holdout", raw=True)
    if min_count is not None:
        check_int("min_count", min_count, minimum=1)
        n = activation_source(activations)[0].shape[0]
        y, names = frequent_concepts(concepts, n, min_count)
        concepts = Labels(names, y)
    search_kwargs = dict(length=length, beam_size=beam_size, min_fraction=min_fraction,
                         max_fraction=max_fraction, mode=mode, limit_search=limit_search,
                         dedupe=dedupe, device=device, memory_budget=memory_budget,
                         progress=progress, metric=metric, unit_ids=unit_ids,
                         **({"top_q": top_q, "relative_min": relative_min}
                            if metric == "top_f1" else {}),
                         optimal=optimal, time_budget=time_budget)
    check_filler = check_bool("check_filler", check_filler)
    if holdout is not None:
        res: ExplanationResult = explain_holdout(
            activations, concepts, holdout=holdout, random_state=random_state,
            parsimony=parsimony, search_kwargs=search_kwargs, groups=groups)
    else:
        res = _search(activations, concepts, **search_kwargs)
    if min_count is not None:
        res.params["min_count"] = min_count
    return _check_filler(res, activations, concepts) if check_filler else res
