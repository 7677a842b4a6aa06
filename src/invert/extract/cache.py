"""On-disk cache for activation extraction: fingerprints, atomic writes, resumable shards.

The cache layout for one extraction run is a folder ``<cache_dir>/<key>/`` where ``key`` is a
hash of everything that changes the result (see :func:`invert.collect_activations`)::

    <key>/manifest.json         what the run is (the fingerprint components, human readable)
    <key>/shard-0000000.npz     one per batch while the run is in progress (atomic, CRC checked)
    <key>/result.json           written last: shapes, checksums, unit and sample ids
    <key>/values-0.npy ...      consolidated (N, K) float32 arrays, opened with ``mmap_mode="r"``

Every file is written to a temporary name in the same folder and moved into place with
:func:`os.replace`, so a crash never leaves a half-written file under its final name. Shards
carry the hash of the input batch they were computed from; a shard whose batch hash, layer set
or shape does not match, or whose zip CRC fails, is discarded and recomputed. Consolidated
arrays are checked against a SHA-1 stored in ``result.json`` before they are returned.
"""

from __future__ import annotations

import ast
import contextlib
import enum
import hashlib
import inspect
import json
import logging
import os
import re
import textwrap
import threading
import weakref
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._store import (
    Fingerprint,
    FolderLock,
    RunStore,
    ShardFileError,
    atomic_write,
    fingerprint_tensor,
    invert_version,
    is_unwritable,
    json_checksum,
    sha1_file,
    unwritable_folder,
    write_json,
)
from .._store import tensor_bytes as _tensor_bytes

logger = logging.getLogger(__name__)

__all__ = [
    "CacheCorruptError",
    "Fingerprint",
    "ShardStore",
    "atomic_write",
    "batch_digest",
    "fingerprint_callable",
    "fingerprint_module",
    "fingerprint_state",
    "fingerprint_tensor",
    "invert_version",
    "sha1_file",
]

FORMAT_VERSION = 1


class CacheCorruptError(RuntimeError):
    """Raised internally when a cache file fails its integrity check."""


