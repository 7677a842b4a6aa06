"""CPU and CUDA give identical results (skipped without a GPU)."""

import pytest
import torch

import invert
from invert.engine.synthetic import make_layer

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("dedupe", [True, False])
def test_cpu_and_cuda_agree(dedupe):
    layer = make_layer(n_leaves=200, samples_per_leaf=20, n_hypernyms=90, n_units=32,
                       n_planted=16, seed=7)
    kw = dict(length=3, beam_size=5, min_fraction=0.002, dedupe=dedupe)
    cpu = invert.explain(layer.activations, layer.concepts, device="cpu", **kw)
    gpu = invert.explain(layer.activations, layer.concepts, device="cuda", **kw)
    for u, v in zip(cpu, gpu, strict=True):
        assert [(str(e.formula), e.auroc, e.support) for e in u] == [
            (str(e.formula), e.auroc, e.support) for e in v]
        assert [e.p_value for e in u] == pytest.approx([e.p_value for e in v], rel=1e-12)


def test_cuda_tensor_input_stays_on_gpu():
    a = torch.randn(500, 4, device="cuda")
    y = torch.rand(500, 6, device="cuda") < 0.3
    res = invert.explain(a, y, length=2)
    assert len(res) == 4 and all(len(u) for u in res)
