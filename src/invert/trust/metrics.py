"""Metrics beside AUROC, AUROC confidence intervals and multiple-testing corrections.

Part of :mod:`invert.trust` (import from there). Pure functions of arrays, no I/O, and
:func:`add_metrics`, which writes them into the extras of a search result.

Definitions (for a unit's activations ``a`` over N samples and a formula's 0/1 mask ``m``
with ``n1`` samples inside and ``n0 = N - n1`` outside):

``auroc``
    Mann-Whitney ``U / (n1 n0)`` from mid-ranks (ties count 1/2), as
    ``sklearn.metrics.roc_auc_score(m, a)``.
``auprc``
    Average precision of ranking samples by ``a`` to retrieve the mask, exactly as
    ``sklearn.metrics.average_precision_score(m, a)``: ``sum_k (R_k - R_{k-1}) P_k`` over the
    distinct activation values as thresholds, highest first (tied samples enter together).
``mad``
    Mean activation difference ``(mean(a | m) - mean(a | ~m)) / std(a | ~m)`` with the
    sample standard deviation (``ddof=1``) of the outside activations.
``point_biserial``
    Pearson correlation of ``a`` with the 0/1 mask (``scipy.stats.pointbiserialr``).
``top_precision``, ``top_recall``, ``top_f1``, ``top_iou``
    The unit's top-q set ``T`` is every sample whose activation is at least the
    ``k``-th largest, ``k = ceil(q N)`` (ties at the threshold are all included, so ``T`` can
    hold more than ``k`` samples; it is order-free). Precision ``|T & m| / |T|``, recall
    ``|T & m| / n1``, F1 ``2 |T & m| / (|T| + n1)`` and IoU ``|T & m| / |T | m|``.

Metrics are NaN where undefined (an empty or full mask, a constant outside group for MAD).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special
from scipy.stats import rankdata

from .._validate import bad, check_choice, check_interval
from ..engine.formula import LabelColumns, formula_masks
from ..engine.inputs import ActivationsLike, ConceptsLike
from ..engine.result import ExplanationResult
from ..engine.stats import auroc_from_ranksum, hanley_mcneil_interval
from ..engine.top import top_sets
from ._data import check_units, whole_inputs, with_extras

__all__ = [
    "METRIC_NAMES",
    "auroc_ci",
    "delong_ci",
    "metrics",
    "metric_table",
    "add_metrics",
    "add_top_precision",
    "correct_pvalues",
    "formula_masks",
]

#: Keys of :func:`metrics` (besides ``auroc``), in export order.
METRIC_NAMES = (
    "auprc", "mad", "point_biserial", "top_precision", "top_recall", "top_f1", "top_iou",
)


# ----------------------------------------------------------------------------- checks


def check_level(level) -> float:
    """The coverage of an interval: a number in (0, 1)."""
    return check_interval("level", level, 0.0, 1.0, low_open=True, high_open=True)


def _check_q(top_q) -> float:
    return check_interval("top_q", top_q, 0.0, 1.0, low_open=True)


# ----------------------------------------------------------------------------- intervals


def auroc_ci(auroc, n_pos, n_neg, level: float = 0.95, method: str = "hanley-mcneil"):
    """Confidence interval of an AUROC from its value and group sizes (vectorised).

    Hanley & McNeil (1982): ``Var = (A (1 - A) + (n1 - 1)(Q1 - A^2) + (n0 - 1)(Q2 - A^2))
    / (n1 n0)`` with ``Q1 = A / (2 - A)`` and ``Q2 = 2 A^2 / (1 + A)``, and a Wald interval
    ``A -/+ z sqrt(Var)`` clipped to [0, 1]. It needs only the summary figures, so it serves
    whole tables at once; when the scores are at hand :func:`delong_ci` (non-parametric,
    used for the held-out figures of :func:`invert.trust.explain_holdout`) is preferable.

    Parameters
    ----------
    auroc, n_pos, n_neg : array-like
        AUROC values and the numbers of positive (inside) and negative samples; broadcast.
    level : float, default 0.95
        Coverage of the two-sided interval.
    method : {"hanley-mcneil"}
        The variance formula (the only one that needs no scores).

    Returns
    -------
    low, high : numpy.ndarray (or float for scalar input)
        NaN where ``auroc`` is NaN or a group is empty.

    Examples
    --------
    >>> low, high = auroc_ci(0.8, 50, 200)
    >>> round(float(low), 3), round(float(high), 3)
    (0.723, 0.877)
    """
    level = check_level(level)
    check_choice("method", method, ("hanley-mcneil",))
    low, high = hanley_mcneil_interval(auroc, n_pos, n_neg, special.ndtri(0.5 + level / 2.0))
    if low.ndim == 0:
        return float(low), float(high)
    return low, high


def delong_intervals(ranks: np.ndarray, masks: np.ndarray, level: float):
    """DeLong interval for each row of ``masks`` (F, N) against one unit's mid-ranks."""
    z = special.ndtri(0.5 + level / 2.0)
    f = masks.shape[0]
    low = np.full(f, np.nan)
    high = np.full(f, np.nan)
    n = ranks.shape[0]
    for i in range(f):
        m = masks[i]
        n1 = int(m.sum())
        n0 = n - n1
        if n1 < 2 or n0 < 2:
            continue
        rp, rn = ranks[m], ranks[~m]
        auc = float(auroc_from_ranksum(2.0 * rp.sum(), n1, n))
        v10 = (rp - rankdata(rp)) / n0  # share of negatives below each positive
        v01 = 1.0 - (rn - rankdata(rn)) / n1  # share of positives above each negative
        s = math.sqrt(max(0.0, v10.var(ddof=1) / n1 + v01.var(ddof=1) / n0))
        low[i], high[i] = max(0.0, auc - z * s), min(1.0, auc + z * s)
    return low, high


