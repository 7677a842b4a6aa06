"""``collect_activations``: run a model over a data set and record named layers' units.

One call goes through named stages: :func:`_plan` validates the arguments,
:func:`_open_cache` opens the activation cache and returns a complete cached result when
there is one, :func:`_run_batches` runs the batches (model on the run's device and in eval
mode, restored afterwards), :func:`_build_sets` consolidates the cache and builds the
:class:`ActivationSet` of each layer. The units themselves are computed in
:mod:`invert.extract.units`, the data read in :mod:`invert.extract.sources`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Integral
from typing import Any

import numpy as np
import torch

from .._progress import progress_bar
from .._validate import InvalidParameterError, bad, check_choice, check_int
from . import cache as _cache
from .activations import ActivationSet
from .hooks import StopForward, hooked_outputs, resolve_modules
from .maps import MapKeeper, SpatialMaps
from .sae import SAE
from .sources import (
    Batch,
    Prefetcher,
    Source,
    as_tensor,
    make_source,
    model_device,
    pin,
    rows,
    sample_ids,
    split_rows,
    to_device,
)
from .units import (
    LAYOUTS,
    LayerInfo,
    Layout,
    Reduce,
    UnitSpec,
    compute_units_and_maps,
    parse_reduce,
)

logger = logging.getLogger(__name__)

__all__ = ["ActivationSet", "collect_activations", "hooked_outputs"]

Unit = str | Callable[[Any], Any] | SAE


# =========================================================================================
# Stage 1: validate the arguments
# =========================================================================================
@dataclass
class _Plan:
    """The validated arguments of one call."""

    single: bool  # one layer given (not a list): return one ActivationSet
    names: list[str]  # every layer, in order (a callable's __name__)
    fns: dict[str, Callable[[Any], Any]]  # the callable unit sources
    hooked: list[str]  # the named layers of the model
    spec: UnitSpec
    device: torch.device
    move: bool  # a device was given: the model runs there and is moved back afterwards
    ac_dtype: torch.dtype | None
    batch_size: int

    @property
    def keep_maps(self) -> int:
        return self.spec.keep_maps

    def pick(self, sets: dict[str, ActivationSet]) -> ActivationSet | dict[str, ActivationSet]:
        return sets[self.names[0]] if self.single else sets


def _parse_layers(layers: Any
                  ) -> tuple[bool, list[str], dict[str, Callable[[Any], Any]], dict[str, SAE]]:
    """``(single, names, callable sources, {layer: SAE} of the SAEs among the layers)``."""
    single = isinstance(layers, str | SAE) or callable(layers)
    try:
        layer_list = [layers] if single else list(layers)
    except TypeError:
        raise bad("layers", "a layer name, a callable or a list of them", layers) from None
    if not layer_list:
        raise bad("layers", "a layer name, a callable or a non-empty list", layer_list)
    names: list[str] = []
    fns: dict[str, Callable[[Any], Any]] = {}
    saes: dict[str, SAE] = {}
    for lay in layer_list:
        if isinstance(lay, SAE):
            if lay.layer is None:
                raise bad("layers", "an SAE that names the layer it reads (sae.at('layer'))",
                          lay)
            names.append(lay.layer)
            saes[lay.layer] = lay
        elif isinstance(lay, str):
            names.append(lay)
        elif callable(lay):
            nm = getattr(lay, "__name__", type(lay).__name__)
            fns[nm] = lay
            names.append(nm)
        else:
            raise bad("layers", "str or callable entries", type(lay).__name__, raw=True)
    if len(set(names)) != len(names):
        raise bad("layers", "distinct names", names)
    return single, names, fns, saes


def _check_model(model: Any, hooked: Sequence[str]) -> None:
    if model is None and hooked:
        raise bad("model", "a torch.nn.Module when layers are named", None)
    if model is not None and not isinstance(model, torch.nn.Module):
        raise bad("model", "a torch.nn.Module", type(model).__name__, raw=True)
    if model is not None and hooked:
        resolve_modules(model, hooked)  # unknown names fail here, before any work


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise bad(name, "a positive int", value)
    return int(value)


def _parse_device(device: Any, model: torch.nn.Module | None) -> torch.device:
    if device is None:
        return model_device(model)
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise bad("device", "a torch device such as 'cpu' or 'cuda:0'", device) from None


def _parse_directions(directions: Any, names: list[str], hooked: list[str],
                      dev: torch.device, saes: Mapping[str, SAE]) -> dict[str, Any]:
    """``{layer: (D, K) tensor or SAE}`` on the device, the SAEs given among the layers too."""
    if directions is None:
        raw: Mapping[str, Any] = {}
    elif isinstance(directions, Mapping):
        raw = directions
    else:
        raw = {n: directions for n in hooked}
    both = sorted(set(raw) & set(saes))
    if both:
        raise InvalidParameterError(
            f"directions: layers {both} are given an SAE in layers and directions too")
    dirs: dict[str, Any] = {n: sae.to(dev) for n, sae in saes.items()}
    for nm, W in raw.items():
        if nm not in names:
            raise InvalidParameterError(f"directions: key {nm!r} is not one of layers {names}")
        if isinstance(W, SAE):
            dirs[nm] = W.to(dev)
            continue
        Wt = torch.as_tensor(np.asarray(W) if not isinstance(W, torch.Tensor) else W)
        if Wt.ndim != 2:
            raise bad("directions", "a 2-D (D, K) matrix", f"shape {tuple(Wt.shape)}", raw=True)
        if not Wt.is_floating_point():
            Wt = Wt.float()
        dirs[nm] = Wt.detach().to(dev)
    return dirs


def _parse_autocast(autocast: Any, dev: torch.device) -> torch.dtype | None:
    if autocast is True:
        return torch.float16 if dev.type == "cuda" else torch.bfloat16
    if isinstance(autocast, torch.dtype):
        return autocast
    if autocast is not False:
        raise bad("autocast", "bool or torch.dtype", autocast)
    return None


def _plan(model: Any, layers: Any, *, reduce: Reduce, batch_size: Any, device: Any,
          directions: Any, layout: Any, select: Any, autocast: Any, num_workers: Any,
          prefetch: Any, keep_maps: Any) -> _Plan:
    """Every argument checked (in the order of the signature), before any work."""
    single, names, fns, saes = _parse_layers(layers)
    hooked = [n for n in names if n not in fns]
    _check_model(model, hooked)
    red, q = parse_reduce(reduce)
    batch_size = _positive_int("batch_size", batch_size)
    check_choice("layout", layout, LAYOUTS)
    check_int("num_workers", num_workers, minimum=0)
    check_int("prefetch", prefetch, minimum=0)
    keep_maps = check_int("keep_maps", keep_maps, minimum=0)
    dev = _parse_device(device, model)
    dirs = _parse_directions(directions, names, hooked, dev, saes)
    ac_dtype = _parse_autocast(autocast, dev)
    spec = UnitSpec(red, q, layout, select, dirs, keep_maps)
    return _Plan(single, names, fns, hooked, spec, dev,
                 model is not None and device is not None, ac_dtype, batch_size)


# =========================================================================================
# Stage 2: the cache
# =========================================================================================
def _run_fingerprint(model: torch.nn.Module | None, plan: _Plan, forward: Any) -> str:
    """Hash of everything but the data that changes the result (part of the cache key).

    Do not change: the key must stay what invert 0.1.0 computed, so old caches are still hit
    (``tests/extract/test_cache_compat.py``). What was added since (SAEs, ``keep_maps``)
    enters the hash only when used.
    """
    spec = plan.spec
    fp = _cache.Fingerprint().update(
        "invert", _cache.invert_version(),
        "model", _cache.fingerprint_module(model) if model is not None else None,
        "layers", [(n, _cache.fingerprint_callable(plan.fns[n]) if n in plan.fns else None)
                   for n in plan.names],
        "reduce", spec.reduce, spec.q, "layout", spec.layout,
        "select", _cache.fingerprint_callable(spec.select) if callable(spec.select)
        else spec.select,
        "forward", _cache.fingerprint_callable(forward) if forward is not None else None,
        "directions", {k: v.cache_key() if isinstance(v, SAE) else v.cpu()
                       for k, v in spec.directions.items()},
        "autocast", str(plan.ac_dtype), "batch_size", plan.batch_size, "dtype", "float32",
    )
    if spec.keep_maps:
        fp.update("keep_maps", spec.keep_maps)
    return fp.hexdigest()


class _Cache:
    """The activation cache of one call: the run's store and a complete result found in it.

    Data with a content fingerprint (or a ``cache_key``) opens its store at once. Other data
    (a ``stream``) is keyed by its first batch: the store opens there, and every batch is
    hashed and checked against its cached shard.
    """

    def __init__(self, root: str | os.PathLike[str], run_fp: str, plan: _Plan, source: Source,
                 data_fp: str | None, verify: bool, state: str | None = None):
        self.state = state
        self.root = root
        self.run_fp = run_fp
        self.names = plan.names
        self.verify = verify
        self.manifest = {"layers": plan.names, "reduce": plan.spec.reduce, "q": plan.spec.q,
                         "data": source.description}
        self.stream = data_fp is None
        self.store: _cache.ShardStore | None = None
        self.cached: tuple[dict[str, ActivationSet], list[str]] | None = None
        if data_fp is not None:
            self.open(data_fp)

    def open(self, data_fp: str) -> None:
        """Open the store of this run on this data and look for a complete result there."""
        key = _cache.Fingerprint().update(self.run_fp, "data", data_fp).hexdigest()
        self.store = _cache.ShardStore(self.root, key, {
            **self.manifest, "data_fingerprint": data_fp,
            "invert_version": _cache.invert_version()}, state=self.state)
        self.cached = _try_cached_result(self.store, self.names, self.verify)

    def read(self, i: int, batch: Batch) -> tuple[dict[str, np.ndarray], Any] | None:
        assert self.store is not None
        return self.store.read_shard(i, batch.digest if self.stream else None, self.names,
                                     header_only=self.cached is not None)

    def write(self, i: int, arrays: Mapping[str, np.ndarray], batch: Batch,
              infos: Mapping[str, LayerInfo]) -> None:
        assert self.store is not None
        meta = {n: [infos[n].reduction, infos[n].unit_ids] for n in self.names}
        self.store.write_shard(i, arrays, str(batch.digest), meta)


def _open_cache(cache_dir: str | os.PathLike[str] | None, model: torch.nn.Module | None,
                plan: _Plan, source: Source, forward: Any, cache_key: str | None,
                verify: bool) -> _Cache | None:
    if cache_dir is None:
        return None
    run_fp = _run_fingerprint(model, plan, forward)
    state = _cache.fingerprint_state(model, *plan.fns.values())
    data_fp: str | None = None
    if cache_key is not None:
        data_fp = f"key:{cache_key}"
    elif source.fingerprint is not None:
        data_fp = source.fingerprint()
    return _Cache(cache_dir, run_fp, plan, source, data_fp, verify, state)


def _try_cached_result(
    store: _cache.ShardStore, names: Sequence[str], verify: bool
) -> tuple[dict[str, ActivationSet], list[str]] | None:
    """``(sets, batch digests)`` of the store's complete result; None (and rebuilt) if broken."""
    if not store.result_path.exists():
        return None
    try:
        record, arrs = store.read_result(verify=verify)
        if set(record["layers"]) != set(names):  # JSON keys come back sorted
            raise _cache.CacheCorruptError("layer list differs")
    except (_cache.CacheCorruptError, KeyError) as e:
        logger.warning("cache %s is corrupt (%s); rebuilding it", store.dir, e)
        store.invalidate_result()
        return None
    logger.info("activations found in cache %s", store.dir)
    sets = _sets_from_record(store, record, arrs)
    return {n: sets[n] for n in names}, list(record.get("digests", []))


