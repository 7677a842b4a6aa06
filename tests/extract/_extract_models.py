"""Tiny models for the activation-extraction tests (built here, no downloads)."""

from __future__ import annotations

import torch


class CountingConvNet(torch.nn.Module):
    """conv -> relu -> pool -> linear, counting forward calls."""

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = torch.nn.Conv2d(3, 5, 3, padding=1)
        self.relu = torch.nn.ReLU()
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.flat = torch.nn.Flatten()
        self.fc = torch.nn.Linear(5, 4)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        self.calls = 0
        self.fail_at: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise RuntimeError("simulated crash")
        return self.fc(self.flat(self.pool(self.relu(self.conv(x)))))


class TinyTokenModel(torch.nn.Module):
    """Embedding -> linear over tokens; output (B, T, D), like a transformer block."""

    def __init__(self, vocab: int = 20, d: int = 6):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.emb = torch.nn.Embedding(vocab, d)
        self.mix = torch.nn.Linear(d, d)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        return self.mix(self.emb(input_ids))


# The cache written by invert 0.1.0 before the redesign (tests/extract/data/cache_v0_1_0, made by
# tests/extract/data/make_cache_v0_1_0.py with the old code) holds these runs. The old and the new
# code import this module under the same name, so the class names in the model fingerprint agree.
# Do not change anything here: the fixture's cache keys depend on every detail.
def cache_fixture_runs() -> list[tuple[str, torch.nn.Module, object, object, dict]]:
    """``(name, model, data, layers, kwargs)`` of each run stored in the v0.1.0 cache fixture."""
    import numpy as np

    x = torch.from_numpy(np.random.default_rng(7).normal(size=(10, 3, 6, 7)).astype("f4"))
    ids = torch.from_numpy(np.random.default_rng(8).integers(1, 20, size=(5, 4)))
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]])
    return [
        # a tensor: keyed by its content; consolidated, shards removed
        ("tensor", CountingConvNet(seed=3), x, ["conv", "fc"],
         {"reduce": "mean", "batch_size": 4}),
        # a stream of batches: keyed by its first batch, every shard kept and verified
        ("stream", CountingConvNet(seed=4), [x[:4], x[4:8], x[8:]], "conv",
         {"reduce": 0.75}),
        # token activations from a mapping of tensors, one row per non-padding token
        ("tokens", TinyTokenModel(), {"input_ids": ids, "attention_mask": mask}, "mix",
         {"reduce": "tokens", "batch_size": 2}),
    ]
