"""Hostile input: thousands of generated bad requests against a running server with state.

Every RPC of every service gets requests that are wrong in one way each (invalid, oversized
or control-character strings, too many skills, out-of-range numbers, unknown enum numbers,
impossible timestamps and durations, unknown ids, stale tokens and versions) built on top of
a request that *would* succeed and write. The properties, for every request:

- the status is the one the contract promises for that mistake (never UNKNOWN, never
  INTERNAL), and an INVALID_ARGUMENT message starts with the offending field's path;
- the whole Redis keyspace (keys, types, values, whether a TTL is set; the event stream
  included) is identical before and after, and so are the service's metrics other than the
  RPC latency histogram.

Raw bytes sent as the request body and messages over the 1 MiB limit are covered too. A body
that does not parse never reaches the servicer: the service answers INVALID_ARGUMENT
"request: cannot be decoded as <message type>" (grpcio alone would say INTERNAL).

Hypothesis runs derandomized with no example database, so CI sees the same examples.
"""

from __future__ import annotations

import math
import string
import time
import zoneinfo
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

import grpc
import pytest
import redis
from google.protobuf import field_mask_pb2
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router import local_redis, metrics
from router.redis_store import RedisStore
from router.server import create_server
from router.settings import Settings
from router.v1 import admin_pb2, routing_pb2
from router.v1 import types_pb2 as pb
from tests.helpers import FakeClock
from tests.integration.service import Service

TENANT = "acme"
BAD = grpc.StatusCode.INVALID_ARGUMENT
MISSING = grpc.StatusCode.NOT_FOUND
TAKEN = grpc.StatusCode.ALREADY_EXISTS
STATE = grpc.StatusCode.FAILED_PRECONDITION
STALE = grpc.StatusCode.ABORTED
TOO_BIG = grpc.StatusCode.RESOURCE_EXHAUSTED
UNDECODABLE = "request: cannot be decoded as "
"""grpcio's own status message when the request body does not parse."""

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
WEEK_S = 7 * 86400
MAX_TIME_S = 253_402_300_799
ZONES = frozenset(zoneinfo.available_timezones())
AGENT_PATHS = (
    "name",
    "team",
    "skills",
    "languages",
    "region",
    "timezone",
    "capacity",
    "max_occupancy",
    "shift_end",
)

# --- the world: a server with agents, a policy, a queued call, an offer, an assignment -------


@dataclass
class World:
    """A live server with state, and what the bad requests need to know about it."""

    service: Service
    now_s: int
    active: pb.Assignment
    """ana's ASSIGNED call ``c-assigned``."""
    offered: pb.Assignment
    """bob's OFFERED chat ``c-offered``."""
    done: pb.Assignment
    """ana's COMPLETED call ``c-done``."""
    ana_version: int
    cy_version: int
    policy_version: int

    def snapshot(self) -> object:
        """The keyspace as ``Service.dump`` sees it (same content, one pipelined read)."""
        return _keyspace(self.service.client)

    def send(self, rpc: str, request: Message) -> object:
        """Call ``rpc`` with ``request``; a Watch is read up to its first event."""
        service = self.service
        for stub in (service.routing, service.admin, service.policies):
            method = getattr(stub, rpc, None)
            if method is not None:
                break
        assert method is not None, rpc
        if rpc == "Watch":
            return next(iter(method(request, timeout=5)))
        return method(request, timeout=10)


def _keyspace(client: redis.Redis) -> dict[bytes, object]:
    """Every key (but the dispatcher's lease and tick marker) with its content and whether it
    has a TTL."""
    keys = sorted(bytes(key) for key in client.keys("*"))  # type: ignore[arg-type]  # a bytes client
    keys = [key for key in keys if b":lease:" not in key]
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.type(key)
    kinds = pipe.execute()
    for key, kind in zip(keys, kinds, strict=True):
        if kind == b"hash":
            pipe.hgetall(key)
        elif kind == b"zset":
            pipe.zrange(key, 0, -1, withscores=True)
        elif kind == b"set":
            pipe.smembers(key)
        elif kind == b"stream":
            pipe.xrange(key)
        elif kind == b"list":
            pipe.lrange(key, 0, -1)
        else:
            pipe.get(key)
        pipe.pttl(key)
    replies = pipe.execute()
    out: dict[bytes, object] = {}
    for i, (key, kind) in enumerate(zip(keys, kinds, strict=True)):
        content, ttl = replies[2 * i], replies[2 * i + 1]
        if kind == b"hash":
            content = sorted(content.items())
        elif kind == b"set":
            content = sorted(content)
        out[key] = (kind, content, ttl > 0)
    return out


def _metric_samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every metric sample but the RPC latency histogram (which counts these very RPCs), the
    timing of the dispatcher's batch solves (it re-solves the queued call each tick) and the
    routing index reads (an Assign reads the index before it knows its request id is a
    replay with another body), the history reads (the dispatcher's passes count completions
    from the history while a tenant has none counted yet), the garbage collector's pauses
    (it runs when it will) and the process's own series (``process_*``: CPU and memory
    move with any work)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in metrics.REGISTRY.collect()
        for sample in family.samples
        if not sample.name.startswith("router_rpc_duration_seconds")
        and not sample.name.startswith("router_routing_index_reads")
        and not sample.name.startswith("router_history_reads")
        and not sample.name.startswith("router_gc_pause_seconds")
        and not sample.name.startswith("process_")
        and not sample.name.endswith("_created")
        and sample.labels.get("kind") != "batch"
    }


def _settled(service: Service) -> None:
    """Wait until the dispatcher has nothing left to write (SLA marks and the like)."""
    previous = _keyspace(service.client)
    stable = 0
    deadline = time.monotonic() + 15
    while stable < 3:
        assert time.monotonic() < deadline, "the seeded state never settled"
        time.sleep(0.1)
        current = _keyspace(service.client)
        stable = stable + 1 if current == previous else 0
        previous = current


