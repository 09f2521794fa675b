"""Security against a real server, real gRPC channels and a real redis-server: TLS and mutual
TLS, API tokens and roles, the separate admin listener, per-tenant rate limits, keepalive
limits, undecodable bodies, and that tokens never reach the log.

Certificates are made with the ``openssl`` CLI (a throw-away CA, a server certificate for
127.0.0.1, client certificates from that CA and from a rogue one). Everything listens on
127.0.0.1 and every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
import structlog.testing
from google.protobuf.message import Message
from google.rpc import error_details_pb2  # type: ignore[import-untyped]  # no py.typed
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status  # type: ignore[import-untyped]  # no py.typed

from router import auth, interceptors, local_redis
from router.redis_store import RedisStore
from router.server import ROUTING_SERVICE, RunningServer, create_server
from router.settings import Settings
from router.v1 import admin_pb2, admin_pb2_grpc, routing_pb2, routing_pb2_grpc
from router.v1 import types_pb2 as pb
from tests.helpers import keyspace, log_lines, sample
from tests.system import fleet

TOKENS = {
    "helpdesk": "rtk_acme-helpdesk-0123456789abcdefghijklmnopqrstu",
    "admin": "rtk_acme-admin-0123456789abcdefghijklmnopqrstuvwxyz",
    "viewer": "rtk_acme-viewer-0123456789abcdefghijklmnopqrstuvwxy",
    "beta": "rtk_beta-helpdesk-0123456789abcdefghijklmnopqrstuv",
}
"""Test tokens (fixed, so a leak into a log line is easy to find)."""
ASSIGN = "/router.v1.RoutingService/Assign"
WATCH = "/router.v1.RoutingService/Watch"


def _bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def _tokens_file(path: Path) -> Path:
    lines = ["tokens:"]
    for role in ("helpdesk", "admin", "viewer"):
        lines.append(auth.entry_line(TOKENS[role], "acme", role))
    lines.append(auth.entry_line(TOKENS["beta"], "beta", "helpdesk", "beta-crm"))
    path.write_text("\n".join(lines) + "\n")
    return path


def _code(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    """Run ``call``; its status code and message (OK, "" when it succeeds)."""
    try:
        call()
    except grpc.RpcError as err:
        return err.code(), err.details() or ""
    return grpc.StatusCode.OK, ""


def _dump(client: redis.Redis) -> dict[bytes | str, object]:
    """The keyspace but the dispatcher's lease and tick marker."""
    return {k: v for k, v in keyspace(client).items() if ":lease:" not in str(k)}


def _refusals(method: str, code: str) -> float:
    """RPCs of the routing service's ``method`` answered ``code``, as /metrics exports them."""
    return sample(
        "router_rpc_duration_seconds_count", service=ROUTING_SERVICE, method=method, code=code
    )


def _assign(tenant: str = "acme", call_id: str = "c1") -> routing_pb2.AssignRequest:
    return routing_pb2.AssignRequest(
        tenant=tenant,
        request_id=f"req-{call_id}",
        call=pb.Call(
            call_id=call_id,
            channel=pb.CHANNEL_CHAT,
            required_skills=[pb.SkillRequirement(skill="billing", min_level=1)],
        ),
    )


def _create(tenant: str = "acme", agent_id: str = "ana") -> admin_pb2.CreateAgentRequest:
    return admin_pb2.CreateAgentRequest(
        tenant=tenant, agent=pb.Agent(agent_id=agent_id, name="Ana", skills={"billing": 5})
    )


def _health(channel: grpc.Channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)  # type: ignore[attr-defined]  # untyped stub
    return int(reply.status)


def _reflected(channel: grpc.Channel) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    replies = stub.ServerReflectionInfo(iter([request]), timeout=5)  # type: ignore[operator]  # stub typed as Incomplete
    return {service.name for reply in replies for service in reply.list_services_response.service}


def _raw(channel: grpc.Channel, method: str, body: bytes, **kwargs: Any) -> object:
    """Send ``body`` as the request bytes of ``method``."""
    identity: Callable[[bytes], bytes] = lambda b: b  # noqa: E731
    if method == WATCH:
        stream = channel.unary_stream(
            method, request_serializer=identity, response_deserializer=identity
        )
        return next(iter(stream(body, timeout=5, **kwargs)))
    unary = channel.unary_unary(method, request_serializer=identity, response_deserializer=identity)
    return unary(body, timeout=5, **kwargs)


