"""``make help``, the front door's list of targets, says what each target does in words that
are true: an address in a target's text is the one ``make run`` would listen on."""

from __future__ import annotations

import os
import re
import subprocess

from tests.system import fleet

CALLER = ("ROUTER_", "REDIS_", "MAKE", "MFLAGS")
"""The caller's settings and an enclosing make's flags, left out of the runs below."""


def _help(*overrides: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(CALLER)}
    done = subprocess.run(
        ["make", "--no-print-directory", "help", *overrides],
        cwd=fleet.ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout


def test_help_lists_every_described_target() -> None:
    """Each target with a ``## `` text is listed once, by name, with that text."""
    makefile = (fleet.ROOT / "Makefile").read_text()
    described = re.findall(r"^([a-z-]+):.*## ", makefile, re.MULTILINE)
    shown = re.findall(r"^  make (\S+) ", _help(), re.MULTILINE)
    assert shown == described
    assert "make lint               ruff (lint + format check) and mypy --strict" in _help()


def test_help_shows_the_address_make_run_listens_on() -> None:
    """By default 127.0.0.1:50051; HOST= and PORT= (or ROUTER_HOST, ROUTER_PORT) move it and
    the text with it; never the Makefile's own $(HOST):$(PORT)."""
    default = _help()
    assert "$(" not in default
    (run,) = [line for line in default.splitlines() if line.startswith("  make run ")]
    assert "Start the service on 127.0.0.1:50051 (" in run
    assert "HOST=" in run
    assert "PORT=" in run
    assert "on 0.0.0.0:50052 (" in _help("HOST=0.0.0.0", "PORT=50052")
    assert "on 127.0.0.1:50053 (" in _help(ROUTER_PORT="50053")
