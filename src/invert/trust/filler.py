"""Filler literals: literals of a best formula that can be dropped without a real loss.

Part of :mod:`invert.trust` (import from there).

A search that must reach a support floor (``min_fraction``) or that scores the whole
distribution often pads a formula with literals that change little (``word:state |
word:man`` for a "state" unit). For each unit's best formula of two or more literals,
:func:`check_filler` drops each literal in turn (in the formula tree its parent node is
replaced by its sibling: ``(a | b) & c`` without ``b`` is ``a & c``) and compares the shorter
formula's score with the 95% interval of the full formula's, on the held-out samples when
the result has a holdout split (else on all samples). The score is the search's metric: the
AUROC (Hanley-McNeil interval) or, for a ``metric="top_f1"`` result, the F1 against the
unit's top set on those samples (the result's ``top_q``; interval ``F1 -/+ z SE`` with the
delta-method ``SE^2 = 4 a (b + c)(a + b + c) / (2a + b + c)^4`` of the multinomial counts
``a = |T & m|``, ``b = |m \\ T|``, ``c = |T \\ m|``): judging a top-F1 label by AUROC would call
almost every literal filler, since a literal that adds a few top samples barely moves the
AUROC. A literal whose removal leaves the score at or above the interval's lower end
(``mode="negative"``: the AUROC at or below its upper end) is *filler*.

Extras of the best explanation (rank 0):

``filler``
    The droppable literals, as printed (``", "``-separated; ``""`` when none).
``simplified``
    The formula with filler dropped one literal at a time (always the one whose removal
    keeps the score highest, the full formula's interval as the bar) while any can be; None
    when nothing can be dropped.
``simplified_auroc``
    The simplified formula's AUROC on the same samples (None when nothing can be dropped).
``simplified_top_f1``
    For a top-F1 result, the simplified formula's F1 on the same samples (else absent).
``filler_on``
    ``"holdout"`` or ``"all"``: the samples the check used.
"""

from __future__ import annotations

import numpy as np
from scipy import special
from scipy.stats import rankdata

from ..engine.formula import BinaryFormula, Formula, LabelColumns, formula_masks
from ..engine.inputs import ActivationsLike, ConceptsLike
from ..engine.result import ExplanationResult
from ..engine.stats import auroc_from_ranksum, hanley_mcneil_interval
from ..engine.top import top_sets
from ._data import check_units, whole_inputs, with_extras
from .metrics import check_level

__all__ = ["check_filler", "drop_literal", "f1_interval"]


def drop_literal(formula: Formula, i: int) -> Formula | None:
    """``formula`` without its ``i``-th literal (left to right): the literal's parent node
    is replaced by its sibling. None for a single literal.

    Examples
    --------
    >>> from invert import parse_formula
    >>> f = parse_formula("(0 | 1) & ~2")
    >>> [str(drop_literal(f, i)) for i in range(3)]
    ['1 & ~2', '0 & ~2', '0 | 1']
    """
    if not isinstance(formula, BinaryFormula):
        return None
    n_left = formula.left.length
    if i < n_left:
        left = drop_literal(formula.left, i)
        return formula.right if left is None else type(formula)(left, formula.right,
                                                                 formula.names)
    right = drop_literal(formula.right, i - n_left)
    return formula.left if right is None else type(formula)(formula.left, right, formula.names)


