"""The concept-set type: a named boolean matrix over samples, with an optional hierarchy."""

from __future__ import annotations

import logging
import os
import warnings
from collections import Counter, deque
from collections.abc import Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from .._validate import bad
from .io import (
    FORMAT_NAME,
    FORMAT_VERSION,
    from_json_sample_id,
    json_sample_id,
    read_concept_set,
    write_concept_set,
)

__all__ = ["ConceptSet", "ConstantConceptWarning", "SkippedItemsWarning", "FORMAT_VERSION"]

logger = logging.getLogger(__name__)


class ConstantConceptWarning(UserWarning):
    """Some concepts are all-zero or all-one over the samples (kept, see ``constant_concepts``)."""


class SkippedItemsWarning(UserWarning):
    """A builder skipped some input (recorded in ``ConceptSet.skipped``)."""


def _require_pandas(what: str):
    try:
        import pandas as pd
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"{what} needs pandas: pip install pandas (or pip install 'invert[tables]')"
        ) from exc
    return pd


def _to_matrix(matrix: Any) -> np.ndarray | sp.csr_array | sp.csr_matrix:
    """Validate a 0/1 matrix and return it as a bool ndarray or bool CSR matrix/array."""
    if hasattr(matrix, "detach") and hasattr(matrix, "cpu"):  # torch tensor, without importing it
        if getattr(matrix, "is_sparse", False):
            matrix = matrix.to_dense()
        matrix = matrix.detach().cpu().numpy()
    if sp.issparse(matrix):
        return _sparse_matrix(matrix)
    if (
        isinstance(matrix, (str, bytes))
        or not hasattr(matrix, "__len__")
        and not isinstance(matrix, np.ndarray)
    ):
        raise bad("matrix", "a 2-D numpy array, torch tensor or scipy.sparse matrix",
                  type(matrix).__name__, raw=True)
    return _dense_matrix(np.asarray(matrix))


def _sparse_matrix(matrix: Any) -> sp.csr_array | sp.csr_matrix:
    if matrix.ndim != 2:
        raise bad("matrix", "2 dimensions (samples, concepts)", f"{matrix.ndim}", raw=True)
    csr = matrix.tocsr(copy=True)
    csr.sum_duplicates()
    data = np.asarray(csr.data)
    if data.dtype != bool:
        if not np.issubdtype(data.dtype, np.number):
            raise bad("matrix", "a numeric or bool sparse matrix", f"{data.dtype}", raw=True)
        wrong = ~np.isin(data, (0, 1))
        if wrong.any():
            raise bad("matrix", "only 0/1 (boolean) entries",
                      f"values such as {np.unique(data[wrong])[:5].tolist()}", raw=True)
    csr = csr.astype(bool)
    csr.eliminate_zeros()
    return csr


def _dense_matrix(arr: np.ndarray) -> np.ndarray:
    if arr.ndim != 2:
        raise bad("matrix", "2 dimensions (samples, concepts)", f"shape {arr.shape}", raw=True)
    if arr.dtype == bool:
        return arr.copy()
    if arr.dtype == object:
        try:
            arr = arr.astype(float)
        except (TypeError, ValueError) as exc:
            raise bad("matrix", "0/1 numbers or booleans", "non-numeric entries",
                      raw=True) from exc
    if not np.issubdtype(arr.dtype, np.number):
        raise bad("matrix", "a numeric or bool array", f"dtype {arr.dtype}", raw=True)
    wrong = ~np.isin(arr, (0, 1))
    if wrong.any():
        vals = np.unique(arr[wrong])[:5].tolist()
        i, j = np.argwhere(wrong)[0]
        raise bad("matrix", "only 0/1 (boolean) entries",
                  f"values such as {vals} (first at sample {i}, concept {j})", raw=True)
    return arr.astype(bool)


