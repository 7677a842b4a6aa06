"""Sparse-autoencoder encoders as unit sources: the features as they fire, not ``x @ W``.

An :class:`SAE` computes ``f = act((x - b_dec) @ W_enc + b_enc)`` on a layer's feature axis,
with ``act`` one of :data:`ACTIVATIONS`:

``"relu"``
    ``max(0, pre)`` (SAELens ``standard``).
``"topk"``
    the ``k`` largest pre-activations of each row kept, through a ReLU, all others 0
    (SAELens ``topk``).
``"jumprelu"``
    ``max(0, pre) * (pre > threshold)``, one threshold per feature (SAELens ``jumprelu``).

``b_dec`` (the pre-encoder bias) is subtracted only when given. Build one from arrays, or from
a local SAELens-style folder with :meth:`SAE.from_folder` (``cfg.json`` plus
``sae_weights.safetensors``, read with ``safetensors``: never pickle). Pass it to
:func:`invert.collect_activations` as ``directions=sae`` (or ``{layer: sae}``), or
``sae.at(layer)`` among the ``layers``: the units are then the features, named by
``names`` (default ``"0"`` .. ``"K-1"``), with exact zeros where they do not fire (the search
ranks them as ties).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._validate import InvalidParameterError, bad, check_choice, check_int

__all__ = ["ACTIVATIONS", "SAE"]

#: The activations an :class:`SAE` takes.
ACTIVATIONS: tuple[str, ...] = ("relu", "topk", "jumprelu")

#: SAELens ``architecture`` (or ``activation_fn_str``) -> our activation.
_ARCHITECTURES = {"standard": "relu", "relu": "relu", "topk": "topk", "jumprelu": "jumprelu",
                  "batchtopk": "jumprelu"}  # a BatchTopK SAE is saved for inference as JumpReLU


def _tensor(name: str, value: Any, ndim: int) -> torch.Tensor:
    t = value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
    if t.ndim != ndim:
        raise bad(name, f"a {ndim}-D array", f"shape {tuple(t.shape)}", raw=True)
    if not t.is_floating_point():
        t = t.float()
    return t.detach()


@dataclass(frozen=True, eq=False)
class SAE:
    """A sparse-autoencoder encoder: ``(..., D)`` activations to ``(..., K)`` features.

    Parameters
    ----------
    W_enc : array-like (D, K)
        Encoder weights (SAELens layout: input dimension first).
    b_enc : array-like (K,), optional
        Encoder bias (default zeros).
    activation : {"relu", "topk", "jumprelu"}
        See the module docstring.
    k : int, optional
        Features kept per row, for ``"topk"`` (required there).
    threshold : float or array-like (K,), optional
        Per-feature thresholds, for ``"jumprelu"`` (required there).
    b_dec : array-like (D,), optional
        Pre-encoder bias, subtracted from the input first.
    names : sequence of str, optional
        One name per feature: the unit ids (default ``"0"`` .. ``"K-1"``).
    layer : str, optional
        The module whose output the SAE reads, when the SAE is given among ``layers``
        (see :meth:`at`).

    Examples
    --------
    >>> import numpy as np
    >>> sae = SAE(np.eye(3, dtype="f4"), activation="topk", k=1, names=["a", "b", "c"])
    >>> sae.encode(torch.tensor([[0.5, 2.0, -1.0]])).tolist()
    [[0.0, 2.0, 0.0]]
    >>> sae.n_features, sae.names
    (3, ['a', 'b', 'c'])
    """

    W_enc: torch.Tensor
    b_enc: torch.Tensor | None = None
    activation: str = "relu"
    k: int | None = None
    threshold: torch.Tensor | None = None
    b_dec: torch.Tensor | None = None
    names: list[str] | None = None
    layer: str | None = None

    def __post_init__(self) -> None:
        W = _tensor("W_enc", self.W_enc, 2)
        d, n = W.shape
        object.__setattr__(self, "W_enc", W)
        check_choice("activation", self.activation, ACTIVATIONS)
        object.__setattr__(self, "b_enc", self._vector("b_enc", self.b_enc, n, W))
        object.__setattr__(self, "b_dec", self._vector("b_dec", self.b_dec, d, W))
        self._check_activation(n, W)
        object.__setattr__(self, "names", self._names(n))
        if self.layer is not None and not isinstance(self.layer, str):
            raise bad("layer", "a module name (str)", self.layer)

    @staticmethod
    def _vector(name: str, v: Any, size: int, W: torch.Tensor) -> torch.Tensor | None:
        if v is None:
            return None
        t = _tensor(name, v, 1).to(W.dtype)
        if t.shape[0] != size:
            raise bad(name, f"{size} values (W_enc has shape {tuple(W.shape)})", t.shape[0])
        return t

    def _check_activation(self, n: int, W: torch.Tensor) -> None:
        if self.activation == "topk":
            check_int("k", self.k, minimum=1, maximum=n)
        elif self.k is not None:
            raise InvalidParameterError(f"k: only used with activation='topk', got {self.k}")
        if self.activation == "jumprelu":
            if self.threshold is None:
                raise bad("threshold", "per-feature thresholds for activation='jumprelu'", None)
            thr = self.threshold
            if np.ndim(thr) == 0 and not isinstance(thr, torch.Tensor):
                thr = np.full(n, float(thr), dtype=np.float32)
            object.__setattr__(self, "threshold", self._vector("threshold", thr, n, W))
        elif self.threshold is not None:
            raise InvalidParameterError("threshold: only used with activation='jumprelu'")

    def _names(self, n: int) -> list[str]:
        if self.names is None:
            return [str(i) for i in range(n)]
        names = list(self.names)
        if len(names) != n or not all(isinstance(s, str) for s in names):
            raise bad("names", f"{n} str (one per feature)", f"{len(names)} entries")
        if len(set(names)) != n:
            raise bad("names", "unique names", "duplicates")
        return names

    # -- use ------------------------------------------------------------------------------
    @property
    def d_in(self) -> int:
        return int(self.W_enc.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.W_enc.shape[1])

    def at(self, layer: str) -> SAE:
        """This SAE reading ``layer``'s output, to be given among ``layers``."""
        return replace(self, layer=layer)

    def to(self, device: torch.device | str) -> SAE:
        """A copy with every tensor on ``device``."""
        move = {f: getattr(self, f).to(device) for f in ("W_enc", "b_enc", "threshold", "b_dec")
                if getattr(self, f) is not None}
        return replace(self, **move)

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - b_dec) @ W_enc + b_enc`` over the last axis."""
        x = x.to(self.W_enc.dtype)
        if self.b_dec is not None:
            x = x - self.b_dec
        pre = x @ self.W_enc
        return pre + self.b_enc if self.b_enc is not None else pre

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The features ``(..., K)`` of ``x`` ``(..., D)``."""
        pre = self.pre_activation(x)
        if self.activation == "relu":
            return torch.relu(pre)
        if self.activation == "jumprelu":
            assert self.threshold is not None
            return torch.relu(pre) * (pre > self.threshold).to(pre.dtype)
        top = torch.topk(pre, int(self.k), dim=-1)  # type: ignore[arg-type]
        return torch.zeros_like(pre).scatter_(-1, top.indices, torch.relu(top.values))

    def cache_key(self) -> list[Any]:
        """What the activation cache hashes: every weight and setting."""
        return ["sae", self.activation, self.k, self.names, self.layer,
                *[None if t is None else t.detach().cpu()
                  for t in (self.W_enc, self.b_enc, self.threshold, self.b_dec)]]

    def __repr__(self) -> str:
        extra = f", k={self.k}" if self.k is not None else ""
        at = f", layer={self.layer!r}" if self.layer is not None else ""
        return f"SAE(d_in={self.d_in}, n_features={self.n_features}, " \
               f"activation={self.activation!r}{extra}{at})"

    # -- loading --------------------------------------------------------------------------
    @classmethod
    def from_folder(cls, path: str | os.PathLike[str], *, names: Sequence[str] | None = None,
                    layer: str | None = None, dtype: torch.dtype = torch.float32) -> SAE:
        """An SAE from a local SAELens-style folder: ``cfg.json`` + ``sae_weights.safetensors``.

        ``cfg.json`` gives the activation (``architecture``: ``standard``, ``topk``,
        ``jumprelu``, ``batchtopk``; or ``activation_fn_str`` with ``activation_fn_kwargs``
        of older releases), ``k`` and ``apply_b_dec_to_input``; the weights file holds
        ``W_enc`` ``(d_in, d_sae)``, ``b_enc``, ``b_dec`` and for JumpReLU ``threshold`` (or
        ``log_threshold``). The weights are read with ``safetensors`` (no pickle) and
        converted to ``dtype``. Input normalisation other than ``"none"`` raises.

        Parameters
        ----------
        path : path
            The folder.
        names : sequence of str, optional
            Feature names (default ``"0"`` .. ``"d_sae-1"``).
        layer : str, optional
            The module the SAE reads (as in :meth:`at`).
        dtype : torch.dtype
            Float type of the weights.
        """
        folder = Path(path)
        cfg_path, weights_path = folder / "cfg.json", folder / "sae_weights.safetensors"
        for p in (cfg_path, weights_path):
            if not p.is_file():
                raise bad("path", "a folder with cfg.json and sae_weights.safetensors",
                          f"{str(folder)!r} without {p.name}", raw=True)
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        weights = _read_safetensors(weights_path)
        activation, k = _activation_of(cfg)
        norm = cfg.get("normalize_activations", "none") or "none"
        if norm != "none":
            raise InvalidParameterError(
                f"path: {cfg_path} asks for normalize_activations={norm!r}; only 'none' is "
                "supported (normalise the layer's activations yourself, e.g. in a forward=)")
        if "W_enc" not in weights:
            raise bad("path", "sae_weights.safetensors with a W_enc tensor",
                      f"tensors {sorted(weights)}", raw=True)
        w = {key: t.to(dtype) for key, t in weights.items()}
        threshold = w.get("threshold")
        if threshold is None and "log_threshold" in w:
            threshold = torch.exp(w["log_threshold"])
        use_b_dec = bool(cfg.get("apply_b_dec_to_input", False))
        return cls(w["W_enc"], w.get("b_enc"), activation=activation, k=k,
                   threshold=threshold if activation == "jumprelu" else None,
                   b_dec=w.get("b_dec") if use_b_dec else None, names=names, layer=layer)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        from safetensors.torch import load_file
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("SAE.from_folder needs safetensors: pip install safetensors") from e
    return load_file(str(path), device="cpu")


def _activation_of(cfg: dict[str, Any]) -> tuple[str, int | None]:
    """``(activation, k)`` from a SAELens ``cfg.json``."""
    arch = str(cfg.get("architecture") or "standard").lower()
    fn = str(cfg.get("activation_fn_str") or cfg.get("activation_fn") or "").lower()
    if arch == "standard" and fn == "topk":
        arch = "topk"
    if arch not in _ARCHITECTURES:
        raise InvalidParameterError(
            f"path: cfg.json architecture {arch!r} is not supported; supported: "
            f"{sorted(_ARCHITECTURES)}")
    activation = _ARCHITECTURES[arch]
    k = None
    if activation == "topk":
        kwargs = cfg.get("activation_fn_kwargs") or {}
        k = cfg.get("k", kwargs.get("k"))
        if k is None:
            raise InvalidParameterError("path: cfg.json of a TopK SAE gives no k")
        k = int(k)
    return activation, k
