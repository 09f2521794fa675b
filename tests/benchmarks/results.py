"""A benchmark's figures as a JSON document, for ``tests.benchmarks.report``.

``bench_assign``, ``bench_solver``, ``bench_simulator``, ``bench_admin`` and
``bench_tracing`` take ``--json PATH``: besides their printed tables they write one document
there, holding the command line, the time, the machine (processor, cores, Python, the
libraries timed, the git commit), whether it ran at smoke-run sizes, and one record per
printed row (a ``kind`` and the row's numbers). ``make bench`` writes them to
``bench-results/`` and builds the HTML report from them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

Record = dict[str, Any]
"""One printed row: ``kind`` names the table, the other keys its numbers."""

_LIBRARIES = ("grpcio", "protobuf", "ortools", "numpy", "redis", "ciw")


def add_option(parser: argparse.ArgumentParser) -> None:
    """``--json PATH`` on a benchmark's command line."""
    parser.add_argument(
        "--json",
        type=Path,
        metavar="PATH",
        help="also write the figures to PATH as JSON (read by tests.benchmarks.report)",
    )


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "processor": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "system": platform.platform(),
        "libraries": versions,
        "commit": _commit(),
    }


def _git(*args: str) -> str:
    """``git ARGS``' output, stripped (raises when git is missing or fails)."""
    done = subprocess.run(["git", *args], capture_output=True, text=True, check=True, timeout=10)
    return done.stdout.strip()


def _commit() -> str:
    """The checkout's commit (``+`` when the working tree has changes), or ``""``."""
    try:
        head = _git("rev-parse", "--short=12", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return ""
    return head + ("+" if dirty else "")


def write(
    path: Path | None,
    bench: str,
    argv: Sequence[str] | None,
    records: list[Record],
    *,
    quick: bool,
) -> None:
    """Write ``records`` of benchmark ``bench`` (run with ``argv``, else the command line;
    ``quick``: at smoke-run sizes) to ``path``; nothing when ``path`` is ``None``."""
    if path is None:
        return
    document = {
        "bench": bench,
        "argv": list(sys.argv[1:] if argv is None else argv),
        "quick": quick,
        "finished": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "records": records,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")


def read(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """The documents at ``paths`` (``write``'s), in that order."""
    return [json.loads(path.read_text()) for path in paths]
