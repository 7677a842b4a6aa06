"""Text runs in the report: each sample shown as its token marked in its context, escaped."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from invert import explain
from invert.concepts import ConceptSet
from invert.report import build_report, save_run
from invert.report.outputs import load_run
from invert.report.texts import SampleTexts, context_html, texts_of_encoding

HOSTILE = '<script>alert("x")</script>'


def test_context_window_and_marks():
    text = " ".join(f"w{i}" for i in range(30))
    start = text.index("w15")
    html = context_html(text, start, start + 3)
    assert html == ("&hellip; " + " ".join(f"w{i}" for i in range(7, 15))
                    + " <mark>w15</mark> " + " ".join(f"w{i}" for i in range(16, 24))
                    + " &hellip;")
    # a continuation piece: the rest of its word stays glued to it
    assert context_html("the theatre is", 7, 11) == "the the<mark>atre</mark> is"
    # special tokens: an empty span shows the token where it sits
    assert context_html("a b", 0, 0, "[CLS]") == "<mark>[CLS]</mark>a b"
    assert context_html("a b", 3, 3, "[SEP]") == "a b<mark>[SEP]</mark>"
    # a whole document: its first words, unmarked; line breaks shown
    assert context_html("one\ntwo", 0, 7) == "one \u21b5 two"
    assert context_html(HOSTILE, 0, 8) == ("<mark>&lt;script&gt;</mark>alert(&quot;x&quot;)"
                                          "&lt;/script&gt;")


class _Encoding(dict):
    """'[CLS] ab ##c d [SEP]' over 'abc d' (the hand-made encoding of the token tests)."""

    def __init__(self):
        super().__init__(attention_mask=np.array([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]]))
        self.texts = ["abc d", "e"]
        self.tokens = [["[CLS]", "ab", "##c", "d", "[SEP]", "[PAD]"],
                       ["[CLS]", "e", "[SEP]", "[PAD]", "[PAD]", "[PAD]"]]
        self.offsets = np.array([[[0, 0], [0, 2], [2, 3], [4, 5], [0, 0], [0, 0]],
                                 [[0, 0], [0, 1], [0, 0], [0, 0], [0, 0], [0, 0]]])
        self.special_mask = np.array([[1, 0, 0, 0, 1, 0], [1, 0, 1, 0, 0, 0]], dtype=bool)
        self.sample_ids = [("x", 1), "y"]

    def rows(self):
        return np.argwhere(self["attention_mask"].astype(bool))


def test_texts_of_an_encoding():
    st = texts_of_encoding(_Encoding())
    assert st.rows.tolist() == [[0, 0, 0], [0, 0, 2], [0, 2, 3], [0, 4, 5], [0, 5, 5],
                                [1, 0, 0], [1, 0, 1], [1, 1, 1]]
    assert st.tokens[4] == "[SEP]" and st.doc_ids[0] == ("x", 1)
    assert [st.html(i) for i in range(5)] == [
        "<mark>[CLS]</mark>abc d", "<mark>ab</mark>c d", "ab<mark>c</mark> d",
        "abc <mark>d</mark>", "abc d<mark>[SEP]</mark>"]
    with pytest.raises(ValueError, match="offsets"):
        enc = _Encoding()
        enc.offsets = None
        texts_of_encoding(enc)


def _text_run(out):
    docs = [f"doc {d}: the cat sat on {HOSTILE if d == 1 else 'a'} mat number {d} today"
            for d in range(6)]
    spans, ids = [], []
    for d, t in enumerate(docs):
        for m in re.finditer(r"\S+", t):
            spans.append([d, m.start(), m.end()])
            ids.append((d, len(ids)))
    n = len(spans)
    words = [docs[d][s:e] for d, s, e in spans]
    y = np.array([[w == "cat", w == "mat", w.startswith("<script")] for w in words])
    cs = ConceptSet(y, ["word:cat", "word:mat", "word:script"], sample_ids=ids,
                    row_kind="piece", warn_constant=False)
    rng = np.random.default_rng(0)
    a = (2.0 * y[:, [0]] + 1.5 * y[:, [2]] + 0.1 * rng.standard_normal((n, 1))
         ).astype(np.float32)  # the hostile token among the top activations
    res = explain(a, cs, length=1)
    texts = SampleTexts(list(range(6)), docs, np.array(spans), words)
    save_run(out, {"layer": res}, {"layer": a}, cs, sample_ids=ids, texts=texts)
    return docs, words


def test_report_shows_tokens_in_context_escaped(tmp_path):
    pytest.importorskip("jinja2")
    out = tmp_path / "out"
    _text_run(out)
    meta = json.loads((out / "run.json").read_text())
    assert meta["texts"] == "texts.json"
    body = json.loads((out / "texts.json").read_text())
    assert body["format"] == "invert.texts" and len(body["rows"]) == meta["n_samples"]
    run = load_run(out)
    assert run.texts is not None and run.texts.n_rows == meta["n_samples"]
    build_report(out, progress=False)
    page = (out / "report" / "units" / "layer" / "0.html").read_text()
    assert "<mark>cat</mark>" in page
    assert "doc 0: the <mark>cat</mark> sat on a mat number 0 today" in page
    # the hostile text is escaped, never markup
    assert "<script" not in page
    assert "<mark>&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;</mark> mat" in page


def test_texts_that_do_not_fit_are_ignored(tmp_path, caplog):
    out = tmp_path / "out"
    _text_run(out)
    body = json.loads((out / "texts.json").read_text())
    body["rows"] = body["rows"][:-1]
    (out / "texts.json").write_text(json.dumps(body))
    with caplog.at_level("WARNING"):
        assert load_run(out).texts is None
    assert "not the texts of these" in caplog.text
