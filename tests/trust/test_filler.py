"""Filler literals: dropped when the shorter formula's AUROC stays within the full one's
interval (checked against sklearn and a planted unit)."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import invert
from invert import parse_formula
from invert.engine.stats import hanley_mcneil_interval
from invert.trust import check_filler, drop_literal


def _planted(seed=0, n=4000):
    """A unit that fires on concept 0 only; concept 1 is rare, 2 common noise."""
    rng = np.random.default_rng(seed)
    y = rng.random((n, 3)) < np.array([0.2, 0.02, 0.3])
    a = 2.0 * y[:, 0] + rng.standard_normal(n)
    return a, y


def test_drop_literal_replaces_the_parent_by_the_sibling():
    f = parse_formula("(0 | 1) & ~2")
    assert [str(drop_literal(f, i)) for i in range(3)] == ["1 & ~2", "0 & ~2", "0 | 1"]
    g = parse_formula("0 & (1 | 2)")
    assert [str(drop_literal(g, i)) for i in range(3)] == ["1 | 2", "0 & 2", "0 & 1"]
    assert drop_literal(parse_formula("~3"), 0) is None


def test_floor_padding_is_flagged_as_filler():
    """At a min_fraction floor above the planted concept's support the search adds a rare
    literal; the check flags it, and the simplified formula is the planted concept."""
    a, y = _planted()
    res = invert.explain(a, y, length=2, min_fraction=0.21, check_filler=True)
    best = res[0][0]
    assert best.fraction >= 0.21 and str(best.formula) == "0 | 1"
    assert best.extras["filler"] == "1"
    assert best.extras["simplified"] == "0"
    assert best.extras["filler_on"] == "all"
    assert best.extras["simplified_auroc"] == pytest.approx(roc_auc_score(y[:, 0], a),
                                                           abs=1e-12)
    # the bar: the shorter AUROC is within the full formula's interval, the other is not
    full = roc_auc_score(best.evaluate(y), a)
    low, _ = hanley_mcneil_interval(full, best.support, len(a) - best.support)
    assert roc_auc_score(y[:, 0], a) >= low > roc_auc_score(y[:, 1], a)


def test_needed_literals_are_not_filler():
    rng = np.random.default_rng(1)
    n = 4000
    y = rng.random((n, 3)) < 0.4
    a = 2.0 * (y[:, 0] & ~y[:, 1]) + rng.standard_normal(n)
    res = invert.explain(a, y, length=2, check_filler=True)
    best = res[0][0]
    assert str(best.formula) == "0 & ~1"
    assert best.extras["filler"] == "" and best.extras["simplified"] is None
    for i in range(2):  # each shorter formula is clearly worse
        m = drop_literal(best.formula, i).evaluate(y)
        assert roc_auc_score(m, a) < best.auroc - 0.05


def test_holdout_results_are_judged_on_the_held_out_samples():
    a, y = _planted(2)
    res = invert.explain(a, y, length=2, min_fraction=0.21, holdout=0.5, random_state=0,
                         check_filler=True)
    best = res[0][0]
    assert best.extras["filler_on"] == "holdout"
    held = res.holdout_index
    assert str(best.formula) == "0 | 1"
    assert best.extras["filler"] == "1"
    assert best.extras["simplified_auroc"] == pytest.approx(
        roc_auc_score(y[held, 0], a[held]), abs=1e-12)


def test_negative_mode_and_untouched_input():
    a, y = _planted(3)
    res = invert.explain(-a, y, length=2, min_fraction=0.21, mode="negative")
    before = dict(res[0][0].extras)
    out = check_filler(res, -a, y)
    assert out is res and before == {}
    assert out[0][0].extras["filler"] == "1" and out[0][0].extras["simplified"] == "0"


def test_parameters_are_checked():
    a, y = _planted()
    res = invert.explain(a, y, length=1)
    with pytest.raises(ValueError, match="level"):
        check_filler(res, a, y, level=1.5)
    with pytest.raises(ValueError, match="check_filler"):
        invert.explain(a, y, length=1, check_filler="yes")
    assert check_filler(res, a, y)[0][0].extras["filler"] == ""  # one literal: nothing


def test_exports_and_report_carry_top_precision_and_filler(tmp_path):
    """save_run writes top_precision (with top_q, top_size; held out too) and the filler
    check into explanations.jsonl / .csv / .parquet and the report shows them; the caller's
    result is not modified."""
    pd = pytest.importorskip("pandas")
    pytest.importorskip("jinja2")
    import json

    from invert.concepts import ConceptSet
    from invert.engine.top import top_sets
    from invert.report import build_report, save_run

    a, y = _planted(4, n=2000)
    a2 = np.stack([a, np.where(y[:, 2], np.abs(a), 0.0)], axis=1)  # the second is sparse
    cs = ConceptSet(y, ["a", "b", "c"], warn_constant=False)
    res = invert.explain(a2, cs, length=2, min_fraction=0.21, holdout=0.5, random_state=0)
    assert "top_precision" not in res[0][0].extras
    out = tmp_path / "out"
    save_run(out, {"L": res}, {"L": a2}, cs, params={"length": 2})
    assert "top_precision" not in res[0][0].extras and "filler" not in res[0][0].extras
    recs = [json.loads(line) for line in (out / "explanations.jsonl").read_text().splitlines()]
    for k, rec in enumerate(recs):
        for e in rec["explanations"]:
            top, q = top_sets(a2[:, k:k + 1], None)
            m = parse_formula(e["formula"], cs.names).evaluate(y)
            assert e["top_precision"] == pytest.approx((m & top[:, 0]).sum() / top.sum())
            assert e["top_q"] == pytest.approx(q[0]) and e["top_size"] == int(top.sum())
            assert 0.0 <= e["holdout_top_precision"] <= 1.0
    assert recs[0]["explanations"][0]["filler"] == "b"
    assert recs[0]["explanations"][0]["simplified"] == "a"
    assert recs[1]["explanations"][0]["top_q"] == pytest.approx(np.mean(a2[:, 1] > 0))
    for table in (pd.read_csv(out / "explanations.csv"),
                  pd.read_parquet(out / "explanations.parquet")):
        assert {"top_precision", "top_q", "top_size", "filler", "simplified"} <= set(table)
        assert table["top_precision"].notna().all()
    build_report(out, progress=False)
    index = (out / "report" / "index.html").read_text()
    assert "top precision" in index
    pages = [p.read_text() for p in (out / "report" / "units").rglob("*.html")]
    assert len(pages) == 2 and all('id="top-precision"' in p for p in pages)
    assert any('id="filler"' in p for p in pages)


def test_f1_interval_matches_the_multinomial_spread():
    """The delta-method SE of the F1 matches the spread of F1s of simulated multinomial
    counts (a: top & mask, b: mask only, c: top only, the rest neither)."""
    from invert.trust.filler import f1_interval

    rng = np.random.default_rng(0)
    n, p = 20000, np.array([0.004, 0.003, 0.006])
    counts = rng.multinomial(n, [*p, 1 - p.sum()], size=20000)[:, :3]
    f1 = 2 * counts[:, 0] / (2 * counts[:, 0] + counts[:, 1] + counts[:, 2])
    a, b, c = n * p
    low, high = f1_interval(a, a + c, a + b, z=1.0)
    assert (high - low) / 2 == pytest.approx(f1.std(), rel=0.03)
    assert (low + high) / 2 == pytest.approx(2 * a / (2 * a + b + c), abs=1e-12)
    lo, hi = f1_interval([0, 5], [0, 5], [0, 5])
    assert np.isnan(lo[0]) and lo[1] == hi[1] == 1.0  # empty: undefined; perfect: exact


def _two_causes(seed=5, n=6000):
    """A unit whose top is the union of two rare concepts; concept 2 is noise."""
    rng = np.random.default_rng(seed)
    y = rng.random((n, 3)) < np.array([0.02, 0.02, 0.05])
    a = 3.0 * (y[:, 0] | y[:, 1]) + rng.standard_normal(n)
    return a, y


def test_top_f1_labels_are_judged_by_their_f1():
    """For a top-F1 result the check judges by the F1 against the top set: both causes of
    the peak are needed (dropping one halves the cover), though by AUROC either half would
    pass as filler; a noise literal added at a support floor is filler."""
    from invert.engine.top import top_sets
    from invert.trust.filler import f1_interval

    a, y = _two_causes()
    res = invert.explain(a, y, length=2, metric="top_f1", top_q=0.04)
    best = res[0][0]
    assert str(best.formula) == "0 | 1"
    out = check_filler(res, a, y)[0][0]
    assert out.extras["filler"] == "" and out.extras["simplified_top_f1"] is None
    top = top_sets(a[:, None], 0.04)[0][:, 0]
    m = best.evaluate(y)
    low, _ = f1_interval((m & top).sum(), top.sum(), m.sum())
    for i in range(2):
        shorter = drop_literal(best.formula, i).evaluate(y)
        f1 = 2 * (shorter & top).sum() / (top.sum() + shorter.sum())
        assert f1 < low
    # the AUROC judgement (the same formula in an AUROC result) would drop one of them
    res_auc = invert.explain(a, y, length=2)
    res_auc[0][0] = best
    assert check_filler(res_auc, a, y)[0][0].extras["filler"] != ""
    # padding to a support floor: the noise literal is filler; the simplified label's F1
    # (recomputed here) stays at or above the padded formula's lower bound
    res = invert.explain(a, y, length=3, metric="top_f1", top_q=0.04, min_fraction=0.075)
    padded = res[0][0]
    assert padded.support >= 0.075 * len(a) and "2" in str(padded.formula)
    out = check_filler(res, a, y)[0][0]
    assert "2" in out.extras["filler"].split(", ")
    simple = parse_formula(out.extras["simplified"]).evaluate(y)
    assert "2" not in out.extras["simplified"]
    f1 = 2 * (simple & top).sum() / (top.sum() + simple.sum())
    pm = padded.evaluate(y)
    low, _ = f1_interval((pm & top).sum(), top.sum(), pm.sum())
    assert out.extras["simplified_top_f1"] == pytest.approx(f1, abs=1e-12) and f1 >= low
    assert out.extras["simplified_auroc"] == pytest.approx(roc_auc_score(simple, a),
                                                           abs=1e-12)