# =========================================================================================
# Stage 3: run the batches
# =========================================================================================
def _default_forward(model: torch.nn.Module, inputs: Any) -> Any:
    if isinstance(inputs, Mapping):
        return model(**inputs)
    return model(inputs)


def _prepare(raw: Any, pin_memory: bool, digest: bool) -> Batch:
    """A raw batch made ready for the model (runs in the prefetch thread)."""
    inputs, mask, row_mask = split_rows(raw)
    if pin_memory:  # page-locked host memory: the copy to the GPU overlaps compute
        inputs = pin(inputs)
    b = Batch(inputs, rows(inputs), mask, row_mask=row_mask)
    if digest:
        b.digest = _cache.batch_digest(inputs)
    return b


class _BatchRunner:
    """Runs one batch through the model (hooks) and the unit sources; its units as arrays."""

    def __init__(self, model: torch.nn.Module | None, plan: _Plan, forward: Any,
                 infos: dict[str, LayerInfo]):
        self.model = model
        self.plan = plan
        self.forward = forward or _default_forward
        self.infos = infos
        self.hooks: dict[str, Any] = {}  # filled by hooked_outputs during the forward pass
        self.mask: torch.Tensor | None = None  # attention mask of the batch being run
        self.row_mask: torch.Tensor | None = None  # rows reduce="tokens" keeps, if set apart
        self.keepers: dict[str, MapKeeper] = {}  # layers whose spatial maps are kept

    def on_output(self, name: str, out: Any) -> Any:
        """Hook callback: the layer's units, computed on the device inside the forward pass."""
        return compute_units_and_maps(name, out, self.plan.spec, self._mask(), self.infos[name])

    def _mask(self) -> torch.Tensor | None:
        """The mask of the rows: for one row per token, the batch's row mask when it has one
        (special tokens left out), else the attention mask."""
        if self.row_mask is not None and self.plan.spec.reduce in ("tokens", "none"):
            return self.row_mask
        return self.mask

    def maps(self) -> dict[str, SpatialMaps]:
        """The spatial maps kept so far, per layer."""
        return {n: k.result(self.infos[n].unit_ids) for n, k in self.keepers.items()
                if k.values is not None}

    def __call__(self, batch: Batch, offset: int = 0) -> dict[str, np.ndarray]:
        """The units of one batch whose first sample is row ``offset`` of the data set."""
        plan, dev = self.plan, self.plan.device
        inputs = to_device(batch.inputs, dev)
        self.mask = to_device(batch.mask, dev) if batch.mask is not None else None
        self.row_mask = to_device(batch.row_mask, dev) if batch.row_mask is not None else None
        ac = (torch.autocast(dev.type, dtype=plan.ac_dtype) if plan.ac_dtype is not None
              else contextlib.nullcontext())
        self.hooks.clear()
        with torch.inference_mode(), ac:
            if len(plan.fns) < len(plan.names):
                with contextlib.suppress(StopForward):
                    self.forward(self.model, inputs)  # type: ignore[arg-type]
            fn_out = {n: compute_units_and_maps(n, as_tensor(f(inputs)), plan.spec, self._mask(),
                                                self.infos[n]) for n, f in plan.fns.items()}
            arrays = self._arrays(fn_out, offset)
        return arrays

    def _arrays(self, fn_out: Mapping[str, Any], offset: int) -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {}
        tok = None
        for n in self.plan.names:
            got = fn_out.get(n) if n in self.plan.fns else self.hooks.get(n)
            if got is None:
                raise RuntimeError(
                    f"layers: layer {n!r} was not called during the forward pass (is it used "
                    "by model.forward for these inputs?)"
                )
            y, t, maps = got
            arrays[n] = y.detach().float().cpu().numpy()
            if maps is not None:
                self.keepers.setdefault(n, MapKeeper(self.plan.keep_maps)).update(y, maps, offset)
            if t is not None:
                tok = t
        n_rows = {n: a.shape[0] for n, a in arrays.items()}
        if len(set(n_rows.values())) != 1:
            raise InvalidParameterError(
                f"layers: per-token and per-sample outputs cannot be mixed in one call; rows "
                f"per layer in this batch: {n_rows}. Extract token layers in a separate call."
            )
        if tok is not None:
            arrays["__tok"] = tok.cpu().numpy().astype(np.int64)
        return arrays


