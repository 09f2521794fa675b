"""Writing the commands' output files, so that a failed or interrupted run never leaves a
folder that mixes two runs or looks complete when it is not.

A command writes its files into a hidden folder inside the output folder (``staged``); once
all are written, the previous run's files of the same names are removed and the new ones
moved in, one ``os.replace`` each. Until then the output folder is as the previous run left
it; only Ctrl-C in the middle of that last step leaves it incomplete, and ``Interrupted``
says so. A failure is an ``OutputError`` naming the file and the reason
(``cannot write out/run/kpis.json: Is a directory``), never a traceback.

A command holds a lock (``fcntl.flock``) on its hidden folder or file for as long as it
writes there, and the system drops that lock when the process ends, however it ends. So a
stage left by a run that was killed (SIGKILL, power loss) is one no process holds: the next
command writing into that folder removes it (only a name of the commands' own making,
``.writing-<random>.stage``: a user's ``.writing-notes`` stays), and never the stage of a
run still under way
(where the file system offers no such locks, as some network mounts, nothing is removed).
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

STAGE_PREFIX = ".writing-"
"""The hidden folder (or file) a command writes into before moving its outputs in place."""
STAGE_MARK = ".stage"
"""Ends a hidden folder's name (before the suffix, a hidden file's): with the prefix and the
random part ``tempfile`` draws, what tells a command's stage from a user's own file."""
_OURS = re.compile(
    rf"{re.escape(STAGE_PREFIX)}(?:.*-)?[a-z0-9_]{{8}}{re.escape(STAGE_MARK)}(?:\.\w+)?"
)
"""The names of the stages ``_new_folder`` and ``_new_file`` make (``.writing-k2x9_q1a.stage``,
``.writing-day-k2x9_q1a.stage.csv``): the only entries a sweep may remove."""


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
    _sweep(folder)
    try:
        stage, lock = _held(_new_folder(folder))
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
        os.close(lock)
        _prune(created)
        raise
    shutil.rmtree(stage, ignore_errors=True)
    os.close(lock)


@contextmanager
def staged_file(path: Path) -> Iterator[Path]:
    """A fresh hidden file next to ``path`` (its folder created if missing) with the same
    suffix, to write into; it replaces ``path`` when the block ends normally and is removed
    otherwise. ``OSError`` becomes ``OutputError``."""
    created = _create(path.parent)
    _sweep(path.parent)
    try:
        stage, lock = _held(_new_file(path))
    except OSError as exc:
        _prune(created)
        raise cannot_write(exc, path) from None
    try:
        try:
            stage.chmod(_file_mode())  # mkstemp's 0600, not what the user's umask gives
            yield stage
            os.replace(stage, path)
        except OSError as exc:  # whichever file the system names, ``path`` is what failed
            raise OutputError(path, exc.strerror or str(exc)) from None
    except BaseException:
        stage.unlink(missing_ok=True)
        os.close(lock)
        _prune(created)
        raise
    os.close(lock)


_TRIES = 3
"""Fresh stages made, each taken by another command's sweep before it was locked, before
giving up (one such race is already rare)."""


def _new_folder(folder: Path) -> Callable[[], tuple[int, str]]:
    """What makes a fresh hidden folder inside ``folder``: open, its name."""

    def make() -> tuple[int, str]:
        """The folder made and opened."""
        name = tempfile.mkdtemp(prefix=STAGE_PREFIX, suffix=STAGE_MARK, dir=folder)
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY), name

    return make


def _new_file(path: Path) -> Callable[[], tuple[int, str]]:
    """What makes a fresh hidden file next to ``path``, with its suffix: open, its name."""

    def make() -> tuple[int, str]:
        """The file made and open."""
        prefix = f"{STAGE_PREFIX}{path.stem}-"
        suffix = f"{STAGE_MARK}{path.suffix}"
        return tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)

    return make


def _held(make: Callable[[], tuple[int, str]]) -> tuple[Path, int]:
    """A stage from ``make`` and its descriptor, locked until that is closed; made again if
    another command's sweep removed it in the instant between its making and the lock (or
    its opening)."""
    for _ in range(_TRIES):
        try:
            handle, name = make()
        except FileNotFoundError as exc:
            if exc.filename is None or not Path(os.fsdecode(exc.filename)).parent.is_dir():
                raise  # not a stage swept, the folder itself gone
            continue
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError:  # no locks on this file system: then no sweep removes a stage either
            return Path(name), handle
        try:
            if os.path.samestat(os.fstat(handle), os.stat(name)):
                return Path(name), handle
        except FileNotFoundError:
            pass
        os.close(handle)
    raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))


def _sweep(folder: Path) -> None:
    """Remove the stages in ``folder`` that no process holds (left by a command that was
    killed): a command holds its own locked until it is done, so a stage whose lock can be
    taken is no live command's."""
    try:
        entries = [p for p in folder.iterdir() if _OURS.fullmatch(p.name)]
    except OSError:
        return
    for entry in entries:
        try:
            mode = entry.lstat().st_mode
            if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                continue  # none of ours
            handle = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if stat.S_ISDIR(mode):
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        except OSError:  # held by a command under way, or no locks here: left alone
            pass
        finally:
            os.close(handle)


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
