"""Vocabulary-scale benchmark: sparse-autoencoder-sized layers over token rows and a token-style
concept vocabulary, out of core, on 2 CPU cores, and the same through Ray with 2 workers.

Goal (issue 16, item 4): 16,384 units x 1,000,000 token rows x 10,000 sparse concepts, L = 3,
B = 5, out of core within an 8 GiB memory budget, in <= 30 minutes on 2 CPU cores, with >= 95%
of the planted units at least as good as their planted formula; Ray with 2 workers gives the
identical result.

Data (synthetic, seeded): each row is a token with a few active concepts (about 2.6 on
average): one *word* from a Zipf-Mandelbrot vocabulary (``C - 100`` words), one *tag* (48 tags;
90% the word's own tag, else a random one) and 0-2 *features* (52, Zipf; e.g. case, position).
The concepts are a scipy.sparse CSR matrix. Half of the measured units are planted: they fire
``signal * formula + N(0, 1)`` on a formula of 1-3 literals (``a``, ``a | b``, ``tag & ~word``,
``a | b | c``, ``(tag & ~word) | c``); the others are pure noise.

The full activation file would be ``rows x 16,384 x 4`` bytes (64 GB), so the benchmark writes
a *slice* of ``--units`` units (default 256) to a memory-mapped float32 ``.npy`` in a temporary
folder, searches it with ``invert.explain(memmap, csr, memory_budget="8GiB")`` and
**extrapolates** to ``--target-units`` (16,384): fixed costs (reading the labels, collapsing
rows into patterns) once, plus the measured per-unit cost times the units. The file is written
column-major (``--order F``: each unit's column is contiguous, so a block of units is one
read); ``--order C`` writes it row-major, which costs a pass over the whole file per chunk
of units (the benchmark prints that cost).

Run::

    python benchmarks/bench_vocab.py            # 256 units x 1M rows x 10k concepts (~5-10 min)
    python benchmarks/bench_vocab.py --quick    # 64 units x 100k rows (about a minute)
    python benchmarks/bench_vocab.py --units 512 --no-ray
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

N_TAGS, N_FEATURES = 48, 52
SEARCH = {"length": 3, "beam_size": 5, "min_fraction": 0.001}


# ----------------------------------------------------------------------------- memory


def rss_peak() -> int:
    """Peak RSS of this process in bytes since the last :func:`reset_peak` (VmHWM)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # pragma: no cover


def rss_now() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0  # pragma: no cover


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux: ``5`` to ``/proc/self/clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def gib(b: float) -> str:
    return f"{b / 2**30:.2f} GiB"


# ----------------------------------------------------------------------------- data


def _zipf(n: int, s: float, q: float) -> np.ndarray:
    p = 1.0 / (np.arange(n) + q) ** s
    return p / p.sum()


@dataclass
class Vocab:
    """Token-style concepts: ``y`` (N, C) CSR bool, the concept names, the word and tag of
    each row, each word's own tag."""

    y: sp.csr_matrix
    names: list[str]
    n_words: int
    word: np.ndarray
    own_tag: np.ndarray

    def concepts(self):
        """The named concept matrix ``explain`` takes (the CSR matrix and the names)."""
        from invert.engine.synthetic import LabelMatrix

        return LabelMatrix(self.names, self.y)


def make_vocab(n_rows: int, n_concepts: int, rng: np.random.Generator) -> Vocab:
    """Each row: one word (Zipf-Mandelbrot, s = 1.07), one tag (90% the word's own), 0-2
    features (Zipf)."""
    nw = n_concepts - N_TAGS - N_FEATURES
    if nw < 10:
        raise SystemExit(f"--concepts must be at least {N_TAGS + N_FEATURES + 10}")
    word = rng.choice(nw, size=n_rows, p=_zipf(nw, 1.07, 2.7))
    p_tag = _zipf(N_TAGS, 1.0, 1.0)
    own_tag = rng.choice(N_TAGS, size=nw, p=p_tag)
    tag = np.where(rng.random(n_rows) < 0.9, own_tag[word],
                   rng.choice(N_TAGS, size=n_rows, p=p_tag))
    n_feat = rng.choice(3, size=n_rows, p=[0.5, 0.35, 0.15])
    p_feat = _zipf(N_FEATURES, 1.0, 1.0)
    rows, cols = [np.arange(n_rows), np.arange(n_rows)], [word, nw + tag]
    for j in (1, 2):
        r = np.flatnonzero(n_feat >= j)
        rows.append(r)
        cols.append(nw + N_TAGS + rng.choice(N_FEATURES, size=r.size, p=p_feat))
    r, c = np.concatenate(rows), np.concatenate(cols)
    y = sp.csr_matrix((np.ones(r.size, dtype=bool), (r, c)), shape=(n_rows, n_concepts))
    y.sum_duplicates()
    names = ([f"word{j}" for j in range(nw)] + [f"TAG{j}" for j in range(N_TAGS)]
             + [f"feat{j}" for j in range(N_FEATURES)])
    return Vocab(y, names, nw, word, own_tag)


