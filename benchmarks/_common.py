"""Setup shared by the extraction benchmarks (``bench_extract.py``, ``bench_onnx.py``).

The scripts run as ``python benchmarks/bench_*.py``, so this folder is on ``sys.path`` and
they import it as ``from _common import ...``.
"""

from __future__ import annotations

import argparse

import torch


def add_size_args(p: argparse.ArgumentParser) -> None:
    """Add ``--n``, ``--batch-size`` and ``--rounds`` to a benchmark's parser."""
    p.add_argument("--n", type=int, default=64, help="number of images (default 64)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=4, help="interleaved rounds (best is kept)")


def synthetic_batches(
    model: torch.nn.Module, n: int, batch_size: int
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``(x, batches)``: ``n`` seeded random 3x224x224 images and their pre-made batches.

    Also warms ``model`` up with two forward passes at full batch size (allocator, oneDNN
    kernels), so the first timed round is not penalised.
    """
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 224, 224, generator=g)
    batches = [x[s : s + batch_size] for s in range(0, n, batch_size)]
    with torch.inference_mode():
        model(batches[0])
        model(batches[0])
    return x, batches
