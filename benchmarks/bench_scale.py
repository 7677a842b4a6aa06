"""Scale-out benchmark: sharded search throughput (1 and 2 Ray workers) and out-of-core memory.

Prints

1. throughput in units x samples per second of ``invert.explain`` (the baseline, same run),
   of ``explain_sharded`` with the local backend (in memory, and writing each shard to the
   ``out_dir`` store, then reading them all back on a rerun), and with Ray local mode on 1
   and 2 workers (Ray start-up timed apart), plus a scaling *estimate* for W workers;
2. peak RSS of a fresh process that searches a memory-mapped ``.npy`` file larger than its
   ``--memory-budget`` with ``explain_sharded``, against a process that loads the file
   whole and calls ``invert.explain`` (the baseline, same run).

Usage::

    .venv/bin/python benchmarks/bench_scale.py            # about 2 minutes on 2 cores
    .venv/bin/python benchmarks/bench_scale.py --quick    # smaller sizes
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _layer(n_units: int, quick: bool):
    from invert.engine.synthetic import make_layer

    return make_layer(n_leaves=100 if quick else 200, samples_per_leaf=40 if quick else 50,
                      n_hypernyms=40 if quick else 80, n_units=n_units, n_planted=16, seed=0)


def throughput(quick: bool) -> None:
    import torch

    import invert
    from invert.distributed import explain_sharded

    k = 64 if quick else 512
    lay = _layer(k, quick)
    a, cs = lay.activations.astype(np.float32), lay.concepts
    n = a.shape[0]
    search = {"length": 3, "beam_size": 5}
    print(f"throughput: N={n} samples, K={k} units, C={cs.matrix.shape[1]} concepts, "
          f"length 3, beam 5")
    rows = []

    def timed(label, fn):
        t0 = time.perf_counter()
        res = fn()
        dt = time.perf_counter() - t0
        rows.append((label, dt, k * n / dt))
        print(f"  {label:<42} {dt:7.2f} s  {k * n / dt:12.4g} unit-samples/s", flush=True)
        return res

    threads = torch.get_num_threads()
    want = timed(f"invert.explain ({threads} torch threads)",
                 lambda: invert.explain(a, cs, **search))
    torch.set_num_threads(1)
    timed("invert.explain (1 torch thread)", lambda: invert.explain(a, cs, **search))
    got = timed("explain_sharded local, 1 thread, 8 shards",
                lambda: explain_sharded(a, cs, shard_units=k // 8, **search))
    assert [str(u.best.formula) if u.best else None for u in got] == [
        str(u.best.formula) if u.best else None for u in want]
    with tempfile.TemporaryDirectory() as tmp:  # the same, each shard written to the store
        stored = timed("explain_sharded local, 8 shards, out_dir",
                       lambda: explain_sharded(a, cs, shard_units=k // 8, out_dir=tmp, **search))
        timed("  rerun: 8 shards read back from out_dir",
              lambda: explain_sharded(a, cs, shard_units=k // 8, out_dir=tmp, **search))
    assert [u.best for u in stored] == [u.best for u in got]
    torch.set_num_threads(threads)
    try:
        import ray
    except ImportError:
        print("  (ray not installed: pip install 'invert[ray]'; Ray figures skipped)")
        return
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    print(f"  ray.init (local, 2 CPUs): {time.perf_counter() - t0:.1f} s (not counted below)")
    try:
        explain_sharded(a[:, :2], cs, backend="ray", shard_units=1, **search)  # warm workers
        one = timed("explain_sharded ray, 1 worker, 8 shards",
                    lambda: explain_sharded(a, cs, backend="ray", num_workers=1,
                                            shard_units=k // 8, **search))
        two = timed("explain_sharded ray, 2 workers, 8 shards",
                    lambda: explain_sharded(a, cs, backend="ray", num_workers=2,
                                            shard_units=k // 8, **search))
        assert [u.best for u in one] == [u.best for u in two] == [u.best for u in got]
    finally:
        ray.shutdown()
    thr1, thr2 = rows[-2][2], rows[-1][2]
    eff = thr2 / (2 * thr1)
    print(f"  speed-up 1 -> 2 workers: {thr2 / thr1:.2f}x (parallel efficiency {eff:.0%})")
    print("  ESTIMATE for a cluster (not measured): W workers ~ W x "
          f"{thr1:.3g} x {eff:.2f} unit-samples/s, e.g. 64 workers ~ {64 * thr1 * eff:.3g}; "
          "assumes shards >> per-task overhead, activations readable by every worker, "
          "and per-unit cost linear in N (it grows ~N log N for the ranking)")


_CHILD = r"""
import json, sys, time
import numpy as np

