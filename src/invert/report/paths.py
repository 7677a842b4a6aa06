"""Where the report may read and write: inside the output folder (or the images folder).

An output folder can come from someone else, so nothing in its ``run.json`` is trusted as a
path:

- a file that ``run.json`` names (activations, concepts, spatial maps) must resolve, with
  symbolic links followed, to a file inside ``OUT`` (:func:`file_inside`);
- a layer's ``slug`` must be a plain file name (:func:`check_slug`), so its unit pages stay in
  ``OUT/report/units/<slug>/``;
- a sample id used as an image path must stay inside the images folder once ``..`` is
  resolved (:func:`image_inside`); symbolic links that the images folder itself holds are
  followed, as the owner of that folder placed them;
- the folders the report writes (``OUT/report``, its ``units/`` and ``assets/``) are made real
  folders: a symbolic link in their place is removed (its target is left alone), never
  followed, before anything is deleted or written (:func:`real_folder`, :func:`fresh_folder`,
  :func:`write_text`).

A refusal is an :class:`~invert._validate.InvalidParameterError` (the CLI's exit 2).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

from .._validate import bad

__all__ = ["check_slug", "file_inside", "image_inside", "real_folder", "fresh_folder",
           "write_text"]

logger = logging.getLogger(__name__)

_SLUG = re.compile(r"^[A-Za-z0-9_.\-]+$")


def check_slug(slug: Any, what: str) -> str:
    """``slug`` when it is a plain file name (letters, digits, ``_ . -``; not ``.``/``..``)."""
    if not isinstance(slug, str) or not _SLUG.match(slug) or set(slug) == {"."}:
        raise bad(what, "a plain file name (letters, digits, '_', '.', '-')", slug)
    return slug


def file_inside(base: Path, name: Any, what: str) -> Path:
    """The file ``base / name``, resolved, refused unless it lies inside ``base``."""
    if not isinstance(name, str) or not name or "\x00" in name or os.path.isabs(name):
        raise bad(what, f"a relative file name inside {str(base)!r}", name)
    root = base.resolve()
    path = (root / name).resolve()
    if not path.is_relative_to(root):
        raise bad(what, f"a file inside {str(base)!r}",
                  f"{name!r}, which resolves to {str(path)!r}", raw=True)
    return path


def image_inside(root: Path, sample_id: Any) -> Path | None:
    """The image of ``sample_id`` under ``root``, or None when the id leaves ``root``
    (absolute, or ``..`` above it)."""
    rel = str(sample_id)
    if not rel or "\x00" in rel or os.path.isabs(rel):
        return None
    norm = os.path.normpath(rel)
    if norm == ".." or norm.startswith(".." + os.sep) or os.path.isabs(norm):
        return None
    return root / norm


def real_folder(path: Path) -> Path:
    """Make ``path`` a real folder: a symbolic link there is removed (not followed)."""
    if path.is_symlink():
        logger.warning("%s was a symbolic link (to %s): replaced by a folder; the report "
                       "writes only inside the output folder", path, os.readlink(path))
        path.unlink()
    elif path.exists() and not path.is_dir():
        raise bad(str(path), "a folder for the report", "a file", raw=True)
    path.mkdir(exist_ok=True)
    return path


def fresh_folder(path: Path) -> Path:
    """Empty the folder ``path`` (create it): a symbolic link is removed, not followed."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)  # does not follow the links inside
    path.mkdir()
    return path


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path``; a symbolic link there is replaced, not written through."""
    if path.is_symlink():
        path.unlink()
    path.write_text(text, encoding="utf-8")
