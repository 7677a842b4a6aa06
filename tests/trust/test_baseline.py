"""The random-direction baseline: what the same search reaches by chance."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import invert
from invert.trust import add_top_precision, random_baseline, run_figures
from invert.trust.baseline import _directions


def _noise(seed=0, n=600, d=24, c=8):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.random((n, c)) < 0.2


def test_directions_are_orthonormal_and_blocks_past_d():
    rng = np.random.default_rng(0)
    q = _directions(np.eye(5), 5, rng)
    assert np.allclose(q.T @ q, np.eye(5), atol=1e-12)
    q = _directions(np.eye(5), 12, rng)  # blocks of at most D
    assert q.shape == (5, 12)
    assert np.allclose(q[:, 5:10].T @ q[:, 5:10], np.eye(5), atol=1e-12)


@pytest.mark.parametrize("kind", ["directions", "shuffled"])
def test_on_pure_noise_the_run_lies_within_the_baseline(kind):
    x, y = _noise()
    kw = {"length": 2, "beam_size": 3}
    run = invert.explain(x, y, **kw)
    figs = run_figures(run, x, y)
    base = random_baseline(x, y, n_directions=48, kind=kind, random_state=1, **kw)
    s = base.summary()
    assert s["n"] == 48 and base.kind == kind and base.params["length"] == 2
    for name in ("auroc", "top_precision"):
        v = base.values[name]
        assert np.isfinite(v).all()
        lo, hi = np.percentile(v, [5, 95])
        assert lo <= figs[name + "_median"] <= hi
        assert s[name + "_median"] == pytest.approx(np.median(v))
        assert s[name + "_p90"] == pytest.approx(np.percentile(v, 90))
    assert 0.5 < s["auroc_median"] < 0.65  # chance, inflated a little by the search
    line = base.line(figs)
    assert "run median" in line and "chance median" in line


def test_baseline_figures_are_those_of_the_best_formulas():
    x, y = _noise(1, n=400, d=6)
    base = random_baseline(x, y, n_directions=6, random_state=3, length=1)
    # the same draw by hand: QR of a Gaussian with fixed signs, searched the same way
    rng = np.random.default_rng(3)
    q, r = np.linalg.qr(rng.standard_normal((6, 6)))
    acts = x @ (q * np.sign(np.diag(r)))
    res = add_top_precision(invert.explain(acts, y, length=1), acts, y)
    for k in range(6):
        best = res[k][0]
        assert base.values["auroc"][k] == pytest.approx(best.auroc, abs=1e-12)
        assert best.auroc == pytest.approx(roc_auc_score(best.evaluate(y), acts[:, k]))
        assert base.values["top_precision"][k] == pytest.approx(best.extras["top_precision"])


def test_a_real_unit_stands_out():
    x, y = _noise(2, n=2000, d=16)
    x[:, 0] += 3.0 * y[:, 0]
    run = invert.explain(x[:, :1], y, length=1)
    base = random_baseline(x, y, n_directions=32, random_state=0, length=1)
    assert run[0][0].auroc > base.summary()["auroc_p90"]


def test_parameters_are_checked():
    x, y = _noise()
    with pytest.raises(ValueError, match="n_directions"):
        random_baseline(x, y, n_directions=0)
    with pytest.raises(ValueError, match="kind"):
        random_baseline(x, y, kind="gaussian")


@pytest.mark.parametrize("holdout", [None, "0.3"])
def test_cli_prints_and_stores_the_baseline(tmp_path, holdout):
    pytest.importorskip("click")
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    import json

    from click.testing import CliRunner

    from invert.cli import cli

    x, y = _noise(3, n=300, d=6, c=4)
    ids = [f"s{i}" for i in range(len(x))]
    table = pd.DataFrame(y.astype(int), columns=[f"c{j}" for j in range(y.shape[1])])
    table.insert(0, "sample", ids)
    table.to_csv(tmp_path / "c.csv", index=False)
    np.save(tmp_path / "a.npy", x.astype(np.float32))
    out = tmp_path / "out"
    split = ["--holdout", holdout, "--random-state", "1"] if holdout else []
    res = CliRunner().invoke(cli, ["--quiet", "explain", "-o", str(out), "-a",
                                   str(tmp_path / "a.npy"), "-c", str(tmp_path / "c.csv"),
                                   "--length", "1", "--baseline", "8", "--no-report",
                                   "--match-by-order", *split])
    assert res.exit_code == 0, res.output
    where = ", held out on 90 samples" if holdout else ""
    assert f"baseline (8 random directions{where}): auroc run median" in res.output
    meta = json.loads((out / "run.json").read_text())
    (entry,) = meta["baseline"].values()
    assert entry["n"] == 8 and entry["kind"] == "directions"
    assert entry["held_out"] == (90 if holdout else None)
    assert (0.35 if holdout else 0.5) < entry["auroc_median"] <= entry["auroc_p90"] < 0.75
    assert entry["run"]["auroc_median"] is not None


def test_held_out_baseline_sees_through_formulas_fitted_to_a_few_samples():
    """Concepts on 3 samples each: in sample, noise directions find one that lands on
    high values (AUROC far above 0.5); on held-out rows the same labels are worth chance,
    and the baseline's figures are those held-out ones (checked by hand with sklearn)."""
    rng = np.random.default_rng(5)
    n, d, c = 900, 12, 300
    x = rng.standard_normal((n, d))
    y = np.zeros((n, c), bool)
    for j in range(c):
        y[rng.choice(n, 6, replace=False), j] = True
    held = np.sort(rng.choice(n, n // 2, replace=False))
    kw = {"length": 1, "beam_size": 2, "min_fraction": 0.0}
    inside = random_baseline(x, y, n_directions=16, random_state=0, **kw).summary()
    out = random_baseline(x, y, n_directions=16, random_state=0, held_out=held, **kw)
    s = out.summary()
    assert inside["held_out"] is None and s["held_out"] == held.size
    assert inside["auroc_median"] > 0.75
    assert s["auroc_median"] < 0.6 < inside["auroc_median"] - 0.15
    # by hand: the first direction, searched on the other rows, scored on the held rows
    from invert.trust.baseline import _directions
    acts = _directions(x, 16, np.random.default_rng(0))
    search = np.setdiff1d(np.arange(n), held)
    res = invert.explain(acts[search, :1], y[search], **kw)
    j = int(str(res[0][0].formula))
    want = roc_auc_score(y[held, j], acts[held, 0])
    assert out.values["auroc"][0] == pytest.approx(want, abs=1e-12)
    assert "held out on 450 samples" in out.line()


def test_run_figures_of_a_holdout_run_are_held_out():
    x, y = _noise(4, n=800, d=6)
    run = invert.explain(x, y, length=1, holdout=0.4, random_state=0)
    figs = run_figures(run, x, y)
    held = [u[0].extras["holdout_auroc"] for u in run.units if u]
    assert figs["auroc_median"] == pytest.approx(np.median(held))
    with pytest.raises(ValueError, match="held_out"):
        random_baseline(x, y, n_directions=2, held_out=np.arange(800))
