"""Benchmark of certified explanations (``invert.engine.certify``; prints, no assertions).

Data: the paper-scale synthetic layer of ``bench_engine.py`` (N = 50,000 samples, 1,000 leaf
classes + 473 hypernyms, K = 512 units, 64 planted), min_fraction = 0.002,
max_fraction = 0.5; or, with ``--layer multilabel``, 3-8 random concepts of 1,473 per sample
(no row collapse).

Figures (wall time and process CPU time, which counts every thread):

* the beam search (``invert.engine.search.explain``, L = 3, B = 5, ranking included), the
  per-pattern rank sums alone, the ceiling, and the proven best formulas of length <= 2
  (B = 5), the last two from the rank sums;
* how often the beam misses at L = 2, for B = 1, 3, 5, 10: the share of units whose beam
  best is below the proven optimum, and the median and largest gap among those;
* at L = 3, from the beam's best (B = 5, or ``--l3-beams``) as the incumbent: the share
  certified within the time budget, by stage, the units where the beam was below the proven
  best, and the median bound-minus-best of the rest.

Run: ``python benchmarks/bench_certify.py`` (about 2-4 minutes on 2 cores; ``--units 128``
or ``--quick`` for less, ``--budget`` for the length-3 time budget).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from invert.engine.certify import STAGES, branch_and_bound_length3, ceiling, optimal_length2
from invert.engine.search import explain
from invert.engine.stats import pattern_ranksums
from invert.engine.synthetic import make_layer, make_multilabel_layer

try:  # the pattern helpers move to engine.patterns in the redesign
    from invert.engine.patterns import _collapse
except ImportError:  # before the split
    from invert.engine.search import _collapse

MIN_FRACTION = 0.002


def thread_settings() -> str:
    env = {k: os.environ.get(k, "-") for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                               "OPENBLAS_NUM_THREADS")}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    return (f"cpu_count={os.cpu_count()} usable={cores} torch threads="
            f"{torch.get_num_threads()} interop={torch.get_num_interop_threads()} "
            + " ".join(f"{k}={v}" for k, v in env.items()))


def timed(fn, *args, **kwargs):
    """(result, wall seconds, process CPU seconds)."""
    w, c = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - w, time.process_time() - c


def best_auroc(result) -> np.ndarray:
    return np.array([u[0].auroc if len(u) else np.nan for u in result.units])


def miss_row(beam: np.ndarray, opt: np.ndarray) -> tuple[float, float, float]:
    """(share of units below the optimum, median gap, largest gap) at 1e-12."""
    gap = opt - beam
    missed = gap > 1e-12
    if not missed.any():
        return 0.0, 0.0, 0.0
    return float(missed.mean()), float(np.median(gap[missed])), float(gap[missed].max())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--units", type=int, default=512, help="units of the layer (default 512)")
    p.add_argument("--layer", choices=("paper", "multilabel"), default="paper")
    p.add_argument("--beams", type=int, nargs="+", default=[1, 3, 5, 10])
    p.add_argument("--budget", type=float, default=60.0, help="length-3 time budget (s)")
    p.add_argument("--l3-beams", type=int, nargs="+", default=[5],
                   help="beam sizes whose L=3 answers are certified (default 5)")
    p.add_argument("--quick", action="store_true", help="64 units, budget 20 s")
    args = p.parse_args()
    k = 64 if args.quick else args.units
    budget = 20.0 if args.quick else args.budget
    print("threads:", thread_settings())
    make = make_layer if args.layer == "paper" else make_multilabel_layer
    layer = make(n_units=k, n_planted=max(1, min(64, k // 8)))
    acts, concepts = layer.activations, layer.concepts
    n = acts.shape[0]
    pats = _collapse(concepts.matrix)
    counts = pats.counts.astype(np.float64)
    print(f"layer: {args.layer}, N={n}, C={concepts.matrix.shape[1]}, K={k}, "
          f"M={len(counts)} patterns, min_fraction={MIN_FRACTION}")

    res3, w_beam, c_beam = timed(explain, acts, concepts, length=3, beam_size=5,
                                 min_fraction=MIN_FRACTION)
    (r2, _), w_rank, c_rank = timed(pattern_ranksums, acts, pats.inverse, len(counts))
    top, w_ceil, c_ceil = timed(ceiling, r2, counts, n, min_fraction=MIN_FRACTION)
    opt, w_opt, c_opt = timed(optimal_length2, r2, counts, pats.matrix, n, beam_size=5,
                              min_fraction=MIN_FRACTION)
    print("\n| stage | wall s | CPU s |\n|---|---|---|")
    for name, w, c in (("beam search L=3 B=5 (ranking included)", w_beam, c_beam),
                       ("per-pattern rank sums (shared)", w_rank, c_rank),
                       ("ceiling (from the rank sums)", w_ceil, c_ceil),
                       ("optimal length <= 2, B=5 (from the rank sums)", w_opt, c_opt)):
        print(f"| {name} | {w:.2f} | {c:.2f} |")
    print(f"ceiling / beam: {w_ceil / w_beam:.1%} wall, {c_ceil / c_beam:.1%} CPU")

    best3 = best_auroc(res3)
    print(f"\nmedian ceiling - beam best (L=3): {np.nanmedian(top - best3):.4f}; "
          f"units whose beam best reaches the ceiling: {np.mean(top - best3 <= 1e-12):.1%}")
    print("\nHow often the beam misses the proven optimum at L = 2:")
    print("| B | beam wall s | units below optimum | median gap | max gap |\n|---|---|---|---|---|")
    for b in args.beams:
        res2, w2, _ = timed(explain, acts, concepts, length=2, beam_size=b,
                            min_fraction=MIN_FRACTION)
        share, med, mx = miss_row(best_auroc(res2), opt.best)
        print(f"| {b} | {w2:.2f} | {share:.1%} | {med:.4f} | {mx:.4f} |")

    for b in args.l3_beams:
        if b == 5:
            inc = best3
        else:
            inc = best_auroc(explain(acts, concepts, length=3, beam_size=b,
                                     min_fraction=MIN_FRACTION))
        cert, w3, c3 = timed(branch_and_bound_length3, r2, counts, pats.matrix, n, inc,
                             min_fraction=MIN_FRACTION, time_budget=budget)
        print_certificate(cert, b, budget, w3, c3)


def print_certificate(cert, b: int, budget: float, wall: float, cpu: float) -> None:
    stages = np.bincount(cert.stage, minlength=len(STAGES))
    rest = ~cert.certified
    med_rest = float(np.median((cert.bound - cert.value)[rest])) if rest.any() else 0.0
    print(f"\nLength 3 (incumbent: the beam's best, L=3 B={b}; budget {budget:g} s): "
          f"{wall:.1f} s wall, {cpu:.1f} s CPU")
    print(f"certified: {cert.certified.mean():.1%} ("
          + ", ".join(f"{s}: {c}" for s, c in zip(STAGES, stages, strict=True) if c)
          + f"); beam below the proven best: {int((cert.length > 0).sum())} units; "
          f"median bound - best of the rest: {med_rest:.4f}")

if __name__ == "__main__":
    main()
