"""Sample ids and layer order come back from the cache as they went in."""

from __future__ import annotations

import numpy as np
import torch
from _extract_models import CountingConvNet, TinyTokenModel

from invert.extract import collect_activations


class _Tuples(torch.utils.data.Dataset):
    def __init__(self, x: torch.Tensor):
        self.x = x
        self.sample_ids = [("art", i) if i % 2 else ("cookie", i, ("nested", i)) for i in
                           range(len(x))]

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.x[i]

    def fingerprint(self) -> str:
        return "tuples-v1"


class _Docs(dict):
    sample_ids = [("art", 0), ("art", 1), ("cookie", 7)]


def test_tuple_sample_ids_survive_the_cache(tmp_path, images):
    ds = _Tuples(images)
    net = CountingConvNet()
    first = collect_activations(net, ds, "fc", cache_dir=tmp_path, progress=False)
    calls = net.calls
    again = collect_activations(net, ds, "fc", cache_dir=tmp_path, progress=False)
    assert net.calls == calls  # read from the cache
    assert again.cache_path is not None
    assert again.sample_ids == ds.sample_ids == first.sample_ids
    assert again.sample_ids[1] == ("art", 1) and isinstance(again.sample_ids[0][2], tuple)


def test_tuple_document_ids_of_token_rows_survive_the_cache(tmp_path):
    ids = torch.from_numpy(np.random.default_rng(8).integers(1, 20, size=(3, 4)))
    docs = _Docs(input_ids=ids, attention_mask=torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0],
                                                              [1, 1, 1, 1]]))
    model = TinyTokenModel()
    plain = collect_activations(model, docs, "mix", reduce="tokens", progress=False)
    collect_activations(model, docs, "mix", reduce="tokens", cache_dir=tmp_path,
                        progress=False)
    cached = collect_activations(model, docs, "mix", reduce="tokens", cache_dir=tmp_path,
                                 progress=False)
    assert cached.sample_ids == plain.sample_ids
    assert cached.sample_ids[0] == (("art", 0), 0) and cached.sample_ids[-1] == (("cookie", 7), 3)
    assert cached.row_kind == plain.row_kind == "piece"


def test_layers_in_any_order_hit_the_cache(tmp_path, images):
    net = CountingConvNet()
    first = collect_activations(net, images, ["fc", "conv"], cache_dir=tmp_path,
                                progress=False)
    calls = net.calls
    again = collect_activations(net, images, ["fc", "conv"], cache_dir=tmp_path,
                                progress=False)
    assert net.calls == calls  # not rebuilt as "corrupt" because JSON sorts its keys
    assert list(again) == list(first) == ["fc", "conv"]
    np.testing.assert_array_equal(np.asarray(again["conv"]), np.asarray(first["conv"]))
