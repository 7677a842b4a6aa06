"""Layer outputs to units: pick the tensor, apply directions, reduce by a registered reduction.

A layer output is read in one of three layouts: ``dense`` ``(N, K)`` (used as it is),
``channels`` ``(N, C, *positions)`` (reduced over the positions by :data:`CHANNEL_REDUCTIONS`)
or ``tokens`` ``(N, T, D)`` (reduced over the tokens, padding left out, by
:data:`TOKEN_REDUCTIONS`). ``reduce`` names an entry of these registries; a new reduction is
one function and one entry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from .._validate import InvalidParameterError, bad

__all__ = [
    "CHANNEL_REDUCTIONS",
    "LAYOUTS",
    "REDUCTIONS",
    "TOKEN_REDUCTIONS",
    "LayerInfo",
    "Layout",
    "Reduce",
    "UnitSpec",
    "compute_units",
    "compute_units_and_maps",
    "keeps_maps",
    "parse_reduce",
]

Reduce = str | float | tuple[str, float] | None
Layout = Literal["auto", "dense", "channels", "tokens"]
LAYOUTS: tuple[str, ...] = ("auto", "dense", "channels", "tokens")
Mask = torch.Tensor | None


@dataclass
class UnitSpec:
    """How to turn every requested layer's output into units (validated arguments)."""

    reduce: str  # a key of REDUCTIONS
    q: float | None  # the quantile, for reduce="quantile"
    layout: str  # one of LAYOUTS
    select: int | str | Callable[[Any], Any] | None
    directions: dict[str, Any]  # layer -> (D, K) tensor or an SAE, on the device
    keep_maps: int = 0  # top samples per channel whose spatial maps are kept (0: none)


@dataclass
class LayerInfo:
    """What a layer's units are, fixed by its first batch: the reduction label and unit ids."""

    reduction: str = ""
    unit_ids: list[str] = field(default_factory=list)


# =========================================================================================
# The registries of reductions
# =========================================================================================
def quantile_lastdim(x: torch.Tensor, q: float) -> torch.Tensor:
    """Linear-interpolated quantile over the last dim (same as ``numpy.quantile``)."""
    n = x.shape[-1]
    s = torch.sort(x, dim=-1).values
    pos = q * (n - 1)
    lo = int(np.floor(pos))
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return s[..., lo] + (s[..., hi] - s[..., lo]) * frac


#: Feature maps: ``flat`` is ``(B, C, positions)``; the result ``(B, C)``, or ``(B, C * P)``
#: for ``"none"`` (every position kept).
CHANNEL_REDUCTIONS: dict[str, Callable[[torch.Tensor, float | None], torch.Tensor]] = {
    "mean": lambda flat, _q: flat.mean(-1),
    "max": lambda flat, _q: flat.amax(-1),
    "quantile": lambda flat, q: quantile_lastdim(flat, float(q)),  # type: ignore[arg-type]
    "none": lambda flat, _q: flat.flatten(1).clone(),
}


def _token_mean(x: torch.Tensor, m: Mask) -> tuple[torch.Tensor, None]:
    if m is None:
        return x.mean(1), None
    mf = m.unsqueeze(-1).to(x.dtype)
    return (x * mf).sum(1) / mf.sum(1).clamp(min=1.0), None


def _token_max(x: torch.Tensor, m: Mask) -> tuple[torch.Tensor, None]:
    return (x if m is None else x.masked_fill(~m.unsqueeze(-1), float("-inf"))).amax(1), None


def _token_at_end(x: torch.Tensor, m: Mask, last: bool) -> tuple[torch.Tensor, None]:
    B, T, _ = x.shape
    if m is None:
        idx = torch.full((B,), T - 1 if last else 0, device=x.device)
    else:
        ar = torch.arange(T, device=x.device).expand(B, T)
        if last:
            idx = torch.where(m, ar, -1).amax(1).clamp(min=0)
        else:
            idx = torch.where(m, ar, T).amin(1).clamp(max=T - 1)
    return x[torch.arange(B, device=x.device), idx], None


def _token_rows(x: torch.Tensor, m: Mask) -> tuple[torch.Tensor, torch.Tensor]:
    if m is None:
        m = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    return x[m], m.nonzero()  # row-major, same order as x[m]


#: Token activations: ``x`` is ``(B, T, D)``, ``m`` the ``(B, T)`` bool mask of real tokens or
#: None; the result ``(rows, D)`` and, for one row per token, the ``(rows, 2)`` token index.
TOKEN_REDUCTIONS: dict[str, Callable[[torch.Tensor, Mask], tuple[torch.Tensor, Any]]] = {
    "mean": _token_mean,
    "max": _token_max,
    "last": lambda x, m: _token_at_end(x, m, last=True),
    "first": lambda x, m: _token_at_end(x, m, last=False),
    "tokens": _token_rows,
}
_TOKEN_ALIASES = {"none": "tokens"}  # nothing reduced over tokens: one row per token

