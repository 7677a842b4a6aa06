"""ONNX Runtime unit sources: run a PyTorch model through ONNX Runtime on CPU.

:func:`onnx_unit_source` exports a ``torch.nn.Module`` to ONNX with the TorchScript exporter
(``torch.onnx.export(..., dynamo=False)``, which needs the ``onnx`` package), marks the
requested layers' outputs as graph outputs, opens the graph in an ONNX Runtime
``InferenceSession`` and returns *unit sources*: callables ``fn(inputs) -> tensor`` that
:func:`invert.collect_activations` accepts in ``layers`` with ``model=None``::

    model, transform = efficientnet_lite0()
    x = torch.randn(1, 3, 224, 224)
    logits = onnx_unit_source(model, x, "", intra_op_threads=2)
    acts = collect_activations(None, "photos/", logits, transform=transform)

Several layers share one session and one run per batch::

    srcs = onnx_unit_source(model, x, ["_blocks.15", "_conv_head", ""])
    acts = collect_activations(None, images, srcs)  # {"_blocks.15": ..., "": ...}

Each source carries an ``invert_cache_key`` built from the model's weights fingerprint
(:func:`invert.extract.cache.fingerprint_module`), the layer, the opset, the providers and the
ONNX Runtime version, so ``cache_dir=`` works as with hooked layers.

Needs ``pip install onnxruntime onnx`` (imported lazily).
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._validate import InvalidParameterError, bad, check_int
from . import cache as _cache
from .hooks import hooked_outputs, resolve_modules

__all__ = ["OnnxSession", "OnnxUnitSource", "onnx_unit_source"]

DEFAULT_OPSET = 17


def _import_ort() -> Any:
    try:
        import onnxruntime
    except ImportError as e:
        raise ImportError(
            "onnx_unit_source() needs ONNX Runtime and the ONNX exporter's package: "
            "pip install onnxruntime onnx"
        ) from e
    return onnxruntime


def _check_onnx() -> None:
    try:
        import onnx  # noqa: F401
    except ImportError as e:
        raise ImportError(
            "onnx_unit_source() exports with torch.onnx.export, which needs the onnx package: "
            "pip install onnx onnxruntime"
        ) from e


class _Tap(torch.nn.Module):
    """Wraps a model so its forward returns the requested layers' outputs, in order.

    Forward hooks record the first output of each requested module during the (traced)
    forward pass; each is cloned at once, so a later in-place op (``ReLU(inplace=True)``)
    does not change the recorded value, matching what hooked extraction sees.
    """

    def __init__(self, model: torch.nn.Module, layers: Sequence[str], keys: Sequence[str] | None):
        super().__init__()
        self.model = model
        self.layers = list(layers)
        self.keys = list(keys) if keys is not None else None

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with hooked_outputs(
            self.model,
            [n for n in self.layers if n],
            lambda _n, o: o.clone() if isinstance(o, torch.Tensor) else o,
        ) as store:
            if self.keys is not None:
                final = self.model(**dict(zip(self.keys, args, strict=True)))
            else:
                final = self.model(*args)
        store.setdefault("", final)
        outs = []
        for name in self.layers:
            if name not in store:
                raise InvalidParameterError(
                    f"layers: layer {name!r} was not called during the forward pass of the "
                    "example input (is it used by model.forward?)"
                )
            t = store[name]
            if not isinstance(t, torch.Tensor):
                raise InvalidParameterError(
                    f"layers: layer {name!r} outputs a {type(t).__name__}, not a tensor; the "
                    "ONNX path supports tensor outputs only: pick a submodule that returns one"
                )
            outs.append(t)
        return tuple(outs)


def _as_inputs(example_input: Any) -> tuple[list[str] | None, list[torch.Tensor]]:
    """``(keys or None, tensors)`` from a tensor, a tuple of tensors or a mapping of them."""
    if isinstance(example_input, np.ndarray):
        example_input = torch.from_numpy(np.ascontiguousarray(example_input))
    if isinstance(example_input, torch.Tensor):
        return None, [example_input]
    if isinstance(example_input, Mapping) and example_input:
        keys = [str(k) for k in example_input]
        vals = [torch.as_tensor(v) for v in example_input.values()]
        return keys, vals
    if isinstance(example_input, list | tuple) and example_input and all(
        isinstance(v, torch.Tensor | np.ndarray) for v in example_input
    ):
        return None, [torch.as_tensor(v) for v in example_input]
    raise bad("example_input", "a tensor, a tuple of tensors or a mapping of tensors with a "
              "batch axis first", example_input)


class OnnxSession:
    """One exported graph in one ONNX Runtime session; usually made by :func:`onnx_unit_source`.

    Parameters
    ----------
    onnx_model : bytes or path
        The serialized graph or a ``.onnx`` file.
    layers : sequence of str
        Layer name of each graph output, in order.
    input_names : sequence of str
        Graph input names, in the model's positional order.
    input_keys : sequence of str or None
        For mapping inputs (tokenizer output), the mapping keys fed to each graph input.
    input_dtypes : sequence of numpy dtypes
        What each graph input expects; batches are cast to it.
    providers : sequence of str
        ONNX Runtime execution providers, in order of preference.
    intra_op_threads : int or None
        Threads per operator (``None``: ONNX Runtime's default, all cores).
    cache_base : str
        Fingerprint of the model, export settings and runtime; the per-layer cache keys
        extend it.
    """

    def __init__(
        self,
        onnx_model: bytes | str | os.PathLike[str],
        layers: Sequence[str],
        input_names: Sequence[str],
        input_keys: Sequence[str] | None,
        input_dtypes: Sequence[np.dtype],
        providers: Sequence[str],
        intra_op_threads: int | None,
        cache_base: str,
    ) -> None:
        ort = _import_ort()
        opts = ort.SessionOptions()
        if intra_op_threads is not None:
            opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        src = onnx_model if isinstance(onnx_model, bytes) else str(onnx_model)
        self.session = ort.InferenceSession(src, sess_options=opts, providers=list(providers))
        self.layers = list(layers)
        self.input_names = list(input_names)
        self.input_keys = list(input_keys) if input_keys is not None else None
        self.input_dtypes = list(input_dtypes)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.cache_base = cache_base
        self._last_in: Any = None
        self._last_out: list[np.ndarray] | None = None

    def _feed(self, inputs: Any) -> dict[str, np.ndarray]:
        if isinstance(inputs, list | tuple) and self.input_keys is None and len(
            self.input_names
        ) > 1:
            vals = list(inputs)
        elif isinstance(inputs, Mapping):
            if self.input_keys is None:
                raise bad("inputs", "a tensor (the model was exported with positional "
                          "inputs)", f"a mapping with keys {list(inputs)}", raw=True)
            missing = [k for k in self.input_keys if k not in inputs]
            if missing:
                raise bad("inputs", f"a mapping with keys {self.input_keys}",
                          f"keys {list(inputs)}", raw=True)
            vals = [inputs[k] for k in self.input_keys]
        else:
            vals = [inputs]
        if len(vals) != len(self.input_names):
            raise bad("inputs", f"{len(self.input_names)} tensors", len(vals))
        feed = {}
        for name, v, dt in zip(self.input_names, vals, self.input_dtypes, strict=True):
            if isinstance(v, torch.Tensor):
                v = v.detach().cpu().numpy()
            feed[name] = np.ascontiguousarray(v, dtype=dt)
        return feed

    def run(self, inputs: Any) -> list[np.ndarray]:
        """All graph outputs for one batch (memoized for the last batch object).

        :func:`invert.collect_activations` calls every unit source with the same batch object,
        so several layers of one session cost one run per batch.
        """
        if self._last_out is not None and self._last_in is inputs:
            return self._last_out
        feed = self._feed(inputs)
        try:
            out = self.session.run(self.output_names, feed)
        except Exception as e:  # onnxruntime raises its own exception types
            shapes = {k: tuple(v.shape) for k, v in feed.items()}
            want = {i.name: i.shape for i in self.session.get_inputs()}
            raise RuntimeError(
                f"ONNX Runtime failed on inputs of shapes {shapes}; the graph expects {want} "
                f"(only the batch axis is dynamic): {e}"
            ) from e
        self._last_in, self._last_out = inputs, out
        return out

    def source(self, layer: str) -> OnnxUnitSource:
        """The unit source for one of :attr:`layers`."""
        if layer not in self.layers:
            raise bad("layer", f"one of {self.layers}", layer)
        return OnnxUnitSource(self, layer)


class OnnxUnitSource:
    """Callable unit source: ``source(inputs) -> torch.Tensor`` for one layer of an ONNX graph.

    Its ``__name__`` is the layer name (``""`` for the model output), so the
    :class:`~invert.extract.ActivationSet` it yields is named like the hooked layer would be.

    Attributes
    ----------
    session : OnnxSession
        The shared session (one run per batch for all its sources).
    layer : str
        Layer name.
    invert_cache_key : str
        Cache key: model weights fingerprint, layer, opset, providers, runtime version.
    """

    def __init__(self, session: OnnxSession, layer: str) -> None:
        self.session = session
        self.layer = layer
        self.__name__ = layer
        self.invert_cache_key = (
            _cache.Fingerprint().update(session.cache_base, "layer", layer).hexdigest()
        )

    def __call__(self, inputs: Any) -> torch.Tensor:
        out = self.session.run(inputs)[self.session.layers.index(self.layer)]
        return torch.from_numpy(out)

    def __repr__(self) -> str:
        return f"OnnxUnitSource(layer={self.layer!r}, outputs={self.session.output_names})"


def _check_layers(model: torch.nn.Module, layers: Any) -> tuple[bool, list[str]]:
    if not isinstance(model, torch.nn.Module):
        raise bad("model", "a torch.nn.Module", type(model).__name__, raw=True)
    single = isinstance(layers, str)
    names = [layers] if single else layers
    if not isinstance(names, list | tuple) or not names or not all(
        isinstance(n, str) for n in names
    ):
        raise bad("layers", "a layer name or a non-empty list of names from "
                  "model.named_modules() ('' is the model output)", layers)
    if len(set(names)) != len(names):
        raise bad("layers", "distinct names", list(names))
    resolve_modules(model, names)  # an unknown name raises, listing the closest ones
    return single, list(names)


def _check_runtime(providers: Any, intra_op_threads: Any, opset: Any) -> Any:
    """The ``onnxruntime`` module, once the runtime arguments and the exporter are checked."""
    if isinstance(providers, str) or not isinstance(providers, list | tuple) or not providers:
        raise bad("providers", "a non-empty sequence of ONNX Runtime provider names", providers)
    if intra_op_threads is not None and (
        isinstance(intra_op_threads, bool) or not isinstance(intra_op_threads, int)
        or intra_op_threads < 1
    ):
        raise bad("intra_op_threads", "a positive int or None", intra_op_threads)
    check_int("opset", opset, minimum=9, maximum=25)
    ort = _import_ort()
    available = ort.get_available_providers()
    unknown = [p for p in providers if p not in available]
    if unknown:
        raise bad("providers", f"names from {available}", list(providers))
    _check_onnx()
    return ort


def _export(model: torch.nn.Module, tap: _Tap, tensors: list[torch.Tensor],
            in_names: list[str], n_out: int, opset: int,
            path: str | os.PathLike[str] | None) -> bytes | str:
    """Trace ``tap`` to ONNX (model in eval mode, restored after); the bytes or the file path."""
    out_names = [f"out_{i}" for i in range(n_out)]
    dyn = {n: {0: "batch"} for n in [*in_names, *out_names]}
    was_training = model.training
    buf: Any = io.BytesIO() if path is None else str(path)
    try:
        model.eval()
        with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                tap, tuple(tensors), buf, dynamo=False, opset_version=opset,
                input_names=in_names, output_names=out_names, dynamic_axes=dyn,
                do_constant_folding=True,
            )
    finally:
        model.train(was_training)
    return buf.getvalue() if path is None else str(Path(path))


def onnx_unit_source(
    model: torch.nn.Module,
    example_input: Any,
    layers: str | Sequence[str] = "",
    *,
    path: str | os.PathLike[str] | None = None,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    intra_op_threads: int | None = None,
    opset: int = DEFAULT_OPSET,
) -> OnnxUnitSource | list[OnnxUnitSource]:
    """Export ``model`` to ONNX and return ONNX Runtime unit sources for ``collect_activations``.

    The model is traced once on ``example_input`` (in eval mode, without gradients) by the
    TorchScript exporter ``torch.onnx.export(..., dynamo=False)``. The requested layers'
    outputs, taken by forward hooks during the trace (first call of each module, cloned
    before any later in-place op), become graph outputs. Only the batch axis (axis 0 of each
    input and output) is dynamic: later batches must match the example input's other
    dimensions. Data-dependent Python control flow is frozen at its traced path.

    Parameters
    ----------
    model : torch.nn.Module
        The PyTorch model. It is not modified (its train/eval mode is restored).
    example_input : tensor, tuple of tensors or mapping of tensors
        One batch as ``collect_activations`` would feed it (any batch size; the batch axis
        first). A mapping (tokenizer output) is passed as ``model(**inputs)``.
    layers : str or sequence of str
        Names from ``model.named_modules()``; ``""`` (default) is the model output (e.g.
        logits). Each must return a tensor. An unknown name raises ``ValueError`` listing the
        closest names.
    path : path, optional
        Where to write the ``.onnx`` file (kept for reuse or inspection). Default: in memory.
    providers : sequence of str
        ONNX Runtime execution providers (default CPU only).
    intra_op_threads : int, optional
        ONNX Runtime threads per operator; ``None`` uses its default (one per core).
    opset : int
        ONNX opset version for the export (default 17).

    Returns
    -------
    OnnxUnitSource or list of OnnxUnitSource
        One callable for a single layer name, a list (one per layer, sharing one session
        and one run per batch) for a sequence. Pass it as ``layers`` with ``model=None``.

    Raises
    ------
    ImportError
        When ``onnxruntime`` or ``onnx`` is missing.
    ValueError, TypeError
        For unknown layers, layers whose output is not a tensor, or bad arguments.

    Examples
    --------
    >>> import torch
    >>> from invert.extract import collect_activations
    >>> m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    >>> x = torch.randn(10, 4)
    >>> src = onnx_unit_source(m, x[:2], ["0", ""])  # doctest: +SKIP
    >>> acts = collect_activations(None, x, src, progress=False)  # doctest: +SKIP
    >>> acts["0"].shape, acts[""].shape  # doctest: +SKIP
    ((10, 3), (10, 2))
    """
    single, names = _check_layers(model, layers)
    ort = _check_runtime(providers, intra_op_threads, opset)
    keys, tensors = _as_inputs(example_input)
    if keys is not None:
        in_names = [k.replace(".", "_") for k in keys]
    else:
        in_names = ["input"] if len(tensors) == 1 else [f"input_{i}" for i in range(len(tensors))]
    onnx_model = _export(model, _Tap(model, names, keys), tensors, in_names, len(names), opset,
                         path)
    cache_base = _cache.Fingerprint().update(
        "onnx", "model", _cache.fingerprint_module(model),
        "inputs", [(n, str(t.dtype), tuple(t.shape[1:])) for n, t in zip(in_names, tensors,
                                                                          strict=True)],
        "keys", keys, "exporter", "torchscript", "opset", opset,
        "providers", list(providers), "onnxruntime", ort.__version__,
    ).hexdigest()
    dtypes = [np.dtype(t.numpy().dtype) if t.dtype != torch.bfloat16 else np.dtype("f4")
              for t in tensors]
    session = OnnxSession(onnx_model, names, in_names, keys, dtypes, providers,
                          intra_op_threads, cache_base)
    sources = [session.source(n) for n in names]
    return sources[0] if single else sources
