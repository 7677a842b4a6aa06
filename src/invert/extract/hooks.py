"""Forward hooks on named layers, and the one unknown-layer error (with the closest names).

Both the PyTorch path (:func:`invert.collect_activations`) and the ONNX path
(:func:`invert.extract.onnx_unit_source`) resolve layer names through :func:`resolve_modules`,
so an unknown name reads the same in both.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch

from .._validate import InvalidParameterError, bad

__all__ = ["hooked_outputs", "resolve_modules", "unknown_layer"]


class StopForward(Exception):
    """Raised from a hook once every requested layer has been seen, to skip the rest."""


def unknown_layer(model: torch.nn.Module, name: str, known: Iterable[str]) -> InvalidParameterError:
    """The error for a layer name that ``model.named_modules()`` lacks, naming the closest ones.

    Examples
    --------
    >>> m = torch.nn.Sequential(torch.nn.Linear(2, 2))
    >>> print(unknown_layer(m, "O", [n for n, _ in m.named_modules()]))  # doctest: +ELLIPSIS
    layers: no module named 'O' in Sequential (2 modules); layers: expected names from ...
    """
    options = list(known)
    close = difflib.get_close_matches(name, options, n=5, cutoff=0.4)
    hint = f"; closest names: {close}" if close else ""
    where = f"no module named {name!r} in {type(model).__name__} ({len(options)} modules)"
    template = bad("layers", "names from model.named_modules() ('' is the model output)", name)
    return InvalidParameterError(f"layers: {where}; {template}{hint}")


def resolve_modules(model: torch.nn.Module, names: Sequence[str]) -> dict[str, torch.nn.Module]:
    """``{name: module}`` for names from ``model.named_modules()``; an unknown name raises."""
    modules = dict(model.named_modules())
    for name in names:
        if name not in modules:
            raise unknown_layer(model, name, modules)
    return {name: modules[name] for name in names}


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
    mods = resolve_modules(model, layers)
    store: dict[str, Any] = {}
    wanted = len(set(layers))
    handles = []

    def make_hook(name: str) -> Callable[..., None]:
        def hook(_mod: torch.nn.Module, _inp: Any, out: Any) -> None:
            if name in store:
                return
            store[name] = on_output(name, out) if on_output is not None else out
            if stop_early and len(store) == wanted:
                raise StopForward

        return hook

    try:
        for name, mod in mods.items():
            handles.append(mod.register_forward_hook(make_hook(name)))
        yield store
    finally:
        for h in handles:
            h.remove()
