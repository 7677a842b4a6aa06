"""Benchmark of certified explanations through the public API (prints, no assertions).

Layers: the paper-scale synthetic layer of ``bench_engine.py`` (N = 50,000 samples, 1,000 leaf
classes + 473 hypernyms, K = 512 units, 64 planted; ``--layer multilabel``: 3-8 random
concepts of 1,473 per sample, no row collapse), min_fraction = 0.002, max_fraction = 0.5;
and, with ``--demo-dir``, the real layers of an ``invert demo`` output folder
(``activations_*.npy`` and ``concepts.npz``; all samples, no holdout, min_fraction 0.02 as
in the demo).

Figures per layer (wall time and process CPU time, which counts every thread):

* times of ``invert.explain``: the beam (L = 3, B = 5) and, inside it, the ceiling (the
  calls the search makes to ``engine.certify.ceiling``, timed in place); ``optimal=True``
  at L = 2 (B = 5) and at L = 3 (B = 5: the beam, then the branch-and-bound, timed in
  place);
* at L = 3 (``optimal=True``, B = 5): the share of units certified, by stage, and the
  median bound-minus-best of the rest;
* how often the beam misses: for B = 1, 3, 5, 10 at L = 2, the share of units whose beam
  best is below the proven optimum (``optimal=True``), and the median and largest gap among
  those; at L = 3 the same among the units the branch-and-bound certified (their proven
  best against the beam's best, the incumbent).

``--ceiling-cost``: only the ceiling's own cost, side by side in one run (CPU time,
``threads=1``): the whole layer (L = 3, B = 5) with the ceiling from each unit's best
patterns (the default) and with the full sort of all patterns (the shortcut turned off),
the ceiling's share of each, the ceiling alone re-timed on the same inputs (alternating,
best of 3), and whether the ceilings are bitwise equal; on the paper layer, the multi-label
layer and a token-style layer (a Zipf word and a tag per row).

Run: ``python benchmarks/bench_certify.py`` (paper layer, about 10-20 minutes on 2 loaded
cores), ``--demo-dir /tmp/cert-demo --skip-synthetic`` for the demo's layers (after
``python -m invert demo --out /tmp/cert-demo``); ``--quick`` for 64 units.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

import invert
from invert.concepts import ConceptSet
from invert.engine import certify as certify_module
from invert.engine import search as search_module
from invert.engine.certify import STAGES
from invert.engine.synthetic import make_layer, make_multilabel_layer


def thread_settings() -> str:
    env = {k: os.environ.get(k, "-") for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                               "OPENBLAS_NUM_THREADS")}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    return (f"cpu_count={os.cpu_count()} usable={cores} torch threads="
            f"{torch.get_num_threads()} interop={torch.get_num_interop_threads()} "
            + " ".join(f"{k}={v}" for k, v in env.items()))


class Spy:
    """Records the calls that the search makes to the certify functions: per name, a list
    of (seconds, positional arguments, result)."""

    NAMES = ("ceiling", "optimal_length2", "branch_and_bound_length3")

    def __init__(self):
        self.calls: dict[str, list] = defaultdict(list)
        self.cpu: dict[str, list] = defaultdict(list)
        self.kwargs: dict[str, list] = defaultdict(list)

    def seconds(self, name: str) -> float:
        return sum(t for t, _, _ in self.calls[name])

    @contextmanager
    def watching(self):
        saved = {name: getattr(search_module, name) for name in self.NAMES}

        def wrap(name, fn):
            def timed_call(*args, **kwargs):
                t, c = time.perf_counter(), time.process_time()
                out = fn(*args, **kwargs)
                self.calls[name].append((time.perf_counter() - t, args, out))
                self.cpu[name].append(time.process_time() - c)
                self.kwargs[name].append(kwargs)
                return out
            return timed_call

        try:
            for name, fn in saved.items():
                setattr(search_module, name, wrap(name, fn))
            yield self
        finally:
            for name, fn in saved.items():
                setattr(search_module, name, fn)


def run(acts, concepts, **kw):
    """(result, wall s, CPU s, spy) of ``invert.explain``."""
    spy = Spy()
    with spy.watching():
        w, c = time.perf_counter(), time.process_time()
        res = invert.explain(acts, concepts, **kw)
        wall, cpu = time.perf_counter() - w, time.process_time() - c
    return res, wall, cpu, spy


def best_auroc(result) -> np.ndarray:
    return np.array([u[0].auroc if len(u) else np.nan for u in result.units])


def miss_row(beam: np.ndarray, opt: np.ndarray) -> tuple[float, float, float]:
    """(share of units below the optimum, median gap, largest gap) at 1e-12; units where
    either is NaN count as not missed."""
    gap = np.nan_to_num(opt - beam, nan=0.0)
    missed = gap > 1e-12
    if not missed.any():
        return 0.0, 0.0, 0.0
    return float(missed.mean()), float(np.median(gap[missed])), float(gap[missed].max())


def length3_misses(spy: Spy) -> tuple[int, int, float, float]:
    """From the branch-and-bound calls of one ``optimal=True`` run: (units certified, those
    whose beam best is below their certified best, median gap, largest)."""
    certified, gaps = 0, []
    for _, args, cert in spy.calls["branch_and_bound_length3"]:
        inc = np.asarray(args[4], dtype=np.float64)
        certified += int(cert.certified.sum())
        better = cert.certified & (cert.length > 0) & np.isfinite(inc)
        gaps.extend((cert.value - inc)[better].tolist())
    if not gaps:
        return certified, 0, 0.0, 0.0
    return certified, len(gaps), float(np.median(gaps)), float(max(gaps))


def stage_counts(spy: Spy) -> np.ndarray:
    out = np.zeros(len(STAGES), dtype=np.int64)
    for _, _, cert in spy.calls["branch_and_bound_length3"]:
        out += np.bincount(cert.stage, minlength=len(STAGES))
    return out


def bench_layer(name: str, acts, concepts, min_fraction: float, beams: list[int],
                l3_beams: list[int], budget: float) -> None:
    """All figures of one layer."""
    k = acts.shape[1]
    kw = {"min_fraction": min_fraction}
    print(f"\n## {name}: N={acts.shape[0]}, C={np.shape(concepts.matrix)[1]}, K={k}, "
          f"min_fraction={min_fraction}")
    beam3, w_b3, c_b3, spy_b3 = run(acts, concepts, length=3, beam_size=5, **kw)
    opt2, w_o2, c_o2, spy_o2 = run(acts, concepts, length=2, beam_size=5, optimal=True, **kw)
    opt3, w_o3, c_o3, spy_o3 = run(acts, concepts, length=3, beam_size=5, optimal=True,
                                   time_budget=budget, **kw)
    t_ceil = spy_b3.seconds("ceiling")
    t_bb = spy_o3.seconds("branch_and_bound_length3")
    print("\n| invert.explain | wall s | CPU s |\n|---|---|---|")
    print(f"| beam L=3 B=5 (ceiling included) | {w_b3:.2f} | {c_b3:.2f} |")
    print(f"| - of which ceiling | {t_ceil:.3f} ({t_ceil / w_b3:.2%}) | |")
    print(f"| optimal=True L=2 B=5 | {w_o2:.2f} | {c_o2:.2f} |")
    print(f"| optimal=True L=3 B=5, time_budget={budget:g} | {w_o3:.2f} | {c_o3:.2f} |")
    print(f"| - of which branch-and-bound | {t_bb:.2f} | |")

    explained = np.array([len(u) > 0 for u in opt3])
    cert = opt3.certified & explained
    rest = explained & ~cert
    gap = opt3.bound - best_auroc(opt3)
    stages = stage_counts(spy_o3)
    print(f"\nL=3 certified: {cert.sum()} of {explained.sum()} explained units "
          f"({cert.sum() / max(1, explained.sum()):.1%}; "
          + ", ".join(f"{s}: {c}" for s, c in zip(STAGES, stages, strict=True) if c)
          + "); median bound - best of the rest: "
          + (f"{np.median(gap[rest]):.4f}" if rest.any() else "-"))
    ceil_gap = opt3.ceiling - best_auroc(opt3)
    print(f"median ceiling - best (L=3, optimal): {np.nanmedian(ceil_gap):.4f}; units whose "
          f"best reaches the ceiling: {np.mean(ceil_gap <= 1e-12):.1%}")

    print("\nHow often the beam misses the proven optimum:")
    print("| L | B | beam wall s | units below optimum | median gap | max gap |")
    print("|---|---|---|---|---|---|")
    opt2_best = best_auroc(opt2)
    for b in beams:
        res2, w2, _, _ = run(acts, concepts, length=2, beam_size=b, **kw)
        share, med, mx = miss_row(best_auroc(res2), opt2_best)
        print(f"| 2 | {b} | {w2:.2f} | {share:.1%} | {med:.4f} | {mx:.4f} |")
    for b in l3_beams:
        spy, w3 = spy_o3, w_o3
        if b != 5:
            _, w3, _, spy = run(acts, concepts, length=3, beam_size=b, optimal=True,
                                time_budget=budget, **kw)
        n_cert, n_miss, med, mx = length3_misses(spy)
        print(f"| 3 | {b} | {w3:.2f} (optimal=True) | {n_miss / max(1, n_cert):.1%} of the "
              f"{n_cert} certified ({n_cert / k:.0%} of units) | {med:.4f} | {mx:.4f} |")


@contextmanager
def full_sort():
    """The ceiling by the full sort of every unit's patterns (the shortcut from the best
    patterns, ``engine.certify._BestSetup``, turned off)."""
    saved = certify_module._BestSetup.of
    certify_module._BestSetup.of = staticmethod(lambda counts, sc: None)
    try:
        yield
    finally:
        certify_module._BestSetup.of = saved


def token_layer(n: int = 50_000, k: int = 512, seed: int = 0):
    """(activations, concepts) of a token-style layer: each row one Zipf word of 6,000 and one
    tag of 48 (patterns of very unequal counts); 64 units fire on a word."""
    rng = np.random.default_rng(seed)
    word = np.minimum(rng.zipf(1.3, n), 6000) - 1
    tag = np.where(rng.random(n) < 0.9, word % 48, rng.integers(0, 48, n))
    import scipy.sparse as sp
    rows = np.r_[np.arange(n), np.arange(n)]
    y = sp.csr_matrix((np.ones(2 * n, dtype=bool), (rows, np.r_[word, 6000 + tag])),
                      shape=(n, 6048))
    used = np.flatnonzero(np.asarray(y.sum(axis=0)).ravel() > 0)
    y = y[:, used]
    acts = rng.standard_normal((n, k)).astype(np.float32)
    acts[:, :64] += 1.5 * y[:, rng.choice(used.size - 48, 64)].toarray()
    return acts, ConceptSet(y, [f"c{i}" for i in used])


def ceiling_cost(name: str, acts, concepts, min_fraction: float) -> None:
    """The ceiling's cost with and without the shortcut, side by side (CPU s, threads=1)."""
    kw = {"length": 3, "beam_size": 5, "min_fraction": min_fraction, "threads": 1}
    ways = (("best patterns (default)", contextmanager(lambda: (yield))),
            ("full sort", full_sort))
    cpu = {label: [] for label, _ in ways}
    inner = {label: [] for label, _ in ways}
    alone = {label: [] for label, _ in ways}
    ceils, calls = [], []
    for rep in range(2):  # alternating, best of 2
        for label, ctx in ways:
            spy = Spy()
            with ctx(), spy.watching():
                c = time.process_time()
                res = search_module.explain(acts, concepts, **kw)
                cpu[label].append(time.process_time() - c)
            inner[label].append(sum(spy.cpu["ceiling"]))
            if rep == 0:
                ceils.append(np.asarray(res.ceiling, dtype=np.float64))
                calls = [(args, kwargs) for (_, args, _), kwargs in
                         zip(spy.calls["ceiling"], spy.kwargs["ceiling"], strict=True)]
    for _ in range(3):  # the ceiling alone on the same inputs, alternating, best of 3
        for label, ctx in ways:
            with ctx():
                c = time.process_time()
                for args, kwargs in calls:
                    certify_module.ceiling(*args, **kwargs)
                alone[label].append(time.process_time() - c)
    rows = [(label, min(cpu[label]), min(inner[label])) for label, _ in ways]
    same = ceils[0].tobytes() == ceils[1].tobytes()
    print(f"\n## ceiling cost, {name}: N={acts.shape[0]}, C={np.shape(concepts.matrix)[1]}, "
          f"K={acts.shape[1]}, {len(calls)} ceiling calls; ceilings bitwise equal: "
          f"{'yes' if same else 'NO'}")
    print("| ceiling by | whole layer CPU s | of which ceiling CPU s | ceiling alone CPU s "
          "(best of 3) |\n|---|---|---|---|")
    for label, cpu, t_ceil in rows:
        print(f"| {label} | {cpu:.2f} | {t_ceil:.2f} ({t_ceil / cpu:.0%}) | "
              f"{min(alone[label]):.3f} |")