# --- fixtures ---------------------------------------------------------------------------------


@dataclass
class Started:
    """A server under test and a plaintext channel to its main port."""

    running: RunningServer
    channel: grpc.Channel
    client: redis.Redis

    @property
    def routing(self) -> routing_pb2_grpc.RoutingServiceStub:
        """Routing stub on the main port."""
        return routing_pb2_grpc.RoutingServiceStub(self.channel)

    @property
    def admin(self) -> admin_pb2_grpc.AgentAdminServiceStub:
        """Agent admin stub on the main port."""
        return admin_pb2_grpc.AgentAdminServiceStub(self.channel)

    @property
    def policies(self) -> admin_pb2_grpc.PolicyServiceStub:
        """Policy stub on the main port."""
        return admin_pb2_grpc.PolicyServiceStub(self.channel)


@pytest.fixture
def start(redis_server: local_redis.LocalRedis) -> Iterator[Callable[..., Started]]:
    """Start servers over the (flushed) test Redis with the given settings; all stopped after."""
    client = redis.Redis.from_url(redis_server.url, decode_responses=False)
    client.flushall()
    started: list[Started] = []

    def run(*, plaintext: bool = True, **fields: Any) -> Started:
        store = RedisStore(redis.Redis.from_url(redis_server.url, decode_responses=True))
        defaults: dict[str, Any] = {"port": 0, "metrics_port": 0, "workers": 8}
        settings = Settings(**{**defaults, "dispatch_tick_s": 0.05, **fields})
        running = create_server(settings, store)
        channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
        started.append(Started(running, channel, client))
        return started[-1]

    try:
        yield run
    finally:
        for item in started:
            item.channel.close()
            item.running.stop(0)
        client.close()


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    """A tokens file: helpdesk, admin and viewer tokens for acme, a helpdesk one for beta."""
    return _tokens_file(tmp_path / "tokens.yaml")


@dataclass(frozen=True)
class Pki:
    """PEM files of a throw-away CA, a server certificate and client certificates."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path
    rogue_key: Path


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=30)


def _ca(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", key, "-out", cert, "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return cert, key


def _leaf(directory: Path, name: str, ca: tuple[Path, Path], extensions: str) -> tuple[Path, Path]:
    cert, key, csr = (directory / f"{name}{ext}" for ext in (".pem", ".key", ".csr"))
    ext_file = directory / f"{name}.ext"
    ext_file.write_text(extensions)
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", key, "-out", csr, "-subj", f"/CN={name}",
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
        "-out", cert, "-days", "2", "-extfile", ext_file,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Certificates for TLS tests (made once per module with ``openssl``)."""
    if shutil.which("openssl") is None:
        pytest.fail("the TLS tests need the openssl command", pytrace=False)
    directory = tmp_path_factory.mktemp("pki")
    ca = _ca(directory, "test-ca")
    rogue_ca = _ca(directory, "rogue-ca")
    server = _leaf(
        directory, "server", ca, "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
    )
    client = _leaf(directory, "client", ca, "extendedKeyUsage=clientAuth\n")
    rogue = _leaf(directory, "rogue", rogue_ca, "extendedKeyUsage=clientAuth\n")
    return Pki(ca[0], *server, *client, *rogue)


def _tls_channel(
    port: int, pki: Pki, client: tuple[Path, Path] | None = None, token: str = ""
) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.ca.read_bytes(),
        private_key=client[1].read_bytes() if client else None,
        certificate_chain=client[0].read_bytes() if client else None,
    )
    if token:  # the standard way: sends "authorization: Bearer <token>"
        credentials = grpc.composite_channel_credentials(
            credentials, grpc.access_token_call_credentials(token)
        )
    return grpc.secure_channel(f"127.0.0.1:{port}", credentials)


# --- TLS and mutual TLS -----------------------------------------------------------------------