def delong_ci(scores, labels, level: float = 0.95) -> tuple[float, float]:
    """DeLong (1988) confidence interval of the AUROC of ``scores`` for binary ``labels``.

    The variance is ``S10 / n1 + S01 / n0`` from the structural components (per positive:
    the share of negatives it outranks, ties 1/2; per negative: the share of positives that
    outrank it); the interval is Wald, clipped to [0, 1]. NaN with fewer than two samples
    in a group.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = np.arange(300) < 100
    >>> low, high = delong_ci(rng.standard_normal(300) + y, y)
    >>> bool(low < 0.76 < high)
    True
    """
    level = check_level(level)
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).astype(bool).ravel()
    if y.shape != s.shape:
        raise bad("labels", f"{s.shape[0]} entries (one per score)", y.shape[0])
    low, high = delong_intervals(rankdata(s), y[None, :], level)
    return float(low[0]), float(high[0])


# ----------------------------------------------------------------------------- metrics


def metric_table(values: np.ndarray, masks: np.ndarray,
                 top_q: float = 0.05) -> dict[str, np.ndarray]:
    """All metrics of one unit for several masks at once.

    Parameters
    ----------
    values : numpy.ndarray, shape (N,)
        One unit's activations.
    masks : numpy.ndarray of bool, shape (F, N)
        The formulas' masks.
    top_q : float
        Share of top activations for the top-q metrics.

    Returns
    -------
    dict of str to numpy.ndarray of shape (F,)
        ``auroc`` and the keys of :data:`METRIC_NAMES`.
    """
    a = np.asarray(values, dtype=np.float64).ravel()
    masks = np.atleast_2d(np.asarray(masks, dtype=bool))
    n = a.shape[0]
    mf = masks.astype(np.float64)
    n1 = mf.sum(axis=1)
    n0 = n - n1
    out: dict[str, np.ndarray] = {"auroc": auroc_from_ranksum(2.0 * (mf @ rankdata(a)), n1, n)}
    with np.errstate(divide="ignore", invalid="ignore"):
        ok = (n1 > 0) & (n0 > 0)

        # AUPRC: cumulative true positives at the end of each group of tied activations
        order = np.argsort(-a, kind="stable")
        sa = a[order]
        ends = np.flatnonzero(np.r_[sa[1:] != sa[:-1], True])
        tp = np.cumsum(masks[:, order], axis=1, dtype=np.float64)[:, ends]
        prec = tp / (ends + 1.0)
        d_tp = np.diff(tp, axis=1, prepend=0.0)
        out["auprc"] = np.where(n1 > 0, (d_tp * prec).sum(axis=1) / n1, np.nan)

        # moments: centred values keep the sums accurate
        ac = a - a.mean()
        s_in = mf @ ac
        q_in = mf @ (ac * ac)
        tot, totsq = ac.sum(), float(ac @ ac)
        mean_in = s_in / n1
        mean_out = (tot - s_in) / n0
        var_out = ((totsq - q_in) - n0 * mean_out**2) / (n0 - 1)
        sd_out = np.sqrt(np.maximum(var_out, 0.0))
        out["mad"] = np.where(ok & (sd_out > 0), (mean_in - mean_out) / sd_out, np.nan)
        sd_all = math.sqrt(totsq / n - (tot / n) ** 2)
        out["point_biserial"] = np.where(
            ok & (sd_all > 0), (mean_in - mean_out) * np.sqrt(n1 * n0) / (n * sd_all), np.nan)

        k = max(1, math.ceil(top_q * n - 1e-9))
        thr = np.partition(a, n - k)[n - k]
        top = a >= thr
        nt = float(top.sum())
        inter = mf @ top.astype(np.float64)
        out["top_precision"] = inter / nt
        out["top_recall"] = np.where(n1 > 0, inter / n1, np.nan)
        out["top_f1"] = 2.0 * inter / (nt + n1)
        out["top_iou"] = inter / (nt + n1 - inter)
    return out


