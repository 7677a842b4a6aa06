"""Cache: resumable after a crash, invalidated by changes, corruption detected and rebuilt."""

from __future__ import annotations

import errno
import importlib.util
import json
import logging
import multiprocessing
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from _extract_models import CountingConvNet, TinyTokenModel

from invert._validate import InvalidParameterError
from invert.extract import collect_activations
from invert.extract.cache import (
    ShardStore,
    atomic_write,
    batch_digest,
    fingerprint_module,
    fingerprint_state,
)

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


def _crash_at(net, n):
    """Make the ``n``-th forward pass of ``net`` fail. A hook, not ``net.fail_at``: changing an
    attribute of the model between the runs would (rightly) invalidate its cache."""

    def hook(mod, _args):
        if mod.calls + 1 == n:
            raise RuntimeError("simulated crash")

    return net.register_forward_pre_hook(hook)


def test_crash_in_model_resumes_without_recomputing(tmp_path, images):
    ref = collect_activations(CountingConvNet(), images, LAYERS, batch_size=4, progress=False)
    net = CountingConvNet()
    crash = _crash_at(net, 4)  # dies during the 4th batch, after 3 finished
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(net, images, tmp_path)
    assert len(list(tmp_path.rglob("shard-*.npz"))) == 3
    crash.remove()
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
    crash = _crash_at(net, 5)
    with pytest.raises(RuntimeError):
        _run(net, images, tmp_path)
    shard = _key_dir(tmp_path) / "shard-0000001.npz"
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # flip a byte in the middle (array data)
    shard.write_bytes(bytes(raw))
    (_key_dir(tmp_path) / "shard-0000002.npz").write_bytes(b"truncated")
    crash.remove()
    net.calls = 0
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


# ----------------------------------------------------------------------------- issue 14


class Scale(torch.nn.Module):
    """Multiplies by a plain attribute ``k`` (no parameter, no buffer, no extra_repr)."""

    def __init__(self, k: float = 1.0):
        super().__init__()
        self.k = k
        self.seen = []  # a list: a run-time record, not covered
        self.calls = 0  # assigned by forward: not covered

    def forward(self, x):
        self.calls += 1
        self.seen.append(x.shape[0])
        return self.k * x


def _scaled_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), Scale(1.0))


_SCALE_SRC = '''
import torch


class Scale(torch.nn.Module):
    def forward(self, x):
        return x * {factor}
'''


