"""Helpers shared by the concept-set builders (not public API)."""

from __future__ import annotations

import csv
import logging
import os
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._validate import bad, check_choice
from .core import SkippedItemsWarning, _require_pandas

logger = logging.getLogger("invert.concepts")


def check_errors(errors: Any) -> None:
    """``errors`` is ``"raise"`` or ``"skip"``."""
    check_choice("errors", errors, ("raise", "skip"))


def report_skipped(skipped: Sequence[dict[str, Any]], where: str) -> None:
    """Warn once (and log) about the items a builder skipped, grouped by reason."""
    if not skipped:
        return
    reasons = Counter(str(r.get("reason", "?")).split(":")[0] for r in skipped)
    top = ", ".join(f"{n} x {r}" for r, n in reasons.most_common(5))
    eg = ", ".join(str(r.get("item", "?")) for r in skipped[:3])
    msg = (f"{where}: skipped {len(skipped)} item(s) ({top}), e.g. {eg}; see the set's "
           ".skipped for each")
    logger.info(msg)
    warnings.warn(msg, SkippedItemsWarning, stacklevel=3)


def normalize_extensions(extensions: Sequence[str] | str | None) -> tuple[str, ...] | None:
    """Lower-case suffixes with their dot (``"PNG"`` -> ``".png"``), or None for all files."""
    if extensions is None:
        return None
    if isinstance(extensions, str):
        extensions = [extensions]
    out = []
    for e in extensions:
        if not isinstance(e, str) or not e.strip("."):
            raise bad("extensions", "suffixes like '.png'", e)
        e = e.lower()
        out.append(e if e.startswith(".") else "." + e)
    return tuple(out)


def list_files(root: Path, extensions: tuple[str, ...] | None) -> tuple[list[str], list[dict]]:
    """Files under ``root`` (relative POSIX paths, sorted) and records of those skipped."""
    files: list[str] = []
    skipped: list[dict[str, Any]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        hidden = [d for d in dirnames if d.startswith(".")]
        for d in hidden:
            rel = Path(dirpath, d).relative_to(root).as_posix()
            skipped.append({"item": rel + "/", "reason": "hidden folder"})
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for f in sorted(filenames):
            rel = Path(dirpath, f).relative_to(root).as_posix()
            if f.startswith("."):
                skipped.append({"item": rel, "reason": "hidden file"})
            elif extensions is not None and Path(f).suffix.lower() not in extensions:
                suffix = Path(f).suffix.lower() or "(none)"
                skipped.append(
                    {"item": rel, "reason": f"extension {suffix} not in {list(extensions)}"}
                )
            else:
                files.append(rel)
    files.sort()
    return files, skipped


def read_header(path: Path, sep: str) -> list[str]:
    """The column names of a CSV/TSV file as written (quoted cells such as ``"dog, big"``
    are one name)."""
    with open(path, encoding="utf-8", newline="") as fh:
        return next(csv.reader(fh, delimiter=sep), [])


def check_header(header: Sequence[str], param: str, path: Path) -> None:
    """Every column has a name, and no name twice (pandas would invent ``Unnamed: 1`` and
    ``dog.1``)."""
    empty = [i + 1 for i, h in enumerate(header) if not h.strip()]
    if empty:
        raise bad(param, "a name in every header cell",
                  f"an empty column name in column(s) {empty[:10]} of {str(path)!r}", raw=True)
    counts = Counter(h.strip() for h in header)
    dups = [h for h, n in counts.items() if n > 1]
    if dups:
        raise bad(param, "unique column names", f"duplicate column names {dups} in "
                  f"{str(path)!r}", raw=True)


def read_table(table: Any, param: str):
    """A pandas DataFrame from a DataFrame or a CSV/TSV/Parquet path."""
    pd = _require_pandas("reading tables")
    if isinstance(table, pd.DataFrame):
        return table
    if not isinstance(table, (str, os.PathLike)):
        raise bad(param, "a path to a .csv/.tsv/.parquet file or a pandas DataFrame",
                  type(table).__name__, raw=True)
    path = Path(table)
    if not path.is_file():
        raise FileNotFoundError(f"{param}: file {str(path)!r} not found")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        try:
            import pyarrow  # noqa: F401
        except ImportError as exc:  # pragma: no cover
            raise ImportError("reading Parquet needs pyarrow: pip install pyarrow") from exc
        return pd.read_parquet(path)
    if suffix in (".csv", ".tsv", ".txt"):
        sep = "\t" if suffix == ".tsv" else ","
        # read ids as text so 'n01440764' or '007' keep their form; 0/1 columns are converted later
        check_header(read_header(path, sep), param, path)
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_values=[""])
    raise bad(param, "a .csv, .tsv or .parquet file", str(path))
