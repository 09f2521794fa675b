"""Live replay against a real gRPC server (in-memory store and a real redis-server)."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any, cast

import grpc
import pytest
import redis
from google.protobuf import timestamp_pb2

from router import local_redis
from router.domain import AbsenceKind, Channel, Policy, frozen_map
from router.memory_store import MemoryStore
from router.policies import policy_to_pb
from router.redis_store import RedisStore
from router.server import RunningServer, create_server
from router.settings import Settings
from router.store import Store
from router.v1 import admin_pb2, admin_pb2_grpc, routing_pb2, routing_pb2_grpc
from router.v1 import types_pb2 as pb
from simulations import console
from simulations import replay as replay_module
from simulations.kpis import QueueLevels
from simulations.model import DAY_S, AbsenceSpec, AgentSpec
from simulations.replay import ObservedCall, Replayer, ReplayRun, _Live, _Scheduler
from simulations.replay_plan import (
    ReplayAgent,
    ReplayError,
    ReplayOptions,
    agents_from_scenario,
    check_target,
    compress_policy,
    presence_schedule,
    service_absences,
)
from simulations.replay_report import observed_results, replay_kpis, summarize_replay
from simulations.scenario import Scenario, parse_scenario
from simulations.simulator import AgentResult, CallResult, simulate
from simulations.trace import TraceCall, generate_trace
from simulations.workforce import shift_windows

SPEED = 400.0


TINY: dict[str, object] = {
    "name": "tiny",
    "duration_s": 1500,
    "drain_s": 600,
    "policy": {"strategy": "balanced", "max_occupancy": 0.9},
    "sla": {"voice": 20, "chat": 60},
    "agents": [
        {
            "id_prefix": "agent",
            "count": 4,
            "languages": ["en"],
            "skills": {"billing": 6},
            "channels": {"voice": 1, "chat": 2},
            "quality": [0.6, 0.8],
        },
        {
            "id": "star",
            "languages": ["en"],
            "skills": {"billing": 9, "tech": 8},
            "channels": {"voice": 1, "chat": 2},
            "quality": 0.95,
            "top_performer": True,
            "breaks": [{"start": "00:10", "duration_s": 300}],
        },
    ],
    "arrivals": [
        {
            "channel": "voice",
            "rate_per_hour": 95,
            "skills": {"billing": 3},
            "language": "en",
            "handle": 150,
            "patience": 90,
        },
        {
            "channel": "chat",
            "rate_per_hour": 45,
            "skills": {"billing": 2},
            "language": "en",
            "handle": 240,
            "patience": 150,
        },
    ],
}
"""About 50 calls in 25 minutes on five agents, one of them on a break for five: enough
load that calls queue, the dispatcher answers some from the queue, and some callers hang
up."""


def _scenario() -> Scenario:
    return parse_scenario(TINY, name="tiny")


def _calls(scenario: Scenario) -> list[TraceCall]:
    return generate_trace(scenario, seed=3)[:50]


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A private redis-server for this module."""
    try:
        server = local_redis.start()
    except local_redis.LocalRedisError as exc:
        pytest.fail(f"replay tests need redis-server: {exc}", pytrace=False)
    yield server.url
    server.stop()


@pytest.fixture(params=["memory", "redis"])
def service(request: pytest.FixtureRequest) -> Iterator[tuple[RunningServer, str]]:
    """A real router on a free loopback port, over each store."""
    store: Store
    if request.param == "memory":
        store = MemoryStore()
    else:
        url: str = request.getfixturevalue("redis_url")
        client = redis.Redis.from_url(url, decode_responses=True)
        client.flushall()
        store = RedisStore(client)
    running = create_server(Settings(port=0, dispatch_tick_s=0.05), store)
    yield running, f"127.0.0.1:{running.port}"
    running.stop(0)


def _replay(
    target: str, scenario: Scenario, *, admin_channel: grpc.Channel | None = None
) -> ReplayRun:
    calls = _calls(scenario)
    options = ReplayOptions(target=target, speed=SPEED, max_seconds=20, drain_s=10, workers=8)
    agents = agents_from_scenario(scenario, calls[0].arrival_s, scenario.horizon_s)
    with grpc.insecure_channel(target) as channel:
        replayer = Replayer(
            channel, agents, calls, options, policy=scenario.policy, admin_channel=admin_channel
        )
        return replayer.run()


@pytest.mark.timeout(60)
def test_replay_assigns_or_abandons_every_call_exactly_once(
    service: tuple[RunningServer, str],
) -> None:
    """50 calls at x400 against a live server: no RPC fails, and every call ends answered
    (one assignment, completed) or abandoned (none) - in the client's view and in the
    service's own timeline of the call."""
    _, target = service
    run = _replay(target, _scenario())
    assert run.rpc["errors"] == 0, run.rpc["errors_by_method"]
    assert len(run.calls) == 50
    assert any(c.queued for c in run.calls)
    outcomes = {r.call.call_id: r.outcome for r in run.calls}
    assert set(outcomes.values()) <= {"completed", "abandoned", "cancelled"}, outcomes
    assert any(r.outcome == "completed" for r in run.calls)
    with grpc.insecure_channel(target) as channel:
        routing = routing_pb2_grpc.RoutingServiceStub(channel)
        for result in run.calls:
            info = routing.GetCall(
                routing_pb2.GetCallRequest(tenant=run.tenant, call_id=result.wire_id)
            ).call
            kinds = [e.type for e in info.timeline]
            assigned = kinds.count("ASSIGNED")
            abandoned = kinds.count("ABANDONED")
            assert assigned + abandoned == 1, (result.call.call_id, kinds)
            if result.outcome == "abandoned":
                assert info.status == pb.CALL_STATUS_ABANDONED
                assert result.assignments == 0
                assert not result.answered
                assert result.wait_s == result.call.patience_s  # not the Cancel's round trip
            else:
                assert result.answered
                assert result.assignments == 1
                expected = pb.CALL_STATUS_COMPLETED
                if result.outcome == "cancelled":
                    expected = pb.CALL_STATUS_CANCELLED
                assert info.status == expected, (result.call.call_id, kinds)
    assert {r.outcome for r in run.calls} >= {"completed", "abandoned"}


@pytest.mark.timeout(60)
def test_replay_accepts_offers_and_reports_latency(service: tuple[RunningServer, str]) -> None:
    """With offers on voice, every answered voice call went through Accept; replay.json
    carries latency percentiles per RPC (no NaN) and the KPIs of the real decisions in the
    simulator's own kpis.json shape."""
    _, target = service
    # Scenario files ignore offers (the simulator accepts at once); the live service uses them.
    base = _scenario()
    scenario = base.with_policy(
        dataclasses.replace(base.policy, offer_timeout_s=frozen_map({Channel.VOICE: 30}))
    )
    run = _replay(target, scenario)
    assert run.rpc["errors"] == 0, run.rpc["errors_by_method"]
    used = frozenset(c.channel for c in _calls(scenario))
    assert run.sent_policy == compress_policy(scenario.policy, SPEED, used)[0]
    answered_voice = [r for r in run.calls if r.answered and r.call.channel == Channel.VOICE]
    assert answered_voice
    assert run.rpc["requests_by_method"]["Accept"] >= len(answered_voice)
    kpis, records = replay_kpis(run, scenario)
    summary = summarize_replay(run, kpis)
    text = json.dumps(summary, allow_nan=False)
    assert '"Assign"' in text
    assign = summary["requests"]["latency_ms"]["Assign"]
    assert assign["n"] >= 50
    assert 0 < assign["p50"] <= assign["p90"] <= assign["p99"] <= assign["max"]
    assert len(records) == 50
    assert kpis["overall"]["offered"] == 50
    assert kpis["overall"]["answered"] == summary["calls"]["answered"]
    assert kpis["overall"]["abandoned"] == summary["calls"]["abandoned"]
    assert set(kpis["agents"]) == {a.agent_id for a in scenario.agents}
    assert 0 < kpis["fairness"]["occupancy_mean"] <= 1
    assert kpis["agents"]["star"]["top_performer"] is True


def test_a_router_whose_admin_services_listen_apart_is_replayed_with_both_targets() -> None:
    """Against a router whose admin services listen apart (``ROUTER_ADMIN_PORT``), the
    replay stops at its policy with the service's answer and what to do about it; given
    the admin listener too (``--admin-target``), it replays."""
    settings = Settings(port=0, admin_port=local_redis.free_port(), dispatch_tick_s=0.05)
    running = create_server(settings, MemoryStore())
    try:
        target = f"127.0.0.1:{running.port}"
        with pytest.raises(ReplayError, match=r"UNIMPLEMENTED: .*--admin-target"):
            _replay(target, _scenario())
        with grpc.insecure_channel(f"127.0.0.1:{running.admin_port}") as admin:
            run = _replay(target, _scenario(), admin_channel=admin)
        assert run.rpc["errors"] == 0, run.rpc["errors_by_method"]
        assert any(result.answered for result in run.calls)
    finally:
        running.stop(0)


def test_loopback_guard() -> None:
    """Loopback targets pass; anything else needs allow_remote."""
    for ok in ("127.0.0.1:50051", "localhost:1", "[::1]:9000", "127.3.4.5:80"):
        check_target(ok, allow_remote=False)
    for bad in ("10.0.0.8:50051", "router.prod.example:443", "0.0.0.0:50051"):
        with pytest.raises(ReplayError, match="allow-remote"):
            check_target(bad, allow_remote=False)
        check_target(bad, allow_remote=True)
    for bad in ("127.0.0.1", "localhost:²", "localhost:٣٠"):  # digits, not ASCII ones
        with pytest.raises(ReplayError, match="HOST:PORT"):
            check_target(bad, allow_remote=False)


def test_compress_policy_divides_durations_and_notes_clamps() -> None:
    """Durations shrink by the speed; what the API cannot express is clamped and named."""
    policy, notes = compress_policy(Policy(), 60)
    assert policy.occupancy_window_s == 60
    assert policy.expected_handle_s[Channel.VOICE] == 5
    assert policy.sla[Channel.CHAT].target_s == 1
    assert policy.sla[Channel.VOICE].target_s == 1
    assert any(n.startswith("voice.sla_target") for n in notes)
    assert policy.heartbeat_timeout_s == Policy().heartbeat_timeout_s


