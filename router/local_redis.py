"""A private, throw-away ``redis-server`` for zero-setup local runs and the test suite."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


class LocalRedisError(RuntimeError):
    """redis-server is not installed or did not come up."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class LocalRedis:
    """A running private redis-server bound to loopback (no persistence unless started with
    ``appendonly=True``)."""

    process: subprocess.Popen[bytes]
    port: int
    directory: tempfile.TemporaryDirectory[str]

    @property
    def url(self) -> str:
        """``redis://`` URL of the server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        """Terminate the server and remove its directory."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.directory.cleanup()

    def kill(self) -> None:
        """SIGKILL the server (a crash) and keep its directory, so ``start(directory=...)``
        can bring it back on the same data (with ``appendonly=True``)."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def available() -> bool:
    """Whether a ``redis-server`` binary is on PATH."""
    return shutil.which("redis-server") is not None


def start(
    *,
    port: int = 0,
    timeout_s: float = 10.0,
    appendonly: bool = False,
    appendfsync: str = "always",
    directory: tempfile.TemporaryDirectory[str] | None = None,
    extra_args: Sequence[str] = (),
) -> LocalRedis:
    """Start ``redis-server`` on 127.0.0.1 (a free port unless given) and wait until it answers.

    ``appendonly=True`` turns on the append-only file with ``appendfsync`` (``always``,
    ``everysec`` or ``no``); ``directory`` reuses the data directory of a server that was
    ``kill``-ed, so a restart reloads its AOF (the new ``LocalRedis`` then owns it).
    ``extra_args`` go last on the command line (e.g. ``("--enable-debug-command", "local")``
    for fault tests)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise LocalRedisError("redis-server is not installed (apt-get install redis-server)")
    if appendfsync not in {"always", "everysec", "no"}:
        raise LocalRedisError(f"appendfsync {appendfsync!r} is not always, everysec or no")
    port = port or free_port()
    if directory is None:
        directory = tempfile.TemporaryDirectory(prefix="router-redis-")
    process = subprocess.Popen(
        [
            binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes" if appendonly else "no",
            "--appendfsync", appendfsync,
            "--dir", directory.name,
            "--logfile", str(Path(directory.name) / "redis.log"),
            *extra_args,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    server = LocalRedis(process, port, directory)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            server.stop()
            raise LocalRedisError(f"redis-server exited with code {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return server
        except OSError:
            time.sleep(0.05)
    server.stop()
    raise LocalRedisError(f"redis-server did not answer on port {port} within {timeout_s}s")