def _load_scale_class(tmp_path, factor):
    """``Scale`` of a module file whose ``forward`` multiplies by ``factor`` (same module
    name and qualified name each time: only the source differs)."""
    path = tmp_path / "edited_module.py"
    path.write_text(_SCALE_SRC.format(factor=factor))
    spec = importlib.util.spec_from_file_location("edited_module", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.Scale


def test_state_fingerprint_covers_attributes_and_code(tmp_path):
    net = _scaled_net()
    before = fingerprint_state(net)
    net(torch.ones(2, 3))  # counters and run-time lists change: not covered
    assert fingerprint_state(net) == before
    net[1].k = 2.0
    assert fingerprint_state(net) != before
    assert fingerprint_module(net) == fingerprint_module(_scaled_net())  # the key cannot see it
    net[1].k = 1.0
    net[1].extra = torch.ones(2)  # an unregistered tensor
    assert fingerprint_state(net) != before
    net[1].extra[0] = 3.0
    changed = fingerprint_state(net)
    assert changed != before
    type(net[1]).invert_cache_ignore = ("extra",)
    try:
        assert fingerprint_state(net) == before
    finally:
        del type(net[1]).invert_cache_ignore
    two = _load_scale_class(tmp_path, 2)()
    three = _load_scale_class(tmp_path, 3)()
    assert fingerprint_module(two) == fingerprint_module(three)
    assert fingerprint_state(two) != fingerprint_state(three)
    assert fingerprint_state(torch.nn.Linear(2, 2)) == fingerprint_state(torch.nn.Linear(2, 2))


def test_changed_module_attribute_invalidates(tmp_path):
    x = torch.randn(10, 3)
    net = _scaled_net()
    a = collect_activations(net, x, "", cache_dir=tmp_path, progress=False)
    net[1].k = 2.0
    b = collect_activations(net, x, "", cache_dir=tmp_path, progress=False)
    np.testing.assert_allclose(np.asarray(b), 2 * np.asarray(a), rtol=1e-6)
    c = collect_activations(net, x, "", cache_dir=tmp_path, progress=False)  # hit again
    assert net[1].calls == 2 and c.cache_path is not None
    np.testing.assert_array_equal(np.asarray(c), np.asarray(b))


def test_changed_forward_code_invalidates(tmp_path, caplog):
    x = torch.randn(10, 3)
    a = collect_activations(_load_scale_class(tmp_path, 2)(), x, "", cache_dir=tmp_path,
                            progress=False)
    with caplog.at_level(logging.INFO, logger="invert.extract.cache"):
        b = collect_activations(_load_scale_class(tmp_path, 3)(), x, "", cache_dir=tmp_path,
                                progress=False)
    assert "other attributes or code" in caplog.text
    np.testing.assert_allclose(np.asarray(b), 1.5 * np.asarray(a), rtol=1e-6)


def test_cache_without_state_record_is_used_as_before(tmp_path, caplog):
    """A cache of invert 0.1.0 records no state: the key alone decides (logged at INFO)."""
    x = torch.randn(10, 3)
    net = _scaled_net()
    a = collect_activations(net, x, "", cache_dir=tmp_path, progress=False)
    d = _key_dir(tmp_path)
    for name in ("manifest.json", "result.json"):
        doc = json.loads((d / name).read_text())
        doc.pop("state")
        doc.pop("checksum", None)
        (d / name).write_text(json.dumps(doc))
    net[1].k = 2.0
    with caplog.at_level(logging.INFO, logger="invert.extract.cache"):
        b = collect_activations(net, x, "", cache_dir=tmp_path, progress=False)
    assert net[1].calls == 1  # a hit
    assert "invert 0.1.0" in caplog.text
    np.testing.assert_array_equal(np.asarray(b), np.asarray(a))


def test_store_with_other_state_starts_afresh(tmp_path):
    old = ShardStore(tmp_path, "k", {"layers": ["a"]}, state="s1")
    old.write_shard(0, {"a": np.ones((2, 3), "f4")}, None, {})
    old.write_result({"a": [np.ones((2, 3), "f4")]}, {"a": (2, 3)},
                     {"layers": {"a": {"reduction": "none", "unit_ids": ["0", "1", "2"]}},
                      "sample_ids": [0, 1], "digests": []})
    old.close()
    assert ShardStore(tmp_path, "k", {"layers": ["a"]}, state="s1").read_shard(0, None, ["a"])
    new = ShardStore(tmp_path, "k", {"layers": ["a"]}, state="s2")
    assert new.read_shard(0, None, ["a"]) is None and not new.result_path.exists()
    assert json.loads(new.manifest_path.read_text())["state"] == "s2"


def test_shard_copied_over_another_index_is_refused(tmp_path, images, caplog):
    ref = collect_activations(CountingConvNet(), images, LAYERS, batch_size=4, progress=False)
    net = CountingConvNet()
    crash = _crash_at(net, 5)
    with pytest.raises(RuntimeError):
        _run(net, images, tmp_path)
    d = _key_dir(tmp_path)
    shutil.copy(d / "shard-0000000.npz", d / "shard-0000002.npz")  # a valid shard, wrong place
    crash.remove()
    net.calls = 0
    with caplog.at_level(logging.WARNING, logger="invert.extract.cache"):
        got = _run(net, images, tmp_path)
    assert net.calls == 6 - 4 + 1
    assert "holds batch 0, not batch 2" in caplog.text
    _assert_same(got, ref)


def _edit_unit_ids(doc):
    doc["layers"]["fc"]["unit_ids"].reverse()


def _edit_files(doc):
    doc["files"] = []


def _edit_sample_ids(doc):
    doc["sample_ids"] = doc["sample_ids"][:-2]


@pytest.mark.parametrize("edit", [_edit_unit_ids, _edit_files, _edit_sample_ids])
@pytest.mark.parametrize("checksum", [True, False])
def test_edited_result_json_is_rebuilt(tmp_path, convnet, images, edit, checksum):
    if edit is _edit_unit_ids and not checksum:
        pytest.skip("reordered ids fit the shapes: only the checksum can tell")
    ref = _run(convnet, images, tmp_path)
    ref = {k: (np.array(v.values), v.unit_ids, v.sample_ids) for k, v in ref.items()}
    path = _key_dir(tmp_path) / "result.json"
    doc = json.loads(path.read_text())
    edit(doc)
    if not checksum:  # as invert 0.1.0 wrote it
        doc.pop("checksum", None)
    path.write_text(json.dumps(doc))
    convnet.calls = 0
    got = _run(convnet, images, tmp_path)
    assert convnet.calls == 6  # rebuilt
    for k, (values, unit_ids, sample_ids) in ref.items():
        np.testing.assert_array_equal(got[k].values, values)
        assert got[k].unit_ids == unit_ids and got[k].sample_ids == sample_ids
    assert json.loads(path.read_text())["checksum"]


def test_multi_layer_cache_is_reused_whatever_the_layer_order(tmp_path):
    net = torch.nn.Sequential(*[torch.nn.Linear(3, 3) for _ in range(5)])
    calls = []
    net.register_forward_pre_hook(lambda *_: calls.append(1))
    x = torch.randn(8, 3)
    first = collect_activations(net, x, ["4", ""], cache_dir=tmp_path, progress=False)
    n = len(calls)
    again = collect_activations(net, x, ["4", ""], cache_dir=tmp_path, progress=False)
    assert len(calls) == n  # no forward pass: a hit
    assert list(again) == ["4", ""]
    for k in first:
        np.testing.assert_array_equal(np.asarray(again[k]), np.asarray(first[k]))


@pytest.mark.parametrize("complete", [False, True])
def test_temp_files_of_a_killed_consolidation_are_removed(tmp_path, images, complete):
    ref = collect_activations(CountingConvNet(), images, LAYERS, batch_size=4, progress=False)
    net = CountingConvNet()
    if complete:
        _run(net, images, tmp_path)
    else:
        crash = _crash_at(net, 6)
        with pytest.raises(RuntimeError):
            _run(net, images, tmp_path)
        crash.remove()
    d = _key_dir(tmp_path)
    left = [d / ".values-0.npy.1a2b3c.tmp", d / ".result.json.4d5e6f.tmp"]
    for p in left:
        p.write_bytes(b"half written")
    got = _run(net, images, tmp_path)
    assert not any(p.exists() for p in left)
    _assert_same(got, ref)


def test_cache_files_get_the_usual_permissions(tmp_path, images, convnet):
    old = os.umask(0o022)
    try:
        net = CountingConvNet()
        crash = _crash_at(net, 3)
        with pytest.raises(RuntimeError):
            _run(net, images, tmp_path / "partial")
        crash.remove()
        _run(convnet, images, tmp_path / "full")
    finally:
        os.umask(old)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name.startswith("shard-") for p in files)
    assert any(p.name == "result.json" for p in files)
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files} == {
        p.name: 0o644 for p in files}


