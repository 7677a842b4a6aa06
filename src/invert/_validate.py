"""Parameter validation at the public boundary (one message template)."""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any

__all__ = ["bad", "check_int", "check_fraction", "check_choice"]


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def bad(name: str, expected: str, got: Any, *, exc: type[Exception] = ValueError,
        raw: bool = False) -> Exception:
    """``<name>: expected <expected>, got <got>`` as an exception to raise."""
    shown = got if raw else _show(got)
    return exc(f"{name}: expected {expected}, got {shown}")


def check_int(name: str, value: Any, *, minimum: int | None = None,
              maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise bad(name, "an integer", value, exc=TypeError)
    value = int(value)
    if minimum is not None and maximum is not None and not minimum <= value <= maximum:
        raise bad(name, f"an integer in [{minimum}, {maximum}]", value)
    if minimum is not None and value < minimum:
        raise bad(name, f"an integer >= {minimum}", value)
    if maximum is not None and value > maximum:
        raise bad(name, f"an integer <= {maximum}", value)
    return value


def check_fraction(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise bad(name, "a number in [0, 1]", value, exc=TypeError)
    value = float(value)
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise bad(name, "a number in [0, 1]", value)
    return value


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise bad(name, "one of " + ", ".join(map(repr, choices)), value)
    return value