@contextlib.contextmanager
def _lent(model: torch.nn.Module | None, plan: _Plan, eval_mode: bool) -> Iterator[None]:
    """The model on the run's device (when one was given) and in eval mode during the run;
    afterwards, also after an error, back on its device and in its train/eval modes."""
    if model is None:
        yield
        return
    home = model_device(model)
    modes = [(m, m.training) for m in model.modules()]
    try:
        if plan.move:
            model.to(plan.device)
        if eval_mode:
            model.eval()
        yield
    finally:
        if eval_mode:
            for m, training in modes:
                m.training = training
        if plan.move:
            model.to(home)


@dataclass
class _Collected:
    """What the batches gave: layer infos, per-layer blocks (without a cache) and counts."""

    infos: dict[str, LayerInfo]
    blocks: dict[str, list[np.ndarray]]
    n_done: int = 0
    digests: list[str | None] = field(default_factory=list)
    recomputed: int = 0
    maps: dict[str, SpatialMaps] = field(default_factory=dict)  # keep_maps: per layer


def _restore_infos(infos: dict[str, LayerInfo], meta: Mapping[str, Any]) -> None:
    for n, (reduction, unit_ids) in meta.items():
        if not infos[n].unit_ids:
            infos[n].reduction = reduction
            infos[n].unit_ids = list(unit_ids)


