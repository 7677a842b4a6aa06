"""Statistics one can trust: held-out evaluation, search-aware p-values, more metrics.

A formula picked as the best of thousands of candidates looks better on the data that picked
it than it is. This module offers

* :func:`explain_holdout`: search on one stratified split, report AUROC, its DeLong
  confidence interval and the Mann-Whitney p-value on the other, with a parsimony rule so
  that longer formulas must earn their literals on held-out data;
* :func:`permutation_test`: a p-value per unit *corrected for the search* (the whole beam
  search is rerun on permuted activations), computed once per layer for all units that
  share a tie structure, then :func:`correct_pvalues` (Benjamini-Hochberg, Holm) across
  units and :func:`significant_units`;
* :func:`add_metrics` / :func:`metrics`: AUPRC, MAD, point-biserial correlation and
  precision / recall / F1 / IoU of the top-q activations for every reported formula;
  :func:`auroc_ci` (Hanley-McNeil) and :func:`delong_ci`;
* :func:`explain_top`: the best formula for a unit's top-q activations (activation ranges,
  for polysemantic units).

Where figures go
----------------
Per-formula figures go into :attr:`invert.engine.result.Explanation.extras` (exported as extra
columns by ``to_dataframe()`` and extra fields in JSON). Per-unit figures (search-corrected
p-value, q-value, Holm p-value, significance) go into the extras of the unit's *best*
explanation (rank 0).

Examples
--------
>>> import numpy as np
>>> from invert.trust import explain_holdout
>>> rng = np.random.default_rng(0)
>>> y = rng.random((2000, 8)) < 0.1
>>> a = 2.0 * y[:, 3] + rng.standard_normal(2000)
>>> res = explain_holdout(a, y, holdout=0.5, random_state=1,
...                       search_kwargs={"length": 2, "beam_size": 3})
>>> best = res[0][0]
>>> str(best.formula), best.auroc > 0.85, best.extras["holdout_auroc"] > 0.85
('3', True, True)
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from numbers import Real
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.stats import rankdata

from .._validate import bad, check_choice, check_fraction, check_int, check_random_state
from ..engine import inputs as _inputs_mod
from ..engine import search as _search
from ..engine.formula import BinaryFormula, Formula, LabelColumns, Literal
from ..engine.inputs import Labels
from ..engine.result import Explanation, ExplanationResult, UnitExplanations
from ..engine.stats import auroc_from_ranksum, mannwhitney_pvalues
from .metrics import (
    METRIC_NAMES,
    _check_q,
    _delong_batch,
    auroc_ci,
    check_alpha,
    correct_pvalues,
    delong_ci,
    formula_masks,
    metric_table,
    metrics,
)

__all__ = [
    "HoldoutResult",
    "explain_holdout",
    "stratified_split",
    "permutation_test",
    "correct_pvalues",
    "significant_units",
    "auroc_ci",
    "delong_ci",
    "metrics",
    "add_metrics",
    "formula_masks",
    "explain_top",
    "DEFAULT_PARSIMONY",
    "METRIC_NAMES",
]

log = logging.getLogger(__name__)

#: Parsimony margin of ``parsimony="auto"`` when a hold-out split is used.
DEFAULT_PARSIMONY = 0.005

#: Parameters of :func:`invert.engine.search.explain` that define the search (kept in ``params``).
_SEARCH_KEYS = _search.SEARCH_PARAMS


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


def _rng(random_state) -> np.random.Generator:
    return check_random_state("random_state", random_state)


def _inputs(activations, concepts):
    src, unit_ids = _inputs_mod.as_activations(activations)  # the engine's validation
    if hasattr(src, "block"):  # the engine's block reader (whole array in memory here)
        a = src.block(slice(None))
    elif hasattr(src, "detach"):
        a = src.detach().cpu().numpy()
    else:  # pragma: no cover - defensive
        a = np.asarray(src)
    if not np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)
    y, names = _inputs_mod.as_labels(concepts, a.shape[0])
    return a, unit_ids, y, names


def _check_holdout(holdout) -> float:
    holdout = check_fraction("holdout", holdout)
    if not 0.0 < holdout < 1.0:
        raise bad("holdout", "a number in (0, 1)", holdout)
    return holdout


def _tie_term(values: np.ndarray) -> float:
    _, counts = np.unique(values, return_counts=True)
    c = counts.astype(np.float64)
    return float((c**3 - c).sum())


# ----------------------------------------------------------------------------- split


def stratified_split(concepts, holdout: float, random_state=None) -> tuple[np.ndarray, np.ndarray]:
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

    Parameters
    ----------
    concepts : array-like, scipy.sparse matrix or concept set, shape (N, C)
    holdout : float in (0, 1)
        Share of samples held out.
    random_state : None, int or numpy.random.Generator

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
    """
    holdout = _check_holdout(holdout)
    rng = _rng(random_state)
    if hasattr(concepts, "matrix") and hasattr(concepts, "names"):
        concepts = concepts.matrix
    y = sp.csc_matrix(concepts if sp.issparse(concepts) else np.asarray(concepts, dtype=bool))
    y.eliminate_zeros()
    n = y.shape[0]
    if n < 2:
        raise bad("concepts", "at least 2 samples to split", f"{n} rows", raw=True)
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
    hold = assign == 1
    in_h = np.asarray(y[hold].sum(axis=0)).ravel()
    one_sided = int(((counts >= 2) & ((in_h == 0) | (in_h == counts))).sum())
    if one_sided:
        log.info("stratified_split: %d concepts with >= 2 positives fall in one part only",
                 one_sided)
    return np.flatnonzero(~hold), np.flatnonzero(hold)


