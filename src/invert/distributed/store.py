"""The sharded search's store: finished shards of units as data files, never pickles.

``<out_dir>/shards/`` is an :class:`invert._store.RunStore`::

    manifest.json          the run key (activations, concepts, search parameters, invert
                           version), a description, and the SHA-1 of each finished shard
    units_<a>_<b>.npz      units [a, b): their explanations' statistics and formulas as
                           numeric arrays, and a JSON header with the reasons, extras,
                           concept names and search parameters

A shard is read only when the manifest names this run, the shard has the SHA-1 recorded
there and its header the run's key and span; the arrays are read with
``allow_pickle=False``. Any other file (a ``.pkl`` of shard format 1, or one planted there) is
never opened: it is named in a warning and its units are computed afresh.

One run at a time: a run holds ``.lock`` (``fcntl.flock``, exclusive, with its key written
in it) from :meth:`UnitStore.open` to :meth:`UnitStore.close` (the file is removed then). A
second run of the same search waits for the first and then reuses its shards; a run with
other inputs or parameters is refused at once (:class:`invert._validate.InvalidParameterError`
naming the folder and what differs), so it never deletes the shards of a running search. A
different run *after* the first has ended replaces its shards, as before.

A formula is stored as its tree in postfix order, one integer per node: ``2 * index +
negated`` for a literal, ``-1`` for AND, ``-2`` for OR (read back exactly, whatever its
shape, and much faster than parsing its string).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._store import FolderLock, RunStore, ShardFileError, is_unwritable, unwritable_folder
from .._validate import bad
from ..engine.formula import And, Formula, Literal, Or
from ..engine.result import Explanation, ExplanationResult, UnitExplanations, json_safe
from .backends import ShardError

__all__ = ["SHARD_FORMAT", "UnitStore", "decode_shard", "encode_shard"]

log = logging.getLogger(__name__)

#: Version of the shard files and manifest; a change rebuilds old stores.
#: 1: pickles (``units_<a>_<b>.pkl``); 2: ``.npz`` arrays with a JSON header.
SHARD_FORMAT = 2
_SHARD_RE = re.compile(r"^units_(\d+)_(\d+)\.npz$")
_LEGACY_RE = re.compile(r"^units_(\d+)_(\d+)\.pkl$")

#: Per-explanation statistics stored as arrays (float64 or int64), in Explanation order.
_FLOATS = ("auroc", "fraction", "p_value", "log10_p_value")
_INTS = ("support", "length", "rank")

#: Postfix codes of AND and OR nodes (literals are ``2 * index + negated`` >= 0).
_AND, _OR = -1, -2

Span = tuple[int, int]
#: A shard's content: a JSON-able header and numeric arrays.
Payload = tuple[dict[str, Any], dict[str, np.ndarray]]


# ----------------------------------------------------------------------------- encoding


def encode_shard(res: ExplanationResult, start: int, stop: int) -> Payload:
    """Units ``[start, stop)`` searched as ``res`` (positions local to the shard) as plain
    data: arrays of the statistics and of the formulas (postfix codes)."""
    items = [e for u in res.units for e in u]
    codes = [_postfix(e.formula, []) for e in items]
    arrays: dict[str, np.ndarray] = {
        "n_explanations": np.array([len(u) for u in res.units], dtype=np.int64),
        "n_codes": np.array([len(c) for c in codes], dtype=np.int64),
        "codes": np.array([x for c in codes for x in c], dtype=np.int64)}
    for name in _FLOATS:
        arrays[name] = np.array([getattr(e, name) for e in items], dtype=np.float64)
    for name in _INTS:
        arrays[name] = np.array([getattr(e, name) for e in items], dtype=np.int64)
    header = {
        "start": start, "stop": stop,
        "extras": [dict(e.extras) for e in items],
        "reasons": [u.reason for u in res.units],
        "certificates": [json_safe(u.certificate()) for u in res.units],
        "concept_names": res.concept_names, "undefined_concepts": list(res.undefined_concepts),
        "params": dict(res.params), "n_samples": res.n_samples,
    }
    return header, arrays


def _postfix(f: Formula, out: list[int]) -> list[int]:
    if isinstance(f, Literal):
        out.append(2 * f.index + int(f.negated))
    elif isinstance(f, And | Or):
        _postfix(f.left, out)
        _postfix(f.right, out)
        out.append(_AND if isinstance(f, And) else _OR)
    else:  # pragma: no cover - the engine builds literals, AND and OR only
        raise TypeError(f"cannot store a formula node of type {type(f).__name__}")
    return out


def decode_shard(payload: Payload, unit_ids: Sequence[Any] | None,
                 n_concepts: int) -> list[UnitExplanations]:
    """The units of a shard, with global positions and ``unit_ids`` (all units' ids, or
    None for positions). Raises ValueError when the payload is inconsistent."""
    header, arrays = payload
    start, stop = int(header["start"]), int(header["stop"])
    counts = arrays["n_explanations"].tolist()
    m = sum(counts)
    n_codes = arrays["n_codes"].tolist()
    if len(counts) != stop - start or len(header["reasons"]) != stop - start or len(
            header["extras"]) != m or len(n_codes) != m or sum(n_codes) != len(
            arrays["codes"]) or any(arrays[k].shape != (m,) for k in (*_FLOATS, *_INTS)):
        raise ValueError("the shard's arrays and header disagree in length")
    names = header["concept_names"]
    formulas = _Formulas(tuple(names) if names is not None else None, n_concepts)
    codes = arrays["codes"].tolist()
    ends = np.cumsum(n_codes).tolist()
    cols = {k: arrays[k].tolist() for k in (*_FLOATS, *_INTS)}  # exact Python numbers
    units, j = [], 0
    for i, count in enumerate(counts):
        pos = start + i
        items = [Explanation(formula=formulas.get(codes[ends[r] - n_codes[r]:ends[r]]),
                             unit=pos, extras=dict(header["extras"][r]),
                             **{k: cols[k][r] for k in cols})  # type: ignore[arg-type]
                 for r in range(j, j + count)]
        j += count
        uid = unit_ids[pos] if unit_ids is not None else pos
        cert = (header.get("certificates") or [{}] * len(counts))[i]  # NaN is null in JSON
        units.append(UnitExplanations(items, unit=pos, unit_id=uid,
                                      reason=header["reasons"][i], **cert))
    return units



def _differences(theirs: Mapping[str, Any], ours: Mapping[str, Any]) -> str:
    """What differs between two runs' manifests, e.g. ``beam_size 2 (here 3)``."""
    out = []
    for key in sorted(set(theirs) | set(ours)):
        a, b = theirs.get(key), ours.get(key)
        if key in ("key", "checksums", "format") or a == b:
            continue
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += [f"{k} {a.get(k)!r} (here {b.get(k)!r})" for k in sorted(set(a) | set(b))
                    if a.get(k) != b.get(k)]
        else:
            out.append(f"{key} {a!r} (here {b!r})")
    return ", ".join(out)


