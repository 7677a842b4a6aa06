"""Result objects of :func:`invert.explain`: explanations per unit, and their exports."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

import numpy as np

from .formula import Formula
from .stats import newcombe_interval

__all__ = ["Explanation", "UnitExplanations", "ExplanationResult", "COLUMNS", "UNIT_FIELDS"]

#: Columns of the tabular export, one row per (unit, rank).
COLUMNS = (
    "unit", "rank", "formula", "auroc", "p_value", "log10_p_value", "fraction", "support",
    "length", "reason",
)
#: Per-unit certificate fields (:class:`UnitExplanations` attributes; ``None``: not
#: computed). Exported, where some unit has them, as columns after :data:`COLUMNS` (the
#: unit's value on each of its rows) and as fields of the unit records.
UNIT_FIELDS = ("ceiling", "certified", "bound")


@dataclass(frozen=True)
class Explanation:
    """One formula explaining one unit.

    Attributes
    ----------
    formula : Formula
        ``str(formula)`` prints concept names (or column indices when there are none);
        ``formula.evaluate(labels)`` gives its bool mask over samples.
    auroc : float
        Exact AUROC of the formula's mask against the unit's activations.
    fraction, support : float, int
        Share and number of samples where the formula holds.
    length : int
        Number of literals.
    p_value, log10_p_value : float
        Two-sided Mann-Whitney p-value (as ``scipy.stats.mannwhitneyu`` with
        ``method='auto'``) and its log10, which does not underflow.
    unit : int
        Position of the unit in the activations; ``rank``: 0 for the best.
    extras : dict
        Further statistics (held-out figures, confidence intervals, other metrics), exported
        as extra columns / JSON fields.
    """

    formula: Formula
    auroc: float
    fraction: float
    support: int
    length: int
    p_value: float
    log10_p_value: float
    unit: int = 0
    rank: int = 0
    extras: dict[str, Any] = field(default_factory=dict, compare=False)

    def evaluate(self, labels: Any) -> np.ndarray:
        """The formula's bool mask over the rows of ``labels`` (N, C)."""
        return self.formula.evaluate(labels)

    def to_dict(self) -> dict[str, Any]:
        return {
            "formula": str(self.formula),
            "auroc": self.auroc,
            "p_value": self.p_value,
            "log10_p_value": self.log10_p_value,
            "fraction": self.fraction,
            "support": self.support,
            "length": self.length,
            **self.extras,
        }


class UnitExplanations(list[Explanation]):
    """Best-first list of :class:`Explanation` for one unit.

    ``reason`` says why the list is empty (a constant unit, nothing within the fraction
    limits) and is ``None`` otherwise; ``unit_id`` names the unit.

    Certificates (``None`` where not computed, e.g. results built by hand):

    ``ceiling`` : float
        An upper bound on the search metric (AUROC, or the point-biserial r) of *any*
        formula, of any length, whose support lies within the fraction limits; with
        ``mode="negative"`` a lower bound. NaN for a constant unit or when no support is
        allowed. The gap to the best formula's score says how much better the concept
        vocabulary could possibly describe the unit.
    ``certified`` : bool
        With ``optimal=True``: the best formula is proven the best of at most ``length``
        literals (of the search's grammar, within the fraction limits); False for a unit
        without explanations.
    ``bound`` : float
        With ``optimal=True``: an upper bound (``mode="negative"``: lower) on the metric of
        any formula of at most ``length`` literals; equal to the best formula's score when
        ``certified``. NaN for a unit without explanations.
    """

    def __init__(self, items: Sequence[Explanation] = (), *, unit: int = 0,
                 unit_id: Any = None, reason: str | None = None,
                 ceiling: float | None = None, certified: bool | None = None,
                 bound: float | None = None):
        super().__init__(items)
        self.unit = unit
        self.unit_id = unit if unit_id is None else unit_id
        self.reason = reason
        self.ceiling = ceiling
        self.certified = certified
        self.bound = bound

    @property
    def best(self) -> Explanation | None:
        return self[0] if self else None

    def certificate(self) -> dict[str, Any]:
        """The certificate fields (:data:`UNIT_FIELDS`) by name."""
        return {name: getattr(self, name) for name in UNIT_FIELDS}

    def derive(self, items: Sequence[Explanation] = (), **changes: Any) -> UnitExplanations:
        """A unit list with ``items`` and this one's ``unit``, ``unit_id``, ``reason`` and
        certificate fields, ``changes`` replacing any of them (for code that re-ranks or
        re-scores a unit's explanations)."""
        fields = {"unit": self.unit, "unit_id": self.unit_id, "reason": self.reason,
                  **self.certificate()}
        return UnitExplanations(items, **(fields | changes))

    def __repr__(self) -> str:
        if not self:
            return f"UnitExplanations(unit={self.unit_id!r}, reason={self.reason!r})"
        return f"UnitExplanations(unit={self.unit_id!r}, {list.__repr__(self)})"


