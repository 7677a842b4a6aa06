"""Lining up the concept rows with the activation rows, and the concepts and formula
supports worth searching.

Rows are matched by sample id (compared as text) whenever both sides have ids. An id of the
activations that the concepts lack is an error, unless ``--match-by-order`` allows matching
rows by position (then the counts must agree); matching by position when only one side has
ids is said (a :class:`RunWarning`) and recorded (:class:`SampleMatch`, ``run.json``)."""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..concepts import ConceptSet
from .errors import CommandError, RunWarning

__all__ = ["SampleMatch", "align_concepts", "prune_concepts", "min_fraction_for_support"]


@dataclass(frozen=True)
class SampleMatch:
    """How activation rows were matched to concept rows: ``by`` is ``"id"`` or ``"order"``;
    ``note`` says why (``None`` for a plain match by id)."""

    by: str
    note: str | None = None
    concept_rows_left_out: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"by": self.by, "note": self.note,
                "concept_rows_left_out": self.concept_rows_left_out}


def _examples(items: Sequence[Any], k: int = 3) -> str:
    return ", ".join(repr(str(x)) for x in items[:k]) + (", ..." if len(items) > k else "")


def align_concepts(cs: ConceptSet, sample_ids: Sequence[Any] | None, n: int, *,
                   match_by_order: bool = False) -> tuple[ConceptSet, SampleMatch]:
    """``cs`` with its rows in the order of the activations' samples, and how they matched.

    Raises
    ------
    CommandError
        When an activation id has no concept row (unless ``match_by_order`` and the row
        counts agree), when ids repeat, or when rows are matched by order and the counts
        differ.
    """
    if sample_ids is not None and cs.sample_ids is not None:
        aligned = _align_by_id(cs, [str(s) for s in sample_ids], n, match_by_order)
        if aligned is not None:
            return aligned
        note = ("the sample ids of the activations and the concepts differ; rows matched by "
                "order (--match-by-order)")
        return _by_order(cs, n, note)
    if sample_ids is None and cs.sample_ids is None:
        return _by_order(cs, n, None)
    side = "activations" if sample_ids is None else "concepts"
    return _by_order(cs, n, f"the {side} have no sample ids; rows matched by order")


def _align_by_id(cs: ConceptSet, ids: list[str], n: int, match_by_order: bool
                 ) -> tuple[ConceptSet, SampleMatch] | None:
    """The match by id, or ``None`` when ids differ and ``match_by_order`` allows order."""
    dups = [s for s, c in Counter(ids).items() if c > 1]
    if dups:
        raise CommandError(f"--activations: {len(dups)} sample id(s) appear more than once, "
                           f"e.g. {_examples(dups)}")
    pos = {str(s): i for i, s in enumerate(cs.sample_ids or [])}
    if len(pos) != cs.n_samples:
        raise CommandError("--concepts: sample ids repeat when read as text (e.g. 7 and '7')")
    missing = [s for s in ids if s not in pos]
    if missing:
        if match_by_order and cs.n_samples == n:
            return None
        hint = ("; pass --match-by-order to match rows by position" if cs.n_samples == n
                else "")
        raise CommandError(
            f"--concepts: {len(missing)} of the {n} activation samples have no concept row "
            f"(ids compared as text), e.g. {_examples(missing)}; the concepts' ids look like "
            f"{_examples(list(pos))}{hint}"
        )
    idx = np.array([pos[s] for s in ids], dtype=np.int64)
    left_out = cs.n_samples - n
    if left_out:
        extra = [s for s in pos if s not in set(ids)]
        warnings.warn(f"{left_out} concept row(s) have no activation row and are left out, "
                      f"e.g. {_examples(extra)}", RunWarning, stacklevel=3)
    if left_out == 0 and np.array_equal(idx, np.arange(n)):
        return cs, SampleMatch("id")
    return _quiet_subset(cs, samples=idx), SampleMatch("id", concept_rows_left_out=left_out)


def _by_order(cs: ConceptSet, n: int, note: str | None) -> tuple[ConceptSet, SampleMatch]:
    if cs.n_samples != n:
        raise CommandError(
            f"--concepts: expected {n} samples (one per activation row), got {cs.n_samples}"
        )
    if note is not None:
        warnings.warn(note, RunWarning, stacklevel=3)
    return cs, SampleMatch("order", note or "neither side has sample ids; rows matched by order")


def _quiet_subset(cs: ConceptSet, **kwargs: Any) -> ConceptSet:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cs.subset(**kwargs)


def prune_concepts(cs: ConceptSet, min_samples: int) -> ConceptSet:
    """Drop concepts on fewer than ``min_samples`` samples and those that hold everywhere."""
    counts = np.asarray(cs.counts).ravel()
    keep = np.flatnonzero((counts >= max(1, min_samples)) & (counts < cs.n_samples))
    if len(keep) == 0:
        raise CommandError(
            f"--concepts: no concept is present on at least {min_samples} and on fewer than all "
            f"{cs.n_samples} samples (see --min-concept-samples)"
        )
    if len(keep) == cs.n_concepts:
        return cs
    return _quiet_subset(cs, concepts=keep)


def min_fraction_for_support(min_fraction: float, max_fraction: float, min_support: int,
                             n: int, holdout: float | None) -> float:
    """The ``min_fraction`` that makes every formula hold on at least ``min_support`` of the
    samples searched (the ``1 - holdout`` share of the ``n`` samples), and at least
    ``min_fraction``; half a sample of slack absorbs the split's rounding."""
    n_search = n - round(holdout * n) if holdout else n
    if min_support <= 1 or n_search <= 0:
        return min_fraction
    frac = max(min_fraction, (min_support - 0.5) / n_search)
    if frac > max_fraction:
        raise CommandError(
            f"--min-support {min_support} is more than --max-fraction {max_fraction} of the "
            f"{n_search} samples searched; lower --min-support or raise --max-fraction"
        )
    return float(frac)
