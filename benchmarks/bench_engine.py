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

Run: ``.venv/bin/python benchmarks/bench_engine.py`` (add ``--quick`` for a smaller run,
``--device cuda`` on a GPU machine).
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

import invert
from invert.engine.synthetic import make_layer, make_multilabel_layer


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


def run(device: str, quick: bool, repeat: int = 1) -> None:
    kw = dict(length=3, beam_size=5, min_fraction=0.002)
    scale = dict(n_leaves=200, n_hypernyms=95, n_units=128, n_planted=32) if quick else {}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}")
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


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="a smaller data set")
    ap.add_argument("--repeat", type=int, default=1,
                    help="time the whole-layer search this many times (the best is used)")
    args = ap.parse_args()
    run(args.device, args.quick, args.repeat)
