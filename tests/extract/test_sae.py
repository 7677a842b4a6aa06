"""SAE features (ReLU, TopK, JumpReLU) against a numpy hand computation; SAELens folders."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _extract_models import CountingConvNet, TinyTokenModel

from invert.extract import SAE, collect_activations

D, K = 6, 10


def _weights(seed: int = 0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(D, K)).astype("f4"), rng.normal(size=K).astype("f4"),
            rng.normal(size=D).astype("f4"), np.abs(rng.normal(size=K)).astype("f4") * 0.5)


def _numpy_features(x, W, b_enc, b_dec, activation, k=None, threshold=None):
    """The SAE features by hand, in float64."""
    x = np.asarray(x, np.float64)
    pre = (x - (b_dec if b_dec is not None else 0.0)) @ W.astype(np.float64) + b_enc
    if activation == "relu":
        return np.maximum(pre, 0.0)
    if activation == "jumprelu":
        return np.maximum(pre, 0.0) * (pre > threshold)
    out = np.zeros_like(pre)
    for i, row in enumerate(pre):
        top = np.argsort(-row, kind="stable")[:k]
        out[i, top] = np.maximum(row[top], 0.0)
    return out


class _Dense(torch.nn.Module):
    """A (N, 3) -> (N, D) linear layer named "lin"."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.lin = torch.nn.Linear(3, D)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))

    def forward(self, x):
        return self.lin(x)


def _sae(activation, with_b_dec=True, names=None):
    W, b_enc, b_dec, thr = _weights()
    return SAE(W, b_enc, activation=activation, k=3 if activation == "topk" else None,
               threshold=thr if activation == "jumprelu" else None,
               b_dec=b_dec if with_b_dec else None, names=names), (W, b_enc, b_dec, thr)


@pytest.mark.parametrize("activation", ["relu", "topk", "jumprelu"])
@pytest.mark.parametrize("with_b_dec", [True, False])
def test_dense_features_match_numpy(activation, with_b_dec):
    net = _Dense()
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(40, 3)).astype("f4"))
    names = [f"f{i}" for i in range(K)]
    sae, (W, b_enc, b_dec, thr) = _sae(activation, with_b_dec, names)
    with torch.no_grad():
        h = net.lin(x).numpy()
    want = _numpy_features(h, W, b_enc, b_dec if with_b_dec else None, activation, 3, thr)
    via_dirs = collect_activations(net, x, "lin", directions=sae, batch_size=7, progress=False)
    via_layer = collect_activations(net, x, sae.at("lin"), batch_size=7, progress=False)
    for acts in (via_dirs, via_layer):
        np.testing.assert_allclose(acts.values, want, rtol=1e-5, atol=1e-5)
        assert acts.unit_ids == names and acts.layer == "lin"
        assert acts.reduction == f"sae({activation})+none"
    assert (via_dirs.values == 0).mean() > 0.2  # features that do not fire are exact zeros
    if activation == "topk":
        assert ((via_dirs.values > 0).sum(1) <= 3).all()


@pytest.mark.parametrize("activation", ["relu", "topk", "jumprelu"])
def test_token_features_match_numpy(activation):
    model = TinyTokenModel(d=D)
    ids = torch.from_numpy(np.random.default_rng(2).integers(1, 20, size=(5, 4)))
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]])
    sae, (W, b_enc, b_dec, thr) = _sae(activation)
    acts = collect_activations(model, {"input_ids": ids, "attention_mask": mask}, "mix",
                               reduce="tokens", directions={"mix": sae}, batch_size=2,
                               progress=False)
    with torch.no_grad():
        h = model.mix(model.emb(ids)).numpy()[mask.numpy().astype(bool)]
    np.testing.assert_allclose(acts.values, _numpy_features(h, W, b_enc, b_dec, activation, 3,
                                                            thr), rtol=1e-5, atol=1e-5)
    assert acts.reduction == f"sae({activation})+tokens"


def test_conv_features_per_position_then_reduced():
    net = CountingConvNet()  # conv -> relu has 5 channels
    W = np.random.default_rng(4).normal(size=(5, 4)).astype("f4")
    sae = SAE(W, np.zeros(4, "f4"), activation="topk", k=2)
    x = torch.from_numpy(np.random.default_rng(6).normal(size=(6, 3, 6, 7)).astype("f4"))
    acts = collect_activations(net, x, "relu", reduce="max", directions=sae, progress=False)
    with torch.no_grad():
        h = net.relu(net.conv(x)).numpy()  # (N, C, H, W)
    per_pos = np.moveaxis(h, 1, -1).reshape(-1, 5)
    f = _numpy_features(per_pos, W, np.zeros(4), None, "topk", 2).reshape(6, 6, 7, 4)
    np.testing.assert_allclose(acts.values, f.max((1, 2)), rtol=1e-5, atol=1e-5)


