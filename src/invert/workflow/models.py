"""Models for ``invert explain --model``: the built-in ones and ``module:function``, their
layer names checked before anything runs, and the engine that runs them (ONNX Runtime on the
CPU when it is installed, as the demo does; PyTorch otherwise)."""

from __future__ import annotations

import difflib
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..concepts import imagenet_hierarchy
from ..extract import efficientnet_lite0, onnx_unit_source
from .errors import CommandError

__all__ = ["BUILTIN_MODELS", "ENGINES", "load_model", "check_layers", "choose_engine",
           "has_onnxruntime", "unit_sources", "imagenet_class_names", "builtin_unit_labels",
           "INSTALL_ONNX"]

BUILTIN_MODELS = ("efficientnet-lite0",)
#: The logits layers of the built-in models (``""`` is the model output).
BUILTIN_LOGITS = {"efficientnet-lite0": ("", "_fc")}
ENGINES = ("auto", "torch", "onnx")
INSTALL_ONNX = "pip install onnxruntime onnx"


def load_model(spec: str) -> tuple[torch.nn.Module, Any]:
    """``(model, transform or None)`` from a built-in name or a ``module:function`` path."""
    if spec in BUILTIN_MODELS:
        return efficientnet_lite0()
    if ":" not in spec:
        raise CommandError(
            f"--model: expected one of {list(BUILTIN_MODELS)} or 'module:function', got {spec!r}"
        )
    mod_name, fn_name = spec.split(":", 1)
    added = False
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
        added = True
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as err:
        raise CommandError(f"--model: cannot import module {mod_name!r}: {err}") from err
    finally:
        if added:
            sys.path.remove(str(Path.cwd()))
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise CommandError(f"--model: {mod_name!r} has no function {fn_name!r}")
    obj = fn()
    model, transform = (obj if isinstance(obj, tuple) else (obj, None))[:2]
    if not isinstance(model, torch.nn.Module):
        raise CommandError(
            f"--model: {spec} returned {type(model).__name__}, expected a torch.nn.Module "
            "(or a (module, transform) tuple)"
        )
    return model, transform


def check_layers(model: torch.nn.Module, layers: Sequence[str]) -> None:
    """Every ``--layer`` names a module of ``model`` (``""``: the output)."""
    names = dict(model.named_modules())
    for layer in layers:
        if layer not in names:
            close = difflib.get_close_matches(layer, [n for n in names if n], n=5, cutoff=0.4)
            hint = f"; closest names: {close}" if close else ""
            raise CommandError(
                f"--layer: no module named {layer!r} in {type(model).__name__} "
                f"({len(names)} modules, see model.named_modules()){hint}"
            )


def has_onnxruntime() -> bool:
    """Whether ONNX Runtime and the ONNX exporter's package are installed."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def choose_engine(engine: str, model: str, device: str | None) -> str:
    """``"onnx"`` or ``"torch"`` for ``--engine`` (``auto``: ONNX Runtime for a built-in
    model on the CPU when it is installed, else PyTorch)."""
    on_cpu = device in (None, "cpu")
    if engine == "torch":
        return "torch"
    if engine == "onnx":
        if not has_onnxruntime():
            raise CommandError(f"--engine onnx needs ONNX Runtime: {INSTALL_ONNX}")
        if not on_cpu:
            raise CommandError(f"--engine onnx runs on the CPU; with --device {device} use "
                               "--engine torch")
        return "onnx"
    return "onnx" if model in BUILTIN_MODELS and on_cpu and has_onnxruntime() else "torch"


def unit_sources(model: torch.nn.Module, example: torch.Tensor, layers: Sequence[str]
                 ) -> list[Any]:
    """ONNX Runtime unit sources of ``layers`` (one session, one run per batch), for
    :func:`invert.collect_activations` with ``model=None``."""
    try:
        return list(onnx_unit_source(model, example.unsqueeze(0), list(layers)))
    except ImportError as err:
        raise CommandError(f"--engine onnx needs ONNX Runtime: {INSTALL_ONNX}") from err


def imagenet_class_names() -> list[str]:
    """The 1,000 ImageNet class names (synset names such as ``tench.n.01``), in class order."""
    return list(imagenet_hierarchy().names[:1000])


def builtin_unit_labels(model: str | None, layer: str, n_units: int) -> list[str] | None:
    """Class names of a built-in model's logits (``--layer ""`` or its logits layer)."""
    if model in BUILTIN_LOGITS and layer in BUILTIN_LOGITS[model] and n_units == 1000:
        return imagenet_class_names()
    return None
