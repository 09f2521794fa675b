"""What a live replay measured: ``replay.json``, and the KPIs of the service's real decisions.

The client's observations (when each call was sent, answered, completed, abandoned or
expired, by whom) become the same per-call records and per-agent busy intervals the offline
simulator produces, and ``simulations.kpis.compute_kpis`` turns them into the same ``kpis.json``
document, so a replay and a simulation of one trace compare field by field and the same
HTML report reads both.

Measured window: from the first arrival to the last call's end, in scenario seconds. Busy
time runs from the answer to the Complete plus the channel's wrap-up the service applied
(it holds the slot that long: the wrap-up it was given, in whole seconds, scaled back by
``speed``, not the scenario's where the compression rounded it), or from the answer to the
hand-back for a call that went back to the queue (released, or reclaimed from an agent who
left); logged-in time is when the agent was AVAILABLE by its schedule.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping
from typing import Any

from simulations.kpis import QueueLevels, busy_items, compute_kpis
from simulations.model import Scenario
from simulations.replay import ObservedCall, ReplayRun
from simulations.replay_plan import ReplayAgent
from simulations.simulator import AgentResult, CallResult


def _record(o: ObservedCall, run: ReplayRun) -> CallResult:
    """The simulator's record of the call (``CallResult``), counted by its first outcome as
    the simulator counts it: a call an agent answered is answered at that first answer, its
    wait running to it and within the SLA by it, whatever happened next; one handed back to
    the queue and then abandoned or expired is abandoned or expired as well, completed by
    nobody. A completed call's agent, handle time and end are those of the agent who
    completed it, from that agent's answer."""
    assert o.sent_s is not None  # only sent calls become records
    answered, held = o.answered_s, o.last_answered_s
    end = o.ended_s if o.ended_s is not None else run.end_s
    wait = o.wait_s if o.wait_s is not None else max(0.0, end - o.sent_s)
    completed = answered is not None and held is not None and o.outcome in {"completed", "cut"}
    handle = o.handle_s if completed else None
    target = run.policy.sla.get(o.call.channel)
    return CallResult(
        call_id=o.call.call_id,
        channel=o.call.channel,
        arrival_s=o.sent_s,
        answered_s=answered,
        wait_s=wait,
        abandoned=o.outcome == "abandoned",
        agent_id=o.agent_id if completed else "",
        handle_s=handle,
        end_s=held + handle if held is not None and handle is not None else None,
        skill_match=o.skill_match if completed else None,
        within_sla=answered is not None and (target is None or wait <= target.target_s),
        priority=o.call.priority,
        quality=o.effective_quality if completed else None,
        reclaimed=o.requeued,
        expired=o.outcome == "expired",
    )


def _staffed(agent: ReplayAgent, start: float, end: float) -> list[tuple[float, float]]:
    """When ``agent`` was AVAILABLE in ``[start, end]`` by its presence schedule."""
    if not agent.presence:
        return [(start, end)]
    spans = []
    changes = [*agent.presence, (end, "end")]
    for (at, state), (until, _) in itertools.pairwise(changes):
        lo, hi = max(at, start), min(until, end)
        if state == "available" and hi > lo:
            spans.append((lo, hi))
    return spans


def observed_results(
    run: ReplayRun,
) -> tuple[list[CallResult], dict[str, AgentResult], QueueLevels]:
    """The replay as simulator results: records, agents' intervals, queue-length changes
    (a call waits from its arrival if Assign queued it, and from each return to the queue -
    a hand-back, or an offer declined, timed out or taken back before it was accepted -
    until it left the queue: offered or given to an agent, hung up, expired or cut).
    An agent is busy with a call it completed from its answer to the end plus the wrap-up
    the service applied (``ReplayRun.wrap_up_s``), and with one it gave back to the queue
    (released, or had reclaimed) from its answer to the hand-back, with no wrap-up (the
    service frees the slot at once, as the simulator does)."""
    sent = [o for o in run.calls if o.sent_s is not None]
    records = [_record(o, run) for o in sent]
    busy: dict[str, list[tuple[float, float, int]]] = {a.agent_id: [] for a in run.agents}
    for o, r in zip(sent, records, strict=True):
        start = o.last_answered_s
        if r.agent_id in busy and start is not None and r.end_s is not None:
            wrap = run.wrap_up_s(r.channel)
            busy[r.agent_id].append((start, r.end_s + wrap, run.policy.units_for(r.channel)))
        for agent_id, lo, hi in o.handed_back:
            if agent_id in busy and hi > lo:
                busy[agent_id].append((lo, hi, run.policy.units_for(r.channel)))
    agents = {
        a.agent_id: AgentResult(
            agent_id=a.agent_id,
            busy=busy_items(busy[a.agent_id]),
            staffed=_staffed(a, run.start_s, run.end_s),
            handled=sum(1 for r in records if r.agent_id == a.agent_id),
            top_performer=a.top_performer,
            quality=a.quality,
            speed=a.speed,
        )
        for a in run.agents
    }
    changes: list[tuple[float, int]] = []
    for o, r in zip(sent, records, strict=True):
        if o.queued_until_s is not None:  # waited from its arrival until it left the queue
            changes.extend([(r.arrival_s, 1), (o.queued_until_s, -1)])
        elif o.queued:  # (the service's times unknown: until answered, hung up or cut)
            changes.extend([(r.arrival_s, 1), (r.arrival_s + r.wait_s, -1)])
        for lo, hi in o.waited_again:  # and from each return to the queue until it left it
            changes.extend([(lo, 1), (hi, -1)])
    trace, level = QueueLevels(), 0
    for at, step in sorted(changes, key=lambda c: (c[0], c[1])):
        level += step
        trace.times_s.append(at)
        trace.sizes.append(level)
    return records, agents, trace


