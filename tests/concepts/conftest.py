"""Shared fixtures and skips for the concept-set tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from invert.concepts import WordNet

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
REFERENCE = SHARED / "data" / "imagenet" / "ILSVRC2012_classes.json"
TUXPAINT = Path("/usr/share/tuxpaint/stamps")
FORTUNES = Path("/usr/share/games/fortunes")



@pytest.fixture(scope="session")
def reference() -> list[dict]:
    """The paper's 1,473 ImageNet concepts (skips when shared/ is not beside the repo)."""
    if not REFERENCE.is_file():
        pytest.skip(f"reference concept list {REFERENCE} not present")
    data = json.loads(REFERENCE.read_text(encoding="utf-8"))
    return [data[str(i)] for i in range(len(data))]


@pytest.fixture(scope="session")
def wordnet() -> WordNet:
    """The WordNet 3.0 database (skips when wordnet-base is not installed)."""
    if not WordNet.available():
        pytest.skip("WordNet 3.0 not installed (apt-get install wordnet-base)")
    return WordNet.default()
