"""The torch-only code path that CUDA runs (torch.sort ranking, torch sparse products) gives
exactly the CPU path's results; run here on the CPU (``kernel="torch"``) so that it is checked
without a GPU."""

import numpy as np
import pytest

import invert
from invert.engine.search import explain
from invert.engine.synthetic import make_layer, make_multilabel_layer


def _flat(res):
    return [[(str(e.formula), e.auroc, e.support, e.p_value) for e in u] for u in res]


@pytest.mark.parametrize("dedupe", [True, False])
@pytest.mark.parametrize("multilabel", [False, True])
def test_torch_path_equals_cpu_path(dedupe, multilabel):
    layer = (make_multilabel_layer(n_samples=5000, n_concepts=80, n_units=12, n_planted=6,
                                   seed=2) if multilabel else
             make_layer(n_leaves=150, samples_per_leaf=20, n_hypernyms=60, n_units=12,
                        n_planted=8, seed=5))
    acts = layer.activations.copy()
    acts[:, 3] = np.round(acts[:, 3])  # ties
    kw = dict(length=3, beam_size=4, min_fraction=0.004, dedupe=dedupe)
    ref = invert.explain(acts, layer.concepts, **kw)
    got = explain(acts, layer.concepts, kernel="torch", **kw)
    assert _flat(got) == _flat(ref)