def replay_kpis(run: ReplayRun, scenario: Scenario) -> tuple[dict[str, Any], list[CallResult]]:
    """``kpis.json`` of the replay (measured from the first arrival to the last end) and
    its records."""
    records, agents, queue_trace = observed_results(run)
    # Every replayed call counts (no warm-up: the replay starts on a live service), up to
    # the last call's end; agents were logged in only from the replay's start.
    window = dataclasses.replace(
        scenario,
        name=f"{scenario.name} (replay)",
        warmup_s=0.0,
        duration_s=max(run.end_s, run.start_s + 1.0),
    )
    kpis = compute_kpis(
        scenario=window,
        policy=run.policy,
        seed=run.options.seed,
        records=records,
        agents=agents,
        events=int(run.watch.get("events", 0)),
        queue_trace=queue_trace,
    )
    return kpis, records


SERVICE_STATS_NOTE = (
    "the service's own GetStats at the end of the run: its real-time view, not "
    "time-compressed (its 15- and 60-minute windows and its 5 s abandon grace are real "
    "seconds, its SLA targets and occupancy window the policy it was given, clamped to at "
    "least 1 s and 60 s real), so not the simulated day's figures: those are kpis"
)
"""What ``replay.json``'s ``service_stats`` are, written beside them."""


def _service_stats(run: ReplayRun) -> dict[str, Any]:
    """``replay.json``'s ``service_stats``: GetStats at the end, labelled as the service's
    real-time view (``time_compressed``: false, a ``note``); empty when it failed."""
    if not run.service_stats:
        return {}
    return {"time_compressed": False, "note": SERVICE_STATS_NOTE, **run.service_stats}


def summarize_replay(run: ReplayRun, kpis: Mapping[str, Any]) -> dict[str, Any]:
    """The content of ``replay.json``: what was sent, how the service answered (status codes,
    latency per RPC, event delivery) and the KPIs of its decisions.

    ``calls`` counts each call once by what happened to it last (``completed``,
    ``abandoned``, ``expired``, ``cancelled_after_answer``, ``cut``, ``failed``,
    ``not_sent``: they add up to ``in_trace``), and apart from that ``answered``: the calls
    an agent got, whatever happened next, as the KPIs count them (by each call's first
    outcome). A call answered, handed back to the queue and then abandoned or expired is in
    ``answered`` and in ``abandoned`` or ``expired``; ``abandoned_or_expired_after_answer``
    says how many did. ``service_stats`` is the service's own GetStats at the end, on its
    real clock (``time_compressed``: false), not the simulated day's figures."""
    sent = [c for c in run.calls if c.outcome != "not_sent"]
    outcomes: dict[str, int] = {}
    for c in run.calls:
        outcomes[c.outcome] = outcomes.get(c.outcome, 0) + 1
    return {
        "scenario": str(kpis.get("scenario", "")),
        "target": run.options.target,
        "tenant": run.tenant,
        "policy": run.policy.strategy.value,
        "speed": run.options.speed,
        "wall_s": round(run.wall_s, 3),
        "window_s": [round(run.start_s, 3), round(run.end_s, 3)],
        "policy_compressed": run.options.compress_policy,
        "policy_notes": list(run.policy_notes),
        "calls": {
            "in_trace": len(run.calls),
            "sent": len(sent),
            "answered": sum(1 for c in sent if c.answered),
            "queued_first": sum(1 for c in sent if c.queued),
            "completed": outcomes.get("completed", 0),
            "abandoned": outcomes.get("abandoned", 0),
            "expired": outcomes.get("expired", 0),
            "cancelled_after_answer": outcomes.get("cancelled", 0),
            "abandoned_or_expired_after_answer": sum(
                1 for c in sent if c.answered and c.outcome in {"abandoned", "expired"}
            ),
            "cut": outcomes.get("cut", 0),
            "failed": outcomes.get("error", 0),
            "not_sent": outcomes.get("not_sent", 0),
            "requeued": sum(c.requeued for c in sent),
            "assigned_twice": sum(1 for c in sent if c.assignments > 1 and not c.requeued),
        },
        "requests": dict(run.rpc),
        "watch": dict(run.watch),
        "service_stats": _service_stats(run),
        "kpis": dict(kpis),
    }
