"""Built-in synthetic layers with planted explanations (for benchmarks, tests and demos).

:func:`make_layer` builds a paper-scale data set like the ImageNet setting of INVERT:
mutually exclusive leaf classes with equal numbers of samples, hypernym concepts that are
unions of leaves along a random tree, and a layer whose first units are planted formulas
plus Gaussian noise.

Examples
--------
>>> layer = make_layer(n_leaves=40, samples_per_leaf=10, n_hypernyms=15, n_units=8,
...                    n_planted=4, seed=1)
>>> layer.activations.shape, layer.concepts.matrix.shape
((400, 8), (400, 55))
>>> len(layer.planted)
4
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from .formula import And, Formula, Literal, Or

__all__ = ["SyntheticLayer", "LabelMatrix", "make_layer", "make_multilabel_layer"]


@dataclass
class LabelMatrix:
    """A minimal named concept matrix (``names`` + ``matrix``), accepted by
    :func:`invert.explain` like a concept set."""

    names: list[str]
    matrix: np.ndarray | sp.csr_matrix
    parents: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class SyntheticLayer:
    """Activations (N, K), concepts, and the formula planted in each of the first units."""

    activations: np.ndarray
    concepts: LabelMatrix
    planted: list[Formula]
    kinds: list[str]


def _tree(n_leaves: int, n_hyper: int, rng: np.random.Generator
          ) -> tuple[list[np.ndarray], dict[int, list[int]]]:
    """Hypernyms as unions of leaves, level by level like WordNet: each level groups the
    nodes below in random groups of 2-4 up to one root; then random lowest-level
    hypernyms are dropped until ``n_hyper`` remain (their leaves hang one level up)."""
    members: list[np.ndarray] = [np.array([i]) for i in range(n_leaves)]
    up: dict[int, int] = {}
    depth = [0] * n_leaves
    level = list(rng.permutation(n_leaves))
    while len(level) > 1:
        nxt, i = [], 0
        while len(level) - i >= 2:
            size = min(int(rng.integers(2, 5)), len(level) - i)
            kids = level[i:i + size]
            node = len(members)
            members.append(np.concatenate([members[k] for k in kids]))
            depth.append(max(depth[k] for k in kids) + 1)
            for kid in kids:
                up[int(kid)] = node
            nxt.append(node)
            i += size
        nxt.extend(level[i:])
        level = list(rng.permutation(nxt))
    hyper = np.arange(n_leaves, len(members))
    drop = len(hyper) - n_hyper
    keep = set(hyper.tolist())
    if drop > 0:
        lowest = hyper[np.array(depth)[hyper] == 1]
        keep -= set(rng.choice(lowest, size=min(drop, len(lowest)), replace=False).tolist())
    kept = sorted(keep)
    new_id = {old: n_leaves + j for j, old in enumerate(kept)}
    parents: dict[int, list[int]] = {}
    for node in list(range(n_leaves)) + kept:
        p = up.get(node)
        while p is not None and p not in keep:
            p = up.get(p)
        if p is not None:
            parents[new_id.get(node, node)] = [new_id[p]]
    return members[:n_leaves] + [members[j] for j in kept], parents


def make_layer(
    n_leaves: int = 1000,
    samples_per_leaf: int = 50,
    n_hypernyms: int = 473,
    n_units: int = 512,
    n_planted: int = 64,
    signal: float = 1.5,
    max_fraction: float = 0.5,
    seed: int = 0,
) -> SyntheticLayer:
    """A paper-scale synthetic layer (defaults: N = 50,000, C = 1,473, K = 512).

    The planted units cycle through four kinds: a single concept, ``h & ~leaf``,
    ``leaf | leaf`` and ``h | leaf`` (``h`` a hypernym); their activation is
    ``signal * formula + N(0, 1)``. The other units are pure noise.
    """
    rng = np.random.default_rng(seed)
    n = n_leaves * samples_per_leaf
    leaf_of = np.repeat(np.arange(n_leaves), samples_per_leaf)
    members, parents = _tree(n_leaves, n_hypernyms, rng)
    c = len(members)
    n_hypernyms = c - n_leaves
    rows = np.concatenate([np.flatnonzero(np.isin(leaf_of, members[j])) for j in range(c)])
    cols = np.concatenate([np.full(len(members[j]) * samples_per_leaf, j) for j in range(c)])
    y = sp.csr_matrix((np.ones(len(rows), dtype=bool), (rows, cols)), shape=(n, c))
    names = [f"leaf{j}" for j in range(n_leaves)] + [f"hyper{j}" for j in range(n_hypernyms)]
    par_names = {names[k]: [names[p] for p in v] for k, v in parents.items()}
    frac = np.array([len(members[j]) / n_leaves for j in range(c)])

    hyper_ok = [j for j in range(n_leaves, c) if frac[j] <= max_fraction]
    acts = rng.standard_normal((n, n_units))
    planted: list[Formula] = []
    kinds: list[str] = []
    kind_names = ("concept", "h & ~leaf", "leaf | leaf", "h | leaf")
    for u in range(n_planted):
        kind = kind_names[u % 4]
        h = int(rng.choice(hyper_ok))
        if kind == "concept":
            f: Formula = Literal(h)
        elif kind == "h & ~leaf":
            big = [j for j in hyper_ok if len(members[j]) >= 3]
            h = int(rng.choice(big))
            f = And(Literal(h), Literal(int(rng.choice(members[h])), True))
        elif kind == "leaf | leaf":
            a, b = rng.choice(n_leaves, size=2, replace=False)
            f = Or(Literal(int(a)), Literal(int(b)))
        else:
            h = int(rng.choice([j for j in hyper_ok if frac[j] + 1 / n_leaves <= max_fraction]))
            outside = np.setdiff1d(np.arange(n_leaves), members[h])
            f = Or(Literal(h), Literal(int(rng.choice(outside))))
        mask = f.evaluate(y)
        acts[:, u] += signal * mask
        planted.append(f.with_names(names))
        kinds.append(kind)
    return SyntheticLayer(acts.astype(np.float32), LabelMatrix(names, y, par_names), planted,
                          kinds)


def make_multilabel_layer(
    n_samples: int = 50_000,
    n_concepts: int = 1473,
    labels_per_sample: tuple[int, int] = (3, 8),
    n_units: int = 512,
    n_planted: int = 64,
    signal: float = 1.5,
    seed: int = 0,
) -> SyntheticLayer:
    """Multi-label variant: each sample has 3-8 random concepts (rows do not collapse).

    Planted units are single concepts and ``a | b`` / ``a & ~b`` of two concepts.
    """
    rng = np.random.default_rng(seed)
    k = rng.integers(labels_per_sample[0], labels_per_sample[1] + 1, size=n_samples)
    # popularity skew so that concepts have varied frequencies
    weights = rng.pareto(1.5, size=n_concepts) + 1.0
    weights /= weights.sum()
    rows = np.repeat(np.arange(n_samples), k)
    cols = np.concatenate([rng.choice(n_concepts, size=int(kk), replace=False, p=weights)
                           for kk in k])
    y = sp.csr_matrix((np.ones(len(rows), dtype=bool), (rows, cols)),
                      shape=(n_samples, n_concepts))
    names = [f"c{j}" for j in range(n_concepts)]
    acts = rng.standard_normal((n_samples, n_units))
    planted, kinds = [], []
    counts = np.asarray(y.sum(0)).ravel()
    usable = np.flatnonzero((counts > 0.005 * n_samples) & (counts < 0.2 * n_samples))
    for u in range(n_planted):
        a, b = (int(x) for x in rng.choice(usable, size=2, replace=False))
        kind = ("concept", "a | b", "a & ~b")[u % 3]
        f: Formula = (Literal(a) if kind == "concept" else
                      Or(Literal(a), Literal(b)) if kind == "a | b" else
                      And(Literal(a), Literal(b, True)))
        acts[:, u] += signal * f.evaluate(y)
        planted.append(f.with_names(names))
        kinds.append(kind)
    return SyntheticLayer(acts.astype(np.float32), LabelMatrix(names, y), planted, kinds)
