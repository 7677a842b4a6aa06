"""Concept sets from folder trees: each folder level (and the file name) is a concept."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._validate import bad
from .core import ConceptSet
from .senses import SenseOverrides, normalize_name, read_senses, shipped_senses
from .util import list_files, normalize_extensions, report_skipped
from .wordnet import Synset, WordNet

__all__ = ["from_folders", "choose_sense", "IMAGE_EXTENSIONS"]

from .._files import IMAGE_EXTENSIONS

logger = logging.getLogger(__name__)


_SPLIT = re.compile(r"[_\-\s]+")


def _candidates(word: str) -> list[str]:
    """Ways to read a folder/file name as a WordNet noun, most specific first.

    ``'baby_penguin'`` -> ``['baby_penguin', 'penguin', 'baby']``: the whole name, then shorter
    runs of its tokens ending at the last token, then the other tokens from last to first. Digits
    are stripped from tokens (``'penguin2'`` -> ``'penguin'``).
    """
    toks = [re.sub(r"\d+", "", t) for t in _SPLIT.split(word.strip().lower())]
    toks = [t for t in toks if len(t) > 1]
    out: list[str] = []
    for k in range(len(toks)):
        out.append("_".join(toks[k:]))
    out += list(reversed(toks[:-1]))
    return list(dict.fromkeys(c for c in out if c))


def choose_sense(
    word: str, context: Sequence[str], wordnet: WordNet, context_words: Sequence[str] = (),
    *, senses: SenseOverrides | None = None,
) -> tuple[str | None, str, str | None]:
    """Pick the WordNet noun sense of a folder or file name.

    Parameters
    ----------
    word : str
        The name (``'penguin'``, ``'birds'``, ``'baby_penguin'``).
    context : sequence of str
        WNIDs of the senses already chosen for the enclosing folders, nearest first.
    wordnet : WordNet
    context_words : sequence of str
        The enclosing folder names (nearest first), used when their own sense is unknown.
    senses : SenseOverrides, optional
        Overrides (see :mod:`invert.concepts.senses`): when the whole name has one, it is the
        choice (rule ``"override"``; a ``None`` override gives no sense); an override of a
        token replaces that token's senses.

    Returns
    -------
    (wnid or None, rule, lemma used or None)
        ``rule`` is ``"context:<folder>"`` when the chosen sense has a chosen folder sense (or,
        failing that, any sense of a folder name) among its hypernyms, ``"first"`` when no sense
        fits the folders and the first (most frequent) sense is taken, ``"none"`` when the name
        has no noun sense. The name is read as a whole first, then as shorter runs of its
        tokens (see ``_candidates``): a reading that fits the folders wins over one that does
        not (``'chicken_profile'`` under ``birds`` is ``chicken.n.02``); the nearest folder
        counts first.
    """
    cands = _candidates(word)
    if senses and cands:
        found, wnid, _src = senses.get(cands[0])
        if found:
            return wnid, "override", cands[0] if wnid else None
    ctx_any: list[tuple[str, set[str]]] = []
    for w in context_words:
        ctx_senses: set[str] = set()
        for cand in _candidates(w)[:1]:
            ctx_senses |= {s.wnid for s in _senses_of(cand, wordnet, senses)}
        ctx_any.append((w, ctx_senses))
    options: list[tuple[str, list, dict[str, set[str]]]] = []
    for cand in cands:
        found = _senses_of(cand, wordnet, senses)
        if found:
            closures = {
                s.wnid: set(wordnet.hypernym_closure(s.wnid, instances=True)) for s in found
            }
            options.append((cand, found, closures))
    if not options:
        return None, "none", None
    return _pick(options, context, list(context_words), ctx_any)


def _senses_of(cand: str, wordnet: WordNet, senses: SenseOverrides | None) -> list[Synset]:
    """The noun senses of one reading of a name (an override replaces them)."""
    if senses:
        found, wnid, _src = senses.get(cand)
        if found:
            return [wordnet.synset(wnid)] if wnid else []
    return wordnet.senses(cand)


def _pick(options: list[tuple[str, list, dict[str, set[str]]]], context: Sequence[str],
          ctx_words: list[str], ctx_any: list[tuple[str, set[str]]]
          ) -> tuple[str, str, str]:
    """The rule of :func:`choose_sense` over the readings that have senses."""
    # nearest enclosing folder first; for each, the readings of the name in candidate order
    for k, ctx in enumerate(context):
        for cand, senses, closures in options:
            for s in senses:
                if ctx in closures[s.wnid]:
                    label = ctx_words[k] if k < len(ctx_words) else ctx
                    return s.wnid, f"context:{label}", cand
    for w, ctx_senses in ctx_any:  # any sense of a folder name
        for cand, senses, closures in options:
            for s in senses:
                if ctx_senses & closures[s.wnid]:
                    return s.wnid, f"context:{w}", cand
    cand, senses, _ = options[0]
    return senses[0].wnid, "first", cand


def from_folders(
    root: str | os.PathLike,
    *,
    extensions: Sequence[str] | str | None = None,
    file_concepts: bool = True,
    wordnet: bool | WordNet = False,
    sparse: bool | None = None,
    senses: Mapping[str, str | None] | str | os.PathLike | None = None,
    default_senses: bool = True,
) -> ConceptSet:
    """A concept set from a folder tree: each file is a sample, each folder level a concept.

    ``animals/birds/penguin.png`` is labelled ``animals``, ``birds`` and (with
    ``file_concepts``) ``penguin``. Folders with the same name in different places are one
    concept. ``parents`` holds the folder nesting (``birds -> [animals]``).

    Parameters
    ----------
    root : path
        The top folder (its own name is not a concept). Sample ids are paths relative to it.
    extensions : sequence of str, optional
        Only files with these suffixes (case-insensitive, e.g. :data:`IMAGE_EXTENSIONS`) are
        samples; others, and hidden files/folders, are skipped and recorded in ``.skipped``.
    file_concepts : bool, default True
        Also make a concept of each file name without its extension.
    wordnet : bool or WordNet, default False
        Map names to WordNet noun synsets instead (``True`` uses :meth:`WordNet.default`): each
        folder name and file name gets one sense (see :func:`choose_sense`: the sense whose
        hypernyms include a sense of an enclosing folder, else the first sense), and the sample
        is labelled with those synsets and all their hypernyms (instance-hypernym links
        followed too). Concept names are then synset names (``penguin.n.01``), ids WNIDs
        (``n02056570``, aligned with ImageNet class WNIDs), descriptions definitions, and
        ``parents`` the hypernym links. The choice for each name is in ``.sense_choices``
        (word, path, synset, rule) and, per concept, :meth:`ConceptSet.concept_sources`;
        names without a noun sense are recorded in ``.skipped``.
    senses : mapping or path, optional
        With ``wordnet``: sense overrides, name (word, token or path) -> synset or ``None``,
        or a ``.csv``/``.tsv``/``.json`` file of them (see :mod:`invert.concepts.senses`).
    default_senses : bool, default True
        With ``wordnet``: apply invert's shipped overrides (``invert/data/senses.tsv``: e.g.
        ``toys`` is ``plaything.n.01``, not ``toy_dog.n.01``) under ``senses``.

    Notes
    -----
    Files directly in ``root`` have no folder concept; they are kept (with their file concept,
    or none) and, when left without any concept, warned about and listed by
    ``unlabelled_samples``.
    """
    root = Path(root)
    if not root.is_dir():
        raise bad("root", "an existing folder", str(root))
    exts = normalize_extensions(extensions)
    wn = _wordnet_of(wordnet)
    overrides = None
    if wn is not None:
        overrides = shipped_senses(wn) if default_senses else SenseOverrides()
        if senses is not None:
            overrides = overrides.update(read_senses(senses, wn))
    files, skipped = list_files(root, exts)
    if not files:
        raise bad("root", f"a folder with sample files (extensions {exts})",
                  f"no sample files under {str(root)!r}", raw=True)
    report_skipped(skipped, "from_folders")
    paths = [f.split("/") for f in files]
    if wn is None:
        cs = _plain_folders(root, files, paths, file_concepts, skipped, sparse)
    else:
        cs = _wordnet_folders(root, files, paths, file_concepts, wn, skipped, sparse, overrides)
    empty = cs.unlabelled_samples
    if len(empty):
        import warnings

        msg = (
            f"from_folders: {len(empty)} sample(s) have no concept (kept; see "
            f".unlabelled_samples), e.g. {[files[i] for i in empty[:5]]}"
        )
        logger.info(msg)
        warnings.warn(msg, UserWarning, stacklevel=2)
    return cs


def _wordnet_of(wordnet: Any) -> WordNet | None:
    if wordnet is True:
        return WordNet.default()
    if wordnet is False or wordnet is None:
        return None
    if isinstance(wordnet, WordNet):
        return wordnet
    raise bad("wordnet", "a bool or WordNet", type(wordnet).__name__, raw=True)


def _plain_folders(root, files, paths, file_concepts, skipped, sparse) -> ConceptSet:
    """The concept set of :func:`from_folders` without WordNet: folder and file names."""
    rows: list[list[str]] = []
    parents: dict[str, list[str]] = {}
    for parts in paths:
        levels = parts[:-1] + ([Path(parts[-1]).stem] if file_concepts else [])
        rows.append(levels)
        for k in range(1, len(levels)):
            ps = parents.setdefault(levels[k], [])
            if levels[k - 1] not in ps and levels[k - 1] != levels[k]:
                ps.append(levels[k - 1])
        if levels:
            parents.setdefault(levels[0], [])
    names = list(dict.fromkeys(c for r in rows for c in r))
    return ConceptSet.from_labels(
        rows,
        names=names,
        sample_ids=files,
        sparse=sparse,
        parents=parents,
        skipped=skipped,
        source=f"folder tree {root}",
    )


class _SenseChooser:
    """The sense of each folder/file chain (memoised), given the names above it; records
    each choice and adds names without a sense to ``skipped``."""

    def __init__(self, wn: WordNet, overrides: SenseOverrides | None,
                 skipped: list[dict[str, Any]]):
        self.wn = wn
        self.overrides = overrides
        self.skipped = skipped
        self.choices: dict[tuple[str, ...], dict[str, Any]] = {}

    def __call__(self, chain: tuple[str, ...]) -> dict[str, Any]:
        if chain in self.choices:
            return self.choices[chain]
        above = [self(chain[:k]) for k in range(len(chain) - 1, 0, -1)]  # nearest first
        ctx = [a["wnid"] for a in above if a["wnid"]]
        ctx_words = [a["word"] for a in above if a["wnid"]]
        all_words = list(reversed(chain[:-1]))
        path = "/".join(chain)
        found, wnid, source = (self.overrides.get(path) if self.overrides and "/" in path
                               else (False, None, None))
        if found:
            rule, lemma = "override", chain[-1] if wnid else None
        else:
            wnid, rule, lemma = choose_sense(chain[-1], ctx, self.wn, ctx_words or all_words,
                                             senses=self.overrides)
            if rule == "override" and self.overrides:
                source = self.overrides.get(normalize_name(_candidates(chain[-1])[0]))[2]
        rec = {"word": chain[-1], "path": path, "wnid": wnid,
               "name": self.wn.synset(wnid).name if wnid else None, "lemma": lemma,
               "rule": rule, "override": source if rule == "override" else None}
        self.choices[chain] = rec
        if wnid is None:
            why = ("no sense by override" if rule == "override"
                   else "no WordNet noun sense")
            self.skipped.append({"item": path,
                                 "reason": f"{why} (name not expanded): {chain[-1]!r}"})
        return rec


def _wordnet_folders(root, files, paths, file_concepts, wn, skipped, sparse,
                     overrides: SenseOverrides | None = None) -> ConceptSet:
    """The concept set of :func:`from_folders` with ``wordnet``: each folder (and file) name
    read as a WordNet sense in the context of the names above it, with all its hypernyms;
    ``sense_choices`` records each choice, names without a sense are recorded in ``skipped``."""
    choose = _SenseChooser(wn, overrides, skipped)
    rows: list[list[str]] = []
    used: dict[str, None] = {}
    closure_cache: dict[str, list[str]] = {}
    for parts in paths:
        chain = list(parts[:-1])
        if file_concepts:
            chain.append(Path(parts[-1]).stem)
        labels: list[str] = []
        for k in range(1, len(chain) + 1):
            rec = choose(tuple(chain[:k]))
            if rec["wnid"] is None:
                continue
            w = rec["wnid"]
            if w not in closure_cache:
                closure_cache[w] = [w, *wn.hypernym_closure(w, instances=True)]
            labels.extend(closure_cache[w])
        labels = list(dict.fromkeys(labels))
        for w in labels:
            used.setdefault(w, None)
        rows.append(labels)
    if any(r["wnid"] is None for r in choose.choices.values()):
        report_skipped([s for s in skipped if "(name not expanded)" in s["reason"]],
                       "from_folders")
    wnids = list(used)
    name_of = {w: wn.synset(w).name for w in wnids}
    kept = set(wnids)
    parents = {
        name_of[w]: [
            name_of[h]
            for h in wn.synset(w).hypernyms + wn.synset(w).instance_hypernyms
            if h in kept
        ]
        for w in wnids
    }
    return ConceptSet.from_labels(
        [[name_of[w] for w in r] for r in rows],
        names=[name_of[w] for w in wnids],
        sample_ids=files,
        sparse=sparse,
        ids=wnids,
        descriptions=[wn.synset(w).definition for w in wnids],
        parents=parents,
        skipped=skipped,
        source=f"folder tree {root} with WordNet senses",
        sense_choices=list(choose.choices.values()),
    )
