"""summary() and repr of results: a support-1 formula at AUROC 1.0 does not outrank a unit
explained by a concept on many samples (issue 12), and the repr stays short."""

from __future__ import annotations

import numpy as np

import invert
from invert.engine.result import rank_score


def _layer():
    rng = np.random.default_rng(0)
    n = 400
    y = np.zeros((n, 3), dtype=bool)
    y[:80, 0] = True          # a concept on 80 samples
    y[200, 1] = True          # a "file name": one sample
    y[100:300, 2] = True
    a = np.empty((n, 2))
    a[:, 0] = y[:, 0] * 1.5 + rng.standard_normal(n)     # planted, AUROC ~0.85
    a[:, 1] = rng.standard_normal(n)
    a[200, 1] = 10.0                                      # noise unit, top sample alone
    return a, y


def test_summary_ranks_by_the_lower_bound_not_by_auroc():
    a, y = _layer()
    res = invert.explain(a, y, length=1, beam_size=1)
    planted, noise = res[0][0], res[1][0]
    assert noise.support == 1 and noise.auroc == 1.0 > planted.auroc
    assert rank_score(planted) > rank_score(noise)
    table = res.summary().splitlines()
    assert table[1].split()[0] == "0" and table[2].split()[0] == "1"


def test_holdout_auroc_ranks_first_when_present():
    a, y = _layer()
    res = invert.explain(a, y, length=1, beam_size=1, holdout=0.5, random_state=0)
    e = res[0][0]
    assert rank_score(e) == e.extras["holdout_auroc"]


def test_repr_is_short():
    a, y = _layer()
    res = invert.explain(np.tile(a, (1, 500)), y, length=1, beam_size=2)
    text = repr(res)
    assert len(text) < 200 and "1000 units" in text
