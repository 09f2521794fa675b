"""A waiting call's estimated wait counts the calls ahead of it on its own channel: those are
the calls its channel's agents serve first (``router.forecast.estimated_wait_s``). Calls of
other channels ahead in the tenant's queue do not lengthen it, neither for the Assign's
answer (and its callback offer) nor for the dispatcher's SLA marks. In-memory store, the
real assigner and dispatcher."""

from __future__ import annotations

from router.assigner import Assigner, AssignResult, Outcome
from router.dispatcher import Dispatcher
from router.domain import (
    AgentProfile,
    Call,
    Channel,
    Policy,
    Presence,
    SkillRequirement,
    frozen_map,
)
from router.memory_store import MemoryStore
from tests.helpers import FakeClock

T = "acme"


Tenant = tuple[MemoryStore, FakeClock, Assigner, Dispatcher]


def _tenant(*, callback_threshold_s: int = 0) -> Tenant:
    """A voice-only agent and a chat-and-social agent with three slots, each busy."""
    clock = FakeClock()
    store = MemoryStore(clock)
    store.put_policy(T, Policy(callback_threshold_s=callback_threshold_s))
    dispatcher = Dispatcher(store, owner="me")
    assigner = Assigner(store, dispatcher=dispatcher)
    voice = frozen_map({Channel.VOICE: 1, Channel.CHAT: 0, Channel.SOCIAL: 0})
    text = frozen_map({Channel.VOICE: 0, Channel.CHAT: 3, Channel.SOCIAL: 3})
    for agent_id, capacity in (("vic", voice), ("cat", text)):
        skills = frozen_map({"billing": 5})
        store.create_agent(T, AgentProfile(agent_id, skills=skills, capacity=capacity))
        store.set_presence(T, agent_id, Presence.AVAILABLE)
    assert _assign(assigner, clock, "v0", Channel.VOICE).outcome == Outcome.ASSIGNED
    for n in range(3):
        assert _assign(assigner, clock, f"c{n}", Channel.CHAT).outcome == Outcome.ASSIGNED
    return store, clock, assigner, dispatcher


def _assign(assigner: Assigner, clock: FakeClock, call_id: str, channel: Channel) -> AssignResult:
    clock.advance(10)
    call = Call(call_id, channel, (SkillRequirement("billing", 1),), created_ms=clock.now_ms)
    return assigner.assign(T, f"r-{call_id}", call)


def test_an_assigns_estimate_counts_only_its_channels_calls_ahead() -> None:
    """A chat call behind three waiting voice calls is at place 4 of the tenant's queue but
    first of the chats: told the wait of the first chat in line, and offered no callback
    for the voice calls' sake."""
    answers = []
    for voice_ahead in (0, 3):
        _, clock, assigner, _ = _tenant(callback_threshold_s=500)
        for n in range(voice_ahead):
            assert _assign(assigner, clock, f"v{n + 1}", Channel.VOICE).outcome == Outcome.QUEUED
        answers.append(_assign(assigner, clock, "c3", Channel.CHAT))
    alone, behind_voice = answers
    assert (alone.position, behind_voice.position) == (1, 4)
    assert behind_voice.estimated_wait_s == alone.estimated_wait_s > 0
    assert not behind_voice.callback_offered


def test_the_dispatchers_sla_marks_count_only_the_channels_calls_ahead() -> None:
    """A social call (a one-hour target) behind twelve waiting voice calls is not at risk:
    the voice calls wait for the voice agent, not for the social one."""
    store, clock, assigner, dispatcher = _tenant()
    for n in range(12):
        assert _assign(assigner, clock, f"v{n + 1}", Channel.VOICE).outcome == Outcome.QUEUED
    assert _assign(assigner, clock, "s3", Channel.SOCIAL).outcome == Outcome.ASSIGNED  # a slot
    for n in range(2):  # fill the social agent's last slots
        _assign(assigner, clock, f"s{4 + n}", Channel.SOCIAL)
    waiting = _assign(assigner, clock, "s9", Channel.SOCIAL)
    assert waiting.outcome == Outcome.QUEUED
    dispatcher.run_once(T)
    record = store.get_call(T, "s9")
    assert not record.sla_at_risk
    assert record.call.priority == 0
