"""What ``memory_budget`` bounds: process growth of a search of a memory-mapped layer.

Writes a 50,000 x 1,024 float32 layer (195 MiB) as a ``.npy``, then for each budget runs,
in a fresh process, one warm-up search (library start-up is not the budget's) and the
search of the layer from its path, out of core (L = 3, B = 5), and prints how much the process grew
(the peak RSS, ``VmHWM``, reset before the search, minus the RSS then; Linux), beside the
baseline: the layer loaded whole.

    python benchmarks/bench_memory.py [--budgets 16MiB 64MiB 128MiB]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CHILD = r"""
import json, sys, warnings
import numpy as np, invert
path, budget = sys.argv[1], sys.argv[2]
y = np.load(path.replace("acts.npy", "labels.npy"))
invert.explain(np.random.default_rng(0).standard_normal((y.shape[0], 4)), y, length=3, beam_size=5)
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
before = status("VmRSS")
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    if budget == "whole":
        invert.explain(np.load(path), y, length=3, beam_size=5)
    else:
        invert.explain(path, y, length=3, beam_size=5,
                       memory_budget=budget)
after = status("VmHWM")
print(json.dumps({"grew_mib": (after - before) / 1024, "warnings": [str(x.message) for x in w]}))
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budgets", nargs="+", default=["16MiB", "64MiB", "128MiB"])
    ap.add_argument("--samples", type=int, default=50_000)
    ap.add_argument("--units", type=int, default=1_024)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    n, k = args.samples, args.units
    y = np.zeros((n, 100), bool)
    y[np.arange(n), rng.integers(0, 100, n)] = True
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "acts.npy"
        a = rng.standard_normal((n, k)).astype(np.float32)
        a[:, :64] += 2.0 * y[:, :64]
        np.save(path, np.asfortranarray(a))
        np.save(Path(tmp) / "labels.npy", y)
        del a
        size = path.stat().st_size / 2**20
        print(f"layer: {n:,} x {k:,} float32, {size:.0f} MiB memory-mapped .npy; "
              f"100 concepts; L=3 B=5; growth = peak RSS during the search minus RSS before it")
        for budget in [*args.budgets, "whole"]:
            out = subprocess.run([sys.executable, "-c", CHILD, str(path), budget],
                                 capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            what = "loaded whole (baseline)" if budget == "whole" else f"budget {budget}"
            note = f"  [{'; '.join(r['warnings'])}]" if r["warnings"] else ""
            print(f"{what:>24}: process grew {r['grew_mib']:6.0f} MiB{note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
