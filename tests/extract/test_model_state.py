"""collect_activations leaves the caller's model as it found it: device and train/eval modes,
also after an exception during the run."""

from __future__ import annotations

import pytest
import torch
from _extract_models import CountingConvNet

from invert.extract import collect_activations


class RecordingNet(CountingConvNet):
    """Records the device of every ``.to()`` call and the mode the forward pass ran in."""

    def __init__(self) -> None:
        super().__init__()
        self.moves: list[torch.device] = []
        self.ran_in_training: list[bool] = []

    def to(self, *args, **kwargs):
        self.moves.append(torch.device(args[0] if args else kwargs["device"]))
        return super().to(*args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.ran_in_training.append(self.training or self.conv.training)
        return super().forward(x)


def _modes(model: torch.nn.Module) -> dict[str, bool]:
    return {name: m.training for name, m in model.named_modules()}


@pytest.mark.parametrize("fail", [False, True])
def test_train_and_eval_modes_are_restored(images, fail):
    net = RecordingNet()
    net.train()
    net.pool.eval()  # mixed modes: each module gets its own back
    before = _modes(net)
    if fail:
        net.fail_at = 2
        with pytest.raises(RuntimeError, match="simulated crash"):
            collect_activations(net, images, ["conv", "fc"], batch_size=4, progress=False)
    else:
        collect_activations(net, images, ["conv", "fc"], batch_size=4, progress=False)
    assert _modes(net) == before
    assert net.ran_in_training and not any(net.ran_in_training)  # ran in eval mode


def test_eval_mode_false_leaves_the_modes_alone(images):
    net = RecordingNet()
    net.train()
    collect_activations(net, images, "fc", eval_mode=False, progress=False)
    assert all(net.ran_in_training) and all(_modes(net).values())


@pytest.mark.parametrize("fail", [False, True])
def test_model_is_moved_back_to_its_device(images, fail):
    net = RecordingNet()
    if fail:
        net.fail_at = 1
        with pytest.raises(RuntimeError, match="simulated crash"):
            collect_activations(net, images, "fc", device="cpu", progress=False)
    else:
        collect_activations(net, images, "fc", device="cpu", progress=False)
    assert net.moves == [torch.device("cpu"), torch.device("cpu")]  # there and back
    assert next(net.parameters()).device == torch.device("cpu")


def test_model_is_not_moved_without_a_device_or_on_a_cache_hit(images, tmp_path):
    net = RecordingNet()
    collect_activations(net, images, "fc", cache_dir=tmp_path, progress=False)
    collect_activations(net, images, "fc", device="cpu", cache_dir=tmp_path, progress=False)
    assert net.moves == []


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("fail", [False, True])
def test_model_comes_back_from_the_gpu(images, fail):
    net = CountingConvNet()
    want = collect_activations(net, images, "fc", progress=False)
    if fail:
        net.fail_at = net.calls + 2
        with pytest.raises(RuntimeError, match="simulated crash"):
            collect_activations(net, images, "fc", device="cuda", batch_size=4, progress=False)
    else:
        got = collect_activations(net, images, "fc", device="cuda", progress=False)
        torch.testing.assert_close(got.to_torch(), want.to_torch(), rtol=1e-4, atol=1e-5)
    assert {p.device.type for p in net.parameters()} == {"cpu"}