def test_tls_serves_only_tls(start: Callable[..., Started], pki: Pki, tokens_file: Path) -> None:
    """With a certificate: a client trusting the CA works (and its bearer token travels as
    call credentials); a plaintext client cannot talk to the port."""
    server = start(
        tls_cert=str(pki.server_cert), tls_key=str(pki.server_key), tokens_file=str(tokens_file)
    )
    port = server.running.port
    with _tls_channel(port, pki, token=TOKENS["admin"]) as channel:
        policy = admin_pb2_grpc.PolicyServiceStub(channel).GetPolicy(
            admin_pb2.GetPolicyRequest(tenant="acme"), timeout=5
        )
        assert policy.version >= 0
        assert _health(channel) == health_pb2.HealthCheckResponse.SERVING
    code, _ = _code(lambda: _health(server.channel))  # plaintext
    assert code == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_requires_a_client_certificate_from_the_ca(
    start: Callable[..., Started], pki: Pki
) -> None:
    """With a client CA: no client certificate, or one from another CA, cannot connect."""
    server = start(
        tls_cert=str(pki.server_cert), tls_key=str(pki.server_key), tls_client_ca=str(pki.ca)
    )
    port = server.running.port
    with _tls_channel(port, pki, (pki.client_cert, pki.client_key)) as channel:
        assert _health(channel) == health_pb2.HealthCheckResponse.SERVING
    for client in (None, (pki.rogue_cert, pki.rogue_key)):
        with _tls_channel(port, pki, client) as channel:
            code, _ = _code(lambda channel=channel: _health(channel))  # type: ignore[misc]
            assert code == grpc.StatusCode.UNAVAILABLE, client


# --- tokens and roles -------------------------------------------------------------------------


def test_calls_without_a_known_token_are_unauthenticated(
    start: Callable[..., Started], tokens_file: Path
) -> None:
    """No token, another scheme, an unknown token, the digest instead of the token: all
    UNAUTHENTICATED, none echoing what was sent, nothing written."""
    server = start(tokens_file=str(tokens_file))
    before = _dump(server.client)
    refused = _refusals("Assign", "UNAUTHENTICATED")
    wrong = "rtk_not-a-token-at-all"
    for metadata in (
        (),
        (("authorization", f"Basic {wrong}"),),
        _bearer(wrong),
        _bearer(auth.digest(TOKENS["admin"])),
    ):
        code, message = _code(lambda m=metadata: server.routing.Assign(_assign(), metadata=m))  # type: ignore[misc]
        assert code == grpc.StatusCode.UNAUTHENTICATED, metadata
        assert wrong not in message
        code, _ = _code(lambda m=metadata: next(iter(server.routing.Watch(  # type: ignore[misc]
            routing_pb2.WatchRequest(tenant="acme"), metadata=m, timeout=5))))  # fmt: skip
        assert code == grpc.StatusCode.UNAUTHENTICATED
    # the body of an unauthenticated call is not even parsed
    code, _ = _code(lambda: _raw(server.channel, ASSIGN, b"\xff\xff garbage"))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert _dump(server.client) == before
    assert _refusals("Assign", "UNAUTHENTICATED") == refused + 5  # counted for operators


def test_roles_and_tenants(start: Callable[..., Started], tokens_file: Path) -> None:
    """helpdesk routes but cannot administer; admin does both; viewer only reads; a token
    used for another tenant is PERMISSION_DENIED naming the tenant; denials write nothing."""
    server = start(tokens_file=str(tokens_file))
    admin, helpdesk, viewer = (_bearer(TOKENS[r]) for r in ("admin", "helpdesk", "viewer"))
    server.admin.CreateAgent(_create(), metadata=admin, timeout=5)
    server.admin.SetPresence(
        admin_pb2.SetPresenceRequest(tenant="acme", agent_id="ana", presence=pb.PRESENCE_AVAILABLE),
        metadata=admin,
        timeout=5,
    )
    reply = server.routing.Assign(_assign(), metadata=helpdesk, timeout=5)
    assert reply.result == routing_pb2.AssignResponse.RESULT_ASSIGNED
    server.routing.GetStats(routing_pb2.GetStatsRequest(tenant="acme"), metadata=viewer)
    server.admin.GetAgent(admin_pb2.GetAgentRequest(tenant="acme", agent_id="ana"), metadata=viewer)
    server.routing.GetCall(routing_pb2.GetCallRequest(tenant="acme", call_id="c1"), metadata=admin)

    before = _dump(server.client)
    denied = [
        (lambda: server.admin.CreateAgent(_create(agent_id="bo"), metadata=helpdesk),
         "router.v1.AgentAdminService/CreateAgent: needs role admin; this token has role helpdesk"),
        (lambda: server.policies.UpdatePolicy(
            admin_pb2.UpdatePolicyRequest(tenant="acme"), metadata=helpdesk),
         "needs role admin"),
        (lambda: server.routing.Assign(_assign(call_id="c2"), metadata=viewer),
         "needs role helpdesk or admin; this token has role viewer"),
        (lambda: server.routing.Assign(_assign("beta", "c3"), metadata=helpdesk),
         "tenant: this token is for tenant 'acme' only, not 'beta'"),
        (lambda: server.admin.CreateAgent(_create("beta"), metadata=admin),
         "for tenant 'acme' only"),
        (lambda: server.routing.Assign(_assign("acme", "c4"), metadata=_bearer(TOKENS["beta"])),
         "for tenant 'beta' only, not 'acme'"),
        (lambda: next(iter(server.routing.Watch(
            routing_pb2.WatchRequest(tenant="beta"), metadata=helpdesk, timeout=5))),
         "for tenant 'acme' only"),
    ]  # fmt: skip
    for call, message in denied:
        code, details = _code(call)
        assert code == grpc.StatusCode.PERMISSION_DENIED, details
        assert message in details
        assert not any(token in details for token in TOKENS.values())
    assert _dump(server.client) == before


