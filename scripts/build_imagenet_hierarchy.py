#!/usr/bin/env python
"""Build ``src/invert/data/imagenet_hierarchy.json.gz`` from WordNet 3.0.

The file lets :func:`invert.concepts.imagenet_hierarchy` and the ImageNet builders work with no
WordNet installed. It holds the 1,000 ImageNet class WNIDs in the standard class order and, for
each class and each of its hypernyms (hypernym links only, not instance hypernyms), the NLTK-style
synset name, the definition and the direct hypernym WNIDs.

Usage::

    apt-get install -y --no-install-recommends wordnet-base
    python scripts/build_imagenet_hierarchy.py [--wordnet /usr/share/wordnet]
        [--classes ../shared/data/imagenet/ILSVRC2012_classes.json | wnids.txt] [--out PATH]

``--classes`` is either the paper's ``ILSVRC2012_classes.json`` (its entries 0..999 are the
classes) or a text file with one WNID per line in class order.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from invert.concepts.wordnet import WordNet  # noqa: E402

DEFAULT_CLASSES = REPO.parent / "shared" / "data" / "imagenet" / "ILSVRC2012_classes.json"
DEFAULT_OUT = REPO / "src" / "invert" / "data" / "imagenet_hierarchy.json.gz"


def read_classes(path: Path) -> list[str]:
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        return [data[str(i)]["offset"] for i in range(1000)]
    return [ln.split()[0] for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wordnet", default=None, help="folder with data.noun/index.noun")
    ap.add_argument("--classes", type=Path, default=DEFAULT_CLASSES)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)

    wn = WordNet(args.wordnet)
    classes = read_classes(args.classes)
    if len(classes) != 1000 or len(set(classes)) != 1000:
        ap.error(
            f"--classes: expected 1000 unique WNIDs, got {len(classes)} "
            f"({len(set(classes))} unique)"
        )
    needed: list[str] = []
    seen: set[str] = set()
    for w in classes:
        for x in [w, *wn.hypernym_closure(w)]:
            if x not in seen:
                seen.add(x)
                needed.append(x)
    synsets = {}
    for w in needed:
        s = wn.synset(w)
        synsets[w] = [s.name, s.definition, list(s.hypernyms)]
    payload = {
        "format": "invert.imagenet_hierarchy",
        "version": 1,
        "source": "WordNet 3.0 noun database (Debian wordnet-base), via "
        "scripts/build_imagenet_hierarchy.py",
        "classes": classes,
        "synsets": synsets,
    }
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), sort_keys=False)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # mtime=0 keeps the file byte-identical across rebuilds
    with (
        open(args.out, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as fh,
    ):
        fh.write(text.encode("utf-8"))
    print(
        f"wrote {args.out}: {len(classes)} classes, {len(synsets)} synsets, "
        f"{args.out.stat().st_size} bytes"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
