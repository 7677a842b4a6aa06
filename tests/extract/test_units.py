"""Every unit type and reduction checked against a direct forward pass computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _extract_models import CountingConvNet, TinyTokenModel

import invert
from invert.extract import ActivationSet, collect_activations


def _conv_out(net: CountingConvNet, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return net.relu(net.conv(x)).numpy()


@pytest.mark.parametrize(
    ("reduce", "by_hand"),
    [
        ("mean", lambda a: a.mean((2, 3))),
        ("max", lambda a: a.max((2, 3))),
        (0.9, lambda a: np.quantile(a.reshape(*a.shape[:2], -1), 0.9, axis=-1)),
        (("quantile", 0.25), lambda a: np.quantile(a.reshape(*a.shape[:2], -1), 0.25, axis=-1)),
        ("none", lambda a: a.reshape(a.shape[0], -1)),
    ],
)
def test_conv_reductions_match_hand_computation(convnet, images, reduce, by_hand):
    acts = collect_activations(convnet, images, "relu", reduce=reduce, batch_size=5,
                               progress=False)
    expected = by_hand(_conv_out(convnet, images))
    assert isinstance(acts, ActivationSet)
    assert acts.shape == expected.shape
    np.testing.assert_allclose(np.asarray(acts), expected, rtol=1e-5, atol=1e-6)
    assert acts.values.dtype == np.float32
    assert acts.layer == "relu"
    assert acts.sample_ids == list(range(23))


def test_reduction_labels_and_spatial_unit_ids(convnet, images):
    q = collect_activations(convnet, images, "relu", reduce=0.5, progress=False)
    assert q.reduction == "quantile(0.5)"
    assert q.unit_ids == ["0", "1", "2", "3", "4"]
    sp = collect_activations(convnet, images, "relu", reduce=None, progress=False)
    assert sp.reduction == "none"
    assert sp.n_units == 5 * 6 * 7
    assert sp.unit_ids[0] == "0@0,0" and sp.unit_ids[8] == "0@1,1" and sp.unit_ids[42] == "1@0,0"
    # unit "2@3,4" is channel 2, row 3, column 4
    np.testing.assert_allclose(sp.unit("2@3,4"), _conv_out(convnet, images)[:, 2, 3, 4],
                               rtol=1e-6)


def test_logits_linear_and_multi_layer_from_one_pass(convnet, images):
    out = collect_activations(convnet, images, ["", "fc", "conv"], batch_size=4, progress=False)
    assert set(out) == {"", "fc", "conv"}
    with torch.no_grad():
        logits = convnet(images).numpy()
    np.testing.assert_allclose(out[""].values, logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["fc"].values, logits, rtol=1e-5, atol=1e-6)
    assert out[""].reduction == "none"
    # one forward per batch for all three layers (plus the one above)
    assert convnet.calls == 6 + 1


def test_stop_early_skips_the_rest_of_the_forward(convnet, images):
    seen = []
    convnet.fc.register_forward_hook(lambda *a: seen.append(1))
    collect_activations(convnet, images, "conv", batch_size=8, progress=False)
    assert seen == []
    collect_activations(convnet, images, "conv", batch_size=8, progress=False, stop_early=False)
    assert len(seen) == 3


def test_inplace_relu_after_layer_does_not_change_recorded_values():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(inplace=True),
                              torch.nn.Linear(4, 2))
    x = torch.randn(9, 3)
    acts = collect_activations(net, x, ["0", "2"], progress=False)
    with torch.no_grad():
        pre = net[0](x).numpy()
    assert (pre < 0).any()
    np.testing.assert_allclose(acts["0"].values, pre, rtol=1e-6)


def test_directions_applied_to_conv_dense_and_tokens(convnet, images):
    rng = np.random.default_rng(3)
    W = rng.normal(size=(5, 3)).astype("f4")
    acts = collect_activations(convnet, images, "relu", reduce="max", directions=W,
                               progress=False)
    a = _conv_out(convnet, images)
    proj = np.einsum("nchw,ck->nkhw", a, W)
    np.testing.assert_allclose(acts.values, proj.max((2, 3)), rtol=1e-4, atol=1e-5)
    assert acts.reduction == "directions+max"
    assert acts.unit_ids == ["0", "1", "2"]
    W2 = rng.normal(size=(4, 2))
    d = collect_activations(convnet, images, "fc", directions={"fc": W2}, progress=False)
    with torch.no_grad():
        expected = convnet(images).numpy() @ W2
    np.testing.assert_allclose(d.values, expected, rtol=1e-4, atol=1e-5)


def test_callable_unit_source(convnet, images):
    def channel_energy(x: torch.Tensor) -> torch.Tensor:
        return (x**2).mean((2, 3))

    acts = collect_activations(convnet, images, channel_energy, progress=False)
    assert acts.layer == "channel_energy"
    np.testing.assert_allclose(acts.values, (images.numpy() ** 2).mean((2, 3)), rtol=1e-5)
    assert convnet.calls == 0  # only callables: the model forward is not run
    both = collect_activations(convnet, images, ["fc", channel_energy], progress=False)
    assert both["channel_energy"].shape == (23, 3) and both["fc"].shape == (23, 4)


def _tokens():
    ids = torch.tensor([[1, 2, 3, 4], [5, 6, 0, 0], [7, 8, 9, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]])
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("reduce", ["mean", "max", "last", "first"])
def test_token_reductions_respect_padding(reduce):
    model = TinyTokenModel()
    data = _tokens()
    acts = collect_activations(model, data, "mix", reduce=reduce, batch_size=2, progress=False)
    with torch.no_grad():
        h = model(**data).numpy()
    m = data["attention_mask"].numpy().astype(bool)
    rows = []
    for i in range(3):
        valid = h[i][m[i]]
        rows.append({"mean": valid.mean(0), "max": valid.max(0), "last": valid[-1],
                     "first": valid[0]}[reduce])
    np.testing.assert_allclose(acts.values, np.stack(rows), rtol=1e-5, atol=1e-6)
    assert acts.reduction == reduce


def test_per_token_activations_keep_document_and_position():
    model = TinyTokenModel()
    data = _tokens()
    acts = collect_activations(model, data, "mix", reduce="tokens", batch_size=2, progress=False)
    assert acts.n_samples == 4 + 2 + 3
    expected_index = [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (2, 0), (2, 1), (2, 2)]
    assert [tuple(r) for r in acts.token_index.tolist()] == expected_index
    assert acts.sample_ids == expected_index
    with torch.no_grad():
        h = model(**data).numpy()
    np.testing.assert_allclose(acts.values, np.stack([h[d, p] for d, p in expected_index]),
                               rtol=1e-6)


def test_sample_ids_from_dataset_and_input_forms(convnet, images):
    class DS(torch.utils.data.Dataset):
        sample_ids = [f"img{i}" for i in range(23)]

        def __len__(self):
            return 23

        def __getitem__(self, i):
            return images[i], i  # (x, y) pairs

    ref = collect_activations(convnet, images, "fc", progress=False).values
    from_ds = collect_activations(convnet, DS(), "fc", batch_size=6, progress=False)
    assert from_ds.sample_ids[:2] == ["img0", "img1"]
    np.testing.assert_allclose(from_ds.values, ref, rtol=1e-5, atol=1e-6)
    from_np = collect_activations(convnet, images.numpy(), "fc", progress=False)
    np.testing.assert_allclose(from_np.values, ref, rtol=1e-5, atol=1e-6)
    batches = [images[:10], images[10:]]
    from_list = collect_activations(convnet, batches, "fc", progress=False)
    np.testing.assert_allclose(from_list.values, ref, rtol=1e-5, atol=1e-6)
    loader = torch.utils.data.DataLoader(DS(), batch_size=7)
    from_loader = collect_activations(convnet, loader, "fc", progress=False)
    assert from_loader.sample_ids[-1] == "img22"
    np.testing.assert_allclose(from_loader.values, ref, rtol=1e-5, atol=1e-6)


def test_model_mode_restored_and_eval_used(images):
    dropnet = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.9))
    dropnet.train()
    a = collect_activations(dropnet, images, "1", progress=False)
    np.testing.assert_allclose(a.values, images.reshape(23, -1).numpy())  # dropout off
    assert dropnet.training


def test_activation_set_feeds_numpy_and_torch(convnet, images):
    acts = collect_activations(convnet, images, "fc", progress=False)
    assert np.asarray(acts).shape == (23, 4)
    assert np.asarray(acts, dtype=np.float64).dtype == np.float64
    assert torch.as_tensor(np.asarray(acts)).shape == (23, 4)
    assert acts.to_torch().shape == (23, 4)


def test_activation_set_feeds_invert_explain(convnet, images):
    acts = collect_activations(convnet, images, "fc", progress=False)
    concepts = np.zeros((23, 2), dtype=bool)
    top = np.argsort(-acts.values[:, 0])[:5]
    concepts[top, 0] = True
    concepts[::2, 1] = True
    res = invert.explain(acts, concepts, length=1)
    assert len(res) == 4


def test_cpu_autocast_bfloat16_is_close_and_stored_as_float32(convnet, images):
    ref = collect_activations(convnet, images, "fc", progress=False)
    ac = collect_activations(convnet, images, "fc", autocast=torch.bfloat16, progress=False)
    assert ac.values.dtype == np.float32
    np.testing.assert_allclose(ac.values, ref.values, rtol=0.1, atol=0.1)
    assert not np.array_equal(ac.values, ref.values)  # it really ran in bfloat16


def test_progress_bar_on_and_off(convnet, images, capsys):
    pytest.importorskip("tqdm")
    a = collect_activations(convnet, images, "fc", progress=True)
    b = collect_activations(convnet, images, "fc", progress=False)
    np.testing.assert_array_equal(a.values, b.values)
    assert "activations" in capsys.readouterr().err


def test_shared_module_is_recorded_at_its_first_call():
    class Shared(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.act = torch.nn.Tanh()
            self.lin = torch.nn.Linear(3, 3)

        def forward(self, x):
            return self.act(self.lin(self.act(x)))

    m = Shared()
    x = torch.randn(4, 3)
    acts = collect_activations(m, x, "act", progress=False, stop_early=False)
    np.testing.assert_allclose(acts.values, torch.tanh(x).numpy(), rtol=1e-6)


def test_callable_returning_numpy_runs_without_a_model(images, tmp_path):
    """The path for external runtimes (e.g. an ONNX Runtime session wrapped in a function)."""

    def external_runtime(x):
        return x.numpy().reshape(x.shape[0], -1)[:, :5] * 2.0

    external_runtime.invert_cache_key = "external-runtime-v1"
    acts = collect_activations(None, images, external_runtime, cache_dir=tmp_path,
                               progress=False)
    np.testing.assert_allclose(acts.values, images.reshape(23, -1).numpy()[:, :5] * 2.0)
    with pytest.raises(KeyError, match="closest"):
        acts.unit("x9")
