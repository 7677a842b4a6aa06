"""What chance gives: the same search on random directions (or shuffled units) of a layer.

Part of :mod:`invert.trust` (import from there).

Lexical concepts over a language model's tokens describe almost any direction of its
representation well: random orthogonal directions of a MiniLM layer reach a median AUROC
near 0.94. A unit's AUROC means something only against that. :func:`random_baseline` draws
``K`` directions of the layer's raw features ``X`` (N x D) and runs the same search on them:

``"directions"`` (default)
    ``X Q`` for ``Q`` (D x K) with orthonormal columns, uniformly random (QR of a Gaussian
    matrix, signs fixed; more than D directions in independent blocks of D): what a
    direction of the representation space reaches by chance.
``"shuffled"``
    ``K`` columns of ``X`` (units), each with its samples permuted: what the search reaches
    on a unit unrelated to the concepts (the permutation test's null, one draw per unit).

The result holds each direction's best AUROC and ``top_precision`` (the share of its top
activations its label covers, :func:`invert.trust.add_top_precision`) and their median and
90th percentile, to print beside a run's figures. With ``held_out=`` (the held-out rows of a
holdout run, ``result.holdout_index``) the directions are searched on the other rows and
their figures are those of the held-out rows, as the run's (:func:`run_figures`) are: a
label fitted to a few samples of one document then counts for what it is worth on unseen
documents, for the run and for chance alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._validate import bad, check_choice, check_int, check_random_state
from ..engine.inputs import ActivationsLike, ConceptsLike, Labels
from ..engine.result import ExplanationResult
from ..engine.search import explain
from ._data import whole_inputs
from .metrics import add_metrics, add_top_precision

__all__ = ["RandomBaseline", "random_baseline", "run_figures"]

#: The figures of a baseline (and of a run): best AUROC and top precision per unit.
FIGURES = ("auroc", "top_precision")


@dataclass
class RandomBaseline:
    """The best formula's figures on ``n`` random directions (or shuffled units).

    ``values[figure]`` (K,) per direction (NaN where no formula fits); :meth:`summary`
    their median and 90th percentile; ``kind`` and ``params`` (the search's) say what was
    run."""

    kind: str
    values: dict[str, np.ndarray]
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        """Number of directions."""
        return len(next(iter(self.values.values())))

    def summary(self) -> dict[str, Any]:
        """``{"kind", "n", "held_out", "<figure>_median", "<figure>_p90", ...}`` (None where
        no value; ``held_out``: the held-out samples the figures are of, None: all)."""
        out: dict[str, Any] = {"kind": self.kind, "n": self.n,
                               "held_out": self.params.get("held_out")}
        for name, v in self.values.items():
            v = v[np.isfinite(v)]
            out[f"{name}_median"] = float(np.median(v)) if v.size else None
            out[f"{name}_p90"] = float(np.percentile(v, 90)) if v.size else None
        return out

    def line(self, run: dict[str, float | None] | None = None) -> str:
        """One line for a terminal: the baseline's figures, beside the run's medians
        (:func:`run_figures`) when given."""
        s = self.summary()

        def fmt(x: Any) -> str:
            return "-" if x is None else f"{x:.3f}"

        bits = []
        for name in self.values:
            here = "" if run is None else f"run median {fmt(run.get(name + '_median'))} vs "
            bits.append(f"{name} {here}chance median {fmt(s[name + '_median'])}, "
                        f"90th pct {fmt(s[name + '_p90'])}")
        what = "random directions" if self.kind == "directions" else "shuffled units"
        where = f", held out on {s['held_out']} samples" if s["held_out"] else ""
        return f"baseline ({self.n} {what}{where}): " + "; ".join(bits)


def _directions(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``x Q``: ``k`` uniformly random orthonormal directions (blocks of at most D)."""
    d = x.shape[1]
    cols = []
    left = k
    while left > 0:
        m = min(d, left)
        q, r = np.linalg.qr(rng.standard_normal((d, m)))
        q *= np.sign(np.diag(r))  # Haar-uniform: fix the signs of the QR
        cols.append(x @ q)
        left -= m
    return np.concatenate(cols, axis=1)


def _shuffled(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` columns of ``x`` (with replacement past D), each with its rows permuted."""
    d = x.shape[1]
    picks = rng.permutation(d)[:k] if k <= d else rng.integers(0, d, size=k)
    return np.stack([x[rng.permutation(x.shape[0]), j] for j in picks], axis=1)


def run_figures(result: ExplanationResult, activations: ActivationsLike,
                concepts: ConceptsLike) -> dict[str, float | None]:
    """A run's medians over units of the best formula's AUROC and top precision
    (``{"auroc_median", "top_precision_median"}``), to set beside a baseline: held out
    for the result of a holdout search (its ``holdout_index``)."""
    held = getattr(result, "holdout_index", None)
    res = _best_only(result)
    if held is None:
        vals = _best_figures(add_top_precision(res, activations, concepts))
    else:
        res = add_top_precision(res, activations, concepts, rows=held, prefix="holdout_")
        vals = _best_figures(res, prefix="holdout_")
    return {f"{k}_median": (float(np.median(v[np.isfinite(v)])) if np.isfinite(v).any()
                            else None) for k, v in vals.items()}


def _best_only(result: ExplanationResult) -> ExplanationResult:
    """A copy of ``result`` holding each unit's best explanation only."""
    units = [u.derive(list(u[:1])) for u in result.units]
    return ExplanationResult(units=units, concept_names=result.concept_names,
                             undefined_concepts=result.undefined_concepts,
                             params=dict(result.params), n_samples=result.n_samples)


def _best_figures(result: ExplanationResult, prefix: str = "") -> dict[str, np.ndarray]:
    """Each unit's best formula's :data:`FIGURES` (``prefix``: the held-out ones)."""
    out = {}
    for name in FIGURES:
        key = prefix + name
        out[name] = np.array([
            (u[0].auroc if key == "auroc" else _finite(u[0].extras.get(key))) if u
            else np.nan for u in result.units], dtype=np.float64)
    return out


def _finite(x: Any) -> float:
    return np.nan if x is None else float(x)


def random_baseline(features: ActivationsLike, concepts: ConceptsLike, *,
                    n_directions: int = 64, kind: str = "directions", random_state=None,
                    held_out=None, **search_kwargs: Any) -> RandomBaseline:
    """The same search on ``n_directions`` random directions (or shuffled units) of a
    layer's raw features (see the module docstring).

    Parameters
    ----------
    features : array-like, shape (N, D)
        The layer's raw features (its units' activations).
    concepts
        As for :func:`invert.explain`.
    n_directions : int, default 64
        Directions (or shuffled units) drawn.
    kind : {"directions", "shuffled"}
    random_state : int or numpy Generator, optional
    held_out : array-like of int, optional
        Held-out rows (e.g. ``result.holdout_index`` of the run compared): the directions
        are searched on the other rows and their figures are of these rows (the summary's
        ``held_out`` counts them).
    **search_kwargs
        Parameters of :func:`invert.engine.search.explain` (those of the run compared).

    Returns
    -------
    RandomBaseline

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = rng.random((500, 6)) < 0.2
    >>> base = random_baseline(rng.standard_normal((500, 8)), y, n_directions=8,
    ...                        random_state=0, length=1)
    >>> s = base.summary()
    >>> s["n"], 0.5 < s["auroc_median"] < 0.6
    (8, True)
    """
    n_directions = check_int("n_directions", n_directions, minimum=1)
    kind = check_choice("kind", kind, ("directions", "shuffled"))
    rng = check_random_state("random_state", random_state)
    x, _, y, names = whole_inputs(features, concepts)
    if x.shape[1] < 1:
        raise bad("features", "at least one column", "none", raw=True)
    x = x.astype(np.float64)
    acts = _directions(x, n_directions, rng) if kind == "directions" else \
        _shuffled(x, n_directions, rng)
    labels = Labels(names, y)
    if held_out is None:
        res = explain(acts, labels, **search_kwargs)
        res = add_top_precision(_best_only(res), acts, labels)
        return RandomBaseline(kind=kind, values=_best_figures(res), params=dict(res.params))
    held = _check_rows(held_out, x.shape[0])
    search = np.setdiff1d(np.arange(x.shape[0]), held)
    res = _best_only(explain(acts[search], Labels(names, y[search]), **search_kwargs))
    add_metrics(res, acts, labels, rows=held, prefix="holdout_")
    add_top_precision(res, acts, labels, rows=held, prefix="holdout_")
    params = dict(res.params) | {"held_out": int(held.size)}
    return RandomBaseline(kind=kind, values=_best_figures(res, prefix="holdout_"),
                          params=params)


def _check_rows(rows: Any, n: int) -> np.ndarray:
    """Sorted unique row positions in ``[0, n)``, leaving rows to search on."""
    r = np.unique(np.asarray(rows, dtype=np.int64).ravel())
    if r.size == 0 or r[0] < 0 or r[-1] >= n or r.size >= n:
        raise bad("held_out", f"row positions in [0, {n}), fewer than {n}",
                  f"{r.size} positions from {r.min() if r.size else '-'} to "
                  f"{r.max() if r.size else '-'}", raw=True)
    return r
