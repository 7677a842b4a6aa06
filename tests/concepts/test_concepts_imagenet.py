"""ImageNet + WordNet concepts: parity with the paper's 1,473 concepts, and the label builders."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import invert.concepts.imagenet as imagenet_mod
import invert.concepts.wordnet as wordnet_mod
from invert.concepts import (
    SkippedItemsWarning,
    WordNet,
    WordNetNotFoundError,
    from_imagenet_folder,
    from_wnid_table,
    from_wnids,
    hypernym_hierarchy,
    imagenet_classes,
    imagenet_hierarchy,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_wordnet(monkeypatch, tmp_path):
    """Make any attempt to read the WordNet database fail, as on a machine without it."""
    monkeypatch.setenv("WORDNET_DIR", str(tmp_path / "nowhere"))
    monkeypatch.setattr("invert.concepts.wordnet.DEFAULT_WORDNET_DIRS", (str(tmp_path / "no"),))
    from invert.concepts.wordnet import _default_wordnet

    _default_wordnet.cache_clear()
    yield
    _default_wordnet.cache_clear()


def test_parity_with_the_papers_1473_concepts_without_wordnet(reference, no_wordnet):
    assert not WordNet.available()
    h = imagenet_hierarchy()
    assert len(h.names) == len(reference) == 1473
    assert h.wnids == [r["offset"] for r in reference]  # same WNIDs, same order
    assert h.names == [r["name"] for r in reference]
    assert h.definitions == [r["definition"] for r in reference]
    assert imagenet_classes() == [r["offset"] for r in reference[:1000]]


def test_counting_distinct_classes_differs_by_exactly_contestant(reference):
    # The paper counted hypernyms as NLTK's closure yields them: contestant.n.01 lies above a
    # single class (ballplayer.n.01) but is reached via athlete.n.01 and player.n.01, so it is
    # counted twice and kept. Counting distinct classes drops it: that is the only difference.
    h = imagenet_hierarchy(count="leaves")
    assert len(h.names) == 1472
    missing = {r["offset"] for r in reference} - set(h.wnids)
    assert missing == {"n09613191"}
    assert h.dropped["n09613191"] == 1
    paper = imagenet_hierarchy()
    contestant = paper.names.index("contestant.n.01")
    holders = [w for w, anc in paper.leaf_ancestors.items() if paper.wnids[contestant] in anc]
    assert [paper.names[paper.wnids.index(w)] for w in holders] == ["ballplayer.n.01"]


def test_package_data_is_what_the_script_builds_from_wordnet(tmp_path, reference, wordnet):
    out = tmp_path / "h.json.gz"
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "build_imagenet_hierarchy.py"), "--out", str(out)],
        check=True, capture_output=True, timeout=120,
    )
    shipped = REPO / "src" / "invert" / "data" / "imagenet_hierarchy.json.gz"
    assert gzip.decompress(out.read_bytes()) == gzip.decompress(shipped.read_bytes())
    assert shipped.stat().st_size < 200_000  # compact


def test_wordnet_database_gives_the_same_hierarchy(wordnet, reference):
    h = hypernym_hierarchy([r["offset"] for r in reference[:1000]], wordnet)
    assert h.names == [r["name"] for r in reference]
    for r in reference[::97]:  # names follow NLTK's rule: first lemma + its sense number
        s = wordnet.synset(r["offset"])
        assert s.name == r["name"] and wordnet.synset(r["name"]).wnid == r["offset"]


def _ancestors(parents: dict[str, list[str]], name: str) -> set[str]:
    out, stack = set(), [name]
    while stack:
        for p in parents[stack.pop()]:
            if p not in out:
                out.add(p)
                stack.append(p)
    return out


def test_labels_are_the_class_and_its_hypernym_concepts():
    classes = imagenet_classes()
    labels = [classes[0], classes[2], 1, classes[0]]
    cs = from_wnids(labels, sample_ids=["a", "b", "c", "d"])
    assert cs.n_concepts == 1473 and cs.is_sparse
    dense = cs.to_dense()
    for i, row in enumerate(dense):
        got = {cs.names[j] for j in np.flatnonzero(row)}
        leaf = cs.names[classes.index(labels[i]) if isinstance(labels[i], str) else labels[i]]
        assert got == {leaf} | _ancestors(cs.parents, leaf)
    fish, shark = cs.column("fish.n.01"), cs.column("shark.n.01")
    assert fish.tolist() == [True, True, True, True]
    assert shark.tolist() == [False, True, False, False]
    assert cs.ids[0] == "n01440764" and "Europe" in cs.descriptions[0]


def test_bad_labels_raise_or_are_skipped_and_recorded():
    classes = imagenet_classes()
    bad = [classes[0], "n99999999", "tench", None, 1000]
    with pytest.raises(ValueError, match="4 sample"):
        from_wnids(bad)
    with pytest.warns(SkippedItemsWarning, match="skipped 4"):
        cs = from_wnids(bad, errors="skip", sample_ids=list("abcde"))
    assert cs.sample_ids == ["a"]
    reasons = {r["item"]: r["reason"] for r in cs.skipped}
    assert set(reasons) == {"b", "c", "d", "e"}
    assert "not one of the 1000 classes" in reasons["b"] and "not a WNID" in reasons["c"]
    with pytest.raises(ValueError, match="errors"):
        from_wnids([classes[0]], errors="ignore")


def test_other_synsets_without_wordnet_say_how_to_install(no_wordnet):
    # dog.n.01 is no ImageNet class, but a hypernym of some: the shipped data covers it
    assert imagenet_hierarchy(["n02084071"]).names == ["dog.n.01"]
    with pytest.raises(FileNotFoundError, match="wordnet-base"):
        imagenet_hierarchy(["n11501381"])  # rain.n.01: outside the shipped data
    with pytest.raises(WordNetNotFoundError, match="apt-get install"):
        WordNet()


def test_other_synsets_use_wordnet(wordnet):
    dog, cat = wordnet.synset("dog.n.01").wnid, wordnet.synset("cat.n.01").wnid
    h = imagenet_hierarchy([dog, cat], min_classes=2)
    assert h.names[:2] == ["dog.n.01", "cat.n.01"]
    assert "carnivore.n.01" in h.names and "canine.n.02" not in h.names  # covers 1 class
    assert h.parents["dog.n.01"] == ["carnivore.n.01"] or "carnivore.n.01" in _ancestors(
        h.parents, "dog.n.01"
    )
    assert h.dropped[wordnet.synset("canine.n.02").wnid] == 1
    # a synset outside the shipped ImageNet data is read from WordNet itself
    rain = wordnet.synset("rain.n.01").wnid
    assert imagenet_hierarchy([rain]).names[0] == "rain.n.01"


def test_imagenet_folder(tmp_path):
    classes = imagenet_classes()
    for wnid, files in ((classes[0], ["a.JPEG", "b.jpg"]), (classes[2], ["c.png", "notes.txt"])):
        (tmp_path / wnid).mkdir()
        for f in files:
            (tmp_path / wnid / f).write_bytes(b"x")
    with pytest.warns(SkippedItemsWarning, match="extension"):
        cs = from_imagenet_folder(tmp_path)
    assert cs.sample_ids == [f"{classes[0]}/a.JPEG", f"{classes[0]}/b.jpg", f"{classes[2]}/c.png"]
    assert cs.column("tench.n.01").tolist() == [True, True, False]
    assert cs.skipped[0]["item"] == f"{classes[2]}/notes.txt"
    (tmp_path / "stray.png").write_bytes(b"x")  # a sample without a class folder
    (tmp_path / "not_a_wnid").mkdir()
    (tmp_path / "not_a_wnid" / "d.png").write_bytes(b"x")
    with pytest.raises(ValueError, match="2 sample"):
        from_imagenet_folder(tmp_path)
    with pytest.warns(SkippedItemsWarning):
        cs = from_imagenet_folder(tmp_path, errors="skip")
    assert {r["item"] for r in cs.skipped} >= {"stray.png", "not_a_wnid/d.png"}
    assert cs.n_samples == 3
    with pytest.raises(ValueError, match="root"):
        from_imagenet_folder(tmp_path / "missing")


def test_wnid_table(tmp_path):
    pytest.importorskip("pandas")
    classes = imagenet_classes()
    p = tmp_path / "labels.csv"
    p.write_text(f"sample,wnid\nimg1,{classes[5]}\nimg2,{classes[9]}\n")
    cs = from_wnid_table(p)
    assert cs.sample_ids == ["img1", "img2"]
    assert cs.column(cs.names[5]).tolist() == [True, False]
    with pytest.raises(ValueError, match="wnid_column"):
        from_wnid_table(p, wnid_column="label")
    p.write_text(f"sample,wnid\nimg1,{classes[5]}\nimg1,{classes[9]}\n")
    with pytest.raises(ValueError, match="sample_ids: expected unique"):
        from_wnid_table(p)
    p.write_text(f"sample,wnid\nimg1,{classes[5]}\nimg2,\nimg3,n00000001\n")
    with pytest.raises(ValueError, match="2 sample"):
        from_wnid_table(p)
    with pytest.warns(SkippedItemsWarning):
        cs = from_wnid_table(p, errors="skip")
    assert cs.sample_ids == ["img1"] and [r["reason"] for r in cs.skipped][0] == "no label"
    p.write_text("sample,wnid,wnid\na,b,c\n")
    with pytest.raises(ValueError, match="duplicate column"):
        from_wnid_table(p)


def test_package_data_loads_without_touching_wordnet(monkeypatch):
    def boom(*a, **k):  # pragma: no cover - must not be called
        raise AssertionError("WordNet database read for ImageNet classes")

    monkeypatch.setattr(WordNet, "__init__", boom)
    imagenet_mod._package_data.cache_clear()
    wordnet_mod._default_wordnet.cache_clear()  # no WordNet instance left from other tests
    h = imagenet_hierarchy()
    assert len(h.names) == 1473
    payload = json.loads(gzip.decompress(
        (REPO / "src" / "invert" / "data" / "imagenet_hierarchy.json.gz").read_bytes()))
    assert len(payload["classes"]) == 1000
