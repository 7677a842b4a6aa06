"""explain_sharded on Ray in local mode (2 CPUs): equality, a killed worker, resume."""

from __future__ import annotations

import numpy as np
import pytest
from _shard_helpers import SEARCH, FailOnce, assert_same

import invert
from invert.distributed import ShardError, explain_sharded

pytest.importorskip("ray")


def test_ray_equal_to_explain(ray_session, layer, tmp_path):
    a, cs = layer
    want = invert.explain(a, cs, **SEARCH)
    got = explain_sharded(a, cs, backend="ray", shard_units=2, **SEARCH)
    assert_same(got, want)
    path = tmp_path / "acts.npy"
    np.save(path, a)
    ticks = []
    got = explain_sharded(path, cs, backend="ray", out_dir=tmp_path / "out",
                          progress=lambda d, t: ticks.append((d, t)), **SEARCH)
    assert_same(got, want)
    assert ticks[-1] == (12, 12) and len(ticks) == len(
        list((tmp_path / "out" / "shards").glob("units_*.npz")))
    assert len(ticks) == 6  # default shard size: ceil(K / (4 x 2 CPUs)) = 2 units


def test_ray_sparse(ray_session, sparse_layer):
    a, y = sparse_layer
    search = {"length": 2, "beam_size": 2, "limit_search": 10}
    assert_same(explain_sharded(a, y, backend="ray", shard_units=3, num_workers=1, **search),
                invert.explain(a, y, **search))


def test_killed_worker_loses_only_its_shard(ray_session, layer, tmp_path):
    """A worker process that dies mid-run (os._exit) fails its shard only; the others are
    stored, and a rerun recomputes exactly the lost one."""
    a, cs = layer
    hook = FailOnce(tmp_path / "calls", fail_start=6, how="exit")
    out = tmp_path / "out"
    with pytest.raises(ShardError, match=r"1 search shard\(s\) failed: \[6, 9\)") as err:
        explain_sharded(a, cs, backend="ray", shard_units=3, out_dir=out, max_retries=0,
                        _before_shard=hook, **SEARCH)
    assert err.value.missing == [(6, 9)]
    assert "WorkerCrashedError" in err.value.errors[(6, 9)]
    assert sorted(p.name for p in (out / "shards").glob("units_*.npz")) == [
        "units_0_3.npz", "units_3_6.npz", "units_9_12.npz"]
    assert hook.calls() == [(0, 3), (3, 6), (6, 9), (9, 12)]
    hook.reset()
    got = explain_sharded(a, cs, backend="ray", shard_units=3, out_dir=out, max_retries=0,
                          _before_shard=hook, **SEARCH)
    assert hook.calls() == [(6, 9)]
    assert_same(got, invert.explain(a, cs, **SEARCH))


def test_raising_task_reported(ray_session, layer, tmp_path):
    a, cs = layer
    hook = FailOnce(tmp_path / "calls", fail_start=0, how="raise")
    with pytest.raises(ShardError, match="injected failure") as err:
        explain_sharded(a, cs, backend="ray", shard_units=6, out_dir=tmp_path, _before_shard=hook,
                        **SEARCH)
    assert err.value.missing == [(0, 6)]
    hook.reset()
    got = explain_sharded(a, cs, backend="local", shard_units=6, out_dir=tmp_path,
                          _before_shard=hook, **SEARCH)
    assert hook.calls() == [(0, 6)]  # backends share the store
    assert_same(got, invert.explain(a, cs, **SEARCH))
