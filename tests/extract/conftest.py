"""Shared fixtures for the activation-extraction tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _extract_models import CountingConvNet


@pytest.fixture
def convnet() -> CountingConvNet:
    return CountingConvNet()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(0).normal(size=(23, 3, 6, 7)).astype("f4"))
