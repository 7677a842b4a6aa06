"""Filler literals: literals of a best formula that can be dropped without a real loss.

Part of :mod:`invert.trust` (import from there).

A search that must reach a support floor (``min_fraction``) or that scores the whole
distribution often pads a formula with literals that change little (``word:state |
word:man`` for a "state" unit). For each unit's best formula of two or more literals,
:func:`check_filler` drops each literal in turn (in the formula tree its parent node is
replaced by its sibling: ``(a | b) & c`` without ``b`` is ``a & c``) and compares the shorter
formula's AUROC with the 95% Hanley-McNeil interval of the full formula's, on the held-out
samples when the result has a holdout split (else on all samples). A literal whose removal
leaves the AUROC at or above the interval's lower end (``mode="negative"``: at or below its
upper end) is *filler*.

Extras of the best explanation (rank 0):

``filler``
    The droppable literals, as printed (``", "``-separated; ``""`` when none).
``simplified``
    The formula with filler dropped one literal at a time (always the one whose removal
    keeps the AUROC highest, the full formula's interval as the bar) while any can be; None
    when nothing can be dropped.
``simplified_auroc``
    The simplified formula's AUROC on the same samples (None when nothing can be dropped).
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
from ._data import check_units, whole_inputs, with_extras
from .metrics import check_level

__all__ = ["check_filler", "drop_literal"]


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


def _simplify(formula: Formula, ranks: np.ndarray, cols: LabelColumns, bar: float,
              sign: float) -> tuple[Formula, float]:
    """Drop literals one at a time (the best remaining AUROC first) while the AUROC stays
    at the bar (``sign``: +1 at or above, -1 at or below)."""
    best_auc = float("nan")
    while formula.length > 1:
        shorter = [drop_literal(formula, i) for i in range(formula.length)]
        cands = [f for f in shorter if f is not None]
        auc, _ = _aurocs(ranks, formula_masks(cands, cols))
        score = np.where(np.isnan(auc), -np.inf, sign * auc)
        j = int(np.argmax(score))
        if not sign * auc[j] >= sign * bar:
            break
        formula, best_auc = cands[j], float(auc[j])
    return formula, best_auc


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
    cols = LabelColumns(y)
    names = result.concept_names
    for k, u in enumerate(result.units):
        if not u:
            continue
        best = u[0]
        f = best.formula
        new = {"filler": "", "simplified": None, "simplified_auroc": None, "filler_on": on}
        if f.length > 1:
            ranks = rankdata(a[:, k])
            full_auc, n1 = _aurocs(ranks, formula_masks([f], cols))
            low, high = hanley_mcneil_interval(full_auc, n1, a.shape[0] - n1, z)
            bar = float(low[0] if sign > 0 else high[0])
            shorter = [drop_literal(f, i) for i in range(f.length)]
            auc, _ = _aurocs(ranks, formula_masks(shorter, cols))
            lits = f.literals()
            drop = [lits[i].to_string(names) for i in range(f.length)
                    if sign * auc[i] >= sign * bar]
            if drop:
                simple, s_auc = _simplify(f, ranks, cols, bar, sign)
                new |= {"filler": ", ".join(drop), "simplified": simple.to_string(names),
                        "simplified_auroc": s_auc}
        u[0] = with_extras(best, new)
    return result
