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

import numpy as np

__all__ = ["Formula", "Literal", "And", "Or", "parse_formula", "FormulaSyntaxError"]

_BARE_NAME = re.compile(r"^[^\s()&|~\"]+$")


class FormulaSyntaxError(ValueError):
    """A formula string that does not follow the grammar."""


def _quote(name: str) -> str:
    if _BARE_NAME.match(name) and not name.isdigit():
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _column(labels, index: int) -> np.ndarray:
    """Column ``index`` of a dense or sparse label matrix as a bool vector."""
    if hasattr(labels, "tocsc"):
        return np.asarray(labels.tocsc()[:, [index]].toarray()).ravel().astype(bool)
    if hasattr(labels, "detach"):
        labels = labels.detach().cpu().numpy()
    return np.asarray(labels)[:, index].astype(bool)


class Formula:
    """Base class of formula nodes (immutable, hashable, comparable by structure)."""

    names: tuple[str, ...] | None

    def evaluate(self, labels) -> np.ndarray:
        """Truth value of the formula on each row of ``labels``.

        Parameters
        ----------
        labels : array-like or scipy.sparse matrix of shape (N, C)
            Boolean concept matrix (the columns the formula's indices refer to).

        Returns
        -------
        numpy.ndarray of bool, shape (N,)
        """
        if getattr(labels, "ndim", 2) != 2:
            raise ValueError(
                f"labels: expected a 2-D (N, C) concept matrix, got shape {np.shape(labels)}"
            )
        return self._eval(labels, {})

    def _eval(self, labels, cache: dict) -> np.ndarray:  # pragma: no cover - abstract
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

    def _str(self, names, top: bool) -> str:  # pragma: no cover - abstract
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

    def _eval(self, labels, cache):
        col = cache.get(self.index)
        if col is None:
            col = cache[self.index] = _column(labels, self.index)
        return ~col if self.negated else col.copy()

    def literals(self):
        return [self]

    def with_names(self, names):
        return Literal(self.index, self.negated, tuple(names) if names is not None else None)

    def _str(self, names, top):
        atom = _quote(names[self.index]) if names is not None else str(self.index)
        return "~" + atom if self.negated else atom


@dataclass(frozen=True, eq=True)
class _Binary(Formula):
    left: Formula
    right: Formula
    names: tuple[str, ...] | None = field(default=None, compare=False, repr=False)

    def literals(self):
        return self.left.literals() + self.right.literals()

    def with_names(self, names):
        names = tuple(names) if names is not None else None
        return type(self)(self.left.with_names(names), self.right.with_names(names), names)


class And(_Binary):
    """Conjunction of two formulas."""

    def _eval(self, labels, cache):
        return self.left._eval(labels, cache) & self.right._eval(labels, cache)

    def _str(self, names, top):
        parts = []
        for child in (self.left, self.right):
            s = child._str(names, top=False)
            parts.append(f"({s})" if isinstance(child, Or) else s)
        return " & ".join(parts)


class Or(_Binary):
    """Disjunction of two formulas."""

    def _eval(self, labels, cache):
        return self.left._eval(labels, cache) | self.right._eval(labels, cache)

    def _str(self, names, top):
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

    def peek():
        return tokens[pos] if pos < len(tokens) else None

    def take():
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

    def parse_or():
        node = parse_and()
        while peek() == ("op", "|"):
            take()
            node = Or(node, parse_and(), name_tuple)
        return node

    def parse_and():
        node = parse_un()
        while peek() == ("op", "&"):
            take()
            node = And(node, parse_un(), name_tuple)
        return node

    def parse_un():
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

    def parse_atom(tok):
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
