"""Thumbnails of image samples (``OUT/report/assets/thumbs``), the exemplar entries the
templates draw, and their captions."""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from .maps import SpatialMaps, heat_png_uri
from .paths import image_inside

__all__ = ["Thumbs", "short_name", "exemplar", "THUMB_SIZE"]

logger = logging.getLogger(__name__)

THUMB_SIZE = 160
#: Characters of a thumbnail caption (the file name, cut in the middle beyond that).
CAPTION_CHARS = 18


def short_name(sample_id: Any, limit: int = CAPTION_CHARS) -> str:
    """The file name of a sample id (``"a/b/long_name.png"`` -> ``"long_name.png"``), cut in
    the middle with an ellipsis when longer than ``limit`` characters."""
    text = str(sample_id)
    name = posixpath.basename(text.replace("\\", "/")) or text
    if len(name) <= limit:
        return name
    tail = (limit - 1) // 2
    head = limit - 1 - tail
    return name[:head] + "\u2026" + name[-tail:]


def _token_name(sample_id: Any) -> str:
    """A token row's id ``(document id, position)`` as ``"doc/part #position"`` (document
    ids that are tuples or JSON lists joined by ``/``); other ids as :func:`short_name`."""
    if isinstance(sample_id, (list, tuple)) and len(sample_id) == 2 and isinstance(
            sample_id[1], int):
        doc = sample_id[0]
        parts = doc if isinstance(doc, (list, tuple)) else [doc]
        name = "/".join(map(str, parts))
        if len(name) > 2 * CAPTION_CHARS:
            name = name[:CAPTION_CHARS] + "\u2026" + name[-(CAPTION_CHARS - 1):]
        return f"{name} #{sample_id[1]}"
    return short_name(sample_id)


def _flatten(im, Image):
    """An RGB copy of ``im`` with transparency composited onto white."""
    if im.mode in ("RGBA", "LA", "P"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    return im.convert("RGB")


def _crop_box(w: int, h: int, crop: tuple[int, int] | None) -> tuple[float, ...] | None:
    """The part of a ``w x h`` image that a Resize(resize) + CenterCrop(size) keeps."""
    if crop is None:
        return None
    resize, size = crop
    side = min(w, h) * size / max(resize, 1)
    return ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)


class Thumbs:
    """Thumbnails of image samples, written on demand into ``folder`` (``assets/thumbs``).

    ``root`` is the images folder (None: no thumbnails). A sample id that leaves ``root``
    (``../x.png``, an absolute path) gets no thumbnail (logged)."""

    def __init__(self, root: Path | None, sample_ids: Sequence[Any], folder: Path):
        self.root = root
        self.sample_ids = sample_ids
        self.folder = folder
        self.done: dict[tuple[int, Any], tuple[str, int, int] | None] = {}
        #: the documents of a text run (:class:`invert.report.texts.SampleTexts`), if any
        self.texts: Any = None
        self.refused = 0
        self.Image = None
        if root is not None:
            try:
                from PIL import Image

                self.Image = Image
            except ImportError:  # pragma: no cover - depends on the environment
                logger.warning("Pillow is not installed: the report shows no thumbnails")

    def wanted(self) -> bool:
        return self.root is not None and self.Image is not None

    def make(self, i: int, crop: tuple[int, int] | None = None) -> tuple[str, int, int] | None:
        """Path (from the report root), width and height of sample ``i``'s thumbnail (of
        the part the model saw, with ``crop``), or None."""
        key = (i, crop)
        if key not in self.done:
            self.done[key] = self._write(i, crop) if self.wanted() else None
        return self.done[key]

    def _write(self, i: int, crop: tuple[int, int] | None) -> tuple[str, int, int] | None:
        src = image_inside(self.root, self.sample_ids[i])  # type: ignore[arg-type]
        if src is None:
            self.refused += 1
            logger.warning("sample id %r leaves the images folder: no thumbnail",
                           str(self.sample_ids[i]))
            return None
        name = f"{i}.jpg" if crop is None else f"{i}_{crop[0]}_{crop[1]}.jpg"
        Image = self.Image
        try:
            with Image.open(src) as im:  # type: ignore[union-attr]
                box = _crop_box(im.width, im.height, crop)
                im = _flatten(im, Image)
                if box is not None:
                    im = im.crop(tuple(round(b) for b in box))
                im.thumbnail((THUMB_SIZE, THUMB_SIZE))
                im.save(self.folder / name, quality=85)
                w, h = im.size
        except (OSError, ValueError) as err:
            logger.debug("no thumbnail for %s: %s", src, err)
            return None
        return f"assets/thumbs/{name}", w, h


def _text_html(meta: dict[str, Any], sid: Any, i: int, run_texts: Any = None) -> str | None:
    """Highlighted token in context for text runs (``texts.json``, else ``documents`` in
    run.json), or the text."""
    if run_texts is not None:
        return run_texts.html(i)
    texts = meta.get("sample_texts")
    if texts is not None:
        return escape(str(texts[i]))
    docs = meta.get("documents")
    if docs is None or not isinstance(sid, list | tuple) or len(sid) != 2:
        return None
    doc, pos = sid
    try:
        toks = docs[int(doc)] if not isinstance(docs, dict) else docs[str(doc)]
        pos = int(pos)
    except (KeyError, IndexError, ValueError, TypeError):
        return None
    lo, hi = max(0, pos - 12), min(len(toks), pos + 13)
    words = [escape(str(t)) for t in toks[lo:hi]]
    if lo <= pos < hi:
        words[pos - lo] = f"<mark>{words[pos - lo]}</mark>"
    return ("&hellip; " if lo else "") + " ".join(words) + (" &hellip;" if hi < len(toks) else "")


def _fit(w: int, h: int, box: int = 120) -> tuple[int, int]:
    s = box / max(w, h, 1)
    return max(1, round(w * s)), max(1, round(h * s))


def exemplar(i: int, a: np.ndarray, mask: np.ndarray, thumbs: Thumbs, meta: dict[str, Any],
             *, unit: str | None = None, maps: SpatialMaps | None = None,
             held_out: np.ndarray | None = None) -> dict[str, Any]:
    """What the templates draw for sample ``i``: its id (full and short), activation,
    whether the formula holds, the thumbnail (with the unit's heat map over it when
    ``maps`` has one), or its text."""
    sid = thumbs.sample_ids[i]
    hit = maps.get(unit, i) if maps is not None and unit is not None else None
    thumb = thumbs.make(i, maps.crop) if hit is not None else None
    if thumb is None:
        hit = None
        thumb = thumbs.make(i)
    html = None if thumb else _text_html(meta, sid, i, thumbs.texts)
    e = {
        "sid": str(sid), "short": _token_name(sid) if html else short_name(sid),
        "act": f"{a[i]:.3g}", "inside": bool(mask[i]),
        "src": "../../" + thumb[0] if thumb else None,
        "thumb": thumb[0] if thumb else None,
        "html": html,
        "held_out": bool(held_out[i]) if held_out is not None else None,
        "heat": None, "box": None,
    }
    if thumb is not None and hit is not None:
        e["heat"] = heat_png_uri(*hit)
        e["box"] = _fit(thumb[1], thumb[2])
    return e
