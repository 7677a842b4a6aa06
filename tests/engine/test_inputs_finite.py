"""The finiteness check of a ``.npy`` file: one pass over a row-major file, the same error as an
in-memory array."""

from __future__ import annotations

import numpy as np
import pytest

import invert
from invert.engine import inputs
from invert.engine.inputs import NpyColumns, as_activations


def _file(tmp_path, a: np.ndarray, order: str):
    path = tmp_path / f"a_{order}.npy"
    np.save(path, np.asfortranarray(a) if order == "F" else np.ascontiguousarray(a))
    return path


@pytest.mark.parametrize("order", ["C", "F"])
def test_nonfinite_columns_match_numpy(tmp_path, order):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((301, 37)).astype(np.float32)
    a[5, 3], a[300, 36], a[0, 20], a[17, 20] = np.nan, np.inf, -np.inf, np.nan
    src = NpyColumns.open(_file(tmp_path, a, order), read_chunk=7 * 37 * 4)  # 7-row bands
    got = src.nonfinite_columns()
    np.testing.assert_array_equal(got, ~np.isfinite(a).all(axis=0))
    assert got.sum() == 3


@pytest.mark.parametrize("bad", [None, (250, 29)])
def test_row_major_file_is_read_once(tmp_path, monkeypatch, bad):
    """With blocks of 2 columns, a clean 40-column C-order file is checked in one pass (no
    column block read); with a NaN, the message is the in-memory array's."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((400, 40)).astype(np.float32)
    if bad is not None:
        a[bad] = np.nan
    path = _file(tmp_path, a, "C")
    monkeypatch.setattr(inputs, "_FINITE_CHECK_BYTES", 8 * 400 * 2)  # 2 units per block
    reads = []
    real = NpyColumns.read
    monkeypatch.setattr(NpyColumns, "read",
                        lambda self, s, e: reads.append((s, e)) or real(self, s, e))
    if bad is None:
        acts, _ = as_activations(np.load(path, mmap_mode="r"))
        assert reads == []
        np.testing.assert_array_equal(acts.block(slice(0, 40)), a)
        return
    with pytest.raises(ValueError) as from_file:
        as_activations(path)
    assert reads == [(28, 30)]  # only the first bad block is read by columns
    with pytest.raises(ValueError) as from_memory:
        as_activations(a)
    assert str(from_file.value) == str(from_memory.value)
    assert "row 250, unit 29" in str(from_file.value)


def test_search_of_row_major_file_unchanged(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    y = rng.random((500, 6)) < 0.3
    a = (y[:, [0, 2, 4, 1]] + 0.3 * rng.standard_normal((500, 4))).astype(np.float32)
    monkeypatch.setattr(inputs, "_FINITE_CHECK_BYTES", 8 * 500)  # 1 unit per block
    got = invert.explain(str(_file(tmp_path, a, "C")), y, length=2, beam_size=2)
    want = invert.explain(a, y, length=2, beam_size=2)
    assert [[(str(e.formula), e.auroc) for e in u] for u in got] == \
        [[(str(e.formula), e.auroc) for e in u] for u in want]
