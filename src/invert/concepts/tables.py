"""Concept sets from tables: CSV or Parquet, wide (0/1 columns) or long (sample, concept)."""

from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .._validate import bad, check_choice
from .core import ConceptSet
from .util import check_errors, read_table, report_skipped

__all__ = ["from_table", "SKIP_HINT"]

#: The hint in the message of a table with bad rows (the command line drops it).
SKIP_HINT = "(or pass errors='skip' to leave bad rows out, recorded in .skipped)"

logger = logging.getLogger(__name__)

_TRUE = {"1", "1.0", "true", "t", "yes", "y"}
_FALSE = {"0", "0.0", "false", "f", "no", "n"}


def _is_missing(v: Any) -> bool:
    return (
        v is None
        or (isinstance(v, float) and np.isnan(v))
        or (isinstance(v, str) and not v.strip())
    )


def _to01(v: Any) -> bool | None:
    """0/1 value -> bool; None if not a 0/1 value."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, bool):
        return v
    if isinstance(v, int | float):
        return bool(v) if v in (0, 1) else None
    if isinstance(v, str):
        s = v.strip().lower()
        if s in _TRUE:
            return True
        if s in _FALSE:
            return False
    return None


def from_table(
    table: Any,
    *,
    layout: Literal["auto", "wide", "long"] = "auto",
    sample_column: str | None = "sample",
    concept_column: str = "concept",
    concept_columns: Sequence[str] | None = None,
    samples: Sequence[Hashable] | None = None,
    errors: Literal["raise", "skip"] = "raise",
    sparse: bool | None = None,
) -> ConceptSet:
    """A concept set from a table of labels.

    Parameters
    ----------
    table : path or pandas.DataFrame
        A ``.csv``/``.tsv``/``.parquet`` file or a DataFrame (needs pandas; Parquet needs
        pyarrow). CSV cells are read as text, so ids such as ``'007'`` keep their form.
    layout : {"auto", "wide", "long"}
        ``"wide"``: one row per sample, a sample id column and one 0/1 column per concept
        (0/1, true/false, yes/no, t/f, y/n; any case). ``"long"``: one row per (sample, concept)
        pair. ``"auto"``: long if the table has exactly the columns ``sample_column`` and
        ``concept_column``, else wide.
    sample_column : str or None, default "sample"
        The sample id column. In the wide layout ``None`` means no id column (ids = row number).
    concept_column : str, default "concept"
        Long layout: the concept name column.
    concept_columns : sequence of str, optional
        Wide layout: the concept columns to read (default: every column but the id column).
    samples : sequence, optional
        Long layout: every sample id, in the order wanted; samples listed here without any row
        are kept with no concept. Default: samples in order of first appearance.
    errors : {"raise", "skip"}, default "raise"
        For rows with a missing sample id, a missing or non-0/1 value (wide), or a sample not in
        ``samples`` (long): raise ``ValueError`` naming the row, or leave the row out, record it
        in ``.skipped`` and warn. Duplicate sample ids (wide), duplicate or missing columns always
        raise. In the long layout a row whose concept is empty lists a sample without concepts
        (kept, see ``unlabelled_samples``), and repeated (sample, concept) rows are recorded in
        ``.skipped`` as duplicates (they add nothing).
    sparse : bool, optional
        Store sparse; default: decided from the density (see :meth:`ConceptSet.from_labels`).
    """
    check_errors(errors)
    check_choice("layout", layout, ("auto", "wide", "long"))
    df = read_table(table, "table")
    cols = [str(c) for c in df.columns]
    if len(set(cols)) != len(cols):
        dups = sorted({c for c in cols if cols.count(c) > 1})
        raise bad("table", "unique column names", f"duplicate column names {dups}", raw=True)
    if layout == "auto":
        layout = "long" if set(cols) == {sample_column, concept_column} else "wide"
    src = f"table {table}" if isinstance(table, str | Path) else "table"
    if layout == "long":
        return _long(df, cols, sample_column, concept_column, samples, errors, sparse, src)
    return _wide(df, cols, sample_column, concept_columns, errors, sparse, src)


def _wide(df, cols, sample_column, concept_columns, errors, sparse, src) -> ConceptSet:
    if sample_column is not None and sample_column not in cols:
        raise bad("sample_column", f"a column of the table {cols} (or None to use row "
                  "numbers)", sample_column)
    if concept_columns is None:
        concept_columns = [c for c in cols if c != sample_column]
    else:
        if isinstance(concept_columns, str):
            raise bad("concept_columns", "a list of column names", "a str", raw=True)
        concept_columns = list(concept_columns)
        missing = [c for c in concept_columns if c not in cols]
        if missing:
            raise bad("concept_columns", f"columns of the table {cols}",
                      f"{missing}, not in the table", raw=True)
    if not concept_columns:
        raise bad("table", "a sample column and 0/1 concept columns", "no concept columns",
                  raw=True)
    n = len(df)
    ids = list(range(n)) if sample_column is None else df[sample_column].tolist()
    values = df[concept_columns].to_numpy(dtype=object)
    skipped: list[dict[str, Any]] = []
    keep = np.ones(n, dtype=bool)
    out = np.zeros((n, len(concept_columns)), dtype=bool)
    problems: list[str] = []
    for i in range(n):
        if _is_missing(ids[i]):
            problems.append(f"row {i}: missing sample id")
            keep[i] = False
            continue
        for j, c in enumerate(concept_columns):
            v = values[i, j]
            b = None if _is_missing(v) else _to01(v)
            if b is None:
                what = "missing value" if _is_missing(v) else f"value {v!r} is not 0/1"
                problems.append(f"row {i} (sample {ids[i]!r}), column {c!r}: {what}")
                keep[i] = False
                break
            out[i, j] = b
    if problems:
        if errors == "raise":
            raise bad("table", "a sample id and 0/1 values in every row " + SKIP_HINT,
                      f"{len(problems)} bad row(s): " + "; ".join(problems[:5])
                      + ("; ..." if len(problems) > 5 else ""), raw=True)
        skipped = [{"item": p.split(":")[0], "reason": p.split(": ", 1)[1]} for p in problems]
        report_skipped(skipped, "from_table")
    kept_ids = [ids[i] for i in np.flatnonzero(keep)]
    cs = ConceptSet.from_labels(
        [[concept_columns[j] for j in np.flatnonzero(out[i])] for i in np.flatnonzero(keep)],
        names=concept_columns,
        sample_ids=kept_ids if sample_column is not None or not keep.all() else None,
        sparse=sparse,
        skipped=skipped,
        source=f"wide {src}",
    )
    _warn_unlabelled(cs)
    return cs


def _long(df, cols, sample_column, concept_column, samples, errors, sparse, src) -> ConceptSet:
    for param, col in (("sample_column", sample_column), ("concept_column", concept_column)):
        if col is None or col not in cols:
            raise bad(param, f"a column of the table {cols}", col)
    s_vals = df[sample_column].tolist()
    c_vals = df[concept_column].tolist()
    order: dict[Hashable, int] = {}
    fixed = samples is not None
    if fixed:
        for s in samples:
            if s in order:
                raise bad("samples", "unique ids", f"{s!r} twice", raw=True)
            order[s] = len(order)
    labels: list[set[str]] = [set() for _ in order]
    problems: list[tuple[int, str]] = []
    skipped: list[dict[str, Any]] = []
    for i, (s, c) in enumerate(zip(s_vals, c_vals, strict=True)):
        if _is_missing(s):
            problems.append((i, "missing sample id"))
            continue
        if s not in order:
            if fixed:
                problems.append((i, f"sample {s!r} is not in samples"))
                continue
            order[s] = len(order)
            labels.append(set())
        if _is_missing(c):
            continue  # lists a sample without concepts
        c = str(c)
        if c in labels[order[s]]:
            skipped.append({"item": f"row {i}", "reason": f"duplicate row ({s!r}, {c!r})"})
        labels[order[s]].add(c)
    if problems:
        if errors == "raise":
            raise bad("table", "a sample id (one of samples, when given) in every row "
                      + SKIP_HINT,
                      f"{len(problems)} bad row(s): "
                      + "; ".join(f"row {i}: {r}" for i, r in problems[:5]), raw=True)
        skipped += [{"item": f"row {i}", "reason": r} for i, r in problems]
    report_skipped(skipped, "from_table")
    names: dict[str, None] = {}
    for c in c_vals:
        if not _is_missing(c):
            names.setdefault(str(c), None)
    cs = ConceptSet.from_labels(
        [sorted(lab) for lab in labels],
        names=list(names),
        sample_ids=list(order),
        sparse=sparse,
        skipped=skipped,
        source=f"long {src}",
    )
    _warn_unlabelled(cs)
    return cs


def _warn_unlabelled(cs: ConceptSet) -> None:
    empty = cs.unlabelled_samples
    if len(empty):
        import warnings

        ids = [cs.sample_ids[i] for i in empty[:5]] if cs.sample_ids else empty[:5].tolist()
        msg = f"{len(empty)} sample(s) have no concept (kept; see .unlabelled_samples), e.g. {ids}"
        logger.info(msg)
        warnings.warn(msg, UserWarning, stacklevel=3)
