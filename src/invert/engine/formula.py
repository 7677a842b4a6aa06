"""Logical formulas over concepts: literals, AND, OR, printed and parsed.

A formula is a tree of :class:`Literal` (a concept or its negation), :class:`And` and
:class:`Or`. ``str()`` prints concept names when the formula knows them, else column indices,
with the grammar of the reference semantics::

    or   := and (" | " and)*
    and  := un  (" & " un)*
    un   := "~" atom | atom
    atom := INDEX | NAME | "(" or ")"

Names that contain spaces, parentheses, ``&``, ``|``, ``~`` or quotes are printed in double
quotes (with ``\\"`` and ``\\\\`` escaped), so every printed formula parses back with
:func:`parse_formula`.

Examples
--------
>>> import numpy as np
>>> f = parse_formula("0 | ~2 & 1")
>>> str(f)
'0 | ~2 & 1'
>>> f.evaluate(np.array([[1, 0, 1], [0, 1, 0], [0, 0, 1]], dtype=bool)).tolist()
[True, True, False]
>>> str(parse_formula("(cat | dog) & ~puppy", names=["cat", "dog", "puppy"]))
'(cat | dog) & ~puppy'
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from .._validate import InvalidParameterError

__all__ = [
    "Formula", "Literal", "And", "Or", "BinaryFormula", "parse_formula", "FormulaSyntaxError",
    "LabelColumns", "formula_masks",
]

_BARE_NAME = re.compile(r"^[^\s()&|~\"]+$")


class FormulaSyntaxError(ValueError):
    """A formula string that does not follow the grammar."""


def _quote(name: str) -> str:
    if _BARE_NAME.match(name) and not name.isdigit():
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


class LabelColumns:
    """Bool columns of a dense, sparse or torch (N, C) label matrix, each extracted once:
    the one evaluator of formulas (:meth:`Formula.evaluate`, :func:`formula_masks`)."""

    def __init__(self, labels: Any):
        if getattr(labels, "ndim", 2) != 2:
            raise InvalidParameterError(
                f"labels: expected a 2-D (N, C) concept matrix, got shape {np.shape(labels)}")
        if hasattr(labels, "detach"):
            labels = labels.detach().cpu().numpy()
        self.sparse = sp.issparse(labels)
        self.y: Any = sp.csc_matrix(labels) if self.sparse else np.asarray(labels)
        self.n = self.y.shape[0]
        self._cache: dict[int, np.ndarray] = {}

    def column(self, j: int) -> np.ndarray:
        """Concept ``j`` as a bool vector (cached; do not modify it)."""
        c = self._cache.get(j)
        if c is None:
            if self.sparse:
                c = np.zeros(self.n, dtype=bool)
                y = self.y
                lo, hi = y.indptr[j], y.indptr[j + 1]
                c[y.indices[lo:hi][y.data[lo:hi] != 0]] = True
            else:
                c = self.y[:, j].astype(bool)
            self._cache[j] = c
        return c

    def evaluate(self, formula: Formula) -> np.ndarray:
        """The formula's bool mask (N,), a fresh array."""
        return formula._eval(self)


def formula_masks(formulas: Sequence[Formula], labels: Any) -> np.ndarray:
    """Bool masks (F, N) of ``formulas`` over the rows of ``labels`` (dense or sparse),
    extracting each concept column once.

    Examples
    --------
    >>> import numpy as np
    >>> from invert import parse_formula
    >>> y = np.array([[1, 0], [0, 1], [1, 1]], dtype=bool)
    >>> formula_masks([parse_formula("0 & ~1"), parse_formula("1")], y).astype(int).tolist()
    [[1, 0, 0], [0, 1, 1]]
    """
    cols = labels if isinstance(labels, LabelColumns) else LabelColumns(labels)
    out = np.zeros((len(formulas), cols.n), dtype=bool)
    for i, f in enumerate(formulas):
        out[i] = cols.evaluate(f)
    return out


