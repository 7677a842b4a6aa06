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

import hashlib
import inspect
import json
import logging
import os
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._store import (
    Fingerprint,
    RunStore,
    ShardFileError,
    atomic_write,
    fingerprint_tensor,
    invert_version,
    sha1_file,
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


class _HashingWriter:
    """File-like wrapper whose ``write`` also feeds the bytes to a hash (sequential writes only)."""

    def __init__(self, f: Any, h: Any):
        self._f = f
        self._h = h

    def write(self, b: Any) -> int:
        self._h.update(b)
        return self._f.write(b)


def _write_json(path: Path, obj: Any) -> None:
    write_json(path, obj)


class ShardStore(RunStore):
    """One extraction run's cache folder: per-batch shards plus a consolidated result.

    A :class:`invert._store.RunStore` in ``<root>/<key>/``: the manifest is written once,
    each batch's shard is ``shard-<i>.npz`` (its arrays, the batch's hash, the layer names
    and JSON metadata), and ``result.json`` with the consolidated ``values-<j>.npy`` comes
    last.

    Parameters
    ----------
    root : path
        The user's ``cache_dir``.
    key : str
        Hex digest identifying the run.
    manifest : dict
        JSON-serialisable description of the run (written once, for humans and debugging).
    """

    def __init__(self, root: str | os.PathLike[str], key: str, manifest: Mapping[str, Any]):
        super().__init__(Path(root) / key, key)
        self.create()
        if not self.manifest_path.exists():
            _write_json(self.manifest_path, {"format": FORMAT_VERSION, "key": key, **manifest})

    # -- shards ---------------------------------------------------------------------------
    def shard_path(self, i: int) -> Path:
        return self.dir / f"shard-{i:07d}.npz"

    def write_shard(
        self, i: int, arrays: Mapping[str, np.ndarray], batch_hash: str, meta: Any
    ) -> None:
        """Atomically store the arrays computed from batch ``i`` (``meta`` is JSON-able)."""
        info = {"batch_hash": batch_hash, "keys": sorted(arrays), "meta": meta}
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
        A corrupt or stale shard is deleted (with a warning) and ``None`` returned, so the
        caller recomputes it. With ``header_only`` the arrays are not read (``{}``); with
        ``only`` just those of the shard's arrays are read (each still CRC-checked), names
        the shard lacks being skipped.
        """
        path = self.shard_path(i)
        if not path.exists():
            return None

        def check(info: dict[str, Any]) -> None:
            if not set(keys) <= set(info["keys"]):
                raise CacheCorruptError(f"layers {info['keys']} lack some of {sorted(keys)}")

        try:
            info, arrays = self.read_npz(path.name, check=check, only=only,
                                         header_only=header_only)
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

    def shard_indices(self) -> list[int]:
        out = []
        for p in self.dir.glob("shard-*.npz"):
            try:
                out.append(int(p.stem.split("-")[1]))
            except (IndexError, ValueError):  # pragma: no cover
                continue
        return sorted(out)

    def clear_shards(self) -> None:
        for i in self.shard_indices():
            self.shard_path(i).unlink(missing_ok=True)

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
        the final shape. Returns the result record.
        """
        files: dict[str, dict[str, Any]] = {}
        for j, (name, blocks) in enumerate(arrays.items()):
            fname = f"values-{j}.npy"
            shape = tuple(shapes[name])
            dtype = np.int64 if name.startswith("__") else np.float32

            def write(
                f: Any,
                blocks: Iterable[np.ndarray] = blocks,
                shape: tuple[int, ...] = shape,
                dtype: Any = dtype,
                name: str = name,
            ) -> None:
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

            h = hashlib.sha1()
            atomic_write(self.dir / fname, lambda f, write=write, h=h: write(_HashingWriter(f, h)))
            files[name] = {"file": fname, "shape": list(shape), "sha1": h.hexdigest()}
        record = {"format": FORMAT_VERSION, "key": self.key, "files": files, **info}
        _write_json(self.result_path, record)
        return record

    def read_result(self, verify: bool = True) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Open a complete result: ``(record, {name: memmap})``.

        Raises :class:`CacheCorruptError` when any file is missing, of the wrong shape or (with
        ``verify``) fails its SHA-1.
        """
        try:
            record = json.loads(self.result_path.read_text())
        except (OSError, ValueError) as e:
            raise CacheCorruptError(f"unreadable {self.result_path}: {e}") from e
        if record.get("format") != FORMAT_VERSION or record.get("key") != self.key:
            raise CacheCorruptError("result.json is from another cache format or key")
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
        return record, out

    def invalidate_result(self) -> None:
        self.result_path.unlink(missing_ok=True)
