"""What a permutation test can reach before it runs: the smallest p-value of given settings,
whether a correction across units can then reject at all, and the time estimate.

Part of :mod:`invert.trust` (import from there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .._validate import check_choice, check_int, check_interval
from .tail import MIN_EXCEEDANCES, P_MIN, TAIL_METHODS

__all__ = ["PermutationFloor", "PermutationEstimate", "permutation_floor"]

#: The fewest permutations with which the tail can be fitted (a quarter of the null holds
#: at least :data:`~invert.trust.tail.MIN_EXCEEDANCES` values).
MIN_TAIL_PERMUTATIONS = 4 * MIN_EXCEEDANCES


@dataclass(frozen=True)
class PermutationFloor:
    """The smallest p-value of a permutation test and what a correction can do with it.

    Attributes
    ----------
    n_permutations, n_units : int
        Permutations, and units tested (the ``m`` of the correction).
    alpha : float
        Level of the correction (``--fdr``).
    method : {"bh", "holm"}
    tail : {"gpd", None}
    empirical_floor : float
        ``1 / (n_permutations + 1)``: the smallest empirical p-value.
    p_min : float
        The smallest p-value that can be reported: ``empirical_floor`` without a tail (or
        with too few permutations to fit one), else :data:`~invert.trust.tail.P_MIN` (no
        practical floor: p-values of units beyond the tail threshold come from the fitted
        tail when its fit is accepted).
    alone : bool
        Whether one unit at the empirical floor is rejected on its own
        (``empirical_floor <= alpha / n_units``, for BH and Holm alike).
    units_needed : int or None
        Empirically, the fewest units at the floor for any rejection: 1 when ``alone``;
        for BH ``ceil(n_units * empirical_floor / alpha)``; None where no rejection is
        possible (Holm, or ``empirical_floor > alpha``).
    """

    n_permutations: int
    n_units: int
    alpha: float
    method: str
    tail: str | None
    empirical_floor: float
    p_min: float
    alone: bool
    units_needed: int | None

    @property
    def tail_possible(self) -> bool:
        """Whether the settings allow a tail fit at all."""
        return self.tail is not None and self.n_permutations >= MIN_TAIL_PERMUTATIONS

    @property
    def possible(self) -> bool:
        """Whether some unit can be rejected (with the tail: when its fit is accepted)."""
        return self.tail_possible or self.units_needed is not None

    @property
    def warning(self) -> str | None:
        """A sentence for the user where a clear unit cannot be significant on its own (no
        tail, and ``empirical_floor > alpha / n_units``); else None."""
        if self.alone or self.tail_possible or self.n_units == 0:
            return None
        m, a, p0 = self.n_units, self.alpha, self.empirical_floor
        need = math.ceil(m / a - 1e-9)  # then 1 / (need + 1) < alpha / m
        text = (f"with {self.n_permutations} permutations the smallest p-value is "
                f"1/{self.n_permutations + 1} = {p0:.2g}, but {self.method.upper()} at {a:g} "
                f"over {m} units needs p <= {a / m:.2g} for a unit to be significant alone")
        if self.units_needed is None:
            text += ": no unit can be significant"
        elif self.units_needed > 1:
            text += f" (else at least {self.units_needed} units at the smallest p-value)"
        tail = "" if self.tail is not None else "tail='gpd' or "
        return text + f"; use {tail}at least {need} permutations"

    def __str__(self) -> str:
        text = (f"smallest p-value 1/{self.n_permutations + 1} = {self.empirical_floor:.2g} "
                "empirically")
        if self.tail_possible:
            text += ("; below it through the fitted tail (generalized Pareto, when its fit is "
                     "accepted), without a fixed floor")
        return text


@dataclass(frozen=True)
class PermutationEstimate:
    """What :func:`~invert.trust.permutation_test` is about to do and how long it will take.

    Attributes
    ----------
    n_permutations : int
    n_nulls : int
        Null distributions computed (1, or one per tie structure with ``ties="exact"``).
    n_units : int
        Units tested.
    n_tie_broken : int
        Tied units searched once more on randomly tie-broken ranks.
    seconds : float
        Estimated time of the whole test, extrapolated from its first batch of permutations.
    floor : PermutationFloor
        The smallest p-value and what the correction can do with it.
    """

    n_permutations: int
    n_nulls: int
    n_units: int
    n_tie_broken: int
    seconds: float
    floor: PermutationFloor

    def __str__(self) -> str:
        nulls = "" if self.n_nulls == 1 else f" x {self.n_nulls} tie structures"
        tied = (f", then {self.n_tie_broken} tied units on tie-broken ranks"
                if self.n_tie_broken else "")
        return (f"permutation test of {self.n_units} units: {self.n_permutations} "
                f"permutations{nulls}{tied}, about {_duration(self.seconds)}; {self.floor}")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def make_floor(n_permutations: int, n_units: int, alpha: float, method: str,
               tail: str | None) -> PermutationFloor:
    """:func:`permutation_floor` of checked arguments."""
    p0 = 1.0 / (n_permutations + 1)
    alone = n_units > 0 and p0 <= alpha / n_units
    if alone:
        needed: int | None = 1
    elif method == "bh" and p0 <= alpha:
        needed = max(1, math.ceil(n_units * p0 / alpha - 1e-12))
    else:
        needed = None
    tail_ok = tail is not None and n_permutations >= MIN_TAIL_PERMUTATIONS
    return PermutationFloor(n_permutations, n_units, alpha, method, tail, p0,
                            P_MIN if tail_ok else p0, alone, needed)


def permutation_floor(n_permutations: int, n_units: int, alpha: float = 0.05, *,
                      method: str = "bh", tail: str | None = "gpd") -> PermutationFloor:
    """The smallest p-value of a permutation test, and whether a correction can reject.

    Call it before :func:`~invert.trust.permutation_test` to warn where the settings cannot
    make a unit significant: ``permutation_floor(P, m, fdr, tail=None).warning``.

    Parameters
    ----------
    n_permutations : int
    n_units : int
        Units tested (those with an explanation).
    alpha : float, default 0.05
        Level of the correction (false discovery rate for ``bh``).
    method : {"bh", "holm"}
    tail : {"gpd", None}, default "gpd"
        As for :func:`~invert.trust.permutation_test`.

    Returns
    -------
    PermutationFloor
        Its ``warning`` is a sentence (or None), its ``str`` states the smallest p-value.

    Examples
    --------
    >>> f = permutation_floor(200, 576, 0.05, tail=None)
    >>> f.empirical_floor == 1 / 201, f.alone, f.units_needed
    (True, False, 58)
    >>> print(f.warning)  # doctest: +NORMALIZE_WHITESPACE
    with 200 permutations the smallest p-value is 1/201 = 0.005, but BH at 0.05 over 576
    units needs p <= 8.7e-05 for a unit to be significant alone (else at least 58 units at
    the smallest p-value); use tail='gpd' or at least 11520 permutations
    >>> permutation_floor(1000, 576, 0.05).warning is None  # the tail goes below 1/1001
    True
    """
    n_permutations = check_int("n_permutations", n_permutations, minimum=1)
    n_units = check_int("n_units", n_units, minimum=0)
    alpha = check_interval("alpha", alpha, 0.0, 1.0, low_open=True)
    method = check_choice("method", method, ("bh", "holm"))
    tail = check_choice("tail", tail, TAIL_METHODS)
    return make_floor(n_permutations, n_units, alpha, method, tail)
