"""WordNet sense overrides (issue 12.5): invert's shipped fixes, user files, and where each
concept came from; short reprs and careful table headers (12.7, 14 G)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from invert.concepts import ConceptSet, from_folders, from_table, imagenet_hierarchy
from invert.concepts.senses import read_senses, shipped_senses

TREE = ["animals/mammals/bears/toys/edward_bear.png", "animals/mammals/bears/grizzly.png",
        "animals/mammals/hedgehog.png", "animals/mammals/fox.png", "medical/stethoscope.png",
        "medical/syringe.png", "drawings/penguin_bw.png", "people/toys/ball.png"]


def make_tree(root, files=TREE):
    for f in files:
        p = root / f
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    return root


def _choices(cs):
    return {r["path"]: r for r in cs.sense_choices}


def _labels(cs, sample):
    row = cs.to_dense()[cs.sample_ids.index(sample)]
    return {cs.names[j] for j in np.flatnonzero(row)}


def test_the_demos_four_wrong_senses_are_fixed_by_default(tmp_path, wordnet):
    cs = from_folders(make_tree(tmp_path), wordnet=wordnet)
    ch = _choices(cs)
    assert ch["animals/mammals/bears/toys"]["name"] == "plaything.n.01"  # not toy_dog.n.01
    assert ch["animals/mammals/bears/toys"]["rule"] == "override"
    assert ch["animals/mammals/bears/toys"]["override"] == "invert default"
    assert ch["animals/mammals/hedgehog"]["name"] == "hedgehog.n.02"  # not porcupine.n.01
    assert ch["medical"]["wnid"] is None  # not checkup.n.01
    assert ch["drawings/penguin_bw"]["name"] == "penguin.n.01"  # not biological_warfare.n.01
    teddy = _labels(cs, "animals/mammals/bears/toys/edward_bear.png")
    assert "dog.n.01" not in teddy and "toy_dog.n.01" not in teddy
    assert {"teddy.n.01", "plaything.n.01"} <= teddy
    assert "rodent.n.01" not in _labels(cs, "animals/mammals/hedgehog.png")
    assert "biological_warfare.n.01" not in cs.names and "checkup.n.01" not in cs.names
    assert any("medical" == r["item"] for r in cs.skipped)


def test_without_the_shipped_senses_the_rule_alone_decides(tmp_path, wordnet):
    cs = from_folders(make_tree(tmp_path), wordnet=wordnet, default_senses=False)
    ch = _choices(cs)
    assert ch["animals/mammals/bears/toys"]["name"] == "toy_dog.n.01"
    assert ch["animals/mammals/hedgehog"]["name"] == "porcupine.n.01"
    assert ch["medical"]["name"] == "checkup.n.01"
    assert ch["drawings/penguin_bw"]["name"] == "biological_warfare.n.01"


@pytest.mark.parametrize("kind", ["tsv", "csv", "json", "mapping"])
def test_user_senses_override_words_and_paths(tmp_path, wordnet, kind):
    root = make_tree(tmp_path / "tree")
    rows = {"fox": "n02118333", "medical": "medical_instrument.n.01",
            "animals/mammals/bears/grizzly": "-"}
    if kind == "mapping":
        senses = dict(rows) | {"animals/mammals/bears/grizzly": None}
    elif kind == "json":
        senses = tmp_path / "senses.json"
        senses.write_text(json.dumps(rows))
    else:
        sep = "\t" if kind == "tsv" else ","
        senses = tmp_path / f"senses.{kind}"
        senses.write_text(f"# my senses\nword{sep}synset\n"
                          + "".join(f"{k}{sep}{v}{sep}why\n" for k, v in rows.items()))
    cs = from_folders(root, wordnet=wordnet, senses=senses)
    ch = _choices(cs)
    assert ch["animals/mammals/fox"]["name"] == wordnet.synset("n02118333").name
    assert ch["medical"]["name"] == "medical_instrument.n.01"
    assert ch["medical"]["override"] == ("senses=" if kind == "mapping" else senses.name)
    assert ch["animals/mammals/bears/grizzly"]["wnid"] is None
    assert ch["animals/mammals/bears/toys"]["name"] == "plaything.n.01"  # shipped still apply


def test_bad_senses_are_errors(tmp_path, wordnet):
    with pytest.raises(ValueError, match="unknown"):
        read_senses({"fox": "no_such.n.01"}, wordnet)
    bad = tmp_path / "bad.tsv"
    bad.write_text("just-one-column\n")
    with pytest.raises(ValueError, match="senses"):
        read_senses(bad, wordnet)
    with pytest.raises(FileNotFoundError):
        read_senses(tmp_path / "missing.tsv", wordnet)
    assert shipped_senses(wordnet).get("Toys")[1] == wordnet.synset("plaything.n.01").wnid


def test_concept_sources_survive_subset_and_save(tmp_path, wordnet):
    cs = from_folders(make_tree(tmp_path / "tree"), wordnet=wordnet)
    src = cs.concept_sources()
    assert src["plaything.n.01"][0] == {"word": "toys", "path": "animals/mammals/bears/toys",
                                        "rule": "override", "override": "invert default"}
    assert "carnivore.n.01" in cs.names and "carnivore.n.01" not in src  # a hypernym only
    sub = cs.subset(samples=[0, 1, 2])
    assert sub.concept_sources() == src | {}
    cs.save(tmp_path / "cs")
    back = ConceptSet.load(tmp_path / "cs.npz")
    assert back.sense_choices == cs.sense_choices
    assert back.concept_sources() == src
    many = {"sense_choices": [{"name": "a", "word": f"w{i}", "path": f"p{i}", "rule": "first"}
                              for i in range(8)]}
    one = ConceptSet(np.ones((2, 1), dtype=bool), ["a"], warn_constant=False, **many)
    assert one.concept_sources(limit=5)["a"][-1] == {"more": 3}


def test_reprs_are_short():
    h = imagenet_hierarchy()
    assert len(repr(h)) < 200 and "1473 concepts" in repr(h)
    cs = ConceptSet(np.eye(3, dtype=bool), ["a", "b", "c"])
    assert repr(cs) == "ConceptSet(3 samples x 3 concepts, dense)"


def test_table_headers_with_quoted_commas_and_empty_cells(tmp_path):
    good = tmp_path / "good.csv"
    good.write_text('sample,"dog, big",cat\ns1,1,0\ns2,0,1\n')
    assert from_table(good).names == ["dog, big", "cat"]
    empty = tmp_path / "empty.csv"
    empty.write_text("sample,,cat\ns1,1,0\ns2,0,1\n")
    with pytest.raises(ValueError, match="empty column name"):
        from_table(empty)
    dup = tmp_path / "dup.csv"
    dup.write_text('sample,"dog, big","dog, big"\ns1,1,0\n')
    with pytest.raises(ValueError, match="duplicate column names"):
        from_table(dup)


def test_the_demo_photos_get_the_fixed_senses(wordnet):
    from invert.demo import STAMPS_ROOT, photo_stamps

    if not STAMPS_ROOT.is_dir():
        pytest.skip("Tux Paint stamps not installed (apt-get install tuxpaint-stamps-default)")
    cs = photo_stamps(STAMPS_ROOT)
    ch = _choices(cs)
    assert ch["animals/mammals/bears/toys"]["name"] == "plaything.n.01"
    assert ch["animals/mammals/hedgehog"]["name"] == "hedgehog.n.02"
    assert ch["medical"]["wnid"] is None
    assert "toy_dog.n.01" not in _labels(cs, "animals/mammals/bears/toys/edward_bear.png")
    assert cs.concept_sources()["hedgehog.n.02"][0]["path"] == "animals/mammals/hedgehog"