def test_compress_policy_scales_the_queue_time_limit_and_keeps_it_one() -> None:
    """A queue time limit shrinks by the speed like the other durations, but stays a limit:
    one that would round to 0 s (none, for the service) is clamped to 1 s and noted, and 0
    stays 0. The policy the replay sends carries it in ``ChannelSetting.max_wait``."""
    limits = {Channel.VOICE: 120, Channel.CHAT: 0, Channel.EMAIL: 10}
    policy, notes = compress_policy(Policy(max_wait_s=frozen_map(limits)), 60)
    assert dict(policy.max_wait_s) == {Channel.VOICE: 2, Channel.CHAT: 0, Channel.EMAIL: 1}
    assert [n for n in notes if "max_wait" in n] == [
        "email.max_wait: 10s / 60 = 0.167s, clamped to 1s"
    ]
    sent = {c.channel: c.max_wait.seconds for c in policy_to_pb(policy).channels}
    assert sent[pb.CHANNEL_VOICE] == 2
    assert sent[pb.CHANNEL_EMAIL] == 1
    assert sent[pb.CHANNEL_CHAT] == 0


def test_compress_policy_never_turns_a_duration_off_silently() -> None:
    """The service keeps whole seconds, 0 turning a duration off: one that compression
    would round to 0 s (30 s of wrap-up at x60 is 0.5 s, which ``round`` makes 0) is
    rounded up to 1 s and noted, wrap-up and aging alike; 0 stays 0 with no note, and a
    channel the trace does not use is rounded up without one."""
    wrap_up = {Channel.VOICE: 30, Channel.CHAT: 0, Channel.EMAIL: 20}
    stated = Policy(wrap_up_s=frozen_map(wrap_up), aging_s_per_priority=20)
    policy, notes = compress_policy(stated, 60, frozenset({Channel.VOICE, Channel.CHAT}))
    assert dict(policy.wrap_up_s) == {Channel.VOICE: 1, Channel.CHAT: 0, Channel.EMAIL: 1}
    assert policy.aging_s_per_priority == 1
    why = "(the service keeps whole seconds; 0s would turn it off)"
    assert [n for n in notes if "rounded up" in n] == [
        f"aging_per_priority: 20s / 60 = 0.333s, rounded up to 1s {why}",
        f"voice.wrap_up: 30s / 60 = 0.5s, rounded up to 1s {why}",
    ]
    sent = {c.channel: c.wrap_up.seconds for c in policy_to_pb(policy).channels}
    assert (sent[pb.CHANNEL_VOICE], sent[pb.CHANNEL_CHAT]) == (1, 0)


def test_an_offer_time_out_kept_in_real_time_is_noted() -> None:
    """Offer time-outs stay real time (they are the real client's), and rule 10 keeps work
    that long clear of a shift's end: at x60 a 30 s time-out is half an hour of the
    scenario, which the offline run does not reserve; the note says so, for the channels the
    trace uses only."""
    offers = frozen_map({Channel.VOICE: 30, Channel.CHAT: 0, Channel.EMAIL: 20})
    policy, notes = compress_policy(
        Policy(offer_timeout_s=offers), 60, frozenset({Channel.VOICE, Channel.CHAT})
    )
    assert policy.offer_timeout_s == offers
    assert [n for n in notes if "offer_timeout" in n] == [
        "voice.offer_timeout: 30s stays real time, so work is kept 30s (1800s of the scenario)"
        " clear of a shift's end or an absence for an Accept, which the offline simulator"
        " (offers accepted at once) does not do"
    ]


def test_options_are_bounded() -> None:
    """Nonsense bounds are refused before anything is sent."""
    for speed in (0, float("inf"), 1e9):
        with pytest.raises(ReplayError, match="speed"):
            ReplayOptions(target="127.0.0.1:1", speed=speed)
    with pytest.raises(ReplayError, match="workers"):
        ReplayOptions(target="127.0.0.1:1", workers=10_000)
    for tenant in ("bad tenant!", "t" * 65, "é"):
        with pytest.raises(ReplayError, match=r"^tenant: .* must be 1-64 letters"):
            ReplayOptions(target="127.0.0.1:1", tenant=tenant)
    assert ReplayOptions(target="127.0.0.1:1", tenant="ops-team_1.eu").tenant == "ops-team_1.eu"


def test_presence_schedule_follows_shifts_breaks_and_absences() -> None:
    """An agent on 08:00-16:00 with a 12:00 half-hour break and an absence on day 1 is
    offline, available, on a break, available, offline, ... exactly at those times."""
    agent = AgentSpec(
        "ana",
        shift=(8 * 3600, 16 * 3600),
        breaks=((12 * 3600, 1800),),
        absences=(AbsenceSpec(DAY_S, 2 * DAY_S),),
    )
    schedule = presence_schedule(agent, 0, 2 * DAY_S)
    assert schedule[:5] == (
        (0, "offline"),
        (8 * 3600, "available"),
        (12 * 3600, "break"),
        (12 * 3600 + 1800, "available"),
        (16 * 3600, "offline"),
    )
    day1 = [state for t, state in schedule if DAY_S <= t < 2 * DAY_S]
    assert "available" not in day1
    assert "away" in day1
    assert presence_schedule(AgentSpec("ben"), 0, DAY_S) == ()


@pytest.mark.timeout(60)
def test_replay_is_bounded_and_leaves_nothing_behind(service: tuple[RunningServer, str]) -> None:
    """At x20 with 1 s of arrivals and 1 s of drain, only the first calls are sent, the run
    ends within seconds, and every call it sent ends in a final state on the service:
    waiting ones cancelled, held ones completed (counted as cut)."""
    _, target = service
    scenario = _scenario()
    calls = _calls(scenario)
    options = ReplayOptions(target=target, speed=20, max_seconds=1, drain_s=1, workers=4)
    agents = agents_from_scenario(scenario, calls[0].arrival_s, scenario.horizon_s)
    with grpc.insecure_channel(target) as channel:
        run = Replayer(channel, agents, calls, options, policy=scenario.policy).run()
        routing = routing_pb2_grpc.RoutingServiceStub(channel)
        sent = [c for c in run.calls if c.outcome != "not_sent"]
        assert 0 < len(sent) < len(calls)
        assert run.wall_s < 15
        assert run.rpc["errors"] == 0, run.rpc["errors_by_method"]
        final = {pb.CALL_STATUS_COMPLETED, pb.CALL_STATUS_ABANDONED, pb.CALL_STATUS_CANCELLED}
        for c in sent:
            assert c.outcome in {"completed", "abandoned", "cancelled", "cut"}
            info = routing.GetCall(routing_pb2.GetCallRequest(tenant=run.tenant, call_id=c.wire_id))
            assert info.call.status in final, (c.call.call_id, c.outcome)