def _aurocs(ranks: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUROC (F,) of each mask (F, N) against the mid-ranks, and the supports (F,)."""
    n1 = masks.sum(axis=1).astype(np.float64)
    return auroc_from_ranksum(2.0 * (masks.astype(np.float64) @ ranks), n1,
                              float(ranks.shape[0])), n1


def f1_interval(hits, n_top, n_mask, z: float = 1.959963984540054):
    """Wald interval ``F1 -/+ z SE`` of the F1 ``2 a / (|T| + n1)`` of a mask against a top
    set, clipped to [0, 1] (vectorised): ``a = hits`` top samples inside the mask,
    ``b = n_mask - a``, ``c = n_top - a`` and the delta-method variance of ``2a / (2a + b +
    c)`` under multinomial counts, ``4 a (b + c)(a + b + c) / (2a + b + c)^4``. NaN where
    the top set and the mask are both empty.

    Examples
    --------
    >>> low, high = f1_interval(50, 100, 100)
    >>> round(float(low), 3), round(float(high), 3)
    (0.415, 0.585)
    """
    a = np.asarray(hits, dtype=np.float64)
    bc = np.asarray(n_top, dtype=np.float64) + np.asarray(n_mask, dtype=np.float64) - 2 * a
    d = 2 * a + bc
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = 2 * a / d
        se = np.sqrt(4 * a * bc * (a + bc)) / d ** 2
    return np.clip(f1 - z * se, 0.0, 1.0), np.clip(f1 + z * se, 0.0, 1.0)


def _top_f1(top: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """F1 (F,) of each mask (F, N) against the top set ``top`` (N,) bool."""
    hits = (masks & top).sum(axis=1).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 2 * hits / (top.sum() + masks.sum(axis=1))


def _scorer(a: np.ndarray, top_f1: bool, top_q: float | None):
    """The score of masks (F, N) on activations ``a`` (N,): AUROC, or the F1 against the
    top set of ``a`` (``top_q``); and the full formula's interval of that score."""
    if not top_f1:
        ranks = rankdata(a)

        def auroc(masks: np.ndarray) -> np.ndarray:
            return _aurocs(ranks, masks)[0]

        def auroc_interval(mask: np.ndarray, z: float) -> tuple[float, float]:
            auc, n1 = _aurocs(ranks, mask[None, :])
            low, high = hanley_mcneil_interval(auc, n1, a.shape[0] - n1, z)
            return float(low[0]), float(high[0])

        return auroc, auroc_interval
    top = top_sets(a[:, None], top_q)[0][:, 0]

    def f1(masks: np.ndarray) -> np.ndarray:
        return _top_f1(top, masks)

    def interval(mask: np.ndarray, z: float) -> tuple[float, float]:
        low, high = f1_interval((mask & top).sum(), top.sum(), mask.sum(), z)
        return float(low), float(high)

    return f1, interval


def _simplify(formula: Formula, score, cols: LabelColumns, bar: float,
              sign: float) -> tuple[Formula, float]:
    """Drop literals one at a time (the best remaining score first) while the score stays
    at the bar (``sign``: +1 at or above, -1 at or below)."""
    best = float("nan")
    while formula.length > 1:
        shorter = [drop_literal(formula, i) for i in range(formula.length)]
        cands = [f for f in shorter if f is not None]
        val = score(formula_masks(cands, cols))
        ranked = np.where(np.isnan(val), -np.inf, sign * val)
        j = int(np.argmax(ranked))
        if not sign * val[j] >= sign * bar:
            break
        formula, best = cands[j], float(val[j])
    return formula, best


def check_filler(result: ExplanationResult, activations: ActivationsLike,
                 concepts: ConceptsLike, *, rows=None, level: float = 0.95
                 ) -> ExplanationResult:
    """Flag the filler literals of each unit's best formula (see the module docstring).

    Parameters
    ----------
    result : ExplanationResult
        Modified in place (the best explanations are replaced by copies with the extras
        ``filler``, ``simplified``, ``simplified_auroc``, ``filler_on``) and returned.
    activations, concepts
        The data of the search (all samples).
    rows : array-like of int, optional
        The samples to judge on; default the result's ``holdout_index`` when it has one,
        else all.
    level : float, default 0.95
        Coverage of the full formula's AUROC interval (Hanley-McNeil).

    Returns
    -------
    ExplanationResult
        ``result``.

    Examples
    --------
    >>> import numpy as np, invert
    >>> rng = np.random.default_rng(0)
    >>> y = rng.random((3000, 3)) < np.array([0.2, 0.02, 0.3])
    >>> a = 2.0 * y[:, 0] + rng.standard_normal(3000)
    >>> res = invert.explain(a, y, length=2, min_fraction=0.21)
    >>> str(res[0][0].formula)
    '0 | 1'
    >>> check_filler(res, a, y)[0][0].extras["filler"]
    '1'
    """
    level = check_level(level)
    z = float(special.ndtri(0.5 + level / 2.0))
    a, _, y, _ = whole_inputs(activations, concepts)
    check_units(a, result)
    held = getattr(result, "holdout_index", None) if rows is None else rows
    on = "all" if held is None else ("holdout" if rows is None else "rows")
    if held is not None:
        held = np.asarray(held, dtype=np.int64)
        a, y = a[held], y[held]
    sign = -1.0 if result.params.get("mode") == "negative" else 1.0
    top_f1 = result.params.get("metric") == "top_f1"
    cols = LabelColumns(y)
    names = result.concept_names
    for k, u in enumerate(result.units):
        if not u:
            continue
        best = u[0]
        f = best.formula
        new = {"filler": "", "simplified": None, "simplified_auroc": None, "filler_on": on}
        if top_f1:
            new["simplified_top_f1"] = None
        if f.length > 1:
            score, interval = _scorer(a[:, k], top_f1, result.params.get("top_q"))
            low, high = interval(formula_masks([f], cols)[0], z)
            bar = low if sign > 0 else high
            shorter = [drop_literal(f, i) for i in range(f.length)]
            val = score(formula_masks(shorter, cols))
            lits = f.literals()
            drop = [lits[i].to_string(names) for i in range(f.length)
                    if sign * val[i] >= sign * bar]
            if drop:
                simple, s_val = _simplify(f, score, cols, bar, sign)
                ranks = rankdata(a[:, k])
                s_auc = float(_aurocs(ranks, formula_masks([simple], cols))[0][0])
                new |= {"filler": ", ".join(drop), "simplified": simple.to_string(names),
                        "simplified_auroc": s_auc}
                if top_f1:
                    new["simplified_top_f1"] = s_val
        u[0] = with_extras(best, new)
    return result
