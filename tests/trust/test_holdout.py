"""Held-out evaluation: stratified split, held-out figures, parsimony."""

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.stats import mannwhitneyu
from sklearn.metrics import roc_auc_score

from invert.engine.synthetic import make_layer
from invert.trust import delong_ci, explain_holdout, stratified_split
from invert.trust.holdout import _choose  # the documented rule itself


def _both_sides(y, s, h):
    y = sp.csc_matrix(y)
    counts = np.diff(y.indptr)
    in_s = np.asarray(y[s].sum(0)).ravel()
    in_h = np.asarray(y[h].sum(0)).ravel()
    return counts, in_s, in_h


@pytest.mark.parametrize("holdout", [0.5, 0.2, 0.8])
def test_split_puts_every_concept_in_both_parts_hierarchy(holdout):
    layer = make_layer(n_leaves=80, samples_per_leaf=6, n_hypernyms=40, n_units=2,
                       n_planted=0, seed=4)
    y = layer.concepts.matrix.tolil()
    y[np.arange(0, 480, 97), 0] = True  # make leaf0 overlap a few other samples
    y[5, 1] = False  # and leave a concept with fewer samples
    y = y.tocsr()
    s, h = stratified_split(layer.concepts.__class__(layer.concepts.names, y), holdout, 0)
    assert np.array_equal(np.sort(np.r_[s, h]), np.arange(480))
    assert abs(len(h) - holdout * 480) <= 0.05 * 480
    counts, in_s, in_h = _both_sides(y, s, h)
    two = counts >= 2
    assert two.sum() > 100
    assert np.all(in_s[two] >= 1) and np.all(in_h[two] >= 1)


def test_split_disjoint_and_random_concepts(rng):
    y = np.zeros((300, 40), dtype=bool)
    for j in range(40):  # disjoint rare concepts of 2..6 samples, then random ones
        y[j * 7:j * 7 + 2 + j % 5, j] = True
    s, h = stratified_split(y, 0.3, random_state=rng)
    counts, in_s, in_h = _both_sides(y, s, h)
    assert np.all(in_s >= 1) and np.all(in_h >= 1)
    s2, h2 = stratified_split(y, 0.3, random_state=1)
    s3, h3 = stratified_split(y, 0.3, random_state=1)
    assert np.array_equal(h2, h3)
    with pytest.raises(ValueError, match=r"^holdout: expected a number in \(0, 1\), got 1.0"):
        stratified_split(y, 1.0)


def test_holdout_figures_are_held_out_statistics(rng):
    y = rng.random((1200, 8)) < 0.15
    a = np.c_[1.2 * (y[:, 2] | y[:, 5]) + rng.standard_normal(1200),
              rng.standard_normal(1200)]
    res = explain_holdout(a, y, holdout=0.4, random_state=3,
                          search_kwargs={"length": 2, "beam_size": 3})
    s, h = res.search_index, res.holdout_index
    assert len(h) == pytest.approx(480, abs=30)
    assert res.params["holdout"] == 0.4 and res.params["parsimony"] == 0.005
    checked = 0
    for k, u in enumerate(res):
        for e in u:
            mh = e.formula.evaluate(y[h])
            ms = e.formula.evaluate(y[s])
            assert e.auroc == pytest.approx(roc_auc_score(ms, a[s, k]), abs=1e-12)
            assert e.support == ms.sum()
            x = e.extras
            assert x["holdout_auroc"] == pytest.approx(roc_auc_score(mh, a[h, k]), abs=1e-12)
            assert x["holdout_support"] == mh.sum()
            ref = mannwhitneyu(a[h, k][~mh], a[h, k][mh], method="asymptotic").pvalue
            assert x["holdout_p_value"] == pytest.approx(ref, rel=1e-9)
            lo, hi = delong_ci(a[h, k], mh)
            assert (x["holdout_auroc_ci_low"], x["holdout_auroc_ci_high"]) == pytest.approx(
                (lo, hi))
            checked += 1
    assert checked >= 4
    assert str(res[0][0].formula) in ("2 | 5", "5 | 2")


def test_parsimony_rule_on_crafted_numbers():
    # shortest first; a longer one must beat the running winner by more than the margin
    assert _choose(np.array([2, 1, 3]), np.array([0.300, 0.296, 0.400]), 0.005) == 2
    assert _choose(np.array([2, 1, 3]), np.array([0.300, 0.296, 0.300]), 0.005) == 1
    assert _choose(np.array([2, 1, 3]), np.array([0.302, 0.296, 0.303]), 0.005) == 2 - 2
    # equal lengths: the higher held-out figure wins; ties keep search order
    assert _choose(np.array([1, 1]), np.array([0.2, 0.3]), 0.1) == 1
    assert _choose(np.array([1, 1]), np.array([0.3, 0.3]), 0.1) == 0


