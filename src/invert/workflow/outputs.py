"""The output folder, written whole or not at all.

:class:`StagedOutput` writes a run into a temporary folder beside ``OUT`` and moves the
finished files into ``OUT`` (``run.json`` last) only when everything is written, so a run that
fails or is interrupted (a full disk, Ctrl-C) leaves the previous contents of ``OUT`` as they
were. Where ``OUT`` did not exist, the temporary folder is renamed to it in one step. Both
``OUT`` and ``--cache-dir`` are checked to be writable before any work starts."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import WRITE_ERRNOS, CommandError, write_error

__all__ = ["StagedOutput", "check_writable_folder", "RUN_FILE"]

RUN_FILE = "run.json"
_STAGE = ".invert-staging-"
_OLD = ".invert-old-"


def check_writable_folder(flag: str, path: Path) -> None:
    """``path`` is (or can be made) a folder invert can write in, else :class:`CommandError`."""
    if path.exists() and not path.is_dir():
        raise CommandError(f"{flag}: {str(path)!r} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise write_error(flag, path, err) from err


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _clean_stale(parent: Path, prefix: str) -> None:
    """Remove staging folders of earlier runs that were killed (their process is gone)."""
    for p in parent.glob(prefix + "*"):
        pid = p.name.removeprefix(prefix).split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


class StagedOutput:
    """A temporary folder for the outputs of a run into ``out`` (see the module).

    Create it before the expensive work (it checks that ``out`` can be written), write into
    :attr:`path`, then :meth:`commit`; :meth:`discard` (or leaving the ``with`` block by an
    exception) removes it and leaves ``out`` untouched."""

    def __init__(self, out: Path):
        self.out = out
        if out.exists() and not out.is_dir():
            raise CommandError(f"--out: {str(out)!r} is a file, not a folder")
        if out.is_dir() and not os.access(out, os.W_OK):
            raise CommandError(f"--out: cannot write to {str(out)!r}: Permission denied")
        parent = out.resolve().parent
        prefix = f".{out.resolve().name}{_STAGE}"
        try:
            parent.mkdir(parents=True, exist_ok=True)
            _clean_stale(parent, prefix)
            self.path = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent))
        except OSError as err:
            raise write_error("--out", out, err) from err

    def __enter__(self) -> StagedOutput:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.discard()

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    @contextlib.contextmanager
    def writing(self) -> Iterator[Path]:
        """Write into the staging folder; a full disk or a refused write is a one-line
        :class:`CommandError` (``out`` keeps its previous contents)."""
        try:
            yield self.path
        except OSError as err:
            if err.errno not in WRITE_ERRNOS:
                raise
            raise write_error("--out", self.out, err,
                              "; the previous contents of the folder are unchanged") from err

    def commit(self) -> Path:
        """Move the finished outputs into ``out`` (``run.json`` last) and return ``out``."""
        out = self.out
        try:
            if not out.exists():
                os.rename(self.path, out)
                return out
            entries = sorted(self.path.iterdir(), key=lambda p: p.name == RUN_FILE)
            for p in entries:
                _move_into(p, out / p.name)
            self.path.rmdir()
        except OSError as err:
            raise write_error("--out", out, err) from err
        return out


def _move_into(src: Path, dest: Path) -> None:
    """Replace ``dest`` by ``src`` (a file atomically; a folder by two renames)."""
    if not src.is_dir():
        os.replace(src, dest)
        return
    old = None
    if dest.exists() or dest.is_symlink():
        old = dest.with_name(f"{_OLD}{os.getpid()}-{dest.name}")
        os.rename(dest, old)
    os.rename(src, dest)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