def _check_str_list(value: Any, param: str, length: int, allow_none_items: bool = False) -> list:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise bad(param, "a list of str", type(value).__name__, raw=True)
    out = list(value)
    if len(out) != length:
        raise bad(param, f"{length} entries (one per concept)", f"{len(out)}", raw=True)
    for i, v in enumerate(out):
        if v is None and allow_none_items:
            continue
        if not isinstance(v, str):
            raise bad(param, "str entries", f"{type(v).__name__} at {i}: {v!r}", raw=True)
    return out


def _check_names(names: Any, c: int) -> list[str]:
    """``c`` unique, non-empty concept names."""
    out = _check_str_list(names, "names", c)
    empty = [i for i, s in enumerate(out) if not s.strip()]
    if empty:
        raise bad("names", "non-empty names", f"empty name(s) at {empty[:10]}", raw=True)
    dups = [k for k, v in Counter(out).items() if v > 1]
    if dups:
        raise bad("names", "unique concept names", f"duplicates {dups[:10]}", raw=True)
    return out


def _check_sample_ids(sample_ids: Any, n: int) -> list[Hashable]:
    """``n`` unique hashable sample ids (numpy scalars as Python values, lists as tuples)."""
    if isinstance(sample_ids, (str, bytes)) or not isinstance(sample_ids, Iterable):
        raise bad("sample_ids", "a sequence", type(sample_ids).__name__, raw=True)
    sids = [_normalize_sample_id(v) for v in sample_ids]
    if len(sids) != n:
        raise bad("sample_ids", f"{n} ids (one per matrix row)", f"{len(sids)}", raw=True)
    dup_ids = [k for k, v in Counter(sids).items() if v > 1]
    if dup_ids:
        raise bad("sample_ids", "unique ids",
                  f"{len(dup_ids)} duplicated, e.g. {dup_ids[:5]}", raw=True)
    return sids


def _normalize_sample_id(v: Any) -> Hashable:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, list | tuple):
        return tuple(_normalize_sample_id(x) for x in v)
    if not isinstance(v, Hashable):
        raise bad("sample_ids", "hashable ids", f"{type(v).__name__}: {v!r}", raw=True)
    return v


def _check_parents(parents: Any, names: Sequence[str]) -> dict[str, list[str]]:
    """The hierarchy as ``{name: [parent names]}``, every name one of ``names``."""
    if not isinstance(parents, Mapping):
        raise bad("parents", "a dict name -> list of parent names", type(parents).__name__,
                  raw=True)
    known = set(names)
    out: dict[str, list[str]] = {}
    for k, v in parents.items():
        if k not in known:
            raise bad("parents", "keys that are concept names of this set", f"key {k!r}",
                      raw=True)
        if isinstance(v, str) or not isinstance(v, Iterable):
            raise bad(f"parents[{k!r}]", "a list of names", type(v).__name__, raw=True)
        v = list(v)
        unknown = [p for p in v if p not in known]
        if unknown:
            raise bad(f"parents[{k!r}]", "concept names of this set",
                      f"{unknown[:5]}, which are not", raw=True)
        out[k] = v
    return out


def _positions(sel: Any, n: int, param: str, index: Mapping[str, int] | None) -> np.ndarray:
    """Positions (int64, in ``[0, n)``) of a selection: names (when ``index`` maps them),
    positions or a boolean mask; each position at most once."""
    if isinstance(sel, (str, bytes)):
        sel = [sel]
    arr = np.asarray(list(sel) if not isinstance(sel, np.ndarray) else sel)
    if arr.ndim != 1:
        raise bad(param, "a flat sequence of positions or a boolean mask",
                  f"an array of shape {arr.shape}", raw=True)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise bad(param, f"positions or a boolean mask; a boolean mask must have length {n}",
                      f"shape {arr.shape}", raw=True)
        return np.flatnonzero(arr)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if index is not None and arr.dtype.kind in "UO":
        missing = [s for s in arr.tolist() if s not in index]
        if missing:
            raise bad(param, "concept names of this set", f"unknown concept names {missing[:10]}",
                      raw=True)
        pos = np.array([index[s] for s in arr.tolist()], dtype=np.int64)
    elif np.issubdtype(arr.dtype, np.integer):
        pos = arr.astype(np.int64)
        if ((pos < -n) | (pos >= n)).any():
            raise bad(param, f"positions in [-{n}, {n})", f"{pos.tolist()[:10]}", raw=True)
        pos = pos % n if n else pos
    else:
        what = (
            "concept names, positions or a boolean mask"
            if index is not None
            else ("positions or a boolean mask (use sample_positions() for ids)")
        )
        raise bad(param, what, f"dtype {arr.dtype}", raw=True)
    dups = [int(k) for k, v in Counter(pos.tolist()).items() if v > 1]
    if dups:
        raise bad(param, "each position at most once", f"positions {dups[:10]} more than once",
                  raw=True)
    return pos


