"""Reading the user's inputs: precomputed activations (``.npy``, ``.pt``, ``.parquet``,
``.csv``) and concepts (``folders``, ``imagenet``, a table, a saved concept set).

Values are kept as the file gives them (float64 stays float64, int64 stays int64; float16
and bfloat16 are widened to float32, exactly); complex values are an error. Sample ids are
read as text (``"007"`` stays ``"007"``)."""

from __future__ import annotations

import contextlib
import math
import pickle
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._validate import InvalidParameterError
from ..concepts import (
    IMAGE_EXTENSIONS,
    ConceptSet,
    ConstantConceptWarning,
    from_folders,
    from_imagenet_folder,
    from_table,
)
from ..concepts.io import METADATA_KEY
from ..concepts.tables import SKIP_HINT
from ..concepts.util import check_header, read_header
from ..engine.inputs import activation_source
from .errors import CommandError, require

__all__ = ["ACTIVATION_SUFFIXES", "CONCEPT_TABLE_SUFFIXES", "SAMPLE_COLUMN", "Layer",
           "load_activations", "load_concepts"]

ACTIVATION_SUFFIXES = (".npy", ".pt", ".pth", ".parquet", ".csv")
CONCEPT_TABLE_SUFFIXES = (".csv", ".tsv", ".parquet")
#: The column of sample ids in activation and concept tables.
SAMPLE_COLUMN = "sample"

#: One layer's activations: (values (N, K) as read, unit ids, sample ids (str) or None).
Layer = tuple[np.ndarray, list, list | None]


def load_activations(
    path: Path, layer: str | None = None, sample_column: str = SAMPLE_COLUMN, *,
    mmap: bool = False
) -> dict[str, Layer]:
    """Read precomputed activations: ``{layer: (values (N, K), unit_ids, sample_ids or None)}``.

    ``.npy``: an ``(N,)`` or ``(N, K)`` array. ``.pt``/``.pth``: a tensor, or a dict of layer
    name -> tensor (read with ``torch.load(weights_only=True)``). ``.parquet``/``.csv``: one
    column per unit (the column name is the unit id) and optionally a ``sample_column`` of
    sample ids (read as text). With ``mmap``, a ``.npy`` file is memory-mapped instead of
    read. Values are checked by the engine's input path
    (:func:`invert.engine.inputs.activation_source`) and keep their dtype (float16 and
    bfloat16 are widened to float32).
    """
    if not path.is_file():
        raise FileNotFoundError(f"--activations: file {str(path)!r} not found")
    suffix = path.suffix.lower()
    name = layer if layer is not None else path.stem
    if suffix not in ACTIVATION_SUFFIXES:
        raise CommandError(
            f"--activations: expected a {', '.join(ACTIVATION_SUFFIXES)} file, got {path.name!r}"
        )
    if suffix == ".npy":
        with _reading(path):
            arr = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
        return {name: _as_2d(arr, path)}
    if suffix in (".pt", ".pth"):
        return _read_torch(path, name)
    return {name: _read_table(path, sample_column)}


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """A file reader's (numpy, torch, pandas) complaint about the user's file as a
    :class:`CommandError`."""
    try:
        yield
    except pickle.UnpicklingError as err:
        raise CommandError(
            f"--activations: {path.name} holds Python objects that torch.load(weights_only=True) "
            "refuses to load (invert reads only tensors, or a dict of name -> tensor)"
        ) from err
    except (ValueError, RuntimeError, EOFError) as err:
        raise CommandError(f"--activations: cannot read {path.name}: {err}") from err


def _read_torch(path: Path, name: str) -> dict[str, Layer]:
    with _reading(path):
        obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict):
        if not obj:
            raise CommandError(f"--activations: {path.name} holds an empty dict")
        return {str(k): _as_2d(_tensor_values(v, path), path) for k, v in obj.items()}
    return {name: _as_2d(_tensor_values(obj, path), path)}


def _tensor_values(v: Any, path: Path) -> Any:
    """A tensor's values as numpy, widened only where numpy has no such dtype (bfloat16)
    or the widening is exact (float16 -> float32)."""
    if not isinstance(v, torch.Tensor):
        return v
    v = v.detach()
    if v.is_complex():
        raise CommandError(f"--activations: expected real numbers, got dtype {v.dtype} "
                           f"(in {path.name})")
    if v.dtype in (torch.float16, torch.bfloat16):
        v = v.float()
    return v.numpy()


def _read_table(path: Path, sample_column: str) -> Layer:
    """One layer from a CSV/Parquet table: unit columns (numbers, read exactly) and an
    optional ``sample_column`` of ids read as text."""
    pd = require("pandas", "--activations " + path.suffix)
    if path.suffix.lower() == ".parquet":
        require("pyarrow", "--activations .parquet")
        with _reading(path):
            df = pd.read_parquet(path)
    else:
        with _reading(path):
            header = read_header(path, ",")
        try:
            check_header(header, "--activations", path)
        except InvalidParameterError as err:
            raise CommandError(str(err)) from err
        dtype = {sample_column: str} if sample_column in header else None
        with _reading(path):
            # exact float parsing: pandas >= 3 does it by default (and warns on the option)
            exact = {} if int(pd.__version__.split(".")[0]) >= 3 else {
                "float_precision": "round_trip"}
            df = pd.read_csv(path, dtype=dtype, keep_default_na=False, na_values=[""], **exact)
    sids = None
    if sample_column in df.columns:
        sids = _text_ids(df[sample_column].tolist(), path, sample_column)
        df = df.drop(columns=[sample_column])
    bad = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
    if bad:
        raise CommandError(
            f"--activations: non-numeric column(s) {bad[:5]} in {path.name} (only the "
            f"{sample_column!r} column may hold ids; empty cells are not numbers)"
        )
    values, _, _ = _as_2d(df.to_numpy(), path)
    return values, [str(c) for c in df.columns], sids


