"""Tables (CSV/Parquet, wide/long) as concept sets."""

from __future__ import annotations

import numpy as np
import pytest

from invert.concepts import SkippedItemsWarning, from_table

pd = pytest.importorskip("pandas", reason="table builders need pandas (pip install pandas)")


def test_wide_csv(tmp_path):
    p = tmp_path / "w.csv"
    p.write_text("sample,red,round\n007,1,0\nb,true,yes\nc,0,F\n")
    cs = from_table(p)
    assert cs.sample_ids == ["007", "b", "c"]  # ids keep their text form
    assert cs.names == ["red", "round"]
    np.testing.assert_array_equal(cs.to_dense(), [[1, 0], [1, 1], [0, 0]])
    only = from_table(p, concept_columns=["round"])
    assert only.names == ["round"]


def test_wide_bad_input(tmp_path):
    p = tmp_path / "w.csv"
    p.write_text("sample,red,round\na,1,2\nb,1,\nc,0,1\n")
    with pytest.raises(ValueError, match=r"column 'round': value '2' is not 0/1"):
        from_table(p)
    with pytest.warns(SkippedItemsWarning, match="skipped 2"):
        cs = from_table(p, errors="skip")
    assert cs.sample_ids == ["c"]
    assert [r["item"] for r in cs.skipped] == ["row 0 (sample 'a'), column 'round'",
                                               "row 1 (sample 'b'), column 'round'"]
    p.write_text("sample,red\na,1\na,0\n")
    with pytest.raises(ValueError, match="sample_ids: expected unique"):
        from_table(p)
    p.write_text("id,red\na,1\n")
    with pytest.raises(ValueError, match="sample_column"):
        from_table(p)
    p.write_text("sample,red,red\na,1,0\n")
    with pytest.raises(ValueError, match="duplicate column"):
        from_table(p)
    p.write_text("sample,red\na,1\n")
    with pytest.raises(ValueError, match="concept_columns"):
        from_table(p, concept_columns=["blue"])
    with pytest.raises(FileNotFoundError):
        from_table(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="layout"):
        from_table(p, layout="tall")


def test_long_csv_and_parquet(tmp_path):
    pytest.importorskip("pyarrow")
    df = pd.DataFrame({"sample": ["x", "y", "x", "z", "x"],
                       "concept": ["cat", "dog", "pet", None, "cat"]})
    df.to_parquet(tmp_path / "l.parquet")
    df.to_csv(tmp_path / "l.csv", index=False)
    for path in (tmp_path / "l.parquet", tmp_path / "l.csv"):
        with pytest.warns(UserWarning):
            cs = from_table(path)
        assert cs.sample_ids == ["x", "y", "z"] and cs.names == ["cat", "dog", "pet"]
        np.testing.assert_array_equal(cs.to_dense(), [[1, 0, 1], [0, 1, 0], [0, 0, 0]])
        assert cs.unlabelled_samples.tolist() == [2]  # z: listed without concepts, kept
        assert [r["reason"] for r in cs.skipped] == ["duplicate row ('x', 'cat')"]


def test_long_with_fixed_samples_and_bad_rows(tmp_path):
    df = pd.DataFrame({"sample": ["x", "q", None], "concept": ["cat", "dog", "cat"]})
    with pytest.raises(ValueError, match="2 bad row"):
        from_table(df, samples=["y", "x"])
    with pytest.warns(UserWarning):
        cs = from_table(df, samples=["y", "x"], errors="skip")
    assert cs.sample_ids == ["y", "x"]
    assert cs.column("cat").tolist() == [False, True]
    assert {r["item"] for r in cs.skipped} == {"row 1", "row 2"}
    assert cs.constant_concepts == ["dog"]  # only in a skipped row: kept, all-zero, reported


def test_wide_dataframe_without_ids():
    df = pd.DataFrame({"a": [0, 1, 1], "b": [1.0, 0.0, 1.0]})
    cs = from_table(df, sample_column=None)
    assert cs.sample_ids is None
    np.testing.assert_array_equal(cs.to_dense(), df.to_numpy().astype(bool))
    with pytest.raises(TypeError, match="table"):
        from_table(42)
