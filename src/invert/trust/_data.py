"""What the trust functions share: whole-array inputs through the engine's input path, the
unit-count check against a result, and copying an explanation with more extras."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from .._validate import bad
from ..engine.inputs import ActivationsLike, ConceptsLike, as_activations, as_labels
from ..engine.result import Explanation, ExplanationResult


def whole_inputs(activations: ActivationsLike, concepts: ConceptsLike, exact: bool = False
                 ) -> tuple[np.ndarray, list[Any] | None, Any, list[str] | None]:
    """Checked activations as one (N, K) float array (with ``exact``, integers keep their
    dtype: int64 above 2**53 stays exact), their unit ids, the checked (N, C) labels (numpy
    bool or scipy CSR bool) and the concept names (or None)."""
    acts, unit_ids = as_activations(activations)
    a = acts.block(slice(None), exact=exact)
    y, names = as_labels(concepts, a.shape[0])
    return a, unit_ids, y, names


def check_units(a: np.ndarray, result: ExplanationResult) -> None:
    """``a`` has one column per unit of ``result``."""
    if a.shape[1] != len(result.units):
        raise bad("activations", f"{len(result.units)} units (as in result)",
                  f"{a.shape[1]} columns", raw=True)


def with_extras(e: Explanation, new: dict[str, Any]) -> Explanation:
    """A copy of ``e`` whose extras also hold ``new`` (which wins on equal keys)."""
    return replace(e, extras={**e.extras, **new})
