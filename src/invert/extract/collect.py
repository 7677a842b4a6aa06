"""Activation extraction: run a PyTorch model over a data set and record named layers' units.

The main entry point is :func:`collect_activations`, which returns an :class:`ActivationSet`
(one layer) or a ``dict`` of them (several layers, one forward pass per batch). An
``ActivationSet`` is array-like with shape ``(n_samples, n_units)`` and feeds
:func:`invert.explain` directly.

Helpers for real data and models live here too: :func:`load_image_folder` /
:class:`ImageFolder` and :class:`ImageTransform` (PIL + numpy, no torchvision),
:func:`efficientnet_lite0` (offline EfficientNet-Lite0 ImageNet weights) and for text
:func:`encode_texts` and :func:`minilm_l6` (offline all-MiniLM-L6-v2).
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from . import cache as _cache
from .data import (
    IMAGE_EXTENSIONS,
    ImageFolder,
    ImageTransform,
    TokenizedTexts,
    UnreadableImageError,
    efficientnet_lite0,
    encode_texts,
    load_image_folder,
    minilm_l6,
)

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGE_EXTENSIONS",
    "ActivationSet",
    "ImageFolder",
    "ImageTransform",
    "TokenizedTexts",
    "UnreadableImageError",
    "collect_activations",
    "efficientnet_lite0",
    "encode_texts",
    "hooked_outputs",
    "load_image_folder",
    "minilm_l6",
]

Reduce = str | float | tuple[str, float] | None
Layout = Literal["auto", "dense", "channels", "tokens"]
_TOKEN_ONLY = ("last", "first", "tokens")


# =========================================================================================
# Result type
# =========================================================================================
@dataclass(eq=False)
class ActivationSet:
    """Activations of one layer's units over a data set: an ``(N, K)`` float32 array plus ids.

    Attributes
    ----------
    values : np.ndarray or np.memmap
        ``(n_samples, n_units)`` float32. A read-only memmap when it came from the cache.
    layer : str
        Layer name as in ``model.named_modules()`` (``""`` is the model output, e.g. logits) or
        the ``__name__`` of a callable unit source.
    unit_ids : list of str
        One per column. Channel / feature / direction index as a string (``"12"``); with
        ``reduce="none"`` on a feature map the position is appended: ``"12@3,4"`` is channel
        12 at row 3, column 4.
    sample_ids : list
        One per row. For images from a folder the relative path; for data with a
        ``sample_ids`` attribute those ids; else the running sample index (int). With
        ``reduce="tokens"`` a ``(document_id, position)`` tuple per token.
    reduction : str
        What was applied: ``"mean"``, ``"max"``, ``"quantile(0.9)"``, ``"none"`` (kept
        spatial, or a 2-D output that needs none), ``"last"``, ``"first"``, ``"tokens"``,
        prefixed by ``"directions+"`` when a direction matrix was applied.
    token_index : np.ndarray or None
        With ``reduce="tokens"``: ``(N, 2)`` int64 ``(document row, token position)`` per row,
        where document row indexes the input documents in order.
    cache_path : str or None
        The cache folder the values came from, if any.

    Examples
    --------
    >>> import numpy as np
    >>> a = ActivationSet(np.zeros((3, 2), np.float32), "fc", ["0", "1"], [0, 1, 2], "none")
    >>> a.shape, a.n_samples, a.n_units, np.asarray(a).dtype
    ((3, 2), 3, 2, dtype('float32'))
    """

    values: np.ndarray
    layer: str
    unit_ids: list[str]
    sample_ids: list[Any]
    reduction: str
    token_index: np.ndarray | None = None
    cache_path: str | None = None

    def __post_init__(self) -> None:
        if self.values.ndim != 2:
            raise ValueError(f"values: expected a 2-D (N, K) array, got shape {self.values.shape}")
        n, k = self.values.shape
        if len(self.unit_ids) != k:
            raise ValueError(f"unit_ids: expected {k} ids, got {len(self.unit_ids)}")
        if len(self.sample_ids) != n:
            raise ValueError(f"sample_ids: expected {n} ids, got {len(self.sample_ids)}")

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.values.shape[0]), int(self.values.shape[1]))

    @property
    def n_samples(self) -> int:
        return int(self.values.shape[0])

    @property
    def n_units(self) -> int:
        return int(self.values.shape[1])

    def __len__(self) -> int:
        return self.n_samples

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        v = self.values
        if dtype is not None and np.dtype(dtype) != v.dtype:
            if copy is False:
                raise ValueError(f"cannot convert {v.dtype} activations to {dtype} without a copy")
            return np.asarray(v, dtype=dtype)
        if copy:
            return np.array(v, copy=True)
        return np.asarray(v)

    def unit(self, unit_id: str | int) -> np.ndarray:
        """Column of one unit, by unit id (``"12"``) or column position (``12``)."""
        if isinstance(unit_id, str):
            try:
                unit_id = self.unit_ids.index(unit_id)
            except ValueError:
                close = difflib.get_close_matches(unit_id, self.unit_ids, n=5)
                raise KeyError(f"unit_id {unit_id!r} not found; closest: {close}") from None
        return np.asarray(self.values[:, unit_id])

    def to_torch(self) -> torch.Tensor:
        """The values as a CPU tensor (copies a read-only memmap)."""
        v = self.values
        return torch.from_numpy(np.array(v) if isinstance(v, np.memmap) else v)

    def __repr__(self) -> str:
        return (
            f"ActivationSet(layer={self.layer!r}, shape={self.shape}, "
            f"reduction={self.reduction!r}, cached={self.cache_path is not None})"
        )


# =========================================================================================
# Hooks
# =========================================================================================
class _StopForward(Exception):
    """Raised from a hook once every requested layer has been seen, to skip the rest."""


def _closest_hint(name: str, options: Iterable[str]) -> str:
    """``"; closest names: [...]"`` for an unknown layer name, or ``""`` when none is close."""
    close = difflib.get_close_matches(name, list(options), n=5, cutoff=0.4)
    return f"; closest names: {close}" if close else ""


def _resolve_modules(model: torch.nn.Module, names: Sequence[str]) -> dict[str, torch.nn.Module]:
    modules = dict(model.named_modules())
    out = {}
    for name in names:
        if name not in modules:
            hint = _closest_hint(name, modules)
            raise ValueError(
                f"layers: no module named {name!r} in {type(model).__name__} "
                f"({len(modules)} modules, see model.named_modules()){hint}"
            )
        out[name] = modules[name]
    return out


@contextlib.contextmanager
def hooked_outputs(
    model: torch.nn.Module,
    layers: Sequence[str],
    on_output: Callable[[str, Any], Any] | None = None,
    *,
    stop_early: bool = False,
) -> Iterator[dict[str, Any]]:
    """Context manager: forward hooks on named layers; removed on exit, even after an error.

    Yields a dict that, after each forward pass, maps layer name -> ``on_output(name, output)``
    (or the raw output) of the layer's *first* call in that pass. Clear it between passes.
    With ``stop_early=True`` the forward pass is cut short (by an internal exception that
    :func:`collect_activations` catches) once all layers have been recorded.

    Examples
    --------
    >>> import torch
    >>> m = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU())
    >>> with hooked_outputs(m, ["0"]) as out:
    ...     _ = m(torch.ones(1, 2))
    >>> out["0"].shape, len(m[0]._forward_hooks)
    (torch.Size([1, 3]), 0)
    """
    mods = _resolve_modules(model, layers)
    store: dict[str, Any] = {}
    wanted = len(set(layers))
    handles = []

    def make_hook(name: str) -> Callable[..., None]:
        def hook(_mod: torch.nn.Module, _inp: Any, out: Any) -> None:
            if name in store:
                return
            store[name] = on_output(name, out) if on_output is not None else out
            if stop_early and len(store) == wanted:
                raise _StopForward

        return hook

    try:
        for name, mod in mods.items():
            handles.append(mod.register_forward_hook(make_hook(name)))
        yield store
    finally:
        for h in handles:
            h.remove()


# =========================================================================================
# Unit computation (on device, inside the hook)
# =========================================================================================
@dataclass
class _Spec:
    reduce: str  # mean|max|quantile|none|last|first|tokens
    q: float | None
    layout: str
    select: int | str | Callable[[Any], Any] | None
    directions: dict[str, torch.Tensor]  # layer -> (D, K) on device


@dataclass
class _LayerInfo:
    reduction: str = ""
    unit_ids: list[str] = field(default_factory=list)


def _parse_reduce(reduce: Reduce) -> tuple[str, float | None]:
    if reduce is None:
        return "none", None
    if isinstance(reduce, bool):
        raise TypeError(f"reduce: expected a str, float or ('quantile', q), got {reduce!r}")
    if isinstance(reduce, float | int):
        q = float(reduce)
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"reduce: a quantile must lie in [0, 1], got {q}")
        return "quantile", q
    if isinstance(reduce, tuple):
        if len(reduce) == 2 and reduce[0] == "quantile" and isinstance(reduce[1], float | int):
            return _parse_reduce(float(reduce[1]))
        raise ValueError(f"reduce: expected ('quantile', q), got {reduce!r}")
    if isinstance(reduce, str):
        r = reduce.lower()
        if r in ("mean", "max", "none", "last", "first", "tokens"):
            return r, None
        if r.startswith("quantile(") and r.endswith(")"):
            return _parse_reduce(float(r[9:-1]))
        raise ValueError(
            "reduce: expected 'mean', 'max', 'none', 'last', 'first', 'tokens', a quantile "
            f"q in [0, 1] or ('quantile', q), got {reduce!r}"
        )
    raise TypeError(f"reduce: expected a str, float or ('quantile', q), got {type(reduce)}")


def _select_output(name: str, out: Any, select: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor) and select is None:
        return out
    if select is not None:
        if callable(select):
            out = select(out)
        elif isinstance(out, Mapping) or hasattr(out, "keys"):
            out = out[select] if isinstance(select, str) else tuple(out.values())[select]
        elif isinstance(out, list | tuple):
            out = out[select]
        if isinstance(out, torch.Tensor):
            return out
    kind = type(out).__name__
    keys = list(out.keys()) if hasattr(out, "keys") else None
    raise TypeError(
        f"layers: layer {name!r} outputs a {kind}"
        + (f" with keys {keys}" if keys else "")
        + ", not a tensor; pick a submodule that returns a tensor, or pass "
        "select=0 (tuple element), select='last_hidden_state' (mapping key) or a callable"
    )


def _quantile_lastdim(x: torch.Tensor, q: float) -> torch.Tensor:
    """Linear-interpolated quantile over the last dim (same as ``numpy.quantile``)."""
    n = x.shape[-1]
    s = torch.sort(x, dim=-1).values
    pos = q * (n - 1)
    lo = int(np.floor(pos))
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return s[..., lo] + (s[..., hi] - s[..., lo]) * frac


def _units(
    name: str, out: Any, spec: _Spec, mask: torch.Tensor | None, info: _LayerInfo
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Turn a layer output into ``(rows, K)`` float32 units (+ token index for 'tokens')."""
    x = _select_output(name, out, spec.select)
    if x.ndim < 2:
        x = x.reshape(-1, 1)
    layout = spec.layout
    if layout == "auto":
        layout = {2: "dense", 3: "tokens"}.get(x.ndim, "channels")
    if layout == "dense" and x.ndim != 2:
        raise ValueError(f"layout: 'dense' needs a 2-D output, layer {name!r} gave {x.ndim}-D")
    if layout == "tokens" and x.ndim != 3:
        raise ValueError(
            f"layout: 'tokens' needs a (batch, tokens, features) output, layer {name!r} "
            f"gave shape {tuple(x.shape)}"
        )
    red = spec.reduce
    if red in _TOKEN_ONLY and layout != "tokens":
        raise ValueError(
            f"reduce: {red!r} applies to token activations (batch, tokens, features); layer "
            f"{name!r} gave shape {tuple(x.shape)} (layout {layout!r})"
        )
    W = spec.directions.get(name)
    feat_axis = -1 if layout in ("dense", "tokens") else 1
    if W is not None:
        d = x.shape[feat_axis]
        if W.shape[0] != d:
            raise ValueError(
                f"directions: layer {name!r} has {d} features (axis {feat_axis} of output "
                f"shape {tuple(x.shape)}), but the direction matrix has shape "
                f"{tuple(W.shape)}; expected ({d}, K)"
            )
        x = x.to(W.dtype)
        if feat_axis == -1:
            x = x @ W
        else:
            x = torch.movedim(torch.movedim(x, 1, -1) @ W, -1, 1)
    x = x.float()
    tok_index = None
    ids: list[str] | None = None
    width = x.shape[1] if feat_axis == 1 else x.shape[-1]
    if layout == "dense":
        y, label, ids = x.clone(), "none", None  # clone: later in-place ops must not leak in
    elif layout == "channels":
        flat = x.flatten(2)
        if red == "mean":
            y = flat.mean(-1)
        elif red == "max":
            y = flat.amax(-1)
        elif red == "quantile":
            y = _quantile_lastdim(flat, float(spec.q))  # type: ignore[arg-type]
        else:  # none: keep spatial
            y = flat.flatten(1).clone()
        label = red if red != "quantile" else f"quantile({spec.q:g})"
        if red == "none" and not info.unit_ids:
            grid = np.stack(np.unravel_index(np.arange(flat.shape[-1]), x.shape[2:]), 1)
            pos = [",".join(map(str, p)) for p in grid]
            ids = [f"{c}@{p}" for c in range(width) for p in pos]
    else:  # tokens
        B, T, _ = x.shape
        m = mask.to(x.device).bool() if mask is not None else None
        if m is not None and m.shape != (B, T):
            raise ValueError(
                f"attention_mask: expected shape ({B}, {T}) to match layer {name!r}, got "
                f"{tuple(m.shape)}"
            )
        if red == "none":  # nothing is reduced: one row per (non-padding) token
            red = "tokens"
        if red == "mean":
            if m is None:
                y = x.mean(1)
            else:
                mf = m.unsqueeze(-1).to(x.dtype)
                y = (x * mf).sum(1) / mf.sum(1).clamp(min=1.0)
            red = "mean"
        elif red == "max":
            y = (x if m is None else x.masked_fill(~m.unsqueeze(-1), float("-inf"))).amax(1)
        elif red in ("last", "first"):
            if m is None:
                idx = torch.full((B,), T - 1 if red == "last" else 0, device=x.device)
            else:
                ar = torch.arange(T, device=x.device).expand(B, T)
                if red == "last":
                    idx = torch.where(m, ar, -1).amax(1).clamp(min=0)
                else:
                    idx = torch.where(m, ar, T).amin(1).clamp(max=T - 1)
            y = x[torch.arange(B, device=x.device), idx]
        elif red == "tokens":
            if m is None:
                m = torch.ones(B, T, dtype=torch.bool, device=x.device)
            y = x[m]
            tok_index = m.nonzero()  # row-major, same order as x[m]
        else:
            raise ValueError(
                f"reduce: {red!r} is not supported over tokens; use 'mean', 'max', 'last', "
                "'first' or 'tokens'"
            )
        label = red
    if W is not None:
        label = "directions+" + label
    if not info.unit_ids:
        info.reduction = label
        info.unit_ids = ids if ids is not None else [str(i) for i in range(y.shape[1])]
    elif y.shape[1] != len(info.unit_ids):
        raise ValueError(
            f"layer {name!r}: batch gave {y.shape[1]} units, earlier batches gave "
            f"{len(info.unit_ids)} "
            "(variable spatial size with reduce='none'?)"
        )
    return y, tok_index


