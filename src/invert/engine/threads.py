"""The thread policy of a search: blocks of units run on a few worker threads of this
process, each computing with one torch thread.

By default a search takes one worker per CPU available to the process (at most
:data:`MAX_DEFAULT_THREADS`), whatever else runs. The workers never wait for each other
(no barrier, no spinning: a worker that finishes a block takes the next), so competing
processes only take their fair share: with two busy processes on two cores, two workers get
about one core where one worker gets two thirds of one. Measured on a 2-core VM with two
busy competitors on one core, two workers ran 1.25-1.6x faster than one; where other
sessions' processes held the CPUs (the kernel then shares them by session, not by
thread), two workers were 1-8% slower than one. :func:`busy_cpus` reports the competition
(benchmarks print it).
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

import torch

__all__ = ["MAX_DEFAULT_THREADS", "default_threads", "ordered_map", "thread_policy",
           "torch_threads"]

T = TypeVar("T")
R = TypeVar("R")

#: At most this many worker threads by default (more add memory and GIL contention for
#: little gain on the search's medium-sized operations).
MAX_DEFAULT_THREADS = 4


def available_cpus() -> int:
    """CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


#: Reads of the instantaneous run-queue count (the smallest is used: a busy competitor is
#: runnable at every read, a short-lived one is not) and the pause between them.
_LOAD_SAMPLES = 3
_LOAD_PAUSE = 0.002


def _runnable_now() -> int | None:
    """Threads running or waiting to run on the machine now, this one included
    (``/proc/loadavg``'s fourth field), or None where that is not available."""
    try:
        with open("/proc/loadavg", encoding="ascii") as f:
            return int(f.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return None


def busy_cpus() -> float:
    """CPUs kept busy by other threads: the run-queue count less this thread (the smallest
    of a few reads), else the one-minute load average, else 0."""
    counts = []
    for i in range(_LOAD_SAMPLES):
        n = _runnable_now()
        if n is None:
            break
        counts.append(n - 1)
        if counts[-1] <= 0:
            break
        if i + 1 < _LOAD_SAMPLES:
            time.sleep(_LOAD_PAUSE)
    if counts:
        return float(max(0, min(counts)))
    try:
        return max(0.0, os.getloadavg()[0])
    except (AttributeError, OSError):  # pragma: no cover - not on a Unix
        return 0.0


def default_threads(device: torch.device) -> int:
    """Worker threads when ``threads=None``: the CPUs available to this process, at most
    :data:`MAX_DEFAULT_THREADS`; one on a GPU (its kernels run one after another)."""
    if device.type != "cpu":
        return 1
    return min(MAX_DEFAULT_THREADS, available_cpus())


def thread_policy(device: torch.device) -> str:
    """The rule :func:`default_threads` follows, in words, with the competition now (for
    benchmarks and logs)."""
    if device.type != "cpu":
        return "1 on a GPU"
    return (f"one per available CPU, at most {MAX_DEFAULT_THREADS}; "
            f"{busy_cpus():.0f} CPUs busy with other threads now")


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)``, restoring the caller's setting
    afterwards (the setting is process-wide)."""
    before = torch.get_num_threads()
    if before == n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def ordered_map(fn: Callable[[T], R], items: Iterable[T], threads: int,
                ahead: int = 2) -> Iterator[R]:
    """``fn(item)`` for each item, in order, computed on ``threads`` worker threads. At most
    ``ahead * threads`` items are submitted and not yet yielded (``threads`` of them
    running: the memory of a running item stays that of ``threads`` items), so a worker
    that finishes early takes the next item instead of waiting for a slower one ahead of it.
    ``items`` is read here, as items are submitted. With one thread everything runs here, in
    order."""
    if threads <= 1:
        for item in items:
            yield fn(item)
        return
    most = max(1, ahead) * threads
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="invert") as pool:
        pending: deque[Future[R]] = deque()
        try:
            for item in items:
                while len(pending) >= most or (pending and pending[0].done()):
                    yield pending.popleft().result()
                pending.append(pool.submit(fn, item))
            while pending:
                yield pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()
