"""The one shard store (``invert._store.RunStore``) and the search's shard files."""

from __future__ import annotations

import dataclasses
import json
import os
import stat

import numpy as np
import pytest
from _shard_helpers import SEARCH, assert_same

import invert
from invert._store import RunStore, ShardFileError, atomic_write
from invert.distributed import explain_sharded
from invert.distributed.store import SHARD_FORMAT, UnitStore, decode_shard, encode_shard
from invert.engine.inputs import Labels


def test_run_store_round_trip_and_checks(tmp_path):
    store = RunStore(tmp_path / "run", "k1")
    store.create()
    store.write_manifest({"what": "test"})
    assert store.is_mine(store.read_manifest())
    arrays = {"x": np.arange(5, dtype=np.int64), "": np.ones((2, 3), np.float32)}
    store.write_npz("s.npz", arrays, {"note": "hi", "nan": float("nan")})
    store.checksum("s.npz")
    store.verify("s.npz")
    info, got = store.read_npz("s.npz")
    assert info["note"] == "hi" and np.isnan(info["nan"])
    assert set(got) == {"x", ""}
    np.testing.assert_array_equal(got["x"], arrays["x"])
    assert store.read_npz("s.npz", only=["x"])[1].keys() == {"x"}
    assert store.read_npz("s.npz", header_only=True)[1] == {}
    with pytest.raises(ShardFileError, match="refused"):
        store.read_npz("s.npz", check=lambda h: (_ for _ in ()).throw(ValueError("refused")))

    again = RunStore(tmp_path / "run", "k1")
    again.adopt(again.read_manifest())
    assert again.checksums == store.checksums
    (tmp_path / "run" / "s.npz").write_bytes(b"changed")
    with pytest.raises(ShardFileError, match="checksum"):
        again.verify("s.npz")
    with pytest.raises(ShardFileError, match="no checksum"):
        again.verify("other.npz")
    assert not RunStore(tmp_path / "run", "k2").is_mine(again.read_manifest())


def test_temp_files_are_removed(tmp_path):
    store = RunStore(tmp_path, "k")
    (tmp_path / ".units_0_3.npz.abc.tmp").write_bytes(b"half")
    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "x", lambda f: (_ for _ in ()).throw(RuntimeError()))
    store.remove_temp_files()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_shard_encoding_round_trips_exactly(layer):
    """Formulas, statistics, extras and reasons come back equal; digit
    concept names are not mistaken for indices."""
    a, cs = layer
    c = cs.matrix.shape[1]
    names = [str(c - 1 - j) for j in range(c)]  # name "0" is column c - 1
    labels = Labels(names, cs.matrix)
    res = invert.explain(a[:, 2:9], labels, metric="point_biserial", **SEARCH)
    ids = [f"u{k}" for k in range(a.shape[1])]
    header, arrays = encode_shard(res, 2, 9)
    header = json.loads(json.dumps(header))  # as read back from the file
    units = decode_shard((header, arrays), ids, c)
    assert [u.unit for u in units] == list(range(2, 9))
    assert [u.unit_id for u in units] == ids[2:9]
    for got, want in zip(units, res.units, strict=True):
        assert got.reason == want.reason
        assert [str(e.formula) for e in got] == [str(e.formula) for e in want]
        assert [e.formula.concepts() for e in got] == [e.formula.concepts() for e in want]
        assert [e.extras for e in got] == [e.extras for e in want]
        assert [(e.auroc, e.p_value, e.support, e.rank) for e in got] == [
            (e.auroc, e.p_value, e.support, e.rank) for e in want]
    assert any(e.extras for u in units for e in u)
    with pytest.raises(ValueError, match="not a formula over 1 concepts"):
        decode_shard((header, arrays), ids, 1)


def test_point_biserial_and_names_through_the_store(layer, tmp_path):
    a, cs = layer
    search = dict(SEARCH, metric="point_biserial")
    want = invert.explain(a, cs, **search)
    explain_sharded(a, cs, shard_units=5, out_dir=tmp_path, **search)
    got = explain_sharded(a, cs, shard_units=5, out_dir=tmp_path, **search)  # all read back
    assert_same(got, want)
    # the metric's value may differ in the last bit with the width of the searched block
    assert [e.extras["point_biserial"] for u in got for e in u] == pytest.approx(
        [e.extras["point_biserial"] for u in want for e in u], rel=1e-12)


def test_manifest_names_the_run_and_records_checksums(layer, tmp_path):
    a, cs = layer
    explain_sharded(a, cs, shard_units=6, out_dir=tmp_path, **SEARCH)
    doc = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    assert doc["format"] == SHARD_FORMAT == 2
    assert sorted(doc["checksums"]) == ["units_0_6.npz", "units_6_12.npz"]
    assert doc["n_units"] == 12 and doc["search"]["beam_size"] == 3


def test_unrecorded_shard_file_is_deleted(layer, tmp_path):
    """A shard written just before a kill (not yet in the manifest) is recomputed."""
    a, cs = layer
    explain_sharded(a, cs, shard_units=6, out_dir=tmp_path, **SEARCH)
    shards = tmp_path / "shards"
    doc = json.loads((shards / "manifest.json").read_text())
    del doc["checksums"]["units_6_12.npz"]
    (shards / "manifest.json").write_text(json.dumps(doc))
    store = UnitStore(tmp_path, doc["key"], {"n_units": 12})
    assert store.open() == [(0, 6)]
    assert not (shards / "units_6_12.npz").exists()


def test_any_formula_tree_round_trips():
    """Formulas are stored as trees (postfix codes), not strings: every shape comes back
    with its structure, not just its printed form."""
    from invert.engine.formula import Literal, parse_formula
    from invert.engine.result import Explanation, ExplanationResult, UnitExplanations

    names = ("a", "b", "c", "d")
    fs = [Literal(2, True, names), parse_formula("a | (b | ~c)", names),
          parse_formula("(a | b) & (c | ~d)", names), parse_formula("a & b & c | d", names)]
    items = [Explanation(formula=f, auroc=0.5 + 0.1 * r, fraction=0.25, support=1,
                         length=f.length, p_value=0.1, log10_p_value=-1.0, rank=r,
                         extras={"note": "x", "v": float("nan")})
             for r, f in enumerate(fs)]
    res = ExplanationResult(units=[UnitExplanations(items), UnitExplanations(
        reason="constant unit")], concept_names=list(names))
    (unit, empty) = decode_shard(encode_shard(res, 5, 7), None, 4)
    assert list(unit) == [dataclasses.replace(e, unit=5) for e in items]
    assert [e.formula for e in unit] == fs
    assert [str(e.formula) for e in unit] == [str(f) for f in fs]
    assert (unit.unit, unit.unit_id, empty.unit, empty.reason) == (5, 5, 6, "constant unit")
    assert unit[0].extras["note"] == "x"


def test_files_get_the_usual_permissions(tmp_path):
    """Not the 0o600 of tempfile.mkstemp: 0o666 less the umask, like any file."""
    old = os.umask(0o027)
    try:
        atomic_write(tmp_path / "x.bin", lambda f: f.write(b"data"))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.bin").stat().st_mode) == 0o640
