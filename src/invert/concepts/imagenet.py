"""ImageNet + WordNet concept sets, as the INVERT paper built them.

Each sample of class ``c`` is labelled with ``c`` and every hypernym of ``c`` that is a concept.
The concepts are the classes plus the hypernyms that cover at least two classes (see
:func:`invert.concepts.wordnet.hypernym_hierarchy` for the exact rule). For the 1,000 ImageNet
classes this gives the paper's 1,473 concepts, names, definitions and order, from package data
(no WordNet needed).
"""

from __future__ import annotations

import gzip
import json
import logging
import os
from collections.abc import Hashable, Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from .._validate import bad
from .core import ConceptSet
from .util import check_errors, list_files, normalize_extensions, read_table, report_skipped
from .wordnet import Hierarchy, Synset, WordNet, hypernym_hierarchy, parse_wnid

__all__ = [
    "imagenet_classes",
    "imagenet_hierarchy",
    "from_wnids",
    "from_imagenet_folder",
    "from_wnid_table",
]

logger = logging.getLogger(__name__)

_DATA_FILE = "imagenet_hierarchy.json.gz"


@lru_cache(maxsize=1)
def _package_data() -> tuple[tuple[str, ...], dict[str, Synset]]:
    ref = resources.files("invert") / "data" / _DATA_FILE
    with ref.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as fh:
        payload = json.load(fh)
    synsets = {
        w: Synset(
            wnid=w,
            name=v[0],
            lemmas=(v[0].rsplit(".", 2)[0],),
            definition=v[1],
            hypernyms=tuple(v[2]),
        )
        for w, v in payload["synsets"].items()
    }
    return tuple(payload["classes"]), synsets


def imagenet_classes() -> list[str]:
    """The 1,000 ImageNet (ILSVRC2012) class WNIDs in the standard class-index order."""
    return list(_package_data()[0])


def _lookup_for(leaves: Sequence[str], wordnet: WordNet | None) -> dict[str, Synset] | WordNet:
    if wordnet is not None:
        return wordnet
    _, synsets = _package_data()
    if all(w in synsets for w in leaves):
        return synsets
    try:
        return WordNet.default()
    except FileNotFoundError as exc:
        outside = [w for w in leaves if w not in synsets]
        raise FileNotFoundError(
            f"classes: {len(outside)} WNID(s) are outside the shipped ImageNet hierarchy "
            f"(e.g. {outside[:5]}), so WordNet 3.0 is needed. {exc}"
        ) from exc


def imagenet_hierarchy(
    classes: Sequence[str] | None = None,
    *,
    min_classes: int = 2,
    count: Literal["paper", "leaves"] = "paper",
    wordnet: WordNet | None = None,
) -> Hierarchy:
    """The concepts for a list of class synsets: the classes plus their shared hypernyms.

    Parameters
    ----------
    classes : sequence of str, optional
        Class WNIDs (WordNet 3.0 noun offsets such as ``'n01440764'``). Default: the 1,000
        ImageNet classes, giving the paper's 1,473 concepts in the paper's order.
    min_classes : int, default 2
        Keep hypernyms that cover at least this many classes.
    count : {"paper", "leaves"}, default "paper"
        ``"paper"`` reproduces the paper exactly (it keeps ``contestant.n.01``, which lies above
        one class along two paths); ``"leaves"`` counts distinct classes. See
        :func:`invert.concepts.wordnet.hypernym_hierarchy`.
    wordnet : WordNet, optional
        The database to use. Default: the shipped ImageNet hierarchy when it holds every class,
        else :meth:`WordNet.default` (Debian ``wordnet-base``); a clear error says how to install
        it when it is missing.
    """
    if wordnet is not None and not isinstance(wordnet, WordNet):
        raise bad("wordnet", "a WordNet or None", type(wordnet).__name__, raw=True)
    leaves = imagenet_classes() if classes is None else list(classes)
    if isinstance(classes, str):
        raise bad("classes", "a sequence of WNIDs", "a single str", raw=True)
    for w in leaves:
        parse_wnid(w)
    return hypernym_hierarchy(
        leaves, _lookup_for(leaves, wordnet), min_leaves=min_classes, count=count
    )