class _Broken(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    """A stream that failed with UNAVAILABLE (the test's stand-in for a Redis blip)."""

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return "redis is away"


HEAD = "1600000000000-0"
"""The newest event when the flaky stub's Watch opens "from now"."""


class _FlakyWatch:
    """A routing stub whose first Watch breaks after ``broken_after`` events; the next,
    asked to resume after the last event delivered (or where the first started), delivers
    the rest."""

    def __init__(self, events: list[pb.Event], done: threading.Event, broken_after: int) -> None:
        self.events, self.done, self.broken_after = events, done, broken_after
        self.requests: list[routing_pb2.WatchRequest] = []

    def Watch(self, request: routing_pb2.WatchRequest) -> Any:  # noqa: N802  # the stub's name
        self.requests.append(request)
        first = len(self.requests) == 1
        after = request.after_event_id or HEAD
        start = 0 if after == HEAD else [e.event_id for e in self.events].index(after) + 1
        broken = self.broken_after if first else None
        return _Stream(self.events[start:], after, broken_after=broken, done=self.done)


class _Stream:
    def __init__(
        self, events: list[pb.Event], after: str, *, broken_after: int | None, done: threading.Event
    ) -> None:
        self.events, self.after, self.broken_after, self.done = events, after, broken_after, done

    def initial_metadata(self) -> tuple[tuple[str, str], ...]:
        """The headers a Watch sends first: where the stream starts."""
        return (("router-watch-cursor", self.after),)

    def __iter__(self) -> Iterator[pb.Event]:
        for n, event in enumerate(self.events):
            if n == self.broken_after:
                raise _Broken()  # type: ignore[abstract]  # only code() and details() are read
            yield event
        self.done.set()

    def cancel(self) -> None:
        """Nothing to close."""


@pytest.mark.parametrize(("broken_after", "resumed_after"), [(2, "1700000000000-1"), (0, HEAD)])
def test_the_replays_event_stream_resumes_after_a_break(
    broken_after: int, resumed_after: str
) -> None:
    """The Watch stream breaks after two events, or before its first: the replay counts the
    failure and resumes after the last event it saw, or where the broken stream started
    (its headers say), so no event (an ASSIGNED it waits for) is lost or seen twice."""
    scenario = _scenario()
    options = ReplayOptions(target="127.0.0.1:1", speed=SPEED, max_seconds=1, drain_s=1)
    agents = agents_from_scenario(scenario, 0.0, scenario.horizon_s)
    with grpc.insecure_channel("127.0.0.1:1") as channel:
        replayer = Replayer(channel, agents, _calls(scenario), options, policy=scenario.policy)
    events = [
        pb.Event(event_id=f"1700000000000-{n}", type="PRESENCE_CHANGED", agent_id="x")
        for n in range(5)
    ]
    done = threading.Event()
    flaky = _FlakyWatch(events, done, broken_after)
    replayer.routing = flaky  # type: ignore[assignment]
    seen: list[str] = []
    replayer._on_event = lambda event, now, wall: seen.append(event.event_id)  # type: ignore[method-assign]
    watcher = threading.Thread(target=replayer._watch, daemon=True)
    watcher.start()
    assert done.wait(10)
    replayer._closing.set()
    assert seen == [e.event_id for e in events]
    assert [r.after_event_id for r in flaky.requests] == ["", resumed_after]
    assert replayer.stats.to_json()["errors_by_method"] == {"Watch": {"UNAVAILABLE": 1}}


def test_an_assignment_a_failed_complete_left_is_completed_at_the_end() -> None:
    """A Complete that failed for good (the service away for longer than its retries) leaves
    the assignment with the call's agent; the end of the run completes it, with its token,
    so the replay leaves nothing held on the service. One that fails again stays counted."""
    scenario = _scenario()
    options = ReplayOptions(target="127.0.0.1:1", speed=SPEED, max_seconds=1, drain_s=1)
    agents = agents_from_scenario(scenario, 0.0, scenario.horizon_s)
    with grpc.insecure_channel("127.0.0.1:1") as channel:
        replayer = Replayer(channel, agents, _calls(scenario), options, policy=scenario.policy)
    completed: list[tuple[str, int]] = []

    class Routing:
        def Complete(  # noqa: N802  # the stub's name
            self, request: routing_pb2.CompleteRequest, timeout: float
        ) -> routing_pb2.CompleteResponse:
            if request.assignment_id == "a-gone":
                raise _Broken()  # type: ignore[abstract]
            completed.append((request.assignment_id, request.fencing_token))
            return routing_pb2.CompleteResponse()

    replayer.routing = Routing()  # type: ignore[assignment]
    call = _calls(scenario)[0]
    for held in (("a-1", 7), ("a-gone", 8)):
        replayer._live[held[0]] = _Live(call, held[0], 0.0, outcome="error", held=held)
    replayer._closing.set()  # the end of the run: no retries
    replayer._release_held()
    assert completed == [("a-1", 7)]
    assert replayer._live["a-1"].held is None
    assert replayer._live["a-gone"].held == ("a-gone", 8)


# --- shift ends and absences -----------------------------------------------------------------

SHIFTED: dict[str, object] = {
    "name": "shifted",
    "duration_s": 1200,
    "drain_s": 600,
    "policy": {"strategy": "balanced"},
    "sla": {"voice": 20},
    "agents": [
        {"id": "ana", "team": "a", "channels": ["voice"], "shift": {"start": 0, "end": 600}},
        {
            "id": "cy",
            "team": "b",
            "channels": ["voice"],
            "absences": [{"start": 700, "end": 900, "kind": "training"}],
        },
    ],
    "arrivals": [{"channel": "voice", "rate_per_hour": 1, "team": "a", "handle": 300}],
}
"""Ana's shift ends at 600 s, Cy is in training from 700 s to 900 s; voice work is expected
to take 300 s (the stream's mean; the calls replayed take 30)."""


def _voice(call_id: str, arrival_s: float, team: str) -> TraceCall:
    return TraceCall(arrival_s, call_id, Channel.VOICE, handle_s=30, patience_s=100, team=team)


SHIFTED_CALLS = [
    _voice("a-early", 60, "a"),  # done long before ana's shift ends
    _voice("b-early", 120, "b"),  # done long before cy's training
    _voice("a-late", 400, "a"),  # would end at 700, after ana's shift: she is not given it
    _voice("b-late", 500, "b"),  # would run into cy's training: she is not given it
    _voice("b-back", 1000, "b"),  # cy is back
]


@pytest.mark.timeout(60)
def test_replay_gives_agents_the_shift_ends_and_absences_the_simulator_does(
    service: tuple[RunningServer, str],
) -> None:
    """Ana's shift ends at 600 s and Cy's training starts at 700 s: the simulator gives
    neither of them a voice call (300 s expected) 200 s before, and neither does the
    service in a replay, which creates them with that shift end and that absence on its
    own clock at the replay's speed; presence still follows the schedule (Cy takes calls
    again after her training)."""
    _, target = service
    scenario = parse_scenario(SHIFTED, name="shifted")
    simulated = simulate(scenario, seed=1, calls=SHIFTED_CALLS)
    expected = {r.call_id for r in simulated.records if r.answered_s is not None}
    assert expected == {"a-early", "b-early", "b-back"}
    speed = 100.0
    options = ReplayOptions(target=target, speed=speed, max_seconds=20, drain_s=3, workers=4)
    first = SHIFTED_CALLS[0].arrival_s
    agents = agents_from_scenario(scenario, first, scenario.horizon_s)
    with grpc.insecure_channel(target) as channel:
        run = Replayer(channel, agents, SHIFTED_CALLS, options, policy=scenario.policy).run()
        admin = admin_pb2_grpc.AgentAdminServiceStub(channel)
        ana = admin.GetAgent(admin_pb2.GetAgentRequest(tenant=run.tenant, agent_id="ana"))
        cy = admin.GetAgent(admin_pb2.GetAgentRequest(tenant=run.tenant, agent_id="cy"))
    assert run.rpc["errors"] == 0, run.rpc["errors_by_method"]
    outcomes = {r.call.call_id: r.outcome for r in run.calls}
    assert {r.call.call_id for r in run.calls if r.answered} == expected, outcomes
    assert outcomes["a-late"] == outcomes["b-late"] == "abandoned"

    def on_service(scenario_s: float) -> int:
        return run.origin_ms + round((scenario_s - first) / speed * 1000)

    assert ana.shift_end.ToMilliseconds() == on_service(600)
    assert not ana.absences
    assert not cy.HasField("shift_end")
    assert [
        (a.kind, a.start_time.ToMilliseconds(), a.end_time.ToMilliseconds()) for a in cy.absences
    ] == [(pb.ABSENCE_KIND_TRAINING, on_service(700), on_service(900))]


@pytest.mark.timeout(60)
def test_each_shift_start_brings_its_shift_end_and_a_reused_tenant_is_rescheduled() -> None:
    """Over two days, the agent's shift end moves to the second day's at her second shift
    start. Replayed again into the same tenant, she gets that run's shift end and absence,
    the first run's absence cancelled (the service keeps at most 100 per agent)."""
    raw = {
        "duration_s": 2 * DAY_S,
        "drain_s": 600,
        "agents": [
            {
                "id": "ana",
                "team": "a",
                "channels": ["voice"],
                "shift": {"start": "08:00", "end": "08:30"},
                "absences": [{"start": "1d 12:00", "end": "1d 13:00"}],
            }
        ],
        "arrivals": [{"channel": "voice", "rate_per_hour": 1, "team": "a", "handle": 30}],
    }
    scenario = parse_scenario(raw, name="two-days")
    calls = [_voice("d0", 8 * 3600 + 300, "a"), _voice("d1", DAY_S + 8 * 3600 + 300, "a")]
    first = calls[0].arrival_s
    speed = 20_000.0
    running = create_server(Settings(port=0, dispatch_tick_s=0.05), MemoryStore())
    target = f"127.0.0.1:{running.port}"
    try:
        tenant = ""
        for _ in range(2):
            options = ReplayOptions(
                target=target, tenant=tenant, speed=speed, max_seconds=10, drain_s=1, workers=2
            )
            agents = agents_from_scenario(scenario, first, scenario.horizon_s)
            with grpc.insecure_channel(target) as channel:
                run = Replayer(channel, agents, calls, options, policy=scenario.policy).run()
                admin = admin_pb2_grpc.AgentAdminServiceStub(channel)
                ana = admin.GetAgent(admin_pb2.GetAgentRequest(tenant=run.tenant, agent_id="ana"))
            assert run.rpc["errors"] == 0, run.rpc["errors_by_method"]
            tenant = run.tenant

            def on_service(scenario_s: float, origin_ms: int = run.origin_ms) -> int:
                return origin_ms + round((scenario_s - first) / speed * 1000)

            assert ana.shift_end.ToMilliseconds() == on_service(DAY_S + 8.5 * 3600)
            assert [
                (a.start_time.ToMilliseconds(), a.end_time.ToMilliseconds()) for a in ana.absences
            ] == [(on_service(DAY_S + 12 * 3600), on_service(DAY_S + 13 * 3600))]
    finally:
        running.stop(0)


def test_agents_carry_the_simulators_shift_windows_and_absences() -> None:
    """A replay's agents have the on-duty windows the simulator opens (touching ones merged,
    cut at the horizon) and the absences not over when the replay starts."""
    agent = AgentSpec(
        "ana",
        shift=(22 * 3600, 30 * 3600),
        absences=(AbsenceSpec(0, 3600), AbsenceSpec(DAY_S, DAY_S + 3600)),
    )
    scenario = dataclasses.replace(_scenario(), agents=(agent,), duration_s=2 * DAY_S)
    (replay_agent,) = agents_from_scenario(scenario, 7200, 1.5 * DAY_S)
    assert replay_agent.shifts == ((0.0, 6 * 3600), (22 * 3600, DAY_S + 6 * 3600))
    assert replay_agent.shifts == tuple(shift_windows(agent.shift, scenario.horizon_s)[:2])
    assert replay_agent.absences == (AbsenceSpec(DAY_S, DAY_S + 3600),)
    (no_shift,) = agents_from_scenario(
        dataclasses.replace(scenario, agents=(AgentSpec("ben"),)), 0, DAY_S
    )
    assert no_shift.shifts == ()
    assert no_shift.absences == ()


def test_absences_are_cut_to_the_run_and_the_services_limits_stop_it_before_it_starts() -> None:
    """An absence is sent cut to what the service's clock reaches in the run (a year off at
    x0.5 would last two years there, more than the API's 366 days); more than 100 absences
    for one agent, or one still over 366 days long (a run of a year), stop the replay with
    the agent named before anything is sent."""
    year_off = AbsenceSpec(0, 365 * DAY_S, AbsenceKind.SICK_LEAVE)
    assert service_absences((year_off, AbsenceSpec(10, 20)), 100, 5000) == (
        AbsenceSpec(100, 5000, AbsenceKind.SICK_LEAVE),
    )
    calls = [_voice("c", 3600, "")]

    def replayer(agent: ReplayAgent, speed: float, max_seconds: float = 60) -> Replayer:
        options = ReplayOptions(
            target="127.0.0.1:1", speed=speed, max_seconds=max_seconds, drain_s=10
        )
        with grpc.insecure_channel("127.0.0.1:1") as channel:
            return Replayer(channel, [agent], calls, options)

    (sent,) = replayer(ReplayAgent("ana", {}, absences=(year_off,)), 0.5)._plan_absences()["ana"]
    assert sent.start_s == 3600 - 60 * 0.5
    assert (sent.end_s - sent.start_s) / 0.5 < 366 * DAY_S
    many = tuple(AbsenceSpec(3600 + 10 * i, 3605 + 10 * i) for i in range(101))
    too_long = ReplayAgent("ana", {}, absences=(AbsenceSpec(0, 400 * DAY_S),))
    for agent, speed, max_seconds, message in (
        (ReplayAgent("ana", {}, absences=many), 1.0, 60, "ana: 101 absences .* at most 100"),
        (too_long, 1.0, 360 * DAY_S, "ana: the absence .* 366"),
    ):
        doomed = replayer(agent, speed, max_seconds)
        with pytest.raises(ReplayError, match=message):
            doomed.run()
        assert doomed.stats.to_json()["requests"] == 0


# --- the queue time limit ---------------------------------------------------------------------


def _expired_event(wire_id: str, at_ms: int) -> pb.Event:
    """The service's EXPIRED event of a call (its data: the channel and the limit)."""
    return pb.Event(
        event_id=f"{at_ms}-0",
        type="EXPIRED",
        call_id=wire_id,
        time=timestamp_pb2.Timestamp(seconds=at_ms // 1000, nanos=at_ms % 1000 * 1_000_000),
        data={"channel": "voice", "max_wait_s": "1"},
    )


class _CancelStub:
    """A routing stub whose Cancel answers with the call in ``status``, recording the calls."""

    def __init__(self, status: pb.CallStatus.ValueType) -> None:
        self.status, self.cancelled = status, list[str]()

    def Cancel(  # noqa: N802  # the stub's name
        self, request: routing_pb2.CancelRequest, timeout: float
    ) -> routing_pb2.CancelResponse:
        self.cancelled.append(request.call_id)
        return routing_pb2.CancelResponse(call=pb.CallInfo(status=self.status))


def test_an_expired_event_ends_the_call_in_the_replays_books() -> None:
    """The service took a queued call off the queue at its channel's limit (EXPIRED): the
    replay ends the call there, unanswered, as it ends an abandoned one. Nothing is left
    pending, the caller's patience no longer sends a Cancel, the call waited from its QUEUED
    to its EXPIRED event on the service's clock (scaled by the speed), and its record, the
    KPIs and replay.json count it as expired. A Cancel that finds the call expired ends it
    as expired too."""
    scenario = _scenario().with_policy(
        dataclasses.replace(_scenario().policy, max_wait_s=frozen_map({Channel.VOICE: 100}))
    )
    options = ReplayOptions(target="127.0.0.1:1", speed=100, max_seconds=1, drain_s=1)
    agents = agents_from_scenario(scenario, 0.0, scenario.horizon_s)
    calls = [
        TraceCall(0.0, "gone", Channel.VOICE, handle_s=60.0, patience_s=500.0),
        TraceCall(0.0, "late", Channel.VOICE, handle_s=60.0, patience_s=100.0),
    ]
    with grpc.insecure_channel("127.0.0.1:1") as channel:
        replayer = Replayer(channel, agents, calls, options, policy=scenario.policy)
    stub = _CancelStub(pb.CALL_STATUS_EXPIRED)
    replayer.routing = stub  # type: ignore[assignment]
    t0 = replayer._t0
    gone, late = (
        _Live(call, f"tag-{call.call_id}", t0, sent=t0, queued=True, queued_ms=1_000_000)
        for call in calls
    )
    for live in (gone, late):
        replayer._live[live.call.call_id] = live
        replayer._by_wire[live.wire_id] = live
    replayer._pending = 2
    replayer._on_event(_expired_event(gone.wire_id, 1_001_200), t0 + 1.25, 0.0)
    assert gone.outcome == "expired"
    assert gone.expired_ms == 1_001_200
    replayer._patience(gone)  # the caller's patience runs out later: nothing to hang up
    assert stub.cancelled == []
    replayer._patience(late)  # hangs up; the service had expired it meanwhile
    assert stub.cancelled == [late.wire_id]
    assert late.outcome == "expired"
    assert replayer._all_done.is_set()
    observed = {o.call.call_id: o for o in replayer._observed()}
    assert observed["gone"].outcome == "expired"
    assert not observed["gone"].answered
    assert observed["gone"].wait_s == pytest.approx(1.2 * 100)
    run = _run_of(replayer, scenario, tuple(observed.values()), end_s=200.0)
    records, _, _ = observed_results(run)
    assert [(r.call_id, r.expired, r.abandoned, r.answered_s) for r in records] == [
        ("gone", True, False, None),
        ("late", True, False, None),
    ]
    kpis, _ = replay_kpis(run, scenario)
    assert (kpis["overall"]["expired"], kpis["overall"]["abandoned"]) == (2, 0)
    assert kpis["overall"]["service_level"] == 0
    assert summarize_replay(run, kpis)["calls"]["expired"] == 2


HANDED_BACK: dict[str, object] = {
    "name": "handed back",
    "duration_s": 300,
    "drain_s": 300,
    "policy": {
        "strategy": "longest_idle",
        "max_wait_s": {"voice": 60},
        "reclaim_on_absence": True,
        "reclaim_channels": ["voice"],
        "expected_handle_s": {c.value: 20 for c in Channel},
    },
    "sla": {"voice": 20},
    "agents": [
        {"id": "ana", "channels": ["voice"], "absences": [{"start": 100, "end": 400}]},
        {"id": "bob", "channels": ["voice"], "absences": [{"start": 100, "end": 400}]},
        {
            "id": "cy",
            "channels": ["voice"],
            "absences": [{"start": 0, "end": 50}, {"start": 100, "end": 400}],
        },
        {
            "id": "dan",
            "channels": ["voice"],
            "speed": 2,
            "absences": [{"start": 0, "end": 120}],
        },
    ],
    "arrivals": [{"channel": "voice", "rate_per_hour": 1, "handle": 500}],
}
"""Ana, Bob and Cy (on from 50 s) leave at 100 s and the voice calls they hold go back to
the queue; Dan, twice as quick, comes on at 120 s. A voice call leaves the queue after 60 s,
counted again from its hand-back. At x20 no duration the service is given needs clamping."""
HANDED_BACK_CALLS = [
    TraceCall(0.0, "again", Channel.VOICE, handle_s=110.0),  # Ana 0-100, Dan 120-175
    TraceCall(10.0, "expires", Channel.VOICE, handle_s=500.0),  # Bob 10-100, expires at 160
    TraceCall(20.0, "hangs-up", Channel.VOICE, handle_s=500.0, patience_s=130.0),  # Cy 50-100
]
RECORD_FIELDS = (
    "answered_s",
    "wait_s",
    "within_sla",
    "abandoned",
    "expired",
    "agent_id",
    "handle_s",
    "end_s",
    "skill_match",
    "quality",
    "reclaimed",
)


def _fields(record: CallResult) -> dict[str, object]:
    return {name: getattr(record, name) for name in RECORD_FIELDS}


def _call_event(
    kind: str, live: _Live, at_ms: int, agent_id: str = "", assignment_id: str = ""
) -> pb.Event:
    """The service's ``kind`` event of ``live``'s call at ``at_ms`` on its clock."""
    data = {"assignment_id": assignment_id, "token": "1"} if assignment_id else {}
    return pb.Event(
        event_id=f"{at_ms}-0",
        type=kind,
        call_id=live.wire_id,
        agent_id=agent_id,
        time=timestamp_pb2.Timestamp(seconds=at_ms // 1000, nanos=at_ms % 1000 * 1_000_000),
        data=data,
    )


def _on_the_service(channel: grpc.Channel, run: ReplayRun) -> dict[str, pb.CallInfo]:
    """Each call of ``run`` as the service keeps it (GetCall), by the trace's call id."""
    routing = routing_pb2_grpc.RoutingServiceStub(channel)
    return {
        c.call.call_id: routing.GetCall(
            routing_pb2.GetCallRequest(tenant=run.tenant, call_id=c.wire_id)
        ).call
        for c in run.calls
    }


def _run_of(
    replayer: Replayer,
    scenario: Scenario,
    calls: tuple[ObservedCall, ...],
    *,
    end_s: float,
    start_s: float = 0.0,
) -> ReplayRun:
    """The run an offline ``replayer`` of ``scenario`` observed: ``calls`` from ``start_s``
    to ``end_s``."""
    return ReplayRun(
        tenant=replayer.tenant,
        options=replayer.options,
        policy=scenario.policy,
        agents=tuple(replayer.agents),
        calls=calls,
        start_s=start_s,
        end_s=end_s,
        rpc=replayer.stats.to_json(),
        policy_notes=(),
        wall_s=1.0,
        watch={"events": 0},
        service_stats={},
    )


def _offline_replayer(
    raw: dict[str, object], calls: list[TraceCall]
) -> tuple[Scenario, ReplayOptions, Replayer, ThreadPoolExecutor]:
    """A replayer at x100 of ``raw``'s agents and ``calls`` that sends nothing: its
    scheduler never starts (it schedules, runs nothing); the test drives its handlers.
    ``pool`` is its scheduler's, for the test to shut down."""
    scenario = parse_scenario(raw, name="handed back")
    options = ReplayOptions(target="127.0.0.1:1", speed=100.0, max_seconds=10, drain_s=10)
    agents = agents_from_scenario(scenario, 0.0, scenario.horizon_s)
    with grpc.insecure_channel("127.0.0.1:1") as channel:
        replayer = Replayer(channel, agents, calls, options, policy=scenario.policy)
    pool = ThreadPoolExecutor(1)
    replayer._sched = _Scheduler(pool, replayer.stats)
    return scenario, options, replayer, pool


def _handed_back_replay(
    raw: dict[str, object] = HANDED_BACK, hand_back: str = "RECLAIMED"
) -> tuple[Scenario, ReplayRun]:
    """The day of ``HANDED_BACK`` (or of ``raw``, with its calls) as a replay at x100
    observes it from the service's answers and events (the service's clock at 1 000 000 ms
    when the first call arrives); ``hand_back``: the event that gives the calls back to the
    queue at 100 s."""
    scenario, options, replayer, pool = _offline_replayer(raw, HANDED_BACK_CALLS)
    replayer.routing = _CancelStub(pb.CALL_STATUS_ABANDONED)  # type: ignore[assignment]
    speed, t0 = options.speed, replayer._t0

    def at(scenario_s: float) -> float:
        return t0 + scenario_s / speed

    def ms(scenario_s: float) -> int:
        return 1_000_000 + round(scenario_s / speed * 1000)

    again, expires, hangs_up = (
        _Live(call, f"tag-{call.call_id}", at(call.arrival_s), sent=at(call.arrival_s))
        for call in HANDED_BACK_CALLS
    )
    for live in (again, expires, hangs_up):
        replayer._live[live.call.call_id] = live
        replayer._by_wire[live.wire_id] = live
    replayer._pending = 3
    # Assign answers the first two at once (RESULT_ASSIGNED), queues the third.
    replayer._on_assigned(again, "a-1", 1, "ana", at(0), server_ms=ms(0))
    replayer._on_assigned(expires, "a-2", 1, "bob", at(10), server_ms=ms(10))
    hangs_up.queued = True
    for scenario_s, event in [
        (0, _call_event("ASSIGNED", again, ms(0), "ana", "a-1")),
        (10, _call_event("ASSIGNED", expires, ms(10), "bob", "a-2")),
        (20, _call_event("QUEUED", hangs_up, ms(20))),
        (50, _call_event("ASSIGNED", hangs_up, ms(50), "cy", "a-3")),
        *(
            (100, _call_event(kind, live, ms(100), agent, asg))
            for live, agent, asg in ((again, "ana", "a-1"), (expires, "bob", "a-2"))
            for kind in (hand_back, "QUEUED")
        ),
        (100, _call_event(hand_back, hangs_up, ms(100), "cy", "a-3")),
        (100, _call_event("QUEUED", hangs_up, ms(100))),
        (120, _call_event("ASSIGNED", again, ms(120), "dan", "a-4")),
        (160, _call_event("EXPIRED", expires, ms(160))),
    ]:
        replayer._on_event(event, at(scenario_s), 0.0)
    replayer._patience(hangs_up)  # its caller's patience runs out at 150 s: a Cancel
    replayer._finish(again, "completed", at(175))  # Dan's Complete
    pool.shutdown()
    assert {live.outcome for live in (again, expires, hangs_up)} == {
        "completed",
        "expired",
        "abandoned",
    }
    run = _run_of(replayer, scenario, tuple(replayer._observed()), end_s=300.0)
    return scenario, run


def test_a_call_answered_then_handed_back_counts_as_answered_as_the_simulator_counts_it() -> None:
    """A call an agent answered that went back to the queue (taken back from an agent who
    left) and then expired, or whose caller then hung up, counts in the replay's records
    and KPIs as the simulator counts it (and GetStats, by each call's first outcome):
    answered, at its first answer, its wait running to it and within the SLA by it; and
    expired, or abandoned, too; completed by nobody."""
    scenario, run = _handed_back_replay()
    simulated = simulate(scenario, seed=1, calls=HANDED_BACK_CALLS)
    expected = {r.call_id: _fields(r) for r in simulated.records}
    assert expected["expires"] == {
        **expected["expires"],
        "answered_s": 10.0,
        "wait_s": 0.0,
        "within_sla": True,
        "expired": True,
        "abandoned": False,
        "agent_id": "",
    }
    assert expected["hangs-up"] == {
        **expected["hangs-up"],
        "answered_s": 50.0,
        "wait_s": 30.0,
        "within_sla": False,
        "expired": False,
        "abandoned": True,
        "agent_id": "",
    }
    records, _, _ = observed_results(run)
    got = {r.call_id: _fields(r) for r in records}
    for call_id in ("expires", "hangs-up"):
        assert got[call_id] == pytest.approx(expected[call_id]), call_id
    kpis, _ = replay_kpis(run, scenario)
    for figure in ("offered", "answered", "abandoned", "expired", "service_level", "asa_s"):
        assert kpis["overall"][figure] == simulated.kpis["overall"][figure], figure
    assert kpis["overall"]["sla_breaches"] == simulated.kpis["overall"]["sla_breaches"] == 1
    observed = {o.call.call_id: (o.answered, o.outcome) for o in run.calls}
    assert observed == {
        "again": (True, "completed"),
        "expires": (True, "expired"),  # what happened last
        "hangs-up": (True, "abandoned"),
    }


def test_a_caller_whose_patience_ran_out_while_an_agent_had_the_call_waits_on() -> None:
    """As in the simulator (the hang-up timer fires once, at arrival plus patience, and
    finds the call held), a caller whose patience ran out while an agent had the call does
    not hang up when it goes back to the queue; one whose patience lasts beyond the hand-back
    hangs up when it runs out."""
    calls = [
        TraceCall(0.0, "patient", Channel.VOICE, handle_s=500.0, patience_s=150.0),
        TraceCall(0.0, "spent", Channel.VOICE, handle_s=500.0, patience_s=60.0),
    ]
    _, options, replayer, pool = _offline_replayer(HANDED_BACK, calls)
    speed, t0 = options.speed, replayer._t0
    due: dict[str, list[float]] = {}
    for n, call in enumerate(calls):
        live = _Live(call, f"tag-{call.call_id}", t0, sent=t0)
        replayer._on_assigned(live, f"a-{n}", 1, "ana", t0, server_ms=1_000_000)
        before = {entry[0] for entry in replayer._sched._heap}
        replayer._on_requeued(live, f"a-{n}", t0 + 100 / speed)  # taken back at 100 s
        due[call.call_id] = sorted({e[0] for e in replayer._sched._heap} - before)
    pool.shutdown()
    assert due == {"patient": [pytest.approx(t0 + 150 / speed)], "spent": []}


def test_a_call_answered_again_after_a_hand_back_keeps_its_first_answer() -> None:
    """The replay keeps a call's first answer when the call goes back to the queue and
    another agent answers it: its wait runs to the first answer (not from its hand-back to
    the second one), while its handling, end and busy time are those of the agent who
    completed it, from that agent's answer - the simulator's record of the same call."""
    scenario, run = _handed_back_replay()
    simulated = simulate(scenario, seed=1, calls=HANDED_BACK_CALLS)
    expected = {r.call_id: _fields(r) for r in simulated.records}["again"]
    assert expected == {
        **expected,
        "answered_s": 0.0,
        "wait_s": 0.0,
        "agent_id": "dan",
        "handle_s": 55.0,
        "end_s": 175.0,
        "reclaimed": 1,
    }
    records, agents, _ = observed_results(run)
    assert {r.call_id: _fields(r) for r in records}["again"] == pytest.approx(expected)
    assert simulated.agents["dan"].busy.tolist() == [[120.0, 175.0, 100.0]]
    assert agents["dan"].busy == pytest.approx(simulated.agents["dan"].busy)
    assert agents["dan"].handled == 1


WRAPPED_UP: dict[str, object] = {
    **HANDED_BACK,
    "policy": {**cast(dict[str, object], HANDED_BACK["policy"]), "wrap_up_s": {"voice": 5}},
}
"""``HANDED_BACK`` with 5 s of wrap-up after a voice call is completed."""


def test_a_replays_busy_time_counts_the_wrap_up_the_service_applied() -> None:
    """5 s of voice wrap-up at x100 is 0.05 s on the service's clock, sent as 1 s: the
    service holds Dan's slot 1 s after his Complete, 100 s of the scenario, so his busy time
    and occupancy count those 100 s, not the scenario's 5."""
    scenario, run = _handed_back_replay(WRAPPED_UP)
    sent, _ = compress_policy(scenario.policy, run.options.speed)
    assert sent.wrap_up_s[Channel.VOICE] == 1
    run = dataclasses.replace(run, sent_policy=sent)
    assert run.wrap_up_s(Channel.VOICE) == 100.0
    _, agents, _ = observed_results(run)
    assert agents["dan"].busy.tolist()[0] == pytest.approx([120.0, 275.0, 100.0])
    kpis, _ = replay_kpis(run, scenario)
    stated, _ = replay_kpis(dataclasses.replace(run, sent_policy=None), scenario)
    assert kpis["agents"]["dan"]["occupancy"] > stated["agents"]["dan"]["occupancy"]


@pytest.mark.parametrize("hand_back", ["RECLAIMED", "RELEASED"])
def test_an_agent_who_gave_a_call_back_was_busy_with_it_until_then(hand_back: str) -> None:
    """Ana, Bob and Cy each held a call until it went back to the queue at 100 s (taken back
    from them, or released): as in the simulator, each was busy from their answer to the
    hand-back, with no wrap-up (that follows a completed call only, as Dan's does), so every
    agent's busy time, occupancy and the day's mean occupancy are the simulator's."""
    scenario, run = _handed_back_replay(WRAPPED_UP, hand_back)
    simulated = simulate(scenario, seed=1, calls=HANDED_BACK_CALLS)
    assert {agent_id: a.busy.tolist() for agent_id, a in simulated.agents.items()} == {
        "ana": [[0.0, 100.0, 100.0]],
        "bob": [[10.0, 100.0, 100.0]],
        "cy": [[50.0, 100.0, 100.0]],
        "dan": [[120.0, 180.0, 100.0]],
    }
    _, agents, _ = observed_results(run)
    for agent_id, expected in simulated.agents.items():
        assert agents[agent_id].busy == pytest.approx(expected.busy), agent_id
    kpis, _ = replay_kpis(run, scenario)
    for agent_id, figures in simulated.kpis["agents"].items():
        assert kpis["agents"][agent_id] == figures, agent_id
    assert kpis["fairness"] == simulated.kpis["fairness"]
    assert kpis["timeline"]["occupancy_mean"] == simulated.kpis["timeline"]["occupancy_mean"]


def _waiting(trace: QueueLevels, at_s: float) -> int:
    """Calls waiting just after ``at_s`` by ``trace``."""
    sizes = [size for t, size in zip(trace.times_s, trace.sizes, strict=True) if t <= at_s]
    return sizes[-1] if sizes else 0


def test_the_queue_trace_counts_every_spell_a_call_waits_as_the_simulators_does() -> None:
    """A call waits in the queue on arrival until answered and again from each hand-back
    until answered again, hung up or expired: the three calls given back at 100 s, two of
    which had been answered at once, wait again, and the replay's queue length is the
    simulator's at every moment of the day, as is the most calls waiting at once."""
    scenario, run = _handed_back_replay()
    simulated = simulate(scenario, seed=1, calls=HANDED_BACK_CALLS)
    levels = list(zip(simulated.queue_trace.times_s, simulated.queue_trace.sizes, strict=True))
    assert levels == [
        (0.0, 0),
        (10.0, 0),
        (20.0, 1),
        (50.0, 0),
        (100.0, 3),
        (120.0, 2),
        (150.0, 1),
        (160.0, 0),
    ]
    _, _, trace = observed_results(run)
    for at_s in (5, 15, 35, 75, 110, 135, 155, 200):
        assert _waiting(trace, at_s) == _waiting(simulated.queue_trace, at_s), at_s
    kpis, _ = replay_kpis(run, scenario)
    assert kpis["timeline"]["queue_max"] == simulated.kpis["timeline"]["queue_max"] == [3]


def test_replay_json_counts_each_call_by_its_last_outcome_and_every_answered_call() -> None:
    """replay.json counts each call once by what happened to it last, and apart from that
    every call an agent got, as the KPIs do: the calls answered and then abandoned or
    expired after a hand-back are in both, and counted as such (printed too)."""
    scenario, run = _handed_back_replay()
    kpis, _ = replay_kpis(run, scenario)
    summary = summarize_replay(run, kpis)
    calls = summary["calls"]
    assert calls == {
        "in_trace": 3,
        "sent": 3,
        "answered": 3,
        "queued_first": 1,
        "completed": 1,
        "abandoned": 1,
        "expired": 1,
        "cancelled_after_answer": 0,
        "abandoned_or_expired_after_answer": 2,
        "cut": 0,
        "failed": 0,
        "not_sent": 0,
        "requeued": 3,
        "assigned_twice": 0,
    }
    last = ("completed", "abandoned", "expired", "cancelled_after_answer", "cut", "failed")
    assert sum(calls[k] for k in (*last, "not_sent")) == calls["in_trace"]
    assert calls["answered"] == kpis["overall"]["answered"]
    assert (calls["abandoned"], calls["expired"]) == (
        kpis["overall"]["abandoned"],
        kpis["overall"]["expired"],
    )
    text = console.replay_text(summary)
    assert "3 answered (2 of them abandoned or expired after a hand-back), 1 abandoned" in text


def test_the_console_shows_what_the_policys_compression_clamped_before_the_kpis() -> None:
    """The notes of what the time compression clamped or rounded, in replay.json, are
    printed too, before the KPI table they bear on; a replay with none prints no heading."""
    scenario, run = _handed_back_replay()
    kpis, _ = replay_kpis(run, scenario)
    assert "policy on the service" not in console.replay_text(summarize_replay(run, kpis))
    notes = compress_policy(Policy(), run.options.speed)[1]
    assert "occupancy_window: 3600s / 100 = 36s, clamped to 60s" in notes
    text = console.replay_text(
        summarize_replay(dataclasses.replace(run, policy_notes=tuple(notes)), kpis)
    )
    heading = f"policy on the service at x100: durations divided by the speed, {len(notes)} changed"
    assert heading in text
    lines = text.splitlines()
    for note in notes:
        assert f"  {note}" in lines, note
    table = next(n for n, line in enumerate(lines) if line.startswith("channel "))
    assert max(lines.index(f"  {note}") for note in notes) < table


def test_the_services_own_stats_are_labelled_as_its_real_time_view() -> None:
    """GetStats at the end counts on the service's real clock (a 5 s abandon grace, SLA
    targets clamped to 1 s real): replay.json and the console say so beside its figures,
    apart from the KPIs of the simulated day; with no figures, nothing is said."""
    scenario, run = _handed_back_replay()
    kpis, _ = replay_kpis(run, scenario)
    assert summarize_replay(run, kpis)["service_stats"] == {}
    assert "GetStats" not in console.replay_text(summarize_replay(run, kpis))
    voice = {"answered_15m": 3, "abandoned_15m": 0, "expired_15m": 1, "service_level_15m": 0.5}
    stats = {"queued": 0, "occupancy": {"ana": 0.25}, "channels": {"voice": voice}}
    summary = summarize_replay(dataclasses.replace(run, service_stats=stats), kpis)
    labelled = summary["service_stats"]
    assert labelled["time_compressed"] is False
    assert "real-time view, not time-compressed" in labelled["note"]
    assert {k: labelled[k] for k in stats} == stats
    lines = console.replay_text(summary).splitlines()
    said = next(n for n, line in enumerate(lines) if "GetStats" in line)
    assert "its real-time view (not time-compressed" in lines[said]
    assert said > next(n for n, line in enumerate(lines) if line.startswith("overall "))
    assert lines[said + 1] == (
        "  voice: service level 50.0 %, 3 answered, 0 abandoned after 5 s, 1 expired"
    )


@pytest.mark.timeout(60)
def test_a_replayed_call_an_agent_answered_counts_from_its_first_answer(
    service: tuple[RunningServer, str],
) -> None:
    """The ``HANDED_BACK`` day replayed live at x20: the service takes the three calls back
    from the agents who leave at 100 s (RECLAIMED), then one is answered again, one expires
    and one's caller hangs up. The replay learns each call's first answer from the service's
    answers and events and keeps it: its records and KPIs count the three calls as the
    simulator does, and its service level is the one the service's GetStats reports; so do
    its agents' busy time and its queue's length, within a tick and the latencies."""
    _, target = service
    scenario = parse_scenario(HANDED_BACK, name="handed back")
    simulated = simulate(scenario, seed=1, calls=HANDED_BACK_CALLS)
    options = ReplayOptions(target=target, speed=20, max_seconds=5, drain_s=15, workers=4)
    agents = agents_from_scenario(scenario, 0.0, scenario.horizon_s)
    with grpc.insecure_channel(target) as channel:
        run = Replayer(channel, agents, HANDED_BACK_CALLS, options, policy=scenario.policy).run()
        routing = routing_pb2_grpc.RoutingServiceStub(channel)
        timelines = {
            c.call.call_id: [
                e.type
                for e in routing.GetCall(
                    routing_pb2.GetCallRequest(tenant=run.tenant, call_id=c.wire_id)
                ).call.timeline
            ]
            for c in run.calls
        }
    assert run.rpc["errors"] == 0, run.rpc["errors_by_method"]
    assert run.policy_notes == ()
    assert all(kinds.count("RECLAIMED") == 1 for kinds in timelines.values()), timelines
    outcomes = {c.call.call_id: (c.outcome, c.answered, c.requeued) for c in run.calls}
    assert outcomes == {
        "again": ("completed", True, 1),
        "expires": ("expired", True, 1),
        "hangs-up": ("abandoned", True, 1),
    }
    kpis, records = replay_kpis(run, scenario)
    for r, s in zip(records, simulated.records, strict=True):
        assert (r.within_sla, r.abandoned, r.expired, r.agent_id) == (
            s.within_sla,
            s.abandoned,
            s.expired,
            s.agent_id,
        ), r
        assert r.answered_s == pytest.approx(s.answered_s, abs=3), r  # a tick and latencies
        assert r.wait_s == pytest.approx(s.wait_s, abs=3), r
    for figure in ("offered", "answered", "abandoned", "expired", "service_level"):
        assert kpis["overall"][figure] == simulated.kpis["overall"][figure], figure
    _, busy, trace = observed_results(run)

    def spans(results: Mapping[str, AgentResult]) -> list[float]:
        """Every agent's busy spans in order, flat (Ana and Bob, idle alike, may take
        either first call)."""
        rows = sorted(row for a in results.values() for row in a.busy.tolist())
        return [value for row in rows for value in row]

    assert spans(busy) == pytest.approx(spans(simulated.agents), abs=3)
    for at_s in (5, 15, 35, 75, 110, 135, 155, 200):
        assert _waiting(trace, at_s) == _waiting(simulated.queue_trace, at_s), at_s
    voice = run.service_stats["channels"]["voice"]
    assert (voice["answered_15m"], voice["abandoned_15m"], voice["expired_15m"]) == (3, 1, 1)
    assert voice["service_level_15m"] == round(kpis["overall"]["service_level"], 4)


EXPIRING: dict[str, object] = {
    "name": "expiring",
    "duration_s": 600,
    "drain_s": 600,
    "policy": {"strategy": "longest_idle", "max_wait_s": {"voice": 100}},
    "sla": {"voice": 20},
    "agents": [{"id": "solo", "channels": ["voice"]}],
    "arrivals": [{"channel": "voice", "rate_per_hour": 1, "handle": 200}],
}
"""One agent, a voice limit of 100 s: at x100 a second of the service's clock."""


@pytest.mark.timeout(60)
def test_a_replay_gives_the_service_the_queue_time_limit_and_counts_its_expiries(
    service: tuple[RunningServer, str],
) -> None:
    """Four calls in a minute for one agent, whose call takes 200 s: the service, given the
    scenario's 100 s limit at the replay's speed, expires the three waiting calls; the
    replay ends them on their EXPIRED events (no Cancel sent), and its KPIs and replay.json
    count them as the simulator counts the same day's."""
    _, target = service
    scenario = parse_scenario(EXPIRING, name="expiring")
    calls = [TraceCall(20.0 * n, f"c{n}", Channel.VOICE, handle_s=200.0) for n in range(4)]
    simulated = simulate(scenario, seed=1, calls=calls)
    assert [r.expired for r in simulated.records] == [False, True, True, True]
    options = ReplayOptions(target=target, speed=100, max_seconds=10, drain_s=10, workers=4)
    agents = agents_from_scenario(scenario, 0.0, scenario.horizon_s)
    with grpc.insecure_channel(target) as channel:
        run = Replayer(channel, agents, calls, options, policy=scenario.policy).run()
        infos = _on_the_service(channel, run)
    assert run.rpc["errors"] == 0, run.rpc["errors_by_method"]
    assert "Cancel" not in run.rpc["requests_by_method"]
    outcomes = {c.call.call_id: c.outcome for c in run.calls}
    assert outcomes == {"c0": "completed", "c1": "expired", "c2": "expired", "c3": "expired"}
    for call_id in ("c1", "c2", "c3"):
        assert infos[call_id].status == pb.CALL_STATUS_EXPIRED
        assert [e.type for e in infos[call_id].timeline][-1] == "EXPIRED"
    kpis, records = replay_kpis(run, scenario)
    summary = summarize_replay(run, kpis)
    assert summary["calls"]["expired"] == 3
    assert "3 expired" in console.replay_text(summary)
    assert (kpis["overall"]["expired"], kpis["overall"]["answered"]) == (3, 1)
    assert kpis["overall"]["expire_rate"] == simulated.kpis["overall"]["expire_rate"] == 0.75
    for r in records:
        assert r.expired == (r.call_id != "c0")
        if r.expired:
            assert r.answered_s is None
            assert r.wait_s >= 99  # the service's clock, scaled: the limit and its tick


# --- a hand-back that overtakes an Accept's answer --------------------------------------------


class _OvertakenAccept(_CancelStub):
    """A routing stub whose Accept succeeds, but the events that follow it on the service
    (``events``: the call taken back from the agent, queued again, ...) reach the replay
    before the answer does; its Cancel finds the call abandoned."""

    def __init__(self, replayer: Replayer, events: list[tuple[pb.Event, float]]) -> None:
        super().__init__(pb.CALL_STATUS_ABANDONED)
        self.replayer, self.events = replayer, events

    def Accept(  # noqa: N802  # the stub's name
        self, request: routing_pb2.AcceptRequest, timeout: float
    ) -> routing_pb2.AcceptResponse:
        for event, now in self.events:
            self.replayer._on_event(event, now, 0.0)
        return routing_pb2.AcceptResponse(
            assignment=pb.Assignment(
                assignment_id=request.assignment_id,
                agent_id="ana",
                fencing_token=request.fencing_token,
            )
        )


def _overtaken_accept(
    monkeypatch: pytest.MonkeyPatch,
    *,
    reassigned: bool,
    patience_s: float = 50.0,
    overtaken: bool = True,
) -> tuple[Replayer, _Live, Any]:
    """A voice call (arrival 0, patience ``patience_s``, handle 60 s) queued, offered to Ana
    at 29.5 s and accepted; the service takes it back from her at 30 s (she left), queues it
    again and, if ``reassigned``, gives it to Bob at 30.1 s - all of which the replay learns
    before the Accept's answer, which it reads at 30.2 s (x100; the scheduler is not
    started: what is scheduled stays in its heap); or, not ``overtaken``, after it, at
    30.3 s."""
    scenario = parse_scenario(HANDED_BACK, name="handed back")
    speed = 100.0
    options = ReplayOptions(target="127.0.0.1:1", speed=speed, max_seconds=10, drain_s=10)
    agents = agents_from_scenario(scenario, 0.0, scenario.horizon_s)
    call = TraceCall(0.0, "raced", Channel.VOICE, handle_s=60.0, patience_s=patience_s)
    with grpc.insecure_channel("127.0.0.1:1") as channel:
        replayer = Replayer(channel, agents, [call], options, policy=scenario.policy)
    t0 = replayer._t0

    def at(scenario_s: float) -> float:
        return t0 + scenario_s / speed

    def ms(scenario_s: float) -> int:
        return 1_000_000 + round(scenario_s / speed * 1000)

    live = _Live(call, "tag-raced", at(0), sent=at(0), queued=True, queued_ms=ms(0))
    replayer._live[call.call_id] = live
    replayer._by_wire[live.wire_id] = live
    replayer._pending = 1
    events = [
        (_call_event("RECLAIMED", live, ms(30), "ana", "a-1"), at(30)),
        (_call_event("QUEUED", live, ms(30)), at(30)),
    ]
    if reassigned:
        events.append((_call_event("ASSIGNED", live, ms(30.1), "bob", "a-2"), at(30.1)))
    stub = _OvertakenAccept(replayer, events if overtaken else [])
    replayer.routing = stub  # type: ignore[assignment]
    pool = ThreadPoolExecutor(1)
    replayer._pool = pool
    replayer._sched = _Scheduler(pool, replayer.stats)  # never started
    clock = SimpleNamespace(monotonic=lambda: at(30.2), perf_counter=time.perf_counter)
    monkeypatch.setattr(replay_module, "time", clock)
    replayer._on_event(_call_event("OFFERED", live, ms(29.5), "ana", "a-1"), at(29.5), 0.0)
    pool.shutdown(wait=True)  # the Accept is done
    if not overtaken:
        for event, _ in events:
            replayer._on_event(event, at(30.3), 0.0)
    return replayer, live, stub


def test_a_call_taken_back_before_its_accept_is_answered_waits_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The service takes a call back from Ana (RECLAIMED) right after she accepted it, and
    the replay sees that before the Accept's answer: it knows she no longer holds the call
    (no Complete is due for her assignment), counts it answered at the offer and handed back
    once, and the caller's patience applies again while it waits, as for any hand-back."""
    replayer, live, stub = _overtaken_accept(monkeypatch, reassigned=False)
    assert (live.active, live.answered, live.requeued) == (None, None, 1)
    assert replayer._sched._heap == []  # nothing due: no Complete of Ana's assignment
    replayer._patience(live)  # the caller's patience runs out at 50 s
    assert stub.cancelled == [live.wire_id]
    assert live.outcome == "abandoned"
    (observed,) = replayer._observed()
    assert (observed.answered, observed.requeued, observed.assignments) == (True, 1, 1)
    assert observed.wait_s == pytest.approx(29.5)
    ((agent_id, *held),) = observed.handed_back
    assert agent_id == "ana"
    assert held == pytest.approx([29.5, 29.5])  # one instant, the first answer's (the offer)
    assert observed.queued_until_s == pytest.approx(29.5)  # queued until the offer
    (waited,) = observed.waited_again  # from the service's hand-back until the caller hangs up
    assert waited == pytest.approx((30.0, 50.0))


def test_a_call_taken_back_and_reassigned_before_its_accept_is_answered_stays_with_the_new_agent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The service takes a call back from Ana right after she accepted it and gives it to
    Bob, all before the replay reads the Accept's answer: the replay keeps Bob as the agent
    who holds the call, completes his assignment, and counts Ana's as handed back, her
    answer (at the offer) as the call's first."""
    replayer, live, _ = _overtaken_accept(monkeypatch, reassigned=True)
    assert (live.active, live.agent_id, live.requeued) == (("a-2", 1), "bob", 1)
    assert len(replayer._sched._heap) == 1  # Bob's Complete
    replayer._finish(live, "completed", replayer._t0 + 90.1 / 100)  # Bob's Complete
    (observed,) = replayer._observed()
    assert (observed.agent_id, observed.requeued, observed.assignments) == ("bob", 1, 2)
    assert observed.wait_s == pytest.approx(29.5)
    assert observed.handle_s == pytest.approx(60.0)


def test_a_call_cut_after_a_hand_back_belongs_to_the_agent_the_cancel_finds() -> None:
    """Handed back by Ana at 10 s, the call waits; the drain limit's Cancel finds it
    assigned to Bob (whose ASSIGNED event the replay had not read yet): the cut call is
    Bob's, and Ana's only work on it is the 10 s she held it (it was credited to Ana)."""

    class Assigned(_CancelStub):
        def Cancel(  # noqa: N802  # the stub's name
            self, request: routing_pb2.CancelRequest, timeout: float
        ) -> routing_pb2.CancelResponse:
            self.cancelled.append(request.call_id)
            held = pb.Assignment(assignment_id="a-2", agent_id="bob")
            return routing_pb2.CancelResponse(
                call=pb.CallInfo(status=pb.CALL_STATUS_ASSIGNED, assignment=held)
            )

    call = TraceCall(0.0, "x", Channel.VOICE, handle_s=500.0)
    _, _, replayer, pool = _offline_replayer(HANDED_BACK, [call])
    replayer.routing = Assigned(pb.CALL_STATUS_ASSIGNED)  # type: ignore[assignment]
    t0 = replayer._t0
    live = _Live(call, "tag-x", t0, sent=t0)
    replayer._live["x"], replayer._by_wire["tag-x"] = live, live
    replayer._pending = 1
    replayer._on_assigned(live, "a-1", 1, "ana", t0, server_ms=1_000_000)
    replayer._on_event(_call_event("RECLAIMED", live, 1_000_100, "ana", "a-1"), t0 + 0.1, 0.0)
    replayer._cancel(live, "replay drain limit", cut=True)
    pool.shutdown()
    assert (live.outcome, live.agent_id) == ("cut", "bob")
    observed = {o.call.call_id: o for o in replayer._observed()}
    assert observed["x"].agent_id == "bob"


# --- offers that come back to the queue -------------------------------------------------------


class _Refused(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    """An Accept the service refused: the offer had ended (declined, timed out, taken back)."""

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.FAILED_PRECONDITION

    def details(self) -> str:
        return "the offer has ended"


class _OffersBack(_CancelStub):
    """A routing stub whose Accept refuses the offers in ``refused`` and takes the others,
    for the agents ``agents`` names."""

    def __init__(self, refused: set[str], agents: dict[str, str]) -> None:
        super().__init__(pb.CALL_STATUS_ABANDONED)
        self.refused, self.agents = refused, agents

    def Accept(  # noqa: N802  # the stub's name
        self, request: routing_pb2.AcceptRequest, timeout: float
    ) -> routing_pb2.AcceptResponse:
        if request.assignment_id in self.refused:
            raise _Refused()  # type: ignore[abstract]  # only code() and details() are read
        return routing_pb2.AcceptResponse(
            assignment=pb.Assignment(
                assignment_id=request.assignment_id,
                agent_id=self.agents[request.assignment_id],
                fencing_token=request.fencing_token,
            )
        )


class _Inline:
    """An executor that runs each task at once (the replay's Accepts, in the test's order)."""

    def submit(self, fn: Any, *args: Any, **kwargs: Any) -> None:
        fn(*args, **kwargs)


OFFERS_BACK_CALLS = [
    TraceCall(5.0, "offered", Channel.VOICE, handle_s=60.0),
    TraceCall(10.0, "queued", Channel.VOICE, handle_s=60.0),
]


@pytest.mark.parametrize("kind", ["REJECTED", "OFFER_TIMED_OUT", "RECLAIMED"])
def test_a_call_whose_offer_comes_back_waits_again_in_the_queue(kind: str) -> None:
    """Two offers come back unaccepted (declined, timed out, or taken back from an agent
    who left): Bob's of a call Assign offered him at once (5 s), at 25 s, and Cy's of a
    call the dispatcher offered her from the queue (10 s, offered at 40 s), at 45 s. Each
    call waits in the queue again from then until Ana's and Dan's offers at 100 s, which
    they accept. The queue trace counts both spells (two calls waiting from 45 s), not the
    5 s Cy's offer rang, and each call's wait runs from its arrival to the accepted offer,
    as the service's GetStats counts it (not from its return to the queue)."""
    scenario, _, replayer, pool = _offline_replayer(HANDED_BACK, OFFERS_BACK_CALLS)
    replayer.routing = _OffersBack(  # type: ignore[assignment]
        {"a-1", "a-2"}, {"a-3": "ana", "a-4": "dan"}
    )
    replayer._pool = _Inline()  # type: ignore[assignment]
    t0 = replayer._t0  # the first call's arrival, 5 s, at x100

    def at(scenario_s: float) -> float:
        return t0 + (scenario_s - 5) / 100

    def ms(scenario_s: float) -> int:
        return 1_000_000 + round(scenario_s / 100 * 1000)

    offered, queued = (
        _Live(call, f"tag-{call.call_id}", at(call.arrival_s), sent=at(call.arrival_s))
        for call in OFFERS_BACK_CALLS
    )
    for live in (offered, queued):
        replayer._live[live.call.call_id] = live
        replayer._by_wire[live.wire_id] = live
    replayer._pending = 2
    replayer._on_offered(offered, "a-1", 1, ms(5))  # Assign's answer: RESULT_OFFERED
    queued.queued = True  # Assign's answer: RESULT_QUEUED
    for scenario_s, event in [
        (5, _call_event("OFFERED", offered, ms(5), "bob", "a-1")),
        (10, _call_event("QUEUED", queued, ms(10))),
        (25, _call_event(kind, offered, ms(25), "bob", "a-1")),
        (25, _call_event("QUEUED", offered, ms(25))),
        (40, _call_event("OFFERED", queued, ms(40), "cy", "a-2")),
        (45, _call_event(kind, queued, ms(45), "cy", "a-2")),
        (45, _call_event("QUEUED", queued, ms(45))),
        (100, _call_event("OFFERED", offered, ms(100), "ana", "a-3")),
        (100, _call_event("OFFERED", queued, ms(100), "dan", "a-4")),
    ]:
        replayer._on_event(event, at(scenario_s), 0.0)
    for live in (offered, queued):
        replayer._finish(live, "completed", at(160))  # the Completes
    pool.shutdown()
    observed = {o.call.call_id: o for o in replayer._observed()}
    assert {k: o.agent_id for k, o in observed.items()} == {"offered": "ana", "queued": "dan"}
    assert [o.wait_s for o in observed.values()] == pytest.approx([95.0, 90.0])
    assert observed["offered"].queued_until_s is None  # offered on arrival
    assert [list(w) for w in observed["offered"].waited_again] == [pytest.approx([25, 100])]
    assert observed["queued"].queued_until_s == pytest.approx(40.0)
    assert [list(w) for w in observed["queued"].waited_again] == [pytest.approx([45, 100])]
    run = _run_of(replayer, scenario, tuple(observed.values()), end_s=300.0, start_s=5.0)
    records, _, trace = observed_results(run)
    assert [r.wait_s for r in records] == pytest.approx([95.0, 90.0])
    waiting = {at_s: _waiting(trace, at_s) for at_s in (7, 15, 30, 42, 50, 110)}
    assert waiting == {7: 0, 15: 1, 30: 2, 42: 1, 50: 2, 110: 0}
    kpis, _ = replay_kpis(run, scenario)
    assert kpis["timeline"]["queue_max"] == [2]
    assert kpis["overall"]["asa_s"] == pytest.approx(92.5)


OFFER_BACK: dict[str, object] = {
    "name": "offer back",
    "duration_s": 300,
    "drain_s": 300,
    "policy": {
        "strategy": "longest_idle",
        "offer_timeout_s": {"voice": 1},
        "max_missed_offers": 0,
    },
    "sla": {"voice": 20},
    "agents": [{"id": "ana", "channels": ["voice"]}, {"id": "bob", "channels": ["voice"]}],
    "arrivals": [{"channel": "voice", "rate_per_hour": 1, "handle": 100}],
}
"""Two agents; a voice offer times out after a second on the service's (real) clock."""


class _LateAccept:
    """The replay's routing stub, whose Accept of the first offer of ``call_id`` (the
    replay's own wire id) reaches the service ``delay_s`` late: after the offer timed out."""

    def __init__(self, stub: Any, replayer: Replayer, call_id: str, delay_s: float) -> None:
        self._stub, self._replayer, self._call_id, self._delay_s = stub, replayer, call_id, delay_s
        self._late = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stub, name)

    def Accept(  # noqa: N802  # the stub's name
        self, request: routing_pb2.AcceptRequest, timeout: float
    ) -> routing_pb2.AcceptResponse:
        live = self._replayer._live[self._call_id]
        if request.assignment_id in live.offers and not self._late.is_set():
            self._late.set()
            time.sleep(self._delay_s)
        response: routing_pb2.AcceptResponse = self._stub.Accept(request, timeout=timeout)
        return response


@pytest.mark.timeout(60)
def test_a_replayed_call_whose_offer_timed_out_waits_again_until_the_next_offer(
    service: tuple[RunningServer, str],
) -> None:
    """Live at x20: Assign offers the first call to one agent (who takes it for 100 s) and
    the second, at 5 s, to the other, whose Accept reaches the service after the offer
    timed out (a second, 20 s of the scenario): the service puts the call back in the queue,
    where it waits until the first agent is free at 100 s. The replay counts that spell in
    its queue trace, and the call's wait from its arrival (95 s), as the service does."""
    _, target = service
    scenario = parse_scenario(OFFER_BACK, name="offer back")
    calls = [
        TraceCall(0.0, "first", Channel.VOICE, handle_s=100.0),
        TraceCall(5.0, "late", Channel.VOICE, handle_s=60.0),
    ]
    speed = 20.0
    options = ReplayOptions(target=target, speed=speed, max_seconds=5, drain_s=15, workers=4)
    agents = agents_from_scenario(scenario, 0.0, scenario.horizon_s)
    with grpc.insecure_channel(target) as channel:
        replayer = Replayer(channel, agents, calls, options, policy=scenario.policy)
        replayer.routing = _LateAccept(replayer.routing, replayer, "late", 1.5)  # type: ignore[assignment]
        run = replayer.run()
        infos = _on_the_service(channel, run)
    assert run.rpc["errors"] == 0, run.rpc["errors_by_method"]
    kinds = [e.type for e in infos["late"].timeline]
    assert kinds[:3] == ["OFFERED", "OFFER_TIMED_OUT", "QUEUED"], kinds
    assert {c.call.call_id: (c.outcome, c.queued) for c in run.calls} == {
        "first": ("completed", False),
        "late": ("completed", False),
    }
    records, _, trace = observed_results(run)
    late = next(r for r in records if r.call_id == "late")
    waited = infos["late"].waited.ToMilliseconds() / 1000 * speed  # to the second offer
    assert late.wait_s == pytest.approx(waited, abs=3)
    assert late.wait_s > 90  # from its arrival, not from its return to the queue (75 s)
    assert [_waiting(trace, at_s) for at_s in (10, 40, 90, 110)] == [0, 1, 1, 0]
    kpis, _ = replay_kpis(run, scenario)
    assert kpis["timeline"]["queue_max"] == [1]


# --- the caller's patience against an Accept, a reclaim, an assignment ------------------------


@pytest.mark.parametrize("overtaken", [True, False], ids=["hand-back-read-first", "accept-first"])
def test_a_caller_whose_patience_ran_out_between_the_accept_and_the_hand_back_waits_on(
    monkeypatch: pytest.MonkeyPatch, overtaken: bool
) -> None:
    """Ana accepts the call offered to her at 29.5 s, the caller's patience runs out at
    29.8 s and the service takes the call back from her at 30 s. As in the simulator, whose
    hang-up timer finds the call held, the caller waits on after the hand-back, whichever of
    the Accept's answer and the hand-back's event the replay reads first: no Cancel is sent,
    however late the patience timer looks (it waited for the Accept's answer)."""
    replayer, live, stub = _overtaken_accept(
        monkeypatch, reassigned=False, patience_s=29.8, overtaken=overtaken
    )
    assert (live.active, live.answered, live.requeued) == (None, None, 1)
    replayer._patience(live)  # the timer, put off while the Accept was on its way
    assert stub.cancelled == []
    assert (live.outcome, live.waits_on) == ("", True)
    (observed,) = replayer._observed()
    assert observed.answered
    assert observed.wait_s == pytest.approx(29.5)


class _Service(_CancelStub):
    """A routing stub that answers as the service would: ``Cancel`` finds the call held by
    the agent ``held`` names (an assignment made at 49.9 s, when the replay is at x100 from
    1 000 000 ms), or else waiting or ringing; an Accept that reaches it before the Cancel
    takes the call. ``on_cancel`` runs as the Cancel reaches it (events the replay reads
    meanwhile)."""

    def __init__(self, held: str = "", on_cancel: Any = None) -> None:
        super().__init__(pb.CALL_STATUS_ABANDONED)
        self.held, self.on_cancel, self.accepted = held, on_cancel, list[str]()

    def Accept(  # noqa: N802  # the stub's name
        self, request: routing_pb2.AcceptRequest, timeout: float
    ) -> routing_pb2.AcceptResponse:
        self.accepted.append(request.assignment_id)
        self.held = self.held or "ana"
        return routing_pb2.AcceptResponse(
            assignment=pb.Assignment(
                assignment_id=request.assignment_id,
                agent_id="ana",
                fencing_token=request.fencing_token,
            )
        )

    def Cancel(  # noqa: N802  # the stub's name
        self, request: routing_pb2.CancelRequest, timeout: float
    ) -> routing_pb2.CancelResponse:
        self.cancelled.append(request.call_id)
        if self.on_cancel is not None:
            self.on_cancel()
        if not self.held:
            return routing_pb2.CancelResponse(call=pb.CallInfo(status=pb.CALL_STATUS_ABANDONED))
        made = timestamp_pb2.Timestamp()
        made.FromMilliseconds(1_000_000 + 499)
        held = pb.Assignment(assignment_id="a-1", agent_id=self.held, created_at=made)
        return routing_pb2.CancelResponse(
            call=pb.CallInfo(status=pb.CALL_STATUS_CANCELLED, assignment=held)
        )


def _patient_caller(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[Scenario, Replayer, _Live, Any, Any]:
    """A voice call (arrival 0, patience 50 s) queued at x100 on a replayer whose clock
    stands at 50.01 s and whose pool runs each Accept at once; ``at`` and ``ms`` map a
    scenario second to the client's clock and the service's."""
    call = TraceCall(0.0, "patient", Channel.VOICE, handle_s=60.0, patience_s=50.0)
    scenario, _, replayer, pool = _offline_replayer(HANDED_BACK, [call])
    pool.shutdown()
    replayer._pool = _Inline()  # type: ignore[assignment]
    t0 = replayer._t0

    def at(scenario_s: float) -> float:
        return t0 + scenario_s / 100

    def ms(scenario_s: float) -> int:
        return 1_000_000 + round(scenario_s / 100 * 1000)

    clock = SimpleNamespace(monotonic=lambda: at(50.01), perf_counter=time.perf_counter)
    monkeypatch.setattr(replay_module, "time", clock)
    live = _Live(call, "tag-patient", at(0), sent=at(0), queued=True, queued_ms=ms(0))
    replayer._live[call.call_id], replayer._by_wire[live.wire_id] = live, live
    replayer._pending = 1
    return scenario, replayer, live, at, ms


def test_an_offer_read_while_the_callers_cancel_is_on_its_way_is_not_accepted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The caller's patience runs out at 50 s and the replay sends its Cancel; while that is
    on its way, the replay reads the offer the dispatcher made at 49.9 s. It does not accept
    it (the caller hung up first): the Cancel finds the call ringing, and the call counts
    once, abandoned after its patience and never answered, as the service counts it - not
    by which of an Accept and the Cancel reached the service first."""
    _, replayer, live, at, ms = _patient_caller(monkeypatch)

    def offered() -> None:
        event = _call_event("OFFERED", live, ms(49.9), "ana", "a-1")
        replayer._on_event(event, at(50.01), 0.0)

    stub = _Service(on_cancel=offered)
    replayer.routing = stub  # type: ignore[assignment]
    replayer._patience(live)
    assert (stub.cancelled, stub.accepted) == ([live.wire_id], [])
    (observed,) = replayer._observed()
    assert (observed.outcome, observed.answered, observed.wait_s) == ("abandoned", False, 50.0)
    assert observed.queued_until_s == pytest.approx(49.9)  # then it rang


@pytest.mark.parametrize("event_first", [True, False], ids=["event-first", "cancel-first"])
def test_a_cancel_that_finds_the_call_assigned_counts_it_answered_at_the_assignment(
    monkeypatch: pytest.MonkeyPatch, event_first: bool
) -> None:
    """The dispatcher gave the call to Bob at 49.9 s (no offer) and the caller's patience
    runs out at 50 s, before the replay read the ASSIGNED event: the Cancel finds the call
    held and frees Bob. The call counts once, as the service counts it: answered at the
    assignment (a wait of 49.9 s on the service's clock), then cancelled, not abandoned -
    whether the replay reads the event before the Cancel's answer or after it."""
    scenario, replayer, live, at, ms = _patient_caller(monkeypatch)
    assigned = _call_event("ASSIGNED", live, ms(49.9), "bob", "a-1")
    stub = _Service(
        held="bob",
        on_cancel=(lambda: replayer._on_event(assigned, at(50.01), 0.0)) if event_first else None,
    )
    replayer.routing = stub  # type: ignore[assignment]
    replayer._patience(live)
    if not event_first:
        replayer._on_event(assigned, at(50.02), 0.0)
    assert stub.cancelled == [live.wire_id]
    (observed,) = replayer._observed()
    assert (observed.outcome, observed.answered, observed.agent_id) == ("cancelled", True, "bob")
    assert observed.wait_s == pytest.approx(49.9)
    assert observed.assignments == 1
    run = _run_of(replayer, scenario, (observed,), end_s=60.0)
    kpis, _ = replay_kpis(run, scenario)
    assert (kpis["overall"]["answered"], kpis["overall"]["abandoned"]) == (1, 0)
    calls = summarize_replay(run, kpis)["calls"]
    assert (calls["answered"], calls["abandoned"], calls["cancelled_after_answer"]) == (1, 0, 1)
