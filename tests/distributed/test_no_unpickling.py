"""Shard files are data, never code (issue 14 A): planted pickles are not opened."""

from __future__ import annotations

import json
import logging
import pickle
import shutil

import numpy as np
import pytest
from _shard_helpers import SEARCH, assert_same

import invert
from invert._store import sha1_file
from invert.distributed import ShardError, explain_sharded


class _Planted:
    """Unpickling this creates ``marker`` (as a hostile shard file would run code)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _plant_pickle(path, marker):
    path.write_bytes(pickle.dumps({"start": 0, "stop": 6, "units": _Planted(marker)}))


def test_planted_pickle_beside_a_copied_manifest(layer, tmp_path, caplog):
    """A folder holding only a copied ``manifest.json`` and a ``.pkl``: the pickle is
    named in a warning, never opened, and the result is the plain one."""
    a, cs = layer
    explain_sharded(a, cs, shard_units=6, out_dir=tmp_path / "first", **SEARCH)
    shards = tmp_path / "second" / "shards"
    shards.mkdir(parents=True)
    shutil.copy(tmp_path / "first" / "shards" / "manifest.json", shards)
    marker = tmp_path / "marker"
    _plant_pickle(shards / "units_0_6.pkl", marker)
    assert not marker.exists()
    with caplog.at_level(logging.WARNING, logger="invert"):
        got = explain_sharded(a, cs, shard_units=6, out_dir=tmp_path / "second", **SEARCH)
    assert not marker.exists()
    assert "units_0_6.pkl is not read" in caplog.text
    assert_same(got, invert.explain(a, cs, **SEARCH))


def test_pickle_swapped_for_a_finished_shard(layer, tmp_path, caplog):
    """A resumed run whose finished shard was replaced by a pickle recomputes that shard."""
    a, cs = layer
    explain_sharded(a, cs, shard_units=6, out_dir=tmp_path, **SEARCH)
    shards = tmp_path / "shards"
    (shards / "units_0_6.npz").unlink()
    marker = tmp_path / "marker"
    _plant_pickle(shards / "units_0_6.pkl", marker)
    with caplog.at_level(logging.WARNING, logger="invert"):
        got = explain_sharded(a, cs, shard_units=6, out_dir=tmp_path, **SEARCH)
    assert not marker.exists()
    assert "units_0_6.pkl" in caplog.text
    assert_same(got, invert.explain(a, cs, **SEARCH))


def test_pickle_under_a_shard_name_is_refused(layer, tmp_path):
    """A pickle saved as ``units_0_6.npz`` fails its checksum and is never loaded."""
    a, cs = layer
    explain_sharded(a, cs, shard_units=6, out_dir=tmp_path, **SEARCH)
    marker = tmp_path / "marker"
    _plant_pickle(tmp_path / "shards" / "units_0_6.npz", marker)
    with pytest.raises(ShardError, match=r"\[0, 6\).*checksum"):
        explain_sharded(a, cs, shard_units=6, out_dir=tmp_path, **SEARCH)
    assert not marker.exists()
    assert_same(explain_sharded(a, cs, shard_units=6, out_dir=tmp_path, **SEARCH),
                invert.explain(a, cs, **SEARCH))


def test_object_array_with_a_forged_checksum_is_refused(layer, tmp_path):
    """Even a planted ``.npz`` whose SHA-1 was written into the manifest cannot run code:
    shards are read with ``allow_pickle=False``, so its object array is refused."""
    a, cs = layer
    explain_sharded(a, cs, shard_units=6, out_dir=tmp_path, **SEARCH)
    shards = tmp_path / "shards"
    marker = tmp_path / "marker"
    obj = np.empty(1, dtype=object)
    obj[0] = _Planted(marker)
    manifest = json.loads((shards / "manifest.json").read_text())
    info = json.dumps({"key": manifest["key"], "format": manifest["format"], "start": 0,
                       "stop": 6}).encode()
    with open(shards / "units_0_6.npz", "wb") as f:
        np.savez(f, a_auroc=obj, info=np.frombuffer(info, dtype=np.uint8))
    manifest["checksums"]["units_0_6.npz"] = sha1_file(shards / "units_0_6.npz")
    (shards / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ShardError, match=r"\[0, 6\).*allow_pickle=False"):
        explain_sharded(a, cs, shard_units=6, out_dir=tmp_path, **SEARCH)
    assert not marker.exists()


def test_shards_of_the_pickle_format_are_deleted_unread(layer, tmp_path, caplog):
    """A store of shard format 1 (pickles) is another run: its files are removed unopened."""
    a, cs = layer
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "manifest.json").write_text(json.dumps({"key": "old", "format": 1}))
    marker = tmp_path / "marker"
    _plant_pickle(shards / "units_0_6.pkl", marker)
    with caplog.at_level(logging.WARNING, logger="invert"):
        got = explain_sharded(a, cs, shard_units=6, out_dir=tmp_path, **SEARCH)
    assert not marker.exists() and not (shards / "units_0_6.pkl").exists()
    assert "different run" in caplog.text
    assert_same(got, invert.explain(a, cs, **SEARCH))
