"""Small real runs for the report tests: a holdout search with a permutation test over
image samples, written by ``save_run``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from invert import explain
from invert.concepts import ConceptSet
from invert.report import save_run
from invert.trust import permutation_test

HOSTILE = '<script>alert("x")</script>'


def make_images(root: Path, ids: list[str]) -> None:
    from PIL import Image

    for k, sid in enumerate(ids):
        path = root / sid
        path.parent.mkdir(parents=True, exist_ok=True)
        w, h = (48, 32) if k % 2 else (32, 40)
        Image.new("RGB", (w, h), (40 + 3 * k % 200, 90, 160)).save(path)


def small_run(out: Path, *, images: Path | None = None, holdout: float | None = 0.5,
              permutations: int = 20, hostile: bool = False, extra: dict | None = None,
              n: int = 120) -> dict:
    """Explain 3 units over ``n`` samples (u0 <- "dog", u1 <- "cat", u2 noise) and save."""
    rng = np.random.default_rng(0)
    y = np.zeros((n, 5), dtype=bool)
    y[: n // 4, 0] = True  # dog
    y[n // 4: n // 4 + n // 6, 1] = True  # cat
    y[:, 2] = rng.random(n) < 0.3  # noise concept
    y[-3:, 3] = True  # rare
    y[:, 4] = y[:, 0] | y[:, 1]  # animal
    names = ["dog", "cat", "thing", "rare", "animal"]
    if hostile:
        names[2] = HOSTILE
    ids = [f"{'dogs' if y[i, 0] else 'other'}/very_long_file_name_number_{i:03d}.png"
           for i in range(n)]
    cs = ConceptSet(y, names, sample_ids=ids,
                    parents={"dog": ["animal"], "cat": ["animal"]}, warn_constant=False)
    a = rng.normal(size=(n, 3))
    a[:, 0] += 3 * y[:, 0]
    a[:, 1] += 3 * y[:, 1]
    a = a.astype(np.float32)
    kw = {"length": 2, "min_fraction": 0.01, "max_fraction": 0.5}
    if holdout is not None:
        kw |= {"holdout": holdout, "random_state": 0}
    res = explain(a, cs, **kw)
    if permutations:
        permutation_test(a, cs, res, n_permutations=permutations, random_state=0)
    if images is not None:
        make_images(images, ids)
    save_run(out, {"feat": res}, {"feat": a}, cs, params=kw, sample_ids=ids,
             images_root=images,
             unit_labels={"feat": [f"label {HOSTILE}" if hostile else "dog detector",
                                   "cat detector", "noise"]},
             extra=extra)
    return {"out": out, "a": a, "y": y, "ids": ids, "res": res, "cs": cs}


def records(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "explanations.jsonl").read_text().splitlines()]


def write_records(out: Path, recs: list[dict]) -> None:
    (out / "explanations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
