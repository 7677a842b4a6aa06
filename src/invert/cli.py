"""The ``invert`` command line: ``invert explain``, ``invert report``, ``invert demo``.

Entry point :func:`main` (``invert = "invert.cli:main"``) returns an exit code: 0 on success,
2 with a one-line ``invert: error: ...`` on stderr for bad arguments or bad input, 130 when
interrupted. It never calls ``sys.exit`` itself.

Examples
--------
::

    invert demo --out invert-demo
    invert explain --model efficientnet-lite0 --layer _blocks.15 --layer _fc \\
        --data photos/ --concepts folders --out out/
    invert explain --activations acts.npy --concepts labels.csv --out out/
    invert report out/
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np

__all__ = ["main", "cli", "CommandError"]

logger = logging.getLogger(__name__)

ACTIVATION_SUFFIXES = (".npy", ".pt", ".pth", ".parquet", ".csv")
CONCEPT_TABLE_SUFFIXES = (".csv", ".tsv", ".parquet")
BUILTIN_MODELS = ("efficientnet-lite0",)


class CommandError(Exception):
    """A problem with the user's input or environment: one line, exit code 2."""


# ------------------------------------------------------------------------------ helpers


def _one_line(msg: object) -> str:
    return " ".join(str(msg).split())


@contextlib.contextmanager
def _unit_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar over units (when tqdm is installed and ``enabled``), as the
    ``progress(done, total)`` callback of the searches."""
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - depends on the environment
        yield None
        return
    bar = tqdm(total=total, desc=desc, unit="unit", disable=not enabled, leave=False)
    try:
        yield lambda done, _total: bar.update(done - bar.n)
    finally:
        bar.close()


def load_activations(
    path: Path, layer: str | None = None, sample_column: str = "sample", *, mmap: bool = False
) -> dict[str, tuple[np.ndarray, list, list | None]]:
    """Read precomputed activations: ``{layer: (values (N, K), unit_ids, sample_ids or None)}``.

    ``.npy``: an ``(N,)`` or ``(N, K)`` array. ``.pt``/``.pth``: a tensor, or a dict of layer
    name -> tensor. ``.parquet``/``.csv``: one column per unit (the column name is the unit
    id) and optionally a ``sample_column`` of sample ids. With ``mmap``, a ``.npy`` file is
    memory-mapped instead of read.
    """
    if not path.is_file():
        raise FileNotFoundError(f"--activations: file {str(path)!r} not found")
    suffix = path.suffix.lower()
    name = layer if layer is not None else path.stem
    if suffix not in ACTIVATION_SUFFIXES:
        raise CommandError(
            f"--activations: expected a {', '.join(ACTIVATION_SUFFIXES)} file, got {path.name!r}"
        )
    if suffix == ".npy":
        arr = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
        return {name: _as_2d(arr, path)}
    if suffix in (".pt", ".pth"):
        import torch

        obj = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(obj, dict):
            if not obj:
                raise CommandError(f"--activations: {path.name} holds an empty dict")
            return {str(k): _as_2d(np.asarray(v.float() if hasattr(v, "float") else v), path)
                    for k, v in obj.items()}
        return {name: _as_2d(np.asarray(obj.float() if hasattr(obj, "float") else obj), path)}
    import pandas as pd

    df = pd.read_parquet(path) if suffix == ".parquet" else pd.read_csv(path)
    sids = None
    if sample_column in df.columns:
        sids = df[sample_column].tolist()
        df = df.drop(columns=[sample_column])
    bad = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
    if bad:
        raise CommandError(
            f"--activations: non-numeric column(s) {bad[:5]} in {path.name} (only the "
            f"{sample_column!r} column may hold ids)"
        )
    values, _, _ = _as_2d(df.to_numpy(dtype=np.float32), path)
    return {name: (values, [str(c) for c in df.columns], sids)}


def _as_2d(arr: np.ndarray, path: Path) -> tuple[np.ndarray, list, None]:
    arr = np.asarray(arr)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise CommandError(
            f"--activations: expected an (N, K) array in {path.name}, got shape {arr.shape}"
        )
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise CommandError(f"--activations: expected numbers in {path.name}, got {arr.dtype}")
    return arr.astype(np.float32, copy=False), [str(k) for k in range(arr.shape[1])], None


def load_concepts(spec: str, data: Path | None, *, wordnet: bool):
    """A ConceptSet from ``--concepts``: ``folders``, ``imagenet``, a table or a saved set."""
    from invert import concepts as C

    if spec in ("folders", "imagenet"):
        if data is None:
            raise CommandError(f"--concepts {spec}: needs --data FOLDER (the image folder)")
        if spec == "folders":
            return C.from_folders(data, extensions=C.IMAGE_EXTENSIONS, wordnet=wordnet)
        return C.from_imagenet_folder(data)
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(
            f"--concepts: {spec!r} is neither 'folders', 'imagenet' nor an existing file"
        )
    suffix = path.suffix.lower()
    if suffix in (".npz", ".json"):
        return C.ConceptSet.load(path)
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        if b"invert.concepts" in (pq.read_schema(path).metadata or {}):
            return C.ConceptSet.load(path)
    if suffix not in CONCEPT_TABLE_SUFFIXES:
        raise CommandError(
            f"--concepts: expected 'folders', 'imagenet', a .csv/.tsv/.parquet table or a saved "
            f"concept set (.npz), got {path.name!r}"
        )
    return C.from_table(path)


def align_concepts(cs, sample_ids: Sequence[Any] | None, n: int):
    """Reorder ``cs`` to the activations' samples (by id when both have ids)."""
    if sample_ids is not None and cs.sample_ids is not None:
        pos = {str(s): i for i, s in enumerate(cs.sample_ids)}
        missing = [s for s in sample_ids if str(s) not in pos]
        if not missing:
            idx = np.array([pos[str(s)] for s in sample_ids], dtype=np.int64)
            if len(idx) == cs.n_samples and np.array_equal(idx, np.arange(len(idx))):
                return cs
            return cs.subset(samples=idx)
        if cs.n_samples != n:
            raise CommandError(
                f"--concepts: {len(missing)} of the {n} activation samples have no concept row, "
                f"e.g. {[str(m) for m in missing[:3]]}"
            )
        logger.warning("sample ids of activations and concepts differ; matching rows by order")
    if cs.n_samples != n:
        raise CommandError(
            f"--concepts: expected {n} samples (one per activation row), got {cs.n_samples}"
        )
    return cs


