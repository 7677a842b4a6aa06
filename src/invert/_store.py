"""The one shard store of invert: a run's folder of data files, written atomically, never pickled.

Both the activation cache (:class:`invert.extract.cache.ShardStore`) and the sharded search
(:mod:`invert.distributed.store`) keep a run's partial results in a :class:`RunStore`::

    <folder>/manifest.json    names the run: its key (a hash of everything that changes the
                              result) and a human-readable description
    <folder>/<shard>.npz      one per finished piece of work: numeric arrays ``a_<name>`` and
                              a JSON header ``info`` (a uint8 array)

Every file is written to a temporary name in the same folder and moved into place with
:func:`os.replace` (:func:`atomic_write`), so a crash never leaves a half-written file under
its final name; files get the process's usual permissions (``0o666`` less the umask).
Shards are read with ``np.load(..., allow_pickle=False)``: a shard file is data, never
code, whoever wrote it. Each zip member carries a CRC-32 that is checked as it is read; a
store may also record the SHA-1 of each shard in its manifest (:meth:`RunStore.checksum`)
and check it before the shard is opened.

Runs that share a folder coordinate through :class:`FolderLock` (``fcntl.flock`` on a
lock file in the folder; a no-op where ``fcntl`` is missing).

This module sits below the engine: it imports numpy, torch (to hash tensors),
:mod:`invert._validate` and :mod:`invert._version` only.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._validate import InvalidParameterError, bad
from ._version import __version__

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: folders are not locked
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "replacing",
    "FolderLock",
    "Fingerprint",
    "RunStore",
    "ShardFileError",
    "atomic_write",
    "fingerprint_tensor",
    "invert_version",
    "is_unwritable",
    "json_checksum",
    "sha1_file",
    "tensor_bytes",
    "unwritable_folder",
    "write_json",
]

log = logging.getLogger(__name__)


class ShardFileError(RuntimeError):
    """A shard file that is missing, unreadable or fails a check (format, run, checksum)."""


def invert_version() -> str:
    """The invert version (part of every run key)."""
    return __version__


# ----------------------------------------------------------------------------- hashing


class Fingerprint:
    """Incremental SHA-1 over heterogeneous values (str, bytes, numbers, arrays, tensors).

    Examples
    --------
    >>> fp = Fingerprint()
    >>> fp.update("layer", "features.3").update("reduce", "mean").hexdigest()[:8] != ""
    True
    """

    def __init__(self) -> None:
        self._h = hashlib.sha1()

    def update(self, *values: Any) -> Fingerprint:
        for v in values:
            self._update_one(v)
        return self

    def _update_one(self, v: Any) -> None:
        h = self._h
        if isinstance(v, torch.Tensor):
            h.update(b"T")
            h.update(fingerprint_tensor(v).encode())
        elif isinstance(v, np.ndarray):
            a = np.ascontiguousarray(v)
            h.update(f"A{a.dtype.str}{a.shape}".encode())
            if a.dtype.hasobject:
                h.update(repr(a.tolist()).encode())
            else:
                h.update(memoryview(a.reshape(-1)).cast("B"))
        elif isinstance(v, bytes | bytearray | memoryview):
            h.update(b"B%d:" % len(v))
            h.update(v)
        elif isinstance(v, Mapping):
            h.update(b"M")
            for k in sorted(v, key=repr):
                self._update_one(k)
                self._update_one(v[k])
        elif isinstance(v, list | tuple):
            h.update(b"L%d:" % len(v))
            for x in v:
                self._update_one(x)
        else:
            s = repr(v).encode()
            h.update(b"S%d:" % len(s))
            h.update(s)

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def tensor_bytes(t: torch.Tensor) -> memoryview:
    """The bytes of a tensor (moved to the CPU, made contiguous)."""
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous().reshape(-1)
    if t.numel() == 0:
        return memoryview(b"")
    return memoryview(t.view(torch.uint8).numpy())


def fingerprint_tensor(t: torch.Tensor) -> str:
    """SHA-1 of a tensor's dtype, shape and bytes."""
    h = hashlib.sha1(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(tensor_bytes(t))
    return h.hexdigest()


def sha1_file(path: str | os.PathLike[str], chunk: int = 1 << 24) -> str:
    """SHA-1 of a file's bytes, read in chunks."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


# ----------------------------------------------------------------------------- writing


def atomic_write(path: str | os.PathLike[str], write: Callable[[Any], None]) -> None:
    """Write a file atomically: ``write(fileobj)`` into a temp file, fsync, then ``os.replace``.

    The temporary file is ``.<name>.<random>.tmp`` in the same folder (removed on failure;
    one left by a killed process is removed by :meth:`RunStore.remove_temp_files`). It is
    created with mode ``0o666`` less the umask, like any file the process writes (not the
    ``0o600`` of :func:`tempfile.mkstemp`).

    Examples
    --------
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> atomic_write(os.path.join(d, "x.txt"), lambda f: f.write(b"hi"))
    >>> open(os.path.join(d, "x.txt"), "rb").read()
    b'hi'
    """
    path = Path(path)
    fd, tmp = _temp_file(path)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


@contextlib.contextmanager
def replacing(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path beside ``path`` that replaces it (``os.replace``) once written
    whole, so a failed or interrupted write leaves the old file as it was.

    For writers that want a path (``np.save``, pandas, pyarrow) rather than a file object
    (:func:`atomic_write`)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _temp_file(path: Path) -> tuple[int, Path]:
    """A new, empty ``.<name>.<random>.tmp`` beside ``path`` (mode 0o666 less the umask)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{os.urandom(6).hex()}.tmp"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:  # pragma: no cover - 48 random bits
            continue
    raise FileExistsError(f"no free temporary name beside {path}")  # pragma: no cover


def write_json(path: str | os.PathLike[str], obj: Any, *,
               default: Callable[[Any], Any] | None = None) -> None:
    """Write ``obj`` as indented JSON with sorted keys, atomically."""
    data = json.dumps(obj, indent=1, sort_keys=True, default=default).encode()
    atomic_write(path, lambda f: f.write(data))


def json_checksum(obj: Mapping[str, Any], *, skip: str = "checksum") -> str:
    """SHA-1 of a JSON object as it reads back from a file (canonical form, ``skip`` left out).

    Examples
    --------
    >>> json_checksum({"a": (1, 2), "checksum": "x"}) == json_checksum({"a": [1, 2]})
    True
    """
    body = {k: v for k, v in obj.items() if k != skip}
    canon = json.dumps(json.loads(json.dumps(body)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(canon.encode()).hexdigest()


def is_unwritable(err: OSError) -> bool:
    """Whether an error means the folder cannot be written (permissions, read-only file system)."""
    return isinstance(err, PermissionError) or err.errno == errno.EROFS


def unwritable_folder(name: str, folder: str | os.PathLike[str],
                      err: OSError) -> InvalidParameterError:
    """The one-line error for a folder (parameter ``name``) that this process cannot write."""
    why = err.strerror or str(err)
    return bad(name, "a folder this process can write to",
               f"{str(folder)!r} ({type(err).__name__}: {why})", raw=True)


# ----------------------------------------------------------------------------- locking


class FolderLock:
    """``fcntl.flock`` on a lock file: shared by the runs using a folder, exclusive for one.

    Each :class:`FolderLock` opens the file itself, so two locks on one file exclude each
    other even within one process. The file may be removed by :meth:`release` (when no one
    else holds it); a lock taken on a file that was removed meanwhile is retaken on the
    current one. Where ``fcntl`` is missing every request succeeds at once.

    Examples
    --------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), ".lock")
    >>> a, b = FolderLock(path), FolderLock(path)
    >>> a.acquire(exclusive=False), b.acquire(exclusive=False)
    (True, True)
    >>> a.acquire(exclusive=True, blocking=False)  # b still holds it (a now holds nothing)
    False
    >>> b.release(remove=True); a.acquire(exclusive=True, blocking=False)
    True
    >>> a.release(remove=True); os.path.exists(path)
    False
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._fd: int | None = None
        self.mode: str | None = None  # "shared", "exclusive" or None

    @property
    def held(self) -> bool:
        return self.mode is not None

    def acquire(self, *, exclusive: bool, blocking: bool = True) -> bool:
        """Take (or convert to) the shared or exclusive lock; False if ``blocking`` is off
        and another holder is in the way (a failed conversion leaves nothing held).

        Raises OSError when the lock file cannot be created (a read-only folder)."""
        if fcntl is None:  # pragma: no cover
            self.mode = "exclusive" if exclusive else "shared"
            return True
        op = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if blocking else fcntl.LOCK_NB)
        while True:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(self._fd, op)
            except BlockingIOError:
                self.mode = None  # Linux drops the old lock when a conversion fails
                return False
            if self._is_current():
                self.mode = "exclusive" if exclusive else "shared"
                return True
            os.close(self._fd)  # the file was removed while we waited: lock the new one
            self._fd, self.mode = None, None

    def _is_current(self) -> bool:
        try:
            return os.path.samestat(os.fstat(self._fd), os.stat(self.path))  # type: ignore[arg-type]
        except FileNotFoundError:
            return False

    def note(self, text: str) -> None:
        """Write ``text`` into the lock file (who holds it), for :meth:`read_note`."""
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, text.encode(), 0)

    def read_note(self, wait: float = 2.0) -> str:
        """The text a holder wrote with :meth:`note` (waiting up to ``wait`` s for it)."""
        deadline = time.monotonic() + wait
        while True:
            try:
                text = self.path.read_text(encoding="utf-8").strip()
            except OSError:
                text = ""
            if text or time.monotonic() >= deadline:
                return text
            time.sleep(0.05)

    def release(self, *, remove: bool = False, also: Sequence[Path] = ()) -> None:
        """Let go; with ``remove``, delete the lock file (and the files ``also``) when no
        one else holds it."""
        if self._fd is None:
            self.mode = None
            return
        try:
            if remove and fcntl is not None and self.acquire(exclusive=True, blocking=False):
                for p in (*also, self.path):
                    try:
                        p.unlink(missing_ok=True)
                    except OSError:  # pragma: no cover - read-only folder
                        pass
        finally:
            if self._fd is not None:
                os.close(self._fd)
            self._fd, self.mode = None, None

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            try:
                os.close(self._fd)  # type: ignore[arg-type]
            except OSError:  # pragma: no cover
                pass


# ----------------------------------------------------------------------------- the store


class RunStore:
    """One run's folder: ``manifest.json`` (the run key) and ``.npz`` shards of plain data.

    Parameters
    ----------
    folder : path
        The run's folder (created by :meth:`create`).
    key : str
        Hex digest naming the run: a shard or manifest with another key is not this run's.

    Notes
    -----
    A shard holds numeric arrays (``a_<name>`` members) and a JSON header (the ``info``
    member, UTF-8 bytes as a uint8 array); it is read with ``allow_pickle=False`` and an
    object array is refused, so reading a shard never runs code. :meth:`checksum` records a
    shard's SHA-1 in the manifest (``"checksums"``) for :meth:`verify`.
    """

    MANIFEST = "manifest.json"

    def __init__(self, folder: str | os.PathLike[str], key: str):
        self.dir = Path(folder)
        self.key = key
        self.checksums: dict[str, str] = {}
        self._description: dict[str, Any] = {}

    # -- manifest --------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.dir / self.MANIFEST

    def create(self) -> None:
        """Make the folder (and its parents)."""
        self.dir.mkdir(parents=True, exist_ok=True)

    def read_manifest(self) -> dict[str, Any] | None:
        """The manifest as a dict, or None when it is missing or unreadable."""
        try:
            doc = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    def is_mine(self, manifest: Mapping[str, Any] | None) -> bool:
        """Whether a manifest names this run."""
        return manifest is not None and manifest.get("key") == self.key

    def write_manifest(self, description: Mapping[str, Any]) -> None:
        """(Re)write the manifest: the key, ``description`` and the recorded checksums."""
        self._description = dict(description)
        self._flush_manifest()

    def _flush_manifest(self) -> None:
        doc: dict[str, Any] = {**self._description, "key": self.key}
        if self.checksums:
            doc["checksums"] = dict(sorted(self.checksums.items()))
        write_json(self.manifest_path, doc, default=str)

    def adopt(self, manifest: Mapping[str, Any]) -> None:
        """Take over this run's existing manifest (its description and checksums)."""
        self._description = {k: v for k, v in manifest.items() if k not in ("key", "checksums")}
        sums = manifest.get("checksums")
        self.checksums = {str(k): str(v) for k, v in sums.items()} if isinstance(
            sums, dict) else {}

    # -- shards ----------------------------------------------------------------------------
    def write_npz(self, name: str, arrays: Mapping[str, np.ndarray],
                  info: Mapping[str, Any]) -> None:
        """Atomically write shard ``name``: ``arrays`` (numeric) and the JSON header ``info``."""
        payload = {f"a_{k}": np.ascontiguousarray(v) for k, v in arrays.items()}
        header = json.dumps(dict(info))
        payload["info"] = np.frombuffer(header.encode(), dtype=np.uint8)
        atomic_write(self.dir / name, lambda f: np.savez(f, **payload))

    def read_npz(self, name: str, *, check: Callable[[dict[str, Any]], None] | None = None,
                 only: Sequence[str] | None = None, header_only: bool = False
                 ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The header and arrays of shard ``name``, read without unpickling.

        ``check(header)`` runs before any array is read (it raises to refuse the shard);
        ``only`` reads just those arrays (names the shard lacks are skipped), ``header_only``
        none. Raises :class:`ShardFileError` on any failure (missing, unreadable, CRC error,
        refused by ``check``).
        """
        path = self.dir / name
        try:
            with np.load(path, allow_pickle=False) as z:
                info = json.loads(bytes(z["info"]).decode())
                if not isinstance(info, dict):
                    raise ValueError("the shard header is not a JSON object")
                if check is not None:
                    check(info)
                names = [k[2:] for k in z.files if k.startswith("a_")]
                if only is not None:
                    names = [k for k in names if k in only]
                arrays = {} if header_only else {k: np.array(z[f"a_{k}"]) for k in names}
        except Exception as err:  # noqa: BLE001 - any failure to read means "not usable"
            raise ShardFileError(f"{path.name}: {type(err).__name__}: {err}") from err
        return info, arrays

    def checksum(self, name: str) -> None:
        """Record the SHA-1 of shard ``name`` in the manifest (rewritten atomically)."""
        self.checksums[name] = sha1_file(self.dir / name)
        self._flush_manifest()

    def verify(self, name: str) -> None:
        """Raise :class:`ShardFileError` unless shard ``name`` has its recorded SHA-1."""
        want = self.checksums.get(name)
        if want is None:
            raise ShardFileError(f"{name}: not a finished shard of this run (no checksum)")
        try:
            got = sha1_file(self.dir / name)
        except OSError as err:
            raise ShardFileError(f"{name}: {err}") from err
        if got != want:
            raise ShardFileError(f"{name}: fails its checksum (changed after it was written)")

    def remove(self, name: str) -> None:
        """Delete shard ``name`` and forget its checksum."""
        (self.dir / name).unlink(missing_ok=True)
        if self.checksums.pop(name, None) is not None:
            self._flush_manifest()

    def remove_temp_files(self) -> None:
        """Delete temporary files left by a killed writer (``.<name>.<random>.tmp``)."""
        for p in self.dir.glob(".*.tmp"):
            p.unlink(missing_ok=True)