def test_health_and_reflection_stay_open(start: Callable[..., Started], tokens_file: Path) -> None:
    """Probes and grpcurl-style tools need no token."""
    server = start(tokens_file=str(tokens_file))
    assert _health(server.channel) == health_pb2.HealthCheckResponse.SERVING
    assert "router.v1.RoutingService" in _reflected(server.channel)


def test_tokens_are_reloaded_in_place(start: Callable[..., Started], tmp_path: Path) -> None:
    """``reload_tokens`` (SIGHUP) swaps the table: a rotated-out token stops working at once,
    the new one starts; a broken file keeps the tokens in force."""
    path = tmp_path / "tokens.yaml"
    path.write_text(f"tokens:\n{auth.entry_line('old-token', 'acme', 'admin')}\n")
    server = start(tokens_file=str(path))
    request = admin_pb2.GetPolicyRequest(tenant="acme")
    server.policies.GetPolicy(request, metadata=_bearer("old-token"), timeout=5)
    path.write_text("tokens: [")
    server.running.reload_tokens()
    server.policies.GetPolicy(request, metadata=_bearer("old-token"), timeout=5)
    path.write_text(f"tokens:\n{auth.entry_line('new-token', 'acme', 'admin')}\n")
    server.running.reload_tokens()
    server.policies.GetPolicy(request, metadata=_bearer("new-token"), timeout=5)
    code, _ = _code(lambda: server.policies.GetPolicy(request, metadata=_bearer("old-token")))
    assert code == grpc.StatusCode.UNAUTHENTICATED


def test_tokens_never_reach_the_log(redis_server: local_redis.LocalRedis, tmp_path: Path) -> None:
    """``python -m router`` at debug level, with every kind of authenticated, refused and
    malformed call and a SIGHUP reload: its whole output (stdout and stderr, grpc's own lines
    included) never contains a token, while it names the callers by their entry's name."""
    tokens_file = _tokens_file(tmp_path / "tokens.yaml")
    replica = fleet.start_replica(
        redis_server.url, tmp_path, "secure", TOKENS_FILE=str(tokens_file), LOG_LEVEL="debug"
    )
    try:
        replica.wait_serving()
        channel = replica.channel
        routing = routing_pb2_grpc.RoutingServiceStub(channel)
        admin = admin_pb2_grpc.AgentAdminServiceStub(channel)
        admin.CreateAgent(_create(), metadata=_bearer(TOKENS["admin"]), timeout=5)
        routing.Assign(_assign(), metadata=_bearer(TOKENS["helpdesk"]), timeout=5)
        for call in (
            lambda: routing.Assign(_assign("beta"), metadata=_bearer(TOKENS["helpdesk"])),
            lambda: admin.CreateAgent(_create(agent_id="x"), metadata=_bearer(TOKENS["viewer"])),
            lambda: routing.Assign(_assign(), metadata=_bearer(TOKENS["admin"] + "x")),
            lambda: routing.Assign(_assign(), metadata=(("authorization", TOKENS["admin"]),)),
            lambda: _raw(channel, ASSIGN, b"\xff\xfe", metadata=_bearer(TOKENS["helpdesk"])),
            lambda: routing.Assign(_assign(), metadata=(("x-token", TOKENS["beta"]),)),
        ):
            assert _code(call)[0] != grpc.StatusCode.OK
        replica.signal(signal.SIGHUP)
        fleet.eventually(lambda: any(e.get("event") == "tokens_reloaded" for e in replica.logs()))
    finally:
        assert replica.stop() == 0
    text = replica.log_path.read_text("utf-8", errors="replace")
    for token in TOKENS.values():
        assert token not in text
        assert token[4:30] not in text  # not even a part of it
    events = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    finished = [e for e in events if e.get("event") == "rpc_finished" and "principal" in e]
    assert {(e["principal"], e["code"]) for e in finished} >= {
        ("acme-admin", "OK"),
        ("acme-helpdesk", "OK"),
        ("acme-helpdesk", "PERMISSION_DENIED"),
        ("acme-viewer", "PERMISSION_DENIED"),
    }
    codes = [e["code"] for e in events if e.get("event") == "rpc_finished"]
    assert codes.count("UNAUTHENTICATED") == 3
    assert codes.count("INVALID_ARGUMENT") == 1  # the body that does not parse
    assert any(e.get("event") == "auth_enabled" and e["tokens"] == 4 for e in events)


