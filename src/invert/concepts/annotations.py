"""Concept sets from annotations: COCO-style instances and segmentation masks (Broden-style)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .._validate import bad, check_choice
from .core import ConceptSet
from .util import check_errors, report_skipped

__all__ = ["from_coco", "from_masks"]

logger = logging.getLogger(__name__)


def from_coco(
    annotations: str | os.PathLike | Mapping[str, Any],
    *,
    supercategories: bool = True,
    supercategory_prefix: str = "super:",
    sample_key: Literal["id", "file_name"] = "id",
    include_crowd: bool = True,
    errors: Literal["raise", "skip"] = "raise",
) -> ConceptSet:
    """Image-level presence of each category (and supercategory) from COCO instance annotations.

    Parameters
    ----------
    annotations : path or dict
        A COCO ``instances_*.json`` file or its parsed content, with ``images``, ``annotations``
        and ``categories``.
    supercategories : bool, default True
        Add one concept per supercategory (present when any of its categories is), named
        ``supercategory_prefix + name`` (COCO uses ``person`` as both a category and a
        supercategory), and record each category's supercategory in ``parents``.
    sample_key : {"id", "file_name"}, default "id"
        Sample ids: the image ids, or the images' file names.
    include_crowd : bool, default True
        Count ``iscrowd=1`` annotations as presence.
    errors : {"raise", "skip"}, default "raise"
        For annotations that point to unknown images or categories: raise, or skip them, record
        them in ``.skipped`` and warn. Duplicate image or category ids, and duplicate category
        names, always raise.

    Notes
    -----
    Samples are the images in the order of ``images``; images without annotations are kept with
    no concept (they are the negatives). Categories without annotations are constant (all-zero)
    concepts: kept and warned about (see ``constant_concepts``).
    """
    check_errors(errors)
    check_choice("sample_key", sample_key, ("id", "file_name"))
    data, src = _coco_data(annotations)
    img_pos, sids = _coco_images(data["images"], sample_key)
    cat_pos, names, supers = _coco_categories(data["categories"])
    present, problems = _coco_presence(data["annotations"], img_pos, cat_pos, include_crowd)
    if problems:
        if errors == "raise":
            show = "; ".join(f"{p['item']}: {p['reason']}" for p in problems[:5])
            raise bad("annotations", "annotations of known images and categories (or pass "
                      "errors='skip' to leave them out)",
                      f"{len(problems)} annotation(s) pointing to unknown images or categories "
                      f"({show})", raw=True)
        report_skipped(problems, "from_coco")
    matrix, all_names, parents = present, list(names), None
    if supercategories:
        matrix, all_names, parents = _with_supercategories(present, names, supers,
                                                           supercategory_prefix)
    return ConceptSet(
        matrix,
        all_names,
        ids=[str(c["id"]) for c in data["categories"]] + [None] * (len(all_names) - len(names)),
        sample_ids=sids,
        parents=parents,
        skipped=problems,
        source=src,
    )


def _coco_data(annotations: Any) -> tuple[Mapping[str, Any], str]:
    """The parsed COCO instances (from a file or as given) and a description of the source."""
    if isinstance(annotations, (str, os.PathLike)):
        path = Path(annotations)
        if not path.is_file():
            raise FileNotFoundError(f"annotations: file {str(path)!r} not found")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise bad("annotations", "a COCO instances JSON file",
                      f"{str(path)!r}, which is not valid JSON ({exc})", raw=True) from exc
        src = f"COCO annotations {path}"
    elif isinstance(annotations, Mapping):
        data, src = annotations, "COCO annotations"
    else:
        raise bad("annotations", "a path or dict", type(annotations).__name__, raw=True)
    for key in ("images", "annotations", "categories"):
        if key not in data or not isinstance(data[key], list):
            raise bad("annotations", f"a list under {key!r} (COCO instances format)",
                      type(data[key]).__name__ if key in data else "nothing", raw=True)
    return data, src


def _coco_images(images: list[Any], sample_key: str) -> tuple[dict[Any, int], list[Hashable]]:
    """Row of each image id, and the sample ids (image ids or file names)."""
    img_pos: dict[Any, int] = {}
    sids: list[Hashable] = []
    for k, im in enumerate(images):
        if "id" not in im:
            raise bad("annotations", "an 'id' in every image", f"images[{k}] without",
                      raw=True)
        if im["id"] in img_pos:
            raise bad("annotations", "unique image ids", f"duplicate image id {im['id']!r}",
                      raw=True)
        img_pos[im["id"]] = k
        if sample_key == "file_name" and "file_name" not in im:
            raise bad("sample_key", "a key of every image", f"'file_name', which images[{k}] "
                      "lacks", raw=True)
        sids.append(im[sample_key])
    return img_pos, sids


def _coco_categories(cats: list[Any]) -> tuple[dict[Any, int], list[str], list[str | None]]:
    """Column of each category id, the category names and their supercategories."""
    cat_pos: dict[Any, int] = {}
    names: list[str] = []
    supers: list[str | None] = []
    for k, c in enumerate(cats):
        if "id" not in c or "name" not in c:
            raise bad("annotations", "an 'id' and a 'name' in every category",
                      f"categories[{k}] without", raw=True)
        if c["id"] in cat_pos:
            raise bad("annotations", "unique category ids",
                      f"duplicate category id {c['id']!r}", raw=True)
        cat_pos[c["id"]] = k
        names.append(str(c["name"]))
        supers.append(c.get("supercategory"))
    return cat_pos, names, supers


def _coco_presence(annotations: list[Any], img_pos: dict[Any, int], cat_pos: dict[Any, int],
                   include_crowd: bool) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """(images, categories) presence, and records of the annotations of unknown ids."""
    present = np.zeros((len(img_pos), len(cat_pos)), dtype=bool)
    problems: list[dict[str, Any]] = []
    n_crowd = 0
    for k, a in enumerate(annotations):
        img, cat = a.get("image_id"), a.get("category_id")
        if img not in img_pos:
            problems.append({"item": f"annotations[{k}]", "reason": f"unknown image_id {img!r}"})
            continue
        if cat not in cat_pos:
            problems.append({"item": f"annotations[{k}]", "reason": f"unknown category_id {cat!r}"})
            continue
        if a.get("iscrowd", 0) and not include_crowd:
            n_crowd += 1
            continue
        present[img_pos[img], cat_pos[cat]] = True
    if n_crowd:
        logger.info("from_coco: %d crowd annotations not counted (include_crowd=False)", n_crowd)
    return present, problems


def _with_supercategories(present: np.ndarray, names: list[str], supers: list[str | None],
                          prefix: str) -> tuple[np.ndarray, list[str], dict[str, list[str]]]:
    """The presence with one column per supercategory appended, all names, and the parents
    (each category's supercategory)."""
    nc = len(names)
    sup_names = list(dict.fromkeys(s for s in supers if s))
    sup_cols = []
    for s in sup_names:
        members = [j for j in range(nc) if supers[j] == s]
        sup_cols.append(present[:, members].any(axis=1))
    matrix = np.hstack([present, np.stack(sup_cols, axis=1)]) if sup_names else present
    all_names = list(names) + [prefix + s for s in sup_names]
    parents = {names[j]: [prefix + supers[j]] if supers[j] else [] for j in range(nc)}
    return matrix, all_names, parents


def _read_mask(m: Any, encoding: str, k: int) -> np.ndarray:
    if isinstance(m, (str, os.PathLike)):
        try:
            from PIL import Image
        except ImportError as exc:  # pragma: no cover
            raise ImportError("reading mask images needs pillow: pip install pillow") from exc
        with Image.open(m) as im:
            arr = np.asarray(im)
        if encoding == "broden":
            if arr.ndim != 3 or arr.shape[2] < 2:
                raise bad(f"masks[{k}]", "an RGB image for the Broden encoding (label = R + "
                          "256 * G)", f"shape {arr.shape} from {str(m)!r}", raw=True)
            return arr[..., 0].astype(np.int64) + 256 * arr[..., 1].astype(np.int64)
        if arr.ndim != 2:
            raise bad(f"masks[{k}]", "a single-channel label image (use encoding='broden' for "
                      "RGB label images)", f"shape {arr.shape}", raw=True)
        return arr.astype(np.int64)
    arr = np.asarray(m)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.mod(arr, 1) == 0):
            arr = arr.astype(np.int64)
        else:
            raise bad(f"masks[{k}]", "an integer label map", f"dtype {arr.dtype}", raw=True)
    if arr.ndim not in (2, 3):
        raise bad(f"masks[{k}]", "(H, W) or (layers, H, W)", f"shape {arr.shape}", raw=True)
    return arr.astype(np.int64)