def _matrix_from_leaf_rows(leaf_rows: Sequence[int], hierarchy: Hierarchy) -> sp.csr_array:
    col = {w: j for j, w in enumerate(hierarchy.wnids)}
    leaf_cols = [
        np.asarray([col[a] for a in hierarchy.leaf_ancestors[w]], dtype=np.int64)
        for w in hierarchy.wnids[: hierarchy.n_leaves]
    ]
    indptr = [0]
    indices: list[np.ndarray] = []
    for r in leaf_rows:
        cols = np.sort(leaf_cols[r])
        indices.append(cols)
        indptr.append(indptr[-1] + len(cols))
    idx = np.concatenate(indices) if indices else np.zeros(0, dtype=np.int64)
    return sp.csr_array(
        (np.ones(len(idx), dtype=bool), idx, np.asarray(indptr, dtype=np.int64)),
        shape=(len(leaf_rows), len(hierarchy.wnids)),
    )


def from_wnids(
    labels: Sequence[str | int],
    *,
    classes: Sequence[str] | None = None,
    sample_ids: Sequence[Hashable] | None = None,
    min_classes: int = 2,
    count: Literal["paper", "leaves"] = "paper",
    wordnet: WordNet | None = None,
    errors: Literal["raise", "skip"] = "raise",
    dense: bool = False,
    _skipped: list[dict[str, Any]] | None = None,
    _source: str | None = None,
) -> ConceptSet:
    """A WordNet concept set from one class label per sample.

    Parameters
    ----------
    labels : sequence of str or int
        Per sample, its class WNID (``'n01440764'``) or its index into ``classes``.
    classes : sequence of str, optional
        The class WNIDs, which fix the concept columns. Default: the 1,000 ImageNet classes
        (columns = the paper's 1,473 concepts in the paper's order).
    sample_ids : sequence, optional
        Unique sample ids, kept on the set.
    min_classes, count, wordnet
        See :func:`imagenet_hierarchy`.
    errors : {"raise", "skip"}, default "raise"
        What to do with a sample whose label is missing, malformed or not one of ``classes``:
        raise ``ValueError``, or leave the sample out, record it in ``skipped`` and warn.
    dense : bool, default False
        Store the matrix dense instead of as a sparse CSR array.

    Returns
    -------
    ConceptSet
        Names are synset names (``'tench.n.01'``), ids WNIDs, descriptions WordNet definitions,
        ``parents`` the hypernym links between concepts.
    """
    check_errors(errors)
    if isinstance(labels, str) or not hasattr(labels, "__len__"):
        raise bad("labels", "a sequence of WNIDs or class indices", type(labels).__name__,
                  raw=True)
    labels = list(labels.tolist() if isinstance(labels, np.ndarray) else labels)
    if sample_ids is not None:
        sample_ids = list(sample_ids)
        if len(sample_ids) != len(labels):
            raise bad("sample_ids", f"{len(labels)} ids (one per label)", f"{len(sample_ids)}",
                      raw=True)
    hierarchy = imagenet_hierarchy(classes, min_classes=min_classes, count=count, wordnet=wordnet)
    leaves = hierarchy.wnids[: hierarchy.n_leaves]
    pos = {w: i for i, w in enumerate(leaves)}
    rows: list[int] = []
    keep: list[int] = []
    skipped = list(_skipped or [])
    problems: list[tuple[int, str]] = []
    for i, lab in enumerate(labels):
        row, reason = _class_row(lab, pos, len(leaves))
        if reason is None:
            rows.append(row)
            keep.append(i)
        else:
            problems.append((i, reason))
    if problems:
        if errors == "raise":
            show = "; ".join(
                f"sample {sample_ids[i] if sample_ids is not None else i}: {r}"
                for i, r in problems[:5]
            )
            raise bad("labels", "a usable class label for every sample (or pass errors='skip' "
                                "to leave the others out, recorded in .skipped)",
                      f"{len(problems)} sample(s) without one ({show})", raw=True)
        for i, r in problems:
            skipped.append({"item": sample_ids[i] if sample_ids is not None else i, "reason": r})
    report_skipped(skipped, "from_wnids")
    matrix = _matrix_from_leaf_rows(rows, hierarchy)
    return ConceptSet(
        matrix.toarray() if dense else matrix,
        hierarchy.names,
        ids=hierarchy.wnids,
        descriptions=hierarchy.definitions,
        sample_ids=None if sample_ids is None else [sample_ids[i] for i in keep],
        parents=hierarchy.parents,
        skipped=skipped,
        source=_source or "WordNet hypernyms of class labels",
    )