def _one_batch(i: int, batch: Batch, run: _BatchRunner, cache: _Cache | None,
               got: _Collected) -> None:
    """Batch ``i``: read from its cached shard, or computed (and written to the cache)."""
    if cache is not None and cache.store is None:  # a stream: keyed by its first batch
        cache.open("stream:" + str(batch.digest))
    got.digests.append(batch.digest)
    # with keep_maps every batch runs: a cached shard holds no maps
    hit = cache.read(i, batch) if cache is not None and not run.plan.keep_maps else None
    if hit is not None:
        arrays, meta = hit
        _restore_infos(got.infos, meta)
    else:
        got.recomputed += 1
        arrays = run(batch, got.n_done)
        if "__tok" in arrays:
            arrays["__tok"][:, 0] += got.n_done  # global document row
        if cache is not None:
            cache.cached = None
            cache.write(i, arrays, batch, got.infos)
    if cache is None:
        for k, v in arrays.items():
            got.blocks.setdefault(k, []).append(v)
    got.n_done += batch.n


def _run_batches(model: torch.nn.Module | None, plan: _Plan, source: Source,
                 cache: _Cache | None, forward: Any, *, progress: bool, eval_mode: bool,
                 stop_early: bool, prefetch: int) -> _Collected:
    """Every batch through the model; hooks, prefetch thread and bar closed at the end."""
    got = _Collected({n: LayerInfo() for n in plan.names}, {n: [] for n in plan.names})
    run = _BatchRunner(model, plan, forward, got.infos)
    prepare = functools.partial(_prepare, pin_memory=plan.device.type == "cuda",
                                digest=cache is not None and cache.stream)
    with contextlib.ExitStack() as stack:
        pre = Prefetcher(source.batches(), prepare, prefetch)
        stack.callback(pre.close)
        tick = stack.enter_context(progress_bar(source.n, "activations", progress,
                                                unit="sample"))
        stack.enter_context(_lent(model, plan, eval_mode))
        if plan.hooked:
            run.hooks = stack.enter_context(hooked_outputs(
                model, plan.hooked, run.on_output,  # type: ignore[arg-type]
                stop_early=stop_early and not plan.fns))
        for i, batch in enumerate(pre):
            _one_batch(i, batch, run, cache, got)
            if tick is not None:
                tick(got.n_done, source.n)
    got.maps = run.maps()
    if plan.keep_maps and not got.maps:
        logger.warning("keep_maps=%d: none of the layers %s is a feature map reduced per "
                       "channel, so no spatial maps were kept", plan.keep_maps, plan.names)
    return got


