"""The default thread policy and the competition it reports."""

import pytest
import torch

from invert.engine import threads


@pytest.mark.parametrize(("cpus", "want"), [(1, 1), (2, 2), (8, 4)])
def test_default_threads_one_per_cpu_whatever_the_load(monkeypatch, cpus, want):
    monkeypatch.setattr(threads, "available_cpus", lambda: cpus)
    for runnable in (1, 3, 40):  # idle, two busy competitors, a crowded machine
        monkeypatch.setattr(threads, "_runnable_now", lambda r=runnable: r)
        assert threads.default_threads(torch.device("cpu")) == want
    assert threads.default_threads(torch.device("meta")) == 1  # not a CPU: one


@pytest.mark.parametrize(("reads", "want"), [
    ([1], 0.0),  # only this thread runs
    ([3, 3, 3], 2.0),  # two busy competitors
    ([5, 1, 5], 0.0),  # a short-lived process shows up in some reads only
])
def test_busy_cpus_counts_other_runnable_threads(monkeypatch, reads, want):
    it = iter(reads)
    monkeypatch.setattr(threads, "_runnable_now", lambda: next(it))
    monkeypatch.setattr(threads, "_LOAD_PAUSE", 0.0)
    assert threads.busy_cpus() == want


def test_load_average_without_proc(monkeypatch):
    monkeypatch.setattr(threads, "_runnable_now", lambda: None)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (2.6, 0.0, 0.0))
    assert threads.busy_cpus() == pytest.approx(2.6)
    assert "3 CPUs busy" in threads.thread_policy(torch.device("cpu"))


def test_results_do_not_depend_on_threads(rng):
    from invert.engine.search import explain

    y = rng.random((600, 12)) < 0.2
    a = (y[:, 1] | y[:, 4])[:, None] + 0.5 * rng.standard_normal((600, 150))  # 3 blocks
    one = explain(a, y, length=3, beam_size=3, threads=1)
    two = explain(a, y, length=3, beam_size=3, threads=2)
    for u1, u2 in zip(one, two, strict=True):
        assert [(str(e.formula), e.auroc) for e in u1] == [(str(e.formula), e.auroc) for e in u2]


def test_ordered_map_keeps_the_order_and_runs_past_a_slow_item():
    import threading
    import time

    started = []
    gate = threading.Event()

    def fn(i):
        started.append(i)
        if i == 0:  # the first item waits until a later one has started
            assert gate.wait(5.0)
        elif i == 2:
            gate.set()
        time.sleep(0.001)
        return i * i

    out = list(threads.ordered_map(fn, range(8), 2))
    assert out == [i * i for i in range(8)]
    assert 2 in started[:3]  # item 2 ran while item 0 was still running
    assert list(threads.ordered_map(fn, [], 2)) == []
