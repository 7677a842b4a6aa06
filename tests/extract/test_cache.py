"""Cache: resumable after a crash, invalidated by changes, corruption detected and rebuilt."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from _extract_models import CountingConvNet, TinyTokenModel

from invert.extract import collect_activations
from invert.extract.cache import ShardStore, atomic_write, batch_digest, fingerprint_module

LAYERS = ["conv", "fc"]


def _run(model, data, cache, **kw):
    kw.setdefault("batch_size", 4)
    return collect_activations(model, data, LAYERS, cache_dir=cache, progress=False, **kw)


def _assert_same(a, b):
    for k in LAYERS:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]))
        assert a[k].unit_ids == b[k].unit_ids and a[k].sample_ids == b[k].sample_ids


def test_cached_result_is_memmapped_and_reused(tmp_path, convnet, images):
    first = _run(convnet, images, tmp_path)
    assert convnet.calls == 6
    assert isinstance(first["fc"].values, np.memmap)
    second = _run(convnet, images, tmp_path)
    assert convnet.calls == 6  # no forward pass at all
    _assert_same(first, second)
    plain = collect_activations(convnet, images, LAYERS, batch_size=4, progress=False)
    _assert_same(first, plain)
    assert not list(tmp_path.rglob("shard-*.npz"))  # consolidated: shards removed


def test_crash_in_model_resumes_without_recomputing(tmp_path, images):
    ref = collect_activations(CountingConvNet(), images, LAYERS, batch_size=4, progress=False)
    net = CountingConvNet()
    net.fail_at = 4  # dies during the 4th batch, after 3 finished
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(net, images, tmp_path)
    assert len(list(tmp_path.rglob("shard-*.npz"))) == 3
    net.fail_at = None
    net.calls = 0
    resumed = _run(net, images, tmp_path)
    assert net.calls == 6 - 3  # only the missing batches
    _assert_same(resumed, ref)


def test_crash_in_data_iterator_resumes(tmp_path, images):
    """A run killed mid-way (the data stream dies) resumes; streamed data is hashed per batch."""
    ref = collect_activations(CountingConvNet(), images, LAYERS, batch_size=4, progress=False)

    def stream(fail_after=None):
        for k, s in enumerate(range(0, 23, 4)):
            if fail_after is not None and k == fail_after:
                raise KeyboardInterrupt  # like Ctrl-C
            yield images[s : s + 4]

    net = CountingConvNet()
    with pytest.raises(KeyboardInterrupt):
        _run(net, stream(fail_after=2), tmp_path)
    assert net.calls == 2
    net.calls = 0
    resumed = _run(net, stream(), tmp_path)
    assert net.calls == 4
    _assert_same(resumed, ref)
    net.calls = 0
    again = _run(net, stream(), tmp_path)  # complete: every batch verified, none recomputed
    assert net.calls == 0
    _assert_same(again, ref)


def test_changed_weights_invalidate(tmp_path, convnet, images):
    a = _run(convnet, images, tmp_path)
    with torch.no_grad():
        convnet.fc.bias.add_(1.0)
    convnet.calls = 0
    b = _run(convnet, images, tmp_path)
    assert convnet.calls == 6
    np.testing.assert_allclose(b["fc"].values, np.asarray(a["fc"]) + 1.0, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "change",
    [
        {"reduce": "max"},
        {"batch_size": 5},
        {"directions": {"fc": np.eye(4)[:, :2]}},
    ],
)
def test_changed_settings_invalidate(tmp_path, convnet, images, change):
    _run(convnet, images, tmp_path)
    convnet.calls = 0
    _run(convnet, images, tmp_path, **change)
    assert convnet.calls > 0


def test_changed_tensor_data_invalidates(tmp_path, convnet, images):
    _run(convnet, images, tmp_path)
    changed = images.clone()
    changed[17, 0, 0, 0] += 1.0
    convnet.calls = 0
    b = _run(convnet, changed, tmp_path)
    assert convnet.calls == 6
    ref = collect_activations(convnet, changed, LAYERS, batch_size=4, progress=False)
    _assert_same(b, ref)


def test_changed_streamed_data_recomputes_only_changed_batches(tmp_path, convnet, images):
    batches = [images[s : s + 4] for s in range(0, 23, 4)]
    _run(convnet, batches, tmp_path)
    changed = [b.clone() for b in batches]
    changed[3][0] += 1.0
    convnet.calls = 0
    got = _run(convnet, changed, tmp_path)
    assert convnet.calls == 1
    ref = collect_activations(convnet, changed, LAYERS, progress=False)
    _assert_same(got, ref)


def test_cache_key_is_trusted_for_streams(tmp_path, convnet, images):
    batches = [images[s : s + 4] for s in range(0, 23, 4)]
    _run(convnet, iter(batches), tmp_path, cache_key="my-dataset-v1")
    convnet.calls = 0
    again = _run(convnet, iter(batches), tmp_path, cache_key="my-dataset-v1")
    assert convnet.calls == 0 and again["fc"].n_samples == 23


def _key_dir(tmp_path):
    (d,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    return d


def test_corrupt_shard_is_detected_and_rebuilt(tmp_path, images, caplog):
    ref = collect_activations(CountingConvNet(), images, LAYERS, batch_size=4, progress=False)
    net = CountingConvNet()
    net.fail_at = 5
    with pytest.raises(RuntimeError):
        _run(net, images, tmp_path)
    shard = _key_dir(tmp_path) / "shard-0000001.npz"
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # flip a byte in the middle (array data)
    shard.write_bytes(bytes(raw))
    (_key_dir(tmp_path) / "shard-0000002.npz").write_bytes(b"truncated")
    net.fail_at, net.calls = None, 0
    with caplog.at_level(logging.WARNING, logger="invert.extract.cache"):
        got = _run(net, images, tmp_path)
    assert net.calls == 6 - 4 + 2  # two missing + two corrupt shards recomputed
    assert "corrupt" in caplog.text
    _assert_same(got, ref)


def test_corrupt_consolidated_result_is_rebuilt(tmp_path, convnet, images):
    ref = _run(convnet, images, tmp_path)
    ref = {k: np.array(v.values) for k, v in ref.items()}
    d = _key_dir(tmp_path)
    vals = json.loads((d / "result.json").read_text())["files"]["fc"]["file"]
    raw = bytearray((d / vals).read_bytes())
    raw[-3] ^= 0x55
    (d / vals).write_bytes(bytes(raw))
    convnet.calls = 0
    got = _run(convnet, images, tmp_path)
    assert convnet.calls == 6
    np.testing.assert_array_equal(got["fc"].values, ref["fc"])
    # a truncated file is caught even without the checksum pass
    (d / vals).write_bytes(bytes(raw[:100]))
    convnet.calls = 0
    got = _run(convnet, images, tmp_path, verify_cache=False)
    assert convnet.calls == 6
    np.testing.assert_array_equal(got["fc"].values, ref["fc"])


def test_token_activations_cache_roundtrip(tmp_path):
    m = TinyTokenModel()
    data = {"input_ids": torch.tensor([[1, 2, 3], [4, 0, 0], [5, 6, 0]]),
            "attention_mask": torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 0]])}
    plain = collect_activations(m, data, "mix", reduce="tokens", batch_size=2, progress=False)
    c1 = collect_activations(m, data, "mix", reduce="tokens", batch_size=2, cache_dir=tmp_path,
                             progress=False)
    c2 = collect_activations(m, data, "mix", reduce="tokens", batch_size=2, cache_dir=tmp_path,
                             progress=False)
    for c in (c1, c2):
        np.testing.assert_array_equal(c.values, plain.values)
        np.testing.assert_array_equal(c.token_index, plain.token_index)
        assert c.sample_ids == plain.sample_ids == [(0, 0), (0, 1), (0, 2), (1, 0), (2, 0),
                                                    (2, 1)]


def test_fingerprint_and_digest_helpers(tmp_path):
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    assert fingerprint_module(a) == fingerprint_module(b)
    assert fingerprint_module(a) != fingerprint_module(torch.nn.Sequential(a))
    x = torch.arange(6.0).reshape(2, 3)
    assert batch_digest(x) == batch_digest(x.clone())
    assert batch_digest(x) != batch_digest(x + 1)
    assert batch_digest({"a": x}) != batch_digest({"b": x})

    def bad(f):
        f.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(tmp_path / "x.bin", bad)
    assert list(tmp_path.iterdir()) == []  # no partial file left behind
    store = ShardStore(tmp_path, "k", {"note": 1})
    store.write_shard(0, {"a": np.ones((2, 3), "f4")}, "h", {"m": 1})
    assert store.read_shard(0, "other-hash", ["a"]) is None  # stale batch: dropped
    assert not store.shard_path(0).exists()
