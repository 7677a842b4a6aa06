"""What the command line and the demo share: load and align inputs, load models, search
layers with progress bars, and the summary table. No click here: user errors are raised as
:class:`CommandError` (one line) or as the library's own
:class:`~invert._validate.InvalidParameterError` and ``FileNotFoundError``; anything else is
a bug and keeps its traceback. Things the user should know are :class:`RunWarning` s.

:func:`run_explain` is the work of ``invert explain`` in named stages; everything cheap is
checked before the model runs:

1. :func:`check_explain_args` (options that do not go together), the output folder and the
   cache folder writable (:class:`~invert.workflow.outputs.StagedOutput`);
2. :func:`load_concepts` (the concept source, WordNet, WNIDs, ``--senses``);
3. :func:`plan_layers`: the activations file read, or the image folder listed, the model
   loaded and its layers checked;
4. :func:`align_concepts` (sample ids; a mismatch is an error unless ``--match-by-order``)
   and :func:`prune_concepts`, the ``--min-support`` as a ``min_fraction``;
5. the model run (:meth:`LayerPlan.read`), :func:`search_layers`, :func:`write_outputs`
   into the staged folder, then moved into ``OUT``.

Submodules: :mod:`.inputs` (reading files), :mod:`.samples` (alignment, pruning),
:mod:`.models` (models, layers, ONNX Runtime), :mod:`.summary` (summary table, support
warnings), :mod:`.outputs` (the staged output folder), :mod:`.errors`."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._files import layer_slug
from .._progress import progress_bar
from ..api import explain
from ..concepts import ConceptSet
from ..distributed import ShardError, explain_sharded
from ..extract import UnreadableImageError, collect_activations, load_image_folder
from ..extract.maps import write_maps
from ..report import build_report, save_run
from ..trust import permutation_floor, permutation_test
from .errors import (
    CLI_EXTRA,
    INSTALL_HINTS,
    CommandError,
    RunWarning,
    install_hints_as_command_errors,
)
from .inputs import (
    ACTIVATION_SUFFIXES,
    CONCEPT_TABLE_SUFFIXES,
    Layer,
    load_activations,
    load_concepts,
)
from .models import (
    BUILTIN_MODELS,
    builtin_unit_labels,
    check_layers,
    choose_engine,
    imagenet_class_names,
    load_model,
    unit_sources,
)
from .outputs import StagedOutput, check_writable_folder
from .samples import SampleMatch, align_concepts, min_fraction_for_support, prune_concepts
from .summary import rank_score, summary_table, support_warnings
from .text import TEXT_MODELS, is_text_run, load_text_model, read_documents, text_activations

__all__ = [
    "CommandError", "RunWarning", "install_hints_as_command_errors", "load_activations",
    "load_concepts", "align_concepts", "prune_concepts", "load_model", "explain_layer",
    "explain_layer_sharded", "summary_table", "rank_score", "support_warnings",
    "check_explain_args", "plan_layers", "LayerPlan", "check_rows", "search_layers",
    "write_outputs", "run_explain", "imagenet_class_names", "choose_engine", "SampleMatch",
    "ACTIVATION_SUFFIXES", "CONCEPT_TABLE_SUFFIXES", "BUILTIN_MODELS", "INSTALL_HINTS",
    "CLI_EXTRA", "Layer", "run_text_explain", "explain_texts", "TEXT_MODELS",
]

logger = logging.getLogger(__name__)

#: Spatial maps kept per conv channel for the report's overlays.
MAPS_PER_UNIT = 5


def explain_layer(values, unit_ids: Sequence[Any], concepts, *, desc: str, progress: bool,
                  **search: Any):
    """:func:`invert.explain` of one layer with a progress bar."""
    with progress_bar(values.shape[1], desc, progress) as tick:
        return explain(values, concepts, unit_ids=list(unit_ids), progress=tick, **search)


def explain_layer_sharded(values, unit_ids: Sequence[Any], concepts, *, desc: str,
                          progress: bool, out_dir: Path, backend: str, address: str | None,
                          shard_units: int | None, **search: Any):
    """:func:`invert.distributed.explain_sharded` of one layer with a progress bar."""
    with progress_bar(values.shape[1], desc, progress) as tick:
        try:
            return explain_sharded(values, concepts, unit_ids=list(unit_ids), out_dir=out_dir,
                                   backend=backend, address=address, shard_units=shard_units,
                                   progress=tick, **search)
        except ShardError as err:
            raise CommandError(f"--backend {backend}: {err}") from err


# ------------------------------------------------------------------------------ layers


@dataclass
class LayerPlan:
    """The layers to explain, known before the model runs: the activations already read
    (``acts``), or the model and image folder to run (``read()`` runs it)."""

    n: int
    sample_ids: list[str] | None
    layers: list[str]
    acts: dict[str, Layer] | None = None
    model: Any = None
    dataset: Any = None
    engine: str | None = None
    skipped_images: list[dict[str, str]] = field(default_factory=list)
    describe: str = ""
    #: activation sets with spatial maps (conv layers, ``keep_maps``), written for the report
    maps: dict[str, Any] = field(default_factory=dict)

    def read(self, *, reduce: str | float, batch_size: int, device: str | None,
             cache_dir: Path | None, progress: bool, keep_maps: int = 0) -> dict[str, Layer]:
        """The activations: as read, or recorded from the model over the images (with the
        spatial maps of each conv channel's ``keep_maps`` top images)."""
        if self.acts is not None:
            return self.acts
        layers: list[Any] = list(self.layers)
        net = self.model
        try:
            if self.engine == "onnx":
                layers, net = unit_sources(self.model, self.dataset[0], layers), None
            got = collect_activations(net, self.dataset, layers, reduce=reduce,
                                      batch_size=batch_size, device=device,
                                      cache_dir=cache_dir, progress=progress,
                                      keep_maps=keep_maps if reduce != "none" else 0)
        except UnreadableImageError as err:
            raise _unreadable(err) from err
        self.maps = {k: v for k, v in got.items() if getattr(v, "maps", None) is not None}
        return {k: (np.asarray(v.values), list(v.unit_ids), [str(s) for s in v.sample_ids])
                for k, v in got.items()}


def _unreadable(err: UnreadableImageError) -> CommandError:
    return CommandError(f"--data: unreadable image file {err.path!r}: {err.reason} (add "
                        "--skip-bad-images to leave such files out)")


def plan_layers(*, activations: Path | None, model: str | None, layers: Sequence[str],
                data: Path | None, device: str | None, mmap: bool, engine: str = "auto",
                skip_bad_images: bool = False) -> LayerPlan:
    """Read the ``activations`` file, or list the images of ``data``, load ``model`` and
    check its ``layers`` (nothing runs the model yet)."""
    if activations is not None:
        acts = load_activations(activations, layers[0] if layers else None, mmap=mmap)
        n, sids = check_rows(acts)
        units = ", ".join(f"{k or 'output'} ({v[0].shape[1]} units)" for k, v in acts.items())
        return LayerPlan(n=n, sample_ids=sids, layers=list(acts), acts=acts, describe=units)
    assert model is not None and data is not None  # checked by check_explain_args
    net, transform = load_model(model)
    check_layers(net, layers)
    try:
        ds = load_image_folder(data, transform, on_error="skip" if skip_bad_images else "raise")
    except UnreadableImageError as err:
        raise _unreadable(err) from err
    except ValueError as err:  # no (readable) image files under the folder
        raise CommandError(f"--data: {str(err).removeprefix('root: ')}") from err
    eng = choose_engine(engine, model, device)
    how = "ONNX Runtime" if eng == "onnx" else "PyTorch"
    return LayerPlan(
        n=len(ds), sample_ids=[str(s) for s in ds.sample_ids], layers=list(layers), model=net,
        dataset=ds, engine=eng,
        skipped_images=[{"item": s, "reason": r} for s, r in ds.skipped],
        describe=", ".join(x or "output" for x in layers) + f" of {model} through {how}")


def check_rows(acts: dict[str, Layer]) -> tuple[int, list | None]:
    """The number of samples (the same in every layer) and the first layer's sample ids."""
    first = next(iter(acts.values()))
    n, sids = first[0].shape[0], first[2]
    for name, (v, _, _s) in acts.items():
        if v.shape[0] != n:
            raise CommandError(f"--activations: layer {name!r} has {v.shape[0]} rows, not {n}")
    return n, sids


# ------------------------------------------------------------------------------ stages


def check_explain_args(*, activations: Path | None, model: str | None, layers: Sequence[str],
                       data: Path | None, backend: str, address: str | None,
                       shard_units: int | None, holdout: float | None,
                       permutations: int, concepts_spec: str | None = "folders",
                       wordnet: bool = False, senses: Path | None = None,
                       skip_bad_images: bool = False) -> None:
    """Raise :class:`CommandError` for a combination of ``invert explain`` options that does
    not go together (``FileNotFoundError`` for a missing ``--data`` folder or ``--senses``
    file)."""
    if (activations is None) == (model is None):
        raise CommandError("give either --activations FILE or --model NAME (with --data)")
    if concepts_spec is None:
        raise CommandError("--concepts is needed (only a text model, --model minilm, makes "
                           "its token concepts itself)")
    if model is not None and (data is None or not layers):
        raise CommandError("--model needs --data FOLDER and at least one --layer")
    if activations is not None and len(layers) > 1:
        raise CommandError("--activations takes at most one --layer (the name to record)")
    if activations is not None and not activations.is_file():
        raise FileNotFoundError(f"--activations: file {str(activations)!r} not found")
    if data is not None and not data.is_dir():
        raise FileNotFoundError(f"--data: folder {str(data)!r} not found")
    if backend != "ray" and (address is not None or shard_units is not None):
        raise CommandError("--address and --shard-units need --backend ray")
    if backend == "ray" and (holdout is not None or permutations):
        raise CommandError("--holdout and --permutations are not available with --backend ray")
    if wordnet and concepts_spec != "folders":
        raise CommandError("--wordnet goes with --concepts folders")
    if senses is not None:
        if not wordnet:
            raise CommandError("--senses needs --wordnet (it overrides WordNet senses)")
        if not senses.is_file():
            raise FileNotFoundError(f"--senses: file {str(senses)!r} not found")
    if skip_bad_images and model is None:
        raise CommandError("--skip-bad-images goes with --model and --data")


def _concepts_for(plan: LayerPlan, cs: ConceptSet, *, match_by_order: bool,
                  min_concept_samples: int) -> tuple[ConceptSet, SampleMatch, int]:
    """The concepts lined up with the plan's samples and pruned, how rows matched, and how
    many concepts were dropped."""
    if plan.skipped_images and cs.sample_ids is not None:
        gone = {s["item"] for s in plan.skipped_images}
        keep = [i for i, s in enumerate(cs.sample_ids) if str(s) not in gone]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cs = cs.subset(samples=np.asarray(keep, dtype=np.int64))
    cs, match = align_concepts(cs, plan.sample_ids, plan.n, match_by_order=match_by_order)
    before = cs.n_concepts
    cs = prune_concepts(cs, min_concept_samples)
    return cs, match, before - cs.n_concepts


def _with_min_support(search: dict[str, Any], min_support: int, n: int) -> dict[str, Any]:
    frac = min_fraction_for_support(search.get("min_fraction", 0.0),
                                    search.get("max_fraction", 0.5), min_support, n,
                                    search.get("holdout"))
    return dict(search) | {"min_fraction": frac}


def run_explain(
    *,
    out: Path,
    concepts_spec: str | None,
    activations: Path | None = None,
    model: str | None = None,
    layers: Sequence[str] = (),
    data: Path | None = None,
    images: Path | None = None,
    wordnet: bool = False,
    senses: Path | None = None,
    file_concepts: bool = True,
    reduce: str | float = "mean",
    batch_size: int = 32,
    cache_dir: Path | None = None,
    min_concept_samples: int = 3,
    min_support: int = 3,
    report: bool = True,
    progress: bool = True,
    search: dict[str, Any],
    backend: str = "local",
    address: str | None = None,
    shard_units: int | None = None,
    permutations: int = 0,
    fdr: float = 0.05,
    skip_bad_images: bool = False,
    match_by_order: bool = False,
    engine: str = "auto",
    echo: Callable[[str], Any] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """The work of ``invert explain``; returns the output folder and the results per layer.

    The stages (see the module): check the arguments and the output folder, load the
    concepts, plan the layers (read the file, or list the images and load the model), line
    up and prune the concepts, then run the model, search each layer (with the permutation
    test) and write the output folder with the report, moved into ``out`` when complete.
    ``echo`` gets the line "N samples x C concepts (K skipped), layers ..." at the start.
    A built-in language model (``--model minilm``) makes a text run
    (:func:`run_text_explain`)."""
    if is_text_run(model, data):
        return run_text_explain(
            out=out, concepts_spec=concepts_spec, model=model or "", layers=layers, data=data,
            batch_size=batch_size, cache_dir=cache_dir,
            min_concept_samples=min_concept_samples, min_support=min_support, report=report,
            progress=progress, search=search, backend=backend, permutations=permutations,
            fdr=fdr, activations=activations, reduce=reduce, echo=echo)
    check_explain_args(activations=activations, model=model, layers=layers, data=data,
                       backend=backend, address=address, shard_units=shard_units,
                       holdout=search.get("holdout"), permutations=permutations,
                       concepts_spec=concepts_spec, wordnet=wordnet, senses=senses,
                       skip_bad_images=skip_bad_images)
    with install_hints_as_command_errors(), StagedOutput(out) as stage:
        if cache_dir is not None:
            check_writable_folder("--cache-dir", cache_dir)
        def concepts() -> ConceptSet:
            return load_concepts(concepts_spec, data, wordnet=wordnet, senses=senses,
                                 file_concepts=file_concepts, match_by_order=match_by_order)

        cs = concepts() if activations is None else None  # (WordNet) before loading a model
        plan = plan_layers(activations=activations, model=model, layers=layers, data=data,
                           device=search.get("device"), mmap=backend == "ray", engine=engine,
                           skip_bad_images=skip_bad_images)
        cs = cs if cs is not None else concepts()
        cs, match, dropped = _concepts_for(plan, cs, match_by_order=match_by_order,
                                           min_concept_samples=min_concept_samples)
        search = _with_min_support(search, min_support, plan.n)
        (echo or logger.info)(
            f"{plan.n} samples x {cs.n_concepts} concepts ({dropped} skipped: on fewer than "
            f"{min_concept_samples} samples or on all), layers {plan.describe}")
        acts = plan.read(reduce=reduce, batch_size=batch_size, device=search.get("device"),
                         cache_dir=cache_dir, progress=progress,
                         keep_maps=MAPS_PER_UNIT if report else 0)
        results = search_layers(acts, cs, search, progress=progress, out=out, backend=backend,
                                address=address, shard_units=shard_units,
                                permutations=permutations, fdr=fdr)
        for line in support_warnings(results):
            warnings.warn(line, RunWarning, stacklevel=2)
        params = dict(search) | {"reduce": reduce, "min_concept_samples": min_concept_samples,
                                 "min_support": min_support}
        if permutations:
            params |= {"permutations": permutations, "fdr": fdr}
        labels = {k: lab for k, v in acts.items()
                  if (lab := builtin_unit_labels(model, k, v[0].shape[1])) is not None}
        extra = _run_extra(model=model, activations=activations, backend=backend, plan=plan,
                           match=match, cs=cs)
        with stage.writing() as folder:
            write_outputs(folder, results, acts, cs, params=params,
                          sample_ids=_sample_ids(plan, cs), unit_labels=labels or None,
                          images_root=images if images is not None else data, report=report,
                          progress=progress, extra=extra, maps=plan.maps)
        stage.commit()
    return out, results


def _sample_ids(plan: LayerPlan, cs: ConceptSet) -> list[Any]:
    if plan.sample_ids is not None:
        return list(plan.sample_ids)
    return list(cs.sample_ids) if cs.sample_ids is not None else list(range(plan.n))


def _run_extra(*, model: str | None, activations: Path | None, backend: str, plan: LayerPlan,
               match: SampleMatch, cs: ConceptSet) -> dict[str, Any]:
    """The entries of ``run.json`` that describe the run beyond its parameters."""
    extra: dict[str, Any] = {
        "command": "explain", "model": model,
        "activations_file": None if activations is None else str(activations),
        "sample_matching": match.to_json(),
        "skipped_images": plan.skipped_images,
    }
    if plan.engine is not None:
        extra["engine"] = plan.engine
    sources = cs.concept_sources()
    if sources:
        extra["concept_sources"] = sources
    if backend != "local":
        extra["backend"] = backend
    return extra


def search_layers(acts: dict[str, Layer], cs: ConceptSet, search: dict[str, Any], *,
                  progress: bool, out: Path, backend: str, address: str | None,
                  shard_units: int | None, permutations: int, fdr: float,
                  groups: np.ndarray | None = None) -> dict[str, Any]:
    """Explain every layer: locally (then the permutation test when ``permutations``), or
    in shards on ``backend`` (resumable from ``out/sharded/<layer>``). ``groups`` (the
    document of each row, for text) keep a group in one split of the holdout and move it
    as one draw in the permutations."""
    results = {}
    for name, (v, uids, _) in acts.items():
        desc = f"search {name or 'output'}"
        if backend == "ray":
            results[name] = explain_layer_sharded(
                v, uids, cs, desc=desc, progress=progress,
                out_dir=out / "sharded" / layer_slug(name), backend=backend, address=address,
                shard_units=shard_units, **search)
            continue
        kw = dict(search) | ({"groups": groups} if groups is not None and
                             search.get("holdout") is not None else {})
        results[name] = explain_layer(v, uids, cs, desc=desc, progress=progress, **kw)
        if permutations:  # p-values corrected for the search, BH q-values, survivors at fdr
            _permutation_test(v, cs, results[name], permutations, fdr,
                              search.get("random_state"), desc, progress,
                              groups=groups if groups is not None else "auto")
    return results


def _permutation_test(values: Any, cs: ConceptSet, result: Any, permutations: int, fdr: float,
                      random_state: Any, desc: str, progress: bool,
                      groups: Any = "auto") -> None:
    """The permutation test of one layer's search, never silent: a warning when its
    smallest attainable p cannot reach ``--fdr`` for this many units, the estimated time
    after a first batch, and a progress bar."""
    n_units = sum(1 for u in result.units if u.best is not None)
    floor = permutation_floor(permutations, max(1, n_units), fdr, tail="gpd")
    if floor.warning:
        warnings.warn(f"--permutations {permutations}: {floor.warning}", RunWarning,
                      stacklevel=2)
    with progress_bar(None, f"{desc}: permutations", progress, unit="step") as tick:
        permutation_test(values, cs, result, n_permutations=permutations,
                         random_state=random_state, alpha=fdr, progress=tick,
                         on_estimate=lambda est: logger.warning("%s", est), groups=groups)


def write_outputs(out: Path, results: dict[str, Any], acts: dict[str, Layer], cs: ConceptSet,
                  *, params: dict[str, Any], sample_ids: Sequence[Any],
                  images_root: Path | None, report: bool, progress: bool,
                  extra: dict[str, Any],
                  unit_labels: dict[str, list[str]] | None = None,
                  maps: dict[str, Any] | None = None, texts: Any = None) -> None:
    """The output folder (:func:`invert.report.save_run`), the spatial maps of conv layers
    (``maps_<layer>.npz``, overlaid on the report's thumbnails) and, with ``report``, its
    HTML report."""
    save_run(out, results, {k: v[0] for k, v in acts.items()}, cs, params=params,
             sample_ids=sample_ids, images_root=images_root, unit_labels=unit_labels,
             extra=extra, texts=texts)
    for layer_set in (maps or {}).values():
        write_maps(layer_set, out)
    if report:
        build_report(out, progress=progress)


# ------------------------------------------------------------------------------ text runs


def explain_texts(out: Path, ids: Sequence[Any], texts: Sequence[str], *, model: str,
                  layers: Sequence[str], search: dict[str, Any], concepts_spec: str | None,
                  batch_size: int, cache_dir: Path | None, min_concept_samples: int,
                  min_support: int, report: bool, progress: bool, permutations: int,
                  fdr: float, extra: dict[str, Any],
                  echo: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """A text run written into the folder ``out`` (staged by the caller): the documents
    through ``model``, token concepts, the search of each layer (holdout and permutations
    by document) and the output folder with the text of each row for the report."""
    net, tok = load_text_model(model)
    run = text_activations(net, tok, ids, texts, layers, concepts_spec=concepts_spec,
                           min_count=min_concept_samples, batch_size=batch_size,
                           device=search.get("device"), cache_dir=cache_dir,
                           progress=progress)
    before = run.concepts.n_concepts
    cs = prune_concepts(run.concepts, min_concept_samples)
    n = cs.n_samples
    search = _with_min_support(search, min_support, n)
    (echo or logger.info)(
        f"{len(texts)} documents, {n} word pieces x {cs.n_concepts} token concepts "
        f"({before - cs.n_concepts} skipped), layers {', '.join(layers)} of {model}")
    sids = [str(s) for s in run.sample_ids]
    acts = {k: (np.asarray(v.values), list(v.unit_ids), sids) for k, v in run.acts.items()}
    results = search_layers(acts, cs, search, progress=progress, out=out, backend="local",
                            address=None, shard_units=None, permutations=permutations,
                            fdr=fdr, groups=run.documents)
    for line in support_warnings(results):
        warnings.warn(line, RunWarning, stacklevel=2)
    params = dict(search) | {"reduce": "tokens", "min_concept_samples": min_concept_samples,
                             "min_support": min_support}
    if search.get("holdout") is not None:
        params["holdout_groups"] = "documents"
    if permutations:
        params |= {"permutations": permutations, "fdr": fdr, "permutation_groups": "documents"}
    extra = dict(extra) | {"model": model, "n_documents": len(texts),
                           "truncated_documents": run.n_truncated, "row_kind": cs.row_kind}
    write_outputs(out, results, acts, cs, params=params, sample_ids=run.sample_ids,
                  images_root=None, report=report, progress=progress, extra=extra,
                  texts=run.texts)
    return results


def run_text_explain(*, out: Path, concepts_spec: str | None, model: str,
                     layers: Sequence[str], data: Path | None, batch_size: int,
                     cache_dir: Path | None, min_concept_samples: int, min_support: int,
                     report: bool, progress: bool, search: dict[str, Any], backend: str,
                     permutations: int, fdr: float, activations: Path | None = None,
                     reduce: Any = "mean", echo: Callable[[str], Any] | None = None
                     ) -> tuple[Path, dict[str, Any]]:
    """``invert explain --model minilm --data DOCS``: the documents of a text or JSONL file
    (:func:`invert.workflow.text.read_documents`) explained per word piece."""
    if activations is not None:
        raise CommandError("give either --activations FILE or --model NAME (with --data)")
    if data is None:
        raise CommandError(f"--model {model} needs --data FILE: a text file (one document per "
                           "line) or a JSONL file of {\"id\": ..., \"text\": ...}")
    if backend != "local":
        raise CommandError(f"--backend {backend} is not available with --model {model}")
    if reduce not in ("mean", "tokens"):
        raise CommandError(f"--reduce: a text model gives one row per word piece (tokens), "
                           f"got {reduce!r}")
    ids, texts = read_documents(data)
    with install_hints_as_command_errors(), StagedOutput(out) as stage:
        if cache_dir is not None:
            check_writable_folder("--cache-dir", cache_dir)
        with stage.writing() as folder:
            results = explain_texts(
                folder, ids, texts, model=model, layers=layers, search=search,
                concepts_spec=concepts_spec, batch_size=batch_size, cache_dir=cache_dir,
                min_concept_samples=min_concept_samples, min_support=min_support,
                report=report, progress=progress, permutations=permutations, fdr=fdr,
                extra={"command": "explain", "data_file": str(data)}, echo=echo)
        stage.commit()
    return out, results
