"""Spatial activation maps of conv channels, drawn as heat maps over the exemplars.

File format (written by the extractor next to ``run.json``)::

    OUT/maps_<layer slug>.npz      (or the name in the layer's ``"maps"`` entry of run.json)
        units    (K,)   str      unit ids, as in the layer's ``unit_ids``
        samples  (K, T) int      positions in ``sample_ids`` of each unit's T maps, highest
                                 activation first; -1 pads a row with fewer than T
        maps     (K, T, h, w)    float16 (or float32): the raw activations of the channel
        input_crop  (2,) int     optional: ``(resize, size)``, the map covers the central
                                 ``size x size`` window of the image after its shorter side
                                 is resized to ``resize`` (:class:`invert.extract.ImageTransform`);
                                 without it the map covers the whole image

It is read with ``allow_pickle=False``. The report colours each map from 0 (transparent)
to the unit's largest value over its T maps (opaque red), and the browser upsamples it
smoothly (bilinear) over the thumbnail of the part of the image the model saw, as
NetDissect shows its channels.
"""

from __future__ import annotations

import base64
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["SpatialMaps", "heat_png_uri", "heat_rgba", "load_maps", "maps_path"]

logger = logging.getLogger(__name__)

# (value, r, g, b): transparent blue through cyan, yellow to red
_STOPS = np.array([[0.0, 0, 0, 255], [0.35, 0, 200, 255], [0.65, 255, 230, 0],
                   [1.0, 230, 0, 0]], dtype=np.float64)


class SpatialMaps:
    """The maps of one layer, looked up by unit id and sample position."""

    def __init__(self, path: Path, n_samples: int):
        with np.load(path, allow_pickle=False) as z:
            units = np.asarray(z["units"]).astype(str)
            samples = np.asarray(z["samples"])
            maps = np.asarray(z["maps"])
            crop = np.asarray(z["input_crop"]) if "input_crop" in z.files else None
        k = len(units)
        if (samples.ndim != 2 or samples.shape[0] != k or maps.ndim != 4
                or maps.shape[:2] != samples.shape or not np.issubdtype(samples.dtype,
                                                                         np.integer)):
            raise ValueError(f"{path}: expected units (K,), samples (K, T) int and maps "
                             f"(K, T, h, w); got {units.shape}, {samples.shape} "
                             f"{samples.dtype}, {maps.shape}")
        if samples.size and (samples.min() < -1 or samples.max() >= n_samples):
            raise ValueError(f"{path}: sample positions outside [-1, {n_samples})")
        self.maps = maps
        self.samples = samples
        self.crop = None if crop is None else (int(crop[0]), int(crop[1]))
        self.where: dict[tuple[str, int], tuple[int, int]] = {}
        for r, uid in enumerate(units):
            for t, i in enumerate(samples[r]):
                if i >= 0:
                    self.where[(str(uid), int(i))] = (r, t)
        self._top: dict[int, float] = {}

    def get(self, unit: str, sample: int) -> tuple[np.ndarray, float] | None:
        """The map of ``unit`` on sample ``sample`` and the unit's colour scale, or None."""
        hit = self.where.get((unit, sample))
        if hit is None:
            return None
        r, t = hit
        if r not in self._top:
            row = np.asarray(self.maps[r][self.samples[r] >= 0], dtype=np.float32)
            self._top[r] = float(np.nanmax(row)) if np.isfinite(row).any() else 0.0
        return np.asarray(self.maps[r, t], dtype=np.float32), self._top[r]


def maps_path(layer: dict[str, Any]) -> str:
    """The file name of a layer's maps: its ``"maps"`` entry, else ``maps_<slug>.npz``."""
    name = layer.get("maps")
    return name if isinstance(name, str) else f"maps_{layer['slug']}.npz"


def load_maps(path: Path | None, n_samples: int) -> SpatialMaps | None:
    """The maps in ``path`` (None when there is no such file or it does not read)."""
    if path is None or not path.is_file():
        return None
    try:
        return SpatialMaps(path, n_samples)
    except (OSError, ValueError, KeyError) as err:
        logger.warning("spatial maps %s not used: %s", path, err)
        return None


def heat_rgba(m: np.ndarray, top: float) -> np.ndarray:
    """(h, w, 4) uint8 colours of a map scaled to ``[0, top]`` (low values transparent)."""
    v = np.nan_to_num(np.asarray(m, dtype=np.float64), nan=0.0)
    v = np.clip(v / top, 0.0, 1.0) if top > 0 else np.zeros_like(v)
    rgb = np.stack([np.interp(v, _STOPS[:, 0], _STOPS[:, c]) for c in (1, 2, 3)], axis=-1)
    alpha = 235.0 * np.clip((v - 0.1) / 0.9, 0.0, 1.0) ** 1.2
    return np.concatenate([rgb, alpha[..., None]], axis=-1).round().astype(np.uint8)


def heat_png_uri(m: np.ndarray, top: float) -> str:
    """The heat map of ``m`` as a ``data:image/png`` URI (at the map's own resolution)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(heat_rgba(m, top), "RGBA").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