class Formula:
    """Base class of formula nodes (immutable, hashable, comparable by structure)."""

    names: tuple[str, ...] | None

    def evaluate(self, labels: Any) -> np.ndarray:
        """Truth value of the formula on each row of ``labels``.

        Parameters
        ----------
        labels : array-like or scipy.sparse matrix of shape (N, C)
            Boolean concept matrix (the columns the formula's indices refer to).

        Returns
        -------
        numpy.ndarray of bool, shape (N,)
        """
        cols = labels if isinstance(labels, LabelColumns) else LabelColumns(labels)
        return self._eval(cols)

    def _eval(self, cols: LabelColumns) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def length(self) -> int:
        """Number of literals in the formula."""
        return len(self.literals())

    def literals(self) -> list[Literal]:
        """The literals in the formula, left to right."""
        raise NotImplementedError

    def concepts(self) -> list[int]:
        """Sorted distinct concept indices used by the formula."""
        return sorted({lit.index for lit in self.literals()})

    def with_names(self, names: Sequence[str] | None) -> Formula:
        """The same formula printing the given concept names (``None``: indices)."""
        raise NotImplementedError

    def to_string(self, names: Sequence[str] | None = None) -> str:
        """Print with ``names`` (or the formula's own names, or indices)."""
        return self._str(tuple(names) if names is not None else self.names, top=True)

    def _str(self, names: Sequence[str] | None, top: bool) -> str:  # pragma: no cover
        raise NotImplementedError

    def __str__(self) -> str:
        return self.to_string()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_string(None)!r})"

    def __and__(self, other: Formula) -> Formula:
        return And(self, other)

    def __or__(self, other: Formula) -> Formula:
        return Or(self, other)

    def __invert__(self) -> Formula:
        if isinstance(self, Literal):
            return Literal(self.index, not self.negated, self.names)
        raise TypeError("only a single concept can be negated in this grammar")


@dataclass(frozen=True, eq=True)
class Literal(Formula):
    """A concept (``index``) or its negation."""

    index: int
    negated: bool = False
    names: tuple[str, ...] | None = field(default=None, compare=False, repr=False)

    def _eval(self, cols: LabelColumns) -> np.ndarray:
        col = cols.column(self.index)
        return ~col if self.negated else col.copy()

    def literals(self) -> list[Literal]:
        return [self]

    def with_names(self, names: Sequence[str] | None) -> Literal:
        return Literal(self.index, self.negated, tuple(names) if names is not None else None)

    def _str(self, names: Sequence[str] | None, top: bool) -> str:
        atom = _quote(names[self.index]) if names is not None else str(self.index)
        return "~" + atom if self.negated else atom


@dataclass(frozen=True, eq=True)
class BinaryFormula(Formula):
    """A node with two children (:class:`And`, :class:`Or`)."""

    left: Formula
    right: Formula
    names: tuple[str, ...] | None = field(default=None, compare=False, repr=False)

    def literals(self) -> list[Literal]:
        return self.left.literals() + self.right.literals()

    def with_names(self, names: Sequence[str] | None) -> BinaryFormula:
        named = tuple(names) if names is not None else None
        return type(self)(self.left.with_names(named), self.right.with_names(named), named)


class And(BinaryFormula):
    """Conjunction of two formulas."""

    def _eval(self, cols: LabelColumns) -> np.ndarray:
        return self.left._eval(cols) & self.right._eval(cols)

    def _str(self, names: Sequence[str] | None, top: bool) -> str:
        parts = []
        for child in (self.left, self.right):
            s = child._str(names, top=False)
            parts.append(f"({s})" if isinstance(child, Or) else s)
        return " & ".join(parts)


class Or(BinaryFormula):
    """Disjunction of two formulas."""

    def _eval(self, cols: LabelColumns) -> np.ndarray:
        return self.left._eval(cols) | self.right._eval(cols)

    def _str(self, names: Sequence[str] | None, top: bool) -> str:
        return " | ".join(child._str(names, top=False) for child in (self.left, self.right))


# ----------------------------------------------------------------------------- parsing

_TOKEN = re.compile(r'\s*(?:(?P<op>[()&|~])|"(?P<q>(?:[^"\\]|\\.)*)"|(?P<bare>[^\s()&|~"]+))')


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise FormulaSyntaxError(
                f"formula: unexpected character {text[pos:pos + 1]!r} at position {pos} "
                f"in {text!r}"
            )
        if m.group("op"):
            tokens.append(("op", m.group("op")))
        elif m.group("q") is not None:
            tokens.append(("name", re.sub(r"\\(.)", r"\1", m.group("q"))))
        else:
            tokens.append(("bare", m.group("bare")))
        pos = m.end()
    return tokens


