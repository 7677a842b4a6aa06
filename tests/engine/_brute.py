"""Brute-force reference for the search tests."""

import numpy as np


def all_formula_masks(labels, length):
    """Every distinct formula mask of up to ``length`` literals (all binary trees over the
    literals ``c`` and ``~c``, combining every pair of sets of smaller sizes), (F, N)."""
    c = labels.shape[1]
    lits = [labels[:, j] for j in range(c)] + [~labels[:, j] for j in range(c)]
    by_size = {1: {m.tobytes(): m for m in lits}}
    for size in range(2, length + 1):
        cur = {}
        for left in range(1, size):
            for a in by_size[left].values():
                for b in by_size[size - left].values():
                    for m in (a & b, a | b):
                        cur.setdefault(m.tobytes(), m)
        by_size[size] = cur
    masks = {k: m for d in by_size.values() for k, m in d.items()}
    return np.array(list(masks.values()))


def brute_best(acts, labels, length, min_fraction, max_fraction, mode="positive"):
    """Best AUROC over every formula of up to ``length`` literals (independent reference).

    Formulas are enumerated as all binary trees over literals (NOT only on single concepts)
    by combining every pair of sets of smaller sizes. AUROC is the Mann-Whitney statistic
    from ``scipy.stats.rankdata`` mid-ranks, checked against scikit-learn on a sample.
    """
    from scipy.stats import rankdata
    from sklearn.metrics import roc_auc_score

    n = labels.shape[0]
    x = all_formula_masks(labels, length)
    s = x.sum(1)
    x = x[(s > 0) & (s < n) & (s / n >= min_fraction) & (s / n <= max_fraction)]
    if len(x) == 0:
        return None
    n1 = x.sum(1).astype(float)
    auc = (x @ rankdata(acts) - n1 * (n1 + 1) / 2) / (n1 * (n - n1))
    for i in range(0, len(x), max(1, len(x) // 20)):
        assert abs(auc[i] - roc_auc_score(x[i], acts)) < 1e-12
    return auc.max() if mode == "positive" else auc.min()
