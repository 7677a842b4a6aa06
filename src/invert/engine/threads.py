"""The thread policy of a search: blocks of units run on a few worker threads of this
process, each computing with one torch thread.

Each block of units is independent (its own ranking, beam search and results), so the
workers never wait for each other inside an operation: on a busy machine a descheduled
worker delays only its own block, where torch's intra-op threads (which meet at a barrier
in every operation) would stall together. numpy sorts, scipy's sparse products and torch
operations release the GIL while they run. Results do not depend on the number of threads.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

import torch

__all__ = ["MAX_DEFAULT_THREADS", "default_threads", "ordered_map", "torch_threads"]

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


def default_threads(device: torch.device) -> int:
    """Worker threads when ``threads=None``: the CPUs available to this process, at most
    :data:`MAX_DEFAULT_THREADS`; one on a GPU (its kernels run one after another)."""
    if device.type != "cpu":
        return 1
    return min(MAX_DEFAULT_THREADS, available_cpus())


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


def ordered_map(fn: Callable[[T], R], items: Iterable[T], threads: int) -> Iterator[R]:
    """``fn(item)`` for each item, in order, computed on ``threads`` worker threads with at
    most ``threads`` items in flight (so memory stays that of ``threads`` items). With one
    thread everything runs here, in order."""
    if threads <= 1:
        for item in items:
            yield fn(item)
        return
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="invert") as pool:
        pending: deque[Future[R]] = deque()
        try:
            for item in items:
                if len(pending) >= threads:
                    yield pending.popleft().result()
                pending.append(pool.submit(fn, item))
            while pending:
                yield pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()