def demo_layers(folder: Path):
    """(name, activations, concepts) of each layer of an ``invert demo`` output folder."""
    concepts = ConceptSet.load(folder / "concepts.npz")
    for path in sorted(folder.glob("activations_*.npy")):
        yield f"demo {path.stem.removeprefix('activations_')}", np.load(path), concepts


def _layer(make, k: int):
    layer = make(n_units=k, n_planted=max(1, min(64, k // 8)))
    return layer.activations, layer.concepts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--units", type=int, default=512, help="units of the layer (default 512)")
    p.add_argument("--layer", choices=("paper", "multilabel"), default="paper")
    p.add_argument("--beams", type=int, nargs="+", default=[1, 3, 5, 10])
    p.add_argument("--l3-beams", type=int, nargs="+", default=[1, 3, 5, 10],
                   help="beam sizes whose L=3 answers are certified (default 1 3 5 10)")
    p.add_argument("--budget", type=float, default=60.0, help="L=3 time budget (s)")
    p.add_argument("--demo-dir", type=Path, help="an `invert demo --out` folder")
    p.add_argument("--demo-min-fraction", type=float, default=0.02)
    p.add_argument("--skip-synthetic", action="store_true")
    p.add_argument("--quick", action="store_true", help="64 units, budget 20 s")
    p.add_argument("--ceiling-cost", action="store_true",
                   help="only the ceiling's cost, with and without the shortcut")
    args = p.parse_args()
    budget = 20.0 if args.quick else args.budget
    print("threads:", thread_settings())
    if args.ceiling_cost:
        k = 64 if args.quick else args.units
        for name, (acts, concepts) in (
                ("paper layer", _layer(make_layer, k)),
                ("multi-label layer", _layer(make_multilabel_layer, k)),
                ("token-style layer", token_layer(k=k))):
            ceiling_cost(name, acts, concepts, 0.002)
        return
    if not args.skip_synthetic:
        k = 64 if args.quick else args.units
        make = make_layer if args.layer == "paper" else make_multilabel_layer
        layer = make(n_units=k, n_planted=max(1, min(64, k // 8)))
        bench_layer(f"synthetic {args.layer}", layer.activations, layer.concepts, 0.002,
                    args.beams, args.l3_beams, budget)
    if args.demo_dir is not None:
        for name, acts, concepts in demo_layers(args.demo_dir):
            bench_layer(name, acts, concepts, args.demo_min_fraction, args.beams,
                        args.l3_beams, budget)


if __name__ == "__main__":
    main()