def _seed(service: Service) -> World:
    now_s = service.clock.now_ms // 1000
    service.policies.UpdatePolicy(
        admin_pb2.UpdatePolicyRequest(
            tenant=TENANT,
            policy=pb.Policy(
                channels=[
                    pb.ChannelSetting(
                        channel=pb.CHANNEL_CHAT,
                        default_capacity=1,
                        offer_timeout=Duration(seconds=60),
                    )
                ]
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["channels"]),
        )
    )
    service.agent("ana", skills={"billing": 8})
    service.agent("bob", skills={"tech": 5}, chat_capacity=1)
    service.agent("cy", skills={"billing": 3}, presence=pb.PRESENCE_BREAK)
    service.admin.ScheduleAbsence(
        admin_pb2.ScheduleAbsenceRequest(
            tenant=TENANT,
            agent_id="cy",
            absence=pb.Absence(
                absence_id="abs-1",
                kind=pb.ABSENCE_KIND_VACATION,
                start_time=Timestamp(seconds=now_s + 86400),
                end_time=Timestamp(seconds=now_s + 2 * 86400),
            ),
        )
    )
    first = service.assign("c-done", skills={"billing": 3}).assignment
    done = service.complete(first, csat=4)
    active = service.assign("c-assigned", skills={"billing": 3}).assignment
    offered = service.assign("c-offered", skills={"tech": 1}, channel=pb.CHANNEL_CHAT).assignment
    queued = service.assign("c-queued", skills={"billing": 3})
    assert (active.agent_id, active.state) == ("ana", pb.ASSIGNMENT_STATE_ACTIVE)
    assert (offered.agent_id, offered.state) == ("bob", pb.ASSIGNMENT_STATE_OFFERED)
    assert done.state == pb.ASSIGNMENT_STATE_COMPLETED
    assert queued.result == routing_pb2.AssignResponse.RESULT_QUEUED
    _settled(service)
    policy = service.policies.GetPolicy(admin_pb2.GetPolicyRequest(tenant=TENANT))
    return World(
        service=service,
        now_s=now_s,
        active=active,
        offered=offered,
        done=done,
        ana_version=service.get_agent("ana").version,
        cy_version=service.get_agent("cy").version,
        policy_version=policy.version,
    )


@pytest.fixture(scope="module")
def world(redis_server: local_redis.LocalRedis) -> Iterator[World]:
    """One seeded server for the whole module: bad requests change nothing, so they share it
    (a test that did change something fails on its own keyspace check)."""
    client = redis.Redis.from_url(redis_server.url, decode_responses=False)
    client.flushall()
    clock = FakeClock()
    store = RedisStore(redis.Redis.from_url(redis_server.url, decode_responses=True), clock=clock)
    running = create_server(Settings(port=0, workers=8, dispatch_tick_s=0.05), store)
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    service = Service(channel, client, clock, running, tenant=TENANT)
    try:
        yield _seed(service)
    finally:
        channel.close()
        running.stop(0)
        client.close()


# --- one bad request and the answer it must get ----------------------------------------------


@dataclass(frozen=True)
class Case:
    """A request wrong in one way, the statuses it may get and the field it must name."""

    rpc: str
    request: Message
    codes: frozenset[grpc.StatusCode]
    field: str
    """Prefix of the INVALID_ARGUMENT message (``call.priority``); empty for other codes."""
    label: str

    def __repr__(self) -> str:
        """Short enough to read in a Hypothesis failure report."""
        text = str(self.request).replace("\n", " ")
        return f"Case({self.rpc} {self.label}: {text[:400]})"


def check(world: World, case: Case) -> None:
    """The request fails with an allowed status naming the field and writes nothing."""
    before, counters = world.snapshot(), _metric_samples()
    with pytest.raises(grpc.RpcError) as err:
        world.send(case.rpc, case.request)
    code, details = err.value.code(), err.value.details() or ""
    assert code in case.codes, f"{case!r} -> {code.name}: {details[:300]}"
    if code == BAD:
        assert details.startswith(case.field), f"{case!r} -> {details[:300]}"
        assert len(details) < 1000, "an error must not echo the bad value in full"
    assert world.snapshot() == before, f"{case!r} changed the keyspace"
    assert _metric_samples() == counters, f"{case!r} moved a metric"


def _copy(message: Message) -> Any:
    out = type(message)()
    out.CopyFrom(message)
    return out


Setter = Callable[[Any, Any], None]


def spoil(
    rpc: str,
    base: Message,
    field: str,
    values: st.SearchStrategy[Any],
    setter: Setter,
    *,
    codes: frozenset[grpc.StatusCode] = frozenset({BAD}),
) -> st.SearchStrategy[Case]:
    """Cases that are ``base`` with ``setter(request, value)`` applied for each value."""

    def make(value: Any) -> Case:
        request = _copy(base)
        setter(request, value)
        return Case(rpc, request, codes, field if BAD in codes else "", field)

    return values.map(make)


def attr(path: str) -> Setter:
    """A setter of the (dotted) scalar field ``path``."""
    *parents, name = path.split(".")

    def set_it(request: Any, value: Any) -> None:
        target = request
        for parent in parents:
            target = getattr(target, parent)
        setattr(target, name, value)

    return set_it


def message_attr(path: str) -> Setter:
    """A setter of the (dotted) message field ``path`` (Timestamp, Duration, ...)."""
    *parents, name = path.split(".")

    def set_it(request: Any, value: Message) -> None:
        target = request
        for parent in parents:
            target = getattr(target, parent)
        getattr(target, name).CopyFrom(value)

    return set_it


def cleared(path: str) -> Setter:
    """A setter that ignores its value and clears the message field ``path``."""
    *parents, name = path.split(".")

    def clear(request: Any, _: object) -> None:
        target = request
        for parent in parents:
            target = getattr(target, parent)
        target.ClearField(name)

    return clear


# --- invalid values --------------------------------------------------------------------------

ID_CHARS = string.ascii_letters + string.digits + "._:@-"
TENANT_CHARS = string.ascii_letters + string.digits + "._-"
SKILL_CHARS = string.ascii_letters + string.digits + "_.-"
CONTROL = st.sampled_from(
    [chr(c) for c in range(0x20)] + ["\x7f", "\x80", "\x85", "\x9f", "\u2028", "\u2029"]
)
HUGE = 300_000
"""A string this long fits the 1 MiB message limit, yet must not be echoed back."""


