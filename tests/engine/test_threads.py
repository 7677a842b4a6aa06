"""The default thread policy: one worker per idle CPU."""

import pytest
import torch

from invert.engine import threads


@pytest.mark.parametrize(("cpus", "runnable", "want"), [
    (2, 1, 2),  # only this thread runs: both CPUs idle
    (2, 2, 1),  # one busy competitor
    (2, 3, 1),  # two busy competitors: one worker
    (8, 3, 4),  # capped at MAX_DEFAULT_THREADS
    (8, 6, 3),
    (1, 1, 1),
])
def test_default_threads_counts_idle_cpus(monkeypatch, cpus, runnable, want):
    monkeypatch.setattr(threads, "available_cpus", lambda: cpus)
    monkeypatch.setattr(threads, "_runnable_now", lambda: runnable)
    monkeypatch.setattr(threads, "_LOAD_PAUSE", 0.0)
    assert threads.default_threads(torch.device("cpu")) == want
    assert threads.default_threads(torch.device("meta")) == 1  # not a CPU: one


def test_transient_competitor_is_not_counted(monkeypatch):
    reads = iter([5, 1, 5])  # a short-lived process shows up in one read only
    monkeypatch.setattr(threads, "available_cpus", lambda: 2)
    monkeypatch.setattr(threads, "_runnable_now", lambda: next(reads))
    monkeypatch.setattr(threads, "_LOAD_PAUSE", 0.0)
    assert threads.default_threads(torch.device("cpu")) == 2


def test_load_average_without_proc(monkeypatch):
    monkeypatch.setattr(threads, "available_cpus", lambda: 4)
    monkeypatch.setattr(threads, "_runnable_now", lambda: None)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (2.6, 0.0, 0.0))
    assert threads.busy_cpus() == pytest.approx(2.6)
    assert threads.default_threads(torch.device("cpu")) == 1  # int(4 - 2.6)


def test_results_do_not_depend_on_threads(rng):
    from invert.engine.search import explain

    y = rng.random((600, 12)) < 0.2
    a = (y[:, 1] | y[:, 4])[:, None] + 0.5 * rng.standard_normal((600, 150))  # 3 blocks
    one = explain(a, y, length=3, beam_size=3, threads=1)
    two = explain(a, y, length=3, beam_size=3, threads=2)
    for u1, u2 in zip(one, two, strict=True):
        assert [(str(e.formula), e.auroc) for e in u1] == [(str(e.formula), e.auroc) for e in u2]