def test_features_as_they_fire_are_explained_with_zeros_tied():
    """AUROC of a mostly-zero feature: the zeros are ties (mid-ranks), by hand."""
    from scipy.stats import rankdata

    from invert.engine.search import explain

    net = _Dense()
    x = torch.from_numpy(np.random.default_rng(8).normal(size=(200, 3)).astype("f4"))
    sae, _ = _sae("topk")
    acts = collect_activations(net, x, "lin", directions=sae, progress=False)
    zeros = (acts.values == 0).mean(0)
    col = int(np.argmax(np.where(zeros < 0.95, zeros, -1)))
    f = acts.values[:, col].astype(np.float64)
    labels = (x[:, 0].numpy() > 0)[:, None]
    res = explain(f, labels, length=1, beam_size=1, max_fraction=1.0)
    r = rankdata(f)  # mid-ranks: every zero gets the same rank
    n1, n0 = labels.sum(), (~labels).sum()
    auroc = (r[labels[:, 0]].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)
    e = res[0][0]
    expect = auroc if str(e.formula) == "0" else 1 - auroc  # the best literal may be ~0
    assert (f == 0).mean() > 0.3
    assert e.auroc == pytest.approx(expect, abs=1e-12)


def _write_folder(path, cfg, tensors):
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    (path / "cfg.json").write_text(json.dumps(cfg))
    save_file({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()},
              str(path / "sae_weights.safetensors"))


@pytest.mark.parametrize(
    ("cfg", "activation", "uses_b_dec"),
    [
        ({"architecture": "topk", "k": 3, "apply_b_dec_to_input": True}, "topk", True),
        ({"architecture": "standard", "activation_fn_str": "topk",
          "activation_fn_kwargs": {"k": 3}, "apply_b_dec_to_input": True}, "topk", True),
        ({"architecture": "jumprelu", "apply_b_dec_to_input": False,
          "normalize_activations": "none"}, "jumprelu", False),
        ({"architecture": "standard", "apply_b_dec_to_input": False}, "relu", False),
    ],
)
def test_saelens_folder(tmp_path, cfg, activation, uses_b_dec):
    W, b_enc, b_dec, thr = _weights(1)
    tensors = {"W_enc": W, "b_enc": b_enc, "b_dec": b_dec, "W_dec": W.T.copy()}
    if activation == "jumprelu":
        tensors["threshold"] = thr
    _write_folder(tmp_path / "sae", {"d_in": D, "d_sae": K, **cfg}, tensors)
    sae = SAE.from_folder(tmp_path / "sae", names=[f"n{i}" for i in range(K)])
    assert sae.activation == activation and sae.n_features == K and sae.d_in == D
    assert (sae.b_dec is not None) == uses_b_dec
    x = np.random.default_rng(3).normal(size=(9, D)).astype("f4")
    want = _numpy_features(x, W, b_enc, b_dec if uses_b_dec else None, activation, 3, thr)
    np.testing.assert_allclose(sae.encode(torch.from_numpy(x)).numpy(), want, rtol=1e-5,
                               atol=1e-5)


def test_saelens_folder_errors(tmp_path):
    W, b_enc, b_dec, _ = _weights()
    with pytest.raises(ValueError, match="cfg.json"):
        SAE.from_folder(tmp_path)
    _write_folder(tmp_path / "a", {"architecture": "gated"}, {"W_enc": W})
    with pytest.raises(ValueError, match="gated"):
        SAE.from_folder(tmp_path / "a")
    _write_folder(tmp_path / "b", {"architecture": "topk"}, {"W_enc": W})
    with pytest.raises(ValueError, match="no k"):
        SAE.from_folder(tmp_path / "b")
    _write_folder(tmp_path / "c", {"normalize_activations": "expected_average_only_in"},
                  {"W_enc": W})
    with pytest.raises(ValueError, match="normalize_activations"):
        SAE.from_folder(tmp_path / "c")


def test_parameter_errors():
    W, b_enc, _, _ = _weights()
    with pytest.raises(ValueError, match="k: expected"):
        SAE(W, activation="topk")
    with pytest.raises(ValueError, match="threshold"):
        SAE(W, activation="jumprelu")
    with pytest.raises(ValueError, match="b_enc"):
        SAE(W, np.zeros(3))
    with pytest.raises(ValueError, match="names"):
        SAE(W, names=["a"])
    with pytest.raises(ValueError, match="activation"):
        SAE(W, activation="gelu")
    net = _Dense()
    x = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="sae.at"):
        collect_activations(net, x, SAE(W), progress=False)
    with pytest.raises(ValueError, match=r"W_enc has shape \(4, 2\); expected \(6, K\)"):
        collect_activations(net, x, "", directions=SAE(np.ones((4, 2), "f4")), progress=False)
    with pytest.raises(ValueError, match="directions too"):
        collect_activations(net, x, SAE(W).at("lin"), directions={"lin": W}, progress=False)


def test_sae_runs_are_cached_by_their_weights(tmp_path):
    net = _Dense()
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(12, 3)).astype("f4"))
    calls = []
    net.register_forward_pre_hook(lambda *_: calls.append(1))
    sae, _ = _sae("topk")
    a = collect_activations(net, x, sae.at("lin"), cache_dir=tmp_path, progress=False)
    n = len(calls)
    b = collect_activations(net, x, sae.at("lin"), cache_dir=tmp_path, progress=False)
    assert len(calls) == n
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    W, b_enc, b_dec, _ = _weights()
    other = SAE(W, b_enc, activation="topk", k=4, b_dec=b_dec)
    collect_activations(net, x, other.at("lin"), cache_dir=tmp_path, progress=False)
    assert len(calls) > n  # another k: another cache entry