def _labels_matrix(labels: Sequence[Iterable[str]], names: Sequence[str],
                   sparse: bool | None) -> Any:
    """The (samples, names) bool matrix of one iterable of concept names per sample: CSR,
    or dense (default: sparse when under 10% of entries are set and there are over 100,000)."""
    index = {c: j for j, c in enumerate(names)}
    rows: list[int] = []
    cols: list[int] = []
    for i, row in enumerate(labels):
        for c in set(row):
            if c not in index:
                raise bad("labels", "concepts listed in names",
                          f"sample {i} with concept {c!r}, not in names", raw=True)
            rows.append(i)
            cols.append(index[c])
    shape = (len(labels), len(names))
    m = sp.csr_array(
        (
            np.ones(len(rows), dtype=bool),
            (np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)),
        ),
        shape=shape,
    )
    total = shape[0] * shape[1]
    if sparse is None:
        sparse = total > 100_000 and len(rows) < 0.1 * total
    return m if sparse else m.toarray().astype(bool)


def _first_difference(a: Sequence[Any], b: Sequence[Any]) -> int:
    return next(i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)


def _pad(a: list | None, b: list | None, na: int, nb: int) -> list | None:
    """``a + b``, a missing list standing for ``None`` entries (``None`` if both are)."""
    if a is None and b is None:
        return None
    return (a if a is not None else [None] * na) + (b if b is not None else [None] * nb)