def test_parsimony_drops_literals_that_pick_off_noise():
    rng = np.random.default_rng(11)
    n = 3000
    x = rng.random(n) < 0.2
    noise = rng.random((n, 12)) < 0.03  # tiny concepts unrelated to the unit
    y = np.c_[x, noise]
    a = 1.0 * x + rng.standard_normal(n)
    kw = {"length": 3, "beam_size": 5}
    plain = explain_holdout(a, y, holdout=0.5, random_state=0, parsimony=None,
                            search_kwargs=kw)
    assert plain[0][0].length > 1  # the search alone prefers x & ~noise...
    strict = explain_holdout(a, y, holdout=0.5, random_state=0, parsimony=0.02,
                             search_kwargs=kw)
    best = strict[0][0]
    assert str(best.formula) == "0"
    # same split, same search: the rank is the formula's place in the plain search's list
    plain_order = [str(e.formula) for e in plain[0]]
    expected = plain_order.index("0") if "0" in plain_order else None
    assert best.extras["search_rank"] == expected
    assert [e.rank for e in strict[0]] == list(range(len(strict[0])))


def test_holdout_validation():
    y = np.eye(10, 3, dtype=bool)
    with pytest.raises(ValueError, match="^parsimony: expected None, 'auto' or a margin"):
        explain_holdout(np.arange(10.0), y, holdout=0.5, parsimony=-1)
    with pytest.raises(ValueError, match="^search_kwargs: expected search parameters only"):
        explain_holdout(np.arange(10.0), y, holdout=0.5, search_kwargs={"holdout": 0.3})


# ----------------------------------------------------------------------------- groups


def _documents(seed: int, n_docs: int = 60, per_doc: int = 20, vocab: int = 200,
               words_per_doc: int = 4, n_units: int = 4):
    """Tokens of documents that share their activation (a document-level shift per unit)
    and their words (each document draws a few words of a shared vocabulary)."""
    rng = np.random.default_rng(seed)
    doc = np.repeat(np.arange(n_docs), per_doc)
    words = np.stack([rng.choice(vocab, words_per_doc, replace=False) for _ in range(n_docs)])
    tok = words[doc, rng.integers(0, words_per_doc, doc.size)]
    y = np.zeros((doc.size, vocab), dtype=bool)
    y[np.arange(doc.size), tok] = True
    shift = rng.standard_normal((n_docs, n_units)) * 2.0
    a = shift[doc] + 0.3 * rng.standard_normal((doc.size, n_units))
    return a, y, doc


def test_grouped_split_keeps_each_group_whole(rng):
    a, y, doc = _documents(1, vocab=60, words_per_doc=6)
    labels = [f"doc{d}" for d in doc]  # any hashable labels
    for holdout in (0.3, 0.5):
        s, h = stratified_split(y, holdout, random_state=2, groups=labels)
        assert np.array_equal(np.sort(np.r_[s, h]), np.arange(len(doc)))
        assert not set(doc[s]) & set(doc[h])
        if holdout == 0.5:  # the share is of groups (rarer concepts pull it up at 0.3)
            assert abs(len(set(doc[h])) - holdout * 60) <= 6
        # a word in two or more documents is in both parts
        docs_of = [set(doc[y[:, j]]) for j in range(y.shape[1])]
        for j, ds in enumerate(docs_of):
            if len(ds) >= 2:
                assert y[s, j].any() and y[h, j].any(), j
    with pytest.raises(ValueError, match="one group label per sample"):
        stratified_split(y, 0.5, groups=doc[:-1])
    with pytest.raises(ValueError, match="at least 2 groups"):
        stratified_split(y, 0.5, groups=np.zeros(len(doc), dtype=int))