class _Formulas:
    """Formulas from their postfix codes, each distinct one built once, printing ``names``."""

    def __init__(self, names: tuple[str, ...] | None, n_concepts: int):
        self.names, self.n_concepts = names, n_concepts
        self.seen: dict[tuple[int, ...], Formula] = {}

    def get(self, codes: list[int]) -> Formula:
        key = tuple(codes)
        formula = self.seen.get(key)
        if formula is None:
            formula = self.seen[key] = self._build(codes)
        return formula

    def _build(self, codes: list[int]) -> Formula:
        stack: list[Formula] = []
        for x in codes:
            if 0 <= x < 2 * self.n_concepts:
                stack.append(Literal(x >> 1, bool(x & 1), self.names))
            elif x in (_AND, _OR) and len(stack) >= 2:
                right, left = stack.pop(), stack.pop()
                stack.append((And if x == _AND else Or)(left, right, self.names))
            else:
                raise ValueError(f"formula codes {codes} are not a formula over "
                                 f"{self.n_concepts} concepts")
        if len(stack) != 1:
            raise ValueError(f"formula codes {codes} are not one formula")
        return stack[0]


# ----------------------------------------------------------------------------- the store


class UnitStore(RunStore):
    """``<out_dir>/shards/``: the manifest and one ``.npz`` per finished shard of units.

    Parameters
    ----------
    out_dir : path
        The run's output folder.
    key : str
        The run key (see :func:`invert.distributed.explain_sharded`, Notes).
    meta : dict
        Description of the run for the manifest (needs ``n_units``).
    """

    def __init__(self, out_dir: str | os.PathLike[str], key: str, meta: Mapping[str, Any]):
        super().__init__(Path(out_dir) / "shards", key)
        self.out_dir = Path(out_dir)
        self.meta = {"format": SHARD_FORMAT, **meta}
        self._lock = FolderLock(self.dir / ".lock")

    @staticmethod
    def name(start: int, stop: int) -> str:
        return f"units_{start}_{stop}.npz"

    def open(self) -> list[Span]:
        """Take the folder (see the module notes), check the manifest (clearing shards of a
        finished other run) and list finished shards. Pair with :meth:`close`."""
        try:
            self.create()
            self._take()
        except OSError as err:
            if is_unwritable(err):
                raise unwritable_folder("out_dir", self.out_dir, err) from err
            raise
        try:
            old = self.read_manifest()
            if self.is_mine(old):
                self.adopt(old)  # type: ignore[arg-type]
            else:
                self._clear_other_run()
            self.remove_temp_files()
            self._warn_foreign()
            return self._finished()
        except BaseException:
            self.close()
            raise

    def _take(self) -> None:
        """Hold the folder alone: wait for a run of this search, refuse any other run."""
        if not self._lock.acquire(exclusive=True, blocking=False):
            holder = self._lock.read_note()
            if holder != self.key:
                raise self._busy(holder)
            log.info("%s: another run of this search is using the folder; waiting for it",
                     self.dir)
            self._lock.acquire(exclusive=True)
        self._lock.note(self.key)

    def _busy(self, holder: str) -> Exception:
        """The error for a folder that a search with other inputs or parameters is using."""
        theirs = self.read_manifest() or {}
        if theirs.get("key") == holder and holder:
            diff = _differences(theirs, self.meta)
        else:
            diff = ""
        what = diff or "other activations or concepts"
        return bad("out_dir", "a folder that no other running search uses",
                   f"{str(self.out_dir)!r}, where a search with {what} is running (its "
                   f"shards are in {self.dir}); use another out_dir, or wait for it to end",
                   raw=True)

    def close(self) -> None:
        """Let go of the folder (its lock file is removed)."""
        self._lock.release(remove=True)

    def _clear_other_run(self) -> None:  # the folder is ours alone (see _take)
        stale = [p for p in self.dir.iterdir() if _SHARD_RE.match(p.name)
                 or _LEGACY_RE.match(p.name)]
        if stale:
            log.warning("%s holds %d shards of a different run (activations, concepts, "
                        "parameters or invert version changed); recomputing all",
                        self.dir, len(stale))
        for p in stale:  # deleted unread
            p.unlink()
        self.checksums = {}
        self.write_manifest(self.meta)

    def _warn_foreign(self) -> None:
        for p in sorted(self.dir.iterdir()):
            if p.suffix.lower() in (".pkl", ".pickle"):
                log.warning("%s is not read: invert never unpickles shard files (shards are "
                            ".npz since shard format 2); its units are computed afresh",
                            p)

    def _finished(self) -> list[Span]:
        """Listed shards whose files exist, disjoint and inside [0, n_units); unlisted
        ``.npz`` files (left by a kill before the manifest was updated) are deleted."""
        spans = []
        for p in self.dir.iterdir():
            m = _SHARD_RE.match(p.name)
            if m and p.name in self.checksums:
                spans.append((int(m.group(1)), int(m.group(2))))
            elif m:
                log.warning("%s is not a recorded shard of this run; deleting it", p)
                p.unlink(missing_ok=True)
        for name in set(self.checksums) - {self.name(a, b) for a, b in spans}:
            self.remove(name)  # recorded but gone
        spans.sort()
        kept, end = [], 0
        k = int(self.meta["n_units"])
        for a, b in spans:  # disjoint and inside [0, k); anything else is dropped
            if a >= end and a < b <= k:
                kept.append((a, b))
                end = b
            else:
                self.remove(self.name(a, b))
        return kept

    def write(self, payload: Payload) -> None:
        """Store a finished shard atomically, then record its checksum."""
        header, arrays = payload
        name = self.name(header["start"], header["stop"])
        self.write_npz(name, arrays, {**header, "key": self.key, "format": SHARD_FORMAT})
        self.checksum(name)

    def read(self, start: int, stop: int, unit_ids: Sequence[Any] | None,
             n_concepts: int) -> tuple[dict[str, Any], list[UnitExplanations]]:
        """A finished shard's header and units (see :func:`decode_shard`), checked first
        (checksum, run key, span); a shard that fails is deleted and reported as a
        :class:`ShardError`."""
        name = self.name(start, stop)

        def check(header: dict[str, Any]) -> None:
            if header.get("key") != self.key or header.get("format") != SHARD_FORMAT or (
                    header.get("start"), header.get("stop")) != (start, stop):
                raise ValueError("a shard of another run or span")

        try:
            self.verify(name)
            payload = self.read_npz(name, check=check)
            return payload[0], decode_shard(payload, unit_ids, n_concepts)
        except (ShardFileError, ValueError, KeyError, TypeError, IndexError) as err:
            self.remove(name)
            why = str(err) if isinstance(err, ShardFileError) else f"{name}: {err}"
            raise ShardError("search", [(start, stop)],
                             {(start, stop): f"unreadable shard file {why}"}) from err