# =========================================================================================
# Stages 4 and 5: consolidate the cache, build the sets
# =========================================================================================
def _make_set(vals: np.ndarray, name: str, info: LayerInfo, doc_ids: list[Any],
              tok: np.ndarray | None, path: str | None,
              maps: SpatialMaps | None = None) -> ActivationSet:
    if tok is not None:
        ids: list[Any] = [(doc_ids[int(d)], int(p)) for d, p in tok]
    else:
        ids = doc_ids
    return ActivationSet(vals, name, list(info.unit_ids), ids, info.reduction,
                         token_index=tok, cache_path=path, maps=maps,
                         row_kind="piece" if tok is not None else None)


#: Keys of the spatial maps of a layer in the cached result (``__``: stored as int64).
def _map_keys(name: str) -> tuple[str, str, str]:
    return f"maps:{name}", f"__maps_samples:{name}", f"maps_values:{name}"


def _maps_from_record(name: str, li: Mapping[str, Any], arrs: Mapping[str, np.ndarray]
                      ) -> SpatialMaps | None:
    maps_k, samples_k, values_k = _map_keys(name)
    if "maps_units" not in li or maps_k not in arrs:
        return None
    return SpatialMaps(list(li["maps_units"]), np.asarray(arrs[samples_k], dtype=np.int64),
                       np.asarray(arrs[maps_k]).astype(np.float16),
                       np.asarray(arrs[values_k], dtype=np.float32))


def _sets_from_record(
    store: _cache.ShardStore, record: Mapping[str, Any], arrs: Mapping[str, np.ndarray]
) -> dict[str, ActivationSet]:
    tok = arrs.get("__tok")
    tok = np.asarray(tok) if tok is not None else None
    ids = _ids_from_json(record["sample_ids"])
    out = {}
    for n, li in record["layers"].items():
        info = LayerInfo(li["reduction"], list(li["unit_ids"]))
        out[n] = _make_set(arrs[n], n, info, ids, tok, str(store.dir),
                           _maps_from_record(n, li, arrs))
    return out


