"""The text of text runs, so the report shows each sample as its token in context.

A text run (one row per word piece, ``reduce="tokens"``, or one row per document) writes
``OUT/texts.json`` beside ``run.json`` (whose ``"texts"`` entry names it)::

    {"format": "invert.texts", "version": 1,
     "documents": [{"id": <document id>, "text": "<the whole document>"}, ...],
     "rows": [[<document position>, <start>, <end>], ...],
     "tokens": ["<piece>", ...]}

``rows`` has one entry per sample row of the run, in row order: the document (its position
in ``documents``) and the characters ``[start, end)`` of the row's token in that document's
text. A special token (``[CLS]``, ``[SEP]``) has an empty span (``start == end``) where it
sits: at the start of the document for ``[CLS]``, after its last character (or where the
document was cut at ``max_length``) for ``[SEP]``. A document-level row spans its whole
document. ``tokens`` (optional) holds each row's token string (shown for the empty spans
and as a tooltip). Ids are JSON values (tuples written as lists).

The report draws a row as :data:`CONTEXT_WORDS` words of the document on each side of the
token, the token marked (``<mark>``), every piece of text HTML-escaped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from .._store import replacing
from .._validate import bad

__all__ = ["SampleTexts", "texts_of_encoding", "write_texts", "read_texts", "TEXTS_FILE",
           "CONTEXT_WORDS", "context_html", "sample_texts_of"]

TEXTS_FILE = "texts.json"
FORMAT_NAME = "invert.texts"
FORMAT_VERSION = 1
#: Words shown on each side of a token.
CONTEXT_WORDS = 8
#: Words shown of a document-level row.
DOCUMENT_WORDS = 40

_WORD = re.compile(r"\S+")


@dataclass
class SampleTexts:
    """The documents of a text run and, per sample row, its document and character span."""

    doc_ids: list[Any]
    texts: list[str]
    rows: np.ndarray  # (N, 3) int64: document position, start, end
    tokens: list[str] | None = None

    def __post_init__(self) -> None:
        self.rows = np.asarray(self.rows, dtype=np.int64).reshape(-1, 3)
        if len(self.doc_ids) != len(self.texts):
            raise bad("doc_ids", f"{len(self.texts)} ids (one per text)", len(self.doc_ids))
        if self.tokens is not None and len(self.tokens) != len(self.rows):
            raise bad("tokens", f"{len(self.rows)} tokens (one per row)", len(self.tokens))
        d = self.rows[:, 0]
        if len(d) and (d.min() < 0 or d.max() >= len(self.texts)):
            raise bad("rows", f"document positions in [0, {len(self.texts)})",
                      f"{int(d.min())}..{int(d.max())}", raw=True)

    @property
    def n_rows(self) -> int:
        return int(self.rows.shape[0])

    def html(self, i: int, words: int = CONTEXT_WORDS) -> str:
        """Row ``i`` as escaped HTML: its token marked in ``words`` words of context."""
        d, start, end = (int(x) for x in self.rows[i])
        token = self.tokens[i] if self.tokens is not None else None
        return context_html(self.texts[d], start, end, token, words)


def _cut_before(text: str, words: int) -> tuple[str, bool]:
    """The last ``words`` words of ``text`` (with what follows them), and whether more
    came before."""
    spans = [m.start() for m in _WORD.finditer(text)]
    if len(spans) <= words:
        return text, False
    return text[spans[-words]:], True


def _cut_after(text: str, words: int) -> tuple[str, bool]:
    ends = [m.end() for m in _WORD.finditer(text)]
    if len(ends) <= words:
        return text, False
    return text[:ends[words - 1]], True


def _show(text: str) -> str:
    """Escaped text with line breaks and tabs as spaces (a caption is one paragraph)."""
    return escape(text).replace("\n", " \u21b5 ").replace("\t", " ")


def context_html(text: str, start: int, end: int, token: str | None = None,
                 words: int = CONTEXT_WORDS) -> str:
    """``text[start:end]`` marked among ``words`` words on each side, as escaped HTML.

    An empty span shows ``token`` (e.g. ``[CLS]``) marked where it sits; the whole text
    as the span (a document-level row) shows the document's first :data:`DOCUMENT_WORDS`
    words, unmarked.

    Examples
    --------
    >>> context_html("the cat <sat> on the mat", 8, 13)
    'the cat <mark>&lt;sat&gt;</mark> on the mat'
    """
    start = min(max(start, 0), len(text))
    end = min(max(end, start), len(text))
    if start == 0 and end == len(text) and end > 0:
        shown, more = _cut_after(text, DOCUMENT_WORDS)
        return _show(shown) + (" &hellip;" if more else "")
    before, more_b = _cut_before(text[:start], words)
    after, more_a = _cut_after(text[end:], words)
    mid = text[start:end] if end > start else (token or "")
    marked = f"<mark>{_show(mid)}</mark>" if mid else ""
    return (("&hellip; " if more_b else "") + _show(before) + marked + _show(after)
            + (" &hellip;" if more_a else ""))


def _json_id(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return [_json_id(x) for x in v] if isinstance(v, tuple | list) else v


def texts_of_encoding(encoding: Any, token_index: np.ndarray | None = None) -> SampleTexts:
    """The :class:`SampleTexts` of the rows of ``reduce="tokens"`` over ``encoding`` (an
    :func:`invert.extract.encode_texts` result on raw text), or of its documents when
    ``token_index`` is None and the run has one row per document.

    Parameters
    ----------
    encoding : TokenizedTexts
        With ``texts`` and ``offsets`` (a fast tokenizer).
    token_index : numpy.ndarray, optional
        ``(N, 2)`` ``(document, position)`` of each row (``ActivationSet.token_index``);
        default: ``encoding.rows()`` when the encoding has them.
    """
    texts = getattr(encoding, "texts", None)
    offsets = getattr(encoding, "offsets", None)
    if texts is None or offsets is None:
        raise bad("encoding", "an encoding of raw texts with character offsets (a fast "
                  "tokenizer)", "one without texts or offsets", raw=True)
    doc_ids = list(getattr(encoding, "sample_ids", None) or range(len(texts)))
    if token_index is None:
        token_index = encoding.rows()
    idx = np.asarray(token_index, dtype=np.int64).reshape(-1, 2)
    offsets = np.asarray(offsets, dtype=np.int64)
    special = np.asarray(encoding.special_mask, dtype=bool)
    toks = getattr(encoding, "tokens", None)
    rows = np.empty((len(idx), 3), dtype=np.int64)
    rows[:, 0] = idx[:, 0]
    rows[:, 1:] = offsets[idx[:, 0], idx[:, 1]]
    for r in np.flatnonzero(special[idx[:, 0], idx[:, 1]]):
        d, p = idx[r]
        # [CLS] before the first piece, [SEP] after the last one (where a cut document ends)
        ends = offsets[d, :p, 1]
        at = int(ends.max()) if p > 0 and ends.size else 0
        rows[r, 1:] = at
    tokens = [str(toks[d][p]) for d, p in idx] if toks is not None else None
    return SampleTexts(doc_ids, list(texts), rows, tokens)


def write_texts(out: Path, texts: SampleTexts) -> str:
    """Write ``OUT/texts.json``; return its name (for ``run.json``)."""
    body = {"format": FORMAT_NAME, "version": FORMAT_VERSION,
            "documents": [{"id": _json_id(i), "text": t}
                          for i, t in zip(texts.doc_ids, texts.texts, strict=True)],
            "rows": texts.rows.tolist()}
    if texts.tokens is not None:
        body["tokens"] = list(texts.tokens)
    with replacing(out / TEXTS_FILE) as tmp:
        tmp.write_text(json.dumps(body, ensure_ascii=False), encoding="utf-8")
    return TEXTS_FILE


def read_texts(path: Path, n_rows: int) -> SampleTexts | None:
    """The texts of ``path`` (None, logged by the caller, when they do not fit the run's
    ``n_rows`` rows or are not an invert texts file)."""
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(body, dict) or body.get("format") != FORMAT_NAME:
        return None
    try:
        docs = body["documents"]
        out = SampleTexts([d.get("id") for d in docs], [str(d["text"]) for d in docs],
                          np.asarray(body["rows"], dtype=np.int64),
                          body.get("tokens"))
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return out if out.n_rows == n_rows else None


def sample_texts_of(texts: Sequence[str], doc_ids: Sequence[Any] | None = None
                    ) -> SampleTexts:
    """One row per document (document-level runs): each row spans its whole document."""
    ids = list(doc_ids) if doc_ids is not None else list(range(len(texts)))
    rows = np.array([[d, 0, len(t)] for d, t in enumerate(texts)], dtype=np.int64)
    return SampleTexts(ids, list(texts), rows)
