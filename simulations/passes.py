"""Dispatch passes: which waiting calls go to ``router.engine.decide`` with which agents.

The service's dispatcher places *all* waiting calls on *all* free capacity in one solve.
Passing every call and every agent to ``decide`` on every event would make a simulated day
take hours (the engine's cost grows with both), so a pass hands it only what can matter, in
ways that leave the decision unchanged:

1. **Buckets.** Waiting calls are grouped by identical hard requirements
   (``simulations.waiting``). A pass looks only at buckets that gained a call, or for which
   an agent who gained room is capable, or all of them after a wake-up: any other bucket
   could place nothing last time and nothing it depends on has changed.
2. **Agents.** Only *capable* (channel, skills, language) and *free* agents, and of those
   only the ones ``router.eligibility.check`` accepts for the bucket at its widening step:
   the others would be screened out by the engine. Verdicts are cached until the agent
   changes or the clock changes them (``simulations.verdicts``).
3. **Calls.** Calls with identical eligibility are served in queue order by every strategy,
   so a later one is placed only if an earlier one was: per bucket and widening step, only
   the first ``S`` calls in the engine's queue order are passed, ``S`` being the free slots
   of the accepted agents. A call that declined an agent (work reclaimed from them) is not
   alike: it is passed but not counted, as it may leave its slot to a later call.
4. **Baselines.** Longest-idle, round-robin and best-skill give each call the first
   eligible agent in their order: agents are tried in that order and the search stops once
   the pass has as many as it has calls (best-skill: free slots), as every call is then
   placed within that prefix. When a call passed has declined an agent, every agent is
   tried.
5. **Fast paths.** A lone call: the accepted agents it has not declined; one of them gets
   it. One agent and calls of one channel it has one slot for: the first call in
   ``router.ordering.queue_order`` it is eligible for gets it, which is what the flow and
   every baseline choose. A lone call under ``BALANCED``: only the agents that could be the
   cheapest (``simulations.shortlist``).
6. **Wake-ups.** Rules that change with the clock alone (occupancy cap, widening steps, SLA
   risk) schedule a pass at the moment they change, where the service ticks every second.

For the baselines the result is exactly that of one ``decide`` over all waiting calls and
all available agents on every event (``reference=True``; the tests compare the two); for
``BALANCED`` it can differ in cost ties only, as the engine breaks ties differently in a
one-call and a many-call solve.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

from router import eligibility
from router.dispatcher import widen_for_risk
from router.domain import Call, Decision, Exclusion, Policy, Snapshot, Strategy
from router.engine import decide
from router.ordering import queue_order
from router.widening import WidenedRequirements, applied_steps, widen
from scoring import performance
from scoring.match import skill_fit
from simulations.escalation import SlaWatch
from simulations.shortlist import Shortlist
from simulations.verdicts import OccupancyClock, Verdicts, shift_flip
from simulations.waiting import Bucket, BucketKey, Waiting, WaitingQueue
from simulations.workforce import SimAgent, Workforce

Pair = tuple[Waiting, Call]
"""A waiting call and the call as the engine must see it (escalated, widened)."""


class Group:
    """Waiting calls of one bucket at one widening step: identical hard requirements."""

    __slots__ = ("bucket", "match", "members", "plain", "step")

    def __init__(self, bucket: Bucket, step: int, match: set[str]) -> None:
        self.bucket = bucket
        self.step = step
        self.match = match
        self.members: list[Pair] = []
        """In queue order, at most as many as the capable agents have free slots, not
        counting calls that declined an agent."""
        self.plain = 0
        """Members that have declined nobody."""


def _prefix(members: list[Pair], n: int) -> list[Pair]:
    """The first ``members`` up to the ``n``-th that has declined nobody: a call that has
    declined an agent may leave that agent's slot to a later call, so it does not count."""
    if n < len(members):
        for i, (_, call) in enumerate(members):
            if not call.excluded_agents:
                n -= 1
                if n == 0:
                    return members[: i + 1]
    return members


