"""The ``invert`` command line: ``invert explain``, ``invert report``, ``invert demo``.

Entry point :func:`main` (``invert = "invert.cli:main"``) returns an exit code: 0 on success,
2 with a one-line ``invert: error: ...`` on stderr for a user error, 130 when interrupted. It
never calls ``sys.exit`` itself. User errors are exactly: click usage errors, the library's
:class:`~invert._validate.InvalidParameterError`, missing files (and other OS errors that
name a path), and :class:`~invert.workflow.CommandError` (which includes a missing optional
package that invert names with its install command). Anything else is a bug in invert and
propagates with its traceback (exit code 1 through ``python -m invert``).

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

import logging
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from . import demo
from ._validate import InvalidParameterError
from .report import build_report
from .workflow import CommandError, install_hints_as_command_errors, run_explain, summary_table

__all__ = ["main", "cli", "CommandError", "is_user_error"]

logger = logging.getLogger(__name__)

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
    if not out.is_dir():
        raise FileNotFoundError(f"OUT: folder {str(out)!r} not found")
    with install_hints_as_command_errors():
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
    with install_hints_as_command_errors():
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


def _one_line(msg: object) -> str:
    return " ".join(str(msg).split())


def _error(msg: object) -> int:
    click.echo(f"invert: error: {_one_line(msg)}", err=True)
    return 2


def is_user_error(err: BaseException) -> bool:
    """Whether ``err`` is the user's mistake (exit code 2, one line) rather than a bug.

    User errors: :class:`CommandError`, :class:`~invert._validate.InvalidParameterError`,
    ``FileNotFoundError``, and any other ``OSError`` about a path (one with a ``filename``:
    permission denied, a folder where a file was expected, ...)."""
    if isinstance(err, CommandError | InvalidParameterError | FileNotFoundError):
        return True
    return isinstance(err, OSError) and err.filename is not None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``invert`` command line with ``argv`` (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 2 on a user error (one line on stderr, see :func:`is_user_error`),
        130 on Ctrl-C. Any other exception propagates (a bug in invert: its traceback).
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
    except (CommandError, InvalidParameterError, OSError) as err:
        if not is_user_error(err):
            raise
        logger.debug("error", exc_info=True)
        return _error(err)
    finally:
        if verbose > 0:
            logging.captureWarnings(False)
        if handler is not None:
            logging.getLogger("invert").removeHandler(handler)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