def test_without_tokens_the_service_warns(
    start: Callable[..., Started], capture: list[MutableMapping[str, Any]]
) -> None:
    """No tokens file: every call is allowed, and start-up says so."""
    server = start()
    server.admin.CreateAgent(_create(), timeout=5)
    assert any(e["event"] == "auth_disabled" and e["log_level"] == "warning" for e in capture)


@pytest.fixture
def capture() -> Iterator[list[MutableMapping[str, Any]]]:
    """The structlog events logged during the test."""
    with structlog.testing.capture_logs() as events:
        yield events


# --- the admin listener -----------------------------------------------------------------------


def test_admin_services_on_their_own_listener(start: Callable[..., Started]) -> None:
    """With ``admin_port``: admin, policy and reflection only there (UNIMPLEMENTED on the
    main port), routing only on the main port, health on both, each listener's answering
    for its own services (NOT_FOUND for the other's); stop closes both."""
    admin_port, port = local_redis.free_port(), local_redis.free_port()
    while port == admin_port:  # both free a moment ago; the OS may hand out one twice
        port = local_redis.free_port()
    server = start(port=port, admin_port=admin_port)
    assert server.running.admin_port == admin_port
    main = server.channel
    misrouted = _unimplemented("router.v1.AgentAdminService", "CreateAgent")
    with grpc.insecure_channel(f"127.0.0.1:{admin_port}") as side:
        code, _ = _code(lambda: server.admin.CreateAgent(_create(), timeout=5))
        assert code == grpc.StatusCode.UNIMPLEMENTED
        assert _unimplemented("router.v1.AgentAdminService", "CreateAgent") == misrouted + 1
        code, _ = _code(
            lambda: server.policies.GetPolicy(admin_pb2.GetPolicyRequest(tenant="acme"))
        )
        assert code == grpc.StatusCode.UNIMPLEMENTED
        code, _ = _code(lambda: _reflected(main))
        assert code == grpc.StatusCode.UNIMPLEMENTED
        admin_pb2_grpc.AgentAdminServiceStub(side).CreateAgent(_create(), timeout=5)
        admin_pb2_grpc.PolicyServiceStub(side).GetPolicy(
            admin_pb2.GetPolicyRequest(tenant="acme"), timeout=5
        )
        assert _reflected(side) == {
            "router.v1.AgentAdminService",
            "router.v1.PolicyService",
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        }
        server.routing.GetStats(routing_pb2.GetStatsRequest(tenant="acme"), timeout=5)
        code, _ = _code(
            lambda: routing_pb2_grpc.RoutingServiceStub(side).GetStats(
                routing_pb2.GetStatsRequest(tenant="acme"), timeout=5
            )
        )
        assert code == grpc.StatusCode.UNIMPLEMENTED
        assert _health(main) == _health(side) == health_pb2.HealthCheckResponse.SERVING
        serving = health_pb2.HealthCheckResponse.SERVING
        assert _health(main, "router.v1.RoutingService") == serving
        assert _health(side, "router.v1.AgentAdminService") == serving
        assert _health(side, "router.v1.PolicyService") == serving
        for channel, elsewhere in (
            (main, "router.v1.AgentAdminService"),
            (main, "router.v1.PolicyService"),
            (side, "router.v1.RoutingService"),
        ):  # each listener answers for what it serves
            assert _code(lambda: _health(channel, elsewhere))[0] == grpc.StatusCode.NOT_FOUND  # noqa: B023
        server.running.stop(0)
        assert _code(lambda: _health(side))[0] == grpc.StatusCode.UNAVAILABLE
        assert _code(lambda: _health(main))[0] == grpc.StatusCode.UNAVAILABLE


