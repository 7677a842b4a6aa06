"""The figures the report shows beside each AUROC: a confidence interval that stays honest
for few samples, and the verdict of the held-out split.

Interval
    :func:`auroc_score_ci` is Newcombe's score interval for the Mann-Whitney AUROC (Newcombe
    2006, *Statistics in Medicine* 25:559-573, "method 5"): the AUROCs ``t`` with
    ``(A - t)^2 <= z^2 V(t)``, where ``V`` is the Hanley-McNeil variance with both group sizes
    replaced by ``N* = (n1 + n0) / 2 - 1``::

        V(t) = t (1 - t) / (n1 n0) * (1 + (N* - 1) ((1 - t) / (2 - t) + t / (1 + t)))

    Unlike the Wald interval ``A +- z SE(A)`` (Hanley-McNeil or DeLong, which collapse to
    1.000-1.000 at ``A = 1``), it uses the variance at the candidate ``t``, so a perfect
    separation of 5 samples from 200 still gives a wide interval (about 0.81-1.00), as a
    Wilson interval does for a proportion. It stays within [0, 1].

Held-out verdict
    :func:`holdout_status` compares the held-out AUROC with chance (0.5), on the side of
    0.5 that the search AUROC is on (mode ``negative`` looks for low AUROCs):
    ``"holds"`` when the held-out interval excludes 0.5 on that side; ``"fails"`` when the
    held-out AUROC is at or past chance (e.g. 0.928 on the search split, 0.396 held out);
    ``"unconfirmed"`` when it is on the right side but its interval reaches 0.5; ``None``
    without held-out figures.
"""

from __future__ import annotations

import math
from functools import lru_cache

from scipy.stats import norm

from ..engine.stats import newcombe_interval
from ..trust.metrics import check_level

__all__ = ["auroc_score_ci", "holdout_status", "HOLDOUT_STATUS_TEXT"]

#: Badge text of each :func:`holdout_status`.
HOLDOUT_STATUS_TEXT = {
    "holds": "holds up out of sample",
    "unconfirmed": "not confirmed out of sample",
    "fails": "fails its holdout",
}


@lru_cache(maxsize=16)
def _z(level: float) -> float:
    return float(norm.ppf(0.5 + level / 2.0))


def auroc_score_ci(auroc, n_pos, n_neg, level: float = 0.95):
    """Newcombe's score interval of an AUROC from its value and group sizes (vectorised).

    Parameters
    ----------
    auroc : float or array-like
        The AUROC(s), in [0, 1].
    n_pos, n_neg : int or array-like
        Samples inside (``n1``) and outside (``n0``) the formula.
    level : float
        Coverage, in (0, 1).

    Returns
    -------
    low, high : float or numpy.ndarray
        NaN where the AUROC is NaN or a group is empty.

    Examples
    --------
    >>> lo, hi = auroc_score_ci(1.0, 5, 200)
    >>> round(float(lo), 2), float(hi)
    (0.81, 1.0)
    """
    return newcombe_interval(auroc, n_pos, n_neg, _z(check_level(level)))


def holdout_status(search_auroc: float | None, holdout_auroc: float | None,
                   holdout_ci: tuple[float, float] | None) -> str | None:
    """``"holds"``, ``"unconfirmed"`` or ``"fails"`` (see the module text), or None."""
    if (search_auroc is None or holdout_auroc is None or holdout_ci is None
            or not math.isfinite(search_auroc) or not math.isfinite(holdout_auroc)):
        return None
    lo, hi = holdout_ci
    if search_auroc >= 0.5:
        if holdout_auroc <= 0.5:
            return "fails"
        return "holds" if math.isfinite(lo) and lo > 0.5 else "unconfirmed"
    if holdout_auroc >= 0.5:
        return "fails"
    return "holds" if math.isfinite(hi) and hi < 0.5 else "unconfirmed"
