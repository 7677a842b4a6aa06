"""The errors of the workflow: :class:`CommandError` (the user's input or environment, one
line), missing optional packages named with their install command, and the warnings of a
run (:class:`RunWarning`)."""

from __future__ import annotations

import contextlib
import errno
import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["CommandError", "RunWarning", "install_hints_as_command_errors", "require",
           "INSTALL_HINTS", "CLI_EXTRA", "WRITE_ERRNOS", "write_error"]

#: An ImportError whose message holds one of these was raised by invert with the command
#: that installs the missing package: a user error.
INSTALL_HINTS = ("pip install", "apt-get install")
CLI_EXTRA = "pip install 'invert[cli]'"
#: OS errors of writing that are the environment's, not invert's: disk full, quota,
#: permission, read-only file system, file too large.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM,
                          errno.EROFS, errno.EFBIG})


class CommandError(Exception):
    """A problem with the user's input or environment: one line, exit code 2."""


class RunWarning(UserWarning):
    """Something about a run the user should know (rows matched by order, formulas that
    hold on very few samples): the command line prints it as one line."""


@contextlib.contextmanager
def install_hints_as_command_errors() -> Iterator[None]:
    """Turn an ``ImportError`` that invert raised with an install command into a
    :class:`CommandError`; other import errors (bugs) propagate unchanged."""
    try:
        yield
    except CommandError:
        raise
    except ImportError as err:
        if not any(hint in str(err) for hint in INSTALL_HINTS):
            raise
        raise CommandError(str(err)) from err


def require(module: str, what: str, install: str = CLI_EXTRA) -> Any:
    """Import an optional package, or raise :class:`CommandError` naming its install."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise CommandError(f"{what} needs {module.split('.')[0]}: {install}") from err


def write_error(flag: str, path: Path, err: OSError, after: str = "") -> CommandError:
    """The one-line error of a failed write under ``path`` (``--out``, ``--cache-dir``)."""
    why = err.strerror or str(err)
    where = f" ({err.filename})" if err.filename and str(err.filename) != str(path) else ""
    return CommandError(f"{flag}: cannot write to {str(path)!r}: {why}{where}{after}")