def parse_formula(text: str, names: Sequence[str] | None = None) -> Formula:
    """Parse a formula string into a :class:`Formula`.

    Parameters
    ----------
    text : str
        Formula in the grammar above. Atoms are column indices, or concept names when
        ``names`` is given (a bare integer is then read as a name if it is one, else as an
        index).
    names : sequence of str, optional
        Concept names, in column order.

    Returns
    -------
    Formula

    Examples
    --------
    >>> str(parse_formula("~0 | 3 | ~8"))
    '~0 | 3 | ~8'
    """
    if not isinstance(text, str):
        raise TypeError(f"text: expected a str, got {type(text).__name__}")
    lookup = {n: i for i, n in enumerate(names)} if names is not None else None
    name_tuple = tuple(names) if names is not None else None
    tokens = _tokenize(text)
    if not tokens:
        raise FormulaSyntaxError("formula: expected a formula, got an empty string")
    pos = 0

    def peek() -> tuple[str, str] | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> tuple[str, str]:
        nonlocal pos
        tok = peek()
        if tok is None:
            raise FormulaSyntaxError(f"formula: unexpected end of {text!r}")
        pos += 1
        return tok

    def atom_index(kind: str, value: str) -> int:
        if lookup is not None and value in lookup:
            return lookup[value]
        if kind == "bare" and value.isdigit():
            idx = int(value)
            if names is not None and idx >= len(names):
                raise FormulaSyntaxError(
                    f"formula: concept index {idx} out of range for {len(names)} concepts"
                )
            return idx
        if lookup is None:
            raise FormulaSyntaxError(
                f"formula: {value!r} is not a column index and no concept names were given"
            )
        close = _close_matches(value, list(lookup))
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise FormulaSyntaxError(f"formula: unknown concept {value!r}{hint}")

    def parse_or() -> Formula:
        node = parse_and()
        while peek() == ("op", "|"):
            take()
            node = Or(node, parse_and(), name_tuple)
        return node

    def parse_and() -> Formula:
        node = parse_un()
        while peek() == ("op", "&"):
            take()
            node = And(node, parse_un(), name_tuple)
        return node

    def parse_un() -> Formula:
        tok = take()
        if tok == ("op", "~"):
            inner = parse_atom(take())
            if not isinstance(inner, Literal):
                raise FormulaSyntaxError(
                    "formula: '~' applies to a single concept in this grammar, "
                    f"got '~(...)' in {text!r}"
                )
            return Literal(inner.index, not inner.negated, name_tuple)
        return parse_atom(tok)

    def parse_atom(tok: tuple[str, str]) -> Formula:
        kind, value = tok
        if tok == ("op", "("):
            node = parse_or()
            if take() != ("op", ")"):
                raise FormulaSyntaxError(f"formula: missing ')' in {text!r}")
            return node
        if kind == "op":
            raise FormulaSyntaxError(f"formula: unexpected {value!r} in {text!r}")
        return Literal(atom_index(kind, value), False, name_tuple)

    node = parse_or()
    if pos != len(tokens):
        raise FormulaSyntaxError(f"formula: unexpected {tokens[pos][1]!r} in {text!r}")
    return node


def _close_matches(word: str, options: list[str]) -> list[str]:
    import difflib

    return difflib.get_close_matches(word, options, n=3)


def chain(literals: Sequence[tuple[int, bool]], ops: Sequence[str],
          names: Sequence[str] | None = None) -> Formula:
    """Left-deep formula ``((l0 op1 l1) op2 l2) ...`` as built by the beam search."""
    name_tuple = tuple(names) if names is not None else None
    node: Formula = Literal(int(literals[0][0]), bool(literals[0][1]), name_tuple)
    for (idx, neg), op in zip(literals[1:], ops, strict=True):
        lit = Literal(int(idx), bool(neg), name_tuple)
        node = And(node, lit, name_tuple) if op == "&" else Or(node, lit, name_tuple)
    return node
