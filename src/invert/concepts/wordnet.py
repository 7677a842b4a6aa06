"""A small reader of the WordNet 3.0 noun database, and hypernym hierarchies over synsets.

invert reads the WordNet database files directly (``data.noun``, ``index.noun`` and
``noun.exc``), as installed by the Debian package ``wordnet-base`` in ``/usr/share/wordnet``,
so no NLTK corpus download is needed. Synsets are identified by their WordNet 3.0 noun offset
written as an ImageNet WNID (``'n01440764'``) and named as NLTK names them
(``'tench.n.01'``: the synset's first lemma, lowercased, then ``.n.`` and the sense number of
that lemma for this synset in ``index.noun``).

The hierarchy of the 1,000 ImageNet classes ships with invert as package data (see
:func:`invert.concepts.imagenet_hierarchy`), so ImageNet concept sets need no WordNet install;
any other synsets need the database (``apt-get install wordnet-base`` on Debian/Ubuntu, or point
``$WORDNET_DIR`` or the ``root`` parameter at a folder holding the WordNet 3.0 ``dict`` files).
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal

from .._validate import bad, check_choice, check_int
from .core import nearest_kept

__all__ = [
    "Synset",
    "WordNet",
    "WordNetNotFoundError",
    "Hierarchy",
    "hypernym_hierarchy",
    "parse_wnid",
    "format_wnid",
]

logger = logging.getLogger(__name__)

DEFAULT_WORDNET_DIRS = ("/usr/share/wordnet", "/usr/local/share/wordnet", "/usr/share/wordnet/dict")

INSTALL_HINT = (
    "WordNet 3.0 is needed for synsets outside the 1,000 ImageNet classes: install the Debian "
    "package 'wordnet-base' (apt-get install -y --no-install-recommends wordnet-base), or set "
    "$WORDNET_DIR (or pass root=...) to a folder holding the WordNet 3.0 files data.noun and "
    "index.noun"
)

_WNID = re.compile(r"^n(\d{8})$")


class WordNetNotFoundError(FileNotFoundError):
    """The WordNet 3.0 database files were not found."""


def parse_wnid(wnid: str) -> int:
    """Turn a WNID such as ``'n01440764'`` into the integer noun offset ``1440764``.

    Raises
    ------
    ValueError
        If ``wnid`` is not ``'n'`` followed by eight digits.
    """
    if not isinstance(wnid, str):
        raise bad("wnid", "a str like 'n01440764'", type(wnid).__name__, raw=True)
    m = _WNID.match(wnid.strip())
    if not m:
        raise bad("wnid", "'n' followed by 8 digits (e.g. 'n01440764')", wnid)
    return int(m.group(1))


def format_wnid(offset: int) -> str:
    """Turn a noun offset into a WNID: ``1440764 -> 'n01440764'``."""
    return f"n{int(offset):08d}"


@dataclass(frozen=True)
class Synset:
    """One noun synset: WNID, NLTK-style name, lemmas, definition and hypernym links."""

    wnid: str
    name: str
    lemmas: tuple[str, ...]
    definition: str
    hypernyms: tuple[str, ...] = ()
    instance_hypernyms: tuple[str, ...] = ()


class WordNet:
    """Read-only access to the WordNet 3.0 noun database.

    Parameters
    ----------
    root : str or Path, optional
        Folder holding ``data.noun`` and ``index.noun``. Default: ``$WORDNET_DIR`` if set, else the
        first of ``/usr/share/wordnet`` (Debian ``wordnet-base``), ``/usr/local/share/wordnet``.

    Raises
    ------
    WordNetNotFoundError
        If the files are not there; the message says how to install them.

    Notes
    -----
    The whole noun database (about 82,000 synsets) is parsed on construction, which takes about
    a second; use :meth:`WordNet.default` to share one parsed instance.
    """

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = self._find_root(root)
        self._synsets: dict[str, Synset] = {}
        self._senses: dict[str, tuple[str, ...]] = {}
        self._exceptions: dict[str, list[str]] = {}
        self._load()

    # -- loading ---------------------------------------------------------------------------
    @staticmethod
    def _find_root(root: str | os.PathLike | None) -> Path:
        if root is not None:
            if not isinstance(root, (str, os.PathLike)):
                raise bad("root", "a str or path", type(root).__name__, raw=True)
            candidates = [Path(root), Path(root) / "dict"]
        else:
            env = os.environ.get("WORDNET_DIR")
            candidates = [Path(env)] if env else []
            candidates += [Path(d) for d in DEFAULT_WORDNET_DIRS]
        for c in candidates:
            if (c / "data.noun").is_file() and (c / "index.noun").is_file():
                return c
        tried = ", ".join(str(c) for c in candidates)
        raise WordNetNotFoundError(
            f"WordNet 3.0 noun files not found (tried {tried}). {INSTALL_HINT}"
        )

    @classmethod
    def available(cls, root: str | os.PathLike | None = None) -> bool:
        """Whether the WordNet files can be found (without parsing them)."""
        try:
            cls._find_root(root)
        except WordNetNotFoundError:
            return False
        return True

    @classmethod
    def default(cls) -> WordNet:
        """A shared instance for the default location (parsed once per process)."""
        return _default_wordnet(os.environ.get("WORDNET_DIR"))

    def _load(self) -> None:
        senses: dict[str, tuple[str, ...]] = {}
        with open(self.root / "index.noun", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith(" "):
                    continue
                parts = line.split()
                lemma, _pos, synset_cnt, p_cnt = parts[0], parts[1], int(parts[2]), int(parts[3])
                offsets = parts[6 + p_cnt : 6 + p_cnt + synset_cnt]
                senses[lemma] = tuple("n" + o for o in offsets)
        self._senses = senses

        raw: dict[str, tuple[tuple[str, ...], str, tuple[str, ...], tuple[str, ...]]] = {}
        with open(self.root / "data.noun", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith(" "):
                    continue
                data, _, gloss = line.partition(" | ")
                parts = data.split()
                offset = "n" + parts[0]
                w_cnt = int(parts[3], 16)
                lemmas = tuple(parts[4 + 2 * i] for i in range(w_cnt))
                k = 4 + 2 * w_cnt
                p_cnt = int(parts[k])
                hyper: list[str] = []
                inst: list[str] = []
                for j in range(p_cnt):
                    sym, target, pos = (
                        parts[k + 1 + 4 * j],
                        parts[k + 2 + 4 * j],
                        parts[k + 3 + 4 * j],
                    )
                    if pos != "n":
                        continue
                    if sym == "@":
                        hyper.append("n" + target)
                    elif sym == "@i":
                        inst.append("n" + target)
                raw[offset] = (lemmas, gloss.strip(), tuple(hyper), tuple(inst))

        synsets: dict[str, Synset] = {}
        for wnid, (lemmas, gloss, hyper, inst) in raw.items():
            first = lemmas[0].lower()
            try:
                sense = senses[first].index(wnid) + 1
            except (KeyError, ValueError):  # pragma: no cover - not in WordNet 3.0
                logger.warning("synset %s: lemma %r has no sense entry in index.noun", wnid, first)
                sense = 0
            synsets[wnid] = Synset(
                wnid=wnid,
                name=f"{first}.n.{sense:02d}",
                lemmas=lemmas,
                definition=_definition(gloss),
                hypernyms=hyper,
                instance_hypernyms=inst,
            )
        self._synsets = synsets
        self._by_name = {s.name: s.wnid for s in synsets.values()}

        exc = self.root / "noun.exc"
        if exc.is_file():
            with open(exc, encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    parts = line.split()
                    if len(parts) >= 2:
                        self._exceptions.setdefault(parts[0], []).extend(parts[1:])

    # -- lookup ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._synsets)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and (key in self._synsets or key in self._by_name)

    def synset(self, key: str) -> Synset:
        """The synset for a WNID (``'n01440764'``) or an NLTK-style name (``'tench.n.01'``).

        Raises
        ------
        KeyError
            If no noun synset has that WNID or name.
        """
        if not isinstance(key, str):
            raise bad("key", "a WNID or synset name (str)", type(key).__name__, raw=True)
        if key in self._synsets:
            return self._synsets[key]
        if key in self._by_name:
            return self._synsets[self._by_name[key]]
        raise KeyError(
            f"{key!r} is not a WordNet 3.0 noun synset (WNID like 'n01440764' or "
            "name like 'tench.n.01')"
        )

    def morphy(self, word: str) -> list[str]:
        """Base forms of a noun that are WordNet lemmas (like NLTK's ``morphy``, all of them).

        The word is lowercased and spaces/hyphens are tried as underscores. Exceptions from
        ``noun.exc`` (``'geese' -> 'goose'``) and the regular plural endings are applied.
        """
        w = word.strip().lower().replace(" ", "_")
        forms: list[str] = []
        candidates = [w, w.replace("-", "_")]
        for c in list(candidates):
            candidates.extend(self._exceptions.get(c, []))
            for suffix, repl in _NOUN_SUFFIXES:
                if c.endswith(suffix) and len(c) > len(suffix):
                    candidates.append(c[: len(c) - len(suffix)] + repl)
        for c in candidates:
            if c in self._senses and c not in forms:
                forms.append(c)
        return forms

    def senses(self, word: str) -> list[Synset]:
        """All noun synsets of a word in sense-number order (after :meth:`morphy`)."""
        out: list[Synset] = []
        seen: set[str] = set()
        for lemma in self.morphy(word):
            for wnid in self._senses[lemma]:
                if wnid not in seen:
                    seen.add(wnid)
                    out.append(self._synsets[wnid])
        return out

    def hypernym_closure(self, wnid: str, *, instances: bool = False) -> list[str]:
        """All hypernyms of a synset (not itself), breadth first, each once.

        Parameters
        ----------
        wnid : str
            The synset.
        instances : bool, default False
            Also follow instance-hypernym links (``@i``); the paper's ImageNet concepts do not.
        """
        start = self.synset(wnid)
        order: list[str] = []
        seen = {start.wnid}
        queue = [start.wnid]
        while queue:
            nxt: list[str] = []
            for w in queue:
                s = self._synsets[w]
                links = s.hypernyms + (s.instance_hypernyms if instances else ())
                for h in links:
                    if h not in seen:
                        seen.add(h)
                        order.append(h)
                        nxt.append(h)
            queue = nxt
        return order


_NOUN_SUFFIXES = (
    ("s", ""),
    ("ses", "s"),
    ("xes", "x"),
    ("zes", "z"),
    ("ches", "ch"),
    ("shes", "sh"),
    ("men", "man"),
    ("ies", "y"),
)


def _definition(gloss: str) -> str:
    """The definition part of a WordNet gloss (drop the quoted examples after ``; "``)."""
    if not gloss:
        return ""
    idx = gloss.find('; "')
    text = gloss if idx < 0 else gloss[:idx]
    if text.startswith('"'):
        return ""
    return text.strip().rstrip(";").strip()


@lru_cache(maxsize=4)
def _default_wordnet(env: str | None) -> WordNet:
    return WordNet(env)


@dataclass(repr=False)
class Hierarchy:
    """Concepts for a list of leaf synsets plus their shared hypernyms.

    Attributes
    ----------
    wnids, names, definitions : list of str
        One entry per concept: first the leaves in the order given, then the hypernyms kept.
    parents : dict
        Concept name -> names of its direct hypernyms, as far as they are concepts themselves
        (the links of dropped hypernyms are bridged to their nearest kept ancestors).
    leaf_ancestors : dict
        Leaf WNID -> WNIDs of all concepts it belongs to (itself and its kept hypernyms).
    dropped : dict
        Hypernym WNID -> number of leaves it covers, for hypernyms dropped by ``min_leaves``.
    """

    wnids: list[str]
    names: list[str]
    definitions: list[str]
    parents: dict[str, list[str]]
    leaf_ancestors: dict[str, list[str]]
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def n_leaves(self) -> int:
        return len(self.leaf_ancestors)

    def __repr__(self) -> str:
        shown = ", ".join(self.names[:3]) + (", ..." if len(self.names) > 3 else "")
        return (f"Hierarchy({self.n_leaves} leaves, {len(self.wnids)} concepts: {shown}; "
                f"{len(self.dropped)} hypernyms dropped)")


def _closure_occurrences(leaf: str, lookup: dict[str, Synset]) -> list[str]:
    """Hypernyms of ``leaf`` in the order NLTK's ``Synset.closure`` yields them, repeats kept.

    NLTK (3.6 and later) walks breadth first with hypernyms sorted by synset name and marks a
    node as visited only when it is taken from the queue, so a synset that is reached along two
    paths before it is visited is yielded twice. The paper's ImageNet concepts were counted that
    way; :func:`hypernym_hierarchy` with ``count="paper"`` reproduces it.
    """
    traversed: set[str] = set()
    queue = deque([leaf])
    out: list[str] = []
    while queue:
        node = queue.popleft()
        if node != leaf:
            out.append(node)
        traversed.add(node)
        for h in sorted(lookup[node].hypernyms, key=lambda x: lookup[x].name):
            if h not in lookup:
                raise bad("synsets", "every hypernym of the leaves",
                          f"a lookup without {h}, a hypernym of {node}", raw=True)
            if h not in traversed:
                queue.append(h)
    return out


def _check_hierarchy_args(leaves: Sequence[str], synsets: dict[str, Synset] | WordNet,
                          min_leaves: int, count: str) -> tuple[list[str], dict[str, Synset]]:
    """The leaves as a list and the WNID -> synset lookup, the arguments checked."""
    if isinstance(leaves, str) or not isinstance(leaves, Iterable):
        raise bad("leaves", "a sequence of WNIDs", type(leaves).__name__, raw=True)
    leaves = list(leaves)
    check_int("min_leaves", min_leaves, minimum=1)
    check_choice("count", count, ("paper", "leaves"))
    if isinstance(synsets, WordNet):
        lookup = synsets._synsets
    elif isinstance(synsets, dict):
        lookup = synsets
    else:
        raise bad("synsets", "a WordNet or dict", type(synsets).__name__, raw=True)
    dups = sorted(w for w, n in Counter(leaves).items() if n > 1)
    if dups:
        raise bad("leaves", "unique WNIDs", f"duplicates {dups[:10]}", raw=True)
    for w in leaves:
        parse_wnid(w)
    unknown = [w for w in leaves if w not in lookup]
    if unknown:
        raise bad("leaves", "WordNet 3.0 noun synsets of this lookup",
                  f"{len(unknown)} WNID(s) that are not: {unknown[:10]}", raw=True)
    return leaves, lookup


def hypernym_hierarchy(
    leaves: Sequence[str],
    synsets: dict[str, Synset] | WordNet,
    *,
    min_leaves: int = 2,
    count: Literal["paper", "leaves"] = "paper",
) -> Hierarchy:
    """Leaf synsets plus every hypernym that covers at least ``min_leaves`` of them.

    Hypernyms are those reached by hypernym links (``@``), not instance-hypernym links. They are
    ordered by first discovery: leaves in the order given, and for each leaf its hypernyms
    breadth first, the hypernyms of each synset taken in order of their names (as NLTK's
    ``Synset.closure`` walks them). With the 1,000 ImageNet classes this reproduces the paper's
    1,473 concepts in the paper's order.

    Parameters
    ----------
    leaves : sequence of str
        Leaf WNIDs (e.g. the 1,000 ImageNet class WNIDs), unique.
    synsets : WordNet or dict
        Where to look synsets up: a :class:`WordNet` or a mapping WNID -> :class:`Synset` that
        holds every leaf and all their hypernyms.
    min_leaves : int, default 2
        Keep a hypernym only if its count is at least this. Leaves are always kept.
    count : {"paper", "leaves"}, default "paper"
        How a hypernym is counted. ``"leaves"``: the number of distinct leaves below it.
        ``"paper"``: the number of times it appears in the leaves' NLTK closures, which counts a
        hypernym twice for a leaf that reaches it along two paths that meet before it is visited.
        The two differ for ImageNet in one concept: ``contestant.n.01`` (n09613191) lies above
        a single class, ``ballplayer.n.01``, reached via both ``athlete.n.01`` and
        ``player.n.01``; the paper keeps it (1,473 concepts), ``"leaves"`` drops it (1,472).

    Raises
    ------
    invert._validate.InvalidParameterError
        (a ``ValueError`` and ``TypeError``) for duplicate, malformed or unknown WNIDs,
        ``min_leaves < 1`` or an unknown ``count``.
    """
    leaves, lookup = _check_hierarchy_args(leaves, synsets, min_leaves, count)
    occurrences = {w: _closure_occurrences(w, lookup) for w in leaves}
    closures = {w: list(dict.fromkeys(occ)) for w, occ in occurrences.items()}
    leaf_set = set(leaves)
    counts: dict[str, int] = {}
    for w in leaves:
        for h in occurrences[w] if count == "paper" else closures[w]:
            counts[h] = counts.get(h, 0) + 1
    for h in counts:  # a hypernym that is itself a leaf also covers itself
        if h in leaf_set:
            counts[h] += 1
    kept_hyper = [h for h in counts if h not in leaf_set and counts[h] >= min_leaves]
    dropped = {h: c for h, c in counts.items() if h not in leaf_set and c < min_leaves}
    concepts = leaves + kept_hyper
    kept = set(concepts)

    def kept_parents(w: str) -> list[str]:
        return nearest_kept(lookup[w].hypernyms, lambda h: lookup[h].hypernyms, kept)

    names = [lookup[w].name for w in concepts]
    name_of = dict(zip(concepts, names, strict=True))
    parents = {name_of[w]: [name_of[p] for p in kept_parents(w)] for w in concepts}
    leaf_ancestors = {w: [w] + [h for h in closures[w] if h in kept] for w in leaves}
    return Hierarchy(
        wnids=concepts,
        names=names,
        definitions=[lookup[w].definition for w in concepts],
        parents=parents,
        leaf_ancestors=leaf_ancestors,
        dropped=dropped,
    )