KINDS = ("a", "a | b", "tag & ~word", "a | b | c", "(tag & ~word) | c")


def _formula(kind: str, a: int, b: int, c: int):
    """The planted formula of ``kind`` over concepts ``a``, ``b``, ``c``."""
    from invert.engine.formula import And, Literal, Or

    if kind == "a":
        return Literal(a)
    if kind == "a | b":
        return Or(Literal(a), Literal(b))
    if kind == "tag & ~word":
        return And(Literal(a), Literal(b, True))
    if kind == "a | b | c":
        return Or(Or(Literal(a), Literal(b)), Literal(c))
    return Or(And(Literal(a), Literal(b, True)), Literal(c))


def plant(voc: Vocab, n_planted: int, rng: np.random.Generator):
    """Formulas of 1-3 literals over concepts of support 0.2%-5% (a tag's word: one of
    its own), the planted formula within the search's fraction limits."""
    from invert.engine.formula import LabelColumns

    n = voc.y.shape[0]
    frac = np.asarray(voc.y.sum(axis=0)).ravel() / n
    pool = np.flatnonzero((frac >= 0.002) & (frac <= 0.05))
    tags = [voc.n_words + t for t in range(N_TAGS) if frac[voc.n_words + t] <= 0.3]
    cols = LabelColumns(voc.y)
    out, kinds = [], []
    while len(out) < n_planted:
        kind = KINDS[len(out) % len(KINDS)]
        a, b, c = (int(x) for x in rng.choice(pool, size=3, replace=False))
        if "tag" in kind:
            a = int(rng.choice(tags))
            own = np.flatnonzero(voc.own_tag == a - voc.n_words)
            own = own[frac[own] >= 0.0005]
            if own.size == 0:
                continue
            b = int(rng.choice(own))
        f = _formula(kind, a, b, c)
        m = cols.evaluate(f)
        if not SEARCH["min_fraction"] <= m.mean() <= 0.5:
            continue
        out.append(f.with_names(voc.names))
        kinds.append(kind)
    return out, kinds, cols


