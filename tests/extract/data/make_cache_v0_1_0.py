"""Writes the cache fixture ``cache_v0_1_0`` with the code from before the redesign.

Run once, with invert 0.1.0 (commit 668ecb8) on the path and the working directory at the
repository root::

    git worktree add /tmp/old-invert 668ecb8
    PYTHONPATH=/tmp/old-invert/src python tests/extract/data/make_cache_v0_1_0.py

``tests/extract/test_cache_compat.py`` reads it with the current code and requires a cache hit.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def main() -> None:
    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here.parent))  # _extract_models, under the name the tests use
    from _extract_models import cache_fixture_runs

    import invert
    from invert import collect_activations

    out = here / "cache_v0_1_0"
    shutil.rmtree(out, ignore_errors=True)
    for name, model, data, layers, kwargs in cache_fixture_runs():
        got = collect_activations(model, data, layers, cache_dir=out, progress=False, **kwargs)
        print(name, "written by", invert.__file__, {k: v.shape for k, v in (
            got.items() if isinstance(got, dict) else [(got.layer, got)])})


if __name__ == "__main__":
    main()
