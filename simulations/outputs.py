"""Writing the commands' output files: a failure is an ``OutputError`` naming the file and
the reason (``cannot write out/run/kpis.json: Is a directory``), never a traceback."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class OutputError(Exception):
    """An output file or folder that could not be written."""

    def __init__(self, path: Path, reason: str) -> None:
        """``cannot write <path>: <reason>``."""
        super().__init__(f"cannot write {path}: {reason}")
        self.path = path


def cannot_write(exc: OSError, path: Path) -> OutputError:
    """``exc`` (raised writing ``path`` or something in it) as an ``OutputError`` naming the
    file the system named, else ``path``."""
    named = exc.filename
    where = Path(os.fsdecode(named)) if isinstance(named, str | bytes) else path
    return OutputError(where, exc.strerror or str(exc))


@contextmanager
def guarded(path: Path) -> Iterator[None]:
    """Turn an ``OSError`` raised inside into an ``OutputError`` (see ``cannot_write``)."""
    try:
        yield
    except OSError as exc:
        raise cannot_write(exc, path) from None