# =========================================================================================
# Data adapters
# =========================================================================================
@dataclass
class _Batch:
    inputs: Any  # tensor or mapping of tensors, fed to the model
    n: int
    mask: torch.Tensor | None
    digest: str | None = None


def _rows(x: Any) -> int:
    if isinstance(x, torch.Tensor | np.ndarray):
        return int(x.shape[0]) if x.ndim else 1
    if isinstance(x, Mapping):
        for v in x.values():
            if isinstance(v, torch.Tensor | np.ndarray):
                return _rows(v)
    raise TypeError(
        "data: each batch must be a tensor, a mapping of tensors (e.g. tokenizer output) or a "
        f"tuple/list whose first element is one, got {type(x).__name__}"
    )


def _as_tensor(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    if isinstance(x, Mapping):
        return {k: _as_tensor(v) for k, v in x.items()}
    return x


def _split(batch: Any) -> tuple[Any, torch.Tensor | None]:
    """Model inputs and attention mask from a raw batch ((x, y) tuples keep x)."""
    if isinstance(batch, list | tuple) and batch:
        batch = batch[0]
    batch = _as_tensor(batch)
    if isinstance(batch, Mapping):
        batch = dict(batch)
        mask = batch.get("attention_mask")
        return batch, mask if isinstance(mask, torch.Tensor) else None
    if not isinstance(batch, torch.Tensor):
        raise TypeError(
            "data: each batch must be a tensor, a mapping of tensors (e.g. tokenizer output) "
            f"or a tuple/list whose first element is one, got {type(batch).__name__}"
        )
    return batch, None


@dataclass
class _Source:
    batches: Callable[[], Iterable[Any]]  # fresh iterator of raw batches
    fingerprint: Callable[[], str] | None  # content hash (computed on demand) or None: stream
    ids: Sequence[Any] | None  # sample ids in order, when known
    n: int | None
    description: str


def _slice_batches(obj: Any, n: int, batch_size: int) -> Callable[[], Iterator[Any]]:
    def gen() -> Iterator[Any]:
        for s in range(0, n, batch_size):
            if isinstance(obj, Mapping):
                yield {k: v[s : s + batch_size] for k, v in obj.items()}
            else:
                yield obj[s : s + batch_size]

    return gen


def _make_source(
    data: Any, batch_size: int, num_workers: int, transform: Any, pin: bool
) -> _Source:
    from torch.utils.data import DataLoader, Dataset, IterableDataset, SequentialSampler

    if isinstance(data, str | os.PathLike):
        data = load_image_folder(data, transform=transform)
    elif transform is not None:
        raise ValueError("transform: only used when data is a folder path; got it with "
                         f"data of type {type(data).__name__}")
    if isinstance(data, torch.Tensor | np.ndarray):
        if data.ndim == 0 or data.shape[0] == 0:
            raise ValueError(f"data: empty array/tensor of shape {tuple(data.shape)}")
        n = int(data.shape[0])
        return _Source(_slice_batches(data, n, batch_size),
                       lambda: _cache.Fingerprint().update(data).hexdigest(), None, n,
                       f"{type(data).__name__}{tuple(data.shape)}")
    if isinstance(data, Mapping):
        tens = {k: v for k, v in data.items() if isinstance(v, torch.Tensor | np.ndarray)}
        if not tens:
            raise TypeError("data: a mapping must hold tensors (e.g. input_ids, attention_mask)")
        ns = {k: int(v.shape[0]) for k, v in tens.items()}
        if len(set(ns.values())) != 1:
            raise ValueError(f"data: mapping tensors disagree on the number of rows: {ns}")
        n = next(iter(ns.values()))
        if n == 0:
            raise ValueError("data: the mapping holds zero rows")
        ids = getattr(data, "sample_ids", None)
        return _Source(_slice_batches(tens, n, batch_size),
                       lambda: _cache.Fingerprint().update(tens).hexdigest(), ids, n,
                       f"mapping{sorted(tens)}[{n}]")
    if isinstance(data, DataLoader):
        ds = data.dataset
        ids = None
        if getattr(ds, "sample_ids", None) is not None and isinstance(
            getattr(data, "sampler", None), SequentialSampler
        ):
            ids = list(ds.sample_ids)
        try:
            n = len(ds)  # type: ignore[arg-type]
        except TypeError:
            n = None
        return _Source(lambda: data, None, ids, n, f"DataLoader({type(ds).__name__})")
    if isinstance(data, Dataset) and not isinstance(data, IterableDataset) and hasattr(
        data, "__len__"
    ):
        n = len(data)  # type: ignore[arg-type]
        if n == 0:
            raise ValueError(f"data: the dataset {type(data).__name__} is empty (len 0)")
        fp = data.fingerprint if callable(getattr(data, "fingerprint", None)) else None
        loader = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                            pin_memory=pin, persistent_workers=False)
        ids = getattr(data, "sample_ids", None)
        return _Source(lambda: loader, fp, list(ids) if ids is not None else None, n,
                       f"{type(data).__name__}[{n}]")
    if isinstance(data, IterableDataset):
        loader = DataLoader(data, batch_size=batch_size, num_workers=num_workers, pin_memory=pin)
        return _Source(lambda: loader, None, None, None, type(data).__name__)
    if isinstance(data, Iterable):  # list of batches, generator, ...: hashed as it streams
        return _Source(lambda: data, None, None, None, type(data).__name__)
    raise TypeError(
        "data: expected a Dataset, DataLoader, tensor/array, mapping of tensors, iterable of "
        f"batches or a folder path, got {type(data).__name__}"
    )


