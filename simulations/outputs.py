"""Writing the commands' output files, so that a failed or interrupted run never leaves a
folder that mixes two runs or looks complete when it is not.

A command writes its files into a hidden folder inside the output folder (``staged``); once
all are written, the previous run's files of the same names are removed and the new ones
moved in, one ``os.replace`` each. Until then the output folder is as the previous run left
it; only Ctrl-C in the middle of that last step leaves it incomplete, and ``Interrupted``
says so. A failure is an ``OutputError`` naming the file and the reason
(``cannot write out/run/kpis.json: Is a directory``), never a traceback.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

STAGE_PREFIX = ".writing-"
"""The hidden folder (or file) a command writes into before moving its outputs in place."""


class OutputError(Exception):
    """An output file or folder that could not be written."""

    def __init__(self, path: Path, reason: str) -> None:
        """``cannot write <path>: <reason>``."""
        super().__init__(f"cannot write {path}: {reason}")
        self.path = path


class Interrupted(KeyboardInterrupt):
    """Ctrl-C while the new outputs were replacing the old ones: ``folder`` holds only part
    of them."""

    def __init__(self, folder: Path) -> None:
        """The folder left incomplete."""
        super().__init__(f"{folder} is incomplete")
        self.folder = folder


def cannot_write(exc: OSError, path: Path, stage: Path | None = None) -> OutputError:
    """``exc`` (raised writing ``path`` or something in it) as an ``OutputError`` naming the
    file the system named, else ``path``; a file in ``stage`` is named where it was going."""
    named = exc.filename
    where = Path(os.fsdecode(named)) if isinstance(named, str | bytes) else path
    if stage is not None and where.is_relative_to(stage):
        where = path / where.relative_to(stage)
    return OutputError(where, exc.strerror or str(exc))


def problem(folder: Path) -> str | None:
    """Why ``folder`` could not be created or written into, when that shows without trying
    (an existing file in the way, a parent that is a file or read-only); else ``None``."""
    if folder.exists():
        return None if folder.is_dir() else f"{folder} is not a folder"
    parent = folder.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"cannot create {folder}: {parent} is not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot create {folder}: {os.strerror(errno.EACCES)}"
    return None


def check_names(folder: Path, names: tuple[str, ...]) -> None:
    """``OutputError`` for the first of ``names`` in ``folder`` that is a folder (no file
    can replace it), before any work whose outputs would then be lost."""
    for name in names:
        target = folder / name
        if target.is_dir() and not target.is_symlink():
            raise OutputError(target, os.strerror(errno.EISDIR))


@contextmanager
def staged(folder: Path) -> Iterator[Path]:
    """A fresh hidden folder inside ``folder`` (created with its parents if missing) to
    write the outputs into. Leaving the block normally, the files written there replace
    those of the same names in ``folder``; leaving it on an error or Ctrl-C, they are thrown
    away and ``folder`` stays as it was (or goes again, if this created it). ``OSError``
    becomes ``OutputError``."""
    created = _create(folder)
    try:
        stage = Path(tempfile.mkdtemp(prefix=STAGE_PREFIX, dir=folder))
    except OSError as exc:
        _prune(created)
        raise cannot_write(exc, folder) from None
    try:
        try:
            yield stage
        except OSError as exc:
            raise cannot_write(exc, folder, stage) from None
        _move_in(stage, folder)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        _prune(created)
        raise
    shutil.rmtree(stage, ignore_errors=True)


@contextmanager
def staged_file(path: Path) -> Iterator[Path]:
    """A fresh hidden file next to ``path`` (its folder created if missing) with the same
    suffix, to write into; it replaces ``path`` when the block ends normally and is removed
    otherwise. ``OSError`` becomes ``OutputError``."""
    created = _create(path.parent)
    try:
        handle, name = tempfile.mkstemp(
            prefix=f"{STAGE_PREFIX}{path.stem}-", suffix=path.suffix, dir=path.parent
        )
        os.close(handle)
    except OSError as exc:
        _prune(created)
        raise cannot_write(exc, path) from None
    stage = Path(name)
    try:
        try:
            stage.chmod(_file_mode())  # mkstemp's 0600, not what the user's umask gives
            yield stage
            os.replace(stage, path)
        except OSError as exc:  # whichever file the system names, ``path`` is what failed
            raise OutputError(path, exc.strerror or str(exc)) from None
    except BaseException:
        stage.unlink(missing_ok=True)
        _prune(created)
        raise


def _file_mode() -> int:
    """The mode a new file gets under the process's umask (0644 under the usual 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _create(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; the ones created, deepest first."""
    missing: list[Path] = []
    probe = folder
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise cannot_write(exc, folder) from None
    return missing


def _prune(created: list[Path]) -> None:
    """Remove the folders ``_create`` made, deepest first, while they are empty."""
    for path in created:
        try:
            path.rmdir()
        except OSError:
            return


def _move_in(stage: Path, folder: Path) -> None:
    """Replace ``folder``'s files by those written in ``stage``: first every old file of
    those names goes, then each new one moves in, so no moment mixes two runs."""
    names = sorted(p.name for p in stage.iterdir())
    for name in names:  # something that is no file in the way: say so before removing any
        target = folder / name
        if target.is_dir() and not target.is_symlink():
            raise OutputError(target, os.strerror(errno.EISDIR))
    touched = False
    try:
        for name in names:
            touched = True
            (folder / name).unlink(missing_ok=True)
        for name in names:
            os.replace(stage / name, folder / name)
    except KeyboardInterrupt:
        if touched:
            raise Interrupted(folder) from None
        raise
    except OSError as exc:
        error = cannot_write(exc, folder, stage)
        raise OutputError(error.path, f"{exc.strerror or exc}; {folder} is incomplete") from None
