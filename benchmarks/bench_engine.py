"""Paper-scale benchmark of the INVERT engine (prints every figure; no assertions).

Data: N = 50,000 samples in 1,000 mutually exclusive leaf classes x 50 samples, plus 473
hypernym concepts (unions of leaves along a random tree), K = 512 units of which 64 are
planted formulas (a concept, ``h & ~leaf``, ``leaf | leaf``, ``h | leaf``) plus Gaussian
noise; L = 3, B = 5, min_fraction = 0.002. A multi-label variant gives each sample 3-8
random concepts of 1,473 (no row collapse).

Figures: whole-layer wall time (ranking included), peak RSS of the process, per-unit speed-up
over a naive per-candidate implementation timed in the same run, and the share of planted
units whose best explanation is at least as good as the planted formula (default search and
the reference-faithful ``dedupe=False`` search).

``--vocab`` adds how the time grows with the vocabulary: C = 1,473 against C = 6,000
leaf-level concepts (5,000 leaf classes x 10 samples + 1,000 hypernyms, N = 50,000) and
sample-level random concepts (the multi-label layer with 6,000 concepts), their ratios, and
C = 30,000 sparse token-style concepts (2-6 per row). ``--load N`` spawns N busy processes
(each spinning numpy sorts) and prints the whole layer's time loaded against unloaded, for
the default thread policy and for ``threads=1``.

Run: ``.venv/bin/python benchmarks/bench_engine.py`` (add ``--quick`` for a smaller run,
``--device cuda`` on a GPU machine, ``--vocab``, ``--load 2``).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import time

import numpy as np
import torch

import invert
from invert.engine.search import explain as engine_explain
from invert.engine.synthetic import make_layer, make_multilabel_layer
from invert.engine.threads import available_cpus, default_threads, thread_policy


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def naive_auroc(acts: np.ndarray, mask: np.ndarray) -> float:
    """One AUROC the way a per-candidate implementation computes it: rank (a sort, with
    vectorised mid-ranks for ties) and sum over the mask, for every candidate formula."""
    from scipy.stats import rankdata

    r = rankdata(acts)
    n1 = mask.sum()
    return (r[mask].sum() - n1 * (n1 + 1) / 2) / (n1 * (len(mask) - n1))


def time_naive(layer, units: list[int], n_evals: int, fn) -> float:
    """Seconds per AUROC evaluation of ``fn`` on real beam-search candidates (depth 2)."""
    y = layer.concepts.matrix.tocsc()
    cols = [np.asarray(y[:, [j]].toarray()).ravel().astype(bool) for j in range(y.shape[1])]
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    done = 0
    for u in units:
        a = layer.activations[:, u].astype(np.float64)
        for _ in range(n_evals // len(units)):
            i, j = rng.integers(0, len(cols), size=2)
            m = cols[i] | cols[j] if rng.random() < 0.5 else cols[i] & ~cols[j]
            if 0 < m.sum() < len(m):
                fn(a, m)
                done += 1
    return (time.perf_counter() - t0) / max(1, done)


def planted_share(layer, result) -> tuple[float, int]:
    y = layer.concepts.matrix
    ok = total = 0
    for k, f in enumerate(layer.planted):
        m = f.evaluate(y)
        if not (0.002 <= m.mean() <= 0.5):
            continue
        total += 1
        planted = invert.auroc(layer.activations[:, k], m)
        best = result[k][0].auroc if len(result[k]) else -np.inf
        ok += best >= planted - 1e-12
    return ok / max(1, total), total


KW = dict(length=3, beam_size=5, min_fraction=0.002)


def print_threads(device: str) -> None:
    """The thread settings the searches below run with."""
    dev = torch.device(device)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, device {device}; {available_cpus()} CPUs available, "
          f"load average {load:.2f}; default search threads: {default_threads(dev)} "
          f"({thread_policy(dev)}); torch runs 1 intra-op thread during a search "
          f"(caller's setting: {torch.get_num_threads()})")


def run(device: str, quick: bool, repeat: int = 1) -> None:
    kw = KW
    scale = dict(n_leaves=200, n_hypernyms=95, n_units=128, n_planted=32) if quick else {}
    print_threads(device)
    t = time.perf_counter()
    layer = make_layer(**scale)
    n, k = layer.activations.shape
    c = layer.concepts.matrix.shape[1]
    print(f"data: N={n} C={c} K={k} (made in {time.perf_counter() - t:.1f} s)")

    invert.explain(layer.activations[:, :4], layer.concepts, device=device, **kw)  # warm-up
    rss0 = peak_rss_gib()
    walls = []
    for _ in range(repeat):
        t = time.perf_counter()
        res = invert.explain(layer.activations, layer.concepts, device=device, **kw)
        walls.append(time.perf_counter() - t)
    wall = min(walls)
    share, total = planted_share(layer, res)
    print("\n== single-label (ImageNet-style) layer, L=3 B=5 min_fraction=0.002 ==")
    print(f"whole layer, default search:     {wall:8.2f} s wall ({wall / k * 1e3:.1f} ms/unit)"
          + (f", best of {repeat}: " + " ".join(f"{w:.2f}" for w in walls) if repeat > 1
             else ""))
    print(f"peak RSS of the process:         {peak_rss_gib():8.2f} GiB "
          f"(before the search: {rss0:.2f} GiB)")
    print(f"planted units at least as good:  {share:8.1%} of {total}")

    t = time.perf_counter()
    ref = invert.explain(layer.activations, layer.concepts, device=device, dedupe=False, **kw)
    wall_ref = time.perf_counter() - t
    share_ref, _ = planted_share(layer, ref)
    print(f"reference-faithful search:       {wall_ref:8.2f} s wall, planted at least as good "
          f"{share_ref:.1%}")

    evals = c + (kw["length"] - 1) * kw["beam_size"] * 2 * (2 * c)
    per_eval = time_naive(layer, [0, 1, 2], 300, naive_auroc)
    naive_unit = per_eval * evals
    ours_unit = wall / k
    print(f"\nnaive per-candidate baseline: {evals} AUROC evaluations per unit (the reference's "
          "count), each a sort of N values, timed on real candidates of units 0-2 in this run:")
    print(f"  {per_eval * 1e3:.2f} ms/evaluation -> {naive_unit:.1f} s/unit vs "
          f"{ours_unit * 1e3:.1f} ms/unit here -> speed-up {naive_unit / ours_unit:,.0f}x")
    print(f"  whole layer, naive:            {naive_unit * k / 3600:8.1f} h (extrapolated)")

    ml = make_multilabel_layer(**({"n_samples": 10_000, "n_units": 128, "n_planted": 32}
                                  if quick else {}))
    t = time.perf_counter()
    res_ml = invert.explain(ml.activations, ml.concepts, device=device, **kw)
    wall_ml = time.perf_counter() - t
    y = ml.concepts.matrix
    ok = sum(res_ml[u][0].auroc >= invert.auroc(ml.activations[:, u], f.evaluate(y)) - 1e-12
             for u, f in enumerate(ml.planted))
    print("\n== multi-label layer (3-8 random concepts per sample, no row collapse) ==")
    print(f"N={ml.activations.shape[0]} C={y.shape[1]} K={ml.activations.shape[1]}: "
          f"{wall_ml:.2f} s wall ({wall_ml / ml.activations.shape[1] * 1e3:.1f} ms/unit), "
          f"planted at least as good {ok / len(ml.planted):.1%}, "
          f"peak RSS {peak_rss_gib():.2f} GiB")


def timed(layer, device: str, repeat: int, threads: int | None = None) -> list[float]:
    """Wall seconds of ``repeat`` whole-layer searches (``threads``: None for the default
    policy)."""
    walls = []
    for _ in range(repeat):
        t = time.perf_counter()
        engine_explain(layer.activations, layer.concepts, device=device, threads=threads, **KW)
        walls.append(time.perf_counter() - t)
    return walls


def vocab_layers(quick: bool):
    """(label, layer builder) of the vocabulary section."""
    k = dict(n_units=128 if quick else 512, n_planted=32 if quick else 64)
    n_ml = dict(n_samples=10_000) if quick else {}
    return [
        ("leaf-level C=1,473 (1,000 leaves x 50 + 473 hypernyms)",
         lambda: make_layer(**k)),
        ("leaf-level C=6,000 (5,000 leaves x 10 + 1,000 hypernyms)",
         lambda: make_layer(n_leaves=5000, samples_per_leaf=10, n_hypernyms=1000, **k)),
        ("sample-level C=1,473 (3-8 random concepts per sample)",
         lambda: make_multilabel_layer(**n_ml, **k)),
        ("sample-level C=6,000 (3-8 random concepts per sample)",
         lambda: make_multilabel_layer(n_concepts=6000, **n_ml, **k)),
        ("token-style C=30,000 (2-6 sparse concepts per row)",
         lambda: make_multilabel_layer(n_concepts=30_000, labels_per_sample=(2, 6), **n_ml,
                                       **k)),
    ]


def run_vocab(device: str, quick: bool, repeat: int) -> None:
    """Time against vocabulary size; the C = 1,473 layers are the baselines of the ratios."""
    print("\n== vocabulary: whole layer, default threads (best of "
          f"{repeat}; CPU seconds of one thread beside it) ==")
    base: dict[str, tuple[float, float]] = {}
    for label, build in vocab_layers(quick):
        layer = build()
        n, k = layer.activations.shape
        engine_explain(layer.activations[:, :2], layer.concepts, device=device, **KW)
        wall = min(timed(layer, device, repeat))
        t = time.process_time()
        engine_explain(layer.activations, layer.concepts, device=device, threads=1, **KW)
        cpu = time.process_time() - t
        kind = label.split()[0]
        ratio = ""
        if kind in base:
            ratio = f"  -> {wall / base[kind][0]:.2f}x wall, {cpu / base[kind][1]:.2f}x CPU " \
                    "of C=1,473 (goal <= 4.5x)"
        else:
            base[kind] = (wall, cpu)
        print(f"{label}: N={n} K={k}: {wall:7.2f} s wall, {cpu:7.2f} s CPU (1 thread){ratio}",
              flush=True)
        del layer


def _spin(stop) -> None:
    """A busy competitor: numpy sorts until ``stop`` is set."""
    x = np.random.default_rng(0).random(1 << 18)
    while not stop.is_set():
        np.sort(x)


def run_load(device: str, quick: bool, n_busy: int, repeat: int) -> None:
    """The whole layer unloaded against with ``n_busy`` busy processes, for the default thread
    policy and one thread."""
    scale = dict(n_leaves=200, n_hypernyms=95, n_units=128, n_planted=32) if quick else {}
    layer = make_layer(**scale)
    engine_explain(layer.activations[:, :4], layer.concepts, device=device, **KW)
    print(f"\n== under load: {n_busy} busy processes (numpy sorts) on {available_cpus()} CPUs, "
          f"whole layer, best of {repeat} ==")
    ctx = mp.get_context("spawn")
    for label, threads in (("default", None), ("threads=1", 1)):
        quiet = min(timed(layer, device, repeat, threads))
        stop = ctx.Event()
        procs = [ctx.Process(target=_spin, args=(stop,), daemon=True) for _ in range(n_busy)]
        for pr in procs:
            pr.start()
        time.sleep(1.0)  # the competitors are running
        try:
            used = default_threads(torch.device(device)) if threads is None else threads
            busy = timed(layer, device, repeat, threads)
        finally:
            stop.set()
            for pr in procs:
                pr.join()
        print(f"{label:10s} ({used} worker thread{'s' if used > 1 else ''} under load): "
              f"unloaded {quiet:6.2f} s, loaded {min(busy):6.2f} s "
              f"(all: {' '.join(f'{b:.2f}' for b in busy)}) -> {min(busy) / quiet:.2f}x "
              "(goal <= 2.5x)", flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="a smaller data set")
    ap.add_argument("--repeat", type=int, default=1,
                    help="time the whole-layer search this many times (the best is used)")
    ap.add_argument("--vocab", action="store_true",
                    help="also time C = 6,000 and C = 30,000 against C = 1,473")
    ap.add_argument("--load", type=int, default=0, metavar="N",
                    help="also time the layer with N busy competing processes")
    ap.add_argument("--only", action="store_true",
                    help="with --vocab or --load: skip the paper-scale sections")
    args = ap.parse_args()
    if not (args.only and (args.vocab or args.load)):
        run(args.device, args.quick, args.repeat)
    else:
        print_threads(args.device)
    if args.vocab:
        run_vocab(args.device, args.quick, args.repeat)
    if args.load:
        run_load(args.device, args.quick, args.load, max(2, args.repeat))
