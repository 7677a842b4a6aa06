"""Benchmark of invert.trust's significance (prints figures only; issue 11).

    .venv/bin/python benchmarks/bench_trust.py [--perms 1000] [--seeds 10] [--skip paper]

Sections (``--skip`` any of them):

``paper``
    The paper-scale synthetic layer (N = 50,000, C = 1,473, 512 units of which 64 planted;
    L = 3, B = 5, min_fraction = 0.002): ``permutation_test`` with ``perms`` permutations and
    the generalized Pareto tail; its estimate against the time taken; planted p-values;
    noise units' uniformity; BH discoveries.
``ties``
    The same layer with ties in every unit (ReLU with 30-70% zeros, 16 dead units) and 1%
    duplicate samples (N unchanged; found and moved together, ``groups="auto"``): time
    against the untied layer, tied noise units' uniformity.
``duplicates``
    1% duplicate samples (copies of other samples) in a layer of 300 noise units (N = 5,000,
    C = 140): uniformity with the copies moved together (``groups="auto"``, default) and
    with every sample permuted on its own (``groups=None``).
``calibration``
    ``seeds`` layers (N = 2,000, C = 140), each with its own null of ``perms`` permutations,
    20 planted and 200 noise units (every other one ReLU-tied): Kolmogorov-Smirnov
    uniformity over all noise units, BH's false-discovery proportion.
``tail``
    Accuracy of the tail on a null of known form (the maximum of 500 standard normals):
    estimated over true p-value at true p-values 1e-3 .. 1e-8, with the shape constrained to
    ``>= 0`` (as used) and free.
``parsimony``
    Issue 11's reproduction: significant units with and without parsimony, and what
    comparing the reported formula with the null of the search maximum (the old test) gave.
``floor``
    ``permutation_floor`` for a few settings.

``--demo DIR`` (instead of the sections) counts the significant class logits in the output
folder of ``invert demo --out DIR``: logits of the layer ``_fc`` (or ``""``) whose best formula
has a held-out AUROC >= 0.9 and q <= 0.05, among them those of classes present in the photos
(the class or its parent is a concept of the photos) and those whose formula names the class
or one of its three nearest hypernyms.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import stats

import invert
import invert.trust.tail as tail_mod
from invert.engine.synthetic import make_layer
from invert.trust import (
    correct_pvalues,
    fit_tail,
    permutation_floor,
    permutation_null,
    permutation_test,
)
from invert.trust._ties import has_ties as _has_ties
from invert.trust.tail import null_pvalues

PAPER_KW = {"length": 3, "beam_size": 5, "min_fraction": 0.002}


def relu_ties(a: np.ndarray, cols, rng: np.random.Generator) -> np.ndarray:
    """A copy of ``a`` whose columns ``cols`` are ReLU outputs with 30-70% zeros."""
    out = a.astype(np.float64, copy=True)
    for k in cols:
        out[:, k] = np.maximum(out[:, k] - np.quantile(out[:, k], rng.uniform(0.3, 0.7)), 0)
    return out


def ks(p: np.ndarray) -> str:
    p = p[~np.isnan(p)]
    return f"KS uniformity p = {stats.kstest(p, 'uniform').pvalue:.3f} over {p.size} units"


def timed_test(a, y, res, perms: int, seed: int):
    est = []
    t0 = time.perf_counter()
    p = permutation_test(a, y, res, n_permutations=perms, random_state=seed,
                         on_estimate=est.append)
    return p, time.perf_counter() - t0, est[0]


def report_layer(name: str, res, p: np.ndarray, seconds: float, est, n_planted: int) -> None:
    planted, noise = p[:n_planted], p[n_planted:]
    methods = [u[0].extras["search_p_method"] for u in res.units[:n_planted] if u]
    q = correct_pvalues(p, "bh") <= 0.05
    print(f"{name}: permutation test {seconds:.1f} s (estimated {est.seconds:.1f} s after "
          f"its first {min(32, est.n_permutations)} permutations; {est.n_tie_broken} units "
          f"re-searched on tie-broken ranks)")
    print(f"  planted: largest p {np.nanmax(planted):.2g}, median p {np.nanmedian(planted):.2g},"
          f" share p <= 1e-6: {np.mean(planted <= 1e-6):.3f}; from the tail: "
          f"{methods.count('gpd')}/{len(methods)}")
    print(f"  noise: {ks(noise)}; BH 0.05 discoveries {int(q.sum())} "
          f"(noise {int(q[n_planted:].sum())})")


def section_paper(args) -> tuple[float, object]:
    layer = untied_layer()
    y = layer.concepts
    f32 = int(_has_ties(layer.activations.astype(np.float32), list(range(512))).sum())
    print(f"paper-scale layer: N={layer.activations.shape[0]}, C={y.matrix.shape[1]}, "
          f"512 units (64 planted), {args.perms} permutations, L=3, B=5, min_fraction=0.002; "
          f"float64 without ties (as float32, {f32} of its 512 units would have ties)")
    t0 = time.perf_counter()
    res = invert.explain(layer.activations, y, **PAPER_KW)
    print(f"  search: {time.perf_counter() - t0:.1f} s")
    p, sec, est = timed_test(layer.activations, y, res, args.perms, 0)
    print(f"  {est}")
    report_layer("untied layer", res, p, sec, est, 64)
    return sec, layer


def untied_layer():
    """The paper-scale layer in float64, with float32 coincidences jittered away."""
    layer = make_layer(n_units=512, n_planted=64, seed=0)
    jitter = 1e-6 * np.random.default_rng(5).standard_normal(layer.activations.shape)
    layer.activations = layer.activations.astype(np.float64) + jitter
    return layer


def duplicate_rows(n: int, share: float, rng: np.random.Generator) -> np.ndarray:
    """Row indices with ``share * n`` rows replaced by copies of other rows."""
    idx = np.arange(n)
    k = int(share * n)
    dst = rng.choice(n, k, replace=False)
    idx[dst] = rng.choice(np.setdiff1d(idx, dst), k)
    return idx


def section_ties(args, untied_seconds: float, layer) -> None:
    rng = np.random.default_rng(7)
    n = layer.activations.shape[0]
    rows = duplicate_rows(n, 0.01, rng)
    a = relu_ties(layer.activations[rows], range(512), rng)
    a[:, 512 - 16:] = 0.0  # dead units
    y = layer.concepts.matrix[rows]
    zeros = (a[:, :496] == 0).mean(axis=0)
    print(f"tied layer: same sizes, zeros per unit {zeros.min():.2f}-{zeros.max():.2f}, "
          f"16 dead units, {int(0.01 * n)} duplicate samples")
    t0 = time.perf_counter()
    res = invert.explain(a, y, **PAPER_KW)
    print(f"  search: {time.perf_counter() - t0:.1f} s")
    p, sec, est = timed_test(a, y, res, args.perms, 0)
    print(f"  {est}")
    report_layer("tied layer", res, p[:496], sec, est, 64)
    print(f"  dead units without a test: {int(np.isnan(p[496:]).sum())}/16")
    if untied_seconds:
        print(f"  time tied / untied: {sec / untied_seconds:.2f} (one shared null; the old "
              f"test computed one null per tie structure: {len(set(map(int, zeros * n)))} "
              f"distinct zero counts here)")


def section_duplicates(args) -> None:
    layer = make_layer(n_leaves=100, samples_per_leaf=50, n_hypernyms=40, n_units=300,
                       n_planted=0, seed=3)
    n = layer.activations.shape[0]
    jitter = 1e-6 * np.random.default_rng(1).standard_normal(layer.activations.shape)
    rows = duplicate_rows(n, 0.01, np.random.default_rng(7))
    a = (layer.activations.astype(np.float64) + jitter)[rows]
    y = layer.concepts.matrix[rows]
    res = invert.explain(a, y, length=3, beam_size=5, min_fraction=0.02)
    line = []
    for groups in ("auto", None):
        p = permutation_test(a, y, res, n_permutations=args.perms, random_state=0,
                             groups=groups)
        line.append(f"groups={groups!r}: {ks(p)}, mean p {np.mean(p):.3f}")
    print(f"duplicates: {int(0.01 * n)} copies among N={n} samples (C=140, L=3, B=5, "
          f"min_fraction=0.02), 300 noise units, {args.perms} permutations")
    print("  " + "; ".join(line))


def section_calibration(args) -> None:
    noise_p, tied_p, fdp, fdp_sub, power = [], [], [], [], []
    t0 = time.perf_counter()
    sub = np.random.default_rng(0)
    for seed in range(args.seeds):
        layer = make_layer(n_leaves=100, samples_per_leaf=20, n_hypernyms=40, n_units=221,
                           n_planted=20, signal=1.5, seed=100 + seed)
        tied = np.arange(20, 220, 2)
        a = relu_ties(layer.activations, tied, np.random.default_rng(seed))
        a[:, 220] = 0.0
        y = layer.concepts
        res = invert.explain(a, y, length=3, beam_size=5, min_fraction=0.01)
        p = permutation_test(a, y, res, n_permutations=args.perms, random_state=seed)
        noise_p.append(p[20:220])
        tied_p.append(p[tied])
        q = correct_pvalues(p, "bh") <= 0.05
        fdp.append(q[20:].sum() / max(1, q.sum()))
        power.append(q[:20].mean())
        for _ in range(100):
            units = np.r_[np.arange(20), sub.choice(np.arange(20, 220), 20, replace=False)]
            r = correct_pvalues(p[units], "bh") <= 0.05
            fdp_sub.append(r[20:].sum() / max(1, r.sum()))
    noise = np.concatenate(noise_p)
    print(f"calibration: {args.seeds} layers (N=2000, C=140, L=3, B=5, min_fraction=0.01), "
          f"each with its own null of {args.perms} permutations ({time.perf_counter() - t0:.0f}"
          " s)")
    print(f"  noise units (half ReLU-tied): {ks(noise)}; tied only: "
          f"{ks(np.concatenate(tied_p))}")
    print(f"  share of noise p <= 0.05: {np.mean(noise <= 0.05):.4f}, <= 0.01: "
          f"{np.mean(noise <= 0.01):.4f}, <= 0.001: {np.mean(noise <= 0.001):.4f}")
    print(f"  BH 0.05 over each layer (20 planted, 200 noise): FDR {np.mean(fdp):.4f}, planted "
          f"found {np.mean(power):.3f}; over layers of 20 planted + 20 noise units: FDR "
          f"{np.mean(fdp_sub):.4f}")


def section_tail(args) -> None:
    rng = np.random.default_rng(1)
    m = 500
    targets = np.array([1e-3, 1e-4, 1e-5, 1e-6, 1e-8])
    # x with P(max of m normals >= x) = target
    xs = stats.norm.isf(-np.log1p(-targets) / m)
    constrained, free = [], []
    fit_free = tail_mod._fit

    def unconstrained(y):
        xi, scale = tail_mod._pwm(y)
        return xi, scale, xi

    for _ in range(args.tail_reps):
        null = np.sort(stats.norm.rvs(size=(1000, m), random_state=rng).max(axis=1))
        constrained.append(null_pvalues(null, xs, fit_tail(null, rng))[0] / targets)
        tail_mod._fit = unconstrained
        try:
            with np.errstate(all="ignore"):
                lp = null_pvalues(null, xs, fit_tail(null, rng))[1]
            free.append(np.where(np.isfinite(lp), 10.0 ** lp, 0.0) / targets)
        finally:
            tail_mod._fit = fit_free
    c, f = np.array(constrained), np.array(free)
    print(f"tail accuracy: null = max of {m} standard normals, 1000 permutations, "
          f"{args.tail_reps} repetitions; estimated / true p at true p "
          + ", ".join(f"{t:.0e}" for t in targets))
    print("  shape >= 0 (used): median " + ", ".join(f"{v:.2g}" for v in np.median(c, 0))
          + "; share below true: " + ", ".join(f"{v:.2f}" for v in (c < 1).mean(0)))
    print("  free shape:        median " + ", ".join(f"{v:.2g}" for v in np.median(f, 0))
          + "; share below true: " + ", ".join(f"{v:.2f}" for v in (f < 1).mean(0))
          + "; share p = 0: " + ", ".join(f"{v:.2f}" for v in (f == 0).mean(0)))


def section_parsimony(args) -> None:
    rng = np.random.default_rng(0)
    y = rng.random((2000, 12)) < 0.15
    a = rng.standard_normal((2000, 100)) + 0.3 * y[:, [0]]
    out = []
    for kw in ({"parsimony": None}, {}):
        r = invert.explain(a, y, length=3, beam_size=5, min_fraction=0.05, holdout=0.5,
                           random_state=0, **kw)
        null = permutation_null(y, r, n_permutations=200, random_state=1)
        p = permutation_test(a, y, r, null=null, random_state=1)
        reported = np.array([u[0].auroc for u in r.units])  # the old test's statistic
        p_old = null_pvalues(null.values, reported, null.tail)[0]
        out.append(((correct_pvalues(p, "bh") <= 0.05).sum(),
                    (correct_pvalues(p_old, "bh") <= 0.05).sum()))
    print("parsimony (issue 11's reproduction, 100 weak units, 200 permutations): "
          f"significant without parsimony {out[0][0]}, with the default parsimony "
          f"{out[1][0]} (testing the reported formula against the null of the search "
          f"maximum instead: {out[0][1]} and {out[1][1]})")


def section_floor(args) -> None:
    print("permutation_floor (BH at 0.05):")
    for perms, m in ((200, 576), (1000, 576), (1000, 512), (10000, 512)):
        for tail in (None, "gpd"):
            f = permutation_floor(perms, m, 0.05, tail=tail)
            print(f"  {perms} permutations, {m} units, tail={tail}: {f}; "
                  f"warning: {f.warning or 'none'}")


def count_demo(out: str) -> None:
    import json

    from invert.concepts import imagenet_hierarchy

    h = imagenet_hierarchy()
    names, concepts = list(h.names), set(json.load(open(f"{out}/concepts.json"))["names"])

    def above(c: str, depth: int) -> set[str]:
        seen, front = set(), [c]
        for _ in range(depth):
            front = [p for f in front for p in h.parents.get(f, [])]
            seen |= set(front)
        return seen

    logits = [r for r in map(json.loads, open(f"{out}/explanations.jsonl"))
              if r["layer"] in ("", "_fc") and r["explanations"]]
    best = [(names[int(r["unit"])], r["explanations"][0]) for r in logits]
    sig = [(c, e) for c, e in best if e.get("q_value", 1.0) <= 0.05]
    clear = [(c, e) for c, e in sig if e["holdout_auroc"] >= 0.9]
    present = [(c, e) for c, e in clear if c in concepts or above(c, 1) & concepts]
    named = [(c, e) for c, e in clear
             if {t.strip("()~ ") for t in e["formula"].replace("&", "|").split("|")}
             & (above(c, 3) | {c})]
    feats = sum(1 for r in map(json.loads, open(f"{out}/explanations.jsonl"))
                if r["layer"] not in ("", "_fc") and r["explanations"]
                and r["explanations"][0].get("q_value", 1.0) <= 0.05)
    print(f"demo {out}: {len(logits)} class logits, {len(sig)} significant at q <= 0.05, "
          f"{len(clear)} of them with held-out AUROC >= 0.9; of these, class present in the "
          f"photos: {len(present)}, formula naming the class or a near hypernym: {len(named)};"
          f" significant feature units: {feats}")


SECTIONS = ("paper", "ties", "duplicates", "calibration", "tail", "parsimony", "floor")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--perms", type=int, default=1000)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--tail-reps", type=int, default=100)
    ap.add_argument("--skip", nargs="*", default=[], choices=SECTIONS)
    ap.add_argument("--demo", metavar="DIR", help="count significant logits of a demo run")
    args = ap.parse_args()
    if args.demo:
        count_demo(args.demo)
        return
    untied, layer = 0.0, None
    if "paper" not in args.skip:
        untied, layer = section_paper(args)
    if "ties" not in args.skip:
        section_ties(args, untied, layer or untied_layer())
    for name in SECTIONS[2:]:
        if name not in args.skip:
            globals()[f"section_{name}"](args)


if __name__ == "__main__":
    main()