def prune_concepts(cs, min_samples: int):
    """Drop concepts on fewer than ``min_samples`` samples and those that hold everywhere."""
    counts = np.asarray(cs.counts).ravel()
    keep = np.flatnonzero((counts >= max(1, min_samples)) & (counts < cs.n_samples))
    if len(keep) == 0:
        raise CommandError(
            f"--concepts: no concept is present on at least {min_samples} and on fewer than all "
            f"{cs.n_samples} samples"
        )
    if len(keep) == cs.n_concepts:
        return cs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cs.subset(concepts=keep)


def load_model(spec: str):
    """``(model, transform or None)`` from a built-in name or a ``module:function`` path."""
    if spec in BUILTIN_MODELS:
        from invert.extract import efficientnet_lite0

        return efficientnet_lite0()
    if ":" not in spec:
        raise CommandError(
            f"--model: expected one of {list(BUILTIN_MODELS)} or 'module:function', got {spec!r}"
        )
    mod_name, fn_name = spec.split(":", 1)
    added = False
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
        added = True
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as err:
        raise CommandError(f"--model: cannot import module {mod_name!r}: {err}") from err
    finally:
        if added:
            sys.path.remove(str(Path.cwd()))
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise CommandError(f"--model: {mod_name!r} has no function {fn_name!r}")
    obj = fn()
    model, transform = (obj if isinstance(obj, tuple) else (obj, None))[:2]
    import torch

    if not isinstance(model, torch.nn.Module):
        raise CommandError(
            f"--model: {spec} returned {type(model).__name__}, expected a torch.nn.Module "
            "(or a (module, transform) tuple)"
        )
    return model, transform


