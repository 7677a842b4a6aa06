"""The files of a concept set (format version 1), read and written without the class.

- ``<base>.npz`` + ``<base>.json``: the matrix (bit-packed dense, or CSR ``indptr`` and
  ``indices``) and its ``shape``; the JSON sidecar holds everything else.
- ``*.parquet``: a ``sample_id`` column of JSON-encoded ids (when the set has sample ids) and one
  boolean column ``c<j>`` per concept, with the JSON metadata under the schema key
  ``invert.concepts``.

:meth:`invert.concepts.ConceptSet.save` and :meth:`~invert.concepts.ConceptSet.load` use
:func:`write_concept_set` and :func:`read_concept_set`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from .._store import replacing
from .._validate import bad

__all__ = [
    "FORMAT_VERSION", "METADATA_KEY", "read_concept_set", "write_concept_set",
    "json_sample_id", "from_json_sample_id",
]

FORMAT_VERSION = 1
FORMAT_NAME = "invert.ConceptSet"
#: The Parquet schema-metadata key of a saved concept set.
METADATA_KEY = b"invert.concepts"
SAMPLE_ID_COLUMN = "sample_id"


def json_sample_id(v: Any) -> Any:
    """A sample id as a JSON value (tuples become lists)."""
    if isinstance(v, tuple):
        return [json_sample_id(x) for x in v]
    return v


def from_json_sample_id(v: Any) -> Any:
    """The sample id of a JSON value (lists become tuples)."""
    if isinstance(v, list):
        return tuple(from_json_sample_id(x) for x in v)
    return v


def _pair(path: Path) -> tuple[Path, Path]:
    """The ``.npz`` and ``.json`` files of a base path (a ``.npz``/``.json`` suffix replaced)."""
    base = path.with_suffix("") if path.suffix in (".npz", ".json") else path
    return base.with_name(base.name + ".npz"), base.with_name(base.name + ".json")


def write_concept_set(path: Path, matrix: Any, meta: dict[str, Any]) -> Path:
    """Write ``matrix`` (bool, dense or CSR) and ``meta`` (JSON values, with the sample ids
    already as :func:`json_sample_id`) to ``path``; return the path written (the ``.npz``
    of a pair)."""
    try:
        meta_text = json.dumps(meta, ensure_ascii=False)
    except TypeError as exc:
        raise bad("sample_ids", "str/int/float/bool/None ids or tuples of them (to save)",
                  f"{exc}", raw=True) from exc
    if path.suffix == ".parquet":
        return _write_parquet(path, matrix, meta, meta_text)
    npz, side = _pair(path)
    npz.parent.mkdir(parents=True, exist_ok=True)
    if sp.issparse(matrix):
        m = sp.csr_array(matrix)
        arrays = {"indptr": m.indptr, "indices": m.indices,
                  "shape": np.asarray(m.shape, dtype=np.int64)}
    else:
        arrays = {"matrix": np.packbits(matrix, axis=None),
                  "shape": np.asarray(matrix.shape, dtype=np.int64)}
    with replacing(npz) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    with replacing(side) as tmp:
        tmp.write_text(meta_text, encoding="utf-8")
    return npz


def _write_parquet(path: Path, matrix: Any, meta: dict[str, Any], meta_text: str) -> Path:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("saving as Parquet needs pyarrow: pip install pyarrow") from exc
    dense = np.asarray(matrix.toarray(), dtype=bool) if sp.issparse(matrix) else matrix
    arrays = []
    names = []
    if meta["sample_ids"] is not None:
        arrays.append(pa.array([json.dumps(s) for s in meta["sample_ids"]]))
        names.append(SAMPLE_ID_COLUMN)
    arrays += [pa.array(dense[:, j]) for j in range(dense.shape[1])]
    # columns are positional; concept names live in the metadata (they may repeat
    # "sample_id" or be otherwise awkward as column names)
    names += [f"c{j}" for j in range(dense.shape[1])]
    table = pa.Table.from_arrays(arrays, names=names)
    table = table.replace_schema_metadata({METADATA_KEY.decode(): meta_text})
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:
        pq.write_table(table, tmp)
    return path


def read_concept_set(path: Path) -> tuple[Any, dict[str, Any]]:
    """The matrix (bool, dense or CSR array) and the metadata of a saved set, its format
    checked; the sample ids are still JSON values (see :func:`from_json_sample_id`)."""
    matrix, meta = _read_parquet(path) if path.suffix == ".parquet" else _read_pair(path)
    if meta.get("format") != FORMAT_NAME:
        raise bad("path", "a file written by ConceptSet.save",
                  f"{path} (not an invert concept set)", raw=True)
    if int(meta.get("version", 0)) > FORMAT_VERSION:
        raise bad("path", f"a concept set of format version {FORMAT_VERSION} or lower "
                          "(upgrade invert to read newer ones)",
                  f"{path} with format version {meta['version']}", raw=True)
    return matrix, meta


def _read_parquet(path: Path) -> tuple[Any, dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover
        raise ImportError("loading Parquet needs pyarrow: pip install pyarrow") from exc
    table = pq.read_table(path)
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise bad("path", "a concept set written by ConceptSet.save (to read a plain table use "
                          "invert.concepts.from_table)",
                  f"{path}, which has no invert concept-set metadata", raw=True)
    meta = _json(raw, path)
    n_c = len(meta["names"])
    matrix: Any = np.zeros((table.num_rows, n_c), dtype=bool)
    for j in range(n_c):
        matrix[:, j] = table.column(f"c{j}").to_numpy(zero_copy_only=False)
    if meta.get("sparse"):
        matrix = sp.csr_array(matrix)
    if meta.get("sample_ids") is not None and SAMPLE_ID_COLUMN in table.column_names:
        col = table.column(SAMPLE_ID_COLUMN).to_pylist()
        meta["sample_ids"] = [json.loads(s) for s in col]
    return matrix, meta


def _read_pair(path: Path) -> tuple[Any, dict[str, Any]]:
    npz, side = _pair(path)
    for f in (npz, side):
        if not f.is_file():
            raise FileNotFoundError(f"path: {f} not found (a saved set is a .npz + .json pair)")
    meta = _json(side.read_text(encoding="utf-8"), side)
    matrix: Any
    with np.load(npz) as data:
        shape = tuple(int(x) for x in data["shape"])
        if "matrix" in data:
            bits = np.unpackbits(data["matrix"], count=shape[0] * shape[1])
            matrix = bits.reshape(shape).astype(bool)
        else:
            indptr, indices = data["indptr"], data["indices"]
            matrix = sp.csr_array(
                (np.ones(len(indices), dtype=bool), indices, indptr), shape=shape
            )
    return matrix, meta


def _json(text: str | bytes, path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise bad("path", "a concept set written by ConceptSet.save",
                  f"{path} with invalid JSON ({exc})", raw=True) from exc
    if not isinstance(meta, dict):
        raise bad("path", "a file written by ConceptSet.save",
                  f"{path} (not an invert concept set)", raw=True)
    return meta