# ----------------------------------------------------------------------------- holdout


def _split_figures(values: np.ndarray, cols: LabelColumns, formulas: list[Formula]):
    """Figures of ``formulas`` on one split for one unit's ``values``.

    Returns the masks (F, N), the mid-ranks, the support ``n1``, the AUROC and the
    two-sided Mann-Whitney p-value and its log10 (NaN where the AUROC is undefined)."""
    n = values.shape[0]
    r = rankdata(values)
    m = np.array([cols.evaluate(f) for f in formulas])
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


def _check_parsimony(parsimony) -> float | None:
    if parsimony is None:
        return None
    if parsimony == "auto":
        return DEFAULT_PARSIMONY
    if isinstance(parsimony, bool) or not isinstance(parsimony, Real) or not (
            0.0 <= float(parsimony) < 1.0):
        raise bad("parsimony", "None, 'auto' or a margin in [0, 1)", parsimony)
    return float(parsimony)


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


def explain_holdout(
    activations,
    concepts,
    *,
    holdout: float,
    random_state=None,
    parsimony: float | str | None = "auto",
    search_kwargs: dict[str, Any] | None = None,
    level: float = 0.95,
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
        ``n_holdout`` and ``random_state`` (when an int).

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
    :func:`permutation_test` for p-values corrected for the search.
    """
    holdout = _check_holdout(holdout)
    margin = _check_parsimony(parsimony)
    level = float(level)
    kwargs = dict(search_kwargs or {})
    for key in ("holdout", "random_state", "parsimony"):
        if key in kwargs:
            raise bad("search_kwargs", "search parameters only", f"key {key!r}")
    a, unit_ids, y, names = _inputs(activations, concepts)
    n, k_units = a.shape
    s_idx, h_idx = stratified_split(y, holdout, random_state)
    y_s, y_h = y[s_idx], y[h_idx]
    res = _search.explain(a[s_idx], Labels(names, y_s),
                          **kwargs)
    p = res.params
    sign = 1.0 if p["mode"] == "positive" else -1.0
    n_s, n_h = len(s_idx), len(h_idx)
    lo_s, hi_s = p["min_fraction"], p["max_fraction"]
    cols_s, cols_h = LabelColumns(y_s), LabelColumns(y_h)

    units: list[UnitExplanations] = []
    for k, u in enumerate(res.units):
        uid = unit_ids[k] if unit_ids is not None else u.unit_id
        if not u:
            units.append(UnitExplanations(unit=k, unit_id=uid, reason=u.reason))
            continue
        cands: list[Formula] = [e.formula for e in u]
        search_rank: list[int | None] = list(range(len(u)))
        if margin is not None:
            seen = {str(f) for f in cands}
            for e in u:
                for f in _prefixes(e.formula):
                    if str(f) not in seen:
                        seen.add(str(f))
                        cands.append(f)
                        search_rank.append(None)
        m_h, r_h, n1_h, auc_h, pv_h, lp_h = _split_figures(
            a[h_idx, k].astype(np.float64), cols_h, cands)
        ci_lo, ci_hi = _delong_batch(r_h, m_h, level)
        # search-split figures of added ancestors
        extra_e: dict[int, Explanation] = {}
        n_added = len(cands) - len(u)
        if n_added:
            _, _, n1_s, auc_s, pv_s, lp_s = _split_figures(
                a[s_idx, k].astype(np.float64), cols_s, cands[len(u):])
            for j in range(n_added):
                fr = n1_s[j] / n_s
                if not (0 < n1_s[j] < n_s and lo_s <= fr <= hi_s):
                    auc_h[len(u) + j] = np.nan  # not eligible
                    continue
                f = cands[len(u) + j]
                extra_e[len(u) + j] = Explanation(
                    formula=f, auroc=float(auc_s[j]), fraction=float(fr),
                    support=int(n1_s[j]), length=f.length, p_value=float(pv_s[j]),
                    log10_p_value=float(lp_s[j]), unit=k)
        order = list(range(len(u)))
        if margin is not None:
            held = sign * (auc_h - 0.5)
            lengths = np.array([f.length for f in cands])
            eligible = [i for i in range(len(cands))
                        if (i < len(u) or i in extra_e) and not np.isnan(ci_lo[i])]
            if eligible:
                w = eligible[_choose(lengths[eligible], held[eligible], margin)]
                order = [w] + [i for i in order if i != w]
                order = order[:len(u)]
        items = []
        for i in order:
            base = u[i] if i < len(u) else extra_e[i]
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
        units.append(UnitExplanations(items, unit=k, unit_id=uid))
    params = {**p, "holdout": holdout, "parsimony": margin, "n_search": n_s, "n_holdout": n_h}
    if isinstance(random_state, int | np.integer) and not isinstance(random_state, bool):
        params["random_state"] = int(random_state)
    return HoldoutResult(units=units, concept_names=res.concept_names,
                         undefined_concepts=res.undefined_concepts, params=params,
                         n_samples=n, search_index=s_idx, holdout_index=h_idx)


# ----------------------------------------------------------------------------- metrics


def add_metrics(result: ExplanationResult, activations, concepts, *, top_q: float = 0.05,
                rows=None, prefix: str = "") -> ExplanationResult:
    """Fill every reported formula's ``extras`` with the metrics of :func:`metrics`.

    Parameters
    ----------
    result : ExplanationResult
        Modified in place (explanations are replaced by copies with more extras) and
        returned.
    activations, concepts
        The data the figures are computed on (the same columns as the search).
    top_q : float, default 0.05
        Share of top activations for ``top_precision`` etc.; stored as ``top_q``.
    rows : array-like of int, optional
        Only these samples (e.g. ``result.holdout_index`` with ``prefix="holdout_"``).
    prefix : str
        Prepended to the keys (``auprc``, ``mad``, ``point_biserial``, ``top_precision``,
        ``top_recall``, ``top_f1``, ``top_iou``, and ``auroc`` when a prefix is given).

    Returns
    -------
    ExplanationResult
        ``result``.

    Examples
    --------
    >>> import numpy as np, invert
    >>> rng = np.random.default_rng(0)
    >>> y = rng.random((500, 4)) < 0.2
    >>> a = y[:, 2] + rng.standard_normal(500)
    >>> res = add_metrics(invert.explain(a, y, length=1, beam_size=2), a, y, top_q=0.1)
    >>> sorted(k for k in res[0][0].extras if k.startswith("top_"))
    ['top_f1', 'top_iou', 'top_precision', 'top_q', 'top_recall']
    """
    top_q = _check_q(top_q)
    a, _, y, _ = _inputs(activations, concepts)
    if rows is not None:
        rows = np.asarray(rows, dtype=np.int64)
        a, y = a[rows], y[rows]
    if a.shape[1] != len(result.units):
        raise bad("activations", f"{len(result.units)} units (as in result)",
                  f"{a.shape[1]} columns", raw=True)
    cols = LabelColumns(y)
    keys = METRIC_NAMES + (("auroc",) if prefix else ())
    for k, u in enumerate(result.units):
        if not u:
            continue
        masks = np.array([cols.evaluate(e.formula) for e in u])
        tab = metric_table(a[:, k], masks, top_q)
        for i, e in enumerate(u):
            new = {prefix + key: float(tab[key][i]) for key in keys}
            new[prefix + "top_q"] = float(top_q)
            u[i] = replace(e, extras={**e.extras, **new})
    return result


# ----------------------------------------------------------------------------- permutations


def _tie_keys(a: np.ndarray) -> list[bytes]:
    """Per unit: b'' without ties, else the tie-group sizes in value order (as bytes).

    Two units with the same key have the same multiset of mid-ranks, hence the same null
    distribution of every rank statistic under permutation."""
    keys = []
    for k in range(a.shape[1]):
        v = np.sort(a[:, k])
        starts = np.flatnonzero(np.r_[True, v[1:] != v[:-1]])
        if starts.size == v.size:
            keys.append(b"")
        else:
            keys.append(np.diff(np.r_[starts, v.size]).astype(np.int64).tobytes())
    return keys


def _null_best(base: np.ndarray, y, n_perm: int, rng: np.random.Generator, sign: float,
               kwargs: dict, block: int) -> np.ndarray:
    """Best (signed) AUROC of the search on ``n_perm`` permutations of ``base``."""
    out = np.empty(n_perm)
    done = 0
    while done < n_perm:
        c = min(block, n_perm - done)
        mat = rng.permuted(np.tile(base, (c, 1)), axis=1).T
        res = _search.explain(np.ascontiguousarray(mat), y, **kwargs)
        out[done:done + c] = [sign * u[0].auroc if u else -np.inf for u in res.units]
        done += c
    return out


def _null_pvalues(null_sorted: np.ndarray, obs, n_perm: int) -> np.ndarray:
    """``(1 + #{null >= obs}) / (1 + n_perm)`` for each observed value (``null_sorted``
    ascending, ``n_perm`` entries); observed values are lowered by 1e-12 so that a null
    value equal up to rounding counts as at least as extreme."""
    t = np.asarray(obs, dtype=np.float64) - 1e-12
    ge = n_perm - np.searchsorted(null_sorted, t, side="left")
    return (1.0 + ge) / (1.0 + n_perm)


def _reject(adj: np.ndarray, alpha: float) -> np.ndarray:
    """Where adjusted p-values are ``<= alpha`` (False for NaN: units without a test)."""
    return np.nan_to_num(adj, nan=np.inf) <= alpha


def permutation_test(
    activations,
    concepts,
    result: ExplanationResult,
    *,
    n_permutations: int = 1000,
    random_state=None,
    alpha: float = 0.05,
    method: str = "bh",
    annotate: bool = True,
    block: int = 256,
    **search_kwargs,
) -> np.ndarray:
    """P-values of each unit's best formula, corrected for the search, by permutation.

    The null hypothesis of a unit is that its activations are exchangeable with respect to
    the concepts. Under it, the best AUROC the *whole search* finds on the unit is
    distributed like the best AUROC found on randomly permuted activations. The p-value is
    ``(1 + #{null best >= observed best}) / (1 + n_permutations)``.

    Shared null: the search sees activations only through their mid-ranks, so every unit
    whose values have the same tie structure (the sizes of its groups of equal values, in
    value order; no ties at all for continuous units) has the same null distribution. The
    null is computed once per tie structure by searching ``n_permutations`` permuted copies
    of one such unit as if they were units of a layer: one search of ``n_permutations``
    pseudo-units for all tie-free units together, and one more per distinct tie structure
    (exact, but costly for ReLU layers whose units each have their own number of zeros).

    Parameters
    ----------
    activations, concepts
        The data of the search that produced ``result``. For a :class:`HoldoutResult`,
        only its search split is used.
    result : ExplanationResult
        From :func:`invert.explain` or :func:`explain_holdout`.
    n_permutations : int, default 1000
    random_state : None, int or numpy.random.Generator
    alpha : float, default 0.05
        Level for the ``significant`` flag.
    method : {"bh", "holm"}
        Correction across units that decides ``significant``.
    annotate : bool, default True
        Put ``search_p_value``, ``q_value`` (Benjamini-Hochberg), ``holm_p_value``,
        ``significant`` and ``n_permutations`` into each unit's best explanation's extras
        (``result`` is modified in place).
    block : int, default 256
        Permutations searched at once (bounds memory: ``N x block`` float32).
    **search_kwargs
        Overrides of the search parameters (default: ``result.params``), e.g. ``device``.

    Returns
    -------
    numpy.ndarray of float, shape (K,)
        The search-corrected p-value of each unit (NaN for a unit without explanation).

    Examples
    --------
    >>> import numpy as np, invert
    >>> rng = np.random.default_rng(0)
    >>> y = rng.random((300, 6)) < 0.2
    >>> a = np.c_[3.0 * y[:, 1] + rng.standard_normal(300), rng.standard_normal(300)]
    >>> res = invert.explain(a, y, length=2, beam_size=2)
    >>> p = permutation_test(a, y, res, n_permutations=99, random_state=0)
    >>> bool(p[0] == 0.01), res[0][0].extras["significant"]
    (True, True)
    """
    n_permutations = check_int("n_permutations", n_permutations, minimum=1)
    block = check_int("block", block, minimum=1)
    alpha = check_alpha(alpha)
    method = check_choice("method", method, ("bh", "holm"))
    rng = _rng(random_state)
    a, _, y, _ = _inputs(activations, concepts)
    rows = getattr(result, "search_index", None)
    if rows is not None:
        a, y = a[rows], y[rows]
    if a.shape[1] != len(result.units):
        raise bad("activations", f"{len(result.units)} units (as in result)",
                  f"{a.shape[1]} columns", raw=True)
    kwargs = {key: result.params[key] for key in _SEARCH_KEYS if key in result.params}
    kwargs.update(search_kwargs)
    sign = 1.0 if kwargs.get("mode", "positive") == "positive" else -1.0
    n = a.shape[0]
    obs = np.array([sign * u[0].auroc if u else np.nan for u in result.units])
    keys = _tie_keys(a)
    groups: dict[bytes, list[int]] = {}
    for k, key in enumerate(keys):
        if result.units[k]:
            groups.setdefault(key, []).append(k)
    log.info("permutation_test: %d units, %d tie structures, %d permutations each",
             len(obs), len(groups), n_permutations)
    p = np.full(len(obs), np.nan)
    for key, members in groups.items():
        if key == b"":
            base = np.arange(n, dtype=np.float32 if n < (1 << 24) else np.float64)
        else:
            base = a[:, members[0]].copy()
        null = np.sort(_null_best(base, y, n_permutations, rng, sign, kwargs, block))
        p[members] = _null_pvalues(null, obs[members], n_permutations)
    if annotate:
        q = correct_pvalues(p, "bh")
        holm = correct_pvalues(p, "holm")
        reject = _reject(q if method == "bh" else holm, alpha)
        for k, u in enumerate(result.units):
            if u:
                u[0] = replace(u[0], extras={
                    **u[0].extras, "search_p_value": float(p[k]), "q_value": float(q[k]),
                    "holm_p_value": float(holm[k]), "significant": bool(reject[k]),
                    "n_permutations": n_permutations})
    return p


def significant_units(result: ExplanationResult, alpha: float = 0.05,
                      method: str = "bh") -> np.ndarray:
    """Which units survive a correction across units of their search-corrected p-values.

    Parameters
    ----------
    result : ExplanationResult
        Annotated by :func:`permutation_test` (``search_p_value`` in the best extras).
    alpha : float, default 0.05
        False discovery rate (``bh``) or family-wise error rate (``holm``).
    method : {"bh", "holm"}

    Returns
    -------
    numpy.ndarray of bool, shape (K,)
        False for units without explanation.

    Examples
    --------
    >>> import numpy as np, invert
    >>> rng = np.random.default_rng(1)
    >>> y = rng.random((300, 5)) < 0.2
    >>> a = np.c_[3.0 * y[:, 0] + rng.standard_normal(300), rng.standard_normal(300)]
    >>> res = invert.explain(a, y, length=1, beam_size=1)
    >>> _ = permutation_test(a, y, res, n_permutations=49, random_state=0)
    >>> significant_units(res, 0.05).tolist()
    [True, False]
    """
    alpha = check_alpha(alpha)
    p = np.array([u[0].extras.get("search_p_value", np.nan) if u else np.nan
                  for u in result.units], dtype=np.float64)
    if not any(u and "search_p_value" in u[0].extras for u in result.units):
        raise bad("result", "a result annotated by permutation_test", "no search_p_value",
                  raw=True)
    return _reject(correct_pvalues(p, method), alpha)


# ----------------------------------------------------------------------------- top-q


def explain_top(activations, concepts, *, top_q: float = 0.01,
                **search_kwargs) -> ExplanationResult:
    """The best formulas for each unit's top-q activations (an activation range).

    Each unit is binarised: 1 for its top-q samples (every sample at least as high as the
    ``ceil(top_q N)``-th largest activation, ties included), 0 for the rest; the search then
    runs on these indicators. The reported AUROC is still an exact rank statistic: for a
    0/1 activation it equals ``(1 + P(top | formula) - P(top | not formula)) / 2``, so the
    best formula is the one that covers the top set and little else. For a polysemantic
    unit, compare ``explain_top`` (what drives the highest activations) with
    :func:`invert.explain` (what raises the unit overall). ``min_fraction`` (e.g. about
    ``top_q / 2``) keeps tiny, pure subsets of the top set from winning.

    Parameters
    ----------
    activations, concepts
        As for :func:`invert.explain`.
    top_q : float in (0, 1), default 0.01
    **search_kwargs
        Parameters of :func:`invert.engine.search.explain`.

    Returns
    -------
    ExplanationResult
        ``params["top_q"]`` is set; each explanation's extras hold ``top_q`` and
        ``top_size`` (the number of samples in the unit's top set).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = rng.random((2000, 6)) < 0.1
    >>> a = 1.0 * y[:, 0] + 4.0 * y[:, 5] * (rng.random(2000) < 0.5) + rng.standard_normal(2000)
    >>> str(explain_top(a, y, top_q=0.02, length=1)[0][0].formula)
    '5'
    """
    if isinstance(top_q, bool) or not isinstance(top_q, Real) or not 0.0 < top_q < 1.0:
        raise bad("top_q", "a number in (0, 1)", top_q)
    a, unit_ids, y, names = _inputs(activations, concepts)
    n = a.shape[0]
    kq = max(1, math.ceil(top_q * n - 1e-9))
    thr = np.partition(a, n - kq, axis=0)[n - kq]
    ind = (a >= thr[None, :]).astype(np.float32)
    res = _search.explain(ind, Labels(names, y), **search_kwargs)
    sizes = ind.sum(axis=0).astype(int)
    for k, u in enumerate(res.units):
        if unit_ids is not None:
            u.unit_id = unit_ids[k]
        for i, e in enumerate(u):
            u[i] = replace(e, extras={**e.extras, "top_q": float(top_q),
                                      "top_size": int(sizes[k])})
    res.params = {**res.params, "top_q": float(top_q)}
    return res
