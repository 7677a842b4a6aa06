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
