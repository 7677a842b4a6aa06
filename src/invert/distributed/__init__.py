"""Scale-out: the search sharded over units and extraction sharded over samples, on Ray or not.

:func:`explain_sharded` runs :func:`invert.explain` on contiguous shards of units and
gathers one :class:`~invert.engine.result.ExplanationResult`, equal to ``explain`` on the whole
array (the search of a unit does not depend on the other units). It

* reads only each shard's columns (a ``.npy`` file is read with plain file reads in row
  chunks, never mapped or loaded whole), so activations larger than memory are searched
  within ``memory_budget`` per worker;
* writes each finished shard atomically to ``out_dir/shards/units_<start>_<stop>.npz``
  (numeric arrays and a JSON header, never a pickle) with a ``manifest.json`` that names
  the run (a hash of the activations, the concepts, the search parameters and the invert
  version) and holds each shard's SHA-1: a rerun of the same run computes only the missing
  shards, a rerun of a different run starts afresh; a shard is read only after its run and
  checksum are checked;
* runs the shards in this process (``backend="local"``) or as Ray tasks
  (``backend="ray"``: local mode on one machine, or a cluster by ``address``). A worker
  that dies loses only its own shard: the others finish and are kept, and a
  :class:`ShardError` lists the missing ones, which a rerun completes.

:func:`collect_activations_sharded` splits a data set into contiguous sample shards, runs
:func:`invert.collect_activations` on each (one cached shard each, in a Ray task or in this
process) and writes the ``(N, K)`` activations in sample order to ``.npy`` files.

Ray is an optional extra (``pip install 'invert[ray]'``), imported only when used.

Modules: :mod:`.backends` (one dispatcher, :func:`~.backends.run_shards`, for this process
and Ray), :mod:`.store` (the search's shard store, an :class:`invert._store.RunStore`),
:mod:`.search` (:func:`explain_sharded`) and :mod:`.extract`
(:func:`collect_activations_sharded`).
"""

from .backends import ShardError
from .extract import collect_activations_sharded
from .search import explain_sharded, plan_shard_units

__all__ = ["ShardError", "explain_sharded", "collect_activations_sharded", "plan_shard_units"]
