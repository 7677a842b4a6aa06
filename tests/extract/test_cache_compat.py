"""An activation cache written by invert 0.1.0, before the redesign, is still hit after it.

The fixture ``data/cache_v0_1_0`` was written by the old code (``data/make_cache_v0_1_0.py``)
for the runs of :func:`_extract_models.cache_fixture_runs`. Reading it must not run the
model at all and must give the values that a fresh extraction gives.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from _extract_models import cache_fixture_runs

from invert.extract import collect_activations

FIXTURE = Path(__file__).parent / "data" / "cache_v0_1_0"
NAMES = [name for name, *_ in cache_fixture_runs()]


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _as_dict(got):
    return got if isinstance(got, dict) else {got.layer: got}


@pytest.mark.parametrize("name", NAMES)
def test_cache_from_before_the_redesign_is_hit(tmp_path, name):
    cache = tmp_path / "cache"
    shutil.copytree(FIXTURE, cache)
    before = _files(cache)
    _, model, data, layers, kwargs = next(r for r in cache_fixture_runs() if r[0] == name)
    calls = []
    model.register_forward_pre_hook(lambda *_: calls.append(1))

    got = _as_dict(collect_activations(model, data, layers, cache_dir=cache, progress=False,
                                       **kwargs))

    assert calls == []  # a cache hit: the model never ran
    assert _files(cache) == before  # nothing recomputed or rewritten
    _, fresh_model, fresh_data, _, _ = next(r for r in cache_fixture_runs() if r[0] == name)
    want = _as_dict(collect_activations(fresh_model, fresh_data, layers, progress=False,
                                        **kwargs))
    assert list(got) == list(want)
    for layer, acts in got.items():
        assert acts.cache_path is not None and Path(acts.cache_path).parent == cache
        np.testing.assert_allclose(np.asarray(acts), np.asarray(want[layer]), rtol=1e-6,
                                   atol=1e-7)
        assert acts.unit_ids == want[layer].unit_ids
        assert acts.sample_ids == want[layer].sample_ids
        assert acts.reduction == want[layer].reduction
        if want[layer].token_index is not None:
            np.testing.assert_array_equal(acts.token_index, want[layer].token_index)