class Dispatcher:
    """Runs the passes of one simulation."""

    def __init__(
        self,
        policy: Policy,
        workforce: Workforce,
        queue: WaitingQueue,
        *,
        seed: int,
        place: Callable[[Waiting, str], None],
        wake: Callable[[int], None],
        reference: bool = False,
        escalate: bool = True,
        shortlist: bool = True,
    ) -> None:
        self.policy = policy
        self.workforce = workforce
        self.queue = queue
        self.seed = seed
        self._place = place
        self._wake = wake
        self.reference = reference
        """Every pass decides all waiting calls on all available agents, with no pruning,
        cache or fast path: slow, the yardstick the tests compare the pruned passes with."""
        self.window_ms = policy.occupancy_window_s * 1000
        self.clock = OccupancyClock(policy, self.window_ms)
        self.sla = SlaWatch(policy, workforce, queue, enabled=escalate)
        self.shortlist = Shortlist(policy) if shortlist else None
        self.verdicts: dict[tuple[int, int], Verdicts] = {}
        """(bucket uid, widening step) -> cached verdicts on free agents."""
        self.passes = 0
        """Calls of ``decide``."""
        self._dummy_rng = random.Random(0)
        self._widened: dict[tuple[object, ...], WidenedRequirements] = {}
        """(required skills, team, steps) -> ``router.widening.widen`` of a call with them."""
        self._new_calls: set[BucketKey] = set()
        self._freed: set[str] = set()
        self._everything = False

    # --- what changed ------------------------------------------------------------------------

    def new_call(self, waiting: Waiting) -> None:
        """``waiting`` joined the queue."""
        self._new_calls.add(waiting.bucket.key)

    def gained_room(self, agent: SimAgent) -> None:
        """``agent`` freed a slot or became available."""
        self._freed.add(agent.agent_id)

    def woke(self) -> None:
        """A wake-up: something changed with the clock."""
        self._everything = True

    def agent_changed(self, agent: SimAgent) -> None:
        """``agent``'s state changed: the verdicts that rested on it are void."""
        for key in agent.verdicts_in:
            verdicts = self.verdicts.get(key)
            if verdicts is not None:
                verdicts.forget(agent.agent_id)
        agent.verdicts_in.clear()

    # --- a pass ------------------------------------------------------------------------------

    def run(self, now: int) -> None:
        """One pass at ``now`` (see the module docstring)."""
        if not self.queue:
            self._clear_marks()
            return
        if self.reference:
            self._clear_marks()
            self._run_all(now)
            return
        groups: list[Group] = []
        seen: list[Waiting] = []
        for bucket in self._touched_buckets():
            match = self.workforce.matching(bucket.need)
            if match:
                groups.extend(self._groups(bucket, match, seen, now))
        if not groups:
            return
        wanted: float = sum(len(g.members) for g in groups)
        if any(call.excluded_agents for g in groups for _, call in g.members):
            wanted = math.inf  # a call may decline the first agents in order: take them all
        pairs: list[Pair] = []
        agent_ids: set[str] = set()
        wake = math.inf
        for group in groups:
            eligible, until = self._eligible(group, wanted, now)
            wake = min(wake, until)
            if eligible:
                channel, agents = group.bucket.channel, self.workforce.agents
                # the free slots of the eligible agents, counted only as far as needed
                need, slots = len(group.members), 0
                for agent_id in eligible:
                    slots += agents[agent_id].room[channel]
                    if slots >= need:
                        break
                pairs.extend(_prefix(group.members, slots))
                agent_ids.update(eligible)
        if pairs:
            self._solve(pairs, agent_ids, now)
        # calls left waiting while agents are free: a widening step may open them up
        left = [w for w in seen if w.index in self.queue.by_index]
        wake = min(wake, self.sla.next_widening(left, now))
        if wake < math.inf:
            self._wake(int(wake))

    def _clear_marks(self) -> None:
        self._everything = False
        self._new_calls = set()
        self._freed = set()

    def _touched_buckets(self) -> list[Bucket]:
        """The buckets a pass must look at (see the module docstring); clears the marks."""
        buckets = list(self.queue.buckets.values())
        if not self._everything:
            keys, freed = self._new_calls, self._freed
            capable = self.workforce.capable
            buckets = [
                b
                for b in buckets
                if b.key in keys or (freed and not freed.isdisjoint(capable(b.need)))
            ]
        self._clear_marks()
        return buckets

    def _groups(
        self, bucket: Bucket, match: set[str], seen: list[Waiting], now: int
    ) -> list[Group]:
        """The calls of ``bucket`` free capacity could reach, as the engine must see them,
        grouped by widening step, each in queue order; the calls looked at go to ``seen``."""
        policy, agents, sla = self.policy, self.workforce.agents, self.sla
        # Every capable free agent has a slot: a bucket no longer than that needs no count.
        upper = len(bucket.items)
        if upper > len(match):
            upper = sum(agents[a].room[bucket.channel] for a in match)
        window = self._window(bucket, upper, now)
        seen.extend(window)
        if sla.enabled:
            for waiting in window:
                sla.escalate(waiting, now)
        calls = [self._as_decided(w, now) for w in window]
        by_step: dict[int, Group] = {}
        order = queue_order(calls, now, policy) if len(calls) > 1 else range(len(calls))
        for i in order:
            step = applied_steps(calls[i], now, policy) if policy.widening else 0
            group = by_step.get(step)
            if group is None:
                group = by_step[step] = Group(bucket, step, match)
            if calls[i].excluded_agents:
                group.members.append((window[i], calls[i]))
            elif group.plain < upper:
                group.members.append((window[i], calls[i]))
                group.plain += 1
        return list(by_step.values())

    def _window(self, bucket: Bucket, upper: int, now: int) -> list[Waiting]:
        """The calls of ``bucket`` that could be among the first ``upper`` in queue order
        (not counting calls that declined an agent: ``_prefix``), in store order."""
        if self.policy.widening:
            return [w for _, _, w in bucket.items]
        # Store order differs from queue order by overdue calls (first in the engine) and by
        # escalation boosts (at most boost_ms earlier): walk past both.
        sla = self.sla
        margin = sla.boost_ms if sla.enabled else 0
        threshold = sla.overdue_ms[bucket.channel]
        cutoff = now - threshold if threshold is not None else -math.inf
        window: list[Waiting] = []
        declined = 0
        for key, _, waiting in bucket.items:
            if len(window) >= upper + declined:
                last = window[upper + declined - 1].key
                if key > last + margin and key > cutoff:
                    break
            window.append(waiting)
            if waiting.call.excluded_agents:
                declined += 1
        return window

    def requirements(self, call: Call, now: int) -> WidenedRequirements:
        """``router.widening.requirements``, memoised: ``widen`` reads only the call's
        required skills and team and the number of steps applied."""
        policy = self.policy
        steps = applied_steps(call, now, policy) if policy.widening else 0
        key = (call.required_skills, call.team, steps)
        found = self._widened.get(key)
        if found is None:
            found = self._widened[key] = widen(call, steps, policy)
        return found

    def _as_decided(self, waiting: Waiting, now: int) -> Call:
        """The call as the engine sees it: an at-risk call one widening step ahead."""
        if waiting.at_risk and self.policy.widening:
            return widen_for_risk(waiting.call, now, self.policy)
        return waiting.call

    def _eligible(self, group: Group, wanted: float, now: int) -> tuple[list[str], float]:
        """Free agents of ``group.match`` that ``router.eligibility.check`` accepts for the
        group's calls, and the earliest moment a refusal lapses (occupancy falling)."""
        policy, agents, clock = self.policy, self.workforce.agents, self.clock
        channel = group.bucket.channel
        call = group.members[0][1]
        if call.excluded_agents:  # declines are per call: the engine applies them
            call = replace(call, excluded_agents=())
        key = (group.bucket.uid, group.step)
        verdicts = self.verdicts.get(key)
        if verdicts is None:
            verdicts = self.verdicts[key] = Verdicts()
        until = verdicts.expire(now)
        open_ids = group.match - verdicts.refused if verdicts.refused else group.match
        ordered = self._ranked(open_ids, call, now)
        if ordered is None:
            # balanced and random need every eligible agent: the known ones by set algebra
            eligible = list(open_ids & verdicts.accepted)
            candidates: Iterator[str] = iter(open_ids - verdicts.accepted)
            enough = math.inf
        else:
            eligible, candidates, enough = [], ordered, wanted
        accepted = verdicts.accepted
        by_slots = policy.strategy == Strategy.BEST_SKILL
        handle_ms = policy.reserved_s_for(call) * 1000
        widened = self.requirements(call, now)
        found = 0
        for agent_id in candidates:
            agent = agents[agent_id]
            if agent_id not in accepted:
                # idle, the cap verdict is cached: pass an occupancy on the same side of it;
                # with work in hand the engine computes it, if the other rules pass
                busy = None
                if self.window_ms <= 0:
                    busy = 0.0  # no window, no occupancy
                elif not agent.work:
                    busy = 0.0 if clock.under_cap(agent, now) else 1.0
                snap = agent.snapshot(now, self.window_ms)
                reason = eligibility.check(call, snap, now, policy, occupancy=busy, widened=widened)
                agent.verdicts_in.add(key)
                if reason is not None:
                    lapse = math.inf
                    if reason == Exclusion.OCCUPANCY_CAP:
                        lapse = clock.release_at(agent, now)
                    verdicts.refuse(agent_id, lapse)
                    until = min(until, lapse)
                    continue
                lasts = shift_flip(agent.profile, now, handle_ms)
                if agent.work:
                    lasts = min(lasts, clock.rise_at(agent, now))
                verdicts.accept(agent_id, lasts)
            eligible.append(agent_id)
            # best-skill keeps taking its first agent until full; the rotating baselines
            # move an agent behind all others once it is given a call
            found += agent.room[channel] if by_slots else 1
            if found >= enough:
                break
        return eligible, until

    def _ranked(self, agent_ids: set[str], call: Call, now: int) -> Iterator[str] | None:
        """``agent_ids`` in the order a sequential baseline prefers them for ``call``
        (``router.baselines``), lazily; ``None`` for balanced and random (they need all)."""
        strategy, agents = self.policy.strategy, self.workforce.agents
        keyed: list[tuple[Any, ...]]
        if strategy == Strategy.LONGEST_IDLE:  # the engine's key: an absence's end, which
            # it also counts for an agent holding nothing, moved last_free_ms here already
            keyed = [
                (max(agents[a].last_free_ms, agents[a].last_assigned_ms), a) for a in agent_ids
            ]
        elif strategy == Strategy.ROUND_ROBIN:
            keyed = [(agents[a].last_assigned_ms, a) for a in agent_ids]
        elif strategy == Strategy.BEST_SKILL:
            policy = self.policy
            keyed = [
                (
                    -skill_fit(call, agents[a].spec.skills),
                    -performance.score(agents[a].performance, now, policy),
                    a,
                )
                for a in agent_ids
            ]
        else:
            return None
        heapq.heapify(keyed)
        return (heapq.heappop(keyed)[-1] for _ in range(len(keyed)))

    def _solve(self, pairs: list[Pair], agent_ids: set[str], now: int) -> None:
        """Decide ``pairs`` on ``agent_ids`` and apply the placements."""
        policy, workforce = self.policy, self.workforce
        agents = [workforce.agents[a] for a in sorted(agent_ids)]
        calls = [call for _, call in pairs]
        if len(calls) == 1:
            # The lone call's group accepted these agents (``_eligible``): each is eligible
            # for the call itself unless the call declined them.
            declined = calls[0].excluded_agents
            if declined:
                agents = [a for a in agents if a.agent_id not in declined]
            if len(agents) == 1:
                self._place(pairs[0][0], agents[0].agent_id)
                return
            if not agents:
                return
        elif len(agents) == 1:
            agent = agents[0]
            if (
                len({c.channel for c in calls}) == 1
                and agent.free_slots(calls[0].channel, policy) == 1
            ):
                snap = agent.snapshot(now, self.window_ms)
                for i in queue_order(calls, now, policy):
                    call = calls[i]
                    widened = self.requirements(call, now)
                    if eligibility.check(call, snap, now, policy, widened=widened) is None:
                        self._place(pairs[i][0], agent.agent_id)
                        return
                return
        if len(calls) == 1 and policy.strategy == Strategy.BALANCED and self.shortlist:
            agents = self.shortlist.agents_for(calls[0], agents, now, self.window_ms)
            if len(agents) == 1:  # the engine's choice
                self._place(pairs[0][0], agents[0].agent_id)
                return
        self._apply(pairs, self._decide(agents, calls, now))

    def _decide(self, agents: Sequence[SimAgent], calls: list[Call], now: int) -> Decision:
        """``router.engine.decide`` on ``agents``' snapshots (the random strategy gets a
        ``Random`` seeded from the run's seed and the time, as the service seeds one per
        request)."""
        policy = self.policy
        self.passes += 1
        rng = self._dummy_rng
        if policy.strategy == Strategy.RANDOM:
            rng = random.Random(f"{self.seed}:{now}")
        snaps = tuple(a.snapshot(now, self.window_ms) for a in agents)
        return decide(Snapshot(now_ms=now, policy=policy, agents=snaps), calls, rng=rng)

    def _apply(self, pairs: list[Pair], decision: Decision) -> None:
        waiting_of = {call.call_id: waiting for waiting, call in pairs}
        for placement in decision.placements:
            if placement.agent_id is not None:
                self._place(waiting_of[placement.call_id], placement.agent_id)

    def _run_all(self, now: int) -> None:
        """The reference pass: every waiting call on every available agent, one ``decide``."""
        waiting = sorted(self.queue.by_index.values(), key=lambda w: (w.key, w.call.call_id))
        if self.sla.enabled:
            for w in waiting:
                self.sla.escalate(w, now)
        agents = [a for a in self.workforce.agents.values() if a.available]
        if agents:
            pairs = [(w, self._as_decided(w, now)) for w in waiting]
            self._apply(pairs, self._decide(agents, [c for _, c in pairs], now))
        if not self.queue:
            return
        # time-driven rules: look again when one changes (the service ticks every second)
        left = [w for w in waiting if w.index in self.queue.by_index]
        soonest = self.sla.next_widening(left, now)
        if self.policy.occupancy_window_s > 0:
            for agent in agents:
                if not self.clock.under_cap(agent, now):
                    soonest = min(soonest, self.clock.release_at(agent, now))
        if soonest < math.inf:
            self._wake(int(soonest))
