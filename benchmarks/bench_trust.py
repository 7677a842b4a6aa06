"""Benchmark of invert.trust on the paper-scale synthetic layer (prints figures only).

    .venv/bin/python benchmarks/bench_trust.py [--units 192] [--seeds 3] [--perms 1000]

N = 50,000 samples, C = 1,473 concepts; 64 planted units and ``units - 64`` pure-noise
units. The shared null (``perms`` permutations, searched as pseudo-units) depends only on the
concepts and the search parameters, so it is computed once and reused for every seed (each
seed draws new activations for the same planted formulas).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import invert
from invert.engine.synthetic import make_layer
from invert.trust import correct_pvalues, explain_holdout
from invert.trust.permutation import _null_best, _null_pvalues, _reject


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--units", type=int, default=192)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--perms", type=int, default=1000)
    ap.add_argument("--tie-perms", type=int, default=100)
    args = ap.parse_args()
    kw = {"length": 3, "beam_size": 5}
    layer = make_layer(n_units=args.units, n_planted=64, seed=0)
    y = layer.concepts
    n = layer.activations.shape[0]
    masks = np.array([f.evaluate(y.matrix) for f in layer.planted])
    print(f"layer: N={n}, C={y.matrix.shape[1]}, units={args.units} (64 planted)")

    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    null = np.sort(_null_best(np.arange(n, dtype=np.float32), y.matrix, args.perms, rng, 1.0,
                              kw, 256))
    t_null = time.perf_counter() - t0
    print(f"shared null: {args.perms} permutations searched in {t_null:.1f} s "
          f"({1e3 * t_null / args.perms:.1f} ms per permutation); null best AUROC "
          f"median {np.median(null):.4f}, 95% {np.quantile(null, 0.95):.4f}")

    fdps, powers, raw_fp = [], [], []
    for seed in range(args.seeds):
        r = np.random.default_rng(100 + seed)
        acts = r.standard_normal((n, args.units)).astype(np.float32)
        acts[:, :64] += 1.5 * masks.T
        t0 = time.perf_counter()
        res = invert.explain(acts, y, **kw)
        t_search = time.perf_counter() - t0
        obs = np.array([u[0].auroc for u in res.units])
        p = _null_pvalues(null, obs, args.perms)
        disc = _reject(correct_pvalues(p, "bh"), 0.05)
        noise = np.arange(args.units) >= 64
        fdp = (disc & noise).sum() / max(1, disc.sum())
        raw = np.array([u[0].p_value for u in res.units])
        fdps.append(fdp)
        powers.append(disc[~noise].mean())
        raw_fp.append((raw[noise] <= 0.05).mean())
        print(f"seed {seed}: search {t_search:.1f} s; BH 0.05 discoveries {disc.sum()} "
              f"(noise {int((disc & noise).sum())}), FDP {fdp:.3f}, planted found "
              f"{disc[~noise].mean():.3f}; uncorrected p<=0.05 on noise units "
              f"{raw_fp[-1]:.3f}")
    print(f"FDR among discoveries at BH 0.05, mean over {args.seeds} seeds: "
          f"{np.mean(fdps):.4f} (planted units found: {np.mean(powers):.3f}; "
          f"noise units with uncorrected p <= 0.05: {np.mean(raw_fp):.3f})")

    acts = np.random.default_rng(100).standard_normal((n, args.units)).astype(np.float32)
    acts[:, :64] += 1.5 * masks.T
    t0 = time.perf_counter()
    hres = explain_holdout(acts, y, holdout=0.5, random_state=0, search_kwargs=kw)
    t_h = time.perf_counter() - t0
    gap = np.array([u[0].auroc - u[0].extras["holdout_auroc"] for u in hres.units])
    lens = np.array([u[0].length for u in hres.units])
    print(f"holdout 0.5 ({t_h:.1f} s): in-sample minus held-out AUROC of the best formula: "
          f"planted {gap[:64].mean():+.4f}, noise {gap[64:].mean():+.4f}; mean length "
          f"planted {lens[:64].mean():.2f}, noise {lens[64:].mean():.2f}")
    nop = explain_holdout(acts, y, holdout=0.5, random_state=0, parsimony=None,
                          search_kwargs=kw)
    lens0 = np.array([u[0].length for u in nop.units])
    print(f"  without parsimony: mean length planted {lens0[:64].mean():.2f}, noise "
          f"{lens0[64:].mean():.2f}")

    z = np.random.default_rng(7).standard_normal(n)
    relu = np.maximum(z, 0.0).astype(np.float32)  # one tie structure (ReLU zeros)
    t0 = time.perf_counter()
    _null_best(relu, y.matrix, args.tie_perms, np.random.default_rng(1), 1.0, kw, 256)
    t_tie = time.perf_counter() - t0
    print(f"per tie structure: {args.tie_perms} permutations in {t_tie:.1f} s "
          f"(about {t_tie * args.perms / args.tie_perms:.0f} s for {args.perms}); "
          f"continuous units share one null")


if __name__ == "__main__":
    main()
