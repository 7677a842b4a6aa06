"""The search parameters: one definition of their names, defaults and checks."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validate import bad, check_choice, check_fraction, check_int

__all__ = ["SEARCH_PARAMS", "SEARCH_DEFAULTS", "check_search_params"]


#: The search parameters of :func:`explain`: the keys of ``ExplanationResult.params``.
SEARCH_PARAMS = ("length", "beam_size", "min_fraction", "max_fraction", "mode",
                 "limit_search", "dedupe", "metric")
SEARCH_DEFAULTS: dict[str, Any] = {
    "length": 3, "beam_size": 5, "min_fraction": 0.0, "max_fraction": 0.5, "mode": "positive",
    "limit_search": None, "dedupe": True, "metric": "auroc",
}


def check_search_params(params: dict[str, Any], n_concepts: int | None) -> dict[str, Any]:
    """The validated search parameters, defaults filled in (``limit_search`` is checked
    against ``2 * n_concepts`` when that is given)."""
    s = SEARCH_DEFAULTS | dict(params)
    s["length"] = check_int("length", s["length"], minimum=1)
    s["beam_size"] = check_int("beam_size", s["beam_size"], minimum=1)
    s["min_fraction"] = check_fraction("min_fraction", s["min_fraction"])
    s["max_fraction"] = check_fraction("max_fraction", s["max_fraction"])
    if s["min_fraction"] > s["max_fraction"]:
        raise bad("min_fraction", f"a value <= max_fraction ({s['max_fraction']})",
                  s["min_fraction"])
    s["mode"] = check_choice("mode", s["mode"], ("positive", "negative"))
    s["metric"] = check_choice("metric", s["metric"], ("auroc", "point_biserial"))
    if not isinstance(s["dedupe"], bool | np.bool_):
        raise bad("dedupe", "True or False", s["dedupe"], exc=TypeError)
    s["dedupe"] = bool(s["dedupe"])
    if n_concepts is not None and s["limit_search"] is not None:
        s["limit_search"] = check_int("limit_search", s["limit_search"], minimum=1,
                                      maximum=2 * n_concepts)
    return s