def _text_ids(values: list, path: Path, column: str) -> list[str]:
    """Sample ids as text; a missing id is an error."""
    missing = [i for i, v in enumerate(values)
               if v is None or (isinstance(v, float) and math.isnan(v)) or str(v) == ""]
    if missing:
        raise CommandError(f"--activations: {len(missing)} row(s) of {path.name} have no "
                           f"{column!r} id, e.g. rows {missing[:5]}")
    return [str(v) for v in values]


def _as_2d(arr: Any, path: Path) -> Layer:
    """Values checked by the engine's input path, as (N, K) in their own dtype (float16
    widened to float32), with unit ids 0..K-1."""
    arr = np.asarray(arr)  # a memory map stays file-backed
    try:
        activation_source(arr)
    except InvalidParameterError as err:
        msg = str(err).removeprefix("activations: ")
        raise CommandError(f"--activations: {msg} (in {path.name})") from err
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    return arr, [str(k) for k in range(arr.shape[1])], None


def load_concepts(spec: str, data: Path | None, *, wordnet: bool, senses: Path | None = None,
                  file_concepts: bool = True, match_by_order: bool = False) -> ConceptSet:
    """A ConceptSet from ``--concepts``: ``folders``, ``imagenet``, a table or a saved set.

    ``folders`` reads the tree under ``data`` (with ``wordnet``: WordNet senses, overridden
    by the ``senses`` file); a table needs a ``sample`` column of ids unless
    ``match_by_order``. Constant concepts are not warned about (the command line prunes
    them, and counts them among the concepts skipped)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantConceptWarning)
        return _load_concepts(spec, data, wordnet=wordnet, senses=senses,
                              file_concepts=file_concepts, match_by_order=match_by_order)


def _load_concepts(spec: str, data: Path | None, *, wordnet: bool, senses: Path | None,
                   file_concepts: bool, match_by_order: bool) -> ConceptSet:
    if spec in ("folders", "imagenet"):
        if data is None:
            raise CommandError(f"--concepts {spec}: needs --data FOLDER (the image folder)")
        if spec == "folders":
            return _folder_concepts(data, wordnet, senses, file_concepts)
        return from_imagenet_folder(data)
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(
            f"--concepts: {spec!r} is neither 'folders', 'imagenet' nor an existing file"
        )
    suffix = path.suffix.lower()
    if suffix in (".npz", ".json"):
        return ConceptSet.load(path)
    if suffix == ".parquet" and _is_saved_concept_set(path):
        return ConceptSet.load(path)
    if suffix not in CONCEPT_TABLE_SUFFIXES:
        raise CommandError(
            f"--concepts: expected 'folders', 'imagenet', a .csv/.tsv/.parquet table or a saved "
            f"concept set (.npz), got {path.name!r}"
        )
    return _table_concepts(path, match_by_order)


def _folder_concepts(data: Path, wordnet: bool, senses: Path | None,
                     file_concepts: bool) -> ConceptSet:
    try:
        return from_folders(data, extensions=IMAGE_EXTENSIONS, wordnet=wordnet,
                            senses=senses, file_concepts=file_concepts)
    except InvalidParameterError as err:
        msg = str(err)
        if msg.startswith("senses:"):
            raise CommandError("--senses" + msg.removeprefix("senses")) from err
        raise


def _table_concepts(path: Path, match_by_order: bool) -> ConceptSet:
    """A wide or long concept table; its ``sample`` column is the ids (without one, rows are
    matched by order only with ``--match-by-order``)."""
    columns = _table_columns(path)
    sample_column: str | None = SAMPLE_COLUMN
    if SAMPLE_COLUMN not in columns:
        if not match_by_order:
            raise CommandError(
                f"--concepts: {path.name} has no {SAMPLE_COLUMN!r} column of sample ids "
                f"(columns: {columns[:8]}); add one, or pass --match-by-order to match its "
                "rows to the activations by position"
            )
        sample_column = None
    try:
        return from_table(path, sample_column=sample_column)
    except InvalidParameterError as err:
        msg = str(err).replace(" " + SKIP_HINT, "").removeprefix("table: ")
        raise CommandError(f"--concepts: {path.name}: {msg}") from err


def _table_columns(path: Path) -> list[str]:
    """The column names of a concept table (its header checked: no empty or repeated name)."""
    if path.suffix.lower() == ".parquet":
        pq = require("pyarrow.parquet", "--concepts .parquet")
        try:
            return [str(c) for c in pq.read_schema(path).names]
        except (OSError, ValueError) as err:
            raise CommandError(f"--concepts: cannot read {path.name}: {err}") from err
    header = read_header(path, "\t" if path.suffix.lower() == ".tsv" else ",")
    try:
        check_header(header, "--concepts", path)
    except InvalidParameterError as err:
        raise CommandError(str(err)) from err
    return [h.strip() for h in header]


def _is_saved_concept_set(path: Path) -> bool:
    """Whether a Parquet file was written by :meth:`ConceptSet.save` (by its metadata)."""
    pq = require("pyarrow.parquet", "--concepts .parquet")
    try:
        schema = pq.read_schema(path)
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise CommandError(f"--concepts: cannot read {path.name}: {err}") from err
    return METADATA_KEY in (schema.metadata or {})
