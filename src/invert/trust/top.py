"""The best formulas for a unit's top-q activations (an activation range).

Part of :mod:`invert.trust` (import from there).
"""

from __future__ import annotations

import math

import numpy as np

from .._validate import check_interval
from ..engine.inputs import ActivationsLike, ConceptsLike, Labels
from ..engine.result import ExplanationResult
from ..engine.search import explain
from ._data import whole_inputs, with_extras

__all__ = ["explain_top"]


def _top_indicators(a: np.ndarray, top_q: float) -> np.ndarray:
    """(N, K) float32: 1 where a sample is in its unit's top set (at least the
    ``ceil(top_q N)``-th largest activation, ties included), else 0."""
    n = a.shape[0]
    kq = max(1, math.ceil(top_q * n - 1e-9))
    thr = np.partition(a, n - kq, axis=0)[n - kq]
    return (a >= thr[None, :]).astype(np.float32)


def explain_top(activations: ActivationsLike, concepts: ConceptsLike, *, top_q: float = 0.01,
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
    top_q = check_interval("top_q", top_q, 0.0, 1.0, low_open=True, high_open=True)
    a, unit_ids, y, names = whole_inputs(activations, concepts)
    ind = _top_indicators(a, top_q)
    res = explain(ind, Labels(names, y), **search_kwargs)
    sizes = ind.sum(axis=0).astype(int)
    for k, u in enumerate(res.units):
        if unit_ids is not None:
            u.unit_id = unit_ids[k]
        for i, e in enumerate(u):
            u[i] = with_extras(e, {"top_q": top_q, "top_size": int(sizes[k])})
    res.params = {**res.params, "top_q": top_q}
    return res
