"""Constants about files shared by the data loaders and the concept builders; file-name
slugs of layers and units."""

import re
from typing import Any

#: Suffixes of the image files that invert reads (case-insensitive): the same set labels
#: samples (:func:`invert.concepts.from_folders`) and loads them
#: (:func:`invert.extract.load_image_folder`), so the two always agree.
IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm",
)

_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")


def layer_slug(layer: str) -> str:
    """A file-name-safe form of a layer name (``""``, the model output, is ``"output"``)."""
    s = _UNSAFE.sub("_", str(layer)).strip("._")
    return s or "output"


def unit_slug(unit: Any) -> str:
    """A file-name-safe form of a unit id (``"12@3,4"`` -> ``"12_3_4"``)."""
    s = _UNSAFE.sub("_", str(unit)).strip("._")
    return s or "unit"
