"""Explanations in a JSON that the Neuronpedia / SAELens tools read: :func:`export_neuronpedia`.

The file holds one record per feature (unit) with the field names Neuronpedia uses for its
features, explanations and activation examples (``modelId``, ``layer``, ``index``,
``description``, ``typeName``, ``explanationModelName``, ``tokens``, ``values``,
``maxValue``, ``maxValueTokenIndex``, ``maxActApprox``, ``frac_nonzero``), plus invert's own
figures under plain names. Schema (version 1, also as :data:`SCHEMA`, a JSON Schema)::

    {
      "format": "invert-neuronpedia", "version": 1,
      "generator": "invert 0.1.0",
      "modelId": str,                  # model name given by the caller (or "model")
      "layer": str,                    # Neuronpedia's layer / source id (the layer name)
      "n_samples": int,                # rows of the activations
      "features": [{
        "modelId": str, "layer": str,
        "index": str,                  # the unit id ("12"; an SAE feature's name)
        "featureIndex": int,           # its column in the activations
        "label": str | null,           # the best formula ("word:if | word:unless")
        "score": float | null,         # its AUROC: held-out when the run had a holdout
        "scoreType": "holdout_auroc" | "auroc" | null,
        "reason": str | null,          # why a unit has no explanation
        "maxActApprox": float,         # the unit's largest activation
        "frac_nonzero": float,         # share of rows where it is not 0
        "explanations": [{             # best first (Neuronpedia's explanation records)
          "modelId": str, "layer": str, "index": str,
          "description": str,          # the formula
          "typeName": "invert-formula",
          "explanationModelName": "invert 0.1.0",
          "score": float, "scoreType": str,
          "auroc": float, "p_value": float, "fraction": float, "support": int,
          "length": int, ...           # every other figure of the explanation
        }],
        "activations": [{              # top examples, highest first
          "tokens": [str],             # text: the document's tokens; else [sample id]
          "values": [float],           # the unit's activation on each token
          "maxValue": float, "maxValueTokenIndex": int, "minValue": float,
          "sampleId": JSON value,      # the document id (text) or the sample id
          "dataIndex": int             # the document's / sample's position
        }]
      }]
    }

For token activations (``reduce="tokens"``) an example is a document: the one with the
unit's highest activation first, each document once (as Neuronpedia shows them), its tokens
(pass ``tokens=`` the encoding, or a list of token lists per document) with the unit's
activation on each. Otherwise an example is one sample.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .._validate import InvalidParameterError, bad, check_int
from .._version import __version__
from ..engine.result import json_safe

__all__ = ["FORMAT", "SCHEMA", "VERSION", "export_neuronpedia", "neuronpedia_records"]

FORMAT = "invert-neuronpedia"
VERSION = 1
_TYPE = "invert-formula"
_ROW_CHUNK = 8192


def _schema() -> dict[str, Any]:
    num = {"type": ["number", "null"]}
    example = {
        "type": "object",
        "required": ["tokens", "values", "maxValue", "maxValueTokenIndex", "sampleId",
                     "dataIndex"],
        "properties": {
            "tokens": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "values": {"type": "array", "items": {"type": "number"}, "minItems": 1},
            "maxValue": {"type": "number"}, "minValue": {"type": "number"},
            "maxValueTokenIndex": {"type": "integer", "minimum": 0},
            "dataIndex": {"type": "integer", "minimum": 0},
        },
    }
    explanation = {
        "type": "object",
        "required": ["modelId", "layer", "index", "description", "typeName",
                     "explanationModelName", "score", "scoreType", "auroc"],
        "properties": {
            "modelId": {"type": "string"}, "layer": {"type": "string"},
            "index": {"type": "string"}, "description": {"type": "string"},
            "typeName": {"const": _TYPE}, "explanationModelName": {"type": "string"},
            "score": num, "scoreType": {"enum": ["holdout_auroc", "auroc"]}, "auroc": num,
        },
    }
    feature = {
        "type": "object",
        "required": ["modelId", "layer", "index", "featureIndex", "label", "score",
                     "scoreType", "explanations", "activations", "maxActApprox",
                     "frac_nonzero"],
        "properties": {
            "modelId": {"type": "string"}, "layer": {"type": "string"},
            "index": {"type": "string"}, "featureIndex": {"type": "integer", "minimum": 0},
            "label": {"type": ["string", "null"]}, "score": num,
            "scoreType": {"enum": ["holdout_auroc", "auroc", None]},
            "reason": {"type": ["string", "null"]},
            "maxActApprox": num, "frac_nonzero": {"type": "number", "minimum": 0,
                                                  "maximum": 1},
            "explanations": {"type": "array", "items": explanation},
            "activations": {"type": "array", "items": example},
        },
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "invert explanations for Neuronpedia / SAELens tools",
        "type": "object",
        "required": ["format", "version", "generator", "modelId", "layer", "n_samples",
                     "features"],
        "properties": {
            "format": {"const": FORMAT}, "version": {"const": VERSION},
            "generator": {"type": "string"}, "modelId": {"type": "string"},
            "layer": {"type": "string"}, "n_samples": {"type": "integer", "minimum": 0},
            "features": {"type": "array", "items": feature},
        },
    }


#: The JSON Schema of the file :func:`export_neuronpedia` writes.
SCHEMA: dict[str, Any] = _schema()


# =========================================================================================
# The top examples
# =========================================================================================
def _values(activations: Any) -> np.ndarray:
    v = getattr(activations, "values", activations)
    v = np.asarray(v) if not isinstance(v, np.ndarray) else v
    if v.ndim == 1:
        v = v.reshape(-1, 1)
    if v.ndim != 2:
        raise bad("activations", "an (N, K) array or activation set", f"shape {v.shape}",
                  raw=True)
    return v


def _doc_groups(token_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(document row of each group, first row of each group)`` over doc-major rows."""
    docs = token_index[:, 0]
    starts = np.flatnonzero(np.r_[True, docs[1:] != docs[:-1]])
    return docs[starts], starts


