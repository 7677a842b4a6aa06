"""invert: label the units of neural networks with human concepts.

An exact, fast implementation of Inverse Recognition (INVERT, Bykov et al., NeurIPS 2023):
for every unit of a layer, a beam search over logical formulas of concepts finds those whose
labels best separate high from low activations, scored by exact AUROC.

Examples
--------
>>> import numpy as np
>>> import invert
>>> y = np.zeros((100, 3), dtype=bool); y[:20, 0] = True; y[50:70, 2] = True
>>> a = y[:, 0] * 2.0 + np.linspace(0, 1, 100)
>>> str(invert.explain(a, y, length=1)[0][0].formula)
'0'
"""

from ._version import __version__
from .api import explain
from .concepts import ConceptSet
from .engine.formula import And, Formula, Literal, Or, parse_formula
from .engine.result import Explanation, ExplanationResult, UnitExplanations
from .engine.stats import auroc
from .extract import ActivationSet, collect_activations

__all__ = [
    "explain",
    "auroc",
    "ConceptSet",
    "ActivationSet",
    "collect_activations",
    "Formula",
    "Literal",
    "And",
    "Or",
    "parse_formula",
    "Explanation",
    "ExplanationResult",
    "UnitExplanations",
    "__version__",
]
