"""The tail of a permutation null: a generalized Pareto fit, its test, and p-values from it.

Part of :mod:`invert.trust` (import from there). With ``P`` permutations the empirical
p-value cannot go below ``1 / (P + 1)``. Beyond the bulk of the null, the exceedances of a
high threshold are close to a generalized Pareto distribution (Pickands-Balkema-de Haan), so
a fitted tail estimates p-values far below that floor (Knijnenburg, Wessels, Reinders and
Shmulevich 2009, *Fewer permutations, more accurate P-values*, Bioinformatics 25(12)):

1. **Threshold.** The exceedances are the ``n_exc`` largest null values, over the midpoint
   between the ``n_exc``-th and the ``(n_exc + 1)``-th largest. ``n_exc`` starts at
   ``min(250, P // 4)`` (Knijnenburg et al.'s 250, and never more than the top quarter of the
   null) and goes down in steps of 10 while the fit is rejected, to at least 30.
2. **Fit.** Shape ``xi`` and scale by probability-weighted moments (Hosking and Wallis 1987:
   closed form, as efficient as maximum likelihood at these sizes, and vectorised for the
   bootstrap below). A fitted ``xi < 0`` (a tail with an end point, which the maximum of
   bounded scores such as AUROC always shows at finite thresholds) is replaced by ``xi = 0``
   (the exponential tail, scale = mean exceedance): the Gaussian-like tails of a maximum of
   many rank statistics are lighter than exponential, so this over-estimates far tail
   probabilities (conservative p-values) and never puts an observed value beyond an end
   point (``p = 0``).
3. **Test.** Anderson-Darling statistic of the exceedances against the fitted tail, with its
   null distribution from a parametric bootstrap (999 samples from the fitted tail, each
   refitted the same way, so the estimated parameters are accounted for). The fit is
   accepted at ``p >= 0.05``; when no threshold is accepted there is no tail and every
   p-value is empirical.
4. **Use.** A unit's p-value comes from the tail only where its observed value lies beyond the
   threshold *and* fewer than 10 null values reach it (where the empirical p-value is
   coarse); it is then ``n_exc / P * S(observed - threshold)`` with ``S`` the fitted
   survival function. Elsewhere it is the empirical ``(1 + #{null >= observed}) / (1 + P)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["TailFit", "fit_tail", "null_pvalues", "TAIL_METHODS"]

#: Values of ``tail`` accepted by :func:`invert.trust.permutation_test`.
TAIL_METHODS = ("gpd", None)
#: Knijnenburg et al.'s number of exceedances to start from (at most a quarter of the null).
START_EXCEEDANCES = 250
#: The fewest exceedances a tail is fitted to; step by which the number goes down.
MIN_EXCEEDANCES, STEP = 30, 10
#: Units with at least this many null values at or above their statistic keep the empirical p.
EMPIRICAL_COUNT = 10
#: Level of the goodness-of-fit test and its number of bootstrap samples.
GOF_LEVEL, GOF_SAMPLES = 0.05, 999
#: The smallest p-value reported (the smallest positive normal float64).
P_MIN = float(np.finfo(np.float64).tiny)


@dataclass(frozen=True)
class TailFit:
    """A generalized Pareto tail fitted to a permutation null.

    Attributes
    ----------
    threshold : float
        Exceedances are null values above it.
    n_exceedances, n_null : int
        How many null values exceed the threshold, of how many.
    shape, scale : float
        Of the tail used (``shape >= 0``; see the module notes).
    fitted_shape : float
        The probability-weighted-moment estimate before the constraint ``shape >= 0``.
    ad_statistic, gof_p_value : float
        Anderson-Darling statistic of the exceedances and its bootstrap p-value.
    """

    threshold: float
    n_exceedances: int
    n_null: int
    shape: float
    scale: float
    fitted_shape: float
    ad_statistic: float
    gof_p_value: float

    def log_sf(self, x) -> np.ndarray:
        """``log P(null >= x)`` from the tail (for ``x`` above the threshold)."""
        y = np.maximum(np.asarray(x, dtype=np.float64) - self.threshold, 0.0)
        return (math.log(self.n_exceedances / self.n_null)
                + stats.genpareto.logsf(y, self.shape, scale=self.scale))


def _pwm(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Probability-weighted-moment shape and scale of generalized Pareto samples (rows of
    ``y``, sorted ascending): Hosking and Wallis (1987) with ``xi = -k``."""
    n = y.shape[-1]
    a0 = y.mean(axis=-1)
    a1 = (y * ((n - 1 - np.arange(n)) / (n - 1))).mean(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = a0 - 2.0 * a1
        return 2.0 - a0 / d, 2.0 * a0 * a1 / d


def _fit(y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shape used (``>= 0``), scale, and the unconstrained shape for rows of sorted ``y``."""
    xi, scale = _pwm(y)
    neg = ~(xi >= 0.0)  # NaN (degenerate samples) falls back to the exponential too
    return np.where(neg, 0.0, xi), np.where(neg, y.mean(axis=-1), scale), xi


def _anderson_darling(y: np.ndarray, xi: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """A^2 of each row of sorted ``y`` against its generalized Pareto (shape, scale)."""
    n = y.shape[-1]
    f = stats.genpareto.cdf(y, np.asarray(xi)[..., None], scale=np.asarray(scale)[..., None])
    f = np.clip(f, 1e-300, 1.0 - 1e-16)
    i = np.arange(1, n + 1)
    return -n - np.mean((2 * i - 1) * (np.log(f) + np.log1p(-f[..., ::-1])), axis=-1)


def _try_fit(null_sorted: np.ndarray, n_exc: int, rng: np.random.Generator) -> TailFit | None:
    """The tail over the ``n_exc`` largest values, or None where the threshold falls inside a
    group of equal values."""
    lo, hi = null_sorted[-n_exc - 1], null_sorted[-n_exc]
    if not hi > lo:
        return None
    t = 0.5 * (float(lo) + float(hi))
    y = null_sorted[-n_exc:].astype(np.float64) - t
    xi, scale, xi_fit = (float(v) for v in _fit(y))
    if not (scale > 0.0 and math.isfinite(scale)):
        return None
    a2 = float(_anderson_darling(y, xi, scale))
    sim = np.sort(stats.genpareto.rvs(xi, scale=scale, size=(GOF_SAMPLES, n_exc),
                                      random_state=rng), axis=1)
    xs, ss, _ = _fit(sim)
    boot = _anderson_darling(sim, xs, ss)
    p = (1.0 + float(np.sum(boot >= a2))) / (1.0 + GOF_SAMPLES)
    return TailFit(t, n_exc, null_sorted.size, xi, scale, xi_fit, a2, p)


def fit_tail(null, random_state=None) -> TailFit | None:
    """The generalized Pareto tail of a permutation null, or None where no fit is accepted.

    Parameters
    ----------
    null : array-like of float, shape (P,)
        The permutation null (any order).
    random_state : None, int or numpy.random.Generator
        Seeds the bootstrap of the goodness-of-fit test.

    Returns
    -------
    TailFit or None
        The fit at the largest number of exceedances (from ``min(250, P // 4)`` down to 30 in
        steps of 10) that the Anderson-Darling test accepts at 0.05; None when there is none
        (e.g. ``P < 120``, or a null with few distinct values).

    Examples
    --------
    >>> import numpy as np
    >>> null = np.random.default_rng(0).gumbel(size=1000)
    >>> fit = fit_tail(null, random_state=0)
    >>> fit.n_exceedances, fit.gof_p_value >= 0.05
    (250, True)
    >>> p, _, how = null_pvalues(np.sort(null), [0.5, 20.0], fit)
    >>> how.tolist(), bool(p[1] < 1e-6)  # P(Gumbel >= 20) = 2e-9; 1 / 1001 empirically
    (['empirical', 'gpd'], True)
    """
    null_sorted = np.sort(np.asarray(null, dtype=np.float64).ravel())
    rng = np.random.default_rng(random_state)
    n_exc = min(START_EXCEEDANCES, null_sorted.size // 4)
    while n_exc >= MIN_EXCEEDANCES:
        fit = _try_fit(null_sorted, n_exc, rng)
        if fit is not None and fit.gof_p_value >= GOF_LEVEL:
            return fit
        n_exc -= STEP
    return None


def null_pvalues(null_sorted: np.ndarray, obs, tail: TailFit | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """P-values of observed statistics against a null, with the tail where it applies.

    Parameters
    ----------
    null_sorted : numpy.ndarray, shape (P,)
        The null, sorted ascending.
    obs : array-like of float
        Observed statistics (higher is more extreme; NaN gives NaN).
    tail : TailFit, optional
        From :func:`fit_tail` on the same null.

    Returns
    -------
    p, log10_p : numpy.ndarray of float
        ``(1 + #{null >= obs}) / (1 + P)`` (observed values lowered by 1e-12 so that a null
        value equal up to rounding counts), or from the tail (see the module notes), at least
        :data:`P_MIN` (``log10_p`` does not underflow).
    method : numpy.ndarray of str
        ``"empirical"`` or ``"gpd"`` for each entry (``""`` for NaN).
    """
    o = np.asarray(obs, dtype=np.float64)
    n_perm = null_sorted.size
    ge = n_perm - np.searchsorted(null_sorted, o - 1e-12, side="left")
    p = (1.0 + ge) / (1.0 + n_perm)
    log10_p = np.log10(p)
    method = np.where(np.isnan(o), "", "empirical").astype(object)
    if tail is not None:
        use = ~np.isnan(o) & (o > tail.threshold) & (ge < EMPIRICAL_COUNT)
        if use.any():
            log10_p[use] = tail.log_sf(o[use]) / math.log(10.0)
            p[use] = np.maximum(10.0 ** log10_p[use], P_MIN)
            method[use] = "gpd"
    p[np.isnan(o)] = np.nan
    log10_p[np.isnan(o)] = np.nan
    return p, log10_p, method