def metrics(activations_1d, mask, *, top_q: float = 0.05) -> dict[str, float]:
    """AUROC and the other metrics of one formula mask for one unit.

    Parameters
    ----------
    activations_1d : array-like, shape (N,)
        A unit's activations (finite).
    mask : array-like of bool, shape (N,)
        Where the formula holds.
    top_q : float, default 0.05
        Share of samples counted as the unit's top activations (see the module docstring).

    Returns
    -------
    dict
        ``auroc``, ``auprc``, ``mad``, ``point_biserial``, ``top_precision``,
        ``top_recall``, ``top_f1``, ``top_iou`` (floats, NaN where undefined).

    Examples
    --------
    >>> import numpy as np
    >>> a = np.array([0.1, 0.9, 0.8, 0.2, 0.7, 0.3])
    >>> m = np.array([False, True, True, False, False, False])
    >>> res = metrics(a, m, top_q=1 / 3)
    >>> res["auprc"], res["top_f1"], res["auroc"]
    (1.0, 1.0, 1.0)
    """
    top_q = _check_q(top_q)
    a = np.asarray(activations_1d, dtype=np.float64).ravel()
    m = np.asarray(mask).astype(bool).ravel()
    if m.shape != a.shape:
        raise bad("mask", f"{a.shape[0]} entries (one per activation)", m.shape[0])
    if not np.isfinite(a).all():
        raise bad("activations_1d", "finite numbers", "non-finite values", raw=True)
    tab = metric_table(a, m[None, :], top_q)
    return {k: float(tab[k][0]) for k in ("auroc", *METRIC_NAMES)}


def add_metrics(result: ExplanationResult, activations: ActivationsLike,
                concepts: ConceptsLike, *, top_q: float = 0.05, rows=None,
                prefix: str = "") -> ExplanationResult:
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
    a, _, y, _ = whole_inputs(activations, concepts)
    if rows is not None:
        rows = np.asarray(rows, dtype=np.int64)
        a, y = a[rows], y[rows]
    check_units(a, result)
    cols = LabelColumns(y)
    keys = METRIC_NAMES + (("auroc",) if prefix else ())
    for k, u in enumerate(result.units):
        if not u:
            continue
        tab = metric_table(a[:, k], formula_masks([e.formula for e in u], cols), top_q)
        for i, e in enumerate(u):
            new = {prefix + key: float(tab[key][i]) for key in keys}
            new[prefix + "top_q"] = float(top_q)
            u[i] = with_extras(e, new)
    return result


