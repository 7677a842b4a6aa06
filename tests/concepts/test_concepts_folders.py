"""Folder trees as concepts, with and without WordNet senses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from invert.concepts import (
    IMAGE_EXTENSIONS,
    SkippedItemsWarning,
    choose_sense,
    from_folders,
    imagenet_classes,
)

TUXPAINT = Path("/usr/share/tuxpaint/stamps")


def make_tree(root, files):
    for f in files:
        p = root / f
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")


def test_each_folder_level_and_file_name_is_a_concept(tmp_path):
    make_tree(tmp_path, ["animals/birds/penguin.png", "animals/birds/owl.jpg",
                         "animals/fish/tench.PNG", "plants/tree.png"])
    cs = from_folders(tmp_path)
    assert cs.sample_ids == ["animals/birds/owl.jpg", "animals/birds/penguin.png",
                             "animals/fish/tench.PNG", "plants/tree.png"]
    labels = {s: {cs.names[j] for j in np.flatnonzero(r)}
              for s, r in zip(cs.sample_ids, cs.to_dense(), strict=True)}
    assert labels["animals/birds/penguin.png"] == {"animals", "birds", "penguin"}
    assert labels["plants/tree.png"] == {"plants", "tree"}
    assert cs.parents["birds"] == ["animals"] and cs.parents["penguin"] == ["birds"]
    assert cs.parents["animals"] == []
    no_files = from_folders(tmp_path, file_concepts=False)
    assert set(no_files.names) == {"animals", "birds", "fish", "plants"}


def test_extension_filter_and_unlabelled_files_are_reported(tmp_path):
    make_tree(tmp_path, ["animals/cat.png", "animals/cat.txt", "animals/.hidden.png",
                         "loose.png"])
    with pytest.warns(SkippedItemsWarning, match="skipped 2"):
        cs = from_folders(tmp_path, extensions=IMAGE_EXTENSIONS, file_concepts=False)
    assert {r["item"] for r in cs.skipped} == {"animals/cat.txt", "animals/.hidden.png"}
    assert cs.sample_ids == ["animals/cat.png", "loose.png"]
    assert [cs.sample_ids[i] for i in cs.unlabelled_samples] == ["loose.png"]
    with pytest.raises(ValueError, match="no sample files"):
        from_folders(tmp_path, extensions=[".gif"])
    with pytest.raises(ValueError, match="extensions"):
        from_folders(tmp_path, extensions=[""])
    with pytest.raises(ValueError, match="root"):
        from_folders(tmp_path / "nope")


def test_sense_choice_prefers_the_folder_context(wordnet):
    animal = wordnet.synset("animal.n.01").wnid
    wnid, rule, lemma = choose_sense("penguin", [wordnet.synset("bird.n.01").wnid], wordnet,
                                     ["birds"])
    assert wordnet.synset(wnid).name == "penguin.n.01" and rule == "context:birds"
    # 'crane' has a machine sense first; under animals the bird is chosen
    wnid, rule, _ = choose_sense("crane", [animal], wordnet, ["animals"])
    assert animal in wordnet.hypernym_closure(wnid) and rule == "context:animals"
    wnid, rule, _ = choose_sense("crane", [], wordnet, [])
    assert rule == "first" and wnid == wordnet.senses("crane")[0].wnid
    assert choose_sense("qwzx", [], wordnet) == (None, "none", None)
    wnid, rule, lemma = choose_sense("chicken_profile", [wordnet.synset("bird.n.01").wnid],
                                     wordnet, ["birds"])
    assert lemma == "chicken" and wordnet.synset(wnid).name == "chicken.n.02"


def test_wordnet_expansion_of_a_tree(tmp_path, wordnet):
    make_tree(tmp_path, ["animals/birds/penguin.png", "animals/birds/qwzx.png",
                         "devices/crane.png"])
    with pytest.warns(SkippedItemsWarning, match="no WordNet noun sense"):
        cs = from_folders(tmp_path, wordnet=wordnet)
    row = cs.to_dense()[cs.sample_ids.index("animals/birds/penguin.png")]
    got = {cs.names[j] for j in np.flatnonzero(row)}
    assert {"penguin.n.01", "bird.n.01", "animal.n.01", "entity.n.01"} <= got
    assert cs.ids[cs.names.index("penguin.n.01")] == wordnet.synset("penguin.n.01").wnid
    assert all(i.startswith("n") and len(i) == 9 for i in cs.ids)
    unknown = cs.to_dense()[cs.sample_ids.index("animals/birds/qwzx.png")]
    assert {cs.names[j] for j in np.flatnonzero(unknown)} == got - {"penguin.n.01", *(
        cs.names[j] for j in np.flatnonzero(row) if cs.names[j] in
        {"sphenisciform_seabird.n.01", "seabird.n.01", "aquatic_bird.n.01"})}
    rules = {r["path"]: r["rule"] for r in cs.sense_choices}
    assert rules["animals/birds/penguin"] == "context:birds"
    assert rules["animals/birds/qwzx"] == "none"
    # the first sense of 'crane' is the writer; under 'devices' it is the lifting device
    crane = next(r for r in cs.sense_choices if r["path"] == "devices/crane")
    assert crane["rule"] == "context:devices" and crane["wnid"] != wordnet.senses("crane")[0].wnid
    assert wordnet.synset("device.n.01").wnid in wordnet.hypernym_closure(crane["wnid"])


def test_tuxpaint_stamps_align_with_imagenet_wnids(wordnet):
    if not TUXPAINT.is_dir():
        pytest.skip("Tux Paint stamps not installed (apt-get install tuxpaint-stamps-default)")
    with pytest.warns(SkippedItemsWarning):
        cs = from_folders(TUXPAINT, extensions=IMAGE_EXTENSIONS, wordnet=wordnet)
    assert cs.n_samples > 100
    assert all(not s.endswith((".txt", ".svg", ".ogg")) for s in cs.sample_ids)
    assert any(r["item"].endswith(".svg") for r in cs.skipped)
    shared = set(cs.ids) & set(imagenet_classes())
    assert len(shared) >= 10  # some stamps are ImageNet classes (e.g. ostrich, magpie)
    for sid in [s for s in cs.sample_ids if s.startswith("animals/birds/")][:5]:
        assert cs.to_dense()[cs.sample_ids.index(sid), cs.names.index("bird.n.01")]
