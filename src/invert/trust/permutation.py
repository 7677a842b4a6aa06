"""P-values corrected for the search, by permutation, and significance across units.

Part of :mod:`invert.trust` (import from there). :func:`permutation_test` reruns the whole
beam search on permuted activations. The search sees a unit only through its ranks, so every
unit without ties shares one null distribution, computed once per layer by searching
``n_permutations`` permuted rankings as if they were units of a layer. Tied units (ReLU
zeros) are tested on randomly tie-broken ranks against the same null (one more search of the
tied units); copies of one input (duplicate samples) are permuted as one sample; the null's
tail is approximated by a generalized Pareto fit (:mod:`~invert.trust.tail`), so that
p-values go below ``1 / (n_permutations + 1)``. :func:`permutation_null` computes the null
once for several layers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._validate import (
    bad,
    check_choice,
    check_int,
    check_interval,
    check_random_state,
)
from ..engine.inputs import ActivationsLike, ConceptsLike, as_labels
from ..engine.params import SEARCH_PARAMS, check_search_params
from ..engine.result import Explanation, ExplanationResult, UnitExplanations
from ..engine.search import explain
from ._data import check_units, whole_inputs, with_extras
from ._ties import (
    rank_dtype,
    resolve_groups,
    tie_broken_ranks,
    ties_matter,
    vary_within_groups,
)
from ._ties import tie_keys as _tie_keys
from .floor import PermutationEstimate, make_floor
from .holdout import frequent_concepts
from .metrics import correct_pvalues
from .tail import TAIL_METHODS, TailFit, fit_tail, null_pvalues

__all__ = ["permutation_test", "permutation_null", "PermutationNull", "significant_units",
           "TIES"]

log = logging.getLogger(__name__)

#: Values of ``ties`` accepted by :func:`permutation_test`.
TIES = ("break", "exact")
#: Permutations searched before the estimate: batches of 2 (warm-up), 6 and 24, timed.
FIRST_BATCH = 32


def _check_alpha(alpha) -> float:
    return check_interval("alpha", alpha, 0.0, 1.0, low_open=True)


# ----------------------------------------------------------------------------- ties


# ----------------------------------------------------------------------------- the null


class _Ticker:
    """Counts searched (pseudo-)units and reports them to ``progress(done, total)``."""

    def __init__(self, total: int, progress: Callable[[int, int], Any] | None):
        self.done, self.total, self.progress = 0, total, progress

    def __call__(self, n: int) -> None:
        self.done += n
        if self.progress is not None:
            self.progress(self.done, self.total)


def _null_best(base: np.ndarray, y, n_perm: int, rng: np.random.Generator, sign: float,
               kwargs: dict, block: int, tick: Callable[[int], Any] | None = None,
               gid: np.ndarray | None = None) -> np.ndarray:
    """Best (signed) AUROC of the search on ``n_perm`` permutations of ``base`` (of the
    groups of copies ``gid``, whose members share a value, where given)."""
    out = np.empty(n_perm)
    done = 0
    while done < n_perm:
        c = min(block, n_perm - done)
        mat = rng.permuted(np.tile(base, (c, 1)), axis=1)
        mat = (mat if gid is None else mat[:, gid]).T
        res = explain(np.ascontiguousarray(mat), y, **kwargs)
        out[done:done + c] = [sign * u[0].auroc if u else -np.inf for u in res.units]
        done += c
        if tick is not None:
            tick(c)
    return out


def _null_pvalues(null_sorted: np.ndarray, obs, n_perm: int) -> np.ndarray:
    """``(1 + #{null >= obs}) / (1 + n_perm)`` for each observed value (``null_sorted``
    ascending, ``n_perm`` entries); observed values are lowered by 1e-12 so that a null
    value equal up to rounding counts as at least as extreme."""
    return null_pvalues(null_sorted[:n_perm], obs)[0]


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


# ----------------------------------------------------------------------------- the statistic


def _search_best(u: UnitExplanations) -> Explanation:
    """The formula with the best search score (search rank 0 where a parsimony rule moved
    another formula to the top), i.e. the statistic the null is built for."""
    for e in u:
        if e.extras.get("search_rank", 0) == 0:
            return e
    return u[0]


@dataclass(frozen=True, eq=False)
class PermutationNull:
    """The permutation null of a search: what :func:`permutation_test` compares with.

    From :func:`permutation_null`; pass it as ``null=`` to test several layers searched on the
    same samples and concepts with the same parameters (and holdout split) against one null.

    Attributes
    ----------
    values : numpy.ndarray of float, shape (n_permutations,)
        The search maximum on each permuted ranking, ascending (signed: higher is better,
        i.e. minus the AUROC for ``mode="negative"``).
    tail : TailFit or None
        The accepted tail fit (None without a tail or where no fit was accepted).
    tail_method : {"gpd", None}
    n_samples : int
        Samples searched (the search split of a holdout result).
    params : dict
        The search parameters (``SEARCH_PARAMS``) the null is valid for.
    seconds_per_permutation : float
        Measured while computing it.
    rows : numpy.ndarray of int or None
        The holdout result's search split (None: all samples).
    groups : numpy.ndarray of int or None
        Groups of copies among the searched samples (ids ``0 .. M-1``), permuted as one
        sample each; None: every sample on its own.
    """

    values: np.ndarray
    tail: TailFit | None
    tail_method: str | None
    n_samples: int
    params: dict[str, Any]
    seconds_per_permutation: float
    rows: np.ndarray | None = None
    groups: np.ndarray | None = None

    @property
    def n_permutations(self) -> int:
        return int(self.values.size)


@dataclass
class _Plan:
    """Which units are tested against which null, and what is observed so far."""

    groups: dict[bytes, list[int]]  # null key -> units (b"": the untied null)
    bases: dict[bytes, np.ndarray]  # null key -> values whose permutations make the null
    tie_broken: list[int]  # units observed on tie-broken ranks (ties="break")
    obs: np.ndarray  # signed observed statistic per unit (NaN: not tested)
    formulas: list[str | None]  # the formula attaining it
    gid: np.ndarray | None = None  # groups of copies (ties="break"), permuted together


def _plan(a: np.ndarray, y, result: ExplanationResult, ties: str, sign: float,
          gid: np.ndarray | None) -> _Plan:
    """Group the explained units by null and read the statistics of the untied ones."""
    n, k = a.shape
    units = [j for j in range(k) if result.units[j]]
    obs = np.full(k, np.nan)
    formulas: list[str | None] = [None] * k
    for j in units:
        e = _search_best(result.units[j])
        obs[j], formulas[j] = sign * e.auroc, str(e.formula)
    ramp = np.arange(n, dtype=rank_dtype(n))
    if ties == "exact":
        groups = _tie_groups(a, result)
        bases = {key: ramp if key == b"" else a[:, m[0]].copy() for key, m in groups.items()}
        return _Plan(groups, bases, [], obs, formulas)
    tied = ties_matter(a, units, y, gid)
    if gid is not None:  # groups whose members differ: tested on the groups' mean values
        tied |= vary_within_groups(a, units, gid)
    tied = [j for j, t in zip(units, tied, strict=True) if t]
    groups = {b"": units} if units else {}
    base = ramp if gid is None else np.arange(int(gid.max()) + 1, dtype=ramp.dtype)
    return _Plan(groups, {b"": base} if units else {}, tied, obs, formulas, gid)


def _observe_tied(a: np.ndarray, y, plan: _Plan, rng: np.random.Generator, sign: float,
                  kwargs: dict, ticker: _Ticker) -> None:
    """The search maximum of each tied unit on its tie-broken ranks (into ``plan``)."""
    if not plan.tie_broken:
        return
    ranks = tie_broken_ranks(a, plan.tie_broken, rng, plan.gid)
    done = [0]

    def tick(units_done: int, _total: int) -> None:
        ticker(units_done - done[0])
        done[0] = units_done

    res = explain(ranks, y, progress=tick, **kwargs)
    for j, u in zip(plan.tie_broken, res.units, strict=True):
        plan.obs[j] = sign * u[0].auroc if u else np.nan
        plan.formulas[j] = str(u[0].formula) if u else None


@dataclass(frozen=True)
class _Cost:
    """Seconds spent so far, and seconds per search call and per searched (pseudo-)unit."""

    elapsed: float
    done: int
    per_call: float
    per_unit: float

    def seconds(self, calls: int, units: int) -> float:
        """The estimated total for ``calls`` more search calls and ``units`` in all."""
        return self.elapsed + self.per_call * calls + self.per_unit * max(0, units - self.done)


def _timed_batches(base: np.ndarray, y, n_perm: int, rng: np.random.Generator, sign: float,
                   kwargs: dict, block: int, ticker: _Ticker, gid: np.ndarray | None
                   ) -> tuple[np.ndarray, _Cost]:
    """The first ``FIRST_BATCH`` permutations (fewer if ``n_perm`` is smaller): a warm-up
    batch of 2, then batches of 6 and of the rest, whose two times give the cost per search
    call and per permutation."""
    sizes = [min(2, n_perm, block)]
    sizes.append(min(6, n_perm - sizes[0], block))
    sizes.append(min(FIRST_BATCH, n_perm) - sum(sizes))
    values, times = [], []
    for size in sizes:
        t0 = time.perf_counter()
        values.append(_null_best(base, y, size, rng, sign, kwargs, block, ticker, gid))
        times.append(time.perf_counter() - t0)
    (_, n2, n3), (_, t2, t3) = sizes, times
    per_unit = (t3 - t2) / (n3 - n2) if n3 > n2 else (t2 + t3) / max(1, n2 + n3)
    if not per_unit > 0.0:
        per_unit, per_call = t3 / max(1, n3), 0.0
    else:
        per_call = max(0.0, t2 - n2 * per_unit)
    return np.concatenate(values), _Cost(sum(times), sum(sizes), per_call, per_unit)


def _null_of(base: np.ndarray, y, n_perm: int, rng: np.random.Generator, sign: float,
             kwargs: dict, block: int, ticker: _Ticker,
             on_cost: Callable[[_Cost], Any] | None, gid: np.ndarray | None = None
             ) -> tuple[np.ndarray, float]:
    """The sorted null of ``base`` and its seconds per permutation; with ``on_cost``, the
    first permutations are timed and their cost is passed on before the rest runs."""
    t0 = time.perf_counter()
    parts = []
    if on_cost is not None:
        first, cost = _timed_batches(base, y, n_perm, rng, sign, kwargs, block, ticker, gid)
        parts.append(first)
        on_cost(cost)
    rest = n_perm - sum(len(x) for x in parts)
    parts.append(_null_best(base, y, rest, rng, sign, kwargs, block, ticker, gid))
    return np.sort(np.concatenate(parts)), (time.perf_counter() - t0) / n_perm


def _estimate(n_perm: int, n_nulls: int, n_units: int, n_tied: int, cost: _Cost, block: int,
              alpha: float, method: str, tail: str | None) -> PermutationEstimate:
    rest = max(0, n_perm - cost.done)
    calls = -(-rest // block) + (n_nulls - 1) * -(-n_perm // block) + (1 if n_tied else 0)
    return PermutationEstimate(n_perm, n_nulls, n_units, n_tied,
                               cost.seconds(calls, n_perm * n_nulls + n_tied),
                               make_floor(n_perm, n_units, alpha, method, tail))


def _announcer(n_perm: int, n_nulls: int, n_units: int, n_tied: int, block: int,
               alpha: float, method: str, tail: str | None,
               on_estimate: Callable[[PermutationEstimate], Any] | None
               ) -> Callable[[_Cost], None]:
    """The callback that turns the measured cost into an estimate, logs it and passes it
    to ``on_estimate``."""
    def on_cost(cost: _Cost) -> None:
        est = _estimate(n_perm, n_nulls, n_units, n_tied, cost, block, alpha, method, tail)
        log.info("%s", est)
        if on_estimate is not None:
            on_estimate(est)
    return on_cost


def _fit(values: np.ndarray, tail: str | None, rng: np.random.Generator) -> TailFit | None:
    fit = fit_tail(values, rng) if tail == "gpd" else None
    log.info("permutation_test: null of %d permutations, tail %s", values.size,
             fit if fit is not None else "not used" if tail is None else "not accepted")
    return fit


def _null_params(kwargs: dict[str, Any]) -> dict[str, Any]:
    return check_search_params({k: kwargs[k] for k in SEARCH_PARAMS if k in kwargs}, None)


def _check_null(null, ties: str, n: int, kwargs: dict, rows, groups) -> None:
    """A given ``null`` fits this test (same samples, split and search parameters)."""
    if not isinstance(null, PermutationNull):
        raise bad("null", "a PermutationNull from permutation_null", null)
    if ties != "break":
        raise bad("ties", "'break' with a given null", ties)
    if not (groups is None or isinstance(groups, str)):
        raise bad("groups", "'auto' or None with a given null (its groups are used)",
                  "an array", raw=True)
    same_rows = (rows is None) == (null.rows is None) and (
        rows is None or np.array_equal(rows, null.rows))
    if null.n_samples != n or null.params != _null_params(kwargs) or not same_rows:
        raise bad("null", f"a null of the same {n} samples, split and search parameters",
                  f"one of {null.n_samples} samples with {null.params}", raw=True)


def _pvalues(plan: _Plan, nulls: dict[bytes, PermutationNull]
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """p, log10 p and the method of each unit against the null of its group."""
    k = plan.obs.size
    p, lp = np.full(k, np.nan), np.full(k, np.nan)
    how = np.full(k, None, dtype=object)
    for key, members in plan.groups.items():
        nl = nulls[key]
        p[members], lp[members], how[members] = null_pvalues(nl.values, plan.obs[members],
                                                             nl.tail)
    return p, lp, how


def _annotate(result: ExplanationResult, p: np.ndarray, log10_p: np.ndarray,
              how: np.ndarray, plan: _Plan, sign: float, alpha: float, method: str,
              n_perm: int) -> None:
    """Write the per-unit figures into each unit's best explanation's extras."""
    q = correct_pvalues(p, "bh")
    holm = correct_pvalues(p, "holm")
    reject = _reject(q if method == "bh" else holm, alpha)
    broken = set(plan.tie_broken)
    for k, u in enumerate(result.units):
        if u:
            u[0] = with_extras(u[0], {
                "search_p_value": float(p[k]), "search_log10_p_value": float(log10_p[k]),
                "search_p_method": how[k], "q_value": float(q[k]),
                "holm_p_value": float(holm[k]), "significant": bool(reject[k]),
                "n_permutations": n_perm, "tested_auroc": float(sign * plan.obs[k]),
                "tested_formula": plan.formulas[k], "tie_broken": k in broken})


def _checked(n_permutations, block, alpha, method, tail, ties, random_state):
    return (check_int("n_permutations", n_permutations, minimum=1),
            check_int("block", block, minimum=1), _check_alpha(alpha),
            check_choice("method", method, ("bh", "holm")),
            check_choice("tail", tail, TAIL_METHODS), check_choice("ties", ties, TIES),
            check_random_state("random_state", random_state))


def _searched_concepts(y, result: ExplanationResult):
    """The concept columns the search saw: those on at least ``min_count`` samples when
    :func:`invert.explain` left the rarer ones out (``params["min_count"]``)."""
    min_count = (result.params or {}).get("min_count")
    return y if min_count is None else frequent_concepts(y, y.shape[0], int(min_count))[0]


def _search_data(activations, concepts, result: ExplanationResult, search_kwargs: dict):
    """The search split's activations and labels, the search's keyword arguments, the sign
    of the score and the split's rows (None without a holdout)."""
    a, _, y, _ = whole_inputs(activations, concepts)
    y = _searched_concepts(y, result)
    rows = getattr(result, "search_index", None)
    if rows is not None:
        a, y = a[rows], y[rows]
    check_units(a, result)
    kwargs, sign = _search_kwargs(result.params, search_kwargs)
    if kwargs.get("metric") == "point_biserial":
        log.warning("permutation_test: metric='point_biserial' chooses formulas from the raw "
                    "activations, not their ranks; the shared null (permuted ranks) is then "
                    "an approximation")
    return a, y, kwargs, sign, rows