def inserted(base: st.SearchStrategy[str], chars: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """``base`` with one of ``chars`` inserted anywhere."""

    def put(parts: tuple[str, str, int]) -> str:
        text, char, at = parts
        at %= len(text) + 1
        return text[:at] + char + text[at:]

    return st.tuples(base, chars, st.integers(0, 1000)).map(put)


def longer(alphabet: str, limit: int) -> st.SearchStrategy[str]:
    """Strings of ``alphabet`` just over ``limit`` characters, or far over it."""
    return st.one_of(
        st.text(st.sampled_from(alphabet), min_size=limit + 1, max_size=limit + 40),
        st.just(alphabet[-1] * HUGE),
    )


def bad_id(alphabet: str = ID_CHARS, limit: int = 128, *, required: bool = True) -> Any:
    """Ids that are empty (if required), too long, or with a character outside ``alphabet``."""
    options = [
        longer(alphabet, limit),
        inserted(
            st.text(st.sampled_from(alphabet), max_size=12),
            st.characters(codec="utf-8", exclude_characters=alphabet),
        ),
    ]
    if required:
        options.append(st.just(""))
    return st.one_of(options)


BAD_TENANT = bad_id(TENANT_CHARS, 64)


def bad_text(limit: int) -> st.SearchStrategy[str]:
    """Free text too long or holding a control character."""
    return st.one_of(
        longer(string.ascii_letters + " é漢", limit),
        inserted(st.text(st.characters(codec="utf-8"), max_size=limit - 1), CONTROL),
    )


BAD_SKILL = st.one_of(
    st.sampled_from(["", " ", "   ", "\u212a", "bill ing", "bil\tling", "billing\n", "é"]),
    longer(string.ascii_lowercase, 64),
    inserted(
        st.text(st.sampled_from(SKILL_CHARS), max_size=10),
        st.characters(codec="utf-8", exclude_characters=SKILL_CHARS + " "),
    ),
)
BAD_LANGUAGE = st.one_of(  # never empty: an empty call language means "any"
    st.sampled_from(
        ["e", "english!", "en_US", "12", "en--us", "en-", "-en", "en-abcdefghi", "engl", " ", "\t"]
    ),
    longer(string.ascii_lowercase, 35),
    inserted(
        st.sampled_from(["en", "pt-br", "zh-hant"]),
        st.characters(
            codec="utf-8", exclude_characters=string.ascii_letters + string.digits + "- "
        ),
    ),
)
BAD_TIMEZONE = st.one_of(
    st.sampled_from(
        ["Mars/Olympus", "europe/lisbon", "Europe/Lisbon ", "../../etc/passwd", "localtime"]
    ),
    st.text(min_size=1, max_size=40).filter(lambda s: s not in ZONES),
    longer(string.ascii_letters + "/_", 64),
)


def outside(low: int, high: int, bits: int = 32) -> st.SearchStrategy[int]:
    """Integers of the field's width outside ``low..high``."""
    lo, hi = (INT32 if bits == 32 else INT64)[0], (INT32 if bits == 32 else INT64)[1]
    options = []
    if low > lo:
        options.append(st.integers(lo, low - 1))
    if high < hi:
        options.append(st.integers(high + 1, hi))
    return st.one_of(options)


def bad_enum(highest: int) -> st.SearchStrategy[int]:
    """UNSPECIFIED (0) or a number the enum does not define."""
    return st.one_of(st.just(0), outside(1, highest))


BAD_CHANNEL = bad_enum(5).map(lambda c: cast("pb.Channel.ValueType", c))


def bad_float(ok: Callable[[float], bool]) -> st.SearchStrategy[float]:
    """Doubles (NaN and infinities included) for which ``ok`` is false."""
    special = st.sampled_from([math.nan, math.inf, -math.inf, -1e-300, 1e300])
    return st.one_of(special, st.floats()).filter(lambda x: not ok(x))


def bad_timestamp() -> st.SearchStrategy[Timestamp]:
    """Before 1970, after 9999, or nanos outside 0..999,999,999."""
    return st.one_of(
        outside(0, MAX_TIME_S, 64).map(lambda s: Timestamp(seconds=s)),
        outside(0, 999_999_999).map(lambda n: Timestamp(seconds=1_800_000_000, nanos=n)),
    )


def bad_duration(low_s: int, high_s: int) -> st.SearchStrategy[Duration]:
    """Durations outside ``low_s..high_s`` seconds, or not valid Durations at all."""
    return st.one_of(
        outside(low_s, high_s, 64).map(lambda s: Duration(seconds=s)),
        st.tuples(st.integers(1, 86400), st.integers(-999_999_999, -1)).map(
            lambda p: Duration(seconds=p[0], nanos=p[1])
        ),
        outside(-999_999_999, 999_999_999).map(lambda n: Duration(seconds=0, nanos=n)),
    )


def positive_except(value: int) -> st.SearchStrategy[int]:
    """A positive int64 other than ``value`` (a wrong token or a stale version)."""
    return st.integers(1, INT64[1]).filter(lambda v: v != value)


def skill_map(size: st.SearchStrategy[int]) -> st.SearchStrategy[dict[str, int]]:
    """That many distinct valid skills."""
    return size.map(lambda n: {f"s{i}": 5 for i in range(n)})


UNKNOWN_ID = st.text(st.sampled_from(ID_CHARS), min_size=1, max_size=40).map(lambda s: f"zz{s}")
"""Valid ids nobody uses (every seeded id starts otherwise)."""

# --- RoutingService --------------------------------------------------------------------------


def assign_cases(w: World) -> st.SearchStrategy[Case]:
    base = routing_pb2.AssignRequest(
        tenant=TENANT,
        request_id="hostile-req",
        call=pb.Call(
            call_id="hostile-call",
            channel=pb.CHANNEL_VOICE,
            required_skills=[pb.SkillRequirement(skill="billing", min_level=3)],
            preferred_skills=["sales"],
            language="en",
            region="eu",
            timezone="Europe/Lisbon",
            priority=2,
            preferred_agent_id="ana",
            attributes={"crm": "42"},
            expected_handle_time=Duration(seconds=300),
        ),
    )

    def a(field: str, values: st.SearchStrategy[Any], setter: Setter, **kw: Any) -> Any:
        return spoil("Assign", base, field, values, setter, **kw)

    def skills(request: Any, value: list[pb.SkillRequirement]) -> None:
        request.call.ClearField("required_skills")
        request.call.required_skills.extend(value)

    def skill_list(request: Any, value: list[str]) -> None:
        request.call.preferred_skills[:] = value

    def attributes(request: Any, value: dict[str, str]) -> None:
        request.call.attributes.clear()
        request.call.attributes.update(value)

    def region_required_alone(request: Any, _: object) -> None:
        request.call.region = ""
        request.call.region_required = True

    req = pb.SkillRequirement
    return st.one_of(
        a("tenant", BAD_TENANT, attr("tenant")),
        a("request_id", bad_id(), attr("request_id")),
        a("call", st.none(), cleared("call")),
        a("call.call_id", bad_id(), attr("call.call_id")),
        a("call.channel", bad_enum(5), attr("call.channel")),
        a(
            "call.required_skills",
            st.integers(21, 60).map(lambda n: [req(skill=f"s{i}") for i in range(n)]),
            skills,
        ),
        a("call.required_skills[0].skill", BAD_SKILL.map(lambda s: [req(skill=s)]), skills),
        a(
            "call.required_skills[1].skill",
            st.sampled_from(["billing", "BILLING", " Billing "]).map(
                lambda s: [req(skill="billing"), req(skill=s)]
            ),
            skills,
        ),
        a(
            "call.required_skills[0].min_level",
            st.one_of(outside(0, 10)).map(lambda n: [req(skill="billing", min_level=n)]),
            skills,
        ),
        a(
            "call.preferred_skills",
            st.integers(21, 60).map(lambda n: [f"s{i}" for i in range(n)]),
            skill_list,
        ),
        a("call.preferred_skills[0]", BAD_SKILL.map(lambda s: [s]), skill_list),
        a("call.language", BAD_LANGUAGE, attr("call.language")),
        a("call.region", bad_text(64), attr("call.region")),
        a("call.region", st.none(), region_required_alone),
        a("call.timezone", BAD_TIMEZONE, attr("call.timezone")),
        a("call.priority", outside(0, 10), attr("call.priority")),
        a("call.preferred_agent_id", bad_id(required=False), attr("call.preferred_agent_id")),
        a(
            "call.attributes",
            st.integers(33, 80).map(lambda n: {f"k{i}": "v" for i in range(n)}),
            attributes,
        ),
        a(
            "call.attributes",
            st.one_of(st.just(""), bad_text(64)).map(lambda k: {k: "v"}),
            attributes,
        ),
        a("call.attributes[crm]", bad_text(512).map(lambda v: {"crm": v}), attributes),
        a("call.team", bad_text(64), attr("call.team")),
        a(
            "call.expected_handle_time",
            bad_duration(0, WEEK_S),
            message_attr("call.expected_handle_time"),
        ),
        # The request id of c-assigned with another call: refused, not replayed.
        a("request_id", st.just("req-c-assigned"), attr("request_id")),
        # A call already routed under another request id.
        a(
            "",
            st.sampled_from(["c-assigned", "c-offered", "c-queued", "c-done"]),
            attr("call.call_id"),
            codes=frozenset({STATE}),
        ),
    )


def _token_cases(
    rpc: str, base: Message, w: World, *, right: pb.Assignment, wrong_state: list[pb.Assignment]
) -> list[st.SearchStrategy[Case]]:
    """Tenant, id and token mistakes shared by Accept, Reject, Complete and Release."""

    def pointed_at(assignment: pb.Assignment) -> Setter:
        def set_it(request: Any, token: int) -> None:
            request.assignment_id = assignment.assignment_id
            request.fencing_token = token

        return set_it

    cases = [
        spoil(rpc, base, "tenant", BAD_TENANT, attr("tenant")),
        spoil(rpc, base, "assignment_id", bad_id(), attr("assignment_id")),
        spoil(rpc, base, "fencing_token", st.integers(INT64[0], 0), attr("fencing_token")),
        spoil(rpc, base, "", UNKNOWN_ID, attr("assignment_id"), codes=frozenset({MISSING})),
        spoil(
            rpc,
            base,
            "",
            positive_except(right.fencing_token),
            pointed_at(right),
            codes=frozenset({STATE}),
        ),
    ]
    for other in wrong_state:  # an assignment in the wrong state, with its own token
        cases.append(
            spoil(
                rpc,
                base,
                "",
                st.just(other.fencing_token),
                pointed_at(other),
                codes=frozenset({STATE}),
            )
        )
    return cases


def accept_cases(w: World) -> st.SearchStrategy[Case]:
    base = routing_pb2.AcceptRequest(
        tenant=TENANT,
        assignment_id=w.offered.assignment_id,
        fencing_token=w.offered.fencing_token,
    )
    return st.one_of(_token_cases("Accept", base, w, right=w.offered, wrong_state=[w.done]))


def reject_cases(w: World) -> st.SearchStrategy[Case]:
    base = routing_pb2.RejectRequest(
        tenant=TENANT,
        assignment_id=w.offered.assignment_id,
        fencing_token=w.offered.fencing_token,
        reason="busy",
    )
    return st.one_of(
        spoil("Reject", base, "reason", bad_text(200), attr("reason")),
        *_token_cases("Reject", base, w, right=w.offered, wrong_state=[w.done, w.active]),
    )


def complete_cases(w: World) -> st.SearchStrategy[Case]:
    base = routing_pb2.CompleteRequest(
        tenant=TENANT,
        assignment_id=w.active.assignment_id,
        fencing_token=w.active.fencing_token,
        outcome=pb.Outcome(handle_time=Duration(seconds=300), csat=4, resolved=True),
    )
    return st.one_of(
        spoil("Complete", base, "outcome.csat", outside(0, 5), attr("outcome.csat")),
        spoil(
            "Complete",
            base,
            "outcome.handle_time",
            bad_duration(0, WEEK_S),
            message_attr("outcome.handle_time"),
        ),
        *_token_cases("Complete", base, w, right=w.active, wrong_state=[w.offered]),
    )


def release_cases(w: World) -> st.SearchStrategy[Case]:
    base = routing_pb2.ReleaseRequest(
        tenant=TENANT,
        assignment_id=w.active.assignment_id,
        fencing_token=w.active.fencing_token,
        reason="needs a supervisor",
    )
    return st.one_of(
        spoil("Release", base, "reason", bad_text(200), attr("reason")),
        *_token_cases("Release", base, w, right=w.active, wrong_state=[w.done]),
    )


def _call_id_cases(rpc: str, base: Message, finished: list[str]) -> list[st.SearchStrategy[Case]]:
    cases = [
        spoil(rpc, base, "tenant", BAD_TENANT, attr("tenant")),
        spoil(rpc, base, "call_id", bad_id(), attr("call_id")),
        spoil(rpc, base, "", UNKNOWN_ID, attr("call_id"), codes=frozenset({MISSING})),
    ]
    if finished:
        cases.append(
            spoil(
                rpc, base, "", st.sampled_from(finished), attr("call_id"), codes=frozenset({STATE})
            )
        )
    return cases


def cancel_cases(w: World) -> st.SearchStrategy[Case]:
    base = routing_pb2.CancelRequest(tenant=TENANT, call_id="c-queued", reason="hung up")
    return st.one_of(
        spoil("Cancel", base, "reason", bad_text(200), attr("reason")),
        *_call_id_cases("Cancel", base, ["c-done"]),
    )


def callback_cases(w: World) -> st.SearchStrategy[Case]:
    base = routing_pb2.RequestCallbackRequest(tenant=TENANT, call_id="c-queued")
    not_waiting = ["c-assigned", "c-offered", "c-done"]
    return st.one_of(_call_id_cases("RequestCallback", base, not_waiting))


def get_call_cases(w: World) -> st.SearchStrategy[Case]:
    base = routing_pb2.GetCallRequest(tenant=TENANT, call_id="c-queued")
    return st.one_of(_call_id_cases("GetCall", base, []))


def get_stats_cases(w: World) -> st.SearchStrategy[Case]:
    base = routing_pb2.GetStatsRequest(tenant=TENANT)
    return spoil("GetStats", base, "tenant", BAD_TENANT, attr("tenant"))


def watch_cases(w: World) -> st.SearchStrategy[Case]:
    base = routing_pb2.WatchRequest(tenant=TENANT, after_event_id="0", types=["ASSIGNED"])

    def types(request: Any, value: list[str]) -> None:
        request.types[:] = value

    bad_cursor = st.one_of(
        st.sampled_from(
            [
                "18446744073709551616-0",
                "0-18446744073709551616",
                "99999999999999999999-99999999999999999999",
                "123",
                "$",
                "-",
                "+",
                "1-2-3",
                "0-0\n",
                "\uff11\uff12\uff13-0",  # full-width digits: \d takes them, Redis does not
            ]
        ),
        st.text(min_size=1, max_size=50).filter(lambda s: s != "0"),
    ).filter(lambda s: not (s.isascii() and _is_stream_id(s)))
    return st.one_of(
        spoil("Watch", base, "tenant", BAD_TENANT, attr("tenant")),
        spoil("Watch", base, "after_event_id", bad_cursor, attr("after_event_id")),
        spoil("Watch", base, "call_id", bad_id(required=False), attr("call_id")),
        spoil("Watch", base, "agent_id", bad_id(required=False), attr("agent_id")),
        spoil("Watch", base, "types", st.integers(33, 200).map(lambda n: ["ASSIGNED"] * n), types),
        spoil(
            "Watch",
            base,
            "types[0]",
            st.one_of(
                st.sampled_from(
                    ["", "assigned", "ASSIGNED ", "1ASSIGNED", "A" * 65, "NOT_A_TYPE", "ASSIGN"]
                ),
                bad_text(64),
            ).map(lambda t: [t]),
            types,
        ),
    )


def _is_stream_id(value: str) -> bool:
    ms, sep, seq = value.partition("-")
    return bool(sep) and all(
        part.isdigit() and len(part) <= 20 and int(part) < 2**64 for part in (ms, seq)
    )


# --- AgentAdminService -----------------------------------------------------------------------


def _valid_agent(agent_id: str, w: World) -> pb.Agent:
    return pb.Agent(
        agent_id=agent_id,
        name="New Agent",
        team="red",
        skills={"billing": 5, "sales": 3},
        languages=["en", "pt-br"],
        region="eu-west",
        timezone="Europe/Lisbon",
        capacity=[pb.ChannelCapacity(channel=pb.CHANNEL_CHAT, max_items=2)],
        max_occupancy=0.8,
        shift_end=Timestamp(seconds=w.now_s + 8 * 3600),
    )


def _agent_field_cases(rpc: str, base: Message) -> list[st.SearchStrategy[Case]]:
    """Every editable agent field made wrong; ``base.agent`` is otherwise valid."""

    def s(field: str, values: st.SearchStrategy[Any], setter: Setter) -> Any:
        return spoil(rpc, base, field, values, setter)

    def skills(request: Any, value: Mapping[str, int]) -> None:
        request.agent.skills.clear()
        request.agent.skills.update(value)

    def languages(request: Any, value: list[str]) -> None:
        request.agent.languages[:] = value

    def capacity(request: Any, value: list[pb.ChannelCapacity]) -> None:
        request.agent.ClearField("capacity")
        request.agent.capacity.extend(value)

    cap = pb.ChannelCapacity
    return [
        s("agent", st.none(), cleared("agent")),
        s("agent.name", bad_text(200), attr("agent.name")),
        s("agent.team", bad_text(64), attr("agent.team")),
        s("agent.skills", BAD_SKILL.map(lambda k: {"billing": 5, k: 3}), skills),
        s("agent.skills", outside(1, 10).map(lambda v: {"billing": v}), skills),
        s("agent.skills", skill_map(st.integers(51, 120)), skills),
        s("agent.skills", st.just({"billing": 5, "Billing": 3}), skills),
        s(
            "agent.languages",
            st.one_of(st.just(""), BAD_LANGUAGE).map(lambda t: ["en", t]),
            languages,
        ),
        s(
            "agent.languages",
            st.integers(21, 60).map(lambda n: ["en"] * n),
            languages,
        ),
        s("agent.region", bad_text(64), attr("agent.region")),
        s("agent.timezone", BAD_TIMEZONE, attr("agent.timezone")),
        s("agent.capacity", BAD_CHANNEL.map(lambda c: [cap(channel=c, max_items=1)]), capacity),
        s(
            "agent.capacity",
            outside(0, 50).map(lambda n: [cap(channel=pb.CHANNEL_CHAT, max_items=n)]),
            capacity,
        ),
        s(
            "agent.capacity",
            st.integers(2, 500).map(lambda n: [cap(channel=pb.CHANNEL_CHAT, max_items=1)] * n),
            capacity,
        ),
        s("agent.max_occupancy", bad_float(lambda x: 0 < x <= 1), attr("agent.max_occupancy")),
        s("agent.shift_end", bad_timestamp(), message_attr("agent.shift_end")),
    ]


def create_agent_cases(w: World) -> st.SearchStrategy[Case]:
    base = admin_pb2.CreateAgentRequest(tenant=TENANT, agent=_valid_agent("hostile-new", w))
    return st.one_of(
        spoil("CreateAgent", base, "tenant", BAD_TENANT, attr("tenant")),
        spoil("CreateAgent", base, "agent.agent_id", bad_id(), attr("agent.agent_id")),
        spoil(
            "CreateAgent",
            base,
            "",
            st.sampled_from(["ana", "bob", "cy"]),
            attr("agent.agent_id"),
            codes=frozenset({TAKEN}),
        ),
        *_agent_field_cases("CreateAgent", base),
    )


def update_agent_cases(w: World) -> st.SearchStrategy[Case]:
    agent = _valid_agent("ana", w)
    agent.version = w.ana_version
    base = admin_pb2.UpdateAgentRequest(tenant=TENANT, agent=agent)

    def mask(request: Any, paths: list[str]) -> None:
        request.update_mask.paths[:] = paths

    editable = st.sampled_from(AGENT_PATHS)
    not_editable = st.one_of(
        st.sampled_from(["agent_id", "version", "absences", "status", "", "skills.billing"]),
        st.text(max_size=30).filter(lambda p: p not in AGENT_PATHS),
        st.just("x" * HUGE),
    )
    return st.one_of(
        spoil("UpdateAgent", base, "tenant", BAD_TENANT, attr("tenant")),
        spoil("UpdateAgent", base, "agent.agent_id", bad_id(), attr("agent.agent_id")),
        spoil(
            "UpdateAgent", base, "", UNKNOWN_ID, attr("agent.agent_id"), codes=frozenset({MISSING})
        ),
        spoil("UpdateAgent", base, "update_mask", not_editable.map(lambda p: ["name", p]), mask),
        spoil("UpdateAgent", base, "update_mask", editable.map(lambda p: [p, p]), mask),
        spoil(
            "UpdateAgent", base, "agent.version", st.integers(INT64[0], -1), attr("agent.version")
        ),
        spoil(
            "UpdateAgent",
            base,
            "",
            positive_except(w.ana_version),
            attr("agent.version"),
            codes=frozenset({STALE}),
        ),
        *_agent_field_cases("UpdateAgent", base),
    )


def patch_skills_cases(w: World) -> st.SearchStrategy[Case]:
    base = admin_pb2.PatchSkillsRequest(
        tenant=TENANT,
        agent_id="ana",
        set=[admin_pb2.SkillLevel(skill="sales", level=4)],
        remove=["tech"],
        expected_version=w.ana_version,
    )
    level = admin_pb2.SkillLevel

    def set_(request: Any, value: list[admin_pb2.SkillLevel]) -> None:
        request.ClearField("set")
        request.set.extend(value)

    def remove(request: Any, value: list[str]) -> None:
        request.remove[:] = value

    def p(field: str, values: st.SearchStrategy[Any], setter: Setter, **kw: Any) -> Any:
        return spoil("PatchSkills", base, field, values, setter, **kw)

    return st.one_of(
        p("tenant", BAD_TENANT, attr("tenant")),
        p("agent_id", bad_id(), attr("agent_id")),
        p("", UNKNOWN_ID, attr("agent_id"), codes=frozenset({MISSING})),
        p("set", BAD_SKILL.map(lambda s: [level(skill=s, level=3)]), set_),
        p("set", outside(1, 10).map(lambda n: [level(skill="sales", level=n)]), set_),
        p(
            "set",
            st.sampled_from(["sales", "SALES", " Sales"]).map(
                lambda s: [level(skill="sales", level=3), level(skill=s, level=4)]
            ),
            set_,
        ),
        p(
            "set",
            st.integers(50, 120).map(lambda n: [level(skill=f"s{i}", level=2) for i in range(n)]),
            set_,
        ),
        p("remove", BAD_SKILL.map(lambda s: [s]), remove),
        p("remove", st.integers(51, 300).map(lambda n: ["tech"] * n), remove),
        p("remove", st.sampled_from(["sales", "SALES"]).map(lambda s: [s]), remove),
        p("expected_version", st.integers(INT64[0], -1), attr("expected_version")),
        p("", positive_except(w.ana_version), attr("expected_version"), codes=frozenset({STALE})),
    )


def _agent_id_cases(rpc: str, base: Message) -> list[st.SearchStrategy[Case]]:
    return [
        spoil(rpc, base, "tenant", BAD_TENANT, attr("tenant")),
        spoil(rpc, base, "agent_id", bad_id(), attr("agent_id")),
        spoil(rpc, base, "", UNKNOWN_ID, attr("agent_id"), codes=frozenset({MISSING})),
    ]


def delete_agent_cases(w: World) -> st.SearchStrategy[Case]:
    busy = admin_pb2.DeleteAgentRequest(
        tenant=TENANT, agent_id="ana", expected_version=w.ana_version
    )
    idle = admin_pb2.DeleteAgentRequest(tenant=TENANT, agent_id="cy")
    return st.one_of(
        spoil("DeleteAgent", busy, "", st.none(), lambda r, _: None, codes=frozenset({STATE})),
        spoil(
            "DeleteAgent",
            busy,
            "expected_version",
            st.integers(INT64[0], -1),
            attr("expected_version"),
        ),
        spoil(
            "DeleteAgent",
            idle,
            "",
            positive_except(w.cy_version),
            attr("expected_version"),
            codes=frozenset({STALE}),
        ),
        *_agent_id_cases("DeleteAgent", idle),
    )


def get_agent_cases(w: World) -> st.SearchStrategy[Case]:
    base = admin_pb2.GetAgentRequest(tenant=TENANT, agent_id="ana")
    return st.one_of(_agent_id_cases("GetAgent", base))


def heartbeat_cases(w: World) -> st.SearchStrategy[Case]:
    base = admin_pb2.HeartbeatRequest(tenant=TENANT, agent_id="ana")
    return st.one_of(_agent_id_cases("Heartbeat", base))


def list_agents_cases(w: World) -> st.SearchStrategy[Case]:
    base = admin_pb2.ListAgentsRequest(tenant=TENANT, page_size=10)
    foreign_token = st.sampled_from(["garbage", "YWdlbnQ6", "====", "\u00e9t\u00e9", "a" * 1025])
    return st.one_of(
        spoil("ListAgents", base, "tenant", BAD_TENANT, attr("tenant")),
        spoil("ListAgents", base, "page_size", outside(0, 1000), attr("page_size")),
        spoil(
            "ListAgents",
            base,
            "page_token",
            st.one_of(foreign_token, bad_text(1024), st.text(min_size=1, max_size=60)),
            attr("page_token"),
        ),
        spoil("ListAgents", base, "presence", outside(0, 6), attr("presence")),
        spoil("ListAgents", base, "skill", BAD_SKILL.filter(lambda s: s != ""), attr("skill")),
        spoil("ListAgents", base, "team", bad_text(64), attr("team")),
        spoil("ListAgents", base, "region", bad_text(64), attr("region")),
    )


def set_presence_cases(w: World) -> st.SearchStrategy[Case]:
    base = admin_pb2.SetPresenceRequest(
        tenant=TENANT, agent_id="ana", presence=pb.PRESENCE_AWAY, reason="1:1 with lead"
    )
    return st.one_of(
        spoil("SetPresence", base, "presence", bad_enum(6), attr("presence")),
        spoil("SetPresence", base, "reason", bad_text(64), attr("reason")),
        *_agent_id_cases("SetPresence", base),
    )


def schedule_absence_cases(w: World) -> st.SearchStrategy[Case]:
    start = w.now_s + 3 * 86400
    base = admin_pb2.ScheduleAbsenceRequest(
        tenant=TENANT,
        agent_id="cy",
        absence=pb.Absence(
            absence_id="abs-2",
            kind=pb.ABSENCE_KIND_TRAINING,
            start_time=Timestamp(seconds=start),
            end_time=Timestamp(seconds=start + 3600),
            note="course",
        ),
        expected_version=w.cy_version,
    )

    def a(field: str, values: st.SearchStrategy[Any], setter: Setter, **kw: Any) -> Any:
        return spoil("ScheduleAbsence", base, field, values, setter, **kw)

    def end_at(request: Any, offset_s: int) -> None:
        request.absence.end_time.seconds = start + offset_s

    return st.one_of(
        *_agent_id_cases("ScheduleAbsence", base),
        a("absence", st.none(), cleared("absence")),
        a("absence.kind", bad_enum(4), attr("absence.kind")),
        a("absence.start_time", st.none(), cleared("absence.start_time")),
        a("absence.end_time", st.none(), cleared("absence.end_time")),
        a("absence.start_time", bad_timestamp(), message_attr("absence.start_time")),
        a("absence.end_time", bad_timestamp(), message_attr("absence.end_time")),
        a("absence.end_time", st.integers(-400 * 86400, 0), end_at),
        a("absence.end_time", st.integers(366 * 86400 + 1, 10**9), end_at),
        a("absence.note", bad_text(200), attr("absence.note")),
        a("absence.absence_id", bad_id(required=False), attr("absence.absence_id")),
        a(  # the id of another absence of the agent
            "absence.absence_id",
            st.just("abs-1"),
            attr("absence.absence_id"),
            codes=frozenset({TAKEN}),
        ),
        a("expected_version", st.integers(INT64[0], -1), attr("expected_version")),
        a("", positive_except(w.cy_version), attr("expected_version"), codes=frozenset({STALE})),
    )


def cancel_absence_cases(w: World) -> st.SearchStrategy[Case]:
    base = admin_pb2.CancelAbsenceRequest(
        tenant=TENANT, agent_id="cy", absence_id="abs-1", expected_version=w.cy_version
    )
    return st.one_of(
        *_agent_id_cases("CancelAbsence", base),
        spoil("CancelAbsence", base, "absence_id", bad_id(), attr("absence_id")),
        spoil(
            "CancelAbsence", base, "", UNKNOWN_ID, attr("absence_id"), codes=frozenset({MISSING})
        ),
        spoil(
            "CancelAbsence",
            base,
            "expected_version",
            st.integers(INT64[0], -1),
            attr("expected_version"),
        ),
        spoil(
            "CancelAbsence",
            base,
            "",
            positive_except(w.cy_version),
            attr("expected_version"),
            codes=frozenset({STALE}),
        ),
    )


# --- PolicyService ---------------------------------------------------------------------------


def get_policy_cases(w: World) -> st.SearchStrategy[Case]:
    base = admin_pb2.GetPolicyRequest(tenant=TENANT)
    return spoil("GetPolicy", base, "tenant", BAD_TENANT, attr("tenant"))


_POLICY_DURATIONS = {
    "occupancy_window": (60, 86400),
    "heartbeat_timeout": (0, 3600),
    "performance_half_life": (3600, 365 * 86400),
    "idle_horizon": (1, 86400),
    "aging_per_priority": (0, 3600),
    "callback_threshold": (0, 86400),
}
_POLICY_INTEGERS = {
    "top_k": (1, 1000),
    "escalation_priority_boost": (0, 10),
    "max_missed_offers": (0, 100),
    "max_queue": (1, 1_000_000),
}
_POLICY_FLOATS: Mapping[str, Callable[[float], bool]] = {
    "max_occupancy": lambda x: 0 < x <= 1,
    "performance_prior": lambda x: 0 <= x <= 1,
    "performance_prior_weight": lambda x: 0 <= x <= 1000,
    "sla_at_risk": lambda x: 0 < x <= 1,
}
_WEIGHTS = ("skill", "performance", "region", "previous_agent", "idle", "load")


def update_policy_cases(w: World) -> st.SearchStrategy[Case]:
    def on(path: str) -> admin_pb2.UpdatePolicyRequest:
        """A request changing ``path``; valid as long as ``path`` is ``strategy``."""
        policy = pb.Policy(version=w.policy_version, strategy=pb.STRATEGY_BALANCED)
        return admin_pb2.UpdatePolicyRequest(
            tenant=TENANT, policy=policy, update_mask=field_mask_pb2.FieldMask(paths=[path])
        )

    def u(path: str, field: str, values: st.SearchStrategy[Any], setter: Setter, **kw: Any) -> Any:
        return spoil("UpdatePolicy", on(path), field, values, setter, **kw)

    def mask(request: Any, paths: list[str]) -> None:
        request.update_mask.paths[:] = paths

    def channels(request: Any, value: list[pb.ChannelSetting]) -> None:
        request.policy.ClearField("channels")
        request.policy.channels.extend(value)

    def widening(request: Any, value: list[pb.WideningStep]) -> None:
        request.policy.ClearField("widening")
        request.policy.widening.extend(value)

    def reclaim(request: Any, value: list[int]) -> None:
        request.policy.reclaim_channels[:] = value

    def weight(request: Any, value: tuple[str, float]) -> None:
        request.policy.weights.CopyFrom(pb.Weights(**dict.fromkeys(_WEIGHTS, 1.0)))
        setattr(request.policy.weights, value[0], value[1])

    chat = pb.ChannelSetting

    def one_channel(**fields: Any) -> list[pb.ChannelSetting]:
        return [chat(channel=pb.CHANNEL_CHAT, default_capacity=2, **fields)]

    def channel_duration(name: str, low: int, high: int) -> Any:
        return bad_duration(low, high).map(lambda d: one_channel(**{name: d}))

    step = pb.WideningStep
    cases: list[st.SearchStrategy[Case]] = [
        u("strategy", "tenant", BAD_TENANT, attr("tenant")),
        u("strategy", "policy", st.none(), cleared("policy")),
        u("strategy", "policy.version", st.integers(INT64[0], -1), attr("policy.version")),
        u(
            "strategy",
            "",
            positive_except(w.policy_version),
            attr("policy.version"),
            codes=frozenset({STALE}),
        ),
        u(
            "strategy",
            "update_mask",
            st.one_of(
                st.sampled_from(["version", "weights.skil", "", "STRATEGY", "channels[0]"]),
                st.text(max_size=30),
                st.just("x" * HUGE),
            ).map(lambda p: ["strategy", p]),
            mask,
        ),
        u("strategy", "policy.strategy", bad_enum(5), attr("policy.strategy")),
        u(
            "weights",
            "policy.weights",
            st.tuples(st.sampled_from(_WEIGHTS), bad_float(lambda x: 0 <= x <= 100)),
            weight,
        ),
        u(
            "escalation_group",
            "policy.escalation_group",
            bad_text(64),
            attr("policy.escalation_group"),
        ),
        u(
            "channels",
            "policy.channels[0].channel",
            BAD_CHANNEL.map(lambda c: [chat(channel=c)]),
            channels,
        ),
        u(
            "channels",
            "policy.channels[1].channel",
            st.integers(2, 300).map(lambda n: one_channel() * n),
            channels,
        ),
        u(
            "channels",
            "policy.channels[0].default_capacity",
            outside(0, 50).map(lambda n: [chat(channel=pb.CHANNEL_CHAT, default_capacity=n)]),
            channels,
        ),
        u(
            "channels",
            "policy.channels[0].units",
            outside(0, 100).map(lambda n: one_channel(units=n)),
            channels,
        ),
        u(
            "channels",
            "policy.channels[0].offer_timeout",
            channel_duration("offer_timeout", 0, 600),
            channels,
        ),
        u("channels", "policy.channels[0].wrap_up", channel_duration("wrap_up", 0, 3600), channels),
        u(
            "channels",
            "policy.channels[0].expected_handle_time",
            channel_duration("expected_handle_time", 1, WEEK_S),
            channels,
        ),
        u(
            "channels",
            "policy.channels[0].sla_target",
            channel_duration("sla_target", 1, WEEK_S),
            channels,
        ),
        u(
            "channels",
            "policy.channels[0].sla_goal",
            bad_float(lambda x: x == 0 or 0 < x <= 1).map(lambda g: one_channel(sla_goal=g)),
            channels,
        ),
        u(
            "widening",
            "policy.widening",
            st.integers(11, 40).map(
                lambda n: [step(after=Duration(seconds=60 * (i + 1))) for i in range(n)]
            ),
            widening,
        ),
        u(
            "widening",
            "policy.widening[0].after",
            bad_duration(1, WEEK_S).map(lambda d: [step(after=d)]),
            widening,
        ),
        u(
            "widening",
            "policy.widening[1].after",
            st.integers(1, 60).map(
                lambda s: [step(after=Duration(seconds=60)), step(after=Duration(seconds=s))]
            ),
            widening,
        ),
        u(
            "widening",
            "policy.widening[0].level_drop",
            outside(0, 9).map(lambda n: [step(after=Duration(seconds=60), level_drop=n)]),
            widening,
        ),
        u(
            "widening",
            "policy.widening[0].teams",
            st.integers(21, 80).map(lambda n: [step(after=Duration(seconds=60), teams=["t"] * n)]),
            widening,
        ),
        u(
            "widening",
            "policy.widening[0].teams[0]",
            bad_text(64).map(lambda t: [step(after=Duration(seconds=60), teams=[t])]),
            widening,
        ),
        u(
            "reclaim_channels",
            "policy.reclaim_channels[1]",
            bad_enum(5).map(lambda c: [1, c]),
            reclaim,
        ),
        u(
            "reclaim_channels",
            "policy.reclaim_channels[1]",
            st.integers(2, 100).map(lambda n: [pb.CHANNEL_EMAIL] * n),
            reclaim,
        ),
    ]
    for path, (low, high) in _POLICY_DURATIONS.items():
        cases.append(
            u(path, f"policy.{path}", bad_duration(low, high), message_attr(f"policy.{path}"))
        )
    for path, (low, high) in _POLICY_INTEGERS.items():
        cases.append(u(path, f"policy.{path}", outside(low, high), attr(f"policy.{path}")))
    for path, ok in _POLICY_FLOATS.items():
        cases.append(u(path, f"policy.{path}", bad_float(ok), attr(f"policy.{path}")))
    return st.one_of(cases)


# --- the tests -------------------------------------------------------------------------------

CASES: Mapping[str, tuple[Callable[[World], st.SearchStrategy[Case]], int]] = {
    # rpc: (cases, examples)
    "Assign": (assign_cases, 500),
    "Accept": (accept_cases, 100),
    "Reject": (reject_cases, 120),
    "Complete": (complete_cases, 150),
    "Release": (release_cases, 120),
    "Cancel": (cancel_cases, 100),
    "RequestCallback": (callback_cases, 80),
    "GetCall": (get_call_cases, 80),
    "GetStats": (get_stats_cases, 60),
    "Watch": (watch_cases, 150),
    "CreateAgent": (create_agent_cases, 350),
    "UpdateAgent": (update_agent_cases, 350),
    "PatchSkills": (patch_skills_cases, 200),
    "DeleteAgent": (delete_agent_cases, 80),
    "GetAgent": (get_agent_cases, 60),
    "ListAgents": (list_agents_cases, 150),
    "SetPresence": (set_presence_cases, 120),
    "Heartbeat": (heartbeat_cases, 60),
    "ScheduleAbsence": (schedule_absence_cases, 250),
    "CancelAbsence": (cancel_absence_cases, 100),
    "GetPolicy": (get_policy_cases, 60),
    "UpdatePolicy": (update_policy_cases, 500),
}
SETTINGS = {
    "deadline": None,
    "derandomize": True,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}


@pytest.mark.parametrize("rpc", list(CASES))
def test_bad_requests_get_a_clear_status_and_change_nothing(world: World, rpc: str) -> None:
    """Generated bad requests for ``rpc``: the promised status naming the field, no write."""
    build, examples = CASES[rpc]

    ran: list[Case] = []

    @settings(max_examples=examples, **SETTINGS)  # type: ignore[arg-type]  # a valid settings dict
    @given(case=build(world))
    def run(case: Case) -> None:
        assert case.rpc == rpc
        check(world, case)
        ran.append(case)

    run()
    assert len(ran) >= examples  # Hypothesis ran them all (none filtered away)


METHODS = [
    f"/router.v1.{service}/{method.name}"
    for file, service in (
        (routing_pb2, "RoutingService"),
        (admin_pb2, "AgentAdminService"),
        (admin_pb2, "PolicyService"),
    )
    for method in file.DESCRIPTOR.services_by_name[service].methods
]
READ_ONLY = {"GetCall", "GetStats", "GetAgent", "ListAgents", "GetPolicy", "Watch"}


def test_every_rpc_is_covered() -> None:
    """The generated cases reach every RPC of every service."""
    assert {m.rsplit("/", 1)[1] for m in METHODS} == set(CASES)


def _send_bytes(world: World, method: str, body: bytes) -> tuple[grpc.StatusCode, str]:
    """Send ``body`` as the raw request of ``method``; the status and its message."""
    channel = world.service.channel
    identity: Callable[[bytes], bytes] = lambda b: b  # noqa: E731
    try:
        if method.endswith("/Watch"):
            stream = channel.unary_stream(
                method, request_serializer=identity, response_deserializer=identity
            )
            next(iter(stream(body, timeout=2)))
        else:
            unary = channel.unary_unary(
                method, request_serializer=identity, response_deserializer=identity
            )
            unary(body, timeout=10)
    except grpc.RpcError as err:
        return err.code(), err.details() or ""
    return grpc.StatusCode.OK, ""


def test_garbage_bytes_never_crash_or_write(world: World) -> None:
    """Random bytes as the body of every RPC: INVALID_ARGUMENT "request: cannot be decoded
    as ..." when they do not parse, else the servicer's own answer; never a write."""
    ran: list[str] = []

    @settings(max_examples=400, **SETTINGS)  # type: ignore[arg-type]  # a valid settings dict
    @given(method=st.sampled_from(METHODS), body=st.binary(max_size=200))
    def run(method: str, body: bytes) -> None:
        before, counters = world.snapshot(), _metric_samples()
        code, details = _send_bytes(world, method, body)
        name = method.rsplit("/", 1)[1]
        allowed = {BAD, MISSING}
        if name in READ_ONLY:
            allowed.add(grpc.StatusCode.OK)
        if name == "Watch":
            allowed.add(grpc.StatusCode.DEADLINE_EXCEEDED)  # parsed into a valid Watch
        assert code in allowed, f"{name} {body!r} -> {code.name}: {details[:300]}"
        assert world.snapshot() == before, f"{name} {body!r} changed the keyspace"
        assert _metric_samples() == counters, f"{name} {body!r} moved a metric"
        undecodable = details.startswith(UNDECODABLE)
        if undecodable:
            assert code == BAD, f"{name} {body!r} -> {code.name}: {details}"
        ran.append("undecodable" if undecodable else code.name)

    run()
    assert len(ran) >= 400
    assert {"undecodable", "INVALID_ARGUMENT"} <= set(ran)  # both garbage and parsed garbage


@pytest.mark.parametrize(
    ("rpc", "request_"),
    [
        (
            "Assign",
            routing_pb2.AssignRequest(
                tenant=TENANT,
                request_id="big",
                call=pb.Call(call_id="big", channel=pb.CHANNEL_VOICE, region="x" * (1 << 20)),
            ),
        ),
        (
            "CreateAgent",
            admin_pb2.CreateAgentRequest(
                tenant=TENANT,
                agent=pb.Agent(agent_id="big", skills={f"s{i}": 1 for i in range(120_000)}),
            ),
        ),
        (
            "UpdatePolicy",
            admin_pb2.UpdatePolicyRequest(
                tenant=TENANT, policy=pb.Policy(escalation_group="g" * (2 << 20))
            ),
        ),
    ],
    ids=["Assign", "CreateAgent", "UpdatePolicy"],
)
def test_messages_over_one_mebibyte_are_refused(world: World, rpc: str, request_: Message) -> None:
    """Over 1 MiB: RESOURCE_EXHAUSTED from grpc before any code runs; nothing written."""
    assert request_.ByteSize() > 1 << 20
    check(world, Case(rpc, request_, frozenset({TOO_BIG}), "", "over 1 MiB"))
