"""Activation extraction: run a PyTorch model over a data set and record named layers' units.

The main entry point is :func:`collect_activations`, which returns an :class:`ActivationSet`
(one layer) or a ``dict`` of them (several layers, one forward pass per batch). An
``ActivationSet`` is array-like with shape ``(n_samples, n_units)`` and feeds
:func:`invert.explain` directly.

Helpers for real data and models live here too: :func:`load_image_folder` /
:class:`ImageFolder` and :class:`ImageTransform` (PIL + numpy, no torchvision),
:func:`efficientnet_lite0` (offline EfficientNet-Lite0 ImageNet weights) and for text
:func:`encode_texts` and :func:`minilm_l6` (offline all-MiniLM-L6-v2).

Modules: ``activations`` (the result type), ``hooks`` (forward hooks, layer names),
``units`` (layer output to units: the registry of reductions), ``sources`` (data and
batching), ``cache`` (the on-disk activation cache), ``collect`` (:func:`collect_activations`
in stages), ``data`` (image and text loaders, offline models), ``onnx`` (ONNX Runtime unit
sources), ``sae`` (sparse-autoencoder encoders, :class:`SAE`), ``maps`` (spatial maps of the
top samples, ``keep_maps=``).
"""

from .activations import ActivationSet
from .collect import collect_activations
from .data import (
    IMAGE_EXTENSIONS,
    ImageFolder,
    ImageTransform,
    TokenizedTexts,
    TruncationWarning,
    UnreadableImageError,
    efficientnet_lite0,
    encode_texts,
    load_image_folder,
    minilm_l6,
)
from .hooks import hooked_outputs
from .maps import SpatialMaps, read_maps, write_maps
from .onnx import OnnxSession, OnnxUnitSource, onnx_unit_source
from .sae import SAE

__all__ = [
    "IMAGE_EXTENSIONS", "ActivationSet", "ImageFolder", "ImageTransform", "TokenizedTexts",
    "TruncationWarning", "UnreadableImageError", "collect_activations", "efficientnet_lite0",
    "encode_texts", "hooked_outputs", "load_image_folder", "minilm_l6", "OnnxSession",
    "OnnxUnitSource", "onnx_unit_source", "SAE", "SpatialMaps", "read_maps", "write_maps",
]
