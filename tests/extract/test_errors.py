"""Hooks never outlive a call; bad inputs fail with errors that say what was wrong."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from invert.extract import collect_activations, hooked_outputs


def _n_hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_unknown_layer_lists_closest_names(convnet, images):
    with pytest.raises(ValueError, match=r"layers: no module named 'conv1'.*closest names.*'conv'"):
        collect_activations(convnet, images, "conv1", progress=False)
    assert convnet.calls == 0  # validated before any forward pass


def test_no_hook_survives_an_exception_in_the_model(convnet, images):
    convnet.fail_at = 2
    with pytest.raises(RuntimeError, match="simulated crash"):
        collect_activations(convnet, images, ["conv", "fc"], batch_size=4, progress=False)
    assert _n_hooks(convnet) == 0


def test_no_hook_survives_an_exception_in_the_data(convnet, images):
    def batches():
        yield images[:4]
        raise OSError("disk went away")

    with pytest.raises(OSError, match="disk went away"):
        collect_activations(convnet, batches(), "conv", progress=False)
    assert _n_hooks(convnet) == 0


def test_hooked_outputs_context_manager_removes_hooks_on_error(convnet):
    with pytest.raises(KeyError), hooked_outputs(convnet, ["conv", "fc"]):
        assert _n_hooks(convnet) == 2
        raise KeyError("boom")
    assert _n_hooks(convnet) == 0


def test_empty_data_is_an_error(convnet):
    with pytest.raises(ValueError, match="data: empty"):
        collect_activations(convnet, torch.zeros(0, 3, 6, 6), "fc", progress=False)
    with pytest.raises(ValueError, match="data: no samples"):
        collect_activations(convnet, [], "fc", progress=False)

    class Empty(torch.utils.data.Dataset):
        def __len__(self):
            return 0

        def __getitem__(self, i):  # pragma: no cover
            raise IndexError

    with pytest.raises(ValueError, match="is empty"):
        collect_activations(convnet, Empty(), "fc", progress=False)


class TupleOut(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)

    def forward(self, x):
        return self.lin(x), x.sum()


class Wrap(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.block = TupleOut()

    def forward(self, x):
        return self.block(x)[0]


def test_layer_that_outputs_a_tuple_needs_select():
    m = Wrap()
    x = torch.randn(5, 3)
    with pytest.raises(TypeError, match=r"layer 'block' outputs a tuple.*select=0"):
        collect_activations(m, x, "block", progress=False)
    acts = collect_activations(m, x, "block", select=0, progress=False)
    with torch.no_grad():
        np.testing.assert_allclose(acts.values, m(x).numpy(), rtol=1e-6)
    assert _n_hooks(m) == 0


def test_mismatched_direction_matrix(convnet, images):
    with pytest.raises(ValueError, match=r"directions: layer 'fc' has 4 features.*\(7, 2\)"):
        collect_activations(convnet, images, "fc", directions=np.ones((7, 2)), progress=False)
    with pytest.raises(ValueError, match="2-D"):
        collect_activations(convnet, images, "fc", directions=np.ones(4), progress=False)
    with pytest.raises(ValueError, match="directions: key 'nope'"):
        collect_activations(convnet, images, "fc", directions={"nope": np.ones((4, 1))},
                            progress=False)


@pytest.mark.parametrize(
    ("kwargs", "exc", "pattern"),
    [
        ({"reduce": "median"}, ValueError, "reduce: expected"),
        ({"reduce": 1.5}, ValueError, r"reduce: a quantile must lie in \[0, 1\]"),
        ({"batch_size": 0}, ValueError, "batch_size: expected a positive int"),
        ({"layout": "grid"}, ValueError, "layout: expected"),
        ({"autocast": "yes"}, TypeError, "autocast"),
        ({"reduce": "last"}, ValueError, "reduce: 'last' applies to token activations"),
    ],
)
def test_bad_parameters_name_themselves(convnet, images, kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        collect_activations(convnet, images, "conv", progress=False, **kwargs)


def test_bad_data_and_model_types(convnet):
    with pytest.raises(TypeError, match="data: expected"):
        collect_activations(convnet, 3.5, "fc", progress=False)
    with pytest.raises(TypeError, match="model: expected a torch.nn.Module"):
        collect_activations("resnet", torch.zeros(2, 3), "fc", progress=False)
    with pytest.raises(TypeError, match="data: each batch must be"):
        collect_activations(convnet, [["a", "b"]], "fc", progress=False)
    with pytest.raises(ValueError, match="transform: only used when data is a folder path"):
        collect_activations(convnet, torch.zeros(2, 3, 4, 4), "fc", transform=abs,
                            progress=False)
    with pytest.raises(ValueError, match="layers: expected a layer name"):
        collect_activations(convnet, torch.zeros(2, 3, 4, 4), [], progress=False)


def test_mixing_token_rows_and_sample_rows_is_an_error():
    from _extract_models import TinyTokenModel

    m = TinyTokenModel()
    data = {"input_ids": torch.tensor([[1, 2, 0]]), "attention_mask": torch.tensor([[1, 1, 0]])}
    def doc_length(inputs):
        return inputs["attention_mask"].sum(1, keepdim=True).float()

    with pytest.raises(ValueError, match="cannot be mixed"):
        collect_activations(m, data, ["mix", doc_length], reduce="none", progress=False)
    ok = collect_activations(m, data, ["mix", "emb"], reduce="tokens", progress=False)
    assert ok["mix"].n_samples == ok["emb"].n_samples == 2


@pytest.mark.parametrize("batch_size", [2.5, "8", True, -1])
def test_bad_batch_size_is_an_invalid_parameter(convnet, images, batch_size):
    from invert._validate import InvalidParameterError

    with pytest.raises(InvalidParameterError, match="batch_size: expected a positive int") as e:
        collect_activations(convnet, images, "fc", batch_size=batch_size, progress=False)
    assert isinstance(e.value, TypeError) and isinstance(e.value, ValueError)
    assert convnet.calls == 0


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"num_workers": -1}, "num_workers: expected"),
        ({"prefetch": 1.5}, "prefetch: expected"),
        ({"device": "no-such-device"}, "device: expected"),
        ({"reduce": "quantile(x)"}, "reduce: expected"),
        ({"reduce": ("median", 1)}, "reduce: expected"),
        ({"autocast": "yes"}, "autocast: expected"),
    ],
)
def test_parameter_errors_are_invalid_parameter_errors(convnet, images, kwargs, pattern):
    from invert._validate import InvalidParameterError

    with pytest.raises(InvalidParameterError, match=pattern):
        collect_activations(convnet, images, "fc", progress=False, **kwargs)


def test_unknown_layer_message_names_the_model_and_the_closest_names(convnet, images):
    from invert.extract.hooks import resolve_modules

    with pytest.raises(ValueError) as e:
        collect_activations(convnet, images, ["fc", "flatt"], progress=False)
    assert str(e.value) == (
        "layers: no module named 'flatt' in CountingConvNet (6 modules); layers: expected "
        "names from model.named_modules() ('' is the model output), got 'flatt'; closest "
        "names: ['flat']")
    with pytest.raises(ValueError, match="got 'zzz'$"):  # nothing close: no hint
        resolve_modules(convnet, ["zzz"])
