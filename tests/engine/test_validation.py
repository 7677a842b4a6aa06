"""Bad input: clear errors that name the parameter, what was expected and what was given."""

import numpy as np
import pytest
import torch

import invert

Y = np.random.default_rng(0).random((50, 4)) < 0.3
A = np.random.default_rng(1).standard_normal((50, 3))


@pytest.mark.parametrize(
    ("kwargs", "exc", "words"),
    [
        (dict(length=0), ValueError, ["length", ">= 1", "0"]),
        (dict(length=2.5), TypeError, ["length", "integer", "2.5"]),
        (dict(beam_size=0), ValueError, ["beam_size", ">= 1", "0"]),
        (dict(min_fraction=-0.1), ValueError, ["min_fraction", "[0, 1]", "-0.1"]),
        (dict(max_fraction=1.5), ValueError, ["max_fraction", "[0, 1]", "1.5"]),
        (dict(max_fraction=float("nan")), ValueError, ["max_fraction", "nan"]),
        (dict(min_fraction=0.6, max_fraction=0.5), ValueError,
         ["min_fraction", "max_fraction", "0.6"]),
        (dict(mode="one-sided"), ValueError, ["mode", "'positive'", "'negative'", "one-sided"]),
        (dict(limit_search=0), ValueError, ["limit_search", "[1, 8]", "0"]),
        (dict(limit_search=9), ValueError, ["limit_search", "[1, 8]", "9"]),
        (dict(dedupe="yes"), TypeError, ["dedupe", "True or False"]),
        (dict(device="tpu:0"), ValueError, ["device"]),
        (dict(memory_budget="lots"), ValueError, ["memory_budget", "lots"]),
    ],
)
def test_bad_parameters(kwargs, exc, words):
    with pytest.raises(exc) as info:
        invert.explain(A, Y, **kwargs)
    msg = str(info.value)
    for w in words:
        assert w in msg, (w, msg)


def test_nan_and_inf_activations():
    a = A.copy()
    a[7, 2] = np.nan
    with pytest.raises(ValueError, match=r"activations: expected finite.*row 7, unit 2"):
        invert.explain(a, Y)
    a[7, 2] = np.inf
    with pytest.raises(ValueError, match="activations: expected finite"):
        invert.explain(torch.from_numpy(a), Y)


def test_row_mismatch():
    with pytest.raises(ValueError, match=r"concepts: expected 50 rows .* got 49 rows"):
        invert.explain(A, Y[:49])


def test_non_binary_labels():
    y = Y.astype(int)
    y[3, 1] = 2
    with pytest.raises(ValueError, match=r"concepts: expected 0/1 .* 2 at row 3, column 1"):
        invert.explain(A, y)
    import scipy.sparse as sp

    ys = sp.csr_matrix(Y.astype(float))
    ys.data[0] = 0.5
    with pytest.raises(ValueError, match="concepts: expected 0/1"):
        invert.explain(A, ys)


def test_no_samples_and_bad_shapes():
    with pytest.raises(ValueError, match="activations: expected at least one sample"):
        invert.explain(np.zeros((0, 3)), np.zeros((0, 2), bool))
    with pytest.raises(ValueError, match=r"activations: expected shape \(N,\) or \(N, K\)"):
        invert.explain(np.zeros((5, 2, 2)), np.zeros((5, 2), bool))
    with pytest.raises(TypeError, match="activations: expected an array-like of numbers"):
        invert.explain(np.array(["a", "b"]), np.zeros((2, 2), bool))
    with pytest.raises(TypeError, match="concepts: expected a boolean"):
        invert.explain(np.zeros(2), np.array([["x"], ["y"]]))


def test_constant_unit_is_a_result_not_an_error():
    a = np.column_stack([np.full(50, 3.0), A[:, 0]])
    res = invert.explain(a, Y)
    assert len(res[0]) == 0
    assert "constant" in res[0].reason
    assert len(res[1]) > 0 and res[1].reason is None


def test_nothing_within_fraction_limits_is_reported():
    y = np.zeros((50, 2), bool)
    y[:2, 0] = True
    y[:3, 1] = True
    res = invert.explain(A[:, 0], y, length=1, min_fraction=0.5, max_fraction=0.5)
    assert len(res[0]) == 0
    assert "min_fraction=0.5" in res[0].reason


def test_all_zero_and_all_one_concepts_are_undefined_and_unused():
    y = np.column_stack([Y, np.zeros(50, bool), np.ones(50, bool)])
    res = invert.explain(A, y, length=2, beam_size=50, max_fraction=1.0)
    assert res.undefined_concepts == ["4", "5"]
    for unit in res:
        for e in unit:
            assert not {4, 5} & set(e.formula.concepts())