@dataclass
class ExplanationResult:
    """Explanations of every unit of a layer; ``result[k]`` is unit ``k``'s ranked list.

    Attributes
    ----------
    units : list of UnitExplanations
    concept_names : list of str or None
    undefined_concepts : list of str
        Concepts that are all-zero or all-one (AUROC undefined; never used in formulas).
    params : dict
        The search parameters.
    """

    units: list[UnitExplanations]
    concept_names: list[str] | None = None
    undefined_concepts: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    n_samples: int = 0

    def __getitem__(self, k: int) -> UnitExplanations:
        return self.units[k]

    def __len__(self) -> int:
        return len(self.units)

    def __iter__(self) -> Iterator[UnitExplanations]:
        return iter(self.units)

    @property
    def unit_ids(self) -> list[Any]:
        return [u.unit_id for u in self.units]

    def best(self) -> list[Explanation | None]:
        """The best explanation of each unit (``None`` where there is none)."""
        return [u.best for u in self.units]

    @property
    def ceiling(self) -> np.ndarray:
        """Each unit's ceiling (see :class:`UnitExplanations`), NaN where there is none."""
        return self._unit_floats("ceiling")

    @property
    def bound(self) -> np.ndarray:
        """Each unit's bound at the search length (``optimal=True``), NaN where none."""
        return self._unit_floats("bound")

    @property
    def certified(self) -> np.ndarray:
        """Whether each unit's best formula is proven optimal (False where not computed)."""
        return np.array([bool(u.certified) for u in self.units], dtype=bool)

    def _unit_floats(self, name: str) -> np.ndarray:
        vals = [getattr(u, name) for u in self.units]
        return np.array([np.nan if v is None else v for v in vals], dtype=np.float64)

    def certificate_fields(self) -> tuple[str, ...]:
        """The certificate fields (:data:`UNIT_FIELDS`) that some unit has."""
        return tuple(f for f in UNIT_FIELDS if any(getattr(u, f) is not None
                                                   for u in self.units))

    def to_records(self) -> list[dict[str, Any]]:
        """One dict per (unit, rank); a unit without explanation gives one row with its
        ``reason`` and empty statistics. Certificate fields (:data:`UNIT_FIELDS`) that some
        unit has repeat the unit's value on each of its rows."""
        rows: list[dict[str, Any]] = []
        present = self.certificate_fields()
        for u in self.units:
            fields = {f: getattr(u, f) for f in present}
            if not u:
                rows.append({c: None for c in COLUMNS} | {"unit": u.unit_id, "reason": u.reason}
                            | fields)
                continue
            for e in u:
                rows.append({"unit": u.unit_id, "rank": e.rank, **e.to_dict(), "reason": None}
                            | fields)
        return rows

    def to_dataframe(self) -> Any:
        """A pandas DataFrame with :data:`COLUMNS`, then the certificate fields some unit
        has (``ceiling``, ``certified``, ``bound``), then the extras; one row per (unit,
        rank)."""
        try:
            import pandas as pd
        except ImportError as err:  # pragma: no cover - depends on environment
            raise ImportError("to_dataframe needs pandas: pip install pandas") from err
        records = self.to_records()
        present = list(self.certificate_fields())
        extra_cols = sorted({k for r in records for k in r} - set(COLUMNS) - set(present))
        df = pd.DataFrame.from_records(records, columns=list(COLUMNS) + present + extra_cols)
        for col in ("rank", "support", "length"):
            df[col] = df[col].astype("Int64")
        for col in ("ceiling", "bound"):
            if col in df:
                df[col] = df[col].astype(np.float64)
        if "certified" in df:
            df["certified"] = df["certified"].astype("boolean")
        return df

    def to_csv(self, path: str | os.PathLike[str] | None = None) -> str | None:
        """Write (or return, when ``path`` is None) the table as CSV."""
        return self.to_dataframe().to_csv(path, index=False)

    def to_unit_records(self, layer: str | None = None) -> list[dict[str, Any]]:
        """One dict per unit: ``layer``, ``unit``, ``reason``, the certificate fields some
        unit has (``ceiling``, ``certified``, ``bound``) and the best-first
        ``explanations`` list (the JSON Lines schema of the CLI)."""
        present = self.certificate_fields()
        return [
            {
                "layer": layer,
                "unit": u.unit_id,
                "reason": u.reason,
                **{f: getattr(u, f) for f in present},
                "explanations": [e.to_dict() for e in u],
            }
            for u in self.units
        ]

    def to_json(self, path: str | os.PathLike[str] | None = None, *,
                layer: str | None = None) -> str | None:
        """JSON document with the parameters and one record per unit."""
        doc = {
            "params": self.params,
            "n_samples": self.n_samples,
            "concept_names": self.concept_names,
            "undefined_concepts": self.undefined_concepts,
            "units": self.to_unit_records(layer),
        }
        text = json.dumps(json_safe(doc), indent=1, allow_nan=False)
        if path is None:
            return text
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        return None

    def __repr__(self) -> str:
        explained = sum(1 for u in self.units if u.best is not None)
        shown = {k: self.params[k] for k in ("length", "beam_size", "min_fraction",
                                              "max_fraction", "mode") if k in self.params}
        return (f"{type(self).__name__}({len(self.units)} units, {explained} explained, "
                f"N={self.n_samples}, {shown})")

    def summary(self, top: int = 10) -> str:
        """A plain-text table of the best explanation of the ``top`` units, ranked by
        :func:`rank_score` (the lower bound of the 95% score interval of the held-out AUROC
        where there is one, else of the AUROC), so a tiny pure subset does not come first."""
        mode = str(self.params.get("mode", "positive"))
        best = [(u.unit_id, u.best, u.reason) for u in self.units]
        best.sort(key=lambda t: -(rank_score(t[1], mode) if t[1] is not None else -math.inf))
        lines = [f"{'unit':>8}  {'AUROC':>6}  {'log10 p':>8}  {'frac':>6}  formula"]
        for uid, e, reason in best[:top]:
            if e is None:
                lines.append(f"{uid!s:>8}  {'-':>6}  {'-':>8}  {'-':>6}  ({reason})")
            else:
                lines.append(
                    f"{uid!s:>8}  {e.auroc:6.3f}  {e.log10_p_value:8.1f}  {e.fraction:6.3f}  "
                    f"{e.formula}"
                )
        return "\n".join(lines)


