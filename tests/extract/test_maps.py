"""keep_maps: the spatial maps of each channel's top samples, against a hand computation."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from _extract_models import CountingConvNet

from invert.extract import SpatialMaps, collect_activations, read_maps, write_maps


def _data() -> torch.Tensor:
    x = torch.from_numpy(np.random.default_rng(3).normal(size=(11, 3, 6, 7)).astype("f4"))
    x[7] = x[2]  # a tie: sample 2 must come before sample 7
    return x


def _by_hand(net: CountingConvNet, x: torch.Tensor, reduce, top: int):
    with torch.no_grad():
        h = net.relu(net.conv(x)).numpy().astype(np.float64)  # (N, C, H, W)
    flat = h.reshape(*h.shape[:2], -1)
    r = {"mean": flat.mean(-1), "max": flat.max(-1)}.get(reduce)
    if r is None:
        r = np.quantile(flat, reduce, axis=-1)
    order = np.stack([np.argsort(-r[:, c], kind="stable")[:top] for c in range(h.shape[1])])
    maps = np.stack([h[order[c], c] for c in range(h.shape[1])])
    values = np.stack([r[order[c], c] for c in range(h.shape[1])])
    return order, maps, values


@pytest.mark.parametrize("reduce", ["mean", "max", 0.75])
def test_maps_of_the_top_samples_match_a_hand_computation(reduce):
    net, x = CountingConvNet(), _data()
    acts = collect_activations(net, x, "relu", reduce=reduce, keep_maps=3, batch_size=4,
                               progress=False)
    order, maps, values = _by_hand(net, x, reduce, 3)
    m = acts.maps
    assert isinstance(m, SpatialMaps) and m.units == acts.unit_ids == ["0", "1", "2", "3", "4"]
    assert m.samples.dtype == np.int64 and m.maps.dtype == np.float16
    assert m.maps.shape == (5, 3, 6, 7)
    np.testing.assert_array_equal(m.samples, order)
    np.testing.assert_allclose(m.maps.astype(np.float64), maps, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(m.values, values, rtol=1e-5, atol=1e-6)
    # the activation values themselves are unchanged by keeping maps
    plain = collect_activations(net, x, "relu", reduce=reduce, batch_size=4, progress=False)
    np.testing.assert_array_equal(np.asarray(acts), np.asarray(plain))
    assert plain.maps is None


def test_ties_go_to_the_earlier_sample_and_t_is_cut_to_n():
    net, x = CountingConvNet(), _data()
    acts = collect_activations(net, x, "relu", reduce="mean", keep_maps=50, batch_size=3,
                               progress=False)
    assert acts.maps.samples.shape == (5, 11)  # T cut to the number of samples
    for c in range(5):
        row = list(acts.maps.samples[c])
        assert row.index(2) < row.index(7)  # identical samples: the earlier one first
        assert sorted(row) == list(range(11))


def test_only_feature_maps_get_maps_and_a_warning_without_any(caplog):
    net, x = CountingConvNet(), _data()
    out = collect_activations(net, x, ["relu", "fc"], keep_maps=2, progress=False)
    assert out["relu"].maps is not None and out["fc"].maps is None
    with caplog.at_level(logging.WARNING, logger="invert.extract.collect"):
        none = collect_activations(net, x, "relu", reduce="none", keep_maps=2, progress=False)
    assert none.maps is None
    assert "no spatial maps were kept" in caplog.text


def test_write_and_read_maps(tmp_path):
    net, x = CountingConvNet(), _data()
    acts = collect_activations(net, x, "relu", keep_maps=2, progress=False)
    path = write_maps(acts, tmp_path / "out")
    assert path.name == "maps_relu.npz"
    with np.load(path, allow_pickle=False) as z:
        assert z["units"].tolist() == acts.unit_ids
        assert z["samples"].dtype == np.int64 and z["samples"].shape == (5, 2)
        assert z["maps"].dtype == np.float16 and z["maps"].shape == (5, 2, 6, 7)
        np.testing.assert_array_equal(z["samples"], acts.maps.samples)
    back = read_maps(path)
    np.testing.assert_array_equal(back.maps, acts.maps.maps)
    with pytest.raises(ValueError, match="keep_maps"):
        write_maps(collect_activations(net, x, "relu", progress=False), tmp_path)


def test_maps_through_the_cache(tmp_path):
    x = _data()
    net = CountingConvNet()
    first = collect_activations(net, x, ["relu", "fc"], keep_maps=3, batch_size=4,
                                cache_dir=tmp_path, progress=False)
    calls = net.calls
    again = collect_activations(net, x, ["relu", "fc"], keep_maps=3, batch_size=4,
                                cache_dir=tmp_path, progress=False)
    assert net.calls == calls  # found whole in the cache, maps included
    for a, b in ((first, again),):
        np.testing.assert_array_equal(a["relu"].maps.samples, b["relu"].maps.samples)
        np.testing.assert_array_equal(a["relu"].maps.maps, b["relu"].maps.maps)
        np.testing.assert_array_equal(a["relu"].maps.values, b["relu"].maps.values)
        assert b["relu"].maps.units == a["relu"].unit_ids and b["fc"].maps is None
    without = collect_activations(net, x, ["relu", "fc"], batch_size=4, cache_dir=tmp_path,
                                  progress=False)
    assert without["relu"].maps is None  # its own cache entry
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 2
    order, _, _ = _by_hand(net, x, "mean", 3)
    np.testing.assert_array_equal(again["relu"].maps.samples, order)


def test_maps_of_a_stream_are_recomputed_whole(tmp_path):
    x = _data()
    net = CountingConvNet()
    stream = [x[:4], x[4:8], x[8:]]
    first = collect_activations(net, stream, "relu", keep_maps=2, cache_dir=tmp_path,
                                progress=False)
    again = collect_activations(net, stream, "relu", keep_maps=2, cache_dir=tmp_path,
                                progress=False)
    order, _, _ = _by_hand(net, x, "mean", 2)
    np.testing.assert_array_equal(first.maps.samples, order)
    np.testing.assert_array_equal(again.maps.samples, order)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_keep_maps_must_be_a_non_negative_int(bad):
    with pytest.raises(ValueError, match="keep_maps"):
        collect_activations(CountingConvNet(), _data(), "relu", keep_maps=bad, progress=False)
