"""Statistics one can trust: held-out evaluation, search-aware p-values, more metrics.

Modules: :mod:`~invert.trust.holdout` (split, held-out figures, parsimony),
:mod:`~invert.trust.permutation` (search-corrected p-values), :mod:`~invert.trust.tail`
(their tail approximation), :mod:`~invert.trust.floor` (what settings can reach),
:mod:`~invert.trust.metrics`
(metrics, intervals, corrections), :mod:`~invert.trust.top` (top-q activations),
:mod:`~invert.trust.filler` (literals that can be dropped) and
:mod:`~invert.trust.baseline` (what random directions reach); import from
:mod:`invert.trust`.

A formula picked as the best of thousands of candidates looks better on the data that picked
it than it is. This module offers

* :func:`explain_holdout`: search on one stratified split, report AUROC, its DeLong
  confidence interval and the Mann-Whitney p-value on the other, with a parsimony rule so
  that longer formulas must earn their literals on held-out data;
* :func:`permutation_test`: a p-value per unit *corrected for the search* (the whole beam
  search is rerun on permuted activations; one shared null per layer, or for several layers
  with :func:`permutation_null`; tied units on randomly tie-broken ranks, copies of one input
  moved together, :func:`duplicate_groups`), below ``1 / (P + 1)`` through a generalized
  Pareto fit to the null's tail (:func:`fit_tail`), then :func:`correct_pvalues`
  (Benjamini-Hochberg, Holm) across units and :func:`significant_units`;
  :func:`permutation_floor` says beforehand what given settings can reach;
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

from ._ties import duplicate_groups
from .baseline import RandomBaseline, random_baseline, run_figures
from .filler import check_filler, drop_literal
from .floor import PermutationEstimate, PermutationFloor, permutation_floor
from .holdout import DEFAULT_PARSIMONY, HoldoutResult, explain_holdout, stratified_split
from .metrics import (
    METRIC_NAMES,
    add_metrics,
    add_top_precision,
    auroc_ci,
    correct_pvalues,
    delong_ci,
    formula_masks,
    metric_table,
    metrics,
)
from .permutation import PermutationNull, permutation_null, permutation_test, significant_units
from .tail import TailFit, fit_tail
from .top import explain_top

__all__ = [
    "HoldoutResult", "explain_holdout", "stratified_split", "permutation_test",
    "correct_pvalues", "significant_units", "auroc_ci", "delong_ci", "metrics",
    "metric_table", "add_metrics", "formula_masks", "explain_top", "DEFAULT_PARSIMONY",
    "METRIC_NAMES", "permutation_floor", "PermutationFloor", "PermutationEstimate", "fit_tail",
    "TailFit", "permutation_null", "PermutationNull", "duplicate_groups", "check_filler",
    "drop_literal", "add_top_precision", "random_baseline", "RandomBaseline", "run_figures",
]