def explain_layer(values, unit_ids: Sequence[Any], concepts, *, desc: str, progress: bool,
                  **search: Any):
    """:func:`invert.explain` of one layer with a progress bar."""
    from invert import explain

    with _unit_bar(values.shape[1], desc, progress) as tick:
        return explain(values, concepts, unit_ids=list(unit_ids), progress=tick, **search)


def explain_layer_sharded(values, unit_ids: Sequence[Any], concepts, *, desc: str,
                          progress: bool, out_dir: Path, backend: str, address: str | None,
                          shard_units: int | None, **search: Any):
    """:func:`invert.distributed.explain_sharded` of one layer with a progress bar."""
    from invert.distributed import ShardError, explain_sharded

    with _unit_bar(values.shape[1], desc, progress) as tick:
        try:
            return explain_sharded(values, concepts, unit_ids=list(unit_ids), out_dir=out_dir,
                                   backend=backend, address=address, shard_units=shard_units,
                                   progress=tick, **search)
        except ShardError as err:
            raise CommandError(f"--backend {backend}: {err}") from err


def summary_table(results: dict[str, Any], unit_labels: dict[str, list[str]] | None = None,
                  top: int = 3) -> str:
    """A plain-text summary: per layer, units explained, median AUROC, the best units."""
    lines = [f"{'layer':<14} {'units':>6} {'explained':>9} {'median AUROC':>12}  best units"]
    for layer, res in results.items():
        best = [(u.unit_id, u.best, k) for k, u in enumerate(res.units)]
        ok = [(uid, e, k) for uid, e, k in best if e is not None]
        med = float(np.median([e.auroc for _, e, _ in ok])) if ok else math.nan
        ok.sort(key=lambda t: -t[1].auroc)
        tops = []
        for uid, e, k in ok[:top]:
            lab = (unit_labels or {}).get(layer)
            name = f"{uid}" + (f" ({lab[k]})" if lab else "")
            tops.append(f"{name}: {e.formula} [{e.auroc:.3f}]")
        shown = layer or "output"
        lines.append(f"{shown:<14} {len(res):>6} {len(ok):>9} {med:>12.3f}  "
                     + ("; ".join(tops) if tops else "-"))
    return "\n".join(lines)


