"""Formula printing, parsing and evaluation."""

import numpy as np
import pytest
import scipy.sparse as sp

from invert.engine.formula import And, FormulaSyntaxError, Literal, Or, chain, parse_formula

Y = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0]], dtype=bool)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", [True, False, True, False]),
        ("~0", [False, True, False, True]),
        ("0 & 1", [False, False, True, False]),
        ("0 | 1 & 2", [True, False, True, False]),  # AND binds tighter
        ("(0 | 1) & ~2", [False, True, True, False]),
        ("~0 | 1 | 2", [True, True, True, True]),
    ],
)
def test_grammar_and_evaluation(text, expected):
    f = parse_formula(text)
    assert f.evaluate(Y).tolist() == expected
    assert f.evaluate(sp.csr_matrix(Y)).tolist() == expected
    assert str(parse_formula(str(f))) == str(f)


def test_chain_printing_uses_minimal_parentheses():
    assert str(chain([(0, False), (1, False), (2, True)], ["|", "&"])) == "(0 | 1) & ~2"
    assert str(chain([(0, False), (1, False), (2, True)], ["&", "|"])) == "0 & 1 | ~2"
    assert chain([(0, False), (1, True)], ["&"]) == And(Literal(0), Literal(1, True))


def test_names_round_trip_with_awkward_names():
    names = ["great_white_shark.n.01", "a b", 'quote"d', "x|y", "12", "~not"]
    for i in range(len(names)):
        for j in range(len(names)):
            f = Or(Literal(i, names=tuple(names)), And(Literal(j, True), Literal(0)))
            f = f.with_names(names)
            back = parse_formula(str(f), names)
            assert back == f
            assert back.evaluate(np.eye(6, dtype=bool)).tolist() == f.evaluate(
                np.eye(6, dtype=bool)).tolist()


def test_parse_errors_are_clear():
    with pytest.raises(FormulaSyntaxError, match="unknown concept 'dgo'; did you mean 'dog'"):
        parse_formula("cat | dgo", ["cat", "dog"])
    with pytest.raises(FormulaSyntaxError, match="unexpected end"):
        parse_formula("(0 | 1")
    with pytest.raises(FormulaSyntaxError, match="single concept"):
        parse_formula("~(0 | 1)")
    with pytest.raises(FormulaSyntaxError, match="empty"):
        parse_formula("  ")
    with pytest.raises(FormulaSyntaxError, match="out of range"):
        parse_formula("5", ["a", "b"])


def test_length_and_concepts():
    f = parse_formula("(3 | ~1) & 3")
    assert f.length == 3
    assert f.concepts() == [1, 3]
