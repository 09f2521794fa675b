"""Real router processes for system tests: ``python -m router`` subprocesses over a private
redis-server, JSON logs in a file per replica, and read-only views of the state in Redis.

Everything is bounded: starting waits at most ``timeout_s`` for health SERVING, stopping
waits a bounded time and then kills. Servers listen on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import grpc
import redis
from google.protobuf import duration_pb2, field_mask_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from router import local_redis
from router.v1 import admin_pb2, admin_pb2_grpc, routing_pb2, routing_pb2_grpc
from router.v1 import types_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
TENANT = "acme"
UNITS = {"voice": 100, "chat": 25, "email": 20, "whatsapp": 25, "social": 25}
"""Default budget units per channel (``Policy`` defaults), for checks on Redis contents."""


def eventually(check: Callable[[], bool], timeout_s: float = 10.0, step_s: float = 0.05) -> float:
    """Poll ``check`` until true (bounded in time); returns the seconds it took."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"condition not reached within {timeout_s}s")
        time.sleep(step_s)
    return time.monotonic() - started


@dataclass
class Replica:
    """One ``python -m router`` process."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    log_file: IO[bytes]
    channel: grpc.Channel
    started: float = field(default_factory=time.monotonic)

    @property
    def routing(self) -> routing_pb2_grpc.RoutingServiceStub:
        """A routing stub on this replica."""
        return routing_pb2_grpc.RoutingServiceStub(self.channel)

    @property
    def admin(self) -> admin_pb2_grpc.AgentAdminServiceStub:
        """An admin stub on this replica."""
        return admin_pb2_grpc.AgentAdminServiceStub(self.channel)

    @property
    def policy(self) -> admin_pb2_grpc.PolicyServiceStub:
        """A policy stub on this replica."""
        return admin_pb2_grpc.PolicyServiceStub(self.channel)

    def health(self, timeout_s: float = 1.0) -> int | None:
        """The overall health status, or ``None`` when the server does not answer."""
        stub = health_pb2_grpc.HealthStub(self.channel)
        try:
            request = health_pb2.HealthCheckRequest(service="")
            reply = stub.Check(request, timeout=timeout_s)  # type: ignore[attr-defined]  # untyped stub
        except grpc.RpcError:
            return None
        return int(reply.status)

    def wait_serving(self, timeout_s: float = 30.0) -> float:
        """Wait until health says SERVING; returns the seconds it took."""

        def serving() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.process.returncode}")
            return self.health() == SERVING

        return eventually(serving, timeout_s, step_s=0.1)

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the process (if it still runs)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)

    def logs(self) -> list[dict[str, Any]]:
        """The JSON log lines written so far (other lines skipped)."""
        self.log_file.flush()
        lines = []
        for raw in self.log_path.read_text("utf-8", errors="replace").splitlines():
            try:
                lines.append(json.loads(raw))
            except json.JSONDecodeError:
                continue
        return lines

    def stop(self, timeout_s: float = 15.0) -> int:
        """SIGTERM, wait (bounded), SIGKILL if needed; close the channel and log file."""
        self.signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(timeout=10)
        self.channel.close()
        self.log_file.close()
        return code


def start_replica(redis_url: str, log_dir: Path, name: str, **env: str | float | int) -> Replica:
    """Start ``python -m router`` on a free loopback port over ``redis_url`` (not yet waited
    for: call ``wait_serving``). ``env`` adds ``ROUTER_*`` settings (keys without prefix)."""
    port = local_redis.free_port()
    variables = {
        **os.environ,
        "ROUTER_HOST": "127.0.0.1",
        "ROUTER_PORT": str(port),
        "ROUTER_METRICS_PORT": "0",
        "REDIS_URL": redis_url,
        "ROUTER_LOG_JSON": "1",
        "ROUTER_LOG_LEVEL": "info",
        "PYTHONUNBUFFERED": "1",
    }
    for key, value in env.items():
        variables[f"ROUTER_{key.upper()}"] = str(value)
    log_path = log_dir / f"{name}.log"
    log_file = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "router"],
        cwd=ROOT,
        env=variables,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    return Replica(name, process, port, log_path, log_file, channel)


@contextmanager
def replicas(
    redis_url: str, log_dir: Path, count: int, **env: str | float | int
) -> Iterator[list[Replica]]:
    """``count`` replicas started together and SERVING; stopped (bounded) on exit."""
    started = [start_replica(redis_url, log_dir, f"replica{i}", **env) for i in range(count)]
    try:
        for replica in started:
            replica.wait_serving()
        yield started
    finally:
        for replica in started:
            replica.stop()


def raw_client(server: local_redis.LocalRedis) -> redis.Redis:
    """A decoding client on ``server`` for reading state (short timeouts)."""
    return redis.Redis.from_url(
        server.url, decode_responses=True, socket_timeout=5, socket_connect_timeout=5
    )


def key(kind: str, name: str = "", tenant: str = TENANT) -> str:
    """A key of the store's schema (see ``router/redis_store.py``): ``key("asg", id)``,
    ``key("queue")``."""
    return f"rt:v1:{{{tenant}}}:{kind}:{name}" if name else f"rt:v1:{{{tenant}}}:{kind}"


# --- seeding ----------------------------------------------------------------------------------


def agent_pb(
    agent_id: str, skills: dict[str, int], capacity: dict[pb.Channel.ValueType, int]
) -> pb.Agent:
    """An agent speaking English with ``skills`` and per-channel ``capacity``."""
    return pb.Agent(
        agent_id=agent_id,
        name=agent_id,
        skills=skills,
        languages=["en"],
        region="eu-west",
        timezone="Europe/Lisbon",
        capacity=[pb.ChannelCapacity(channel=ch, max_items=n) for ch, n in capacity.items()],
    )


def seed_agents(replica: Replica, agents: Iterable[pb.Agent], workers: int = 8) -> None:
    """Create every agent and make it AVAILABLE through the admin API (in parallel)."""

    def one(agent: pb.Agent) -> None:
        admin = replica.admin
        admin.CreateAgent(admin_pb2.CreateAgentRequest(tenant=TENANT, agent=agent), timeout=30)
        admin.SetPresence(
            admin_pb2.SetPresenceRequest(
                tenant=TENANT, agent_id=agent.agent_id, presence=pb.PRESENCE_AVAILABLE
            ),
            timeout=30,
        )

    with futures.ThreadPoolExecutor(workers) as pool:
        for done in [pool.submit(one, agent) for agent in agents]:
            done.result(timeout=120)


def set_policy(
    replica: Replica,
    *,
    offer_timeout_s: dict[pb.Channel.ValueType, int] | None = None,
    max_occupancy: float = 1.0,
) -> None:
    """Occupancy cap off (load tests hold agents busy), optional offers per channel."""
    channels = [
        pb.ChannelSetting(
            channel=ch, default_capacity=1, offer_timeout=duration_pb2.Duration(seconds=s)
        )
        for ch, s in (offer_timeout_s or {}).items()
    ]
    paths = ["max_occupancy"] + (["channels"] if channels else [])
    replica.policy.UpdatePolicy(
        admin_pb2.UpdatePolicyRequest(
            tenant=TENANT,
            policy=pb.Policy(max_occupancy=max_occupancy, channels=channels),
            update_mask=field_mask_pb2.FieldMask(paths=paths),
        ),
        timeout=30,
    )


def assign_request(
    request_id: str, call_id: str, skill: str, channel: pb.Channel.ValueType = pb.CHANNEL_CHAT
) -> routing_pb2.AssignRequest:
    """An Assign for one call needing ``skill`` at level 1 or more."""
    return routing_pb2.AssignRequest(
        tenant=TENANT,
        request_id=request_id,
        call=pb.Call(
            call_id=call_id,
            channel=channel,
            language="en",
            required_skills=[pb.SkillRequirement(skill=skill, min_level=1)],
        ),
    )


# --- reading state --------------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    """What one agent holds, as read from its hash."""

    items: dict[str, int]
    """Capacity-holding work per channel."""
    units: int
    assignment_ids: tuple[str, ...]


def parse_load(fields: dict[str, str], now_ms: int) -> Load:
    """The agent's load from its ``a:<assignment_id>`` fields (as the Lua scripts count it:
    a field whose wrap-up ended no longer holds capacity)."""
    items: dict[str, int] = {}
    units = 0
    ids = []
    for name, value in fields.items():
        if not name.startswith("a:"):
            continue
        channel, unit_text, _start, _offered, wrap = value.split("|")
        if int(wrap) != 0 and int(wrap) <= now_ms:
            continue
        items[channel] = items.get(channel, 0) + 1
        units += int(unit_text)
        ids.append(name[2:])
    return Load(items, units, tuple(ids))


def loads(client: redis.Redis, agent_ids: list[str]) -> dict[str, Load]:
    """Every agent's load in one ``MULTI`` (a consistent cut of Redis)."""
    pipe = client.pipeline(transaction=True)
    pipe.time()
    for agent_id in agent_ids:
        pipe.hgetall(key("agent", agent_id))
    replies = pipe.execute()
    seconds, micros = replies[0]
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    return {aid: parse_load(h, now_ms) for aid, h in zip(agent_ids, replies[1:], strict=True)}


