"""Benchmark: EfficientNet-Lite0 logits via PyTorch vs via ONNX Runtime on CPU, same batches.

Runs EfficientNet-Lite0 (offline package) on N synthetic 224x224 images in pre-made batches
and prints images/s of

* ``torch``: ``model(x)`` under ``torch.inference_mode()`` with ``torch.set_num_threads``,
* ``onnxruntime``: the :func:`invert.extract.onnx.onnx_unit_source` callable on the same
  batches (``intra_op_threads`` = the same thread count),
* ``ort via collect_activations``: ``collect_activations(None, x, source)`` (informational),

the ratio ORT / torch, and which is faster. The CPUs may be shared with other processes, so
the runs are interleaved for ``--rounds`` rounds and each keeps its best round. The export
time is printed too (paid once per model). Also checks that the logits agree (max abs diff).

Usage::

    .venv/bin/python benchmarks/bench_onnx.py                  # ~1 min on 2 CPU cores
    .venv/bin/python benchmarks/bench_onnx.py --n 128 --threads 4
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _common import add_size_args, synthetic_batches


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_size_args(p)
    p.add_argument("--threads", type=int, default=2, help="threads for torch and ORT")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    try:
        from invert.extract import collect_activations, efficientnet_lite0
        from invert.extract.onnx import onnx_unit_source

        model, _ = efficientnet_lite0()
        t0 = time.perf_counter()
        src = onnx_unit_source(model, torch.randn(1, 3, 224, 224), "",
                               intra_op_threads=a.threads)
        export_s = time.perf_counter() - t0
    except ImportError as e:
        print(f"skipped: {e}")
        return 0
    x, batches = synthetic_batches(model, a.n, a.batch_size)
    src(batches[0].clone())
    src(batches[0].clone())

    def run_torch() -> np.ndarray:
        with torch.inference_mode():
            return np.concatenate([model(b).numpy() for b in batches])

    def run_ort() -> np.ndarray:
        # a fresh view per batch: the source memoizes the last batch *object*
        return np.concatenate([src(b.view_as(b)).numpy() for b in batches])

    def run_collect() -> np.ndarray:
        return np.asarray(collect_activations(None, x, src, batch_size=a.batch_size,
                                              progress=False))

    runs = {"torch": run_torch, "onnxruntime": run_ort, "ort via collect_activations": run_collect}
    best = dict.fromkeys(runs, float("inf"))
    outs: dict[str, np.ndarray] = {}
    for _ in range(a.rounds):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            outs[name] = fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    import onnxruntime

    print(f"EfficientNet-Lite0 logits, {a.n} images of 3x224x224, batch {a.batch_size}, "
          f"{a.threads} threads, best of {a.rounds} interleaved rounds")
    print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}; "
          f"ONNX export + session: {export_s:.2f} s (once per model)")
    for name in runs:
        print(f"  {name:<28} {a.n / best[name]:8.1f} images/s  ({best[name]:.3f} s)")
    ratio = best["torch"] / best["onnxruntime"]
    diff = float(np.abs(outs["torch"] - outs["onnxruntime"]).max())
    faster = "onnxruntime" if ratio > 1 else "torch"
    print(f"  ratio onnxruntime / torch: {ratio:.2f}x -> {faster} is faster "
          f"(max |logit diff| {diff:.2e})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
