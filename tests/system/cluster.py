"""A throw-away Redis Cluster on loopback for system tests: 3 primaries, 3 replicas.

Six ``redis-server --cluster-enabled yes`` processes on free 127.0.0.1 ports (each with an
explicit ``--cluster-port``, as ``port + 10000`` may be out of range for high free ports), in
one temporary directory, joined with ``redis-cli --cluster create --cluster-replicas 1``.
No persistence (a manual failover needs none; the node files live in the temporary directory).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis
from redis.crc import key_slot

from router import local_redis


class ClusterError(RuntimeError):
    """The cluster did not come up or did not fail over in time."""


def binaries() -> tuple[str, str] | None:
    """``(redis-server, redis-cli)`` paths, or ``None`` when either is missing."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    return (server, cli) if server and cli else None


def slot_of_tenant(tenant: str) -> int:
    """The cluster slot of every key of ``tenant`` (hash tag ``{tenant}``)."""
    return key_slot(tenant.encode())


def _client(port: int) -> redis.Redis:
    return redis.Redis(
        host="127.0.0.1", port=port, decode_responses=True, socket_timeout=2,
        socket_connect_timeout=2,
    )  # fmt: skip


@dataclass
class LocalCluster:
    """A running loopback cluster: node ports (the first three start as primaries)."""

    ports: list[int]
    processes: list[subprocess.Popen[bytes]]
    directory: tempfile.TemporaryDirectory[str]
    log: list[str] = field(default_factory=list)
    dead: set[int] = field(default_factory=set)
    """Ports of nodes killed by ``kill``."""

    @property
    def live(self) -> list[int]:
        """Ports of the nodes not killed."""
        return [port for port in self.ports if port not in self.dead]

    @property
    def url(self) -> str:
        """A URL of one node (any node serves as the client's entry point)."""
        return f"redis://127.0.0.1:{self.live[0]}/0"

    def node(self, port: int) -> redis.Redis:
        """A plain client on one node (the caller closes it)."""
        return _client(port)

    def roles(self) -> dict[int, str]:
        """Every node's role as it reports it (``master`` or ``slave``)."""
        roles: dict[int, str] = {}
        for port in self.live:
            with _client(port) as client:
                roles[port] = str(client.info("replication")["role"])
        return roles

    def primary_of_slot(self, slot: int) -> int:
        """The port of the primary serving ``slot`` (as the first node sees it)."""
        with _client(self.live[0]) as client:
            for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if int(start) <= slot <= int(end):
                    return int(primary[1])
        raise ClusterError(f"slot {slot} is not served")

    def replica_of(self, primary_port: int) -> int:
        """The port of a replica of the primary on ``primary_port``."""
        with _client(primary_port) as client:
            info = client.info("replication")
        for name, value in info.items():
            if name.startswith("slave") and isinstance(value, dict):
                return int(value["port"])
        raise ClusterError(f"primary {primary_port} has no replica")

    def wait_ok(self, timeout_s: float = 20.0) -> None:
        """Until every node reports ``cluster_state:ok`` and agrees on the slot owners."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                states, owners = set(), set()
                for port in self.live:
                    with _client(port) as client:
                        states.add(client.cluster("INFO").get("cluster_state"))
                        slots = client.execute_command("CLUSTER", "SLOTS")
                        owners.add(tuple(sorted((int(s[0]), int(s[2][1])) for s in slots)))
                if states == {"ok"} and len(owners) == 1:
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise ClusterError(f"cluster not ok after {timeout_s}s: {states}")
            time.sleep(0.1)

    def wait_topology(self, replicas: int, timeout_s: float = 20.0) -> None:
        """Until every node sees every node connected and every primary with ``replicas``
        replicas (a primary ignores a manual-failover request from a node it does not yet
        know as its replica)."""
        deadline = time.monotonic() + timeout_s
        while True:
            views = []
            for port in self.ports:
                with _client(port) as client:
                    lines = str(client.execute_command("CLUSTER", "NODES")).splitlines()
                rows = [line.split() for line in lines if line.strip()]
                primaries = {row[0] for row in rows if "master" in row[2]}
                followers = [row[3] for row in rows if "slave" in row[2]]
                views.append(
                    len(rows) == len(self.ports)
                    and all(row[7] == "connected" and "handshake" not in row[2] for row in rows)
                    and all(followers.count(p) == replicas for p in primaries)
                )
            if all(views):
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"topology not settled after {timeout_s}s")
            time.sleep(0.1)

    def failover(self, replica_port: int, timeout_s: float = 20.0) -> float:
        """``CLUSTER FAILOVER`` (manual, lossless) on a replica; wait until it is a primary and
        every node agrees. Returns the seconds from the command until the replica reported
        itself primary. Waits first for the replica to be in sync and known to its primary
        (right after an earlier failover it is still re-attaching), and asks again if the
        server's 5 s manual-failover timeout passed."""
        deadline = time.monotonic() + timeout_s
        _wait_synced(replica_port, deadline)
        self.wait_topology(1, timeout_s)
        with _client(replica_port) as client:
            while True:
                started = time.monotonic()
                client.execute_command("CLUSTER", "FAILOVER")
                while client.info("replication")["role"] != "master":
                    if time.monotonic() - started > 6:
                        break
                    time.sleep(0.01)
                else:
                    break
                if time.monotonic() > deadline:
                    raise ClusterError(f"{replica_port} did not take over in {timeout_s}s")
        took = time.monotonic() - started
        self.wait_ok(timeout_s)
        return took

    def kill(self, port: int) -> None:
        """SIGKILL one node (a crash: no failover handshake, unreplicated writes are lost)."""
        process = self.processes[self.ports.index(port)]
        process.kill()
        process.wait()
        self.dead.add(port)

    def wait_promoted(self, replica_port: int, timeout_s: float = 30.0) -> float:
        """Until ``replica_port`` reports itself primary, then until the live nodes agree;
        returns the seconds until the promotion."""
        started = time.monotonic()
        with _client(replica_port) as client:
            while client.info("replication")["role"] != "master":
                if time.monotonic() - started > timeout_s:
                    raise ClusterError(f"{replica_port} was not promoted in {timeout_s}s")
                time.sleep(0.01)
        took = time.monotonic() - started
        self.wait_ok(timeout_s)
        return took

    def stop(self) -> None:
        """Terminate every node and remove the directory."""
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.directory.cleanup()


