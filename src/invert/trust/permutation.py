"""P-values corrected for the search, by permutation, and significance across units.

Part of :mod:`invert.trust` (import from there). :func:`permutation_test` reruns the whole
beam search on permuted activations; units with the same tie structure share one null
distribution, so it is computed once per tie structure for a whole layer.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from .._validate import bad, check_choice, check_int, check_interval, check_random_state
from ..engine.inputs import ActivationsLike, ConceptsLike
from ..engine.params import SEARCH_PARAMS, check_search_params
from ..engine.result import ExplanationResult
from ..engine.search import explain
from ._data import check_units, whole_inputs, with_extras
from .metrics import correct_pvalues

__all__ = ["permutation_test", "significant_units"]

log = logging.getLogger(__name__)


def _check_alpha(alpha) -> float:
    return check_interval("alpha", alpha, 0.0, 1.0, low_open=True)


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
        res = explain(np.ascontiguousarray(mat), y, **kwargs)
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


def _search_kwargs(params: dict[str, Any], overrides: dict[str, Any]
                   ) -> tuple[dict[str, Any], float]:
    """The search's keyword arguments (``params``' search parameters, then ``overrides``)
    and the sign that makes a higher AUROC better."""
    kwargs = {key: params[key] for key in SEARCH_PARAMS if key in params}
    kwargs.update(overrides)
    checked = check_search_params({k: kwargs[k] for k in SEARCH_PARAMS if k in kwargs}, None)
    return kwargs, 1.0 if checked["mode"] == "positive" else -1.0


def _tie_groups(a: np.ndarray, result: ExplanationResult) -> dict[bytes, list[int]]:
    """The explained units grouped by tie structure (see :func:`_tie_keys`)."""
    groups: dict[bytes, list[int]] = {}
    for k, key in enumerate(_tie_keys(a)):
        if result.units[k]:
            groups.setdefault(key, []).append(k)
    return groups


def _group_pvalues(a: np.ndarray, y, obs: np.ndarray, groups: dict[bytes, list[int]],
                   n_perm: int, rng: np.random.Generator, sign: float, kwargs: dict,
                   block: int) -> np.ndarray:
    """Each unit's p-value against the shared null of its tie structure (NaN outside
    ``groups``)."""
    n = a.shape[0]
    p = np.full(len(obs), np.nan)
    for key, members in groups.items():
        if key == b"":
            base = np.arange(n, dtype=np.float32 if n < (1 << 24) else np.float64)
        else:
            base = a[:, members[0]].copy()
        null = np.sort(_null_best(base, y, n_perm, rng, sign, kwargs, block))
        p[members] = _null_pvalues(null, obs[members], n_perm)
    return p


def _annotate(result: ExplanationResult, p: np.ndarray, alpha: float, method: str,
              n_perm: int) -> None:
    """Write the per-unit figures into each unit's best explanation's extras."""
    q = correct_pvalues(p, "bh")
    holm = correct_pvalues(p, "holm")
    reject = _reject(q if method == "bh" else holm, alpha)
    for k, u in enumerate(result.units):
        if u:
            u[0] = with_extras(u[0], {
                "search_p_value": float(p[k]), "q_value": float(q[k]),
                "holm_p_value": float(holm[k]), "significant": bool(reject[k]),
                "n_permutations": n_perm})


def permutation_test(
    activations: ActivationsLike,
    concepts: ConceptsLike,
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
        The data of the search that produced ``result``. For a
        :class:`~invert.trust.HoldoutResult`, only its search split is used.
    result : ExplanationResult
        From :func:`invert.explain` or :func:`~invert.trust.explain_holdout`.
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
    alpha = _check_alpha(alpha)
    method = check_choice("method", method, ("bh", "holm"))
    rng = check_random_state("random_state", random_state)
    a, _, y, _ = whole_inputs(activations, concepts)
    rows = getattr(result, "search_index", None)
    if rows is not None:
        a, y = a[rows], y[rows]
    check_units(a, result)
    kwargs, sign = _search_kwargs(result.params, search_kwargs)
    obs = np.array([sign * u[0].auroc if u else np.nan for u in result.units])
    groups = _tie_groups(a, result)
    log.info("permutation_test: %d units, %d tie structures, %d permutations each",
             len(obs), len(groups), n_permutations)
    p = _group_pvalues(a, y, obs, groups, n_permutations, rng, sign, kwargs, block)
    if annotate:
        _annotate(result, p, alpha, method, n_permutations)
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
    alpha = _check_alpha(alpha)
    p = np.array([u[0].extras.get("search_p_value", np.nan) if u else np.nan
                  for u in result.units], dtype=np.float64)
    if not any(u and "search_p_value" in u[0].extras for u in result.units):
        raise bad("result", "a result annotated by permutation_test", "no search_p_value",
                  raw=True)
    return _reject(correct_pvalues(p, method), alpha)