def test_grouped_holdout_is_not_inflated_by_tokens_of_searched_documents():
    import invert

    a, y, doc = _documents(3)
    kwargs = dict(length=2, beam_size=3, min_fraction=0.02, holdout=0.5, random_state=0)
    plain = invert.explain(a, y, **kwargs)
    grouped = invert.explain(a, y, groups=doc, **kwargs)
    held = grouped.holdout_index
    assert not set(doc[held]) & set(doc[grouped.search_index])
    assert grouped.params["holdout_groups"] == 60

    def held_auroc(res):
        return np.array([u[0].extras["holdout_auroc"] for u in res.units])

    hp, hg = held_auroc(plain), held_auroc(grouped)
    # tokens of a searched document carry its shift into the held-out part
    assert np.nanmean(hp) > 0.8
    assert np.nanmean(hg) < np.nanmean(hp) - 0.15
    # the held-out AUROC is that of the held-out tokens (checked against sklearn)
    u = grouped.units[0][0]
    mask = np.asarray(u.evaluate(y)).ravel().astype(bool)
    want = roc_auc_score(mask[held], a[held, 0])
    assert u.extras["holdout_auroc"] == pytest.approx(want, abs=1e-12)
    with pytest.raises(ValueError, match="groups"):
        invert.explain(a, y, groups=doc)


def test_min_count_counts_the_samples_of_a_npy_path(rng, tmp_path):
    """Activations given as a ``.npy`` path: N is the file's rows (not the path's length)."""
    import invert

    y = rng.random((300, 5)) < 0.3
    a = y[:, [1]] + 0.3 * rng.standard_normal((300, 1))
    np.save(tmp_path / "a.npy", a)
    res = invert.explain(tmp_path / "a.npy", y, length=1, min_count=5)
    assert str(res[0][0].formula) == '"1"' and res.params["min_count"] == 5


def test_min_count_leaves_rare_concepts_out(rng):
    import invert

    n = 400
    y = rng.random((n, 6)) < 0.2
    y[:, 5] = False
    y[[3, 9], 5] = True  # a concept on two samples
    a = np.c_[5.0 * y[:, 5] + 0.1 * rng.standard_normal(n),
              2.0 * y[:, 1] + rng.standard_normal(n)]
    names = [f"c{j}" for j in range(6)]
    from invert.concepts import ConceptSet

    cs = ConceptSet(y, names)
    free = invert.explain(a, cs, length=1, beam_size=2)
    assert str(free[0][0].formula) == "c5"
    res = invert.explain(a, cs, length=1, beam_size=2, min_count=3)
    assert "c5" not in res.concept_names and res.params["min_count"] == 3
    assert str(res[1][0].formula) == "c1" and "c5" not in str(res[0][0].formula)
    # a plain matrix: the kept columns keep their positions as names
    raw = invert.explain(a, y, length=1, beam_size=2, min_count=3)
    assert raw.concept_names == ["0", "1", "2", "3", "4"]
    assert str(raw[1][0].formula) == '"1"'  # a name, quoted: not position 1 of the kept
    # the permutation test searches the same concepts (the rare one left out)
    from invert.trust import permutation_test

    p = permutation_test(a, cs, res, n_permutations=19, random_state=0, tail=None)
    assert res[1][0].extras["tested_formula"] == "c1" and p[1] == pytest.approx(0.05)
    held = invert.explain(a, cs, length=1, beam_size=2, min_count=3, holdout=0.5,
                          random_state=0)
    assert "c5" not in held.concept_names and held.params["min_count"] == 3
    with pytest.raises(ValueError, match="min_count"):
        invert.explain(a, cs, min_count=0)
    with pytest.raises(ValueError, match="min_count"):
        invert.explain(a, cs, min_count=n + 1)


def test_permutation_test_moves_documents_together():
    """Units that fire on whole documents, topics that hold on whole documents, no link
    between the two: permuting tokens makes nearly every unit 'significant', permuting
    documents (groups=) does not."""
    import invert
    from invert.trust import permutation_test

    rng = np.random.default_rng(11)
    n_docs, per_doc, n_units = 40, 15, 12
    doc = np.repeat(np.arange(n_docs), per_doc)
    topic = rng.integers(0, 6, n_docs)
    y = np.zeros((doc.size, 6), dtype=bool)
    y[np.arange(doc.size), topic[doc]] = True
    a = rng.standard_normal((n_docs, n_units))[doc] + 0.2 * rng.standard_normal(
        (doc.size, n_units))
    res = invert.explain(a, y, length=1, beam_size=1)
    p_tokens = permutation_test(a, y, res, n_permutations=99, random_state=0, tail=None,
                                groups=None, annotate=False)
    p_docs = permutation_test(a, y, res, n_permutations=99, random_state=0, tail=None,
                              groups=doc, annotate=False)
    assert (p_tokens <= 0.05).mean() > 0.8
    assert (p_docs <= 0.05).mean() < 0.35