def batch_digest(obj: Any) -> str:
    """Fast content digest (CRC-32 per tensor, with shapes and dtypes) of one input batch.

    Used to check that the batch fed to the model on a resumed run is the one a cached shard
    was computed from. CRC-32 runs at several GB/s; it guards against changed data, not against
    an adversary.
    """
    parts: list[str] = []

    def visit(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            parts.append(f"{x.dtype}{tuple(x.shape)}:{zlib.crc32(_tensor_bytes(x)):08x}")
        elif isinstance(x, np.ndarray):
            a = np.ascontiguousarray(x)
            body = memoryview(a.reshape(-1)).cast("B") if not a.dtype.hasobject else repr(a)
            if isinstance(body, str):
                body = body.encode()
            parts.append(f"{a.dtype.str}{a.shape}:{zlib.crc32(body):08x}")
        elif isinstance(x, Mapping):
            for k in sorted(x, key=str):
                parts.append(f"{k}=")
                visit(x[k])
        elif isinstance(x, list | tuple):
            parts.append(f"[{len(x)}")
            for y in x:
                visit(y)
            parts.append("]")
        else:
            parts.append(repr(x))

    visit(obj)
    return hashlib.sha1("|".join(parts).encode()).hexdigest()


def fingerprint_module(model: torch.nn.Module) -> str:
    """Hash of a module's architecture (module names, types, ``extra_repr``) and all weights.

    Parameters and buffers are hashed byte for byte, so any change of a weight changes the
    fingerprint.

    Examples
    --------
    >>> import torch
    >>> m = torch.nn.Linear(2, 3)
    >>> a = fingerprint_module(m)
    >>> with torch.no_grad():
    ...     _ = m.weight.add_(1.0)
    >>> a == fingerprint_module(m)
    False
    """
    fp = Fingerprint()
    for name, mod in model.named_modules():
        fp.update(name, type(mod).__module__, type(mod).__qualname__, mod.extra_repr())
    for name, t in model.state_dict(keep_vars=True).items():
        if isinstance(t, torch.Tensor):
            fp.update(name, t)
        else:  # pragma: no cover - exotic state dict entries
            fp.update(name, repr(t))
    return fp.hexdigest()


def fingerprint_callable(fn: Any) -> str:
    """Best-effort deterministic fingerprint of a callable (function, module or object).

    Order of preference: an ``invert_cache_key`` attribute or ``cache_key()`` method on the
    object; :func:`fingerprint_module` for ``nn.Module``; for plain functions the module,
    qualified name, bytecode, constants, defaults and closure values; for other objects the
    class name plus ``repr`` when it does not contain a memory address, else the instance
    ``__dict__``. Pass ``cache_key=`` to :func:`invert.collect_activations` when none of this
    captures what matters.
    """
    key = getattr(fn, "invert_cache_key", None)
    if isinstance(key, str):
        return "key:" + key
    if callable(getattr(fn, "cache_key", None)):
        return "key:" + str(fn.cache_key())
    if isinstance(fn, torch.nn.Module):
        return "module:" + fingerprint_module(fn)
    fp = Fingerprint()
    if inspect.ismethod(fn):
        fp.update("method", fingerprint_callable(fn.__self__))
        fn = fn.__func__
    if inspect.isfunction(fn):
        code = fn.__code__
        fp.update(fn.__module__, fn.__qualname__, code.co_code, _safe_consts(code.co_consts))
        fp.update(_safe_repr(fn.__defaults__), _safe_repr(fn.__kwdefaults__))
        for cell in fn.__closure__ or ():
            try:
                val = cell.cell_contents
            except ValueError:  # pragma: no cover - empty cell
                continue
            if isinstance(val, torch.nn.Module):
                fp.update(fingerprint_module(val))
            elif isinstance(val, torch.Tensor | np.ndarray):
                fp.update(val)
            elif callable(val):
                fp.update(fingerprint_callable(val))
            else:
                fp.update(_safe_repr(val))
        return "fn:" + fp.hexdigest()
    r = repr(fn)
    fp.update(type(fn).__module__, type(fn).__qualname__)
    if " at 0x" not in r:
        fp.update(r)
    else:
        fp.update(_safe_repr(getattr(fn, "__dict__", {})))
    return "obj:" + fp.hexdigest()


def _safe_consts(consts: Sequence[Any]) -> str:
    out = []
    for c in consts:
        out.append(
            _safe_consts(c.co_consts) + repr(c.co_code) if inspect.iscode(c) else _safe_repr(c)
        )
    return "|".join(out)


def _safe_repr(v: Any) -> str:
    r = repr(v)
    if " at 0x" in r:  # strip addresses, keep the type
        return f"<{type(v).__qualname__}>"
    return r


# ----------------------------------------------------------------------------- model state

#: Version of :func:`fingerprint_state` (part of its value: a change rebuilds, never misleads).
STATE_VERSION = 1
#: Attributes every ``nn.Module`` has (hooks, ``training``, parameter and module tables).
_MODULE_ATTRS = frozenset(vars(torch.nn.Module()))
_PLAIN = (type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device)


def fingerprint_state(*objs: Any) -> str:
    """Hash of what :func:`fingerprint_module` leaves out: module attributes and code.

    For every module of each ``nn.Module`` in ``objs`` (a bound method counts as its
    module; other objects are skipped), in ``named_modules()`` order:

    * its **attributes** that are neither parameters, buffers nor submodules: plain values
      (None, bool, int, float, complex, str, bytes, enums, ``torch.dtype``/``device``),
      tuples and frozensets of them, tensors and arrays that are not registered buffers (by
      content), and functions (by their code); other objects count by their type only;
    * the **source of its class** and of every base class outside torch itself (the
      ``forward`` with the rest; compiled code when the source cannot be read).

    Not covered: lists, dicts and sets held as attributes (run-time records more often than
    settings), attributes that the class's own ``forward`` assigns (counters, caches that
    change as it runs), names listed in an ``invert_cache_ignore`` attribute of the module,
    code that ``forward`` calls outside its classes, and torch's own code. The activation
    cache records this hash beside its key (see :class:`ShardStore`).

    Examples
    --------
    >>> import torch
    >>> class Scale(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.k = 1.0
    ...     def forward(self, x):
    ...         return self.k * x
    >>> m = Scale()
    >>> before = fingerprint_state(m)
    >>> m.k = 2.0
    >>> before == fingerprint_state(m), before == fingerprint_module(m)
    (False, False)
    """
    fp = Fingerprint().update("state", STATE_VERSION)
    codes: dict[type, str] = {}
    for obj in objs:
        if inspect.ismethod(obj) and isinstance(obj.__self__, torch.nn.Module):
            obj = obj.__self__
        if not isinstance(obj, torch.nn.Module):
            continue
        for name, mod in obj.named_modules():
            cls = type(mod)
            if cls not in codes:
                codes[cls] = _class_code(cls)
            fp.update(name, codes[cls], _attributes(mod))
    return f"{STATE_VERSION}:{fp.hexdigest()}"


def _in_torch(cls: type) -> bool:
    mod = getattr(cls, "__module__", "") or ""
    return cls is object or mod == "torch" or mod.startswith("torch.") or mod == "builtins"


def _class_code(cls: type) -> str:
    """SHA-1 of the source of ``cls`` and its bases outside torch (compiled code as a
    fallback); classes of torch itself count by name."""
    fp = Fingerprint().update(cls.__module__, cls.__qualname__)
    for klass in cls.__mro__:
        if _in_torch(klass):
            continue
        try:
            fp.update(klass.__qualname__, inspect.getsource(klass))
        except (OSError, TypeError):  # no source file (exec, a frozen app): compiled code
            for attr, val in sorted(vars(klass).items()):
                fn = getattr(val, "__func__", val)
                if inspect.isfunction(fn):
                    fp.update(attr, fn.__code__.co_code, _safe_consts(fn.__code__.co_consts))
    return fp.hexdigest()


def _attributes(mod: torch.nn.Module) -> dict[str, Any]:
    """The module's own attributes that count (see :func:`fingerprint_state`)."""
    ignore = getattr(mod, "invert_cache_ignore", ())
    skip = {ignore} if isinstance(ignore, str) else set(ignore)
    skip |= _assigned_in_forward(type(mod))
    out = {}
    for key, val in vars(mod).items():
        if key in _MODULE_ATTRS or key in skip:
            continue
        got = _plain_value(val, 0)
        if got is not _SKIP:
            out[key] = got
    return out


_SKIP = object()


def _plain_value(v: Any, depth: int) -> Any:
    """What of an attribute value is hashed (``_SKIP``: nothing)."""
    if isinstance(v, torch.Tensor | np.ndarray):
        return v if not (isinstance(v, np.ndarray) and v.dtype.hasobject) else _SKIP
    if isinstance(v, enum.Enum):
        return f"{type(v).__qualname__}.{v.name}"
    if isinstance(v, _PLAIN) or isinstance(v, np.generic):
        return v
    if isinstance(v, tuple | frozenset) and depth < 4:
        items = [_plain_value(x, depth + 1) for x in v]
        items = ["<skipped>" if x is _SKIP else x for x in items]
        return ("tuple", *items) if isinstance(v, tuple) else ("set", *sorted(items, key=repr))
    if isinstance(v, list | dict | set | tuple | frozenset):
        return _SKIP
    fn = getattr(v, "__func__", v)
    if inspect.isfunction(fn):
        code = fn.__code__
        return ("fn", fn.__module__, fn.__qualname__, code.co_code,
                _safe_consts(code.co_consts), _safe_repr(fn.__defaults__))
    if inspect.isbuiltin(v) or isinstance(v, type):
        return ("named", getattr(v, "__module__", None), getattr(v, "__qualname__", repr(v)))
    return ("object", type(v).__module__, type(v).__qualname__)


def _assigned_in_forward(cls: type) -> set[str]:
    """Names ``self.<name>`` assigned in the ``forward`` of ``cls`` or a base outside torch."""
    names: set[str] = set()
    for klass in cls.__mro__:
        fn = vars(klass).get("forward")
        if _in_torch(klass) or not inspect.isfunction(fn):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
        except (OSError, TypeError, SyntaxError):
            continue
        fdef = tree.body[0] if tree.body else None
        if not isinstance(fdef, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        params = [*fdef.args.posonlyargs, *fdef.args.args]
        me = params[0].arg if params else "self"
        for node in ast.walk(fdef):
            if (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
                    and isinstance(node.value, ast.Name) and node.value.id == me):
                names.add(node.attr)
    return names


class _HashingWriter:
    """File-like wrapper whose ``write`` also feeds the bytes to a hash (sequential writes only)."""

    def __init__(self, f: Any, h: Any):
        self._f = f
        self._h = h

    def write(self, b: Any) -> int:
        self._h.update(b)
        return self._f.write(b)


def _array_sha1(a: np.ndarray) -> str:
    a = np.ascontiguousarray(a)
    h = hashlib.sha1(f"{a.dtype.str}{a.shape}".encode())
    h.update(memoryview(a.reshape(-1)).cast("B"))
    return h.hexdigest()


_VALUES_RE = re.compile(r"^values-\d+\.npy$")
_LOCK, _CONSOLIDATE_LOCK = ".lock", ".consolidate.lock"

#: Stores open in this process (see :meth:`ShardStore._supersede`).
_OPEN: weakref.WeakSet[ShardStore] = weakref.WeakSet()
_OPEN_GUARD = threading.Lock()


class ShardStore(RunStore):
    """One extraction run's cache folder: per-batch shards plus a consolidated result.

    A :class:`invert._store.RunStore` in ``<root>/<key>/``: the manifest is written once,
    each batch's shard is ``shard-<i>.npz`` (its arrays, the batch's index and hash, the
    run key, a SHA-1 per array, the layer names and JSON metadata), and ``result.json``
    (with a checksum of itself) with the consolidated ``values-<j>.npy`` comes last.

    Parameters
    ----------
    root : path
        The user's ``cache_dir``.
    key : str
        Hex digest identifying the run.
    manifest : dict
        JSON-serialisable description of the run (written once, for humans and debugging).
        Its ``"layers"`` list is the order in which :meth:`read_result` gives the layers.
    state : str, optional
        :func:`fingerprint_state` of the model (what the key leaves out: module attributes
        and code), recorded in the manifest and in ``result.json``.

    Notes
    -----
    **State.** A folder whose recorded ``state`` differs from ``state`` holds the work of
    a model with other code or attributes: its shards and result are discarded (logged at
    INFO) and the run starts afresh. A folder written by invert 0.1.0 records no state: it
    is used as before (logged at INFO; the key alone decides), and its manifest gains the
    record when this run writes to the folder.

    **Checks.** A shard is used only when it names this batch index and this run's key and
    its arrays have their SHA-1 (shards of 0.1.0 lack these and are checked by their zip
    CRC and batch hash only); ``result.json`` is used only when it has its checksum (or,
    written by 0.1.0, none), its files are ``values-<j>.npy`` of the recorded shapes, and
    its unit and sample ids fit those shapes. Any failure raises :class:`CacheCorruptError`,
    and the collector rebuilds.

    **Concurrency.** Runs on one folder (threads or processes) share it: a run that may
    write holds a shared ``flock`` on ``.lock``; shards are deleted after consolidation,
    and temporary files left by a killed writer are removed, only by a run that holds it
    alone (exclusively); consolidation is serialised by ``.consolidate.lock``, and a run
    that finds an equal, verified result already written by another reuses it. A run
    holds its lock until :meth:`close` (called by :meth:`clear_shards`, by a newer store
    on the same folder in the same thread, or when the store is garbage collected).

    **Permissions.** Files get the process's usual permissions (umask). A folder that
    cannot be written raises :class:`invert._validate.InvalidParameterError` naming it
    (``cache_dir: expected a folder this process can write to, ...``) as soon as the run
    needs to write; a complete cache in a read-only folder is still read.
    """

    def __init__(self, root: str | os.PathLike[str], key: str, manifest: Mapping[str, Any],
                 *, state: str | None = None):
        super().__init__(Path(root) / key, key)
        self.root = Path(root)
        self.state = state
        layers = manifest.get("layers")
        self.layer_order = [str(n) for n in layers] if isinstance(layers, list) else []
        self._users = FolderLock(self.dir / _LOCK)
        self._thread = threading.get_ident()
        self._real = os.path.realpath(self.dir)
        self._supersede()
        with self._writing():
            self.create()
        self._remove_leftovers()
        doc = self.read_manifest()
        if doc is None:
            self._share()
            doc = {"format": FORMAT_VERSION, "key": key, **manifest}
            if state is not None:
                doc["state"] = state
            with self._writing():
                write_json(self.manifest_path, doc)
        elif state is not None:
            self._check_state(doc, manifest)
        if not self.result_path.exists():
            self._share()  # a run that will write: it uses the shards until it closes

    # -- locking ---------------------------------------------------------------------------
    def _supersede(self) -> None:
        """Close older stores of this folder in this thread: their runs have ended (one that
        raised may still be referenced by its traceback)."""
        with _OPEN_GUARD:
            for other in list(_OPEN):
                if other._real == self._real and other._thread == self._thread:
                    other.close()
            _OPEN.add(self)

    def _share(self) -> None:
        """Hold the folder's lock (shared) from now on; a clear error if it cannot be made."""
        if not self._users.held:
            with self._writing():
                self._users.acquire(exclusive=False)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Turn "cannot write here" into one clear error naming ``cache_dir``."""
        try:
            yield
        except OSError as err:
            if is_unwritable(err):
                raise unwritable_folder("cache_dir", self.root, err) from err
            raise

    @contextlib.contextmanager
    def _alone(self, blocking: bool) -> Iterator[bool]:
        """Hold the folder exclusively for the block (``False``: another run uses it, when
        not ``blocking``); afterwards the shared lock is held again."""
        try:
            got = self._users.acquire(exclusive=True, blocking=blocking)
        except OSError:  # pragma: no cover - a read-only folder: nothing to change
            got = False
        try:
            yield got
        finally:
            if got:
                self._users.acquire(exclusive=False)

    def close(self) -> None:
        """Let go of the folder (its lock files are removed when no other run holds them)."""
        lock = getattr(self, "_users", None)
        if lock is not None:
            lock.release(remove=True, also=[self.dir / _CONSOLIDATE_LOCK])

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finaliser
            pass

    def _remove_leftovers(self) -> None:
        """Delete temporary files a killed writer left (only when no other run is writing)."""
        if not any(self.dir.glob(".*.tmp")):
            return
        with self._alone(blocking=False) as alone:
            if alone:
                n = len(list(self.dir.glob(".*.tmp")))
                self.remove_temp_files()
                logger.info("removed %d temporary files left in cache %s", n, self.dir)

    # -- state -----------------------------------------------------------------------------
    def _check_state(self, doc: Mapping[str, Any], manifest: Mapping[str, Any]) -> None:
        recorded = doc.get("state")
        if recorded is None:
            logger.info("cache %s was written by invert 0.1.0 (no record of the model's "
                        "attributes and code): used as before, by its key", self.dir)
            return
        if recorded == self.state:
            return
        logger.info("cache %s was made by a model with other attributes or code (state %s, "
                    "now %s); discarding it", self.dir, str(recorded)[:10], self.state[:10])
        self._share()
        with self._alone(blocking=True):
            again = self.read_manifest() or {}
            if again.get("state") == self.state:  # another run of this model rebuilt it
                return
            self._delete_shards()
            self.result_path.unlink(missing_ok=True)
            for p in self.dir.glob("values-*.npy"):
                p.unlink(missing_ok=True)
            with self._writing():
                write_json(self.manifest_path, {"format": FORMAT_VERSION, "key": self.key,
                                                 **manifest, "state": self.state})

    def _upgrade_manifest(self) -> None:
        """Add the state record to a manifest of invert 0.1.0 (this run writes anyway)."""
        doc = self.read_manifest()
        if self.state is not None and doc is not None and doc.get("state") is None:
            write_json(self.manifest_path, {**doc, "state": self.state})

    # -- shards ---------------------------------------------------------------------------
    def shard_path(self, i: int) -> Path:
        return self.dir / f"shard-{i:07d}.npz"

    def write_shard(
        self, i: int, arrays: Mapping[str, np.ndarray], batch_hash: str | None, meta: Any
    ) -> None:
        """Atomically store the arrays computed from batch ``i`` (``meta`` is JSON-able).

        The shard records ``i``, the run key, ``batch_hash`` (the digest of the input batch;
        None for data with a content fingerprint) and the SHA-1 of each array."""
        self._share()
        info = {"index": int(i), "key": self.key,
                "batch_hash": None if batch_hash in (None, "None") else batch_hash,
                "keys": sorted(arrays), "sha1": {k: _array_sha1(v) for k, v in arrays.items()},
                "meta": meta}
        with self._writing():
            self.write_npz(self.shard_path(i).name, arrays, info)

    def read_shard(
        self,
        i: int,
        batch_hash: str | None,
        keys: Sequence[str],
        *,
        header_only: bool = False,
        only: Sequence[str] | None = None,
    ) -> tuple[dict[str, np.ndarray], Any] | None:
        """Return ``(arrays, meta)`` of shard ``i`` if present, intact and for this batch.

        ``keys`` are the arrays the shard must hold (it may hold more, all are returned).
        A corrupt or stale shard (another index or run, an array failing its SHA-1, another
        batch hash) is deleted (with a warning) and ``None`` returned, so the caller
        recomputes it. With ``header_only`` the arrays are not read (``{}``); with ``only``
        just those of the shard's arrays are read (each still checked), names the shard
        lacks being skipped.
        """
        path = self.shard_path(i)
        if not path.exists():
            return None
        try:
            info, arrays = self.read_npz(path.name, check=self._shard_check(i, keys),
                                         only=only, header_only=header_only)
            sums = info.get("sha1")
            for k, a in arrays.items():
                if isinstance(sums, dict) and sums.get(k) != _array_sha1(a):
                    raise ShardFileError(f"array {k!r} fails its SHA-1")
        except ShardFileError as e:
            logger.warning("cache shard %s is corrupt (%s); recomputing it", path, e)
            path.unlink(missing_ok=True)
            return None
        if batch_hash is not None and info.get("batch_hash") != batch_hash:
            logger.warning(
                "cache shard %s was computed from different input data; recomputing it", path
            )
            path.unlink(missing_ok=True)
            return None
        return arrays, info.get("meta")

    def _shard_check(self, i: int, keys: Sequence[str]) -> Any:
        """The header check of shard ``i`` (fields a shard of 0.1.0 lacks are not checked)."""

        def check(info: dict[str, Any]) -> None:
            if not set(keys) <= set(info["keys"]):
                raise CacheCorruptError(f"layers {info['keys']} lack some of {sorted(keys)}")
            if "index" in info and info["index"] != i:
                raise CacheCorruptError(f"it holds batch {info['index']}, not batch {i}")
            if "key" in info and info["key"] != self.key:
                raise CacheCorruptError("it belongs to another cache entry")

        return check

    def shard_indices(self) -> list[int]:
        out = []
        for p in self.dir.glob("shard-*.npz"):
            try:
                out.append(int(p.stem.split("-")[1]))
            except (IndexError, ValueError):  # pragma: no cover
                continue
        return sorted(out)

    def _delete_shards(self) -> None:
        for i in self.shard_indices():
            self.shard_path(i).unlink(missing_ok=True)

    def clear_shards(self) -> None:
        """Delete the shards (the result is consolidated) and :meth:`close` the store.

        Shards that another run still uses (it holds the folder's lock) are kept for it;
        the last run to finish deletes them."""
        with self._alone(blocking=False) as alone:
            if alone:
                self._delete_shards()
            else:
                logger.debug("cache %s: another run uses the shards; keeping them", self.dir)
        self.close()

    # -- consolidated result ---------------------------------------------------------------
    @property
    def result_path(self) -> Path:
        return self.dir / "result.json"

    def write_result(
        self,
        arrays: Mapping[str, Iterable[np.ndarray]],
        shapes: Mapping[str, tuple[int, ...]],
        info: Mapping[str, Any],
    ) -> dict[str, Any]:
        """Consolidate per-batch arrays into ``.npy`` files, then write ``result.json``.

        ``arrays[name]`` yields the row blocks of output ``name`` in order; ``shapes[name]`` is
        the final shape. Returns the result record. One run at a time consolidates (a lock);
        an equal, verified result that another run wrote meanwhile is kept as it is.
        """
        self._share()
        lock = FolderLock(self.dir / _CONSOLIDATE_LOCK)
        try:
            with self._writing():
                lock.acquire(exclusive=True)
                same = self._same_result(shapes, info)
                if same is not None:
                    logger.info("cache %s: another run wrote this result; using it", self.dir)
                    return same
                record = self._write_values(arrays, shapes, info)
                write_json(self.result_path, record)
                self._upgrade_manifest()
        finally:
            lock.release()
        return record

    def _write_values(self, arrays: Mapping[str, Iterable[np.ndarray]],
                      shapes: Mapping[str, tuple[int, ...]],
                      info: Mapping[str, Any]) -> dict[str, Any]:
        """Write each output's ``values-<j>.npy``; the result record (with its checksum)."""
        files: dict[str, dict[str, Any]] = {}
        for j, (name, blocks) in enumerate(arrays.items()):
            fname = f"values-{j}.npy"
            shape = tuple(shapes[name])
            dtype = np.int64 if name.startswith("__") else np.float32
            h = hashlib.sha1()
            atomic_write(self.dir / fname, lambda f, b=blocks, s=shape, d=dtype, n=name, h=h:
                         _write_npy(_HashingWriter(f, h), b, s, d, n))
            files[name] = {"file": fname, "shape": list(shape), "sha1": h.hexdigest()}
        record: dict[str, Any] = {"format": FORMAT_VERSION, "key": self.key, "files": files,
                                  **info}
        if self.state is not None:
            record["state"] = self.state
        record["checksum"] = json_checksum(record)
        return record

    def _same_result(self, shapes: Mapping[str, tuple[int, ...]],
                     info: Mapping[str, Any]) -> dict[str, Any] | None:
        """The folder's result when it verifies and equals the one about to be written."""
        if not self.result_path.exists():
            return None
        try:
            record, _ = self.read_result(verify=True)
        except CacheCorruptError:
            return None
        want = json.loads(json.dumps(dict(info)))
        if (record.get("state") != self.state
                or {k: tuple(f["shape"]) for k, f in record["files"].items()}
                != {k: tuple(v) for k, v in shapes.items()}
                or any(record.get(k) != v for k, v in want.items())):
            return None
        return record

    def read_result(self, verify: bool = True) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Open a complete result: ``(record, {name: memmap})``, layers in the run's order.

        Raises :class:`CacheCorruptError` when ``result.json`` fails its checksum or does
        not fit its files, or when any file is missing, of the wrong shape or (with
        ``verify``) fails its SHA-1.
        """
        record = self._read_record()
        out: dict[str, np.ndarray] = {}
        for name, f in record["files"].items():
            path = self.dir / f["file"]
            try:
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as e:
                raise CacheCorruptError(f"unreadable {path}: {e}") from e
            if list(arr.shape) != list(f["shape"]):
                raise CacheCorruptError(f"{path} has shape {arr.shape}, expected {f['shape']}")
            if verify and sha1_file(path) != f["sha1"]:
                raise CacheCorruptError(f"{path} fails its checksum")
            out[name] = arr
        _check_ids(record, out)
        layers = record["layers"]
        if set(self.layer_order) == set(layers) and len(self.layer_order) == len(layers):
            record["layers"] = {n: layers[n] for n in self.layer_order}
        return record, out

    def _read_record(self) -> dict[str, Any]:
        """``result.json``, checked: its checksum (when it has one), key, state, file table."""
        try:
            record = json.loads(self.result_path.read_text())
        except (OSError, ValueError) as e:
            raise CacheCorruptError(f"unreadable {self.result_path}: {e}") from e
        if not isinstance(record, dict):
            raise CacheCorruptError("result.json is not a JSON object")
        if record.get("format") != FORMAT_VERSION or record.get("key") != self.key:
            raise CacheCorruptError("result.json is from another cache format or key")
        if "checksum" in record:
            if record["checksum"] != json_checksum(record):
                raise CacheCorruptError("result.json fails its checksum (edited or damaged)")
        else:
            logger.info("cache %s: result.json of invert 0.1.0 (no checksum): checked "
                        "against its files only", self.dir)
        if self.state is not None and record.get("state") not in (None, self.state):
            raise CacheCorruptError("result.json was made by a model with other attributes "
                                    "or code")
        _check_record_layout(record)
        return record

    def invalidate_result(self) -> None:
        self._share()
        with self._writing():
            self.result_path.unlink(missing_ok=True)


def _write_npy(f: Any, blocks: Iterable[np.ndarray], shape: tuple[int, ...], dtype: Any,
               name: str) -> None:
    """A ``.npy`` of ``shape`` from row blocks, streamed (no whole array in memory)."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
              "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(f, header)
    rows = 0
    for b in blocks:
        b = np.ascontiguousarray(b, dtype=dtype)
        rows += b.shape[0]
        f.write(memoryview(b.reshape(-1)).cast("B"))
    if rows != shape[0]:
        raise CacheCorruptError(f"{name}: wrote {rows} rows, expected {shape[0]}")


def _check_record_layout(record: Mapping[str, Any]) -> None:
    """The file table and layer table of ``result.json`` are what this module writes (layer
    values are 2-D; extra arrays such as spatial maps may have any rank)."""
    files, layers = record.get("files"), record.get("layers")
    if not isinstance(files, dict) or not isinstance(layers, dict) or not layers:
        raise CacheCorruptError("result.json lacks its file or layer table")
    for name, f in files.items():
        if not (isinstance(f, dict) and isinstance(f.get("file"), str)
                and _VALUES_RE.match(f["file"]) and isinstance(f.get("sha1"), str)
                and isinstance(f.get("shape"), list) and len(f["shape"]) >= 1
                and all(isinstance(x, int) and x >= 0 for x in f["shape"])
                and (name not in layers or len(f["shape"]) == 2)):
            raise CacheCorruptError(f"result.json: bad file entry for {name!r}")
    for name, li in layers.items():
        if name not in files or not isinstance(li, dict) or not isinstance(
                li.get("unit_ids"), list) or not isinstance(li.get("reduction"), str):
            raise CacheCorruptError(f"result.json: bad layer entry for {name!r}")
    if not isinstance(record.get("sample_ids"), list) or not isinstance(
            record.get("digests", []), list):
        raise CacheCorruptError("result.json: bad sample ids or batch digests")


def _check_ids(record: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
    """Unit ids fit the columns, sample ids the rows (or the token index, for tokens)."""
    n_ids = len(record["sample_ids"])
    tok = arrays.get("__tok")
    for name, li in record["layers"].items():
        rows, cols = arrays[name].shape
        if len(li["unit_ids"]) != cols:
            raise CacheCorruptError(f"result.json: {len(li['unit_ids'])} unit ids for "
                                    f"{cols} columns of layer {name!r}")
        if tok is None and rows != n_ids:
            raise CacheCorruptError(f"result.json: {n_ids} sample ids for {rows} rows")
        if tok is not None and tok.shape != (rows, 2):
            raise CacheCorruptError("result.json: the token index does not fit the rows")
    if tok is not None and len(tok) and not 0 <= int(tok[:, 0].min()) <= int(
            tok[:, 0].max()) < n_ids:
        raise CacheCorruptError("result.json: the token index names unknown documents")
