"""``MemoryStore`` and ``RedisStore`` behave identically: the same random walks of store calls
(seeded) run on both, on one ``FakeClock``, and every answer, error and, every few steps, the
whole visible state (agents, calls, queue, history, timelines, events) must be equal.

Assignment ids are random uuids in both stores, so answers are compared after replacing each
id by the assignment's fencing token (which both stores mint in the same order), event ids
(Redis stamps them with its own clock) are blanked, and an agent's ``active`` work, ordered
by start time and then id, is compared as a set.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import pytest
import redis

from router.domain import (
    AgentProfile,
    AgentSnapshot,
    Assignment,
    AssignmentState,
    Call,
    Channel,
    Explanation,
    Policy,
    Presence,
    SkillRequirement,
    Strategy,
    frozen_map,
)
from router.errors import RouterError
from router.memory_store import MemoryStore
from router.redis_store import RedisStore
from router.store import Claim, Committed, Event, Store
from tests.helpers import FakeClock

T = "acme"
AGENTS = ("a", "b", "c")
POLICY = Policy(max_missed_offers=2, max_queue=12, escalation_priority_boost=3)
CHANNELS = (Channel.VOICE, Channel.CHAT, Channel.EMAIL)
STEPS = 160


class Walker:
    """One store, the ids it minted (by token) and a normaliser for its answers."""

    def __init__(self, store: Store) -> None:
        """Wrap ``store``."""
        self.store = store
        self.by_token: dict[int, str] = {}
        self.names: dict[str, str] = {}

    def learn(self, value: object) -> None:
        """Remember the ids of the assignments in ``value``."""
        if isinstance(value, Assignment):
            self.by_token[value.token] = value.assignment_id
            self.names[value.assignment_id] = f"asg-{value.token}"
        elif isinstance(value, Committed):
            self.learn(value.assignment)
        elif isinstance(value, list | tuple):
            for item in value:
                self.learn(item)

    def norm(self, value: Any) -> Any:
        """``value`` with assignment ids replaced by tokens and event ids blanked."""
        if isinstance(value, str):
            for raw, name in self.names.items():
                value = value.replace(raw, name)
            return value
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            fields = [f for f in dataclasses.fields(value) if f.init]  # not derived values
            changes = {f.name: self.norm(getattr(value, f.name)) for f in fields}
            if isinstance(value, Event):
                changes["event_id"] = ""
            if isinstance(value, AgentSnapshot):
                changes["active"] = tuple(
                    sorted(changes["active"], key=lambda w: (w.start_ms, w.assignment_id))
                )
            return dataclasses.replace(value, **changes)
        if isinstance(value, list | tuple):
            return type(value)(self.norm(item) for item in value)
        if isinstance(value, Mapping):
            return {self.norm(k): self.norm(v) for k, v in value.items()}
        return value

    def call(self, action: Callable[[Store], object]) -> object:
        """Run ``action``; its answer or its error, normalised."""
        try:
            result = action(self.store)
        except RouterError as exc:
            return (type(exc).__name__, self.norm(str(exc)))
        self.learn(result)
        return self.norm(result)

    def state(self, calls: list[str]) -> object:
        """Everything a client can read."""
        store = self.store
        view = store.load_queue(T, 100)
        return (
            [self.call(partial(_get_agent, agent_id=a)) for a in AGENTS],
            [self.call(partial(_get_call, call_id=c)) for c in calls],
            [self.call(partial(_timeline, call_id=c)) for c in calls],
            self.norm((view.snapshot.agents, view.calls, view.depth, view.snapshot.policy)),
            self.norm(store.history(T, 0)),
            self.norm(store.read_events(T, "0", 10_000)),
            store.tenants(),
        )


def _get_agent(store: Store, agent_id: str) -> object:
    return store.get_agent(T, agent_id)


def _get_call(store: Store, call_id: str) -> object:
    return store.get_call(T, call_id)


def _timeline(store: Store, call_id: str) -> object:
    return store.call_timeline(T, call_id)


@dataclasses.dataclass(frozen=True)
class Move:
    """One random store call, with every parameter drawn up front."""

    kind: str
    agent: str
    token: int
    call: Call
    picked: str
    """An existing call id (for cancel, SLA, callback)."""
    offer_s: int
    fresh_seq: bool
    presence: Presence
    flag: bool
    """``timed_out`` for decline, ``breached`` for SLA marks."""
    end: AssignmentState
    wrap_up_s: int
    advance_ms: int

    @classmethod
    def draw(cls, rng: random.Random, now: int, calls: list[str], tokens: int) -> Move:
        """A random move at ``now``."""
        channel = rng.choice(CHANNELS)
        return cls(
            kind=rng.choice(KINDS),
            agent=rng.choice(AGENTS),
            token=rng.randint(1, max(1, tokens)),
            call=Call(
                f"c{len(calls)}",
                channel,
                required_skills=(SkillRequirement("billing", 2),),
                priority=rng.randint(0, 5),
                created_ms=now - rng.randint(0, 60_000),
            ),
            picked=rng.choice(calls) if calls else "none",
            offer_s=rng.choice([0, 0, 20]),
            fresh_seq=rng.random() < 0.9,
            presence=rng.choice([Presence.AVAILABLE, Presence.AVAILABLE, Presence.BREAK]),
            flag=rng.random() < 0.5,
            end=rng.choice(ENDS),
            wrap_up_s=rng.choice([0, 10]),
            advance_ms=rng.choice([1, 1_000, 15_000, 60_000]),
        )

    def claim(self, store: Store, call: Call, from_queue: bool) -> Claim:
        """A claim of ``call`` for the move's agent (on a stale seq one time in ten)."""
        return Claim(
            request_id="" if from_queue else f"r-{call.call_id}",
            fingerprint="fp",
            call=call,
            agent_id=self.agent,
            expected_seq=store.get_agent(T, self.agent).seq if self.fresh_seq else 0,
            units=POLICY.units_for(call.channel),
            heartbeat_timeout_s=0,
            explanation=Explanation(Strategy.BALANCED),
            offer_timeout_s=self.offer_s,
            from_queue=from_queue,
        )

    def run(self, walker: Walker) -> object:
        """Apply the move to one store."""
        s, asg_id = walker.store, walker.by_token.get(self.token, "none")
        actions: dict[str, Callable[[], object]] = {
            "presence": lambda: s.set_presence(T, self.agent, self.presence, "r"),
            "heartbeat": lambda: s.heartbeat(T, self.agent),
            "enqueue": lambda: s.enqueue(
                T, f"r-{self.call.call_id}", "fp", self.call, policy=POLICY
            ),
            "direct": lambda: s.commit_assignment(T, self.claim(s, self.call, False)),
            "dispatch": lambda: [
                s.commit_assignment(T, self.claim(s, queued, True))
                for queued in s.load_queue(T, 1).calls
            ],
            "accept": lambda: s.accept_offer(T, asg_id, self.token),
            "decline": lambda: s.decline_offer(
                T, asg_id, self.token, timed_out=self.flag, policy=POLICY
            ),
            "finish": lambda: s.finish_assignment(
                T,
                asg_id,
                self.token,
                self.end,
                outcome_value=0.5,
                half_life_s=60,
                wrap_up_s=self.wrap_up_s,
                policy=POLICY,
            ),
            "reclaim": lambda: s.reclaim(
                T, self.agent, channels=frozenset({self.call.channel}), policy=POLICY
            ),
            "cancel": lambda: s.cancel_call(T, self.picked),
            "sla": lambda: s.mark_sla(T, self.picked, breached=self.flag, policy=POLICY),
            "expire": lambda: s.expire_call(
                T,
                self.picked,
                max_wait_s=self.advance_ms // 1000,
                policy_version=s.get_policy(T).version if self.fresh_seq else 99,
            ),
            "callback": lambda: s.request_callback(T, self.picked),
            "expired": lambda: s.expired_offers(T, 100),
            "lease": lambda: s.acquire_lease(T, self.agent, 5_000),
            "pass": lambda: s.open_pass(T, self.agent, 5_000, 2_000 if self.flag else 0),
            "unlease": lambda: s.release_lease(T, self.agent),
            "policy": lambda: s.put_policy(T, POLICY).version,
            "advance": lambda: None,
        }
        return walker.call(lambda _: actions[self.kind]())