def run_explain(
    *,
    out: Path,
    concepts_spec: str,
    activations: Path | None = None,
    model: str | None = None,
    layers: Sequence[str] = (),
    data: Path | None = None,
    images: Path | None = None,
    wordnet: bool = False,
    reduce: str = "mean",
    batch_size: int = 32,
    cache_dir: Path | None = None,
    min_concept_samples: int = 1,
    report: bool = True,
    progress: bool = True,
    search: dict[str, Any],
    backend: str = "local",
    address: str | None = None,
    shard_units: int | None = None,
    permutations: int = 0,
    fdr: float = 0.05,
) -> tuple[Path, dict[str, Any]]:
    """The work of ``invert explain``; returns the output folder and the results per layer."""
    from invert.report import build_report, save_run

    if (activations is None) == (model is None):
        raise CommandError("give either --activations FILE or --model NAME (with --data)")
    if model is not None and (data is None or not layers):
        raise CommandError("--model needs --data FOLDER and at least one --layer")
    if activations is not None and len(layers) > 1:
        raise CommandError("--activations takes at most one --layer (the name to record)")
    if data is not None and not data.is_dir():
        raise FileNotFoundError(f"--data: folder {str(data)!r} not found")
    if backend != "ray" and (address is not None or shard_units is not None):
        raise CommandError("--address and --shard-units need --backend ray")
    if backend == "ray" and (search.get("holdout") is not None or permutations):
        raise CommandError("--holdout and --permutations are not available with --backend ray")
    acts: dict[str, tuple[np.ndarray, list, list | None]]
    images_root = images if images is not None else data
    if activations is not None:
        acts = load_activations(activations, layers[0] if layers else None,
                                mmap=backend == "ray")
    else:
        from invert.extract import collect_activations, load_image_folder

        net, transform = load_model(model)  # type: ignore[arg-type]
        ds = load_image_folder(data, transform)  # type: ignore[arg-type]
        got = collect_activations(net, ds, list(layers), reduce=reduce, batch_size=batch_size,
                                  device=search.get("device"), cache_dir=cache_dir,
                                  progress=progress)
        acts = {k: (np.asarray(v.values, dtype=np.float32), list(v.unit_ids), list(v.sample_ids))
                for k, v in got.items()}
    n = next(iter(acts.values()))[0].shape[0]
    sids = next(iter(acts.values()))[2]
    for name, (v, _, _s) in acts.items():
        if v.shape[0] != n:
            raise CommandError(f"--activations: layer {name!r} has {v.shape[0]} rows, not {n}")
    cs = load_concepts(concepts_spec, data, wordnet=wordnet)
    cs = align_concepts(cs, sids, n)
    cs = prune_concepts(cs, min_concept_samples)
    sample_ids = sids if sids is not None else (cs.sample_ids or list(range(n)))
    results = {}
    for name, (v, uids, _) in acts.items():
        if backend == "ray":
            from invert.report.outputs import layer_slug

            results[name] = explain_layer_sharded(
                v, uids, cs, desc=f"search {name or 'output'}", progress=progress,
                out_dir=out / "sharded" / layer_slug(name), backend=backend, address=address,
                shard_units=shard_units, **search)
            continue
        results[name] = explain_layer(v, uids, cs, desc=f"search {name or 'output'}",
                                      progress=progress, **search)
        if permutations:  # p-values corrected for the search, BH q-values, survivors at fdr
            from invert.trust import permutation_test

            permutation_test(v, cs, results[name], n_permutations=permutations,
                             random_state=search.get("random_state"), alpha=fdr)
    params = dict(search) | {"reduce": reduce, "min_concept_samples": min_concept_samples}
    if permutations:
        params |= {"permutations": permutations, "fdr": fdr}
    save_run(out, results, {k: v[0] for k, v in acts.items()}, cs, params=params,
             sample_ids=sample_ids, images_root=images_root,
             extra={"command": "explain", "model": model,
                    "activations_file": None if activations is None else str(activations)}
             | ({"backend": backend} if backend != "local" else {}))
    if report:
        build_report(out, progress=progress)
    return out, results


# ------------------------------------------------------------------------------ click


_SEARCH_OPTIONS = [
    click.option("--length", type=click.IntRange(1, 10), default=3, show_default=True,
                 help="Maximum number of literals in a formula."),
    click.option("--beam-size", type=click.IntRange(1, 1000), default=5, show_default=True,
                 help="Beam width and number of explanations kept per unit."),
    click.option("--min-fraction", type=click.FloatRange(0, 1), default=0.0, show_default=True,
                 help="Smallest share of samples where a formula may hold."),
    click.option("--max-fraction", type=click.FloatRange(0, 1), default=0.5, show_default=True,
                 help="Largest share of samples where a formula may hold."),
    click.option("--mode", type=click.Choice(["positive", "negative"]), default="positive",
                 show_default=True, help="Seek concepts that raise (or lower) the unit."),
    click.option("--limit-search", type=click.IntRange(1, None), default=None,
                 help="Only this many literals (furthest from AUROC 0.5) extend formulas."),
    click.option("--no-dedupe", is_flag=True, default=False,
                 help="Reproduce the reference implementation's beam exactly."),
    click.option("--device", default=None, help="Where to compute, e.g. cpu or cuda."),
    click.option("--memory-budget", default=None,
                 help="Working memory per chunk of units, e.g. 2GiB."),
    click.option("--metric", type=click.Choice(["auroc", "point_biserial"]), default="auroc",
                 show_default=True, help="What the search maximises."),
    click.option("--holdout", type=click.FloatRange(0, 1, min_open=True, max_open=True),
                 default=None, help="Share of samples held out: search on the rest, report "
                                    "held-out AUROC, CI and p-value too."),
    click.option("--random-state", type=int, default=None, help="Seed of the holdout split "
                                                                "and the permutations."),
]


