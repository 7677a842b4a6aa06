"""Held-out evaluation: a stratified split, held-out figures of the search's formulas and a
parsimony rule, so that longer formulas must earn their literals on held-out data.

Part of :mod:`invert.trust` (import from there).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from numbers import Real
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.stats import rankdata

from .._validate import bad, check_interval, check_random_state
from ..engine.formula import BinaryFormula, Formula, LabelColumns, Literal, formula_masks
from ..engine.inputs import ActivationsLike, ConceptsLike, Labels, as_labels
from ..engine.result import Explanation, ExplanationResult, UnitExplanations
from ..engine.search import explain
from ..engine.stats import auroc_from_ranksum, mannwhitney_pvalues
from ._data import whole_inputs
from .metrics import check_level, delong_intervals

__all__ = ["HoldoutResult", "explain_holdout", "stratified_split", "DEFAULT_PARSIMONY",
           "frequent_concepts", "check_groups"]

log = logging.getLogger(__name__)

#: Parsimony margin of ``parsimony="auto"`` when a hold-out split is used.
DEFAULT_PARSIMONY = 0.005


@dataclass
class HoldoutResult(ExplanationResult):
    """An :class:`~invert.engine.result.ExplanationResult` that remembers its split.

    Attributes
    ----------
    search_index, holdout_index : numpy.ndarray of int
        Sorted sample positions of the search and the held-out split (not exported).
    """

    search_index: np.ndarray | None = None
    holdout_index: np.ndarray | None = None


def _check_holdout(holdout) -> float:
    return check_interval("holdout", holdout, 0.0, 1.0, low_open=True, high_open=True)


def _check_parsimony(parsimony) -> float | None:
    if parsimony is None:
        return None
    if parsimony == "auto":
        return DEFAULT_PARSIMONY
    if isinstance(parsimony, bool) or not isinstance(parsimony, Real) or not (
            0.0 <= float(parsimony) < 1.0):
        raise bad("parsimony", "None, 'auto' or a margin in [0, 1)", parsimony)
    return float(parsimony)


def _tie_term(values: np.ndarray) -> float:
    _, counts = np.unique(values, return_counts=True)
    c = counts.astype(np.float64)
    return float((c**3 - c).sum())


# ----------------------------------------------------------------------------- split


def check_groups(groups: Any, n: int) -> np.ndarray | None:
    """Group ids ``0 .. M-1`` (int64, first appearance order) of ``n`` rows from one
    hashable label per row (document ids, ``(document, position)`` ids' documents, ints),
    or None for ``groups=None``."""
    if groups is None:
        return None
    if isinstance(groups, str | bytes) or not hasattr(groups, "__len__"):
        raise bad("groups", f"None or one group label per sample ({n})",
                  type(groups).__name__, raw=True)
    labels = [g.item() if isinstance(g, np.generic) else
              tuple(g) if isinstance(g, list) else g for g in groups]
    if len(labels) != n:
        raise bad("groups", f"one group label per sample ({n})", f"{len(labels)} labels",
                  raw=True)
    index: dict[Any, int] = {}
    try:
        gid = np.fromiter((index.setdefault(g, len(index)) for g in labels), np.int64, n)
    except TypeError as err:
        raise bad("groups", "hashable group labels (str, int, tuples)", f"{err}",
                  raw=True) from err
    return gid


def _assign(y: sp.csc_matrix, holdout: float, rng: np.random.Generator) -> np.ndarray:
    """0 (search) / 1 (held out) per row of ``y``, stratified (see
    :func:`stratified_split`)."""
    n = y.shape[0]
    counts = np.diff(y.indptr)
    cand = np.flatnonzero((counts >= 2) & (counts < n))
    cand = cand[np.lexsort((rng.random(cand.size), counts[cand]))]
    assign = np.full(n, -1, dtype=np.int8)  # 0 search, 1 held out
    for j in cand:
        rows = y.indices[y.indptr[j]:y.indptr[j + 1]]
        cur = assign[rows]
        free = rows[cur < 0]
        if free.size == 0:
            continue
        c = rows.size
        t = min(max(round(holdout * c), 1), c - 1)
        need = int(np.clip(t - int((cur == 1).sum()), 0, free.size))
        free = rng.permutation(free)
        assign[free[:need]] = 1
        assign[free[need:]] = 0
    rest = rng.permutation(np.flatnonzero(assign < 0))
    need = int(np.clip(round(holdout * n) - int((assign == 1).sum()), 0, rest.size))
    assign[rest[:need]] = 1
    assign[rest[need:]] = 0
    if not (assign == 1).any():
        assign[rng.integers(n)] = 1
    if not (assign == 0).any():
        assign[rng.integers(n)] = 0
    return assign


def _group_matrix(y: sp.csc_matrix, gid: np.ndarray) -> sp.csc_matrix:
    """(M, C) bool: whether some row of each group has each concept."""
    m = int(gid.max()) + 1
    member = sp.csr_matrix((np.ones(gid.size), (gid, np.arange(gid.size))),
                           shape=(m, gid.size))
    g = sp.csc_matrix(member @ y.astype(np.float64))
    g.data[:] = 1.0
    return sp.csc_matrix(g.astype(bool))


def stratified_split(concepts: ConceptsLike, holdout: float, random_state=None, *,
                     groups=None) -> tuple[np.ndarray, np.ndarray]:
    """Split samples so that every concept with at least two positives lands in both parts.

    Concepts are visited rarest first (ties in random order). For each concept with ``c >= 2``
    positives, its not yet assigned positives are shuffled and split so that its held-out
    count approaches ``t = round(holdout * c)``, clipped to ``[1, c - 1]``; positives already
    assigned by rarer concepts count towards ``t``. Samples left over (in no concept, or
    only in single-positive concepts) are shuffled and split so that the held-out part has
    about ``round(holdout * N)`` samples.

    A concept that still has an unassigned positive when visited always ends up in both
    parts, so the guarantee holds for nested or disjoint concepts (hierarchies such as
    WordNet, mutually exclusive classes); with arbitrary overlaps a concept whose positives
    were all assigned by rarer ones can, rarely, end up in one part only (logged).

    With ``groups`` the same is done with groups in place of samples (a group has a concept
    when one of its samples has it; ``holdout`` is then the share of groups held out), and
    every sample goes where its group goes: no group is split. Give the document of each
    token, so that held-out tokens come from documents the search never saw.

    Parameters
    ----------
    concepts : array-like, scipy.sparse matrix or concept set, shape (N, C)
    holdout : float in (0, 1)
        Share of samples (of groups, with ``groups``) held out.
    random_state : None, int or numpy.random.Generator
    groups : sequence of hashable, optional
        One group label per sample (e.g. its document id); None: every sample on its own.

    Returns
    -------
    search_index, holdout_index : numpy.ndarray of int64
        Sorted, disjoint, covering ``range(N)``.

    Examples
    --------
    >>> import numpy as np
    >>> y = np.zeros((10, 2), dtype=bool); y[:2, 0] = True; y[2:6, 1] = True
    >>> s, h = stratified_split(y, 0.5, random_state=0)
    >>> bool(y[s, 0].any() and y[h, 0].any() and y[s, 1].any() and y[h, 1].any())
    True
    >>> docs = [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    >>> s, h = stratified_split(y, 0.4, random_state=0, groups=docs)
    >>> sorted({docs[i] for i in h} & {docs[i] for i in s})
    []
    """
    holdout = _check_holdout(holdout)
    rng = check_random_state("random_state", random_state)
    if hasattr(concepts, "matrix") and hasattr(concepts, "names"):
        concepts = concepts.matrix
    y = sp.csc_matrix(concepts if sp.issparse(concepts) else np.asarray(concepts, dtype=bool))
    y.eliminate_zeros()
    n = y.shape[0]
    if n < 2:
        raise bad("concepts", "at least 2 samples to split", f"{n} rows", raw=True)
    gid = check_groups(groups, n)
    if gid is None:
        hold = _assign(y, holdout, rng) == 1
    else:
        if gid.max() < 1:
            raise bad("groups", "at least 2 groups to split", "1 group", raw=True)
        hold = (_assign(_group_matrix(y, gid), holdout, rng) == 1)[gid]
    counts = np.diff(y.indptr)
    in_h = np.asarray(y[hold].sum(axis=0)).ravel()
    one_sided = int(((counts >= 2) & ((in_h == 0) | (in_h == counts))).sum())
    if one_sided:
        log.info("stratified_split: %d concepts with >= 2 positives fall in one part only",
                 one_sided)
    return np.flatnonzero(~hold), np.flatnonzero(hold)


def frequent_concepts(concepts: ConceptsLike, n: int, min_count: int | None
                      ) -> tuple[Any, list[str] | None]:
    """The checked ``(N, C')`` labels and names of the concepts on at least ``min_count``
    samples (of all ``n``), as :func:`invert.explain` searches them with ``min_count``;
    a plain matrix's kept columns are named by their positions (``"7"``), so formulas
    still name the columns given. ``min_count=None``: all concepts, names unchanged."""
    y, names = as_labels(concepts, n)
    if min_count is None:
        return y, names
    counts = np.asarray(y.sum(axis=0)).ravel()
    keep = np.flatnonzero(counts >= min_count)
    if keep.size == 0:
        raise bad("min_count", f"a count that some concept reaches (the most common is on "
                  f"{int(counts.max(initial=0))} samples)", min_count)
    all_names = names if names is not None else [str(j) for j in range(y.shape[1])]
    y = y[:, keep]
    return (sp.csr_matrix(y) if sp.issparse(y) else y), [all_names[j] for j in keep]


# ----------------------------------------------------------------------------- held-out figures


@dataclass(frozen=True)
class _Split:
    """What the held-out evaluation of every unit of a layer shares."""

    search_index: np.ndarray
    holdout_index: np.ndarray
    cols_search: LabelColumns
    cols_holdout: LabelColumns
    min_fraction: float
    max_fraction: float
    sign: float  # +1 where a higher AUROC is better (mode "positive"), else -1
    margin: float | None
    level: float


def _split_figures(values: np.ndarray, cols: LabelColumns, formulas: list[Formula]):
    """Figures of ``formulas`` on one split for one unit's ``values``.

    Returns the masks (F, N), the mid-ranks, the support ``n1``, the AUROC and the
    two-sided Mann-Whitney p-value and its log10 (NaN where the AUROC is undefined)."""
    n = values.shape[0]
    r = rankdata(values)
    m = formula_masks(formulas, cols)
    n1 = m.sum(axis=1).astype(np.float64)
    s2 = 2.0 * (m @ r)
    auc = auroc_from_ranksum(s2, n1, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        pv, lp = mannwhitney_pvalues(s2, n1, n, _tie_term(values))
    undefined = np.isnan(auc)
    return m, r, n1, auc, np.where(undefined, np.nan, pv), np.where(undefined, np.nan, lp)


def _prefixes(f: Formula) -> list[Formula]:
    """Left-deep ancestors of a formula built by the beam search (shortest first)."""
    out = []
    node = f
    while isinstance(node, BinaryFormula) and isinstance(node.right, Literal):
        node = node.left
        out.append(node)
    return out[::-1]


def _candidates(u: UnitExplanations, with_ancestors: bool
                ) -> tuple[list[Formula], list[int | None]]:
    """The unit's formulas (search order), then their shorter ancestors not among them
    when ``with_ancestors``; and each candidate's search rank (None for an ancestor)."""
    cands: list[Formula] = [e.formula for e in u]
    search_rank: list[int | None] = list(range(len(u)))
    if with_ancestors:
        seen = {str(f) for f in cands}
        for e in u:
            for f in _prefixes(e.formula):
                if str(f) not in seen:
                    seen.add(str(f))
                    cands.append(f)
                    search_rank.append(None)
    return cands, search_rank


def _ancestor_explanations(values_s: np.ndarray, k: int, cands: list[Formula], first: int,
                           split: _Split) -> dict[int, Explanation]:
    """Search-split explanations of the added ancestors ``cands[first:]`` that satisfy the
    fraction limits on the search split, by candidate index."""
    added: dict[int, Explanation] = {}
    if first == len(cands):
        return added
    n_s = values_s.shape[0]
    _, _, n1_s, auc_s, pv_s, lp_s = _split_figures(values_s, split.cols_search, cands[first:])
    for j, f in enumerate(cands[first:]):
        fr = n1_s[j] / n_s
        if 0 < n1_s[j] < n_s and split.min_fraction <= fr <= split.max_fraction:
            added[first + j] = Explanation(
                formula=f, auroc=float(auc_s[j]), fraction=float(fr),
                support=int(n1_s[j]), length=f.length, p_value=float(pv_s[j]),
                log10_p_value=float(lp_s[j]), unit=k)
    return added


# ----------------------------------------------------------------------------- parsimony


def _choose(lengths: np.ndarray, held: np.ndarray, margin: float) -> int:
    """Index of the parsimony winner; candidates are in search order (best first).

    ``held``: signed held-out score (higher is better)."""
    order = np.argsort(lengths, kind="stable")
    w = int(order[0])
    for i in order[1:]:
        i = int(i)
        if lengths[i] == lengths[w]:
            if held[i] > held[w]:
                w = i
        elif held[i] > held[w] + margin:
            w = i
    return w


def _parsimony_order(cands: list[Formula], n_found: int, added: dict[int, Explanation],
                     auc_h: np.ndarray, ci_low: np.ndarray, split: _Split) -> list[int]:
    """Candidate indices to report, best first: the parsimony winner among the candidates
    with a held-out interval, then the search's formulas in search order (``n_found`` in
    all)."""
    order = list(range(n_found))
    held = split.sign * (auc_h - 0.5)
    lengths = np.array([f.length for f in cands])
    eligible = [i for i in range(len(cands))
                if (i < n_found or i in added) and not np.isnan(ci_low[i])]
    if not eligible:
        return order
    w = eligible[_choose(lengths[eligible], held[eligible], split.margin)]
    return ([w] + [i for i in order if i != w])[:n_found]


# ----------------------------------------------------------------------------- per unit


def _unit_holdout(values: np.ndarray, k: int, u: UnitExplanations,
                  split: _Split) -> list[Explanation]:
    """One unit's reported explanations with their held-out extras, best first."""
    n_found = len(u)
    cands, search_rank = _candidates(u, split.margin is not None)
    m_h, r_h, n1_h, auc_h, pv_h, lp_h = _split_figures(
        values[split.holdout_index], split.cols_holdout, cands)
    ci_lo, ci_hi = delong_intervals(r_h, m_h, split.level)
    added = _ancestor_explanations(values[split.search_index], k, cands,
                                   n_found, split)
    order = list(range(n_found))
    if split.margin is not None:
        order = _parsimony_order(cands, n_found, added, auc_h, ci_lo, split)
    items = []
    for i in order:
        base = u[i] if i < n_found else added[i]
        items.append(replace(base, unit=k, rank=len(items), extras={
            **base.extras,
            "holdout_auroc": float(auc_h[i]),
            "holdout_auroc_ci_low": float(ci_lo[i]),
            "holdout_auroc_ci_high": float(ci_hi[i]),
            "holdout_p_value": float(pv_h[i]),
            "holdout_log10_p_value": float(lp_h[i]),
            "holdout_support": int(n1_h[i]),
            "search_rank": search_rank[i],
        }))
    return items


# ----------------------------------------------------------------------------- explain_holdout


def _check_search_kwargs(search_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    kwargs = dict(search_kwargs or {})
    for key in ("holdout", "random_state", "parsimony"):
        if key in kwargs:
            raise bad("search_kwargs", "search parameters only", f"key {key!r}")
    return kwargs


def _holdout_params(params: dict[str, Any], holdout: float, margin: float | None,
                    split: _Split, random_state) -> dict[str, Any]:
    """The search's ``params`` plus those of the held-out evaluation."""
    out = {**params, "holdout": holdout, "parsimony": margin,
           "n_search": len(split.search_index), "n_holdout": len(split.holdout_index)}
    if isinstance(random_state, int | np.integer) and not isinstance(random_state, bool):
        out["random_state"] = int(random_state)
    return out


def explain_holdout(
    activations: ActivationsLike,
    concepts: ConceptsLike,
    *,
    holdout: float,
    random_state=None,
    parsimony: float | str | None = "auto",
    search_kwargs: dict[str, Any] | None = None,
    level: float = 0.95,
    groups=None,
) -> HoldoutResult:
    """Search on one split, evaluate on the other (held-out figures one can trust).

    Parameters
    ----------
    activations, concepts
        As for :func:`invert.explain`.
    holdout : float in (0, 1)
        Share of samples held out (see :func:`stratified_split` for the stratification).
    random_state : None, int or numpy.random.Generator
        Seeds the split.
    parsimony : float, "auto" or None, default "auto"
        Margin of the parsimony rule (``"auto"``: :data:`DEFAULT_PARSIMONY` = 0.005). None
        keeps the search order.
    search_kwargs : dict, optional
        Keyword arguments of :func:`invert.engine.search.explain` (``length``, ``beam_size``,
        ``min_fraction``, ``max_fraction``, ``mode``, ``limit_search``, ``dedupe``,
        ``device``, ``memory_budget``).
    level : float, default 0.95
        Coverage of the held-out confidence interval.
    groups : sequence of hashable, optional
        One group label per sample (e.g. the document of each token): a group's samples
        all land in the same split, so held-out figures are of groups the search never saw
        (tokens of one document share much, and held-out tokens of searched documents
        inflate the held-out AUROC). ``holdout`` is then the share of groups held out.

    Returns
    -------
    HoldoutResult
        The main fields of each :class:`~invert.engine.result.Explanation` (``auroc``, ``p_value``,
        ``log10_p_value``, ``fraction``, ``support``) are **search-split** figures. Its
        ``extras`` add the **held-out** figures: ``holdout_auroc``,
        ``holdout_auroc_ci_low`` / ``holdout_auroc_ci_high`` (DeLong, ``level``),
        ``holdout_p_value`` / ``holdout_log10_p_value`` (two-sided Mann-Whitney, normal
        approximation with tie correction), ``holdout_support``, and ``search_rank`` (the
        formula's rank in the search output; None for a shorter ancestor added by the
        parsimony rule). ``params`` gain ``holdout``, ``parsimony``, ``n_search``,
        ``n_holdout``, ``random_state`` (when an int) and, with ``groups``,
        ``holdout_groups`` (the number of groups).

    Notes
    -----
    Parsimony rule (when ``parsimony`` is not None). The candidates of a unit are the
    returned formulas plus their shorter beam ancestors (``a & ~b`` for ``a & ~b & ~c``,
    and ``a``) that satisfy the fraction limits on the search split. Going through them by
    length (shortest first; equal lengths in search order), the running winner is replaced
    by a candidate of the *same* length if the candidate's held-out AUROC is higher, and by
    a *longer* candidate only if its held-out AUROC is higher by more than the margin
    (lower, for ``mode="negative"``). Only candidates with a held-out confidence interval
    (at least two held-out samples inside and two outside) compete, so a formula that holds
    for a single held-out sample cannot win on that sample's rank; when no candidate
    competes, the search order is kept. The winner becomes rank 0; the
    others keep their search order (an added ancestor pushes the last formula out, so
    each unit keeps at most ``beam_size`` explanations).

    Choosing among a handful of candidates by held-out AUROC makes the winner's held-out
    figures very slightly optimistic; the margin keeps that small. Use
    :func:`~invert.trust.permutation_test` for p-values corrected for the search.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = rng.random((2000, 8)) < 0.1
    >>> a = 2.0 * y[:, 3] + rng.standard_normal(2000)
    >>> res = explain_holdout(a, y, holdout=0.5, random_state=1,
    ...                       search_kwargs={"length": 2, "beam_size": 3})
    >>> best = res[0][0]
    >>> str(best.formula), best.auroc > 0.85, best.extras["holdout_auroc"] > 0.85
    ('3', True, True)
    """
    holdout = _check_holdout(holdout)
    margin = _check_parsimony(parsimony)
    level = check_level(level)
    kwargs = _check_search_kwargs(search_kwargs)
    a, unit_ids, y, names = whole_inputs(activations, concepts, exact=True)
    gid = check_groups(groups, a.shape[0])
    s_idx, h_idx = stratified_split(y, holdout, random_state, groups=gid)
    y_s, y_h = y[s_idx], y[h_idx]
    res = explain(a[s_idx], Labels(names, y_s), **kwargs)
    p = res.params
    split = _Split(s_idx, h_idx, LabelColumns(y_s), LabelColumns(y_h), p["min_fraction"],
                   p["max_fraction"], 1.0 if p["mode"] == "positive" else -1.0, margin, level)
    units: list[UnitExplanations] = []
    for k, u in enumerate(res.units):
        uid = unit_ids[k] if unit_ids is not None else u.unit_id
        if u:
            units.append(u.derive(_unit_holdout(a[:, k], k, u, split), unit=k, unit_id=uid))
        else:
            units.append(u.derive(unit=k, unit_id=uid))
    return HoldoutResult(units=units, concept_names=res.concept_names,
                         undefined_concepts=res.undefined_concepts,
                         params=_holdout_params(p, holdout, margin, split, random_state)
                         | ({} if gid is None else {"holdout_groups": int(gid.max()) + 1}),
                         n_samples=a.shape[0], search_index=s_idx, holdout_index=h_idx)
