"""Small synthetic layers and one Ray session (2 CPUs) for the scale-out tests."""

from __future__ import annotations

import numpy as np
import pytest

from invert.engine.synthetic import make_layer, make_multilabel_layer


@pytest.fixture(scope="session")
def layer():
    """N=300 exclusive-leaf samples, C=40 concepts, K=12 units: 6 planted, one constant,
    one integer-valued (ties)."""
    lay = make_layer(n_leaves=30, samples_per_leaf=10, n_hypernyms=10, n_units=12,
                     n_planted=6, seed=3)
    a = lay.activations.astype(np.float32)
    a[:, 8] = 1.5
    a[:, 9] = np.round(a[:, 9])
    return a, lay.concepts


@pytest.fixture(scope="session")
def sparse_layer():
    lay = make_multilabel_layer(n_samples=240, n_concepts=25, labels_per_sample=(2, 4),
                                n_units=9, n_planted=4, seed=5)
    import scipy.sparse as sp

    return lay.activations.astype(np.float32), sp.csr_matrix(lay.concepts.matrix)


@pytest.fixture(scope="session")
def ray_session():
    """Ray in local mode on 2 CPUs, shared by all tests of the session."""
    ray = pytest.importorskip("ray")
    import _shard_helpers

    ray.cloudpickle.register_pickle_by_value(_shard_helpers)
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    yield ray
    if started:
        ray.shutdown()
