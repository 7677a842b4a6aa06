"""The one progress-bar helper: a tqdm bar (when tqdm is installed) as the
``progress(done, total)`` callback that the searches and the extraction call."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["progress_bar"]


@contextlib.contextmanager
def progress_bar(total: int | None, desc: str, enabled: bool, unit: str = "unit"
                 ) -> Iterator[Callable[[int, Any], Any] | None]:
    """A tqdm bar over units (when tqdm is installed and ``enabled``), as the
    ``progress(done, total)`` callback of the searches."""
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - depends on the environment
        yield None
        return
    bar = tqdm(total=total, desc=desc, unit=unit, disable=not enabled, leave=False)
    try:
        def tick(done: int, total: Any = None) -> None:
            if total and bar.total != total:  # the caller learns the total as it goes
                bar.total = total
            bar.update(done - bar.n)

        yield tick
    finally:
        bar.close()
