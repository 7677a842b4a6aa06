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
    invert explain --model efficientnet-lite0 --layer _blocks.15 --data photos/ \\
        --concepts folders --wordnet --holdout 0.5 --out out/
    invert explain --activations acts.npy --concepts labels.csv --out out/
    invert explain --model minilm --layer encoder.layer.3.output --data docs.jsonl \\
        --holdout 0.3 --out out/
    invert demo --text --out invert-demo-text
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

from . import demo, demo_text
from ._validate import InvalidParameterError, check_memory_budget
from .report import build_report
from .report.outputs import record_baseline
from .workflow import (
    CommandError,
    install_hints_as_command_errors,
    run_explain,
    summary_table,
)
from .workflow.models import ENGINES

__all__ = ["main", "cli", "CommandError", "is_user_error"]

logger = logging.getLogger(__name__)

# ------------------------------------------------------------------------------ click


_SEARCH_OPTIONS = [
    click.option("--length", type=click.IntRange(1, 10), default=3, show_default=True,
                 help="Maximum number of literals in a formula."),
    click.option("--beam-size", type=click.IntRange(1, 1000), default=5, show_default=True,
                 help="Beam width and number of explanations kept per unit."),
    click.option("--min-support", type=click.IntRange(1, None), default=3, show_default=True,
                 help="Smallest number of (searched) samples a formula must hold on; raises "
                      "--min-fraction where that allows fewer."),
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
    click.option("--metric", type=click.Choice(["auroc", "point_biserial", "top_f1"]),
                 default="auroc",
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


def _set_quiet(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    if value:
        ctx.ensure_object(dict)["progress"] = False
    return value


def _verbosity(f):
    """``-v`` / ``-q`` on a subcommand as on ``invert`` itself (:func:`main` reads them
    wherever they are; here they only need to be accepted)."""
    f = click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=_set_quiet,
                     help="No progress bars, no warnings.")(f)
    return click.option("-v", "--verbose", count=True, expose_value=False,
                        help="More log output (-vv for debug).")(f)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars, no warnings.")
@click.version_option(package_name="invert", prog_name="invert")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """invert: label the units of neural networks with human concepts (INVERT)."""
    ctx.ensure_object(dict)
    ctx.obj["progress"] = ctx.obj.get("progress", True) and not quiet


def _memory_budget(value: str | None) -> int | None:
    """``--memory-budget`` in bytes (checked here, so it fails before any work)."""
    if value is None:
        return None
    try:
        return check_memory_budget("--memory-budget", value)
    except (InvalidParameterError, OverflowError) as err:
        msg = str(err) if isinstance(err, InvalidParameterError) else (
            f"--memory-budget: expected a finite size such as '2GiB', got {value!r}")
        raise click.UsageError(msg) from err


def _search_params(*, length: int, beam_size: int, min_fraction: float, max_fraction: float,
                   mode: str, limit_search: int | None, no_dedupe: bool, device: str | None,
                   memory_budget: str | None, metric: str, holdout: float | None,
                   random_state: int | None) -> dict[str, Any]:
    """The search parameters of the click options (checked where click does not)."""
    if min_fraction > max_fraction:
        raise click.UsageError(
            f"--min-fraction ({min_fraction}) must not exceed --max-fraction ({max_fraction})"
        )
    search = {
        "length": length, "beam_size": beam_size, "min_fraction": min_fraction,
        "max_fraction": max_fraction, "mode": mode, "limit_search": limit_search,
        "dedupe": not no_dedupe, "device": device,
        "memory_budget": _memory_budget(memory_budget),
    }
    if metric != "auroc":
        search["metric"] = metric
    if holdout is not None:
        search |= {"holdout": holdout, "random_state": random_state}
    return search


@cli.command("explain")
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output folder (written whole when the run completes).")
@click.option("--concepts", "-c", "concepts_spec", default=None,
              help="'folders' (folder names under --data), 'imagenet' (WNID folders), a "
                   ".csv/.tsv/.parquet table (a 'sample' column of ids, one 0/1 column per "
                   "concept), or a saved concept set (.npz). With --model minilm: 'tokens' "
                   "(spaCy token concepts, the default) or a saved set of the same rows.")
@click.option("--activations", "-a", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Precomputed activations: .npy, .pt, .parquet or .csv.")
@click.option("--model", "-m", default=None,
              help="'efficientnet-lite0', 'minilm' (the offline all-MiniLM-L6-v2: --data is "
                   "then a text file, one document per line, or a JSONL file of "
                   "{\"id\", \"text\"}; one row per word piece) or 'module:function' "
                   "returning an nn.Module (or a (module, transform) tuple).")
@click.option("--layer", "-l", "layers", multiple=True,
              help="Layer name from model.named_modules() ('' is the output); repeatable.")
@click.option("--data", "-d", type=click.Path(path_type=Path), default=None,
              help="Image folder (model input, and labels for --concepts folders/imagenet); "
                   "with --model minilm a .txt (one document per line) or .jsonl file.")
@click.option("--images", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder the sample ids are image paths in (thumbnails in the report).")
@click.option("--wordnet/--no-wordnet", default=False, show_default=True,
              help="With --concepts folders: map folder/file names to WordNet synsets.")
@click.option("--senses", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="With --wordnet: a .csv/.tsv (name, synset) or .json file of WordNet "
                   "senses that override invert's choices ('-': no sense).")
@click.option("--file-concepts/--no-file-concepts", default=True, show_default=True,
              help="With --concepts folders: file names are concepts too (kept only where "
                   "they recur on --min-concept-samples files).")
@click.option("--reduce", default="mean", show_default=True,
              help="Spatial reduction of feature maps: mean, max, or a quantile such as 0.9.")
@click.option("--batch-size", type=click.IntRange(1, None), default=32, show_default=True)
@click.option("--engine", type=click.Choice(ENGINES), default="auto", show_default=True,
              help="What runs --model: onnx (ONNX Runtime, CPU, several times faster), torch, "
                   "or auto (onnx for a built-in model on the CPU when installed).")
@click.option("--skip-bad-images", is_flag=True, default=False,
              help="Leave unreadable image files out (listed in run.json and the report).")
@click.option("--match-by-order", is_flag=True, default=False,
              help="Match activation and concept rows by position when their sample ids "
                   "differ (by default that is an error).")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Activation cache folder (reruns are fast).")
@click.option("--min-concept-samples", type=click.IntRange(1, None), default=3,
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
@click.option("--baseline", type=click.IntRange(0, None), default=0, show_default=True,
              help="Run the same search on this many random directions of each layer and "
                   "print what chance gives beside the run's figures (0: off).")
@_search_options
@_verbosity
@click.pass_context
def explain_cmd(ctx: click.Context, out: Path, **opts: Any) -> int:
    """Explain the units of a model's layers (or of precomputed activations)."""
    search = _search_params(**{k: opts.pop(k) for k in (
        "length", "beam_size", "min_fraction", "max_fraction", "mode", "limit_search",
        "no_dedupe", "device", "memory_budget", "metric", "holdout", "random_state")})
    red: Any = opts.pop("reduce")
    try:
        red = float(red)
    except ValueError:
        pass
    progress = ctx.obj["progress"]
    report = not opts.pop("no_report")
    baseline = opts.pop("baseline")
    out_dir, results = run_explain(out=out, reduce=red, report=report, progress=progress,
                                   search=search, echo=click.echo if progress else None,
                                   **opts)
    labels = _unit_labels(out_dir)
    click.echo(summary_table(results, labels))
    if baseline:
        for line in record_baseline(out_dir, results, baseline, search,
                                    random_state=search.get("random_state") or 0):
            click.echo(line)
    click.echo(f"explanations: {out_dir / 'explanations.jsonl'}")
    if report:
        click.echo(f"report: {(out_dir / 'report' / 'index.html').resolve()}")
    return 0


def _unit_labels(out: Path) -> dict[str, list[str]] | None:
    """The unit labels recorded in ``out/run.json`` (class names of logits), per layer."""
    import json

    try:
        meta = json.loads((out / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    labels = {lay["name"]: lay["unit_labels"] for lay in meta.get("layers", [])
              if lay.get("unit_labels")}
    return labels or None


@cli.command("report")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--images", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder the sample ids are image paths in (default: as recorded).")
@click.option("--title", default=None, help="Title of the index page.")
@_verbosity
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
@click.option("--text", is_flag=True, default=False,
              help="The text demo instead: MiniLM over Debian fortunes with spaCy token "
                   "concepts (default --out invert-demo-text).")
@click.option("--fortunes", type=click.Path(path_type=Path), default=None,
              help="With --text: the fortunes folder (default /usr/share/games/fortunes).")
@click.option("--docs", type=click.IntRange(10, None), default=demo_text.N_DOCS,
              show_default=True, help="With --text: fortunes explained.")
@click.option("--layer", "layers", multiple=True,
              help="With --text: MiniLM layers (default "
                   f"{', '.join(demo_text.LAYERS)}); repeatable.")
@click.option("--permutations", type=click.IntRange(0, None),
              default=demo_text.N_PERMUTATIONS, show_default=True,
              help="With --text: permutations of the search (0: no permutation test).")
@_verbosity
@click.pass_context
def demo_cmd(ctx: click.Context, out: Path, stamps: Path | None, device: str | None,
             batch_size: int, text: bool, fortunes: Path | None, docs: int,
             layers: tuple[str, ...], permutations: int) -> int:
    """Explain EfficientNet-Lite0 on the Tux Paint photos with WordNet concepts, or with
    --text MiniLM on Debian fortunes with spaCy token concepts (offline)."""
    src = ctx.get_parameter_source("out")
    if not text and (fortunes is not None or layers):
        raise click.UsageError("--fortunes and --layer go with --text")
    with install_hints_as_command_errors():
        if text:
            if src == click.core.ParameterSource.DEFAULT:
                out = Path("invert-demo-text")
            path = demo_text.run_text_demo(
                out, fortunes_root=fortunes, n_docs=docs,
                layers=tuple(layers) or demo_text.LAYERS, permutations=permutations,
                device=device, batch_size=batch_size, progress=ctx.obj["progress"],
                echo=click.echo)
        else:
            path = demo.run_demo(out, stamps=stamps, device=device, batch_size=batch_size,
                                 progress=ctx.obj["progress"], echo=click.echo)
    click.echo(f"report: {path.resolve()}")
    return 0


# ------------------------------------------------------------------------------ messages


class _Notices(logging.Handler):
    """Warnings (``warnings.warn`` by invert, log records of WARNING and up) as one line each
    on stderr, ``invert: warning: ...``; a message already shown is not shown again."""

    MAX = 300

    def __init__(self, all_warnings: bool):
        super().__init__(logging.WARNING)
        self.all_warnings = all_warnings
        self.seen: set[str] = set()

    def say(self, text: str) -> None:
        line = _one_line(text)
        if len(line) > self.MAX:
            line = line[: self.MAX - 3] + "..."
        if line not in self.seen:
            self.seen.add(line)
            click.echo(f"invert: warning: {line}", err=True)

    def emit(self, record: logging.LogRecord) -> None:
        self.say(record.getMessage())

    def showwarning(self, message, category, filename, lineno, file=None, line=None) -> None:
        if self.all_warnings or _from_invert(category, filename):
            self.say(str(message))
        else:
            logger.debug("%s: %s (%s:%s)", category.__name__, message, filename, lineno)


_PACKAGE_DIR = str(Path(__file__).resolve().parent)


def _from_invert(category: type, filename: str) -> bool:
    return (getattr(category, "__module__", "").startswith("invert")
            or str(Path(filename).resolve()).startswith(_PACKAGE_DIR))


def _verbosity_of(args: Sequence[str]) -> tuple[int, bool]:
    """(-v count, -q given) wherever they are among the arguments."""
    verbose = quiet = 0
    for a in args:
        if a == "--":
            break
        if a == "--verbose":
            verbose += 1
        elif a == "--quiet":
            quiet += 1
        elif a.startswith("-") and not a.startswith("--") and len(a) > 1:
            flags = set(a[1:])
            if flags <= {"v", "q"}:
                verbose += a.count("v")
                quiet += a.count("q")
    return verbose, bool(quiet)


def _configure_logging(verbose: int, quiet: bool) -> tuple[list[logging.Handler], _Notices]:
    """The handlers for the run (removed again by :func:`main`): ``-v`` log lines, the
    one-line warnings unless ``-q``, or nothing at all with ``-q``."""
    log = logging.getLogger("invert")
    notices = _Notices(all_warnings=verbose > 0)
    handlers: list[logging.Handler] = []
    if quiet:
        handlers.append(logging.NullHandler())
    else:
        handlers.append(notices)
    if verbose > 0:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler.setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
        handler.addFilter(lambda r: r.levelno < logging.WARNING)  # warnings: one line above
        handlers.append(handler)
    for h in handlers:
        log.addHandler(h)
    return handlers, notices


def _one_line(msg: object) -> str:
    return " ".join(str(msg).split())


#: Python parameter names that ``invert explain`` sets from an option: an error about one
#: names the option.
_FLAGS = {p: "--" + p.replace("_", "-") for p in (
    "length", "beam_size", "min_fraction", "max_fraction", "mode", "limit_search", "metric",
    "holdout", "random_state", "memory_budget", "device", "batch_size", "reduce")}
_FLAGS |= {"dedupe": "--no-dedupe", "root": "--data"}


def _cli_message(err: BaseException) -> str:
    """The message of a user error, a Python parameter named by its option."""
    msg = str(err)
    if isinstance(err, InvalidParameterError):
        name, sep, rest = msg.partition(":")
        if sep and name in _FLAGS:
            return _FLAGS[name] + sep + rest
    return msg


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


def _commands() -> str:
    return ", ".join(sorted(cli.commands))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``invert`` command line with ``argv`` (default ``sys.argv[1:]``).

    ``-v`` / ``-q`` work before or after the command. Warnings are printed as one line each
    (``invert: warning: ...``) unless ``-q``; ``-v`` adds log lines (``-vv``: debug).

    Returns
    -------
    int
        0 on success, 2 on a user error (one line on stderr, see :func:`is_user_error`;
        also a bare ``invert``, which lists the commands), 130 on Ctrl-C. Any other
        exception propagates (a bug in invert: its traceback).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    verbose, quiet = _verbosity_of(args)
    log = logging.getLogger("invert")
    level = log.level
    if verbose > 0:
        log.setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
    handlers, notices = _configure_logging(verbose, quiet)
    try:
        with warnings.catch_warnings():
            if quiet:
                warnings.simplefilter("ignore")
            else:
                warnings.simplefilter("always")
                warnings.showwarning = notices.showwarning
            rv = cli.main(args=args, prog_name="invert", standalone_mode=False,
                          obj={"progress": not quiet})
        if isinstance(rv, int):
            return rv
        return 0
    except click.exceptions.NoArgsIsHelpError:
        return _error(f"missing command; the commands are {_commands()} "
                      "(invert COMMAND --help for each)")
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
        return _error(_cli_message(err))
    finally:
        for h in handlers:
            log.removeHandler(h)
        log.setLevel(level)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