def _class_row(lab: Any, pos: dict[str, int], n_leaves: int) -> tuple[int, str | None]:
    """The class row of one label (a WNID or a class index), or why it has none."""
    if isinstance(lab, np.generic):
        lab = lab.item()
    if isinstance(lab, bool) or lab is None or (isinstance(lab, float) and np.isnan(lab)):
        return -1, "no label"
    if isinstance(lab, int):
        if 0 <= lab < n_leaves:
            return lab, None
        return -1, f"class index {lab} outside [0, {n_leaves})"
    if not isinstance(lab, str):
        return -1, f"label of type {type(lab).__name__}: {lab!r}"
    w = lab.strip()
    if not w:
        return -1, "no label"
    if w in pos:
        return pos[w], None
    try:
        parse_wnid(w)
    except ValueError:
        return -1, f"label {w!r} is not a WNID like 'n01440764'"
    return -1, f"WNID {w!r} is not one of the {n_leaves} classes"


def from_imagenet_folder(
    root: str | os.PathLike,
    *,
    classes: Sequence[str] | None = None,
    extensions: Sequence[str] | None = (".jpeg", ".jpg", ".png"),
    errors: Literal["raise", "skip"] = "raise",
    **kwargs: Any,
) -> ConceptSet:
    """A WordNet concept set from an ImageNet-style folder: ``root/<WNID>/<file>``.

    Samples are the files in the WNID folders (recursively), sorted by path; their sample ids are
    the paths relative to ``root`` (POSIX style). Files whose extension is not in ``extensions``
    (case-insensitive; ``None`` takes every file) and hidden files are skipped and recorded.
    Files directly in ``root`` (no class) and folders that are not class WNIDs raise with
    ``errors="raise"`` or are skipped and recorded with ``errors="skip"``.
    Other keyword arguments go to :func:`from_wnids`.
    """
    check_errors(errors)
    root = Path(root)
    if not root.is_dir():
        raise bad("root", "an existing folder", str(root))
    exts = normalize_extensions(extensions)
    files, skipped = list_files(root, exts)
    labels: list[str] = []
    sids: list[str] = []
    for rel in files:
        parts = rel.split("/")
        labels.append(parts[0] if len(parts) > 1 else "")
        sids.append(rel)
    if not files:
        raise bad("root", f"a folder with sample files (extensions {exts})",
                  f"no sample files found under {str(root)!r}", raw=True)
    return from_wnids(
        labels,
        classes=classes,
        sample_ids=sids,
        errors=errors,
        _skipped=skipped,
        _source=f"ImageNet-style folder {root}",
        **kwargs,
    )


def from_wnid_table(
    table: Any,
    *,
    sample_column: str = "sample",
    wnid_column: str = "wnid",
    classes: Sequence[str] | None = None,
    errors: Literal["raise", "skip"] = "raise",
    **kwargs: Any,
) -> ConceptSet:
    """A WordNet concept set from a table of (sample, WNID) rows.

    Parameters
    ----------
    table : path or pandas.DataFrame
        A CSV/TSV/Parquet file or a DataFrame (needs pandas; Parquet also pyarrow).
    sample_column, wnid_column : str
        Column names. Sample ids must be unique (one class per sample, as in ImageNet).
    errors : {"raise", "skip"}
        For rows with a missing or unknown WNID; duplicate sample ids always raise.
    **kwargs
        Passed to :func:`from_wnids`.
    """
    df = read_table(table, "table")
    for param, col in (("sample_column", sample_column), ("wnid_column", wnid_column)):
        if col not in df.columns:
            raise bad(param, f"a column of the table {list(df.columns)}", col)
    if len(set(df.columns)) != len(df.columns):
        raise bad("table", "unique column names", f"duplicate column names {list(df.columns)}",
                  raw=True)
    samples = df[sample_column].tolist()
    labels = [
        None if (v is None or (isinstance(v, float) and np.isnan(v))) else v
        for v in df[wnid_column].tolist()
    ]
    return from_wnids(
        labels,
        classes=classes,
        sample_ids=samples,
        errors=errors,
        _source=f"(sample, WNID) table {table if isinstance(table, str | Path) else ''}".strip(),
        **kwargs,
    )