def add_top_precision(result: ExplanationResult, activations: ActivationsLike,
                      concepts: ConceptsLike, *, top_q: float | None = None, rows=None,
                      prefix: str = "") -> ExplanationResult:
    """Give every reported formula that lacks it its ``top_precision``: the share of the
    unit's top activations where the formula holds, ``|T & m| / |T|`` (the label covers
    the peak), with ``top_q`` and ``top_size`` ``|T|``.

    The top set is that of the ``top_f1`` search (:mod:`invert.engine.top`): by default a
    sparse unit's firing rate, else the top 0.5%, so AUROC runs and top-F1 runs report the
    same figure. Explanations that already have ``prefix + "top_precision"`` (a top-F1
    search, :func:`add_metrics`) keep theirs.

    Parameters
    ----------
    result : ExplanationResult
        Modified in place (explanations are replaced by copies with more extras) and
        returned.
    activations, concepts
        The data the figures are computed on (the same columns as the search).
    top_q : float in (0, 1), optional
        The share of top activations (default: per unit, as above).
    rows : array-like of int, optional
        Only these samples (e.g. the held-out ones, with ``prefix="holdout_"``).
    prefix : str
        Prepended to the keys.

    Returns
    -------
    ExplanationResult
        ``result``.

    Examples
    --------
    >>> import numpy as np, invert
    >>> rng = np.random.default_rng(0)
    >>> y = rng.random((1000, 3)) < 0.1
    >>> a = 3.0 * y[:, 1] + rng.standard_normal(1000)
    >>> res = add_top_precision(invert.explain(a, y, length=1), a, y, top_q=0.02)
    >>> res[0][0].extras["top_precision"] > 0.9, res[0][0].extras["top_size"]
    (True, 20)
    """
    if top_q is not None:
        top_q = check_interval("top_q", top_q, 0.0, 1.0, low_open=True, high_open=True)
    a, _, y, _ = whole_inputs(activations, concepts)
    if rows is not None:
        rows = np.asarray(rows, dtype=np.int64)
        a, y = a[rows], y[rows]
    check_units(a, result)
    cols = LabelColumns(y)
    key = prefix + "top_precision"
    for k, u in enumerate(result.units):
        todo = [i for i, e in enumerate(u) if key not in e.extras]
        if not todo:
            continue
        top, q = top_sets(a[:, k:k + 1], top_q)
        masks = formula_masks([u[i].formula for i in todo], cols)
        size = int(top[:, 0].sum())
        inter = masks.astype(np.int64) @ top[:, 0].astype(np.int64)
        for i, hits in zip(todo, inter, strict=True):
            u[i] = with_extras(u[i], {key: float(hits) / size, prefix + "top_q": float(q[0]),
                                      prefix + "top_size": size})
    return result


# ----------------------------------------------------------------------------- corrections


def correct_pvalues(p, method: str = "bh") -> np.ndarray:
    """Benjamini-Hochberg q-values or Holm adjusted p-values across units.

    NaN entries (units without a test) are left NaN and do not count as tests.

    Parameters
    ----------
    p : array-like of float, shape (K,)
        One p-value per unit.
    method : {"bh", "holm"}
        ``bh``: ``q_(i) = min_{j >= i} m p_(j) / j`` (false discovery rate; valid under
        independence and positive dependence). ``holm``: ``min(1, max_{j <= i} (m - j + 1)
        p_(j))`` (family-wise error rate, any dependence).

    Returns
    -------
    numpy.ndarray of float, shape (K,)
        Adjusted values, capped at 1; reject where ``<= alpha``.

    Examples
    --------
    >>> correct_pvalues([0.01, 0.04, 0.03, 0.5], "bh").round(3).tolist()
    [0.04, 0.053, 0.053, 0.5]
    >>> correct_pvalues([0.01, 0.04, 0.03, 0.5], "holm").round(3).tolist()
    [0.04, 0.09, 0.09, 0.5]
    """
    method = check_choice("method", method, ("bh", "holm"))
    arr = np.asarray(p, dtype=np.float64)
    if arr.ndim != 1:
        raise bad("p", "a 1-D array of p-values", f"shape {arr.shape}", raw=True)
    out = np.full(arr.shape, np.nan)
    ok = ~np.isnan(arr)
    v = arr[ok]
    if np.any((v < 0) | (v > 1)):
        raise bad("p", "p-values in [0, 1] (or NaN)", float(v[(v < 0) | (v > 1)][0]))
    m = v.size
    if m == 0:
        return out
    order = np.argsort(v, kind="stable")
    sv = v[order]
    idx = np.arange(1, m + 1, dtype=np.float64)
    if method == "bh":
        adj = np.minimum.accumulate((sv * m / idx)[::-1])[::-1]
    else:
        adj = np.maximum.accumulate(sv * (m - idx + 1))
    res = np.empty(m)
    res[order] = np.minimum(adj, 1.0)
    out[ok] = res
    return out