def _search_options(f):
    for opt in reversed(_SEARCH_OPTIONS):
        f = opt(f)
    return f


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@click.version_option(package_name="invert", prog_name="invert")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """invert: label the units of neural networks with human concepts (INVERT)."""
    ctx.ensure_object(dict)
    ctx.obj["progress"] = not quiet  # -v is counted by main(), which sets up logging


@cli.command("explain")
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output folder (created).")
@click.option("--concepts", "-c", "concepts_spec", required=True,
              help="'folders' (folder names under --data), 'imagenet' (WNID folders), a "
                   ".csv/.tsv/.parquet table, or a saved concept set (.npz).")
@click.option("--activations", "-a", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Precomputed activations: .npy, .pt, .parquet or .csv.")
@click.option("--model", "-m", default=None,
              help="'efficientnet-lite0' or 'module:function' returning an nn.Module "
                   "(or a (module, transform) tuple).")
@click.option("--layer", "-l", "layers", multiple=True,
              help="Layer name from model.named_modules() ('' is the output); repeatable.")
@click.option("--data", "-d", type=click.Path(path_type=Path), default=None,
              help="Image folder (model input, and labels for --concepts folders/imagenet).")
@click.option("--images", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder the sample ids are image paths in (thumbnails in the report).")
@click.option("--wordnet/--no-wordnet", default=False, show_default=True,
              help="With --concepts folders: map folder/file names to WordNet synsets.")
@click.option("--reduce", default="mean", show_default=True,
              help="Spatial reduction of feature maps: mean, max, or a quantile such as 0.9.")
@click.option("--batch-size", type=click.IntRange(1, None), default=32, show_default=True)
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Activation cache folder (reruns are fast).")
@click.option("--min-concept-samples", type=click.IntRange(1, None), default=1,
              show_default=True, help="Drop concepts present on fewer samples.")
@click.option("--no-report", is_flag=True, default=False, help="Skip the HTML report.")
@click.option("--backend", type=click.Choice(["local", "ray"]), default="local",
              show_default=True,
              help="ray: search shards of units as Ray tasks, resumable from OUT/sharded/ "
                   "(pip install 'invert[ray]').")
@click.option("--address", default=None,
              help="With --backend ray: the cluster for ray.init (default: a local Ray).")
@click.option("--shard-units", type=click.IntRange(1, None), default=None,
              help="With --backend ray: units per shard (default: from --memory-budget).")
@click.option("--permutations", type=click.IntRange(0, None), default=0, show_default=True,
              help="Permutations of the whole search for p-values corrected for it (0: off).")
@click.option("--fdr", type=click.FloatRange(0, 1, min_open=True), default=0.05,
              show_default=True, help="With --permutations: the FDR of the Benjamini-Hochberg "
                                      "'significant' flag.")
@_search_options
@click.pass_context
def explain_cmd(ctx: click.Context, out: Path, concepts_spec: str, activations: Path | None,
                model: str | None, layers: tuple[str, ...], data: Path | None,
                images: Path | None, wordnet: bool, reduce: str, batch_size: int,
                cache_dir: Path | None, min_concept_samples: int, no_report: bool,
                backend: str, address: str | None, shard_units: int | None, length: int,
                beam_size: int, min_fraction: float, max_fraction: float,
                mode: str, limit_search: int | None, no_dedupe: bool, device: str | None,
                memory_budget: str | None, metric: str, holdout: float | None,
                random_state: int | None, permutations: int, fdr: float) -> int:
    """Explain the units of a model's layers (or of precomputed activations)."""
    if min_fraction > max_fraction:
        raise click.UsageError(
            f"--min-fraction ({min_fraction}) must not exceed --max-fraction ({max_fraction})"
        )
    red: Any = reduce
    try:
        red = float(reduce)
    except ValueError:
        pass
    search = {
        "length": length, "beam_size": beam_size, "min_fraction": min_fraction,
        "max_fraction": max_fraction, "mode": mode, "limit_search": limit_search,
        "dedupe": not no_dedupe, "device": device, "memory_budget": memory_budget,
    }
    if metric != "auroc":
        search["metric"] = metric
    if holdout is not None:
        search |= {"holdout": holdout, "random_state": random_state}
    progress = ctx.obj["progress"]
    out_dir, results = run_explain(
        out=out, concepts_spec=concepts_spec, activations=activations, model=model,
        layers=layers, data=data, images=images, wordnet=wordnet, reduce=red,
        batch_size=batch_size, cache_dir=cache_dir, min_concept_samples=min_concept_samples,
        report=not no_report, progress=progress, search=search, backend=backend,
        address=address, shard_units=shard_units, permutations=permutations, fdr=fdr,
    )
    click.echo(summary_table(results))
    click.echo(f"explanations: {out_dir / 'explanations.jsonl'}")
    if not no_report:
        click.echo(f"report: {(out_dir / 'report' / 'index.html').resolve()}")
    return 0


@cli.command("report")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--images", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder the sample ids are image paths in (default: as recorded).")
@click.option("--title", default=None, help="Title of the index page.")
@click.pass_context
def report_cmd(ctx: click.Context, out: Path, images: Path | None, title: str | None) -> int:
    """Rebuild the HTML report of an output folder OUT."""
    from invert.report import build_report

    if not out.is_dir():
        raise FileNotFoundError(f"OUT: folder {str(out)!r} not found")
    path = build_report(out, images_root=images, progress=ctx.obj["progress"], title=title)
    click.echo(f"report: {path.resolve()}")
    return 0


@cli.command("demo")
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path),
              default=Path("invert-demo"), show_default=True, help="Output folder.")
