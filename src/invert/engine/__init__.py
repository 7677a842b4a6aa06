"""The numerical core: exact AUROC statistics, formulas, results and the whole-layer beam
search. Imports numpy, scipy, torch and :mod:`invert._validate` only (no I/O, progress bars,
tables, or the packages above it)."""

from .formula import And, Formula, FormulaSyntaxError, Literal, Or, parse_formula
from .result import Explanation, ExplanationResult, UnitExplanations
from .search import explain
from .stats import auroc

__all__ = [
    "And", "Formula", "FormulaSyntaxError", "Literal", "Or", "parse_formula",
    "Explanation", "ExplanationResult", "UnitExplanations", "explain", "auroc",
]