def from_masks(
    masks: Sequence[Any],
    names: Sequence[str] | Mapping[int, str],
    *,
    min_area: float = 1,
    sample_ids: Sequence[Hashable] | None = None,
    encoding: Literal["index", "broden"] = "index",
    errors: Literal["raise", "skip"] = "raise",
) -> ConceptSet:
    """Image-level presence of concepts from per-pixel label maps (Broden-style segmentations).

    Parameters
    ----------
    masks : sequence
        One label map per sample: an integer array ``(H, W)`` or ``(layers, H, W)`` (several
        label layers, as Broden has several per category; a pixel counts for every layer's
        label), or a path to a label image (needs pillow). Label 0 means no concept.
    names : sequence of str or mapping int -> str
        Concept names: a sequence gives labels ``1..len(names)``; a mapping gives its keys.
    min_area : float, default 1
        A concept is present when it covers at least this much of the image: a pixel count if
        ``>= 1``, a fraction of the image's pixels if ``0 < min_area < 1``.
    encoding : {"index", "broden"}, default "index"
        For image paths: pixel value = label, or Broden's RGB code (label = R + 256 * G).
    errors : {"raise", "skip"}, default "raise"
        For label values with no name: raise, or ignore those pixels, record them in
        ``.skipped`` (once per sample and value) and warn.
    """
    check_errors(errors)
    check_choice("encoding", encoding, ("index", "broden"))
    if isinstance(min_area, bool) or not isinstance(min_area, int | float) or not min_area > 0:
        raise bad("min_area", "a pixel count >= 1 or a fraction in (0, 1)", min_area)
    if isinstance(names, Mapping):
        items = sorted(names.items())
        for lab, _ in items:
            if isinstance(lab, bool) or not isinstance(lab, int | np.integer) or lab <= 0:
                raise bad("names", "positive int labels as keys", lab)
        labels = np.asarray([lab for lab, _ in items], dtype=np.int64)
        concept_names = [str(v) for _, v in items]
    elif isinstance(names, str) or not isinstance(names, Sequence):
        raise bad("names", "a list of names or dict label -> name", type(names).__name__,
                  raw=True)
    else:
        labels = np.arange(1, len(names) + 1, dtype=np.int64)
        concept_names = list(names)
    if isinstance(masks, (str, os.PathLike)) or not isinstance(masks, Sequence):
        raise bad("masks", "a sequence of label maps or paths", type(masks).__name__, raw=True)
    if sample_ids is None:
        sample_ids = [
            str(m) if isinstance(m, (str, os.PathLike)) else i for i, m in enumerate(masks)
        ]
    col = {int(lab): j for j, lab in enumerate(labels)}
    out = np.zeros((len(masks), len(concept_names)), dtype=bool)
    skipped: list[dict[str, Any]] = []
    for i, m in enumerate(masks):
        arr = _read_mask(m, encoding, i)
        layers = arr if arr.ndim == 3 else arr[None]
        area = layers.shape[1] * layers.shape[2]
        thresh = min_area * area if min_area < 1 else min_area
        flat = layers.reshape(layers.shape[0], -1)
        if flat.shape[0] == 1:
            vals, cnt = np.unique(flat[0][flat[0] != 0], return_counts=True)
            counts = dict(zip(vals.tolist(), cnt.tolist(), strict=True))
        else:  # a pixel counts once per label even if several layers carry it
            counts = {
                v: int((flat == v).any(axis=0).sum()) for v in np.unique(flat[flat != 0]).tolist()
            }
        for v, c in counts.items():
            if v not in col:
                if errors == "raise":
                    raise bad(f"masks[{i}]", f"labels with an entry in names (known labels "
                              f"{labels.tolist()[:20]}; or pass errors='skip' to ignore such "
                              "pixels)", f"label value {v}", raw=True)
                skipped.append({"item": sample_ids[i], "reason": f"unknown label {v} ({c} px)"})
                continue
            if c >= thresh:
                out[i, col[v]] = True
    report_skipped(skipped, "from_masks")
    return ConceptSet(
        out,
        concept_names,
        sample_ids=sample_ids,
        skipped=skipped,
        source=f"segmentation masks (min_area={min_area})",
    )