def _refuse_writes(monkeypatch, folder, err):
    """Make ``folder`` behave like a read-only file system (or a folder of another user)."""
    real_open, real_mkdir = os.open, os.mkdir
    folder = str(folder)
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT

    def inside(path):
        return os.path.abspath(os.fspath(path)).startswith(folder)

    def fake_open(path, flags, *args, **kw):
        if inside(path) and flags & writing:
            raise err(errno.EROFS if err is OSError else errno.EACCES, "refused", path)
        return real_open(path, flags, *args, **kw)

    def fake_mkdir(path, *args, **kw):
        if inside(path):
            if os.path.exists(path):
                raise FileExistsError(errno.EEXIST, "exists", path)
            raise err(errno.EROFS if err is OSError else errno.EACCES, "refused", path)
        return real_mkdir(path, *args, **kw)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)


@pytest.mark.parametrize("err", [PermissionError, OSError])
def test_unwritable_cache_dir_is_a_clear_error(tmp_path, convnet, images, monkeypatch, err):
    cache = tmp_path / "cache"
    cache.mkdir()
    _refuse_writes(monkeypatch, cache, err)
    with pytest.raises(InvalidParameterError, match=r"cache_dir: expected a folder this "
                       r"process can write to, got '.*cache'"):
        _run(convnet, images, cache)


def test_complete_cache_in_a_read_only_folder_is_read(tmp_path, convnet, images, monkeypatch):
    cache = tmp_path / "cache"
    first = _run(convnet, images, cache)
    _refuse_writes(monkeypatch, cache, OSError)
    convnet.calls = 0
    again = _run(convnet, images, cache)
    assert convnet.calls == 0
    _assert_same(first, again)


def _race_worker(role, cache, a_at_last_batch, b_waiting, out):
    """One of two processes extracting into one cache (see the test below)."""
    import time

    net = CountingConvNet()
    imgs = torch.from_numpy(np.random.default_rng(0).normal(size=(23, 3, 6, 7)).astype("f4"))

    def hook(mod, _args):
        if role == "a" and mod.calls == 5:  # A's last batch: let B start
            a_at_last_batch.set()
            b_waiting.wait(60)
        if role == "b" and mod.calls == 0:  # B reused A's shards 0-4; wait until A is done
            b_waiting.set()
            deadline = time.monotonic() + 60
            while not list(Path(cache).rglob("result.json")) and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.5)

    net.register_forward_pre_hook(hook)
    if role == "b":
        a_at_last_batch.wait(60)
    try:
        got = collect_activations(net, imgs, LAYERS, batch_size=4, cache_dir=cache,
                                  progress=False)
        out.put((role, net.calls, {k: np.array(v.values) for k, v in got.items()}))
    except Exception as e:  # noqa: BLE001 - reported to the parent
        out.put((role, None, f"{type(e).__name__}: {e}"))


def test_two_processes_share_one_cache(tmp_path, convnet, images):
    """B starts while A computes its last batch, reuses A's first five shards, and
    consolidates after A has finished: A leaves the shards to B, B reuses A's result."""
    ref = collect_activations(convnet, images, LAYERS, batch_size=4, progress=False)
    ctx = multiprocessing.get_context("spawn")
    a_at_last_batch, b_waiting, out = ctx.Event(), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_race_worker, args=(role, str(tmp_path), a_at_last_batch,
                                                    b_waiting, out)) for role in "ab"]
    for p in procs:
        p.start()
    got = dict((role, (calls, res)) for role, calls, res in (out.get(timeout=300)
                                                               for _ in procs))
    for p in procs:
        p.join(60)
    assert got["a"][0] == 6 and got["b"][0] == 1, got
    for _calls, res in got.values():
        for k in LAYERS:
            np.testing.assert_array_equal(res[k], np.asarray(ref[k]))
    d = _key_dir(tmp_path)
    assert sorted(p.name for p in d.iterdir()) == [
        "manifest.json", "result.json", "values-0.npy", "values-1.npy"]
