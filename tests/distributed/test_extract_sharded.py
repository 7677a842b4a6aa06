"""collect_activations_sharded: sample shards (local or Ray) assemble to the one-run array."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _shard_helpers import FailOnce

from invert import collect_activations
from invert.distributed import ShardError, collect_activations_sharded


@pytest.fixture(scope="module")
def net_and_data():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    x = torch.randn(50, 6)
    return net, x


def _results(tmp_path):
    return sorted(p.parent.name for p in (tmp_path / "cache").rglob("result.json"))


def test_local_equal_to_one_run(net_and_data, tmp_path):
    net, x = net_and_data
    want = collect_activations(net, x, ["1", ""], batch_size=8, progress=False)
    got = collect_activations_sharded(net, x, ["1", ""], out_dir=tmp_path, shard_samples=16,
                                      batch_size=8)
    for name in ("1", ""):
        np.testing.assert_array_equal(np.asarray(got[name]), np.asarray(want[name]))
        assert got[name].unit_ids == want[name].unit_ids
        assert got[name].sample_ids == list(range(50))
        assert isinstance(got[name].values, np.memmap)
    assert (tmp_path / "activations_1.npy").exists()
    assert (tmp_path / "activations_output.npy").exists()
    assert len(_results(tmp_path)) == 4  # one cache entry per sample shard


def test_dataset_ids_and_single_layer(net_and_data, tmp_path):
    net, x = net_and_data

    class DS(torch.utils.data.Dataset):
        sample_ids = [f"s{i}" for i in range(50)]

        def __len__(self):
            return 50

        def __getitem__(self, i):
            return x[i]

    got = collect_activations_sharded(net, DS(), "1", out_dir=tmp_path, shard_samples=20,
                                      batch_size=5)
    want = collect_activations(net, DS(), "1", batch_size=5, progress=False)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert got.sample_ids[:2] == ["s0", "s1"] and got.layer == "1"


def test_bad_data(net_and_data, tmp_path):
    net, x = net_and_data
    with pytest.raises(TypeError, match="data: expected"):
        collect_activations_sharded(net, iter([x]), "1", out_dir=tmp_path)
    with pytest.raises(ValueError, match="reduce: expected"):
        collect_activations_sharded(net, x, "1", out_dir=tmp_path, reduce="tokens")


def test_ray_failure_then_resume(ray_session, net_and_data, tmp_path):
    net, x = net_and_data
    want = collect_activations(net, x, "1", batch_size=8, progress=False)
    hook = FailOnce(tmp_path / "calls", fail_start=16, how="exit")
    with pytest.raises(ShardError, match=r"1 extraction shard\(s\) failed: \[16, 32\)"):
        collect_activations_sharded(net, x, "1", out_dir=tmp_path, shard_samples=16,
                                    batch_size=8, backend="ray", max_retries=0,
                                    _before_shard=hook)
    assert len(_results(tmp_path)) == 3 and not (tmp_path / "activations_1.npy").exists()
    before = set(_results(tmp_path))
    got = collect_activations_sharded(net, x, "1", out_dir=tmp_path, shard_samples=16,
                                      batch_size=8, backend="ray", max_retries=0,
                                      _before_shard=hook)
    assert len(set(_results(tmp_path)) - before) == 1  # only the lost shard was extracted
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