def _jsonable_id(i: Any) -> Any:
    """A sample id as JSON: tuples as lists (read back as tuples), other objects as str."""
    if isinstance(i, np.generic):
        i = i.item()
    if isinstance(i, tuple | list):
        return [_jsonable_id(x) for x in i]
    return i if isinstance(i, str | int | float) or i is None else str(i)


def _jsonable_ids(ids: list[Any]) -> list[Any]:
    return [_jsonable_id(i) for i in ids]


def _id_from_json(i: Any) -> Any:
    return tuple(_id_from_json(x) for x in i) if isinstance(i, list) else i


def _ids_from_json(ids: Sequence[Any]) -> list[Any]:
    """Sample ids read from a cached result: JSON lists back to the tuples they were."""
    return [_id_from_json(i) for i in ids]


def _map_arrays(maps: Mapping[str, SpatialMaps]
                ) -> tuple[dict[str, list[np.ndarray]], dict[str, tuple[int, ...]]]:
    """The spatial maps as arrays of the cached result, and their shapes."""
    arrays: dict[str, list[np.ndarray]] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for n, m in maps.items():
        for key, a in zip(_map_keys(n), (m.maps, m.samples, m.values), strict=True):
            arrays[key] = [np.asarray(a)]
            shapes[key] = tuple(a.shape)
    return arrays, shapes


def _consolidate(
    store: _cache.ShardStore,
    names: Sequence[str],
    n_batches: int,
    ids: list[Any],
    infos: dict[str, LayerInfo],
    digests: list[str | None] | None,
    maps: Mapping[str, SpatialMaps],
) -> dict[str, ActivationSet]:
    """Stream the shards of batches ``0..n_batches-1`` into consolidated ``.npy`` files (the
    spatial maps, when kept, beside them)."""
    keys = list(names)
    n_rows = 0
    has_tok = False
    for i in range(n_batches):
        got = store.read_shard(i, None, keys, only=[keys[0], "__tok"])
        if got is None:
            raise _cache.CacheCorruptError(
                f"cache shard {i} of {store.dir} vanished or broke during the run; rerun"
            )
        n_rows += int(got[0][keys[0]].shape[0])
        has_tok = "__tok" in got[0]
    shapes: dict[str, tuple[int, ...]] = {n: (n_rows, len(infos[n].unit_ids)) for n in names}
    if has_tok:
        keys = [*keys, "__tok"]
        shapes["__tok"] = (n_rows, 2)

    def blocks(k: str) -> Iterator[np.ndarray]:
        for i in range(n_batches):
            got = store.read_shard(i, None, keys, only=[k])
            if got is None:
                raise _cache.CacheCorruptError(f"cache shard {i} of {store.dir} broke")
            yield got[0][k]

    layers: dict[str, dict[str, Any]] = {
        n: {"reduction": infos[n].reduction, "unit_ids": infos[n].unit_ids} for n in names}
    for n, m in maps.items():
        layers[n]["maps_units"] = m.units
    info = {"layers": layers, "sample_ids": _jsonable_ids(ids), "digests": digests or []}
    map_arrays, map_shapes = _map_arrays(maps)
    store.write_result({**{k: blocks(k) for k in keys}, **map_arrays},
                       {**shapes, **map_shapes}, info)
    if digests is None:  # data with a content fingerprint: shards are no longer needed
        store.clear_shards()
    record, arrs = store.read_result(verify=False)
    sets = _sets_from_record(store, record, arrs)
    return {n: sets[n] for n in names}


def _build_sets(got: _Collected, plan: _Plan, source: Source, cache: _Cache | None
                ) -> dict[str, ActivationSet]:
    """The sets of every layer: from memory, the cached result, or the consolidated cache."""
    if got.n_done == 0:
        raise InvalidParameterError(
            f"data: no samples in {source.description} (empty data set)")
    ids = sample_ids(source, got.n_done)
    if cache is None:
        tok = np.concatenate(got.blocks["__tok"]) if "__tok" in got.blocks else None
        return {n: _make_set(np.concatenate(got.blocks[n]), n, got.infos[n], ids, tok, None,
                             got.maps.get(n))
                for n in plan.names}
    store = cache.store
    assert store is not None
    logger.info("%d of %d batches computed, %d reused from cache %s", got.recomputed,
                len(got.digests), len(got.digests) - got.recomputed, store.dir)
    if cache.cached is not None and cache.cached[1] == got.digests:
        logger.info("activations loaded from cache %s (all batches verified)", store.dir)
        return cache.cached[0]
    return _consolidate(store, plan.names, len(got.digests), ids, got.infos,
                        got.digests if cache.stream else None, got.maps)