def assignments(client: redis.Redis, ids: Iterable[str]) -> dict[str, dict[str, str]]:
    """The stored hash of each assignment id (empty dict when missing)."""
    id_list = list(ids)
    result: dict[str, dict[str, str]] = {}
    for start in range(0, len(id_list), 500):
        chunk = id_list[start : start + 500]
        pipe = client.pipeline(transaction=False)
        for assignment_id in chunk:
            pipe.hgetall(key("asg", assignment_id))
        for assignment_id, value in zip(chunk, pipe.execute(), strict=True):
            result[assignment_id] = value
    return result


def calls(client: redis.Redis, ids: Iterable[str]) -> dict[str, dict[str, str]]:
    """The stored hash of each call id (empty dict when missing)."""
    id_list = list(ids)
    result: dict[str, dict[str, str]] = {}
    for start in range(0, len(id_list), 500):
        chunk = id_list[start : start + 500]
        pipe = client.pipeline(transaction=False)
        for call_id in chunk:
            pipe.hgetall(key("call", call_id))
        for call_id, value in zip(chunk, pipe.execute(), strict=True):
            result[call_id] = value
    return result


def lease_value(client: redis.Redis, tenant: str = TENANT) -> str | None:
    """The dispatcher lease ``<expires_ms>|<owner>``, or ``None``."""
    value = client.get(key("lease", "dispatch", tenant))
    return None if value is None else str(value)


def live_per_call(client: redis.Redis) -> dict[str, int]:
    """Live (active or offered) assignments per call id, over every stored assignment."""
    counts: dict[str, int] = {}
    for name in client.scan_iter(match=key("asg", "*"), count=1000):
        asg = {str(k): str(v) for k, v in client.hgetall(name).items()}
        if asg.get("state") in {"active", "offered"}:
            counts[asg["call_id"]] = counts.get(asg["call_id"], 0) + 1
    return counts
