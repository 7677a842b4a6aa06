"""explain_sharded without Ray: exact equality, out-of-core reads, resume, validation."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from _shard_helpers import SEARCH, FailOnce, assert_same

import invert
from invert.distributed import ShardError, explain_sharded, plan_shard_units
from invert.engine.inputs import NpyColumns


@pytest.mark.parametrize("shard_units", [1, 5, 12, 50])
def test_equal_to_explain_dense(layer, shard_units):
    a, cs = layer
    want = invert.explain(a, cs, **SEARCH)
    got = explain_sharded(a, cs, shard_units=shard_units, **SEARCH)
    assert_same(got, want)
    assert got[8].reason and not got[8]  # the constant unit
    assert any(len(u) for u in got)


def test_equal_to_explain_sparse_negative(sparse_layer):
    a, y = sparse_layer
    search = {"length": 2, "beam_size": 4, "mode": "negative", "min_fraction": 0.05,
              "dedupe": False}
    assert_same(explain_sharded(a, y, shard_units=4, **search), invert.explain(a, y, **search))


@pytest.mark.parametrize("order", ["C", "F"])
def test_npy_path_and_memmap(layer, tmp_path, order):
    a, cs = layer
    path = tmp_path / "acts.npy"
    np.save(path, np.asarray(a, order=order))
    src = NpyColumns.open(path)
    assert src.fortran == (order == "F")
    np.testing.assert_array_equal(src.read(3, 7), a[:, 3:7])
    want = invert.explain(a, cs, **SEARCH)
    assert_same(explain_sharded(path, cs, shard_units=5, **SEARCH), want)
    mm = np.load(path, mmap_mode="r")
    assert_same(explain_sharded(mm, cs, shard_units=5, **SEARCH), want)


def test_small_read_chunks(layer, tmp_path):
    """Reads in row (or column) chunks much smaller than a shard give the same columns."""
    a, _ = layer
    for order in "CF":
        path = tmp_path / f"acts{order}.npy"
        np.save(path, np.asarray(a, order=order))
        src = NpyColumns.open(path, read_chunk=7 * 4 * a.shape[1])
        np.testing.assert_array_equal(src.read(2, 11), a[:, 2:11])


def test_unit_ids(layer):
    a, cs = layer
    ids = [f"u{k}" for k in range(a.shape[1])]
    got = explain_sharded(a, cs, shard_units=5, unit_ids=ids, **SEARCH)
    assert got.unit_ids == ids
    assert [u.unit for u in got] == list(range(a.shape[1]))
    assert all(e.unit == k for k, u in enumerate(got) for e in u)


def test_interrupt_then_resume(layer, tmp_path):
    """An exception from the progress callback stops the run; the finished shards are kept
    and a rerun computes only the others."""
    a, cs = layer
    hook = FailOnce(tmp_path / "calls")
    seen = []

    def stop_after_two(done, total):
        seen.append(done)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        explain_sharded(a, cs, shard_units=3, out_dir=tmp_path / "out", progress=stop_after_two,
                        _before_shard=hook, **SEARCH)
    files = sorted(p.name for p in (tmp_path / "out" / "shards").glob("units_*.npz"))
    assert files == ["units_0_3.npz", "units_3_6.npz"]
    stat = {f: os.stat(tmp_path / "out" / "shards" / f).st_mtime_ns for f in files}
    hook.reset()
    got = explain_sharded(a, cs, shard_units=3, out_dir=tmp_path / "out", _before_shard=hook,
                          **SEARCH)
    assert hook.calls() == [(6, 9), (9, 12)]
    assert {f: os.stat(tmp_path / "out" / "shards" / f).st_mtime_ns for f in files} == stat
    assert_same(got, invert.explain(a, cs, **SEARCH))
    hook.reset()  # a third run computes nothing
    assert_same(explain_sharded(a, cs, out_dir=tmp_path / "out", _before_shard=hook, **SEARCH),
                got)
    assert hook.calls() == []


def test_failure_in_shard_keeps_finished(layer, tmp_path):
    a, cs = layer
    hook = FailOnce(tmp_path / "calls", fail_start=4, how="raise")
    with pytest.raises(RuntimeError, match="injected"):
        explain_sharded(a, cs, shard_units=4, out_dir=tmp_path, _before_shard=hook, **SEARCH)
    hook.reset()
    got = explain_sharded(a, cs, shard_units=4, out_dir=tmp_path, _before_shard=hook, **SEARCH)
    assert hook.calls() == [(4, 8), (8, 12)]
    assert_same(got, invert.explain(a, cs, **SEARCH))


def test_other_shard_size_fills_gaps(layer, tmp_path):
    a, cs = layer
    explain_sharded(a[:, :12], cs, shard_units=5, out_dir=tmp_path, **SEARCH)
    (tmp_path / "shards" / "units_5_10.npz").unlink()
    hook = FailOnce(tmp_path / "calls")
    got = explain_sharded(a, cs, shard_units=2, out_dir=tmp_path, _before_shard=hook, **SEARCH)
    assert hook.calls() == [(5, 7), (7, 9), (9, 10)]
    assert_same(got, invert.explain(a, cs, **SEARCH))


def test_changed_run_rebuilds(layer, tmp_path):
    """Another parameter (or other activations) never mixes with stored shards."""
    a, cs = layer
    explain_sharded(a, cs, shard_units=6, out_dir=tmp_path, **SEARCH)
    key = json.loads((tmp_path / "shards" / "manifest.json").read_text())["key"]
    hook = FailOnce(tmp_path / "calls")
    other = dict(SEARCH, beam_size=2)
    got = explain_sharded(a, cs, shard_units=6, out_dir=tmp_path, _before_shard=hook, **other)
    assert hook.calls() == [(0, 6), (6, 12)]
    assert json.loads((tmp_path / "shards" / "manifest.json").read_text())["key"] != key
    assert_same(got, invert.explain(a, cs, **other))
    hook.reset()
    b = a.copy()
    b[0, 0] += 1
    explain_sharded(b, cs, shard_units=6, out_dir=tmp_path, _before_shard=hook, **other)
    assert hook.calls() == [(0, 6), (6, 12)]


def test_broken_shard_file_is_reported_and_recomputed(layer, tmp_path):
    a, cs = layer
    explain_sharded(a, cs, shard_units=6, out_dir=tmp_path, **SEARCH)
    (tmp_path / "shards" / "units_6_12.npz").write_bytes(b"not a pickle")
    with pytest.raises(ShardError, match=r"\[6, 12\)") as err:
        explain_sharded(a, cs, shard_units=6, out_dir=tmp_path, **SEARCH)
    assert err.value.missing == [(6, 12)]
    assert_same(explain_sharded(a, cs, out_dir=tmp_path, **SEARCH), invert.explain(a, cs, **SEARCH))


def test_plan_shard_units():
    units, search_budget = plan_shard_units(200_000, 512, "256MiB")
    assert search_budget == 128 << 20
    assert units * 200_000 * 5 <= 128 << 20 < (units + 1) * 200_000 * 5
    assert plan_shard_units(10, 3, 1 << 30)[0] == 3
    assert plan_shard_units(10**9, 3, "1MiB")[0] == 1
    assert plan_shard_units(1000, 10**6, "64MiB", itemsize=8, floating=False)[0] == (
        ((64 << 20) - (32 << 20)) // (1000 * 17))


def test_budget_picks_shards(layer, tmp_path):
    a, cs = layer
    units, _ = plan_shard_units(a.shape[0], a.shape[1], "2MiB")
    assert units == a.shape[1]  # small data: one shard
    got = explain_sharded(a, cs, out_dir=tmp_path, memory_budget="2MiB", **SEARCH)
    assert [p.name for p in (tmp_path / "shards").glob("units_*.npz")] == ["units_0_12.npz"]
    assert_same(got, invert.explain(a, cs, **SEARCH))


@pytest.mark.parametrize(("kw", "exc", "msg"), [
    ({"backend": "spark"}, ValueError, "backend: expected one of 'local', 'ray'"),
    ({"shard_units": 0}, ValueError, "shard_units: expected an integer >= 1"),
    ({"length": 0}, ValueError, "length: expected an integer >= 1"),
    ({"beam": 3}, TypeError, "search: expected keyword arguments"),
    ({"unit_ids": ["a"]}, ValueError, "unit_ids: expected 12 ids"),
    ({"memory_budget": "lots"}, ValueError, "memory_budget: expected"),
    ({"limit_search": 1000}, ValueError, "limit_search: expected an integer in"),
])
def test_validation(layer, kw, exc, msg):
    a, cs = layer
    with pytest.raises(exc, match=msg):
        explain_sharded(a, cs, **kw)


def test_bad_inputs(layer, tmp_path):
    a, cs = layer
    with pytest.raises(FileNotFoundError, match="activations: file"):
        explain_sharded(tmp_path / "missing.npy", cs)
    with pytest.raises(ValueError, match="concepts: expected 300 rows"):
        explain_sharded(a, np.zeros((5, 2), bool))
    with pytest.raises(ValueError, match="activations: expected shape"):
        explain_sharded(np.zeros((3, 2, 2)), cs)


def test_ray_missing_gives_hint(layer, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)
    a, cs = layer
    with pytest.raises(ImportError, match=r"pip install 'invert\[ray\]'"):
        explain_sharded(a, cs, backend="ray")


def test_ray_tasks_search_with_their_threads(layer):
    """A Ray task reserves one CPU: its search gets ``threads=threads_per_worker`` worker
    threads (the engine's default would take every CPU the worker sees); locally, and with
    0, the engine keeps its default."""
    from types import SimpleNamespace

    from invert.distributed.backends import Backend
    from invert.distributed.search import _prepare, _shard_jobs

    a, cs = layer
    run = _prepare(a, cs, None, SEARCH, 1 << 30)
    fake_ray = Backend("ray", SimpleNamespace(put=lambda obj: obj), 2)
    jobs = _shard_jobs(run, fake_ray, [(0, 6), (6, 12)], 1, None)
    assert [span for span, _ in jobs] == [(0, 6), (6, 12)]
    assert all(args[4]["threads"] == 1 for _, args in jobs)
    assert all(args[4] == run.engine_kw | {"threads": 1} for _, args in jobs)
    for be, threads in ((Backend("local"), 1), (fake_ray, 0)):
        assert all("threads" not in args[4] for _, args in _shard_jobs(run, be, [(0, 12)],
                                                                        threads, None))


def test_bfloat16_tensor_is_widened_like_the_plain_search():
    """A bfloat16 tensor (numpy has no such dtype) is searched as its float32 widening."""
    import torch

    rng = np.random.default_rng(0)
    y = rng.random((300, 6)) < 0.3
    a = torch.tensor(y[:, [1, 2, 4]] + 0.3 * rng.standard_normal((300, 3)),
                     dtype=torch.bfloat16)
    got = explain_sharded(a, y, length=2, beam_size=3)
    want = invert.explain(a.float(), y, length=2, beam_size=3)
    for k in range(3):
        assert str(got[k][0].formula) == str(want[k][0].formula)
        assert got[k][0].auroc == want[k][0].auroc
    assert [str(got[k][0].formula) for k in range(3)] == ["1", "2", "4"]
