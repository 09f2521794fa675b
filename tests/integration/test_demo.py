"""``make demo`` against a running service (``--target``): it can be run again and again."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from router import demo
from router.memory_store import MemoryStore
from router.server import RunningServer, create_server
from router.settings import Settings


@pytest.fixture
def running() -> Iterator[RunningServer]:
    """A service that outlives the demo's runs (in memory: the demo's calls need no Redis)."""
    server = create_server(Settings(port=0, dispatch_tick_s=0.05), MemoryStore())
    try:
        yield server
    finally:
        server.stop(0)


def _decisions(printed: str) -> str:
    """What the run's calls got, from its routing section to its statistics (timings left
    out: they differ from run to run)."""
    return printed.split("== routing", 1)[1].split("== live statistics", 1)[0]


def test_a_second_run_against_the_same_service_works(
    running: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each run loads its team into a tenant of its own, named in its output, and routes as
    the first run did (a second run was refused: ALREADY_EXISTS agent ana already exists)."""
    target = ["--target", f"127.0.0.1:{running.port}"]
    assert demo.main(target) == 0
    first = capsys.readouterr().out
    assert demo.main(target) == 0
    second = capsys.readouterr().out
    named = r"^== team \(in tenant (demo-[0-9a-f]{8}), a new one each run\)$"
    (one,) = re.findall(named, first, re.MULTILINE)
    (other,) = re.findall(named, second, re.MULTILINE)
    assert one != other
    assert "c1 again: agent ana, replayed=True" in second
    assert "c4 is CALL_STATUS_ASSIGNED with ana" in second
    assert _decisions(second) == _decisions(first)
