"""Captions of text samples: the document and the piece's position, not a nested list."""

from invert.report.thumbs import _token_name, short_name


def test_token_rows_are_named_by_document_and_position():
    assert _token_name([["definitions", 1093], 38]) == "definitions/1093 #38"
    assert _token_name(("doc7", 3)) == "doc7 #3"
    long = _token_name([["a" * 50, 1], 2])
    assert long.endswith(" #2") and "\u2026" in long and len(long) < 45


def test_other_ids_keep_the_file_name_caption():
    assert _token_name("photos/cat.png") == short_name("photos/cat.png") == "cat.png"
    assert _token_name(("a", "b")) == short_name(("a", "b"))
