"""End to end on a real model and real photos: EfficientNet-Lite0 logits over the Tux Paint
photo stamps, explained with their WordNet concepts (issue 3's acceptance check)."""

from pathlib import Path

import numpy as np
import pytest

import invert

STAMPS = Path("/usr/share/tuxpaint/stamps")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not STAMPS.is_dir(), reason="apt-get install tuxpaint-stamps-default"),
    pytest.mark.skipif(not Path("/usr/share/wordnet/data.noun").exists(),
                       reason="apt-get install wordnet-base"),
]


def _ancestors(cs, name):
    """Hypernyms of ``name`` in the concept set, nearest first (breadth first)."""
    out, frontier, seen = [], list(cs.parents.get(name, [])), {name}
    while frontier:
        nxt = []
        for p in frontier:
            if p not in seen:
                seen.add(p)
                out.append(p)
                nxt.extend(cs.parents.get(p, []))
        frontier = nxt
    return out


def test_logit_units_are_explained_by_their_classes(tmp_path):
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("PIL")
    from invert.concepts import imagenet_classes
    from invert.demo import photo_stamps
    from invert.extract import ImageFolder, efficientnet_lite0

    cs = photo_stamps(STAMPS)
    model, transform = efficientnet_lite0()
    ds = ImageFolder(STAMPS, [STAMPS / str(s) for s in cs.sample_ids], transform, [], False)
    acts = invert.collect_activations(model, ds, "", batch_size=32, cache_dir=tmp_path,
                                      progress=False)
    assert acts.shape == (cs.n_samples, 1000)

    wnids = imagenet_classes()
    col = {i: j for j, i in enumerate(cs.ids)}
    counts = np.asarray(cs.matrix.sum(axis=0)).ravel()
    present = [(k, w) for k, w in enumerate(wnids) if w in col and counts[col[w]] > 0]
    assert len(present) >= 20

    aurocs, hits = [], 0
    logits = np.asarray(acts.values)
    units = [k for k, _ in present]
    best1 = invert.explain(logits[:, units], cs, length=1, beam_size=1, max_fraction=0.5)
    for (k, w), unit in zip(present, best1, strict=True):
        name = cs.names[col[w]]
        hyper = [h for h in _ancestors(cs, name) if counts[cs.names.index(h)] >= 3]
        if hyper:
            mask = cs.matrix[:, [cs.names.index(hyper[0])]].toarray().ravel().astype(bool) \
                if hasattr(cs.matrix, "toarray") else cs.matrix[:, cs.names.index(hyper[0])]
            aurocs.append(invert.auroc(logits[:, k], mask))
        if unit and not unit[0].formula.literals()[0].negated:
            found = cs.names[unit[0].formula.concepts()[0]]
            hits += found == name or found in _ancestors(cs, name)
    median = float(np.median(aurocs))
    share = hits / len(present)
    print(f"\n{len(present)} ImageNet classes among {cs.n_samples} photos: median AUROC of "
          f"the class logit for its nearest hypernym with >= 3 photos = {median:.3f} "
          f"(over {len(aurocs)} classes); best length-1 explanation is the class or a "
          f"hypernym for {share:.0%}")
    assert median >= 0.7
    assert share > 0.1