def _chunks(bounds: np.ndarray) -> list[tuple[int, int]]:
    """Runs ``[g0, g1)`` of groups of about :data:`_ROW_CHUNK` rows (at least one group)."""
    out = []
    g, n_groups = 0, len(bounds) - 1
    while g < n_groups:
        g_end = int(np.searchsorted(bounds, bounds[g] + _ROW_CHUNK, side="right")) - 1
        g_end = min(max(g_end, g + 1), n_groups)
        out.append((g, g_end))
        g = g_end
    return out


def _top_groups(vals: np.ndarray, starts: np.ndarray, columns: np.ndarray, k: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per column the ``k`` groups (runs of rows from ``starts``) with the highest maximum,
    highest first, ties to the earlier group; their maxima; each column's maximum and its
    number of non-zero rows. Reads the rows in chunks, keeping a running top list."""
    bounds = np.r_[starts, vals.shape[0]]
    K = len(columns)
    top_g = np.zeros((0, K), dtype=np.int64)
    top_v = np.zeros((0, K), dtype=np.float64)
    nonzero = np.zeros(K, dtype=np.int64)
    for g0, g1 in _chunks(bounds):
        r0, r1 = int(bounds[g0]), int(bounds[g1])
        block = np.asarray(vals[r0:r1], dtype=np.float64)[:, columns]
        gmax = np.maximum.reduceat(block, starts[g0:g1] - r0, axis=0)
        nonzero += np.count_nonzero(block, axis=0)
        cand_v = np.concatenate([top_v, gmax])
        cand_g = np.concatenate([top_g, np.broadcast_to(np.arange(g0, g1)[:, None],
                                                        gmax.shape)])
        order = np.argsort(-cand_v, axis=0, kind="stable")[: max(k, 1)]
        top_v = np.take_along_axis(cand_v, order, 0)
        top_g = np.take_along_axis(cand_g, order, 0)
    best = top_v[0] if len(top_v) else np.zeros(K)
    return top_g[:k], top_v[:k], best, nonzero


def _doc_tokens(tokens: Any, doc: int, positions: np.ndarray) -> list[str]:
    if tokens is None:
        return [str(int(p)) for p in positions]
    toks = getattr(tokens, "tokens", tokens)[doc]
    return [str(toks[int(p)]) for p in positions]


def _text_example(vals: np.ndarray, col: int, token_index: np.ndarray, bounds: np.ndarray,
                  g: int, doc: int, doc_id: Any, tokens: Any) -> dict[str, Any]:
    r0, r1 = int(bounds[g]), int(bounds[g + 1])
    v = np.asarray(vals[r0:r1, col], dtype=np.float64)
    i = int(np.argmax(v))
    return {"tokens": _doc_tokens(tokens, doc, token_index[r0:r1, 1]),
            "values": v.tolist(), "maxValue": float(v[i]), "maxValueTokenIndex": i,
            "minValue": float(v.min()), "sampleId": doc_id, "dataIndex": int(doc)}


def _sample_example(value: float, row: int, sample_id: Any) -> dict[str, Any]:
    return {"tokens": [str(sample_id)], "values": [value], "maxValue": value,
            "maxValueTokenIndex": 0, "minValue": value, "sampleId": sample_id,
            "dataIndex": int(row)}


# =========================================================================================
# The records
# =========================================================================================
def _score(e: Any) -> tuple[float | None, str]:
    held = e.extras.get("holdout_auroc") if e.extras else None
    if held is not None and np.isfinite(held):
        return float(held), "holdout_auroc"
    return float(e.auroc), "auroc"


def _explanations(unit: Any, base: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for e in unit:
        score, kind = _score(e)
        out.append({**base, "description": str(e.formula), "typeName": _TYPE,
                    "explanationModelName": f"invert {__version__}", "score": score,
                    "scoreType": kind, **e.to_dict()})
    return out


def _columns(result: Any, activations: Any, k_units: int) -> np.ndarray:
    """The activation column of each unit of ``result`` (checked against the unit ids)."""
    cols = np.asarray([int(getattr(u, "unit", k)) for k, u in enumerate(result.units)])
    if cols.size and (cols.min() < 0 or cols.max() >= k_units):
        raise bad("result", f"units of the {k_units} activation columns",
                  f"unit positions up to {int(cols.max())}", raw=True)
    ids = getattr(activations, "unit_ids", None)
    if ids is not None:
        for u, c in zip(result.units, cols, strict=True):
            if str(u.unit_id) != str(ids[c]):
                raise InvalidParameterError(
                    f"result: unit {u.unit_id!r} is column {c} of the activations, which is "
                    f"unit {ids[c]!r} there: pass the activations the result was found on")
    return cols


def _examples(vals: np.ndarray, activations: Any, cols: np.ndarray, top_k: int, tokens: Any
              ) -> tuple[list[list[dict[str, Any]]], np.ndarray, np.ndarray]:
    """Per unit its top examples, plus each unit's max activation and non-zero count."""
    ids = getattr(activations, "sample_ids", None)
    sample_ids = list(ids) if ids is not None else list(range(vals.shape[0]))
    tok = getattr(activations, "token_index", None)
    if tok is not None:
        tok = np.asarray(tok)
        docs, starts = _doc_groups(tok)
    else:
        docs, starts = np.arange(vals.shape[0]), np.arange(vals.shape[0])
    top_g, top_v, best, nonzero = _top_groups(vals, starts, cols, top_k)
    bounds = np.r_[starts, vals.shape[0]]
    out: list[list[dict[str, Any]]] = []
    for j, col in enumerate(cols):
        if tok is not None:
            out.append([_text_example(vals, int(col), tok, bounds, int(g), int(docs[g]),
                                      _doc_id(sample_ids[int(starts[g])], int(docs[g])),
                                      tokens) for g in top_g[:, j]])
        else:
            out.append([_sample_example(float(v), int(g), sample_ids[int(g)])
                        for g, v in zip(top_g[:, j], top_v[:, j], strict=True)])
    return out, best, nonzero


def _doc_id(row_id: Any, doc: int) -> Any:
    """The document id of a token row's ``(document id, position)`` id."""
    return row_id[0] if isinstance(row_id, tuple | list) and len(row_id) == 2 else doc


def neuronpedia_records(result: Any, activations: Any, *, top_k: int = 20, tokens: Any = None,
                        model_id: str = "model", layer: str | None = None) -> dict[str, Any]:
    """The document :func:`export_neuronpedia` writes, as a JSON-ready dict (see the module
    docstring; tuples as lists, NaN as None)."""
    check_int("top_k", top_k, minimum=0)
    vals = _values(activations)
    layer = layer if layer is not None else str(getattr(activations, "layer", "layer"))
    cols = _columns(result, activations, vals.shape[1])
    examples, top_val, nonzero = _examples(vals, activations, cols, top_k, tokens)
    features = []
    for j, (u, col) in enumerate(zip(result.units, cols, strict=True)):
        base = {"modelId": model_id, "layer": layer, "index": str(u.unit_id)}
        best = u[0] if len(u) else None
        score, kind = _score(best) if best is not None else (None, None)
        features.append({**base, "featureIndex": int(col),
                         "label": str(best.formula) if best is not None else None,
                         "score": score, "scoreType": kind, "reason": u.reason,
                         "maxActApprox": float(top_val[j]),
                         "frac_nonzero": float(nonzero[j] / max(vals.shape[0], 1)),
                         "explanations": _explanations(u, base), "activations": examples[j]})
    return json_safe({"format": FORMAT, "version": VERSION,
                      "generator": f"invert {__version__}", "modelId": model_id,
                      "layer": layer, "n_samples": int(vals.shape[0]), "features": features})


def export_neuronpedia(
    result: Any,
    activations: Any,
    path: str | os.PathLike[str],
    *,
    top_k: int = 20,
    tokens: Any = None,
    model_id: str = "model",
    layer: str | None = None,
) -> Path:
    """Write the explanations of a layer as JSON for the Neuronpedia / SAELens tools.

    Parameters
    ----------
    result : ExplanationResult
        From :func:`invert.explain` on ``activations`` (held-out AUROC becomes the score when
        the run had a holdout).
    activations : ActivationSet or array-like (N, K)
        The activations the result was found on (memmaps are read in chunks of rows).
    path : path
        The JSON file to write.
    top_k : int
        Top activating examples per feature (for text: documents).
    tokens : TokenizedTexts or list of token lists, optional
        For token activations: the tokens of each document (``encode_texts`` output);
        without it, examples show token positions.
    model_id, layer : str, optional
        Neuronpedia's model and layer / source ids (default ``"model"`` and the
        activations' layer name).

    Returns
    -------
    Path
        The file written. Its schema is in the module docstring and :data:`SCHEMA`.
    """
    doc = neuronpedia_records(result, activations, top_k=top_k, tokens=tokens,
                              model_id=model_id, layer=layer)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(doc, allow_nan=False), encoding="utf-8")
    os.replace(tmp, out)
    return out

