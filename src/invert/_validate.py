"""Parameter validation at the public boundary: one message template, one exception class.

Every parameter error in invert reads ``<name>: expected <what>, got <value>`` and is an
:class:`InvalidParameterError`, which is both a ``ValueError`` and a ``TypeError`` (so
callers may catch either, as with scikit-learn's ``InvalidParameterError``). The command line
treats exactly these (plus missing files and its own ``CommandError``) as user errors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np

__all__ = [
    "InvalidParameterError",
    "bad",
    "check_bool",
    "check_choice",
    "check_fraction",
    "check_int",
    "check_interval",
    "check_memory_budget",
    "check_progress",
    "check_random_state",
    "DEFAULT_MEMORY_BUDGET",
]

#: Working memory per chunk of units when no ``memory_budget`` is given (bytes).
DEFAULT_MEMORY_BUDGET = 1 << 30
_SIZE_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


class InvalidParameterError(ValueError, TypeError):
    """A parameter (or input) that is not what the function expects.

    The message names the parameter, what was expected and what was given."""


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def bad(name: str, expected: str, got: Any, *, raw: bool = False,
        **_legacy: Any) -> InvalidParameterError:
    """``<name>: expected <expected>, got <got>`` as an exception to raise.

    ``got`` is shown with ``repr`` (cut to 80 characters) unless ``raw``: then it is a
    description written by the caller (``"shape (3, 4)"``)."""
    shown = got if raw else _show(got)
    return InvalidParameterError(f"{name}: expected {expected}, got {shown}")


def check_int(name: str, value: Any, *, minimum: int | None = None,
              maximum: int | None = None) -> int:
    """An integer (not a bool) within the optional limits."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise bad(name, "an integer", value)
    value = int(value)
    if minimum is not None and maximum is not None and not minimum <= value <= maximum:
        raise bad(name, f"an integer in [{minimum}, {maximum}]", value)
    if minimum is not None and value < minimum:
        raise bad(name, f"an integer >= {minimum}", value)
    if maximum is not None and value > maximum:
        raise bad(name, f"an integer <= {maximum}", value)
    return value


def check_interval(name: str, value: Any, low: float = -math.inf, high: float = math.inf, *,
                   low_open: bool = False, high_open: bool = False) -> float:
    """A real number (not a bool, not NaN) in the interval from ``low`` to ``high``."""
    lo = "(" if low_open else "["
    hi = ")" if high_open else "]"
    what = f"a number in {lo}{low:g}, {high:g}{hi}"
    if isinstance(value, bool) or not isinstance(value, Real):
        raise bad(name, what, value)
    v = float(value)
    below = v <= low if low_open else v < low
    above = v >= high if high_open else v > high
    if math.isnan(v) or below or above:
        raise bad(name, what, value)
    return v


def check_fraction(name: str, value: Any) -> float:
    """A number in [0, 1]."""
    return check_interval(name, value, 0.0, 1.0)


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """One of ``choices``."""
    try:
        ok = value in choices
    except TypeError:  # an unhashable or incomparable value
        ok = False
    if not ok:
        raise bad(name, "one of " + ", ".join(map(repr, choices)), value)
    return value


def check_bool(name: str, value: Any) -> bool:
    """True or False (numpy booleans included)."""
    if not isinstance(value, bool | np.bool_):
        raise bad(name, "True or False", value)
    return bool(value)


def check_random_state(name: str, value: Any) -> np.random.Generator:
    """A numpy Generator from None, an int or a Generator."""
    if value is None or isinstance(value, np.random.Generator):
        return np.random.default_rng(value)
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise bad(name, "None, an int or a numpy Generator", value)
    return np.random.default_rng(int(value))


def check_memory_budget(name: str, value: Any, *, minimum: int = 1 << 20) -> int:
    """Bytes from an int or a size such as ``"2GiB"``, ``"512M"`` (default 1 GiB)."""
    if value is None:
        return DEFAULT_MEMORY_BUDGET
    if isinstance(value, str):
        text = value.strip().lower().removesuffix("ib").removesuffix("b")
        scale = 1
        if text and text[-1] in _SIZE_UNITS:
            text, scale = text[:-1], _SIZE_UNITS[text[-1]]
        try:
            number = float(text)
        except ValueError:
            raise bad(name, "bytes as an int or a size like '2GiB'", value) from None
        if not math.isfinite(number * scale) or number * scale < minimum:
            raise bad(name, f"a finite size of at least {minimum} bytes, e.g. '2GiB'", value)
        return int(number * scale)
    return check_int(name, value, minimum=minimum)


def check_progress(name: str, value: Any) -> Any:
    """None or a callable (``progress(units_done, n_units)``)."""
    if value is not None and not callable(value):
        raise bad(name, "a callable progress(units_done, n_units) or None", value)
    return value
