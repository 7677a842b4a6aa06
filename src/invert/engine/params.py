"""The search parameters: one definition of their names, defaults and checks, and the rules
derived from them (beam width, chunk sizes for a memory budget, support limits, device)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from .._validate import bad, check_bool, check_choice, check_fraction, check_int, check_interval
from .inputs import _Activations

__all__ = ["SEARCH_PARAMS", "SEARCH_DEFAULTS", "SEARCH_METRICS", "check_search_params",
           "SearchParams"]


#: The search parameters of :func:`explain`: the keys of ``ExplanationResult.params``.
SEARCH_PARAMS = ("length", "beam_size", "min_fraction", "max_fraction", "mode",
                 "limit_search", "dedupe", "metric", "top_q", "relative_min")
SEARCH_DEFAULTS: dict[str, Any] = {
    "length": 3, "beam_size": 5, "min_fraction": 0.0, "max_fraction": 0.5, "mode": "positive",
    "limit_search": None, "dedupe": True, "metric": "auroc", "top_q": None,
    "relative_min": False,
}
#: What the search can maximise: AUROC (rank sums), the point-biserial correlation (sums of
#: centred activations) and the F1 of the formula against the unit's top set (counts of top
#: samples), each decomposing over label patterns.
SEARCH_METRICS = ("auroc", "point_biserial", "top_f1")
#: The default (dedupe) search keeps, besides the ``beam_size`` best formulas within the
#: fraction limits, this many more formulas chosen without the fraction limits (times
#: ``beam_size``), so that e.g. ``a | b`` is reachable when ``a`` and ``b`` are each rarer
#: than ``min_fraction``.
_EXPLORE_FACTOR = 1
#: Units per chunk (ranked and searched together) and per search block, at most.
_MAX_UNITS = 4096
#: Units per search block on CPU, at most, and the bytes of their masked sums.
_CPU_BLOCK_UNITS = 64
_CPU_BLOCK_SUMS = 32 << 20


def check_search_params(params: dict[str, Any], n_concepts: int | None) -> dict[str, Any]:
    """The validated search parameters, defaults filled in (``limit_search`` is checked
    against ``2 * n_concepts`` when that is given)."""
    s = SEARCH_DEFAULTS | dict(params)
    s["length"] = check_int("length", s["length"], minimum=1)
    s["beam_size"] = check_int("beam_size", s["beam_size"], minimum=1)
    s["mode"] = check_choice("mode", s["mode"], ("positive", "negative"))
    s["metric"] = check_choice("metric", s["metric"], SEARCH_METRICS)
    _check_top_params(s)
    s["min_fraction"] = (check_interval("min_fraction", s["min_fraction"], 0.0)
                         if s["relative_min"] else check_fraction("min_fraction",
                                                                  s["min_fraction"]))
    s["max_fraction"] = check_fraction("max_fraction", s["max_fraction"])
    if s["min_fraction"] > s["max_fraction"] and not s["relative_min"]:
        raise bad("min_fraction", f"a value <= max_fraction ({s['max_fraction']})",
                  s["min_fraction"])
    s["dedupe"] = check_bool("dedupe", s["dedupe"])
    if n_concepts is not None and s["limit_search"] is not None:
        s["limit_search"] = check_int("limit_search", s["limit_search"], minimum=1,
                                      maximum=2 * n_concepts)
    return s


def _check_top_params(s: dict[str, Any]) -> None:
    """Check (in place) ``top_q`` and ``relative_min``, which only ``metric="top_f1"`` reads,
    and the mode that metric needs."""
    if s["top_q"] is not None:
        s["top_q"] = check_interval("top_q", s["top_q"], 0.0, 1.0, low_open=True,
                                    high_open=True)
    s["relative_min"] = check_bool("relative_min", s["relative_min"])
    if s["metric"] != "top_f1":
        if s["relative_min"]:
            raise bad("relative_min", "False unless metric='top_f1' (the support is relative "
                      "to the unit's top set)", s["relative_min"])
        return
    if s["mode"] != "positive":
        raise bad("mode", "'positive' with metric='top_f1' (the top set is the highest "
                  "activations)", s["mode"])


@dataclass(frozen=True)
class SearchParams:
    """The validated parameters of one search (build with :meth:`from_kwargs`)."""

    length: int
    beam_size: int
    min_fraction: float
    max_fraction: float
    mode: str
    limit_search: int | None
    dedupe: bool
    metric: str = "auroc"
    top_q: float | None = None
    relative_min: bool = False

    @classmethod
    def from_kwargs(cls, n_concepts: int | None = None, **kwargs: Any) -> SearchParams:
        """Checked parameters from keyword arguments (see :func:`check_search_params`)."""
        return cls(**check_search_params(kwargs, n_concepts))

    def as_dict(self) -> dict[str, Any]:
        """The parameters by name, in :data:`SEARCH_PARAMS` order."""
        return asdict(self)

    @property
    def width(self) -> int:
        """Largest beam: the best ``beam_size`` plus, with dedupe, the exploration part."""
        return self.beam_size * (1 + (_EXPLORE_FACTOR if self.dedupe else 0))

    def n_extensions(self, n_concepts: int) -> int:
        """Literals that extend formulas: ``limit_search``, or all ``2 C``."""
        return 2 * n_concepts if self.limit_search is None else self.limit_search

    def count_limits(self, n: int) -> tuple[float, float]:
        """Smallest and largest support ``s`` with ``min_fraction <= s / n <= max_fraction``
        (float comparison; ``(inf, -inf)`` when there is none). With ``relative_min`` the
        smallest support is each unit's own (:meth:`relative_min_support`): 0 here."""
        lo = 0.0 if self.relative_min else self.min_fraction
        return _count_limits(n, lo, self.max_fraction)

    def relative_min_support(self, top_size: torch.Tensor) -> torch.Tensor:
        """With ``relative_min``: each unit's smallest support, ``min_fraction`` times the
        size of its top set (k,), float64."""
        return self.min_fraction * top_size.to(torch.float64)

    def chunk_units(self, n: int, m: int, c: int, budget: int) -> int:
        """Units ranked at once (a chunk) so that its working memory fits ``budget`` bytes,
        for ``n`` samples, ``m`` label patterns and ``c`` concepts."""
        return max(1, min(_MAX_UNITS, budget // self.unit_bytes(n, m, c)))

    def unit_bytes(self, n: int, m: int, c: int) -> int:
        """Working memory of one unit of a chunk (bytes)."""
        w = self.width
        ls = self.n_extensions(c)
        return max(1, (
            8 * 7 * n  # ranking
            + 8 * 3 * m  # pattern rank sums
            + 8 * 2 * 2 * w * m  # masked rank sums and counts
            + 8 * 2 * w * c  # products
            + 8 * 2 * w * ls * 9  # candidate statistics
            + 2 * w * m * 8  # materialised masks
        ))

    def search_block(self, m: int, c: int, budget: int, device: torch.device) -> int:
        """Units searched at once: on CPU at most :data:`_CPU_BLOCK_UNITS`, with their
        masked sums (C x entries, float64) within :data:`_CPU_BLOCK_SUMS` bytes (the scan
        reads them in cache-sized slices); on a GPU as many as a quarter of the budget
        holds (fewer, larger kernels). The block's sums, products and masks take at most a
        quarter of the budget."""
        per_unit = self.block_bytes_per_unit(m, c)
        if device.type == "cpu":
            nw = 3 if self.dedupe else 2
            cap = min(_CPU_BLOCK_UNITS, _CPU_BLOCK_SUMS // max(1, 8 * nw * self.width * c))
        else:
            cap = _MAX_UNITS
        return max(1, min(cap, (budget // 4) // per_unit))

    def block_bytes_per_unit(self, m: int, c: int) -> int:
        """Working memory of one unit in a search block: masked sums over concepts, the
        masked weights over patterns, and the beam's bool masks over patterns."""
        w, nw = self.width, 3 if self.dedupe else 2
        return 8 * nw * w * c + 8 * nw * w * m + 6 * w * m


def _count_limits(n: int, lo: float, hi: float) -> tuple[float, float]:
    """Smallest and largest support ``s`` with ``lo <= s / n <= hi`` (float comparison)."""
    s = np.arange(n + 1, dtype=np.float64)
    ok = np.flatnonzero((s / n >= lo) & (s / n <= hi))
    if ok.size == 0:
        return math.inf, -math.inf
    return float(ok[0]), float(ok[-1])


def resolve_device(device: str | torch.device | None, activations: _Activations
                   ) -> torch.device:
    """The checked ``device`` argument; by default where the activations live."""
    if device is None:
        data = activations.data
        return data.device if isinstance(data, torch.Tensor) else torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise bad("device", "a torch device such as 'cpu' or 'cuda'", device) from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise bad("device", "an available device (CUDA is not available here)", device)
    return dev