class _Prefetcher:
    """Runs ``prepare(raw_batch)`` for upcoming batches in a background thread."""

    _END = object()

    def __init__(self, it: Iterable[Any], prepare: Callable[[Any], Any], depth: int = 2):
        self._q: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(it, prepare), name="invert-prefetch", daemon=True
        )
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, it: Iterable[Any], prepare: Callable[[Any], Any]) -> None:
        try:
            for raw in it:
                if not self._put(("ok", prepare(raw))):
                    return
            self._put(("end", None))
        except BaseException as e:  # noqa: BLE001 - forwarded to the consumer
            self._put(("err", e))

    def __iter__(self) -> Iterator[Any]:
        while True:
            kind, val = self._q.get()
            if kind == "ok":
                yield val
            elif kind == "end":
                return
            else:
                raise val

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._q.get_nowait()
        self._thread.join(timeout=5)


# =========================================================================================
# collect_activations
# =========================================================================================
def _default_forward(model: torch.nn.Module, inputs: Any) -> Any:
    if isinstance(inputs, Mapping):
        return model(**inputs)
    return model(inputs)


def _to_device(x: Any, device: torch.device) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, Mapping):
        return {k: _to_device(v, device) for k, v in x.items()}
    return x


def _pin(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x if x.is_pinned() or x.device.type != "cpu" else x.pin_memory()
    if isinstance(x, Mapping):
        return {k: _pin(v) for k, v in x.items()}
    return x


def _model_device(model: torch.nn.Module | None) -> torch.device:
    if model is not None:
        for p in model.parameters():
            return p.device
        for b in model.buffers():
            return b.device
    return torch.device("cpu")


def _progress(total: int | None, enabled: bool, desc: str) -> Any:
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="sample", leave=False)


