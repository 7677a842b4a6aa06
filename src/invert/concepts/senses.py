"""WordNet sense overrides for folder and file names: which synset a name stands for.

:func:`invert.concepts.from_folders` with ``wordnet=True`` picks a sense for each name by a
rule (see :func:`invert.concepts.choose_sense`); an override fixes the choice. Overrides map
a *name* to a synset (an NLTK-style name such as ``'plaything.n.01'`` or a WNID such as
``'n03964744'``) or to ``None`` (the name gives no concept). A name is either a word or token
(``'toys'``, ``'bw'``; matched in lower case with spaces and hyphens read as underscores,
also when it is one token of a longer name such as ``'cat_bw'``) or a path relative to the
folder root, without the file's extension (``'animals/mammals/bears/toys/edward_bear'``).

invert ships a few overrides for names its rule gets wrong (:data:`DEFAULT_SENSES_FILE`,
package data); user overrides (a mapping, or a ``.csv``/``.tsv``/``.txt`` file of two
columns or a ``.json`` object) are applied on top.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .._validate import bad
from .wordnet import WordNet

__all__ = ["SenseOverrides", "read_senses", "DEFAULT_SENSES_FILE", "NO_SENSE"]

#: The package-data file of invert's default overrides (``invert/data/senses.tsv``).
DEFAULT_SENSES_FILE = "senses.tsv"
#: What a senses file writes for "no sense" (``None`` in a mapping; an empty cell also works).
NO_SENSE = "-"
_SPLIT = re.compile(r"[\s\-]+")


def normalize_name(name: str) -> str:
    """The key of a name: lower case, spaces and hyphens as underscores, ``/`` kept."""
    parts = [_SPLIT.sub("_", p.strip().lower()) for p in str(name).strip().strip("/").split("/")]
    return "/".join(parts)


@dataclass
class SenseOverrides:
    """Resolved overrides: normalised name -> WNID (or ``None``: no sense), and where each
    came from (``'invert default'`` or the user's file / ``'senses='``)."""

    wnids: dict[str, str | None] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.wnids)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and normalize_name(name) in self.wnids

    def get(self, name: str) -> tuple[bool, str | None, str | None]:
        """``(found, wnid or None, source)`` of a name (a word, token or path)."""
        key = normalize_name(name)
        if key not in self.wnids:
            return False, None, None
        return True, self.wnids[key], self.sources[key]

    def update(self, other: SenseOverrides) -> SenseOverrides:
        """A new set: these overrides, then ``other``'s on top."""
        return SenseOverrides(self.wnids | other.wnids, self.sources | other.sources)


def _parse_rows(text: str, sep: str, where: str) -> dict[str, str | None]:
    """name -> synset (or None) of a 2-column (+ optional comment column) text table;
    ``#`` lines and blank lines are skipped, a ``word``/``name`` header row too."""
    out: dict[str, str | None] = {}
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    for k, row in enumerate(csv.reader(io.StringIO("\n".join(lines)), delimiter=sep)):
        cells = [c.strip() for c in row]
        if k == 0 and cells and cells[0].lower() in ("word", "name", "path"):
            continue
        if len(cells) < 2 or not cells[0]:
            raise bad("senses", "rows of 'name<separator>synset'",
                      f"{where} line {k + 1}: {row!r}", raw=True)
        target = cells[1]
        out[cells[0]] = None if target in ("", NO_SENSE) or target.lower() == "none" else target
    return out


def _raw_mapping(senses: Any) -> tuple[dict[str, str | None], str]:
    """The name -> synset mapping of a mapping or a file, and its source label."""
    if isinstance(senses, Mapping):
        return {str(k): (None if v in (None, "", NO_SENSE) else str(v))
                for k, v in senses.items()}, "senses="
    if not isinstance(senses, (str, os.PathLike)):
        raise bad("senses", "a mapping name -> synset or a .csv/.tsv/.json file",
                  type(senses).__name__, raw=True)
    path = Path(senses)
    if not path.is_file():
        raise FileNotFoundError(f"senses: file {str(path)!r} not found")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise bad("senses", "a JSON object name -> synset", f"{path.name}: {err}",
                      raw=True) from err
        if not isinstance(data, dict):
            raise bad("senses", "a JSON object name -> synset",
                      f"{path.name}: a {type(data).__name__}", raw=True)
        return _raw_mapping(data)[0], path.name
    if suffix not in (".csv", ".tsv", ".txt"):
        raise bad("senses", "a .csv, .tsv, .txt or .json file", path.name)
    sep = "," if suffix == ".csv" else "\t"
    return _parse_rows(text, sep, path.name), path.name


def read_senses(senses: Any, wordnet: WordNet | None = None) -> SenseOverrides:
    """Read overrides from a mapping or a file, each synset checked against WordNet.

    Parameters
    ----------
    senses : mapping of str to (str or None), or path
        Name -> synset name / WNID / ``None``, or a file: ``.csv`` (comma) or ``.tsv`` /
        ``.txt`` (tab) with the name and the synset (``-`` or empty: no sense) per line,
        ``#`` comments, an optional header ``word,synset`` and an optional third column; or a
        ``.json`` object.
    wordnet : WordNet, optional
        Where synsets are looked up (default :meth:`WordNet.default`).

    Raises
    ------
    invert._validate.InvalidParameterError
        For a malformed file or a synset that is not a WordNet 3.0 noun synset.
    """
    raw, source = _raw_mapping(senses)
    wn = wordnet if wordnet is not None else WordNet.default()
    out = SenseOverrides()
    unknown = []
    for name, target in raw.items():
        key = normalize_name(name)
        if not key:
            raise bad("senses", "non-empty names", f"an empty name in {source}", raw=True)
        if target is not None:
            try:
                target = wn.synset(target.strip()).wnid
            except KeyError:
                unknown.append(f"{name} -> {target}")
                continue
        out.wnids[key] = target
        out.sources[key] = source
    if unknown:
        raise bad("senses", "WordNet 3.0 noun synsets (a name like 'plaything.n.01' or a WNID)",
                  f"{len(unknown)} unknown in {source}: {unknown[:5]}", raw=True)
    return out


def shipped_senses(wordnet: WordNet | None = None) -> SenseOverrides:
    """invert's shipped overrides (:data:`DEFAULT_SENSES_FILE`)."""
    ref = resources.files("invert") / "data" / DEFAULT_SENSES_FILE
    raw = _parse_rows(ref.read_text(encoding="utf-8"), "\t", DEFAULT_SENSES_FILE)
    wn = wordnet if wordnet is not None else WordNet.default()
    out = SenseOverrides()
    for name, target in raw.items():
        key = normalize_name(name)
        out.wnids[key] = None if target is None else wn.synset(target).wnid
        out.sources[key] = "invert default"
    return out
