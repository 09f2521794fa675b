"""Start-up refused by what the environment asks for: exit status 2 naming the variable,
before anything listens, and nothing left running (not even the private redis-server)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from router import local_redis
from tests.system import fleet


def _redis_servers() -> set[int]:
    """Pids of the redis-server processes running now."""
    found = subprocess.run(
        ["pgrep", "-x", "redis-server"], capture_output=True, text=True, check=False
    )
    return {int(pid) for pid in found.stdout.split()}


def _start(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ROUTER_", "REDIS_"))}
    return subprocess.run(
        [sys.executable, "-m", "router"],
        cwd=fleet.ROOT,
        env={**clean, "ROUTER_PORT": "0", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"ROUTER_HOST": "not a host!"}, "ROUTER_HOST"),
        ({"REDIS_URL": "http://127.0.0.1:1/0"}, "REDIS_URL"),
        ({"ROUTER_PORT": "50871", "ROUTER_METRICS_PORT": "50871"}, "ROUTER_METRICS_PORT"),
    ],
)
def test_an_impossible_setting_stops_start_up_by_name(env: dict[str, str], named: str) -> None:
    """A host that cannot be listened on, a REDIS_URL that does not parse, the metrics
    endpoint on a gRPC port: exit status 2, the variable named, no traceback, and the
    private redis-server the start may have launched stopped again."""
    if not local_redis.available():
        pytest.skip("redis-server is not installed")
    before = _redis_servers()
    done = _start(env)
    assert done.returncode == 2, done.stderr
    assert f"{named}" in done.stderr
    assert "Traceback" not in done.stderr
    assert _redis_servers() <= before


def test_a_taken_metrics_port_stops_start_up_by_name() -> None:
    """The metrics port already in use: exit status 2 naming ROUTER_METRICS_PORT."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _start({"ROUTER_METRICS_PORT": str(port), "ROUTER_HOST": "127.0.0.1"})
    assert done.returncode == 2, done.stderr
    assert "ROUTER_METRICS_PORT: cannot listen on 127.0.0.1:" in done.stderr
    assert "Traceback" not in done.stderr
