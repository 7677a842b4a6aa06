"""Fixtures of the report tests (the runs themselves are built in ``report_runs``)."""

from __future__ import annotations

import pytest
from report_runs import small_run


@pytest.fixture
def run_with_images(tmp_path):
    pytest.importorskip("PIL")
    return small_run(tmp_path / "out", images=tmp_path / "imgs")