def _unimplemented(service: str, method: str) -> float:
    """Calls to a method the server does not serve, as /metrics counts them."""
    return sample(
        "router_rpc_duration_seconds_count", service=service, method=method, code="UNIMPLEMENTED"
    )


def test_a_method_nobody_serves_is_counted_and_logged(start: Callable[..., Started]) -> None:
    """gRPC answers UNIMPLEMENTED before any handler runs; the call is still counted (as
    ``unknown``: a client's path never becomes a label) and leaves a line at info (the
    caller's mistake, which any client could repeat at will) naming the path, clipped and
    printable."""
    server = start()
    before = _unimplemented("unknown", "unknown")
    long_path = "/router.v1.RoutingService/" + "N" * 400
    with log_lines() as entries:
        for path in ("/router.v1.RoutingService/NoSuchMethod", long_path):
            assert _code(lambda p=path: _raw(server.channel, p, b""))[0] == (  # type: ignore[misc]
                grpc.StatusCode.UNIMPLEMENTED
            )
    assert _unimplemented("unknown", "unknown") == before + 2
    lines = [line for line in entries if line["event"] == "rpc_finished"]
    assert [(line["code"], line["log_level"]) for line in lines] == [("UNIMPLEMENTED", "info")] * 2
    assert lines[0]["method"] == "/router.v1.RoutingService/NoSuchMethod"
    assert lines[1]["method"] == long_path[: interceptors.PATH_CHARS] + "..."


# --- rate limits ------------------------------------------------------------------------------


def test_rate_limit_answers_with_retry_info(start: Callable[..., Started]) -> None:
    """Past the burst: RESOURCE_EXHAUSTED carrying google.rpc.RetryInfo and a retry-after
    trailer, before any handler work (nothing written); another tenant is not affected."""
    server = start(rate_limit=0.5, rate_burst=3)
    for _ in range(3):
        server.routing.GetStats(routing_pb2.GetStatsRequest(tenant="acme"), timeout=5)
    before = _dump(server.client)
    refused = _refusals("Assign", "RESOURCE_EXHAUSTED")
    with pytest.raises(grpc.RpcError) as err:
        server.routing.Assign(_assign(call_id="c9"), timeout=5)
    error = err.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _refusals("Assign", "RESOURCE_EXHAUSTED") == refused + 1  # operators see it
    assert "tenant acme: rate limit of 0.5 requests/s (burst 3) reached" in str(error.details())
    status = rpc_status.from_call(error)
    assert status is not None
    (detail,) = status.details
    info = error_details_pb2.RetryInfo()
    assert detail.Unpack(info)
    assert 0 < info.retry_delay.ToTimedelta().total_seconds() <= 2.0
    trailers: dict[str, object] = {item.key: item.value for item in error.trailing_metadata()}
    assert trailers["retry-after"] in {"1", "2"}  # text metadata: str at run time
    assert "x-request-id" in trailers  # kept beside them
    assert _dump(server.client) == before
    server.routing.GetStats(routing_pb2.GetStatsRequest(tenant="beta"), timeout=5)