class ConceptSet:
    """Named boolean concepts over samples: the ``concepts`` argument of :func:`invert.explain`.

    Parameters
    ----------
    matrix : array_like or scipy.sparse matrix, shape (n_samples, n_concepts)
        0/1 labels: ``matrix[i, j]`` says whether sample ``i`` shows concept ``j``. A numpy
        array, torch tensor or nested list (stored as a dense ``bool`` array) or a scipy.sparse
        matrix/array (stored as a ``bool`` CSR matrix of the same family). Entries other than
        0/1/True/False raise.
    names : sequence of str
        Unique, non-empty concept names, one per column. Names may hold letters, digits and
        ``_ - . ' :`` etc.; names with spaces, parentheses, ``&``, ``|``, ``~`` or quotes are
        quoted when :mod:`invert.engine.formula` prints them, so formulas always parse back.
    ids : sequence of str, optional
        External identifiers of the concepts (e.g. WordNet WNIDs ``'n01440764'``).
    descriptions : sequence of str, optional
        Human-readable definitions.
    sample_ids : sequence of hashable, optional
        Unique ids of the samples (file paths, ``(document, position)`` tuples, ...).
    parents : mapping of str to list of str, optional
        The hierarchy: concept name -> names of its direct parents in this set.
    skipped : list of dict, optional
        Records of inputs a builder left out, each with at least ``"item"`` and ``"reason"``.
    source : str, optional
        Where the set came from (free text, kept through save/load).
    sense_choices : list of dict, optional
        How names were read as concepts (:func:`~invert.concepts.from_folders` with WordNet:
        one record per folder/file name with ``word``, ``path``, ``wnid``, ``name``,
        ``lemma``, ``rule`` and ``override``); kept through subsets and save/load, and
        summarised per concept by :meth:`concept_sources`.
    warn_constant : bool, default True
        Warn (:class:`ConstantConceptWarning`) when some concepts are all-zero or all-one.
        They are kept either way and listed by :attr:`constant_concepts`.
    row_kind : str, optional
        What a row is when it is not a plain sample: ``"piece"`` (one row per tokenizer
        token, :func:`~invert.concepts.tokens.token_concepts`), ``"spacy-token"`` (one row
        per spaCy token, :func:`~invert.concepts.from_spacy`). Kept through subsets, unions
        and save/load; :func:`~invert.concepts.check_aligned` (called by
        :func:`invert.explain`) refuses to pair rows of different kinds, whose ``(document,
        position)`` ids look alike.

    Attributes
    ----------
    names : list of str
    matrix : numpy.ndarray of bool or scipy.sparse CSR matrix of bool
    ids, descriptions, sample_ids : list or None
    parents : dict or None
    skipped : list of dict
    row_kind : str or None

    Raises
    ------
    invert._validate.InvalidParameterError
        (both a ``ValueError`` and a ``TypeError``) on a shape mismatch, non-0/1 entries,
        duplicate or empty names, duplicate sample ids, parents that name unknown concepts, or
        arguments of the wrong type.
    """

    def __init__(
        self,
        matrix: Any,
        names: Sequence[str],
        *,
        ids: Sequence[str | None] | None = None,
        descriptions: Sequence[str | None] | None = None,
        sample_ids: Sequence[Hashable] | None = None,
        parents: Mapping[str, Sequence[str]] | None = None,
        skipped: Sequence[Mapping[str, Any]] | None = None,
        source: str | None = None,
        warn_constant: bool = True,
        sense_choices: Sequence[Mapping[str, Any]] | None = None,
        row_kind: str | None = None,
    ) -> None:
        self.matrix = _to_matrix(matrix)
        n, c = self.matrix.shape
        self.names = _check_names(names, c)
        self.ids = None if ids is None else _check_str_list(ids, "ids", c, allow_none_items=True)
        self.descriptions = (
            None
            if descriptions is None
            else _check_str_list(descriptions, "descriptions", c, allow_none_items=True)
        )
        self.sample_ids: list[Hashable] | None = (
            None if sample_ids is None else _check_sample_ids(sample_ids, n)
        )
        self.parents = None if parents is None else _check_parents(parents, self.names)
        self.skipped: list[dict[str, Any]] = [dict(r) for r in (skipped or [])]
        self.source = source
        self.sense_choices: list[dict[str, Any]] | None = (
            None if sense_choices is None else [dict(r) for r in sense_choices]
        )
        if row_kind is not None and (not isinstance(row_kind, str) or not row_kind):
            raise bad("row_kind", "None or a non-empty str such as 'piece'", row_kind)
        self.row_kind: str | None = row_kind
        self._index = {name: i for i, name in enumerate(self.names)}
        self._counts: np.ndarray | None = None
        if warn_constant:
            self._warn_constant()

    def _warn_constant(self) -> None:
        const = self.constant_concepts
        if const:
            msg = (
                f"{len(const)} of {self.n_concepts} concepts are constant over the "
                f"{self.n_samples} samples (all-zero or all-one), kept but uninformative: "
                f"{const[:10]}"
            )
            logger.info(msg)
            warnings.warn(msg, ConstantConceptWarning, stacklevel=3)

    # -- basic properties --------------------------------------------------------------------
    @property
    def n_samples(self) -> int:
        """Number of samples (matrix rows)."""
        return int(self.matrix.shape[0])

    @property
    def n_concepts(self) -> int:
        """Number of concepts (matrix columns)."""
        return int(self.matrix.shape[1])

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_samples, self.n_concepts)

    def __len__(self) -> int:
        return self.n_concepts

    @property
    def is_sparse(self) -> bool:
        return sp.issparse(self.matrix)

    def __repr__(self) -> str:
        kind = "sparse" if self.is_sparse else "dense"
        extra = f", {len(self.skipped)} skipped" if self.skipped else ""
        return (
            f"ConceptSet({self.n_samples} samples x {self.n_concepts} concepts, {kind}"
            f"{', hierarchy' if self.parents else ''}{extra})"
        )

    def concept_sources(self, limit: int = 5) -> dict[str, list[dict[str, Any]]]:
        """Per concept, the folder/file names it was read from (from :attr:`sense_choices`).

        Returns ``{concept name: [{"word", "path", "rule", "override"}, ...]}`` with at most
        ``limit`` records per concept (then ``{"more": k}``), for the concepts of this set
        that a name was read as directly; concepts reached only as hypernyms are left out.
        Empty without ``sense_choices``."""
        out: dict[str, list[dict[str, Any]]] = {}
        for rec in self.sense_choices or []:
            name = rec.get("name")
            if name is None or name not in self._index:
                continue
            lst = out.setdefault(name, [])
            lst.append({k: rec.get(k) for k in ("word", "path", "rule", "override")})
        for name, lst in out.items():
            if len(lst) > limit:
                out[name] = lst[:limit] + [{"more": len(lst) - limit}]
        return out

    def to_dense(self) -> np.ndarray:
        """The matrix as a dense ``bool`` numpy array."""
        if self.is_sparse:
            return np.asarray(self.matrix.toarray(), dtype=bool)
        return self.matrix

    def index(self, name: str) -> int:
        """Column position of a concept name (raises ``KeyError`` if unknown)."""
        try:
            return self._index[name]
        except KeyError:
            raise KeyError(f"concept {name!r} is not in this set") from None

    def column(self, name: str | int) -> np.ndarray:
        """The dense ``bool`` labels of one concept, by name or position."""
        j = self.index(name) if isinstance(name, str) else int(name)
        col = self.matrix[:, [j]]
        if sp.issparse(col):
            col = col.toarray()
        return np.asarray(col, dtype=bool).ravel()

    @property
    def counts(self) -> np.ndarray:
        """Number of positive samples per concept (int64, one per concept)."""
        if self._counts is None:
            self._counts = np.asarray(self.matrix.sum(axis=0), dtype=np.int64).ravel()
        return self._counts

    @property
    def constant_concepts(self) -> list[str]:
        """Names of concepts that are all-zero or all-one over the samples (they are kept)."""
        counts = self.counts
        n = self.n_samples
        return [self.names[j] for j in np.flatnonzero((counts == 0) | (counts == n))]

    @property
    def unlabelled_samples(self) -> np.ndarray:
        """Positions of samples that have no concept at all."""
        per_sample = np.asarray(self.matrix.sum(axis=1)).ravel()
        return np.flatnonzero(per_sample == 0)

    @property
    def coverage(self) -> float:
        """Fraction of samples with at least one concept (``nan`` for no samples)."""
        if self.n_samples == 0:
            return float("nan")
        return 1.0 - len(self.unlabelled_samples) / self.n_samples

    def depths(self) -> dict[str, int] | None:
        """Depth of each concept in the hierarchy, or ``None`` without a hierarchy.

        A concept without parents in the set has depth 0; otherwise its depth is one more than
        the smallest depth of its parents (the shortest path up to a root). Cycles raise.
        """
        if self.parents is None:
            return None
        depth: dict[str, int] = {}
        visiting: set[str] = set()

        def visit(name: str) -> int:
            if name in depth:
                return depth[name]
            if name in visiting:
                raise bad("parents", "a hierarchy without cycles", f"a cycle through {name!r}",
                          raw=True)
            visiting.add(name)
            ps = self.parents.get(name, [])  # type: ignore[union-attr]
            d = 0 if not ps else 1 + min(visit(p) for p in ps)
            visiting.discard(name)
            depth[name] = d
            return d

        for name in self.names:
            visit(name)
        return depth

    # -- summary -----------------------------------------------------------------------------
    def summary(self) -> list[dict[str, Any]]:
        """Per-concept statistics, one dict per concept in column order.

        Keys: ``name``, ``id``, ``description``, ``count`` (positive samples), ``fraction``
        (count / n_samples), ``depth`` (see :meth:`depths`; ``None`` without a hierarchy),
        ``n_parents`` and ``constant`` (all-zero or all-one). It returns plain dicts so that it
        needs no pandas; :meth:`summary_frame` gives the same as a pandas DataFrame. Set-level
        numbers are :attr:`coverage`, :attr:`unlabelled_samples` and :attr:`skipped`.
        """
        depths = self.depths()
        counts = self.counts
        n = self.n_samples
        rows = []
        for j, name in enumerate(self.names):
            c = int(counts[j])
            rows.append(
                {
                    "name": name,
                    "id": None if self.ids is None else self.ids[j],
                    "description": None if self.descriptions is None else self.descriptions[j],
                    "count": c,
                    "fraction": c / n if n else float("nan"),
                    "depth": None if depths is None else depths[name],
                    "n_parents": None if self.parents is None else len(self.parents.get(name, [])),
                    "constant": c == 0 or c == n,
                }
            )
        return rows

    def summary_frame(self):
        """:meth:`summary` as a ``pandas.DataFrame`` (needs pandas)."""
        pd = _require_pandas("ConceptSet.summary_frame")
        return pd.DataFrame(self.summary())

    # -- selection and combination -------------------------------------------------------------
    def sample_positions(self, sample_ids: Iterable[Hashable]) -> np.ndarray:
        """Row positions of the given sample ids (raises ``KeyError`` for unknown ids)."""
        if self.sample_ids is None:
            raise bad("sample_ids", "a concept set with sample ids", "one without (select by "
                      "position)", raw=True)
        lookup = {s: i for i, s in enumerate(self.sample_ids)}
        out = []
        for s in sample_ids:
            s = _normalize_sample_id(s)
            if s not in lookup:
                raise KeyError(f"sample id {s!r} is not in this concept set")
            out.append(lookup[s])
        return np.asarray(out, dtype=np.int64)

    def _sample_selection(self, samples: Any) -> np.ndarray:
        """Positions of ``samples``: positions or a mask, or (with sample ids) ids that are
        not ints, such as ``("doc", 3)`` or ``["doc", 3]``."""
        if isinstance(samples, (str, bytes)):
            samples = [samples]
        if not isinstance(samples, np.ndarray) and isinstance(samples, Iterable):
            samples = list(samples)
            if any(isinstance(v, (str, bytes, list, tuple)) for v in samples):
                if self.sample_ids is None:
                    raise bad("samples", "positions or a boolean mask (this set has no "
                              "sample ids)", f"ids such as {samples[0]!r}", raw=True)
                pos = self.sample_positions(samples)
                dups = [int(k) for k, v in Counter(pos.tolist()).items() if v > 1]
                if dups:
                    raise bad("samples", "each sample at most once",
                              f"{self.sample_ids[dups[0]]!r} more than once", raw=True)
                return pos
        return _positions(samples, self.n_samples, "samples", None)

    def subset(self, concepts: Any = None, samples: Any = None) -> ConceptSet:
        """A new set with some concepts and/or samples, in the order given.

        Parameters
        ----------
        concepts : sequence of str or int, or bool mask, optional
            Concept names or positions to keep (default: all).
        samples : sequence of int, bool mask or sequence of sample ids, optional
            Sample positions to keep (default: all), or, for a set with sample ids, the ids
            of the samples to keep when they are not ints: str, tuples such as
            ``("doc", 3)``, or lists (as read back from JSON, matched as tuples). Int ids
            are read as positions: use :meth:`sample_positions` for those.

        Notes
        -----
        The hierarchy is restricted to the kept concepts; a kept concept whose parent was dropped
        is linked to that parent's nearest kept ancestors, so depths stay meaningful.
        Concepts that become constant on the kept samples are warned about.
        """
        cpos = (
            np.arange(self.n_concepts)
            if concepts is None
            else _positions(concepts, self.n_concepts, "concepts", self._index)
        )
        spos = (
            np.arange(self.n_samples)
            if samples is None
            else self._sample_selection(samples)
        )
        m = self.matrix[spos][:, cpos] if self.is_sparse else self.matrix[np.ix_(spos, cpos)]
        names = [self.names[j] for j in cpos]
        parents = None
        if self.parents is not None:
            keep = set(names)
            parents = {name: nearest_kept(self.parents.get(name, []),
                                          lambda p: self.parents.get(p, []), keep)
                       for name in names}
        return ConceptSet(
            m,
            names,
            ids=None if self.ids is None else [self.ids[j] for j in cpos],
            descriptions=None
            if self.descriptions is None
            else [self.descriptions[j] for j in cpos],
            sample_ids=None if self.sample_ids is None else [self.sample_ids[i] for i in spos],
            parents=parents,
            skipped=self.skipped,
            source=self.source,
            sense_choices=self.sense_choices,
            row_kind=self.row_kind,
        )

    def with_prefix(self, prefix: str) -> ConceptSet:
        """A copy whose concept names (and hierarchy) are prefixed, e.g. ``'pos:'``."""
        if not isinstance(prefix, str):
            raise bad("prefix", "a str", type(prefix).__name__, raw=True)
        ren = {n: prefix + n for n in self.names}
        return ConceptSet(
            self.matrix,
            [ren[n] for n in self.names],
            ids=self.ids,
            descriptions=self.descriptions,
            sample_ids=self.sample_ids,
            parents=None
            if self.parents is None
            else {ren[k]: [ren[p] for p in v] for k, v in self.parents.items()},
            skipped=self.skipped,
            source=self.source,
            warn_constant=False,
            row_kind=self.row_kind,
        )

    def union(self, other: ConceptSet) -> ConceptSet:
        """The concepts of both sets side by side, over the same samples.

        Both sets must have the same number of samples and, where both have sample ids, the same
        ids in the same order. Concept names must not overlap (rename one with
        :meth:`with_prefix`). The result is sparse if either input is.
        """
        self._check_union(other)
        if self.is_sparse or other.is_sparse:
            m = sp.hstack([sp.csr_array(self.matrix), sp.csr_array(other.matrix)], format="csr")
        else:
            m = np.hstack([self.matrix, other.matrix])
        parents = None
        if self.parents is not None or other.parents is not None:
            parents = {**(self.parents or {}), **(other.parents or {})}
        sources = [s for s in (self.source, other.source) if s]
        choices = None
        if self.sense_choices is not None or other.sense_choices is not None:
            choices = (self.sense_choices or []) + (other.sense_choices or [])
        return ConceptSet(
            m,
            self.names + other.names,
            ids=_pad(self.ids, other.ids, self.n_concepts, other.n_concepts),
            descriptions=_pad(
                self.descriptions, other.descriptions, self.n_concepts, other.n_concepts
            ),
            sample_ids=self.sample_ids if self.sample_ids is not None else other.sample_ids,
            parents=parents,
            skipped=self.skipped + other.skipped,
            source=" + ".join(sources) or None,
            sense_choices=choices,
            row_kind=self.row_kind if self.row_kind is not None else other.row_kind,
        )

    def _check_union(self, other: Any) -> None:
        if not isinstance(other, ConceptSet):
            raise bad("other", "a ConceptSet", type(other).__name__, raw=True)
        if other.n_samples != self.n_samples:
            raise bad("other", f"the same samples ({self.n_samples})", f"{other.n_samples}",
                      raw=True)
        if self.sample_ids is not None and other.sample_ids is not None:
            if self.sample_ids != other.sample_ids:
                diff = _first_difference(self.sample_ids, other.sample_ids)
                raise bad("other", "the same sample ids in the same order",
                          f"a first difference at row {diff}: {self.sample_ids[diff]!r} vs "
                          f"{other.sample_ids[diff]!r}", raw=True)
        if None not in (self.row_kind, other.row_kind) and self.row_kind != other.row_kind:
            raise bad("other", f"rows of the same kind ({self.row_kind!r})",
                      f"rows of kind {other.row_kind!r}", raw=True)
        clash = sorted(set(self.names) & set(other.names))
        if clash:
            raise bad("other", "concept names that do not overlap (rename with with_prefix())",
                      f"{clash[:10]} in both", raw=True)

    # -- persistence -----------------------------------------------------------------------------
    def _metadata(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "n_samples": self.n_samples,
            "names": self.names,
            "ids": self.ids,
            "descriptions": self.descriptions,
            "sample_ids": None
            if self.sample_ids is None
            else [json_sample_id(s) for s in self.sample_ids],
            "parents": self.parents,
            "skipped": self.skipped,
            "source": self.source,
            "sparse": self.is_sparse,
        } | ({} if self.sense_choices is None else {"sense_choices": self.sense_choices}) | (
            {} if self.row_kind is None else {"row_kind": self.row_kind})

    def save(self, path: str | os.PathLike) -> Path:
        """Write the set to ``path`` and return the path written.

        ``*.parquet`` writes one Parquet file (needs pyarrow): a ``sample_id`` column (when the
        set has sample ids) and one boolean column per concept, with everything else as JSON in
        the schema metadata. Any other path writes ``<path>.npz`` (the matrix, dense or CSR) and a
        JSON sidecar ``<path>.json`` (names, ids, descriptions, sample ids, hierarchy, skips);
        a ``.npz`` or ``.json`` suffix on ``path`` is replaced. Sample ids must be JSON values
        (str, int, float, bool, None) or tuples of them.
        """
        if not isinstance(path, (str, os.PathLike)):
            raise bad("path", "a str or path", type(path).__name__, raw=True)
        return write_concept_set(Path(path), self.matrix, self._metadata())

    @classmethod
    def load(cls, path: str | os.PathLike) -> ConceptSet:
        """Read a set written by :meth:`save` (``*.parquet``, or the npz/JSON pair)."""
        if not isinstance(path, (str, os.PathLike)):
            raise bad("path", "a str or path", type(path).__name__, raw=True)
        matrix, meta = read_concept_set(Path(path))
        sids = meta.get("sample_ids")
        return cls(
            matrix,
            meta["names"],
            ids=meta.get("ids"),
            descriptions=meta.get("descriptions"),
            sample_ids=None if sids is None else [from_json_sample_id(s) for s in sids],
            parents=meta.get("parents"),
            skipped=meta.get("skipped"),
            source=meta.get("source"),
            warn_constant=False,
            sense_choices=meta.get("sense_choices"),
            row_kind=meta.get("row_kind"),
        )

    # -- builders' helper ----------------------------------------------------------------------
    @classmethod
    def from_labels(
        cls,
        labels: Sequence[Iterable[str]],
        *,
        names: Sequence[str] | None = None,
        sample_ids: Sequence[Hashable] | None = None,
        sparse: bool | None = None,
        **kwargs: Any,
    ) -> ConceptSet:
        """Build a set from one iterable of concept names per sample.

        Parameters
        ----------
        labels : sequence of iterables of str
            ``labels[i]`` are the names of the concepts sample ``i`` shows.
        names : sequence of str, optional
            Column order; default: order of first appearance. Labels not in ``names`` raise.
        sparse : bool, optional
            Store as sparse CSR; default: sparse when under 10% of entries are set and the
            matrix has over 100,000 entries.
        **kwargs
            Passed to :class:`ConceptSet` (ids, descriptions, parents, skipped, source).
        """
        if names is None:
            order: dict[str, int] = {}
            for row in labels:
                for c in row:
                    order.setdefault(c, len(order))
            names = list(order)
        matrix = _labels_matrix(labels, names, sparse)
        return cls(matrix, list(names), sample_ids=sample_ids, **kwargs)


def nearest_kept(start, parents_of, keep) -> list[str]:
    """The nearest ancestors in ``keep``, breadth first from the parents ``start``: a parent
    that is not kept is replaced by its own parents (``parents_of(name)``)."""
    out: list[str] = []
    queue = deque(start)
    seen: set[str] = set()
    while queue:
        p = queue.popleft()
        if p in seen:
            continue
        seen.add(p)
        if p in keep:
            if p not in out:
                out.append(p)
        else:
            queue.extend(parents_of(p))
    return out
