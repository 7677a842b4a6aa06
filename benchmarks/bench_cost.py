"""How the search's cost grows with K (units), N (samples), C (concepts), L (length) and B
(beam size): each varied over 4 values around a small base case, the others held at the base;
prints the times and a fitted exponent per variable (the slope of log time on log value), with a
naive per-candidate baseline for the base case timed in the same run.

Data: :func:`invert.engine.synthetic.make_multilabel_layer` (each sample has 3-8 random
concepts of C, with a popularity skew, so rows do not collapse: label patterns ~ N), a quarter
of the units planted. Base case N = 20,000, C = 1,000, K = 128, L = 3, B = 5,
``min_fraction`` = 0.002. One worker thread with one torch thread (``threads=1``); each point
is the best of ``--repeat`` (default 2) CPU times (``time.process_time``, steadier than wall
time on a shared machine; wall time is printed too).

The naive baseline scores every candidate the way a per-candidate implementation does: a
sort of the N activations per AUROC, ``C + (L - 1) * B * 2 * 2C`` evaluations per unit (the
reference's count); its cost model is ``K * C * L * B * N log N``, so its exponents are
1 for K, C and B, about 1.1 for N, and ``(L - 1) / L``-weighted for L (printed beside the
measured ones).

Run::

    python benchmarks/bench_cost.py           # about 2-4 minutes on 2 cores
    python benchmarks/bench_cost.py --quick   # 3 values per variable, smaller base
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

BASE = {"N": 20_000, "C": 1_000, "K": 128, "L": 3, "B": 5}
GRID = {"K": [32, 64, 128, 256], "N": [10_000, 20_000, 40_000, 80_000],
        "C": [500, 1_000, 2_000, 4_000], "L": [1, 2, 3, 4], "B": [2, 5, 10, 20]}
QUICK_BASE = {"N": 10_000, "C": 500, "K": 64, "L": 3, "B": 5}
QUICK_GRID = {"K": [32, 64, 128], "N": [5_000, 10_000, 20_000], "C": [250, 500, 1_000],
              "L": [1, 2, 3], "B": [2, 5, 10]}
MIN_FRACTION = 0.002


def layer(n: int, c: int, k: int):
    from invert.engine.synthetic import make_multilabel_layer

    return make_multilabel_layer(n_samples=n, n_concepts=c, n_units=k,
                                 n_planted=max(1, k // 4), seed=0)


def time_search(lay, length: int, beam: int, repeat: int) -> tuple[float, float]:
    """Best (CPU seconds, wall seconds) of ``repeat`` searches with one worker thread."""
    from invert.engine.search import explain

    best_cpu = best_wall = math.inf
    for _ in range(repeat):
        c0, w0 = time.process_time(), time.perf_counter()
        explain(lay.activations, lay.concepts, length=length, beam_size=beam,
                min_fraction=MIN_FRACTION, threads=1)
        best_cpu = min(best_cpu, time.process_time() - c0)
        best_wall = min(best_wall, time.perf_counter() - w0)
    return best_cpu, best_wall


def naive_per_eval(lay, n_evals: int = 120) -> float:
    """CPU seconds per AUROC evaluation of a per-candidate implementation (a rank of the N
    activations, then a sum over the candidate's mask), on random depth-2 candidates."""
    from scipy.stats import rankdata

    y = lay.concepts.matrix.tocsc()
    rng = np.random.default_rng(0)
    cols = {}

    def col(j: int) -> np.ndarray:
        if j not in cols:
            v = np.zeros(y.shape[0], dtype=bool)
            v[y.indices[y.indptr[j]:y.indptr[j + 1]]] = True
            cols[j] = v
        return cols[j]

    a = lay.activations[:, 0].astype(np.float64)
    done = 0
    t0 = time.process_time()
    while done < n_evals:
        i, j = (int(x) for x in rng.integers(0, y.shape[1], size=2))
        m = col(i) | col(j) if rng.random() < 0.5 else col(i) & ~col(j)
        n1 = int(m.sum())
        if 0 < n1 < m.size:
            r = rankdata(a)
            _ = (r[m].sum() - n1 * (n1 + 1) / 2) / (n1 * (m.size - n1))
            done += 1
    return (time.process_time() - t0) / done


def slope(xs: list[float], ts: list[float]) -> float:
    return float(np.polyfit(np.log(xs), np.log(ts), 1)[0])


def naive_exponent(var: str, values: list[int], base: dict[str, int]) -> float:
    """The naive cost model's log-log slope over ``values`` of ``var``: evaluations per unit
    times K times N log N."""
    def cost(p: dict[str, int]) -> float:
        evals = p["C"] + (p["L"] - 1) * p["B"] * 2 * (2 * p["C"])
        return p["K"] * evals * p["N"] * math.log(p["N"])
    return slope(values, [cost(base | {var: v}) for v in values])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 values per variable, smaller base")
    ap.add_argument("--repeat", type=int, default=2, help="best of this many (default 2)")
    args = ap.parse_args(argv)
    base, grid = (QUICK_BASE, QUICK_GRID) if args.quick else (BASE, GRID)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, torch threads {torch.get_num_threads()}, search "
          f"threads=1; base case {', '.join(f'{k}={v:,}' for k, v in base.items())}, "
          f"min_fraction={MIN_FRACTION}, multi-label data (3-8 of C concepts per sample); "
          f"best of {args.repeat} CPU times")
    t_all = time.perf_counter()
    cache: dict[tuple[int, int, int], object] = {}
    results: dict[str, list[tuple[int, float, float]]] = {}
    base_cpu = None
    for var, values in grid.items():
        rows = []
        for v in values:
            p = base | {var: v}
            key = (p["N"], p["C"], p["K"])
            if key not in cache:
                cache.clear()
                cache[key] = layer(*key)
            cpu, wall = time_search(cache[key], p["L"], p["B"], args.repeat)
            if p == base:
                base_cpu = cpu
            rows.append((v, cpu, wall))
        results[var] = rows
        ts = "  ".join(f"{v:,}: {cpu:.2f} s" for v, cpu, _ in rows)
        print(f"  {var}: {ts}   exponent {slope([r[0] for r in rows], [r[1] for r in rows]):.2f}",
              flush=True)

    print("\nexponents (log-log slope of CPU time; 1 = linear):")
    print(f"  {'var':<4} {'values':<28} {'invert':>7} {'naive model':>12}")
    for var, rows in results.items():
        vals = [r[0] for r in rows]
        print(f"  {var:<4} {', '.join(f'{v:,}' for v in vals):<28} "
              f"{slope(vals, [r[1] for r in rows]):7.2f} {naive_exponent(var, vals, base):12.2f}")

    lay = layer(base["N"], base["C"], base["K"])
    per_eval = naive_per_eval(lay)
    evals = base["C"] + (base["L"] - 1) * base["B"] * 2 * (2 * base["C"])
    naive_total = per_eval * evals * base["K"]
    assert base_cpu is not None
    print(f"\nnaive baseline at the base case: {evals:,} AUROC evaluations per unit at "
          f"{per_eval * 1e3:.2f} ms each (a sort of N = {base['N']:,}, timed here) -> "
          f"{naive_total:,.0f} s for K = {base['K']} (extrapolated) against {base_cpu:.2f} s "
          f"measured: {naive_total / base_cpu:,.0f}x")
    print(f"total benchmark time {time.perf_counter() - t_all:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
