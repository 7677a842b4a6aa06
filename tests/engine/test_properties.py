"""Property tests (hypothesis): symmetry and invariances of the search."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import invert
from invert.engine.formula import Literal, parse_formula

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def problems(draw):
    n = draw(st.integers(8, 60))
    c = draw(st.integers(1, 5))
    k = draw(st.integers(1, 3))
    y = draw(arrays(bool, (n, c)))
    # values on a grid, so that exp and cube stay strictly increasing in float64
    a = draw(arrays(np.int64, (n, k), elements=st.integers(-300, 300))) / 100.0
    return a, y


def _summary(res):
    return [[(round(e.auroc, 12), e.support, e.length) for e in u] for u in res]


@SETTINGS
@given(problems())
def test_negation_complements_auroc(prob):
    a, y = prob
    for j in range(y.shape[1]):
        if 0 < y[:, j].sum() < len(y):
            pos = invert.auroc(a[:, 0], Literal(j).evaluate(y))
            neg = invert.auroc(a[:, 0], Literal(j, True).evaluate(y))
            assert abs(pos + neg - 1.0) < 1e-12
    # the search reports both literals of a concept with complementary AUROCs
    res = invert.explain(a[:, :1], y, length=1, beam_size=2 * y.shape[1], max_fraction=1.0)
    got = {str(e.formula): e.auroc for e in res[0]}
    for name, value in got.items():
        other = name[1:] if name.startswith("~") else "~" + name
        if other in got:
            assert abs(value + got[other] - 1.0) < 1e-12


@SETTINGS
@given(problems(), st.sampled_from(["exp", "cube", "affine"]))
def test_invariant_to_increasing_transform(prob, kind):
    a, y = prob
    t = {"exp": np.exp, "cube": lambda x: x**3, "affine": lambda x: 3.0 * x - 7.0}[kind]
    kw = dict(length=2, beam_size=4, max_fraction=1.0)
    r1 = invert.explain(a, y, **kw)
    r2 = invert.explain(t(a), y, **kw)
    assert _summary(r1) == _summary(r2)
    assert [[str(e.formula) for e in u] for u in r1] == [[str(e.formula) for e in u]
                                                         for u in r2]


@SETTINGS
@given(problems(), st.randoms(use_true_random=False))
def test_invariant_to_sample_permutation(prob, rnd):
    a, y = prob
    perm = list(range(len(a)))
    rnd.shuffle(perm)
    kw = dict(length=3, beam_size=3, max_fraction=0.9)
    r1 = invert.explain(a, y, **kw)
    r2 = invert.explain(a[perm], y[perm], **kw)
    assert _summary(r1) == _summary(r2)
    assert [[str(e.formula) for e in u] for u in r1] == [[str(e.formula) for e in u]
                                                         for u in r2]


@SETTINGS
@given(problems())
def test_reported_statistics_match_the_formula(prob):
    a, y = prob
    for k, unit in enumerate(invert.explain(a, y, length=3, beam_size=3, max_fraction=1.0)):
        for e in unit:
            m = e.evaluate(y)
            assert e.support == m.sum()
            assert abs(invert.auroc(a[:, k], m) - e.auroc) < 1e-12
            assert str(parse_formula(str(e.formula))) == str(e.formula)
            assert np.array_equal(parse_formula(str(e.formula)).evaluate(y), m)
