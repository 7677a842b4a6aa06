"""Spatial maps of conv channels (``OUT/maps_<slug>.npz``) drawn over the exemplars."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from report_runs import small_run

from invert.report import build_report
from invert.report.maps import heat_rgba

PIL = pytest.importorskip("PIL.Image")
pytest.importorskip("jinja2")


def _write_maps(out, a: np.ndarray, *, t: int = 4, crop=None) -> np.ndarray:
    """Maps of each unit's top ``t - 1`` samples (one padded row entry), hot top-left."""
    k = a.shape[1]
    samples = np.full((k, t), -1, dtype=np.int64)
    maps = np.zeros((k, t, 7, 7), dtype=np.float16)
    for u in range(k):
        top = np.argsort(-a[:, u])[: t - 1]
        samples[u, : t - 1] = top
        for j in range(t - 1):
            maps[u, j, 1, 1] = 4.0 - j  # the hot spot
            maps[u, j, 5, 5] = 0.5
    extra = {} if crop is None else {"input_crop": np.array(crop)}
    np.savez(out / "maps_feat.npz", units=np.array([str(u) for u in range(k)]),
             samples=samples, maps=maps, **extra)
    return samples


def _heat_pngs(page: str) -> list[np.ndarray]:
    uris = re.findall(r'class="heat" style="background-image:url\(data:image/png;base64,'
                      r'([A-Za-z0-9+/=]+)\)"', page)
    out = []
    for u in uris:
        with PIL.open(io.BytesIO(base64.b64decode(u))) as im:
            assert im.mode == "RGBA"
            out.append(np.asarray(im))
    return out


def test_heat_colours_rise_with_the_activation():
    m = np.array([[0.0, 1.0], [2.0, 4.0]])
    rgba = heat_rgba(m, 4.0)
    assert rgba.shape == (2, 2, 4) and rgba.dtype == np.uint8
    alpha = rgba[..., 3].ravel()
    assert alpha[0] == 0 and np.all(np.diff(alpha) > 0)
    assert tuple(rgba[1, 1, :3]) == (230, 0, 0)  # the top is red
    assert heat_rgba(-m, 4.0)[..., 3].max() == 0  # negative values: transparent


def test_overlays_render_over_the_model_view(tmp_path):
    r = small_run(tmp_path / "out", images=tmp_path / "imgs")
    out, a = r["out"], r["a"]
    samples = _write_maps(out, a, crop=(40, 32))
    build_report(out, progress=False)
    page = (out / "report" / "units" / "feat" / "0.html").read_text()
    heats = _heat_pngs(page)
    assert len(heats) == 3  # the top 3 of the 10 exemplars have maps
    for h in heats:
        assert h.shape == (7, 7, 4)
        alpha = h[..., 3]
        assert np.unravel_index(alpha.argmax(), alpha.shape) == (1, 1)
        assert alpha[0, 0] == 0
    assert heats[0][1, 1, 3] > heats[2][1, 1, 3]  # one colour scale per unit
    assert "where in the image the channel activates" in page
    for i in samples[0, :3]:
        crop = out / "report" / "assets" / "thumbs" / f"{i}_40_32.jpg"
        with PIL.open(crop) as im:
            assert im.width == im.height  # the centre square the model saw
    boxes = re.findall(r'class="ov" style="width:(\d+)px;height:(\d+)px"', page)
    assert boxes == [("120", "120")] * 3


def test_overlays_without_crop_cover_the_whole_image(tmp_path):
    r = small_run(tmp_path / "out", images=tmp_path / "imgs")
    _write_maps(r["out"], r["a"])
    build_report(r["out"], progress=False)
    page = (r["out"] / "report" / "units" / "feat" / "1.html").read_text()
    boxes = re.findall(r'class="ov" style="width:(\d+)px;height:(\d+)px"', page)
    assert len(boxes) == 3
    assert all(max(int(w), int(h)) == 120 for w, h in boxes)
    assert any(w != h for w, h in boxes)  # 48x32 images keep their shape


def test_a_broken_maps_file_is_skipped_with_a_warning(tmp_path, caplog):
    r = small_run(tmp_path / "out", images=tmp_path / "imgs")
    np.savez(r["out"] / "maps_feat.npz", units=np.array(["0"]), samples=np.zeros((2, 3)),
             maps=np.zeros((2, 3, 4, 4)))
    build_report(r["out"], progress=False)
    assert "spatial maps" in caplog.text
    page = (r["out"] / "report" / "units" / "feat" / "0.html").read_text()
    assert 'class="heat"' not in page


def test_maps_are_not_unpickled(tmp_path, caplog):
    r = small_run(tmp_path / "out", images=tmp_path / "imgs")
    np.savez(r["out"] / "maps_feat.npz", units=np.array(["0", None], dtype=object),
             samples=np.zeros((2, 3), dtype=int), maps=np.zeros((2, 3, 4, 4)))
    build_report(r["out"], progress=False)
    assert "spatial maps" in caplog.text and "pickle" in caplog.text.lower()
