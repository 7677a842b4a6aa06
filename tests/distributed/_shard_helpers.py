"""Helpers of the scale-out tests: fault injection, and exact comparison of results."""

from __future__ import annotations

import os
import time
from pathlib import Path

#: Search parameters of the scale-out tests.
SEARCH = {"length": 3, "beam_size": 3}


class FailOnce:
    """``hook(start, stop)``: records each call in ``folder``; the first call for shard
    ``start == fail_start`` kills the worker process (``how="exit"``) or raises."""

    def __init__(self, folder, fail_start: int | None = None, how: str = "exit"):
        self.folder = str(folder)
        self.fail_start = fail_start
        self.how = how
        Path(folder).mkdir(parents=True, exist_ok=True)

    def __call__(self, start: int, stop: int) -> None:
        folder = Path(self.folder)
        (folder / f"call_{start}_{stop}_{os.getpid()}_{time.time_ns()}").touch()
        if start == self.fail_start:
            marker = folder / f"failed_{start}"
            if not marker.exists():
                marker.touch()
                if self.how == "exit":
                    os._exit(1)
                raise RuntimeError(f"injected failure in shard starting at {start}")

    def calls(self) -> list[tuple[int, int]]:
        out = []
        for p in Path(self.folder).glob("call_*"):
            _, a, b, *_ = p.name.split("_")
            out.append((int(a), int(b)))
        return sorted(out)

    def reset(self) -> None:
        for p in Path(self.folder).glob("call_*"):
            p.unlink()


def assert_same(got, want):
    """Sharded and single-process results agree exactly."""
    assert len(got) == len(want)
    assert got.concept_names == want.concept_names
    assert got.undefined_concepts == want.undefined_concepts
    assert got.params == want.params
    assert got.n_samples == want.n_samples
    for u, v in zip(got, want, strict=True):
        assert (u.unit, u.unit_id, u.reason) == (v.unit, v.unit_id, v.reason)
        assert [str(e.formula) for e in u] == [str(e.formula) for e in v]
        assert [(e.auroc, e.support, e.p_value, e.log10_p_value, e.unit, e.rank) for e in u] \
            == [(e.auroc, e.support, e.p_value, e.log10_p_value, e.unit, e.rank) for e in v]
        assert list(u) == list(v)