def write_activations(path: Path, n: int, k: int, planted, cols, order: str,
                      signal: float, rng: np.random.Generator) -> float:
    """Noise plus ``signal`` on each planted unit's formula, as a float32 ``.npy`` memmap
    written a band of units at a time. Returns the seconds taken."""
    t0 = time.perf_counter()
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, k),
                                    fortran_order=order == "F")
    band = max(1, (64 << 20) // (4 * n))
    for s in range(0, k, band):
        e = min(k, s + band)
        blk = rng.standard_normal((e - s, n), dtype=np.float32)  # (units, rows)
        for u in range(s, min(e, len(planted))):
            blk[u - s] += np.float32(signal) * cols.evaluate(planted[u])
        out[:, s:e] = blk.T
    out.flush()
    del out
    return time.perf_counter() - t0


def distinct_rows(y: sp.csr_matrix) -> int:
    """Distinct label rows (the engine's label patterns), by a random 2-wide hash."""
    z = np.random.default_rng(1).integers(0, 1 << 30, size=(y.shape[1], 2)).astype(np.float64)
    return len(np.unique(np.asarray(y.astype(np.float64) @ z), axis=0))


# ----------------------------------------------------------------------------- measuring


class Clock:
    """A progress callback that records (wall, cpu, units done)."""

    def __init__(self):
        self.t0 = time.perf_counter()
        self.c0 = time.process_time()
        self.marks: list[tuple[float, float, int]] = []

    def __call__(self, done: int, total: int) -> None:
        self.marks.append((time.perf_counter() - self.t0, time.process_time() - self.c0, done))

    def per_unit(self) -> tuple[float, float, float, float]:
        """(wall s/unit, cpu s/unit, fixed wall s, fixed cpu s) from the marks: the slope
        between the first finished block and the end, and the intercept."""
        (w1, c1, u1), (w2, c2, u2) = self.marks[0], self.marks[-1]
        if u2 <= u1:
            return w2 / u2, c2 / u2, 0.0, 0.0
        pw, pc = (w2 - w1) / (u2 - u1), (c2 - c1) / (u2 - u1)
        return pw, pc, max(0.0, w2 - pw * u2), max(0.0, c2 - pc * u2)


def planted_share(res, acts, planted, cols) -> tuple[int, int, list[str]]:
    """Planted units whose best explanation has an AUROC at least that of the planted
    formula (exact AUROC of both, from the same activations)."""
    import invert

    ok, misses = 0, []
    for u, f in enumerate(planted):
        want = invert.auroc(np.asarray(acts[:, u]), cols.evaluate(f))
        best = res[u][0].auroc if len(res[u]) else -np.inf
        if best >= want - 1e-12:
            ok += 1
        else:
            misses.append(f"unit {u}: planted {f} {want:.4f}, found "
                          f"{res[u][0].formula if len(res[u]) else None} {best:.4f}")
    return ok, len(planted), misses


def same(a, b) -> tuple[bool, int]:
    """Whether two results agree unit by unit (formulas and AUROCs exactly equal), and the
    number of units that differ."""
    diff = 0
    for ua, ub in zip(a, b, strict=True):
        fa = [(str(e.formula), e.auroc) for e in ua]
        fb = [(str(e.formula), e.auroc) for e in ub]
        diff += fa != fb
    return diff == 0 and len(a) == len(b), diff


# ----------------------------------------------------------------------------- stages


def read_pass(path: Path, cold: bool) -> float:
    """Seconds of one sequential pass over the file (plain reads, 16 MiB at a time); with
    ``cold``, after asking the kernel to drop the file's pages (``posix_fadvise``), so the
    pass reads the disk (the pass leaves the file cached again)."""
    buf = bytearray(16 << 20)
    with open(path, "rb", buffering=0) as f:
        if cold and hasattr(os, "posix_fadvise"):
            os.fsync(f.fileno())
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        t0 = time.perf_counter()
        while f.readinto(buf):
            pass
    return time.perf_counter() - t0


def run_engine(path: Path, voc: Vocab, budget: str):
    import invert

    acts = np.load(path, mmap_mode="r")
    reset_ok = reset_peak()
    base = rss_now()
    clock = Clock()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = invert.explain(acts, voc.concepts(), memory_budget=budget, progress=clock,
                             **SEARCH)
    wall = time.perf_counter() - clock.t0
    cpu = time.process_time() - clock.c0
    return res, wall, cpu, clock, rss_peak(), base, reset_ok, [str(w.message) for w in caught]


def run_ray(path: Path, voc: Vocab, budget: str, workers: int):
    """``explain_sharded`` on Ray: (result, start-up seconds, search seconds)."""
    import ray

    from invert.distributed import explain_sharded

    t0 = time.perf_counter()
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    try:
        up = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = explain_sharded(str(path), voc.concepts(), backend="ray", num_workers=workers,
                              memory_budget=budget, **SEARCH)
        return res, up, time.perf_counter() - t0
    finally:
        ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=None, help="units measured (default 256)")
    ap.add_argument("--rows", type=int, default=None, help="token rows (default 1,000,000)")
    ap.add_argument("--concepts", type=int, default=10_000, help="concepts (default 10,000)")
    ap.add_argument("--target-units", type=int, default=16_384,
                    help="units to extrapolate to (default 16,384)")
    ap.add_argument("--quick", action="store_true", help="64 units x 100,000 rows")
    ap.add_argument("--budget", default="8GiB", help="memory_budget of the search")
    ap.add_argument("--order", choices=["F", "C"], default="F",
                    help="layout of the .npy: F column-major (default), C row-major")
    ap.add_argument("--signal", type=float, default=1.5)
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray comparison")
    ap.add_argument("--workers", type=int, default=2, help="Ray workers (default 2)")
    ap.add_argument("--tmp", default=None, help="folder for the temporary .npy")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    k = args.units or (64 if args.quick else 256)
    n = args.rows or (100_000 if args.quick else 1_000_000)
    c = args.concepts
    target = max(args.target_units, k)

    from invert._validate import check_memory_budget
    from invert.engine.params import SearchParams
    from invert.engine.search import memory_floor
    from invert.engine.threads import available_cpus, default_threads

    budget_bytes = check_memory_budget("memory_budget", args.budget)
    print(f"machine: {os.cpu_count()} CPUs ({available_cpus()} available); torch "
          f"{torch.__version__}, torch threads {torch.get_num_threads()} (the search runs "
          f"{default_threads(torch.device('cpu'))} worker threads of 1 torch thread each); "
          f"python {sys.version.split()[0]}; load average "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    voc = make_vocab(n, c, rng)
    n_pat = distinct_rows(voc.y)
    planted, kinds, cols = plant(voc, k // 2, rng)
    print(f"concepts: {n:,} rows x {c:,} concepts ({voc.n_words:,} words, {N_TAGS} tags, "
          f"{N_FEATURES} features), CSR with {voc.y.nnz / n:.2f} active per row, "
          f"{n_pat:,} distinct rows (label patterns); {len(planted)} planted units of {k} "
          f"({', '.join(f'{kinds.count(x)} {x}' for x in KINDS)}); made in "
          f"{time.perf_counter() - t0:.1f} s")
    print(f"search: L={SEARCH['length']} B={SEARCH['beam_size']} "
          f"min_fraction={SEARCH['min_fraction']} memory_budget={args.budget}")

    if args.tmp:
        os.makedirs(args.tmp, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        path = Path(tmp) / "acts.npy"
        dt = write_activations(path, n, k, planted, cols, args.order, args.signal, rng)
        size = path.stat().st_size
        full = size / k * target
        print(f"activations: SLICE of {k} units x {n:,} rows, float32, order {args.order}, "
              f"memory-mapped .npy of {size / 2**20:,.0f} MiB (written in {dt:.1f} s); the full "
              f"{target:,}-unit file would be {full / 1e9:,.1f} GB")
        t_cold = read_pass(path, cold=True)
        t_pass = read_pass(path, cold=False)
        disk = size / t_cold
        print(f"  one read pass over the slice: {t_cold:.2f} s from disk ({disk / 1e9:.2f} GB/s, "
              f"pages dropped first), {t_pass:.2f} s from the page cache "
              f"({size / t_pass / 1e9:.2f} GB/s); the search below reads it from the cache")

        res, wall, cpu, clock, peak, base, reset_ok, warned = run_engine(path, voc,
                                                                         args.budget)
        pw, pc, fw, fc = clock.per_unit()
        sp_ = SearchParams.from_kwargs(c, **SEARCH)  # the engine's chunk of units
        chunk = sp_.chunk_units(n, n_pat, c, max(budget_bytes, memory_floor(
            sp_, n, n_pat, c, 4 * (target if args.order == "C" else n))))
        ok, total, misses = planted_share(res, np.load(path, mmap_mode="r"), planted, cols)
        print(f"\n== invert.explain(memmap, csr, memory_budget={args.budget!r}), this process ==")
        print(f"slice, {k} units:                 {wall:8.1f} s wall, {cpu:8.1f} s CPU "
              f"({pw * 1e3:.0f} ms wall, {pc * 1e3:.0f} ms CPU per unit)")
        # the finiteness check reads the file once; the search once in order F, once per
        # chunk of units in order C (each chunk's columns are spread over every row)
        passes = 1 + (1 if args.order == "F" else -(-target // chunk))
        ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        fits = (f"larger than this machine's {ram / 2**30:.0f} GiB of memory" if full > ram
                else "assumed uncached, though it would fit the page cache here")
        io = passes * full / disk
        ext_w = fw + pw * target + io
        ext_c = fc + pc * target / 2 + io
        print(f"EXTRAPOLATED to {target:,} units:  {ext_w / 60:8.1f} min at this slice's "
              f"wall rate; {ext_c / 60:.1f} min from its CPU time on 2 dedicated cores "
              "(goal <= 30 min)")
        print(f"  = fixed {fw:.0f} s wall / {fc:.0f} s CPU + {target:,} units x per-unit cost "
              f"+ {io / 60:.1f} min reading the {full / 1e9:.0f} GB file {passes} times from "
              f"disk at {disk / 1e9:.2f} GB/s ({fits}; not overlapped)")
        if args.order == "C":
            print(f"  order C: every chunk of {chunk} units reads the whole file (the finiteness "
                  f"check one pass): {passes} passes over {full / 1e9:.0f} GB at {target:,} "
                  f"units, {io / 3600:.1f} h of reading; order F reads it twice")
        print(f"planted units at least as good:  {ok / max(1, total):8.1%} of {total} "
              "(goal >= 95%)")
        for line in misses[:5]:
            print("  miss:", line)
        peak_note = "since the search began" if reset_ok else "of the whole process"
        print(f"peak RSS ({peak_note}):    {gib(peak)} (RSS before the search: {gib(base)}); "
              f"budget {args.budget} (goal: within 8 GiB)")
        for w in warned:
            print(f"  engine warning: {w}")

        if args.no_ray:
            return 0
        try:
            import ray  # noqa: F401
        except ImportError:
            print("\n(ray not installed: pip install 'invert[ray]'; Ray comparison skipped)")
            return 0
        per_worker = f"{budget_bytes // args.workers // 2**20}MiB"
        print(f"\n== explain_sharded(path, backend='ray', num_workers={args.workers}, "
              f"memory_budget={per_worker!r} per worker) ==")
        ray_res, up, ray_wall = run_ray(path, voc, per_worker, args.workers)
        eq, diff = same(res, ray_res)
        print(f"slice, {k} units:                 {ray_wall:8.1f} s wall (ray.init {up:.1f} s "
              "not counted)")
        print(f"identical to invert.explain:     {'yes' if eq else 'NO'} (formulas and AUROCs "
              f"unit by unit; {diff} of {k} units differ)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
