"""COCO instance annotations and segmentation masks as concept sets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from invert.concepts import SkippedItemsWarning, from_coco, from_masks

COCO = {
    "images": [{"id": 10, "file_name": "a.jpg"}, {"id": 11, "file_name": "b.jpg"},
               {"id": 12, "file_name": "c.jpg"}],
    "categories": [{"id": 1, "name": "person", "supercategory": "person"},
                   {"id": 2, "name": "dog", "supercategory": "animal"},
                   {"id": 3, "name": "cat", "supercategory": "animal"}],
    "annotations": [{"id": 1, "image_id": 10, "category_id": 1, "iscrowd": 0},
                    {"id": 2, "image_id": 10, "category_id": 2, "iscrowd": 0},
                    {"id": 3, "image_id": 11, "category_id": 3, "iscrowd": 1},
                    {"id": 4, "image_id": 11, "category_id": 3, "iscrowd": 0}],
}


def test_coco_image_level_presence(tmp_path):
    p = tmp_path / "instances.json"
    p.write_text(json.dumps(COCO))
    cs = from_coco(p, sample_key="file_name")
    assert cs.sample_ids == ["a.jpg", "b.jpg", "c.jpg"]
    assert cs.names == ["person", "dog", "cat", "super:person", "super:animal"]
    np.testing.assert_array_equal(
        cs.to_dense(), [[1, 1, 0, 1, 1], [0, 0, 1, 0, 1], [0, 0, 0, 0, 0]])
    assert cs.parents["dog"] == ["super:animal"]
    assert cs.unlabelled_samples.tolist() == [2]  # an image without objects: a negative
    flat = from_coco(COCO, supercategories=False)
    assert flat.names == ["person", "dog", "cat"] and flat.sample_ids == [10, 11, 12]


def test_coco_crowd_and_bad_annotations():
    cs = from_coco(COCO, include_crowd=False, supercategories=False)
    assert cs.column("cat").tolist() == [False, True, False]  # a non-crowd one remains
    bad = json.loads(json.dumps(COCO))
    bad["annotations"] += [{"id": 5, "image_id": 99, "category_id": 1},
                           {"id": 6, "image_id": 12, "category_id": 42}]
    with pytest.raises(ValueError, match="2 annotation"):
        from_coco(bad)
    with pytest.warns(SkippedItemsWarning):
        cs = from_coco(bad, errors="skip")
    assert [r["reason"] for r in cs.skipped] == ["unknown image_id 99", "unknown category_id 42"]
    assert not cs.to_dense()[2].any()
    dup = json.loads(json.dumps(COCO))
    dup["images"].append({"id": 10, "file_name": "d.jpg"})
    with pytest.raises(ValueError, match="duplicate image id 10"):
        from_coco(dup)
    with pytest.raises(ValueError, match="categories"):
        from_coco({"images": [], "annotations": []})


def test_masks_min_area_pixels_and_fraction():
    m1 = np.zeros((10, 10), dtype=np.int32)
    m1[:5, :] = 1  # 50 px of label 1
    m1[9, 9] = 2  # 1 px of label 2
    m2 = np.zeros((2, 10, 10), dtype=np.int64)  # two layers; label 3 on both, overlapping
    m2[0, 0, :4] = 3
    m2[1, 0, 2:6] = 3  # union: 6 px
    cs = from_masks([m1, m2], ["sky", "bird", "tree"], min_area=2)
    np.testing.assert_array_equal(cs.to_dense(), [[1, 0, 0], [0, 0, 1]])
    cs = from_masks([m1, m2], ["sky", "bird", "tree"], min_area=7)
    np.testing.assert_array_equal(cs.to_dense(), [[1, 0, 0], [0, 0, 0]])
    frac = from_masks([m1, m2], {1: "sky", 3: "tree"}, min_area=0.5, errors="skip")
    np.testing.assert_array_equal(frac.to_dense(), [[1, 0], [0, 0]])
    assert [r["reason"] for r in frac.skipped] == ["unknown label 2 (1 px)"]


def test_masks_bad_input(tmp_path):
    m = np.array([[0, 5]])
    with pytest.raises(ValueError, match="label value 5"):
        from_masks([m], ["a"])
    with pytest.raises(ValueError, match="min_area"):
        from_masks([m], ["a"], min_area=0)
    with pytest.raises(TypeError, match="integer label map"):
        from_masks([np.array([[0.5]])], ["a"])
    with pytest.raises(ValueError, match="names"):
        from_masks([m], {0: "background"})


def test_mask_images_broden_encoding(tmp_path):
    pil = pytest.importorskip("PIL.Image", reason="mask images need pillow")
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[0, :, 0] = 4  # label 4
    rgb[1, :, 0], rgb[1, :, 1] = 2, 1  # label 2 + 256 = 258
    path = tmp_path / "m.png"
    pil.fromarray(rgb).save(path)
    cs = from_masks([path], {4: "wall", 258: "lamp"}, encoding="broden", min_area=4)
    assert cs.sample_ids == [str(path)]
    np.testing.assert_array_equal(cs.to_dense(), [[1, 1]])
    with pytest.raises(ValueError, match="single-channel"):
        from_masks([path], {4: "wall"})
