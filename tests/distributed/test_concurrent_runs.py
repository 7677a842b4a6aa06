"""Two sharded searches on one ``out_dir`` (issue 14 D): a different run is refused up front
and never deletes the running search's shards; the same run waits and reuses them."""

from __future__ import annotations

import threading

import pytest
from _shard_helpers import SEARCH, FailOnce, assert_same

import invert
from invert._validate import InvalidParameterError
from invert.distributed import explain_sharded


def test_other_run_in_a_busy_folder_is_refused_up_front(layer, tmp_path):
    a, cs = layer
    other = dict(SEARCH, beam_size=2)
    refused = []

    def hook(start, stop):
        if start == 6:  # the first run is half done: a second, different run starts
            with pytest.raises(InvalidParameterError) as err:
                explain_sharded(a, cs, shard_units=6, out_dir=tmp_path, **other)
            refused.append(str(err.value))

    got = explain_sharded(a, cs, shard_units=6, out_dir=tmp_path, _before_shard=hook,
                          **SEARCH)
    (msg,) = refused
    assert f"out_dir: expected a folder that no other running search uses, got " \
           f"'{tmp_path}'" in msg
    assert "beam_size 3 (here 2)" in msg
    assert_same(got, invert.explain(a, cs, **SEARCH))
    shards = tmp_path / "shards"
    assert sorted(p.name for p in shards.iterdir()) == [
        "manifest.json", "units_0_6.npz", "units_6_12.npz"]  # kept, and no lock file left
    hook2 = FailOnce(tmp_path / "calls")  # the first run's shards are reused
    again = explain_sharded(a, cs, shard_units=6, out_dir=tmp_path, _before_shard=hook2,
                            **SEARCH)
    assert hook2.calls() == []
    assert_same(again, got)


def test_same_run_waits_for_the_first_and_reuses_its_shards(layer, tmp_path):
    a, cs = layer
    paused, go = threading.Event(), threading.Event()

    def slow(start, stop):
        if start == 6:
            paused.set()
            go.wait(60)

    results = {}

    def first():
        results["first"] = explain_sharded(a, cs, shard_units=6, out_dir=tmp_path,
                                           _before_shard=slow, **SEARCH)

    hook = FailOnce(tmp_path / "calls")

    def second():
        results["second"] = explain_sharded(a, cs, shard_units=6, out_dir=tmp_path,
                                            _before_shard=hook, **SEARCH)

    t1 = threading.Thread(target=first)
    t1.start()
    assert paused.wait(60)
    t2 = threading.Thread(target=second)
    t2.start()
    t2.join(1.0)
    assert t2.is_alive()  # waiting for the first run
    go.set()
    t1.join(120)
    t2.join(120)
    assert hook.calls() == []  # nothing computed twice
    want = invert.explain(a, cs, **SEARCH)
    assert_same(results["first"], want)
    assert_same(results["second"], want)