def _spawn(server: str, directory: Path) -> tuple[int, subprocess.Popen[bytes]]:
    port, bus = local_redis.free_port(), local_redis.free_port()
    directory.mkdir()
    argv = [
        server,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "no",
        "--dir", str(directory),
        "--cluster-enabled", "yes",
        "--cluster-port", str(bus),
        "--cluster-config-file", "nodes.conf",
        "--cluster-node-timeout", "2000",
        "--repl-diskless-sync-delay", "0",
    ]  # fmt: skip
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return port, process


def _wait_up(port: int, process: subprocess.Popen[bytes], deadline: float) -> None:
    while True:
        try:
            with _client(port) as client:
                client.ping()
            return
        except redis.ConnectionError:
            if process.poll() is not None:
                raise ClusterError(f"redis-server on {port} exited") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _wait_synced(replica: int, deadline: float) -> None:
    while True:
        with _client(replica) as client:
            if client.info("replication").get("master_link_status") == "up":
                return
        if time.monotonic() > deadline:
            raise ClusterError(f"replica {replica} did not sync")
        time.sleep(0.05)


def start(primaries: int = 3, replicas: int = 1, timeout_s: float = 30.0) -> LocalCluster:
    """Start ``primaries * (1 + replicas)`` nodes, create the cluster, wait until it is ok,
    every replica synced and every node knows the whole topology."""
    found = binaries()
    if found is None:
        raise ClusterError("redis-server and redis-cli are needed")
    server, cli = found
    directory = tempfile.TemporaryDirectory(prefix="router-cluster-")
    cluster = LocalCluster([], [], directory)
    try:
        for index in range(primaries * (1 + replicas)):
            port, process = _spawn(server, Path(directory.name) / str(index))
            cluster.ports.append(port)
            cluster.processes.append(process)
        deadline = time.monotonic() + timeout_s
        for port, process in zip(cluster.ports, cluster.processes, strict=True):
            _wait_up(port, process, deadline)
        nodes = [f"127.0.0.1:{port}" for port in cluster.ports]
        argv = [cli, "--cluster", "create", *nodes, "--cluster-yes"]
        created = subprocess.run(
            [*argv, "--cluster-replicas", str(replicas)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        cluster.log.append(created.stdout + created.stderr)
        if created.returncode != 0:
            raise ClusterError(f"redis-cli --cluster create failed: {created.stdout[-2000:]}")
        cluster.wait_ok(timeout_s)
        for replica in [p for p, role in cluster.roles().items() if role != "master"]:
            _wait_synced(replica, deadline)
        cluster.wait_topology(replicas, timeout_s)
        return cluster
    except BaseException:
        cluster.stop()
        raise
