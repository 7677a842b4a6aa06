"""Spatial activation maps of each channel's top samples, kept while the batches stream.

With ``collect_activations(..., keep_maps=T)``, a feature-map layer ``(N, C, *spatial)``
reduced to one value per channel (``mean``, ``max``, a quantile) also keeps, for every
channel, the spatial maps of its ``T`` top-activating samples (ranked by the reduced value,
ties to the earlier sample). A :class:`MapKeeper` holds the running top ``T`` per channel
(memory ``O(C T H W)``, whatever the number of samples) and gives a :class:`SpatialMaps`
at the end; :func:`write_maps` writes it as ``maps_<layer slug>.npz`` for the report, which
draws the maps over the exemplar thumbnails.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._files import layer_slug
from .._validate import bad

__all__ = ["MapKeeper", "SpatialMaps", "maps_path", "read_maps", "write_maps"]


@dataclass(eq=False)
class SpatialMaps:
    """The spatial maps of each unit's top samples.

    Attributes
    ----------
    units : list of str
        ``K`` unit ids (those of the activation set).
    samples : np.ndarray
        ``(K, T)`` int64: row positions (indices into ``sample_ids``) of each unit's top
        samples, best first.
    maps : np.ndarray
        ``(K, T, h, w)`` float16 (``(K, T, *spatial)`` for other feature maps): the unit's
        map on each of those samples, at the layer's resolution.
    values : np.ndarray
        ``(K, T)`` float32: the unit's (reduced) activation on those samples.
    """

    units: list[str]
    samples: np.ndarray
    maps: np.ndarray
    values: np.ndarray

    def __repr__(self) -> str:
        return f"SpatialMaps(units={len(self.units)}, shape={tuple(self.maps.shape)})"


class MapKeeper:
    """The running top ``T`` samples of every channel, with their maps (on the device)."""

    def __init__(self, top: int):
        self.top = top
        self.values: torch.Tensor | None = None  # (C, T) float32, -inf where empty
        self.samples: torch.Tensor | None = None  # (C, T) int64, -1 where empty
        self.maps: torch.Tensor | None = None  # (C, T, *spatial) float32
        self.n_seen = 0

    def update(self, y: torch.Tensor, x: torch.Tensor, offset: int) -> None:
        """Merge a batch: ``y`` ``(B, C)`` reduced values, ``x`` ``(B, C, *spatial)`` maps,
        ``offset`` the row of the batch's first sample."""
        B, C = y.shape
        vals = y.detach().float().T  # (C, B)
        rows = torch.arange(offset, offset + B, device=y.device).expand(C, B)
        maps = torch.movedim(x.detach().float(), 0, 1)  # (C, B, *spatial)
        if self.values is not None:
            if maps.shape[2:] != self.maps.shape[2:]:  # type: ignore[union-attr]
                raise bad("keep_maps", "feature maps of one spatial size over all batches",
                          f"{tuple(self.maps.shape[2:])} then {tuple(maps.shape[2:])}",  # type: ignore[union-attr]
                          raw=True)
            vals = torch.cat([self.values, vals], 1)  # earlier samples first: ties keep them
            rows = torch.cat([self.samples, rows], 1)  # type: ignore[list-item]
            maps = torch.cat([self.maps, maps], 1)  # type: ignore[list-item]
        order = torch.sort(vals, dim=1, descending=True, stable=True).indices[:, : self.top]
        self.values = torch.gather(vals, 1, order)
        self.samples = torch.gather(rows, 1, order)
        idx = order.reshape(*order.shape, *([1] * (maps.ndim - 2))).expand(
            *order.shape, *maps.shape[2:])
        self.maps = torch.gather(maps, 1, idx)
        self.n_seen += B

    def result(self, units: list[str]) -> SpatialMaps:
        """The kept maps as numpy arrays (``T`` cut to the number of samples seen)."""
        assert self.values is not None and self.samples is not None and self.maps is not None
        return SpatialMaps(list(units), self.samples.cpu().numpy().astype(np.int64),
                           self.maps.cpu().numpy().astype(np.float16),
                           self.values.cpu().numpy().astype(np.float32))


def maps_path(out_dir: str | os.PathLike[str], layer: str) -> Path:
    """``out_dir/maps_<layer slug>.npz``."""
    return Path(out_dir) / f"maps_{layer_slug(layer)}.npz"


def write_maps(activations: Any, out_dir: str | os.PathLike[str]) -> Path:
    """Write an activation set's spatial maps to ``out_dir/maps_<layer slug>.npz``.

    The file holds ``units`` ``(K,)`` str, ``samples`` ``(K, T)`` int64 (indices into the
    set's ``sample_ids``), ``maps`` ``(K, T, h, w)`` float16 and ``values`` ``(K, T)``
    float32; it loads with ``np.load(path)`` (no pickle).

    Parameters
    ----------
    activations : ActivationSet
        A set extracted with ``keep_maps=T`` (its ``maps`` attribute is set).
    out_dir : path
        The output folder (created when missing).

    Returns
    -------
    Path
        The file written.
    """
    maps = getattr(activations, "maps", None)
    if not isinstance(maps, SpatialMaps):
        raise bad("activations", "an activation set extracted with keep_maps=T (T > 0) from a "
                  "feature-map layer", f"one without maps (layer {activations.layer!r})",
                  raw=True)
    path = maps_path(out_dir, activations.layer)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, units=np.asarray(maps.units, dtype=str), samples=maps.samples,
             maps=maps.maps, values=maps.values)
    os.replace(tmp, path)
    return path


def read_maps(path: str | os.PathLike[str]) -> SpatialMaps:
    """A :class:`SpatialMaps` from a file :func:`write_maps` wrote."""
    with np.load(path, allow_pickle=False) as z:
        values = z["values"] if "values" in z.files else np.full(z["samples"].shape, np.nan,
                                                                  np.float32)
        return SpatialMaps([str(u) for u in z["units"]], z["samples"].astype(np.int64),
                           z["maps"].astype(np.float16), values.astype(np.float32))
