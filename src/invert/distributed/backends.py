"""Where shards run: one dispatcher, :func:`run_shards`, for this process and for Ray.

The sharded search and the sharded extraction both hand :func:`run_shards` a list of jobs
``((start, stop), args)`` and a callback. With the ``local`` backend each job runs here, one
after another, and an exception propagates as it is. With ``ray`` each job is a Ray task
(1 CPU, at most :attr:`Backend.workers` at once): a task whose worker dies or raises loses
only its own shard, and the run goes on; the failures come back as a dict, which the caller
turns into a :class:`ShardError` listing the missing shards.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from .._validate import bad

__all__ = ["Backend", "ShardError", "open_backend", "run_shards"]

log = logging.getLogger(__name__)

Span = tuple[int, int]
_RAY_HINT = "pip install 'invert[ray]'"


class ShardError(RuntimeError):
    """Some shards failed; the finished ones are kept and a rerun computes only these.

    Attributes
    ----------
    missing : list of (int, int)
        ``(start, stop)`` of each failed shard (units, or samples for extraction).
    errors : dict
        ``(start, stop)`` -> one-line error.
    """

    def __init__(self, what: str, missing: list[tuple[int, int]],
                 errors: Mapping[tuple[int, int], str]):
        self.missing = sorted(missing)
        self.errors = dict(errors)
        shown = ", ".join(f"[{a}, {b})" for a, b in self.missing[:10])
        more = f" and {len(self.missing) - 10} more" if len(self.missing) > 10 else ""
        first = self.errors.get(self.missing[0], "") if self.missing else ""
        super().__init__(
            f"{len(self.missing)} {what} shard(s) failed: {shown}{more} (first error: {first}); "
            "finished shards are kept, rerun to compute only the missing ones")


def import_ray():
    """The ``ray`` module, or an ImportError saying how to install it."""
    try:
        import ray
    except ImportError as err:
        raise ImportError(f"backend='ray' needs Ray: {_RAY_HINT}") from err
    return ray


class _RaySession:
    """``ray.init`` unless Ray already runs (then the caller's session is used as is)."""

    def __init__(self, address: str | None, num_cpus: int | None):
        self.ray = import_ray()
        self.started = False
        if self.ray.is_initialized():
            if address is not None:
                log.info("Ray is already initialised; address %r is not used", address)
            return
        kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                              "logging_level": logging.WARNING}
        if address is not None:
            kw["address"] = address
        elif num_cpus is not None:
            kw["num_cpus"] = num_cpus
        try:
            self.ray.init(**kw)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise bad("address", "a reachable Ray cluster ('auto', 'ray://host:port') or "
                      f"none for a local one (ray.init failed: {' '.join(str(err).split())})",
                      address) from err
        self.started = True

    def cpus(self) -> int:
        return max(1, int(self.ray.cluster_resources().get("CPU", 1)))

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


@dataclass
class Backend:
    """An open backend: ``name`` (``"local"`` or ``"ray"``), the ``ray`` module (None when
    local) and ``workers``, the shards that run at once (1 when local)."""

    name: str
    ray: Any = None
    workers: int = 1

    def share(self, obj: Any) -> Any:
        """``obj`` as a job argument: put in the Ray object store once (a reference that
        Ray resolves in each task), or ``obj`` itself when local."""
        return obj if self.ray is None else self.ray.put(obj)


@contextmanager
def open_backend(backend: str, address: str | None = None,
                 num_workers: int | None = None) -> Iterator[Backend]:
    """The validated ``backend`` opened for the duration of the ``with`` block.

    ``ray`` starts a local Ray with ``num_workers`` CPUs, or joins the cluster at
    ``address`` (a Ray already initialised is used as it is, and left running); it shuts
    down on exit only what it started.
    """
    if backend == "local":
        yield Backend("local")
        return
    session = _RaySession(address, num_workers)
    try:
        yield Backend("ray", session.ray, num_workers or session.cpus())
    finally:
        session.close()


def run_shards(backend: Backend, fn: Callable[..., Any], jobs: Sequence[tuple[Span, tuple]],
               on_done: Callable[[Span, Any], None], *, max_retries: int = 3,
               threads: int = 0) -> dict[Span, str]:
    """Run ``fn(*args)`` for each job ``(span, args)``; ``on_done(span, result)`` here.

    Parameters
    ----------
    backend : Backend
        From :func:`open_backend`.
    fn : callable
        A module-level function (Ray ships it by reference).
    jobs : sequence of ((int, int), tuple)
        The shard's span and the arguments of ``fn``, in the order to start them.
    on_done : callable
        Called in this process as each shard finishes (in finishing order on Ray).
    max_retries : int, default 3
        Ray: times a task is retried when its worker dies (not when ``fn`` raises).
    threads : int, default 0
        Ray: ``torch.set_num_threads(threads)`` in each task (0 leaves it alone).

    Returns
    -------
    dict
        ``span -> one-line error`` of each failed Ray shard (empty when all finished). The
        local backend raises instead, as ``fn`` does.
    """
    if backend.ray is None:
        for span, args in jobs:
            on_done(span, fn(*args))
        return {}
    if not jobs:
        return {}
    return _run_ray(backend, fn, jobs, on_done, max_retries, threads)


def _task(fn: Callable[..., Any], threads: int, *args: Any) -> Any:
    """The body of a Ray task: set the torch threads, then run the shard."""
    if threads:
        torch.set_num_threads(threads)
    return fn(*args)


def _run_ray(backend: Backend, fn: Callable[..., Any], jobs: Sequence[tuple[Span, tuple]],
             on_done: Callable[[Span, Any], None], max_retries: int,
             threads: int) -> dict[Span, str]:
    """Ray tasks, at most ``backend.workers`` in flight; the errors of failed ones."""
    ray = backend.ray
    remote = ray.remote(num_cpus=1, max_retries=max_retries, retry_exceptions=False)(_task)
    errors: dict[Span, str] = {}
    queue = list(reversed(jobs))
    pending: dict[Any, Span] = {}
    while queue or pending:
        while queue and len(pending) < backend.workers:
            span, args = queue.pop()
            pending[remote.remote(fn, threads, *args)] = span
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            span = pending.pop(ref)
            try:
                out = ray.get(ref)
            except Exception as err:  # noqa: BLE001 - a dead worker or a failing shard
                cause = getattr(err, "cause", None) or err  # RayTaskError wraps the exception
                msg = " ".join(str(cause).split())
                errors[span] = f"{type(cause).__name__}: {msg[:300]}"
                log.warning("shard [%d, %d) failed: %s", span[0], span[1], errors[span])
                continue
            on_done(span, out)
            del out
    return errors