def test_a_noisy_tenant_does_not_starve_another(start: Callable[..., Started]) -> None:
    """Four threads hammer as ``noisy`` for 1.5 s; ``quiet`` calls twice a second all along
    and is never refused, while most of noisy's calls are; noisy gets about its share."""
    rate, burst, seconds = 5.0, 5, 1.5
    server = start(rate_limit=rate, rate_burst=burst)
    stop = threading.Event()
    noisy: list[grpc.StatusCode] = []

    def hammer() -> None:
        request = routing_pb2.GetStatsRequest(tenant="noisy")
        while not stop.is_set():
            noisy.append(_code(lambda: server.routing.GetStats(request, timeout=5))[0])

    threads = [threading.Thread(target=hammer, daemon=True) for _ in range(4)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    quiet = []
    request = routing_pb2.GetStatsRequest(tenant="quiet")
    while time.monotonic() - started < seconds:
        quiet.append(_code(lambda: server.routing.GetStats(request, timeout=5))[0])
        time.sleep(0.5)
    stop.set()
    for thread in threads:
        thread.join(10)
    elapsed = time.monotonic() - started
    assert quiet == [grpc.StatusCode.OK] * len(quiet)
    admitted = noisy.count(grpc.StatusCode.OK)
    refused = noisy.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert admitted + refused == len(noisy)
    assert refused > admitted
    assert burst <= admitted <= burst + rate * elapsed + 1


def test_rate_limit_counts_only_authenticated_calls(
    start: Callable[..., Started], tokens_file: Path
) -> None:
    """Unauthenticated calls do not use up the tenant's budget (an outsider cannot block
    a tenant by calling with its name)."""
    server = start(tokens_file=str(tokens_file), rate_limit=0.5, rate_burst=2)
    request = routing_pb2.GetStatsRequest(tenant="acme")
    for _ in range(10):
        code, _ = _code(lambda: server.routing.GetStats(request, timeout=5))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        code, _ = _code(lambda: server.routing.GetStats(request, metadata=_bearer(TOKENS["beta"])))
        assert code == grpc.StatusCode.PERMISSION_DENIED
    viewer = _bearer(TOKENS["viewer"])
    server.routing.GetStats(request, metadata=viewer, timeout=5)
    server.routing.GetStats(request, metadata=viewer, timeout=5)
    code, _ = _code(lambda: server.routing.GetStats(request, metadata=viewer, timeout=5))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED


# --- keepalive --------------------------------------------------------------------------------

PINGER = [
    ("grpc.keepalive_time_ms", 100),
    ("grpc.keepalive_timeout_ms", 1000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]
"""A client that pings as often as grpc lets it (about once a second)."""


def _watch_until_closed(port: int, timeout_s: float) -> tuple[grpc.StatusCode, str, float]:
    """Hold a Watch open from the pinging client; how and when it ended."""
    started = time.monotonic()
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=PINGER) as channel:
        stream = routing_pb2_grpc.RoutingServiceStub(channel).Watch(
            routing_pb2.WatchRequest(tenant="acme"), timeout=timeout_s
        )
        code, details = _code(lambda: list(stream))
    return code, details, time.monotonic() - started


def test_an_over_eager_pinger_is_cut_off(start: Callable[..., Started]) -> None:
    """Pings faster than ``min_ping_interval_s``: after ``max_ping_strikes`` the server
    sends GOAWAY too_many_pings and the client's stream ends UNAVAILABLE."""
    server = start(min_ping_interval_s=5, max_ping_strikes=1)
    code, details, took = _watch_until_closed(server.running.port, 10)
    assert code == grpc.StatusCode.UNAVAILABLE
    assert "too many pings" in details.lower()
    assert took < 8


def test_pings_within_the_interval_are_fine(start: Callable[..., Started]) -> None:
    """The same client against a server that allows a ping every 0.5 s keeps its stream
    until its own deadline: the setting is what cut the other one off."""
    server = start(min_ping_interval_s=0.5, max_ping_strikes=1)
    code, _, _ = _watch_until_closed(server.running.port, 3.5)
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_idle_connections_are_closed(start: Callable[..., Started]) -> None:
    """``max_connection_idle_s``: a connection without RPCs is closed by the server (the
    channel goes IDLE and reconnects on the next call)."""
    server = start(max_connection_idle_s=0.5)
    states: list[grpc.ChannelConnectivity] = []
    with grpc.insecure_channel(f"127.0.0.1:{server.running.port}") as channel:
        assert _health(channel) == health_pb2.HealthCheckResponse.SERVING
        channel.subscribe(states.append, try_to_connect=False)
        fleet.eventually(lambda: grpc.ChannelConnectivity.IDLE in states, timeout_s=5)
        assert _health(channel) == health_pb2.HealthCheckResponse.SERVING
        channel.unsubscribe(states.append)


# --- malformed input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "type_name"),
    [
        (ASSIGN, "router.v1.AssignRequest"),
        (WATCH, "router.v1.WatchRequest"),
        ("/router.v1.AgentAdminService/CreateAgent", "router.v1.CreateAgentRequest"),
        ("/grpc.health.v1.Health/Check", "grpc.health.v1.HealthCheckRequest"),
    ],
)
def test_undecodable_bodies_are_invalid_argument(
    start: Callable[..., Started], method: str, type_name: str
) -> None:
    """Bytes that do not parse: INVALID_ARGUMENT naming the message type (not grpcio's
    INTERNAL "Exception deserializing request!"), nothing written."""
    server = start()
    before = _dump(server.client)
    for body in (b"\xff\xff\xff", b"\x0a\x05ab", b"\x08" + b"\xff" * 11):
        code, details = _code(lambda b=body: _raw(server.channel, method, b))  # type: ignore[misc]
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (body, details)
        assert details == f"request: cannot be decoded as {type_name}"
    assert _dump(server.client) == before