def _make_nulls(y, plan: _Plan, n_perm: int, rngs, sign: float, kwargs: dict, block: int,
                ticker: _Ticker, tail: str | None, rows, on_cost
                ) -> dict[bytes, PermutationNull]:
    """One :class:`PermutationNull` per key of ``plan.bases`` (the first one timed)."""
    out = {}
    params = _null_params(kwargs)
    for i, (key, base) in enumerate(plan.bases.items()):
        gid = plan.gid if key == b"" else None
        values, spp = _null_of(base, y, n_perm, rngs[0], sign, kwargs, block, ticker,
                               on_cost if i == 0 else None, gid)
        out[key] = PermutationNull(values, _fit(values, tail, rngs[1]), tail, y.shape[0],
                                   params, spp, rows, gid)
    return out


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
    tail: str | None = "gpd",
    ties: str = "break",
    progress: Callable[[int, int], Any] | None = None,
    on_estimate: Callable[[PermutationEstimate], Any] | None = None,
    null: PermutationNull | None = None,
    groups="auto",
    **search_kwargs,
) -> np.ndarray:
    """P-values of each unit's best search score, corrected for the search, by permutation.

    **What is tested.** The null hypothesis of a unit is that its activations are
    exchangeable with respect to the concepts. The statistic is the *search maximum*: the
    best score the whole search finds on the unit (the search's rank-0 formula, *before* any
    parsimony rule of :func:`~invert.trust.explain_holdout`), and the null is the search
    maximum on randomly permuted activations, so the statistic compared is the statistic
    nulled whatever formula is finally reported. The formula reported (rank 0, perhaps a
    shorter one chosen by parsimony) is annotated beside the formula tested
    (``tested_formula``, ``tested_auroc``).

    **Shared null.** The search sees activations only through their ranks, so every unit
    without ties has the same null: ``n_permutations`` permuted rankings searched once as
    the pseudo-units of a layer. With ``ties="break"`` (default) a tied unit (ReLU zeros,
    float32 coincidences) is tested on its ranks with ties broken uniformly at random (seeded
    by ``random_state``): under exchangeability these are a uniformly random permutation, so
    the same null is exact for its statistic, the search maximum on the tie-broken ranks (one
    more search of the tied units). Ties only among samples with equal label rows (duplicate
    samples) change no AUROC and are left as they are. Mid-rank AUROC is the mean of
    tie-broken AUROCs, so little power is lost where ties are moderate. ``ties="exact"``
    keeps the mid-ranks and computes one null per tie structure (exact too, but one more
    null for each distinct number of zeros). Constant units have no explanation and no
    test (NaN). (With ``metric="point_biserial"`` the search chooses formulas from raw
    activations, so a null of ranks is only an approximation; a warning is logged.)

    **p-values.** ``(1 + #{null >= observed}) / (1 + n_permutations)``, or, with
    ``tail="gpd"`` (default), from a generalized Pareto fit to the null's largest values for
    units beyond its threshold with fewer than 10 null values at or above them (see
    :mod:`invert.trust.tail`: threshold from the top ``min(250, P // 4)``, Anderson-Darling
    test, exponential tail where the fitted shape is negative, empirical p where no fit is
    accepted); these go far below ``1 / (n_permutations + 1)``.

    Parameters
    ----------
    activations, concepts
        The data of the search that produced ``result``. For a
        :class:`~invert.trust.HoldoutResult`, only its search split is used.
    result : ExplanationResult
        From :func:`invert.explain` or :func:`~invert.trust.explain_holdout`.
    n_permutations : int, default 1000
    random_state : None, int or numpy.random.Generator
        Seeds the permutations, the tie-breaking and the tail test's bootstrap.
    alpha : float, default 0.05
        Level for the ``significant`` flag.
    method : {"bh", "holm"}
        Correction across units that decides ``significant``.
    annotate : bool, default True
        Put into each unit's best explanation's extras (``result`` is modified in place):
        ``search_p_value``, ``search_log10_p_value``, ``search_p_method`` (``"empirical"``
        or ``"gpd"``), ``q_value`` (Benjamini-Hochberg), ``holm_p_value``, ``significant``,
        ``n_permutations``, ``tested_auroc`` and ``tested_formula`` (the search maximum
        tested; on tie-broken ranks for a tied unit) and ``tie_broken``.
    block : int, default 256
        Permutations searched at once (bounds memory: ``N x block`` float32).
    tail : {"gpd", None}, default "gpd"
        Tail approximation of the null (None: empirical p-values only).
    ties : {"break", "exact"}, default "break"
    progress : callable, optional
        ``progress(done, total)`` after each block: searched pseudo-units, i.e. the
        permutations (times the number of nulls) and then the tie-broken units.
    on_estimate : callable, optional
        Called once, after a first timed batch of permutations, with a
        :class:`~invert.trust.PermutationEstimate` (estimated time, smallest p-value; its
        ``str`` is a sentence for the user). It is also logged (INFO).
    null : PermutationNull, optional
        From :func:`permutation_null` for the same samples, concepts, holdout split and
        search parameters (e.g. another layer's): no permutations are searched, and
        ``n_permutations`` and ``tail`` are the null's.
    groups : "auto", None or array-like of int, default "auto"
        Samples that are copies of one input (duplicate files) are one draw, not several:
        the permutations move each group as one sample (and tie-breaking keeps it tied).
        ``"auto"``: the groups of :func:`~invert.trust.duplicate_groups` on the activations
        searched; an array: one group id per sample (of all samples, also with a holdout);
        None: every sample on its own. With ``null=``, the null's groups. Ignored with
        ``ties="exact"``. Documents: give the document of each token (as ints, e.g.
        ``token_index[:, 0]``) and each document moves as one draw; members that differ
        are ranked by their group's mean, so the test asks whether the documents'
        activations go with the concepts, and a unit that fires on whole documents is no
        longer significant by the number of its tokens (conservative for token labels).
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
    >>> p = permutation_test(a, y, res, n_permutations=99, random_state=0, tail=None)
    >>> bool(p[0] == 0.01), res[0][0].extras["significant"]
    (True, True)
    >>> p = permutation_test(a, y, res, n_permutations=199, random_state=0)
    >>> bool(p[0] < 1e-4), res[0][0].extras["search_p_method"]
    (True, 'gpd')
    """
    n_permutations, block, alpha, method, tail, ties, rng = _checked(
        n_permutations, block, alpha, method, tail, ties, random_state)
    a, y, kwargs, sign, rows = _search_data(activations, concepts, result, search_kwargs)
    rng_null, rng_ties, rng_tail = rng.spawn(3)
    if null is not None:
        _check_null(null, ties, a.shape[0], kwargs, rows, groups)
        gid = null.groups
    else:
        gid = resolve_groups(groups, a, rows, result.n_samples) if ties == "break" else None
    plan = _plan(a, y, result, ties, sign, gid)
    given: dict[bytes, PermutationNull] = {}
    if null is not None:
        n_permutations, tail = null.n_permutations, null.tail_method
        given, plan.bases = {b"": null}, {}
    ticker = _Ticker(n_permutations * len(plan.bases) + len(plan.tie_broken), progress)
    on_cost = _announcer(n_permutations, len(plan.bases), int(np.sum(~np.isnan(plan.obs))),
                         len(plan.tie_broken), block, alpha, method, tail, on_estimate)
    if given and plan.tie_broken:
        on_cost(_Cost(0.0, 0, 0.0, null.seconds_per_permutation))
    nulls = given or _make_nulls(y, plan, n_permutations, (rng_null, rng_tail), sign, kwargs,
                                 block, ticker, tail, rows, on_cost)
    _observe_tied(a, y, plan, rng_ties, sign, kwargs, ticker)
    p, log10_p, how = _pvalues(plan, nulls)
    if annotate:
        _annotate(result, p, log10_p, how, plan, sign, alpha, method, n_permutations)
    return p


