"""The registry of reductions: every name `reduce` takes, and how it is parsed."""

from __future__ import annotations

import pytest
import torch

from invert.extract.units import (
    CHANNEL_REDUCTIONS,
    REDUCTIONS,
    TOKEN_REDUCTIONS,
    LayerInfo,
    UnitSpec,
    compute_units,
    parse_reduce,
)


def test_registry_names():
    assert set(CHANNEL_REDUCTIONS) == {"mean", "max", "quantile", "none"}
    assert set(TOKEN_REDUCTIONS) == {"mean", "max", "last", "first", "tokens"}
    assert REDUCTIONS == ("mean", "max", "quantile", "none", "last", "first", "tokens")


@pytest.mark.parametrize(
    ("reduce", "parsed"),
    [
        (None, ("none", None)),
        ("MEAN", ("mean", None)),
        ("tokens", ("tokens", None)),
        (0.25, ("quantile", 0.25)),
        (1, ("quantile", 1.0)),
        (("quantile", 0.5), ("quantile", 0.5)),
        ("quantile(0.9)", ("quantile", 0.9)),
    ],
)
def test_parse_reduce(reduce, parsed):
    assert parse_reduce(reduce) == parsed


@pytest.mark.parametrize("reduce", [True, "median", ("q", 0.5), "quantile(x)", 2.0, [0.5]])
def test_parse_reduce_rejects(reduce):
    with pytest.raises(ValueError, match="reduce: "):
        parse_reduce(reduce)


def test_quantile_over_tokens_is_not_supported():
    spec = UnitSpec("quantile", 0.5, "tokens", None, {})
    with pytest.raises(ValueError, match="'quantile' is not supported over tokens; use 'mean', "
                                         "'max', 'last', 'first' or 'tokens'"):
        compute_units("mix", torch.zeros(2, 3, 4), spec, None, LayerInfo())


def test_token_none_is_one_row_per_token():
    spec = UnitSpec("none", None, "auto", None, {})
    info = LayerInfo()
    x = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    y, tok = compute_units("mix", x, spec, mask, info)
    assert info.reduction == "tokens" and y.shape == (3, 4)
    assert tok.tolist() == [[0, 0], [0, 1], [1, 0]]