@click.option("--stamps", type=click.Path(path_type=Path), default=None,
              help="Tux Paint stamps folder (default /usr/share/tuxpaint/stamps).")
@click.option("--device", default=None, help="Where to run the model and search.")
@click.option("--batch-size", type=click.IntRange(1, None), default=32, show_default=True)
@click.pass_context
def demo_cmd(ctx: click.Context, out: Path, stamps: Path | None, device: str | None,
             batch_size: int) -> int:
    """Explain EfficientNet-Lite0 on the Tux Paint photos with WordNet concepts (offline)."""
    from invert import demo

    path = demo.run_demo(out, stamps=stamps, device=device, batch_size=batch_size,
                         progress=ctx.obj["progress"], echo=click.echo)
    click.echo(f"report: {path.resolve()}")
    return 0


def _configure_logging(verbose: int) -> logging.Handler | None:
    if verbose <= 0:
        return None
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    log = logging.getLogger("invert")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
    return handler


def _error(msg: object) -> int:
    click.echo(f"invert: error: {_one_line(msg)}", err=True)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``invert`` command line with ``argv`` (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 2 on bad arguments or input (one line on stderr), 130 on Ctrl-C.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = sum(a.count("v") for a in args if a.startswith("-") and set(a[1:]) == {"v"})
    verbose += args.count("--verbose")
    handler = _configure_logging(verbose)
    try:
        with warnings.catch_warnings():
            if verbose == 0:
                warnings.simplefilter("ignore")
            else:
                logging.captureWarnings(True)
            rv = cli.main(args=args, prog_name="invert", standalone_mode=False)
        if isinstance(rv, int):
            return rv
        return 0
    except click.exceptions.NoArgsIsHelpError as err:  # pragma: no cover - click >= 8.2
        return _error(f"{err.format_message()}".splitlines()[0] if err.format_message()
                      else "missing command (try 'invert --help')")
    except click.ClickException as err:  # usage errors included
        return _error(err.format_message())
    except click.Abort:
        click.echo("invert: aborted", err=True)
        return 130
    except KeyboardInterrupt:
        click.echo("invert: interrupted", err=True)
        return 130
    except (CommandError, ValueError, TypeError, FileNotFoundError, ImportError) as err:
        logger.debug("error", exc_info=True)
        return _error(err)
    finally:
        if verbose > 0:
            logging.captureWarnings(False)
        if handler is not None:
            logging.getLogger("invert").removeHandler(handler)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