KINDS = (
    *("presence", "presence", "enqueue", "enqueue", "direct", "dispatch", "dispatch", "accept"),
    *("decline", "finish", "finish", "reclaim", "cancel", "sla", "callback", "advance"),
    *("advance", "expired", "lease", "pass", "unlease", "heartbeat", "policy", "expire"),
)
"""Move kinds, the frequent ones listed more than once."""
ENDS = (AssignmentState.COMPLETED, AssignmentState.RELEASED, AssignmentState.CANCELLED)


@pytest.mark.parametrize("seed", range(6))
def test_random_walks_agree(redis_client: redis.Redis, seed: int) -> None:
    """Both stores give equal answers and equal state along a seeded random walk."""
    clock = FakeClock()
    walkers = [Walker(MemoryStore(clock)), Walker(RedisStore(redis_client, clock))]
    rng = random.Random(seed)
    calls: list[str] = []
    for w in walkers:
        for agent in AGENTS:
            profile = AgentProfile(
                agent,
                skills=frozen_map({"billing": 3}),
                capacity=frozen_map({Channel.CHAT: 2, Channel.EMAIL: 2}),
            )
            w.store.create_agent(T, profile)
            w.store.set_presence(T, agent, Presence.AVAILABLE)
    for step in range(STEPS):
        move = Move.draw(rng, clock.now_ms, calls, len(walkers[0].by_token))
        answers = [move.run(w) for w in walkers]
        assert answers[0] == answers[1], (step, move, answers)
        if move.kind in ("enqueue", "direct"):
            calls.append(move.call.call_id)
        if move.kind == "advance":
            clock.advance(move.advance_ms)
        if step % 20 == 19:
            first, second = (w.state(calls) for w in walkers)
            assert first == second, f"state differs after step {step}"
    first, second = (w.state(calls) for w in walkers)
    assert first == second