def collect_activations(
    model: torch.nn.Module | None,
    data: Any,
    layers: str | Callable[[Any], Any] | Sequence[str | Callable[[Any], Any]],
    *,
    reduce: Reduce = "mean",
    batch_size: int = 64,
    device: str | torch.device | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    directions: Any = None,
    layout: Layout = "auto",
    select: int | str | Callable[[Any], Any] | None = None,
    forward: Callable[[torch.nn.Module, Any], Any] | None = None,
    transform: Callable[[Any], Any] | None = None,
    autocast: bool | torch.dtype = False,
    num_workers: int = 0,
    prefetch: int = 2,
    cache_key: str | None = None,
    eval_mode: bool = True,
    stop_early: bool = True,
    verify_cache: bool = True,
) -> ActivationSet | dict[str, ActivationSet]:
    """Run ``model`` over ``data`` and record the units of one or more named layers.

    Parameters
    ----------
    model : torch.nn.Module or None
        Any PyTorch module (torchvision, timm, Hugging Face and the offline EfficientNet-Lite
        models are all ``nn.Module``). ``None`` only when every layer is a callable.
    data
        One of: a folder path (images, loaded recursively with :func:`load_image_folder` and
        ``transform``); a map-style ``Dataset`` (batched in order by a ``DataLoader`` with
        ``num_workers``); a ``DataLoader``; a tensor / array ``(N, ...)``; a mapping of tensors
        such as tokenizer output (:func:`encode_texts`); or any iterable of batches. A batch is a
        tensor, a mapping of tensors (passed as ``model(**batch)``) or a tuple/list whose first
        element is the input (``(x, y)`` batches work).
    layers : str, callable or list of them
        Names from ``model.named_modules()`` (``""`` is the model output, e.g. logits). An
        unknown name raises ``ValueError`` listing the closest names. A callable
        ``fn(inputs) -> (batch, K)`` is a unit source of its own (e.g. a hand-written feature),
        named by its ``__name__``. A single str / callable returns one :class:`ActivationSet`; a
        list returns ``{name: ActivationSet}`` filled from one forward pass per batch.
    reduce : str, float, tuple or None
        Feature maps ``(N, C, *spatial)``: ``"mean"``, ``"max"``, a quantile ``q`` (float in
        [0, 1] or ``("quantile", q)``), or ``"none"``/``None`` to keep every position (units
        become channel x position, ids ``"c@y,x"``). Token activations ``(N, T, D)``:
        ``"mean"``, ``"max"`` (both ignore padding via ``attention_mask``), ``"last"`` /
        ``"first"`` (last / first non-padding token), or ``"tokens"`` (same as ``"none"``
        here: one row per non-padding token, with ``token_index`` and ``(doc_id, position)``
        sample ids).
        2-D outputs (linear layers, logits) are used as they are.
    batch_size : int
        Batch size for tensors, mappings, folders and datasets (not for DataLoaders or
        iterables, which batch themselves).
    device : str or torch.device, optional
        Where to run; the model is moved there. Default: the model's device.
    cache_dir : path, optional
        Cache folder. Results are keyed by a hash of the model weights and architecture,
        layers, reduction, directions, select/layout/forward, data content, transform,
        autocast dtype, batch size and the invert version. Per-batch shards make an
        interrupted run resume where it stopped; the result is a read-only memmap.
    progress : bool
        Show a tqdm progress bar when tqdm is installed.
    directions : array-like (D, K) or dict, optional
        Linear directions (SAE encoder, probe weights, concept vectors) applied to the
        feature axis of a layer's output before reduction: ``(N, D) @ (D, K)``; for feature
        maps per position over channels; for tokens per token. A dict maps layer -> matrix.
    layout : {"auto", "dense", "channels", "tokens"}
        How to read outputs: ``"auto"`` treats 2-D as dense, 3-D as tokens ``(N, T, D)`` and
        4-D+ as feature maps ``(N, C, ...)``. Use ``"channels"`` for conv1d ``(N, C, L)``.
    select : int, str or callable, optional
        Picks a tensor from a layer that returns a tuple / mapping / ModelOutput (e.g. ``0``
        or ``"last_hidden_state"``). Without it such a layer raises ``TypeError``.
    forward : callable, optional
        ``forward(model, inputs)`` runs one batch; default ``model(inputs)`` or
        ``model(**inputs)`` for mappings.
    transform : callable, optional
        Image transform when ``data`` is a folder path (default :class:`ImageTransform`).
    autocast : bool or torch.dtype
        Run the forward under ``torch.autocast`` (``True``: float16 on CUDA, bfloat16 on CPU).
        Activations are always stored as float32.
    num_workers : int
        DataLoader worker processes for Datasets / folders. Independently of this, batches are
        prepared by a background thread, so loading overlaps compute.
    prefetch : int
        How many prepared batches the background thread may hold.
    cache_key : str, optional
        Identifies the data set content in the cache key instead of hashing it. Without it,
        data that cannot be hashed up front (DataLoaders, iterables, Datasets without a
        ``fingerprint()`` method) is keyed by its first batch, and every batch is hashed as it
        streams and checked against the cached shard, so changed data is recomputed.
    eval_mode : bool
        Put the model in eval mode during extraction (restored afterwards).
    stop_early : bool
        Skip the rest of the forward pass once all requested layers have fired.
    verify_cache : bool
        Check the SHA-1 of cached arrays before using them (reads each file once).

    Returns
    -------
    ActivationSet or dict of str to ActivationSet

    Raises
    ------
    ValueError
        Unknown layer (with closest names), empty data, mismatched direction matrix, a
        reduction that does not fit the output, bad parameters.
    TypeError
        A layer outputs a tuple/mapping and no ``select`` was given; wrong parameter types.

    Notes
    -----
    A module called several times in one forward pass (a shared activation module) is
    recorded at its first call. Hooks are removed when extraction ends, also after an error.

    Examples
    --------
    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),
    ...                           torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
    ...                           torch.nn.Linear(4, 2))
    >>> x = torch.randn(10, 3, 8, 8)
    >>> acts = collect_activations(net, x, "1", reduce="max", progress=False)
    >>> acts.shape, acts.unit_ids, acts.reduction
    ((10, 4), ['0', '1', '2', '3'], 'max')
    >>> both = collect_activations(net, x, ["1", ""], progress=False)
    >>> sorted(both), both[""].shape
    (['', '1'], (10, 2))
    """
    # ---- validate at the boundary --------------------------------------------------------
    single = isinstance(layers, str) or callable(layers)
    layer_list = [layers] if single else list(layers)  # type: ignore[list-item]
    if not layer_list:
        raise ValueError("layers: expected a layer name, a callable or a non-empty list, got []")
    names: list[str] = []
    fns: dict[str, Callable[[Any], Any]] = {}
    for lay in layer_list:
        if isinstance(lay, str):
            names.append(lay)
        elif callable(lay):
            nm = getattr(lay, "__name__", type(lay).__name__)
            fns[nm] = lay
            names.append(nm)
        else:
            raise TypeError(f"layers: expected str or callable entries, got {type(lay).__name__}")
    if len(set(names)) != len(names):
        raise ValueError(f"layers: duplicate names in {names}")
    hooked = [n for n in names if n not in fns]
    if model is None and hooked:
        raise TypeError("model: expected a torch.nn.Module when layers are named, got None")
    if model is not None and not isinstance(model, torch.nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if model is not None and hooked:
        _resolve_modules(model, hooked)  # unknown names fail here, before any work
    red, q = _parse_reduce(reduce)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
    if layout not in ("auto", "dense", "channels", "tokens"):
        raise ValueError(
            f"layout: expected 'auto', 'dense', 'channels' or 'tokens', got {layout!r}"
        )
    if not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers: expected an int >= 0, got {num_workers!r}")
    dev = torch.device(device) if device is not None else _model_device(model)
    if model is not None and device is not None:
        model.to(dev)
    dirs: dict[str, torch.Tensor] = {}
    if directions is not None:
        raw = directions if isinstance(directions, Mapping) else {n: directions for n in hooked}
        for nm, W in raw.items():
            if nm not in names:
                raise ValueError(f"directions: key {nm!r} is not one of layers {names}")
            Wt = torch.as_tensor(np.asarray(W) if not isinstance(W, torch.Tensor) else W)
            if Wt.ndim != 2:
                raise ValueError(
                    f"directions: expected a 2-D (D, K) matrix, got shape {tuple(Wt.shape)}"
                )
            if not Wt.is_floating_point():
                Wt = Wt.float()
            dirs[nm] = Wt.detach().to(dev)
    ac_dtype: torch.dtype | None = None
    if autocast is True:
        ac_dtype = torch.float16 if dev.type == "cuda" else torch.bfloat16
    elif isinstance(autocast, torch.dtype):
        ac_dtype = autocast
    elif autocast is not False:
        raise TypeError(f"autocast: expected bool or torch.dtype, got {autocast!r}")
    spec = _Spec(red, q, layout, select, dirs)
    source = _make_source(data, batch_size, num_workers, transform, dev.type == "cuda")

    # ---- cache ---------------------------------------------------------------------------
    use_cache = cache_dir is not None
    run_fp = ""
    if use_cache:
        run_fp = _cache.Fingerprint().update(
            "invert", _cache.invert_version(),
            "model", _cache.fingerprint_module(model) if model is not None else None,
            "layers", [(n, _cache.fingerprint_callable(fns[n]) if n in fns else None)
                       for n in names],
            "reduce", red, q, "layout", layout,
            "select", _cache.fingerprint_callable(select) if callable(select) else select,
            "forward", _cache.fingerprint_callable(forward) if forward is not None else None,
            "directions", {k: v.cpu() for k, v in dirs.items()},
            "autocast", str(ac_dtype), "batch_size", batch_size, "dtype", "float32",
        ).hexdigest()
    data_fp: str | None = None
    if use_cache:
        if cache_key is not None:
            data_fp = f"key:{cache_key}"
        elif source.fingerprint is not None:
            data_fp = source.fingerprint()
    need_digest = use_cache and data_fp is None  # stream-hashed data
    keys = list(names)  # arrays every shard must hold (plus "__tok" when present)

    def open_store(dfp: str) -> _cache.ShardStore:
        key = _cache.Fingerprint().update(run_fp, "data", dfp).hexdigest()
        return _cache.ShardStore(cache_dir, key, {  # type: ignore[arg-type]
            "layers": names, "reduce": red, "q": q, "data": source.description,
            "data_fingerprint": dfp, "invert_version": _cache.invert_version()})

    store: _cache.ShardStore | None = None
    cached_result: tuple[dict[str, ActivationSet], list[str]] | None = None
    if use_cache and data_fp is not None:
        store = open_store(data_fp)
        cached_result = _try_cached_result(store, names, verify_cache)
        if cached_result is not None:
            return cached_result[0][names[0]] if single else cached_result[0]

    pin = dev.type == "cuda"

    def prepare(raw: Any) -> _Batch:  # runs in the prefetch thread
        inputs, mask = _split(raw)
        if pin:  # page-locked host memory: the copy to the GPU overlaps compute
            inputs = _pin(inputs)
        b = _Batch(inputs, _rows(inputs), mask)
        if need_digest:
            b.digest = _cache.batch_digest(inputs)
        return b

    results: dict[str, list[np.ndarray]] = {n: [] for n in names}
    infos = {n: _LayerInfo() for n in names}
    n_done = 0
    digests: list[str | None] = []
    recomputed = 0
    model_state = model.training if model is not None else False
    cur_mask: list[torch.Tensor | None] = [None]

    def on_output(name: str, out: Any) -> Any:
        return _units(name, out, spec, cur_mask[0], infos[name])

    fwd = forward or _default_forward
    bar = _progress(source.n, progress, "activations")
    pre = _Prefetcher(source.batches(), prepare, prefetch)
    stack = contextlib.ExitStack()
    try:
        if model is not None and eval_mode:
            model.eval()
        hooks: dict[str, Any] = {}
        if hooked:
            hooks = stack.enter_context(
                hooked_outputs(model, hooked, on_output,  # type: ignore[arg-type]
                               stop_early=stop_early and not fns)
            )
        for bi, batch in enumerate(pre):
            if store is None and use_cache:  # stream-hashed data: keyed by its first batch
                store = open_store("stream:" + str(batch.digest))
                cached_result = _try_cached_result(store, names, verify_cache)
            digests.append(batch.digest)
            got = None
            if store is not None:
                got = store.read_shard(bi, batch.digest if need_digest else None, keys,
                                       header_only=cached_result is not None)
            if got is not None:
                arrays, meta = got
                _restore_infos(infos, meta)
            else:
                recomputed += 1
                cached_result = None
                arrays = _run_batch(model, batch, hooks, fns, names, spec, fwd, dev, ac_dtype,
                                    cur_mask, infos)
                if "__tok" in arrays:
                    arrays["__tok"][:, 0] += n_done  # global document row
                if store is not None:
                    meta = {n: [infos[n].reduction, infos[n].unit_ids] for n in names}
                    store.write_shard(bi, arrays, str(batch.digest), meta)
            if store is None:
                for k, v in arrays.items():
                    results.setdefault(k, []).append(v)
            n_done += batch.n
            if bar is not None:
                bar.update(batch.n)
    finally:
        stack.close()
        pre.close()
        if bar is not None:
            bar.close()
        if model is not None and eval_mode:
            model.train(model_state)

    if n_done == 0:
        raise ValueError(f"data: no samples in {source.description} (empty data set)")
    ids = _sample_ids(source, n_done)
    if store is not None:
        logger.info("%d of %d batches computed, %d reused from cache %s", recomputed,
                    len(digests), len(digests) - recomputed, store.dir)
        if cached_result is not None and cached_result[1] == digests:
            logger.info("activations loaded from cache %s (all batches verified)", store.dir)
            out = cached_result[0]
        else:
            out = _consolidate(store, names, len(digests), ids, infos,
                               digests if need_digest else None)
    else:
        tok = np.concatenate(results["__tok"]) if "__tok" in results else None
        out = {n: _make_set(np.concatenate(results[n]), n, infos[n], ids, tok, None)
               for n in names}
    return out[names[0]] if single else out


def _restore_infos(infos: dict[str, _LayerInfo], meta: Mapping[str, Any]) -> None:
    for n, (reduction, unit_ids) in meta.items():
        if not infos[n].unit_ids:
            infos[n].reduction = reduction
            infos[n].unit_ids = list(unit_ids)


def _run_batch(
    model: torch.nn.Module | None,
    batch: _Batch,
    hooks: dict[str, Any],
    fns: Mapping[str, Callable[[Any], Any]],
    names: Sequence[str],
    spec: _Spec,
    fwd: Callable[[torch.nn.Module, Any], Any],
    dev: torch.device,
    ac_dtype: torch.dtype | None,
    cur_mask: list[torch.Tensor | None],
    infos: dict[str, _LayerInfo],
) -> dict[str, np.ndarray]:
    inputs = _to_device(batch.inputs, dev)
    cur_mask[0] = _to_device(batch.mask, dev) if batch.mask is not None else None
    ac = (torch.autocast(dev.type, dtype=ac_dtype) if ac_dtype is not None
          else contextlib.nullcontext())
    hooks.clear()
    with torch.inference_mode(), ac:
        if len(fns) < len(names):
            try:
                fwd(model, inputs)  # type: ignore[arg-type]
            except _StopForward:
                pass
        fn_out = {n: _units(n, _as_tensor(f(inputs)), spec, cur_mask[0], infos[n])
                  for n, f in fns.items()}
    arrays: dict[str, np.ndarray] = {}
    tok = None
    for n in names:
        got = fn_out.get(n) if n in fns else hooks.get(n)
        if got is None:
            raise RuntimeError(
                f"layers: layer {n!r} was not called during the forward pass (is it used by "
                "model.forward for these inputs?)"
            )
        y, t = got
        arrays[n] = y.detach().float().cpu().numpy()
        if t is not None:
            tok = t
    rows = {n: a.shape[0] for n, a in arrays.items()}
    if len(set(rows.values())) != 1:
        raise ValueError(
            f"layers: per-token and per-sample outputs cannot be mixed in one call; rows per "
            f"layer in this batch: {rows}. Extract token layers in a separate call."
        )
    if tok is not None:
        arrays["__tok"] = tok.cpu().numpy().astype(np.int64)
    return arrays


def _sample_ids(source: _Source, n: int) -> list[Any]:
    if source.ids is not None and len(source.ids) == n:
        return list(source.ids)
    return list(range(n))


def _make_set(
    vals: np.ndarray,
    name: str,
    info: _LayerInfo,
    doc_ids: list[Any],
    tok: np.ndarray | None,
    path: str | None,
) -> ActivationSet:
    if tok is not None:
        sample_ids: list[Any] = [(doc_ids[int(d)], int(p)) for d, p in tok]
    else:
        sample_ids = doc_ids
    return ActivationSet(vals, name, list(info.unit_ids), sample_ids, info.reduction,
                         token_index=tok, cache_path=path)


def _consolidate(
    store: _cache.ShardStore,
    names: Sequence[str],
    n_batches: int,
    ids: list[Any],
    infos: dict[str, _LayerInfo],
    digests: list[str | None] | None,
) -> dict[str, ActivationSet]:
    """Stream the shards of batches ``0..n_batches-1`` into consolidated ``.npy`` files."""
    keys = list(names)
    rows = 0
    has_tok = False
    for i in range(n_batches):
        got = store.read_shard(i, None, keys, only=[keys[0], "__tok"])
        if got is None:
            raise _cache.CacheCorruptError(
                f"cache shard {i} of {store.dir} vanished or broke during the run; rerun"
            )
        rows += int(got[0][keys[0]].shape[0])
        has_tok = "__tok" in got[0]
    shapes: dict[str, tuple[int, ...]] = {n: (rows, len(infos[n].unit_ids)) for n in names}
    if has_tok:
        keys = [*keys, "__tok"]
        shapes["__tok"] = (rows, 2)

    def blocks(k: str) -> Iterator[np.ndarray]:
        for i in range(n_batches):
            got = store.read_shard(i, None, keys, only=[k])
            if got is None:
                raise _cache.CacheCorruptError(f"cache shard {i} of {store.dir} broke")
            yield got[0][k]

    info = {
        "layers": {n: {"reduction": infos[n].reduction, "unit_ids": infos[n].unit_ids}
                   for n in names},
        "sample_ids": _jsonable_ids(ids),
        "digests": digests or [],
    }
    store.write_result({k: blocks(k) for k in keys}, shapes, info)
    if digests is None:  # data with a content fingerprint: shards are no longer needed
        store.clear_shards()
    record, arrs = store.read_result(verify=False)
    return _sets_from_record(store, record, arrs)


def _jsonable_ids(ids: list[Any]) -> list[Any]:
    out = []
    for i in ids:
        if isinstance(i, np.generic):
            i = i.item()
        out.append(i if isinstance(i, str | int | float) else str(i))
    return out


def _sets_from_record(
    store: _cache.ShardStore, record: Mapping[str, Any], arrs: Mapping[str, np.ndarray]
) -> dict[str, ActivationSet]:
    tok = arrs.get("__tok")
    tok = np.asarray(tok) if tok is not None else None
    out = {}
    for n, li in record["layers"].items():
        info = _LayerInfo(li["reduction"], list(li["unit_ids"]))
        out[n] = _make_set(arrs[n], n, info, list(record["sample_ids"]), tok, str(store.dir))
    return out


def _try_cached_result(
    store: _cache.ShardStore, names: Sequence[str], verify: bool
) -> tuple[dict[str, ActivationSet], list[str]] | None:
    if not store.result_path.exists():
        return None
    try:
        record, arrs = store.read_result(verify=verify)
        if list(record["layers"]) != list(names):
            raise _cache.CacheCorruptError("layer list differs")
    except (_cache.CacheCorruptError, KeyError) as e:
        logger.warning("cache %s is corrupt (%s); rebuilding it", store.dir, e)
        store.invalidate_result()
        return None
    logger.info("activations found in cache %s", store.dir)
    return _sets_from_record(store, record, arrs), list(record.get("digests", []))