def rank_score(e: Explanation, mode: str = "positive") -> float:
    """How well an explanation is supported: the lower bound of the 95% Newcombe score
    interval of its held-out AUROC when it has one (from the held-out support, with the
    search split's negatives standing in for the held-out ones; the stored DeLong bound, or
    the held-out AUROC itself, where the support is missing), else the same bound of its
    AUROC (the upper bounds turned around in ``negative`` mode). DeLong's interval is far
    too narrow on a handful of samples, so that a support-1 formula at AUROC 1.0, or a
    lucky 0.996 on 4 held-out samples, would rank first; the score interval does not."""
    held = e.extras.get("holdout_auroc")
    n = round(e.support / e.fraction) if e.fraction > 0 else 0
    if held is not None and math.isfinite(held):
        hs = e.extras.get("holdout_support")
        if hs:
            low, high = newcombe_interval(float(held), int(hs), max(n - int(hs), 1))
        else:
            low = e.extras.get("holdout_auroc_ci_low", held)
            high = e.extras.get("holdout_auroc_ci_high", held)
    else:
        low, high = newcombe_interval(e.auroc, e.support, max(n - e.support, 0))
    score = float(low) if mode == "positive" else 1.0 - float(high)
    return score if math.isfinite(score) else -math.inf


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN/inf as None, numpy scalars as Python ones, paths as str (for JSON)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, np.generic):
        return json_safe(obj.item())
    if isinstance(obj, PurePath):
        return str(obj)
    return obj
