"""summary() and repr of results: a support-1 formula at AUROC 1.0 does not outrank a unit
explained by a concept on many samples (issue 12), and the repr stays short."""

from __future__ import annotations

import dataclasses

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


def test_holdout_interval_ranks_first_when_present():
    """With a holdout the lower bound of the held-out AUROC's score interval ranks: a
    formula on 4 held-out samples at 0.996 comes after one on 40 at 0.95 (DeLong's
    interval, [0.987, 1] on 4 samples, would put it first)."""
    from invert.engine.stats import newcombe_interval

    a, y = _layer()
    res = invert.explain(a, y, length=1, beam_size=1, holdout=0.5, random_state=0)
    e = res[0][0]
    n = round(e.support / e.fraction)
    hs = e.extras["holdout_support"]
    want = newcombe_interval(e.extras["holdout_auroc"], hs, n - hs)[0]
    assert rank_score(e) == want < e.extras["holdout_auroc"]

    def held(auroc, n1):
        return dataclasses.replace(e, extras={"holdout_auroc": auroc, "holdout_support": n1,
                                              "holdout_auroc_ci_low": 0.987,
                                              "holdout_auroc_ci_high": 1.0})

    lucky, solid = held(0.996, 4), held(0.95, 40)
    assert rank_score(solid) > rank_score(lucky)
    lucky, solid = held(0.004, 4), held(0.05, 40)  # negative mode: low AUROC explains
    assert rank_score(solid, "negative") > rank_score(lucky, "negative")
    # no held-out support recorded: the stored interval's bound
    bare = dataclasses.replace(e, extras={"holdout_auroc": 0.9, "holdout_auroc_ci_low": 0.8})
    assert rank_score(bare) == 0.8


def test_repr_is_short():
    a, y = _layer()
    res = invert.explain(np.tile(a, (1, 500)), y, length=1, beam_size=2)
    text = repr(res)
    assert len(text) < 200 and "1000 units" in text