def hwm():  # peak RSS of this process in bytes (VmHWM starts afresh at exec; ru_maxrss not)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

mode, path, names_path, budget = sys.argv[1:5]
import invert, torch
from invert.distributed import explain_sharded
torch.set_num_threads(2)
y = np.load(names_path)
base = hwm()
t0 = time.perf_counter()
if mode == "sharded":
    res = explain_sharded(path, y, memory_budget=budget, length=2, beam_size=3)
else:
    a = np.load(path)
    res = invert.explain(a, y, memory_budget=budget, length=2, beam_size=3)
dt = time.perf_counter() - t0
peak = hwm()
print(json.dumps({"base": base, "peak": peak, "seconds": dt, "units": len(res),
                  "best0": str(res[0].best.formula) if res[0].best else None}))
"""


def memory(quick: bool, budget: str) -> None:
    n, k = (50_000, 256) if quick else (200_000, 512)
    rng = np.random.default_rng(0)
    leaves, hyper = 100, 30
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "acts.npy"
        leaf = rng.integers(0, leaves, size=n)
        groups = rng.integers(0, hyper, size=leaves)
        y = np.zeros((n, leaves + hyper), dtype=bool)
        y[np.arange(n), leaf] = True
        y[np.arange(n), leaves + groups[leaf]] = True
        np.save(Path(tmp) / "labels.npy", y)
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, k))
        for r in range(0, n, 20_000):  # planted: unit j fires on concept j % C
            rows = slice(r, min(n, r + 20_000))
            block = rng.standard_normal((rows.stop - rows.start, k)).astype(np.float32)
            block += 2.0 * y[rows][:, np.arange(k) % y.shape[1]]
            out[rows] = block
        out.flush()
        del out
        size = path.stat().st_size
        print(f"memory: N={n} x K={k} float32 memmap = {size / 2**20:.0f} MiB, "
              f"C={y.shape[1]} concepts, --memory-budget {budget}, length 2, beam 3")
        figs = {}
        for mode in ("sharded", "whole"):
            got = subprocess.run(
                [sys.executable, "-c", _CHILD, mode, str(path), str(Path(tmp) / "labels.npy"),
                 budget], capture_output=True, text=True, check=True)
            r = json.loads(got.stdout.strip().splitlines()[-1])
            figs[mode] = r
            label = ("explain_sharded(path) local" if mode == "sharded"
                     else "baseline: explain(np.load(path))")
            print(f"  {label:<34} peak RSS {r['peak'] / 2**20:7.0f} MiB "
                  f"(after imports {r['base'] / 2**20:5.0f} MiB, growth "
                  f"{(r['peak'] - r['base']) / 2**20:6.0f} MiB)  {r['seconds']:6.1f} s  "
                  f"{k * n / r['seconds']:.3g} unit-samples/s", flush=True)
        assert figs["sharded"]["best0"] == figs["whole"]["best0"]
        grow = figs["sharded"]["peak"] - figs["sharded"]["base"]
        base_grow = figs["whole"]["peak"] - figs["whole"]["base"]
        print(f"  sharded growth / file size: {grow / size:.2f}; "
              f"growth vs baseline growth: {grow / base_grow:.2f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes")
    ap.add_argument("--budget", default="256MiB", help="memory budget of the out-of-core run")
    ap.add_argument("--skip", choices=["throughput", "memory"], default=None)
    args = ap.parse_args(argv)
    print(f"machine: {os.cpu_count()} CPUs; python {sys.version.split()[0]}; "
          f"self RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    if args.skip != "throughput":
        throughput(args.quick)
    if args.skip != "memory":
        memory(args.quick, args.budget)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