# =========================================================================================
# The entry point
# =========================================================================================
def collect_activations(
    model: torch.nn.Module | None,
    data: Any,
    layers: Unit | Sequence[Unit],
    *,
    reduce: Reduce = "mean",
    batch_size: int = 64,
    device: str | torch.device | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    directions: Any = None,
    layout: Layout = "auto",
    select: int | str | Callable[[Any], Any] | None = None,
    forward: Callable[[torch.nn.Module, Any], Any] | None = None,
    transform: Callable[[Any], Any] | None = None,
    autocast: bool | torch.dtype = False,
    num_workers: int = 0,
    prefetch: int = 2,
    cache_key: str | None = None,
    eval_mode: bool = True,
    stop_early: bool = True,
    verify_cache: bool = True,
    keep_maps: int = 0,
) -> ActivationSet | dict[str, ActivationSet]:
    """Run ``model`` over ``data`` and record the units of one or more named layers.

    Parameters
    ----------
    model : torch.nn.Module or None
        Any PyTorch module (torchvision, timm, Hugging Face and the offline EfficientNet-Lite
        models are all ``nn.Module``). ``None`` only when every layer is a callable.
    data
        One of: a folder path (images, loaded recursively with :func:`load_image_folder` and
        ``transform``); a map-style ``Dataset`` (batched in order by a ``DataLoader`` with
        ``num_workers``); a ``DataLoader``; a tensor / array ``(N, ...)``; a mapping of tensors
        such as tokenizer output (:func:`encode_texts`); or any iterable of batches. A batch is a
        tensor, a mapping of tensors (passed as ``model(**batch)``) or a tuple/list whose first
        element is the input (``(x, y)`` batches work).
    layers : str, callable or list of them
        Names from ``model.named_modules()`` (``""`` is the model output, e.g. logits). An
        unknown name raises ``ValueError`` listing the closest names. A callable
        ``fn(inputs) -> (batch, K)`` is a unit source of its own (e.g. a hand-written feature),
        named by its ``__name__``. An :class:`~invert.extract.SAE` that names its layer
        (``sae.at("encoder.layer.3.output")``) records that layer's SAE features. A single
        str / callable / SAE returns one :class:`ActivationSet`; a list returns
        ``{name: ActivationSet}`` filled from one forward pass per batch.
    reduce : str, float, tuple or None
        Feature maps ``(N, C, *spatial)``: ``"mean"``, ``"max"``, a quantile ``q`` (float in
        [0, 1] or ``("quantile", q)``), or ``"none"``/``None`` to keep every position (units
        become channel x position, ids ``"c@y,x"``). Token activations ``(N, T, D)``:
        ``"mean"``, ``"max"`` (both ignore padding via ``attention_mask``), ``"last"`` /
        ``"first"`` (last / first non-padding token), or ``"tokens"`` (same as ``"none"``
        here: one row per non-padding token, with ``token_index`` and ``(doc_id, position)``
        sample ids).
        2-D outputs (linear layers, logits) are used as they are.
    batch_size : int
        Batch size for tensors, mappings, folders and datasets (not for DataLoaders or
        iterables, which batch themselves).
    device : str or torch.device, optional
        Where to run; the model is moved there for the run and moved back to its own device
        afterwards (also after an error). Default: the model's device.
    cache_dir : path, optional
        Cache folder. Results are keyed by a hash of the model weights and architecture,
        layers, reduction, directions, select/layout/forward, data content, transform,
        autocast dtype, batch size and the invert version. Per-batch shards make an
        interrupted run resume where it stopped; the result is a read-only memmap.
    progress : bool
        Show a tqdm progress bar when tqdm is installed.
    directions : array-like (D, K) or dict, optional
        Linear directions (SAE encoder, probe weights, concept vectors) applied to the
        feature axis of a layer's output before reduction: ``(N, D) @ (D, K)``; for feature
        maps per position over channels; for tokens per token. A dict maps layer -> matrix.
        An :class:`~invert.extract.SAE` in place of a matrix gives its features as they fire
        (bias, pre-encoder bias and ReLU / TopK / JumpReLU applied; unit ids its ``names``;
        reduction label ``"sae(<activation>)+..."``).
    layout : {"auto", "dense", "channels", "tokens"}
        How to read outputs: ``"auto"`` treats 2-D as dense, 3-D as tokens ``(N, T, D)`` and
        4-D+ as feature maps ``(N, C, ...)``. Use ``"channels"`` for conv1d ``(N, C, L)``.
    select : int, str or callable, optional
        Picks a tensor from a layer that returns a tuple / mapping / ModelOutput (e.g. ``0``
        or ``"last_hidden_state"``). Without it such a layer raises ``TypeError``.
    forward : callable, optional
        ``forward(model, inputs)`` runs one batch; default ``model(inputs)`` or
        ``model(**inputs)`` for mappings.
    transform : callable, optional
        Image transform when ``data`` is a folder path (default :class:`ImageTransform`).
    autocast : bool or torch.dtype
        Run the forward under ``torch.autocast`` (``True``: float16 on CUDA, bfloat16 on CPU).
        Activations are always stored as float32.
    num_workers : int
        DataLoader worker processes for Datasets / folders. Independently of this, batches are
        prepared by a background thread, so loading overlaps compute.
    prefetch : int
        How many prepared batches the background thread may hold.
    cache_key : str, optional
        Identifies the data set content in the cache key instead of hashing it. Without it,
        data that cannot be hashed up front (DataLoaders, iterables, Datasets without a
        ``fingerprint()`` method) is keyed by its first batch, and every batch is hashed as it
        streams and checked against the cached shard, so changed data is recomputed.
    eval_mode : bool
        Put the model in eval mode during extraction (restored afterwards).
    stop_early : bool
        Skip the rest of the forward pass once all requested layers have fired.
    verify_cache : bool
        Check the SHA-1 of cached arrays before using them (reads each file once).
    keep_maps : int
        For feature-map layers ``(N, C, H, W)`` reduced by ``mean`` / ``max`` / a quantile:
        keep the spatial maps of each channel's ``keep_maps`` top-activating samples (a
        running top list per channel, memory ``O(C * keep_maps * H * W)``), as the set's
        ``maps`` (:class:`~invert.extract.SpatialMaps`; write them with
        :func:`~invert.extract.write_maps`). Other layers get ``maps=None``. With a cache the
        maps are stored in the result (a cache entry of its own); every batch is run, as
        cached shards hold no maps.

    Returns
    -------
    ActivationSet or dict of str to ActivationSet

    Raises
    ------
    InvalidParameterError
        (both a ``ValueError`` and a ``TypeError``) Unknown layer (with closest names), empty
        data, mismatched direction matrix, a reduction that does not fit the output, a layer
        that outputs a tuple/mapping without ``select``, bad parameters.
    RuntimeError
        A named layer was not called during the forward pass.

    Notes
    -----
    A module called several times in one forward pass (a shared activation module) is
    recorded at its first call. Hooks are removed when extraction ends, and the model's
    device and train/eval modes are restored, also after an error.

    Examples
    --------
    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),
    ...                           torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
    ...                           torch.nn.Linear(4, 2))
    >>> x = torch.randn(10, 3, 8, 8)
    >>> acts = collect_activations(net, x, "1", reduce="max", progress=False)
    >>> acts.shape, acts.unit_ids, acts.reduction
    ((10, 4), ['0', '1', '2', '3'], 'max')
    >>> both = collect_activations(net, x, ["1", ""], progress=False)
    >>> sorted(both), both[""].shape
    (['', '1'], (10, 2))
    """
    plan = _plan(model, layers, reduce=reduce, batch_size=batch_size, device=device,
                 directions=directions, layout=layout, select=select, autocast=autocast,
                 num_workers=num_workers, prefetch=prefetch, keep_maps=keep_maps)
    source = make_source(data, plan.batch_size, num_workers, transform,
                         plan.device.type == "cuda")
    cache = _open_cache(cache_dir, model, plan, source, forward, cache_key, verify_cache)
    if cache is not None and cache.cached is not None:  # found whole: the model never runs
        return plan.pick(cache.cached[0])
    got = _run_batches(model, plan, source, cache, forward, progress=progress,
                       eval_mode=eval_mode, stop_early=stop_early, prefetch=prefetch)
    return plan.pick(_build_sets(got, plan, source, cache))