def test_logged_ids_are_sanitised() -> None:
    """Only printable ASCII reaches the log context, clipped per field."""
    request: Message = routing_pb2.AssignRequest(
        tenant='acme\n{"level":"error"}',
        request_id="r" * 500,
        call=pb.Call(call_id="c\u2028\x1b[31m\u00e9"),
    )
    fields = interceptors._request_fields(request)
    assert fields["tenant"] == 'acme?{"level":"error"}'
    assert fields["request_id"] == "r" * 128 + "..."
    assert fields["call_id"] == "c??[31m?"
    assert all(" " <= c <= "~" for value in fields.values() for c in value)
    for code in range(0x10000):  # every character of the basic plane, kept or replaced alike
        char = chr(code)
        assert interceptors.printable(char, 8) == (char if " " <= char <= "~" else "?")


def test_open_streams_never_take_the_workers_unary_calls_need(
    start: Callable[..., Started],
) -> None:
    """Streams hold a worker thread each for as long as they last. With 8 workers: four
    streams at once in all, one of them anyone may open without a token (health Watch,
    reflection), two of one tenant's Watch streams; past that a new stream is
    RESOURCE_EXHAUSTED at once, and unary RPCs keep answering while the streams stay open."""
    started = start(workers=8)
    health_stream = started.channel.unary_stream(
        "/grpc.health.v1.Health/Watch",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
    opened: list[Any] = []

    def read(stream: Any) -> None:
        """Wait for the stream's first message, its refusal or its cancellation."""
        with contextlib.suppress(grpc.RpcError):
            next(stream, None)

    def open_streams(*streams: Any) -> list[Any]:
        """Start reading ``streams``; those refused once one of them is (10 s at most)."""
        for stream in streams:
            opened.append(stream)
            threading.Thread(target=read, args=(stream,), daemon=True).start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(s.done() for s in streams):
            time.sleep(0.01)
        time.sleep(0.1)  # any other refusal arrives as fast
        return [s for s in streams if s.done()]

    def watch(tenant: str) -> Any:
        return started.routing.Watch(routing_pb2.WatchRequest(tenant=tenant), timeout=30)

    def health_watch() -> Any:
        return health_stream(health_pb2.HealthCheckRequest(), timeout=30)

    try:
        first = health_watch()
        opened.append(first)
        assert next(first).status == health_pb2.HealthCheckResponse.SERVING  # then it waits
        refused = open_streams(health_watch())
        assert [s.code() for s in refused] == [grpc.StatusCode.RESOURCE_EXHAUSTED]
        refused = open_streams(watch("acme"), watch("acme"), watch("acme"))
        assert [s.code() for s in refused] == [grpc.StatusCode.RESOURCE_EXHAUSTED]
        refused = open_streams(watch("beta"), watch("beta"))  # 1 + 2 + 1 = 4 in all
        assert [s.code() for s in refused] == [grpc.StatusCode.RESOURCE_EXHAUSTED]
        assert "streams" in (refused[0].details() or "")
        began = time.monotonic()
        started.policies.GetPolicy(admin_pb2.GetPolicyRequest(tenant="acme"), timeout=5)
        assert time.monotonic() - began < 2
    finally:
        for stream in opened:
            stream.cancel()
    # A slot comes back when its handler notices the client left (its next read, within
    # a second): a new stream of the tenant is then taken.
    deadline = time.monotonic() + 10
    while True:
        again = watch("acme")
        threading.Thread(target=read, args=(again,), daemon=True).start()
        time.sleep(0.3)
        if not again.done():
            break
        assert time.monotonic() < deadline, again.details()
    again.cancel()