#: Every name ``reduce`` accepts.
REDUCTIONS: tuple[str, ...] = tuple(dict.fromkeys([*CHANNEL_REDUCTIONS, *TOKEN_REDUCTIONS]))
_TOKEN_ONLY = tuple(r for r in TOKEN_REDUCTIONS if r not in CHANNEL_REDUCTIONS)
_NAMED = tuple(r for r in REDUCTIONS if r != "quantile")  # the names without a parameter


# =========================================================================================
# Parsing `reduce`
# =========================================================================================
def _float_or_none(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _either(names: Sequence[str]) -> str:
    """``'a', 'b' or 'c'``."""
    shown = [repr(n) for n in names]
    return ", ".join(shown[:-1]) + " or " + shown[-1] if len(shown) > 1 else "".join(shown)


def _quantile(q: Any) -> tuple[str, float]:
    q = float(q)
    if not 0.0 <= q <= 1.0:
        raise InvalidParameterError(f"reduce: a quantile must lie in [0, 1], got {q}")
    return "quantile", q


def parse_reduce(reduce: Reduce) -> tuple[str, float | None]:
    """``(name in REDUCTIONS, quantile or None)`` from the ``reduce`` argument.

    Examples
    --------
    >>> parse_reduce("max"), parse_reduce(0.9), parse_reduce("quantile(0.5)"), parse_reduce(None)
    (('max', None), ('quantile', 0.9), ('quantile', 0.5), ('none', None))
    """
    if reduce is None:
        return "none", None
    if isinstance(reduce, bool):
        raise bad("reduce", "a str, float or ('quantile', q)", reduce)
    if isinstance(reduce, float | int):
        return _quantile(reduce)
    if isinstance(reduce, tuple):
        if len(reduce) == 2 and reduce[0] == "quantile" and isinstance(reduce[1], float | int):
            return _quantile(reduce[1])
        raise bad("reduce", "('quantile', q)", reduce)
    if isinstance(reduce, str):
        r = reduce.lower()
        if r in _NAMED:
            return r, None
        q = _float_or_none(r[9:-1]) if r.startswith("quantile(") and r.endswith(")") else None
        if q is not None:
            return _quantile(q)
        names = ", ".join(map(repr, _NAMED))
        raise bad("reduce", f"{names}, a quantile q in [0, 1] or ('quantile', q)", reduce)
    raise bad("reduce", "a str, float or ('quantile', q)", str(type(reduce)), raw=True)


# =========================================================================================
# One layer output -> units
# =========================================================================================
def select_output(name: str, out: Any, select: Any) -> torch.Tensor:
    """The tensor of a layer output (a tuple / mapping / ModelOutput needs ``select``)."""
    if isinstance(out, torch.Tensor) and select is None:
        return out
    if select is not None:
        if callable(select):
            out = select(out)
        elif isinstance(out, Mapping) or hasattr(out, "keys"):
            out = out[select] if isinstance(select, str) else tuple(out.values())[select]
        elif isinstance(out, list | tuple):
            out = out[select]
        if isinstance(out, torch.Tensor):
            return out
    kind = type(out).__name__
    keys = list(out.keys()) if hasattr(out, "keys") else None
    raise InvalidParameterError(
        f"layers: layer {name!r} outputs a {kind}"
        + (f" with keys {keys}" if keys else "")
        + ", not a tensor; pick a submodule that returns a tensor, or pass "
        "select=0 (tuple element), select='last_hidden_state' (mapping key) or a callable"
    )


def _layout_of(name: str, x: torch.Tensor, layout: str, red: str) -> str:
    """The layout to read ``x`` in (``"auto"`` resolved), checked against its shape."""
    if layout == "auto":
        layout = {2: "dense", 3: "tokens"}.get(x.ndim, "channels")
    if layout == "dense" and x.ndim != 2:
        raise InvalidParameterError(
            f"layout: 'dense' needs a 2-D output, layer {name!r} gave {x.ndim}-D")
    if layout == "tokens" and x.ndim != 3:
        raise InvalidParameterError(
            f"layout: 'tokens' needs a (batch, tokens, features) output, layer {name!r} "
            f"gave shape {tuple(x.shape)}"
        )
    if red in _TOKEN_ONLY and layout != "tokens":
        raise InvalidParameterError(
            f"reduce: {red!r} applies to token activations (batch, tokens, features); layer "
            f"{name!r} gave shape {tuple(x.shape)} (layout {layout!r})"
        )
    return layout


def apply_directions(name: str, x: torch.Tensor, W: Any, feat_axis: int) -> torch.Tensor:
    """``x`` projected on the directions ``W`` ``(D, K)`` along its feature axis, or encoded
    by ``W`` when it is an SAE (anything with ``W_enc`` and ``encode``)."""
    d = x.shape[feat_axis]
    sae = hasattr(W, "encode") and hasattr(W, "W_enc")
    shape = tuple((W.W_enc if sae else W).shape)
    if shape[0] != d:
        what = "the SAE's W_enc" if sae else "the direction matrix"
        raise InvalidParameterError(
            f"directions: layer {name!r} has {d} features (axis {feat_axis} of output "
            f"shape {tuple(x.shape)}), but {what} has shape {shape}; expected ({d}, K)"
        )
    project = W.encode if sae else (lambda v: v.to(W.dtype) @ W)
    if feat_axis == -1:
        return project(x)
    return torch.movedim(project(torch.movedim(x, 1, -1)), -1, 1)


def directions_label(W: Any) -> str:
    """The prefix of the reduction label: ``"directions+"``, or ``"sae(<activation>)+"``."""
    if hasattr(W, "encode") and hasattr(W, "W_enc"):
        return f"sae({W.activation})+"
    return "directions+"


def directions_ids(W: Any) -> list[str] | None:
    """The unit ids a direction source names (an SAE's feature names), else None."""
    names = getattr(W, "names", None)
    return list(names) if names is not None else None


#: What a layout reader returns: units, reduction label, unit ids (None: "0".."K-1"), token
#: index (None unless one row per token).
_Read = tuple[torch.Tensor, str, list[str] | None, torch.Tensor | None]


def _read_dense(name: str, x: torch.Tensor, spec: UnitSpec, mask: Mask, info: LayerInfo) -> _Read:
    return x.clone(), "none", None, None  # clone: later in-place ops must not leak in


def _read_channels(name: str, x: torch.Tensor, spec: UnitSpec, mask: Mask, info: LayerInfo
                   ) -> _Read:
    red = spec.reduce
    flat = x.flatten(2)
    y = CHANNEL_REDUCTIONS[red](flat, spec.q)
    label = red if red != "quantile" else f"quantile({spec.q:g})"
    ids = None
    if red == "none" and not info.unit_ids:  # "c@row,col": channel c at one position
        grid = np.stack(np.unravel_index(np.arange(flat.shape[-1]), x.shape[2:]), 1)
        pos = [",".join(map(str, p)) for p in grid]
        ids = [f"{c}@{p}" for c in range(x.shape[1]) for p in pos]
    return y, label, ids, None


def _read_tokens(name: str, x: torch.Tensor, spec: UnitSpec, mask: Mask, info: LayerInfo
                 ) -> _Read:
    B, T, _ = x.shape
    m = mask.to(x.device).bool() if mask is not None else None
    if m is not None and m.shape != (B, T):
        raise bad("attention_mask", f"shape ({B}, {T}) to match layer {name!r}",
                  tuple(m.shape))
    red = _TOKEN_ALIASES.get(spec.reduce, spec.reduce)
    if red not in TOKEN_REDUCTIONS:
        raise InvalidParameterError(
            f"reduce: {red!r} is not supported over tokens; use {_either(list(TOKEN_REDUCTIONS))}")
    y, tok_index = TOKEN_REDUCTIONS[red](x, m)
    return y, red, None, tok_index


_READERS: dict[str, Callable[..., _Read]] = {
    "dense": _read_dense, "channels": _read_channels, "tokens": _read_tokens,
}


def compute_units(
    name: str, out: Any, spec: UnitSpec, mask: Mask, info: LayerInfo
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Turn a layer output into ``(rows, K)`` float32 units (+ token index for 'tokens').

    The first batch fixes ``info`` (reduction label and unit ids); a later batch with another
    number of units raises.
    """
    y, tok_index, _maps = compute_units_and_maps(name, out, spec, mask, info)
    return y, tok_index


def keeps_maps(spec: UnitSpec, layout: str) -> bool:
    """Whether this layer's spatial maps are kept: ``keep_maps`` set, a feature map reduced
    to one value per channel."""
    return spec.keep_maps > 0 and layout == "channels" and spec.reduce != "none"


def compute_units_and_maps(
    name: str, out: Any, spec: UnitSpec, mask: Mask, info: LayerInfo
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """:func:`compute_units` plus the ``(B, K, *spatial)`` float32 maps the units were reduced
    from, when :func:`keeps_maps` (else None)."""
    x = select_output(name, out, spec.select)
    if x.ndim < 2:
        x = x.reshape(-1, 1)
    layout = _layout_of(name, x, spec.layout, spec.reduce)
    W = spec.directions.get(name)
    if W is not None:
        x = apply_directions(name, x, W, -1 if layout in ("dense", "tokens") else 1)
    x = x.float()
    y, label, ids, tok_index = _READERS[layout](name, x, spec, mask, info)
    if W is not None:
        label = directions_label(W) + label
        if ids is None:
            ids = directions_ids(W)
    if not info.unit_ids:
        info.reduction = label
        info.unit_ids = ids if ids is not None else [str(i) for i in range(y.shape[1])]
    elif y.shape[1] != len(info.unit_ids):
        raise InvalidParameterError(
            f"layer {name!r}: batch gave {y.shape[1]} units, earlier batches gave "
            f"{len(info.unit_ids)} (variable spatial size with reduce='none'?)"
        )
    return y, tok_index, (x if keeps_maps(spec, layout) else None)