def permutation_null(
    concepts: ConceptsLike,
    result: ExplanationResult,
    *,
    n_permutations: int = 1000,
    random_state=None,
    tail: str | None = "gpd",
    block: int = 256,
    progress: Callable[[int, int], Any] | None = None,
    on_estimate: Callable[[PermutationEstimate], Any] | None = None,
    alpha: float = 0.05,
    method: str = "bh",
    groups=None,
    **search_kwargs,
) -> PermutationNull:
    """The shared null of :func:`permutation_test`, to reuse for several layers.

    The null depends only on the samples searched, the concepts and the search parameters:
    layers searched with the same ones (e.g. all layers of one ``invert explain`` run, with
    the same holdout split) can be tested against one null, computed once.

    Parameters
    ----------
    concepts
        The concepts of the search that produced ``result``.
    result : ExplanationResult
        Any one of the layers' results (its parameters and holdout split are used).
    n_permutations, random_state, tail, block, progress, **search_kwargs
        As for :func:`permutation_test` (``progress(done, n_permutations)``).
    on_estimate : callable, optional
        As for :func:`permutation_test`: called once with the estimated time of the null
        (``n_units`` and the floor are those of ``result``'s explained units at ``alpha``
        with ``method``).
    alpha : float, default 0.05
    method : {"bh", "holm"}
    groups : None or array-like of int
        Samples that are copies of one input (one group id per sample of all samples), as
        for :func:`permutation_test`; e.g. ``duplicate_groups`` of the layers' activations
        side by side. None: every sample on its own.

    Returns
    -------
    PermutationNull
        Pass it as ``permutation_test(..., null=...)``.

    Examples
    --------
    >>> import numpy as np, invert
    >>> rng = np.random.default_rng(0)
    >>> y = rng.random((300, 6)) < 0.2
    >>> a = 3.0 * y[:, [1]] + rng.standard_normal((300, 2))
    >>> b = rng.standard_normal((300, 3))
    >>> ra, rb = (invert.explain(x, y, length=2, beam_size=2) for x in (a, b))
    >>> null = permutation_null(y, ra, n_permutations=199, random_state=0)
    >>> pa = permutation_test(a, y, ra, null=null, random_state=1)
    >>> pb = permutation_test(b, y, rb, null=null, random_state=1)
    >>> null.n_permutations, bool(pa.max() < 1e-3), bool(pb.min() > 1e-3)
    (199, True, True)
    """
    n_permutations, block, alpha, method, tail, _, rng = _checked(
        n_permutations, block, alpha, method, tail, "break", random_state)
    y, _ = as_labels(concepts, result.n_samples)
    y = _searched_concepts(y, result)
    rows = getattr(result, "search_index", None)
    if rows is not None:
        y = y[rows]
    n = y.shape[0]
    kwargs, sign = _search_kwargs(result.params, search_kwargs)
    rng_null, _, rng_tail = rng.spawn(3)
    if isinstance(groups, str):
        raise bad("groups", "None or one group id per sample", groups)
    gid = resolve_groups(groups, np.empty((n, 0)), rows, result.n_samples)
    base = np.arange(n if gid is None else int(gid.max()) + 1, dtype=rank_dtype(n))
    on_cost = _announcer(n_permutations, 1, sum(1 for u in result.units if u), 0, block,
                         alpha, method, tail, on_estimate)
    values, spp = _null_of(base, y, n_permutations, rng_null, sign, kwargs, block,
                           _Ticker(n_permutations, progress), on_cost, gid)
    return PermutationNull(values, _fit(values, tail, rng_tail), tail, n,
                           _null_params(kwargs), spp, rows, gid)


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
