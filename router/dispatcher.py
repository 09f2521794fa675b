"""The dispatcher: drains each tenant's queue with one batch solve over all waiting calls and
all free capacity, and keeps the queue healthy (offer timeouts, reclaiming work from agents
who left, SLA escalation).

It runs in every replica. A per-tenant lease in the store (expiring in store time) keeps one
replica dispatching a tenant at a time, which saves duplicate work; correctness does not rest
on it: every commit re-checks its agent and that its call is still queued, so two
dispatchers can never give one call twice or overfill an agent.

A pass is triggered by ``wake(tenant)`` (capacity freed, agent changed, ...), by ``Assign``
when calls already wait, and by a tick (``tick_s``) that also covers timers: offer expiry,
wrap-up ends, absences and shift ends starting, SLA risk growing. Across the replicas one
makes each tenant's full pass of a tick (the reclaim scan with nothing queued): the store's
tick marker names it, and it keeps the marker while it ticks; the others' ticks are
wake-ups, a single read while the tenant is idle. The marker lasts two ticks, so if that
replica stops, another takes the full passes over at most three ticks after its last. A
tick looks at its tenants ``SWEEP_BATCH`` at a time, in one round trip
(``Store.open_passes``, which marks the ticks but takes no lease), and then opens and runs
the passes due, one tenant at a time. A full pass that found nothing
waiting and nothing to do notes the head of the agents' change log it read
(``QueueView.agents_rev``); the next ticks' full passes are ``QUIET`` (no lease, no read)
while nothing is queued or offered and that head stands: with nobody holding work there is
nothing to take back, and no timer to run. When agents hold work, the note also pins the
policy's version and ends when the first of them could have left with work that could move
(a heartbeat lapsing, an absence or a shift's end starting: ``reclaim_due_ms``), which is
known in advance. So a thousand tenants with nothing waiting cost a tick a few round trips,
whether or not their agents hold work.

A pass run inline by an Assign is bounded by that RPC's deadline (``router.deadline``): once
it passes, the pass commits no further placements and asks for a background pass instead
(what was committed stays; the rest is still queued). The background thread has no deadline.

Work on a queued call continues the trace of the request that created the call: its events
(placement, SLA marks, offer time-outs, reclaims) carry that trace's id and, with tracing on,
its placement, an offer's time-out and a reclaim are spans in that trace (``dispatch``,
``offer_timeout``, ``reclaim``: ``tracing.queued_work``, ``tracing.finished_work``); passes
themselves make no spans and bind no trace, even in an inline pass (the stores take each
call's kept trace for a time-out's or a reclaim's events: ``tracing.call_work``).
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass

import structlog

from router import deadline, logs, metrics, tracing
from router.assigner import deciding, rng_for
from router.domain import AGENT_UNIT_BUDGET, AgentSnapshot, Call, Channel, Policy, Snapshot
from router.eligibility import eligible_until_ms, gone_reason, is_present, left_reason
from router.engine import decide
from router.errors import FailedPreconditionError, NotFoundError, RouterError
from router.forecast import PoolTerms, agents_for, pool_key, pool_terms, sla_state, wait_at
from router.ordering import limit_from_ms, waited_ms
from router.store import (
    Claim,
    Committed,
    Conflict,
    Gone,
    PassGrant,
    QueueView,
    Store,
    Waiting,
)
from router.store_common import RATE_WINDOW_MS

log = structlog.get_logger(__name__)

TICK_BATCHES = 4
"""Batches of waiting calls a tick's full pass reads at most: past a full first batch it
could not place entirely (calls nobody free can take: another channel's backlog, a scarce
skill), it reads on while some agent has room, so a call further back is not held up by
them; wake-ups and an Assign's inline pass read the first batch only. A tick that stops at
this bound leaves a ``Scan`` where it stopped and the next tick reads on from there after
its first batch, so every waiting call is read within ``depth / ((TICK_BATCHES - 1) *
batch_size)`` ticks, however long the queue."""
SWEEP_BATCH = 128
"""Tenants a tick looks at in one round trip (``Store.open_passes``)."""
OUTAGE_GRACE_S = 30.0
"""Least grace after the store was unavailable (``outage_grace_s``)."""
_RESULTS = {Committed: "placed", Conflict: "conflict", Gone: "gone"}
"""A placement's outcome as its span records it (``router.result``)."""


@dataclass(frozen=True, slots=True)
class DispatchReport:
    """What one pass did."""

    placed: int = 0
    conflicts: int = 0
    timed_out: int = 0
    reclaimed: int = 0
    escalated: int = 0
    expired: int = 0
    """Calls that reached their channel's ``max_wait_s`` and left the queue."""
    queued: int = 0
    skipped: bool = False
    """Another replica held the tenant's lease."""

    @property
    def idle(self) -> bool:
        """The pass changed nothing (whatever still waits)."""
        return self == DispatchReport(queued=self.queued)


@dataclass(frozen=True, slots=True)
class Scan:
    """Where a tick's reading of a long queue stopped: the offset of the next batch (the
    calls before it still waiting then) and those calls per channel (ahead of the next
    batch's calls in their channel's queue)."""

    offset: int
    ahead: Counter[Channel]


def widen_for_risk(call: Call, now_ms: int, policy: Policy) -> Call:
    """An at-risk call is decided as if it had already reached the next widening step."""
    waited_ms = now_ms - (call.enqueued_ms or call.created_ms)
    for step in policy.widening:
        if step.after_s * 1000 > waited_ms:
            return dataclasses.replace(call, enqueued_ms=now_ms - step.after_s * 1000)
    return call


def outage_grace_s(policy: Policy) -> float:
    """How long after a request found the store unavailable the dispatcher neither takes
    work back from agents whose heartbeats lapsed nor counts the offers it times out as
    missed: their heartbeats and answers may have failed with the store, and they get a
    heartbeat timeout (at least ``OUTAGE_GRACE_S``) to be heard again."""
    return max(float(policy.heartbeat_timeout_s), OUTAGE_GRACE_S)


def _movable(agent: AgentSnapshot, policy: Policy) -> tuple[bool, bool]:
    """Whether the agent holds offers, and accepted work on ``reclaim_channels`` (neither in
    wrap-up): the work that moves when its holder leaves."""
    live = [work for work in agent.active if work.wrap_until_ms == 0]
    offered = any(work.offered for work in live)
    accepted = any(not work.offered and work.channel in policy.reclaim_channels for work in live)
    return offered, accepted


def reclaim_channels(agent: AgentSnapshot, now_ms: int, policy: Policy) -> frozenset[Channel]:
    """The channels whose accepted work moves from the agent now: ``reclaim_channels`` when
    they have left it (``eligibility.gone_reason``), else none (offers move as soon as the
    agent is not available: ``left_reason``)."""
    return policy.reclaim_channels if gone_reason(agent, now_ms, policy) else frozenset()


def must_reclaim(agent: AgentSnapshot, now_ms: int, policy: Policy) -> bool:
    """Whether the agent left with work that could move: offers once they are not available
    or left (``left_reason``), accepted work on ``reclaim_channels`` once they left it
    (``gone_reason``: being busy, on a break or not responding keeps it)."""
    offered, accepted = _movable(agent, policy)
    return (offered and bool(left_reason(agent, now_ms, policy))) or (
        accepted and bool(gone_reason(agent, now_ms, policy))
    )


def reclaim_due_ms(agent: AgentSnapshot, now_ms: int, policy: Policy) -> int | None:
    """The first time at or after ``now_ms`` at which ``must_reclaim`` may hold for the agent
    as it is (``now_ms`` when it does now; ``None``: never, no work that could move or a
    policy that takes none back). Only a change to the agent or the policy, or the store's
    outage grace (which only delays reclaiming), can make it hold earlier: a heartbeat
    lapsing, an absence starting, the shift ending are all known in advance."""
    if not policy.reclaim_on_absence or not any(_movable(agent, policy)):
        return None
    if must_reclaim(agent, now_ms, policy):
        return now_ms
    profile = agent.profile
    dues = [absence.start_ms for absence in profile.absences if absence.start_ms > now_ms]
    if policy.heartbeat_timeout_s > 0:  # lapsed once now - heartbeat > timeout
        dues.append(agent.heartbeat_ms + policy.heartbeat_timeout_s * 1000 + 1)
    if profile.shift_end_ms > 0:
        dues.append(profile.shift_end_ms)
    return min(dues, default=None)


class Dispatcher:
    """Batch placement of queued calls, per tenant, plus the queue's timers."""

    def __init__(
        self,
        store: Store,
        *,
        batch_size: int = 500,
        lease_ms: int = 10_000,
        tick_s: float = 1.0,
        owner: str = "",
    ) -> None:
        self._store = store
        self._batch_size = batch_size
        self._lease_ms = lease_ms
        self._tick_s = tick_s
        self._tick_hold_ms = max(1, round(2 * tick_s * 1000))
        self._owner = owner or uuid.uuid4().hex
        self._pending: set[str] = set()
        self._wakeup = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._passes = 0
        self._last_full = 0.0
        self._quiet: dict[str, str] = {}
        """Per tenant, what this replica's last full pass, which found nothing queued and
        nothing to do, rests on (``quiet_at``: ``_note_quiet``)."""
        self._scans: dict[str, Scan] = {}
        """Per tenant, where this replica's last tick stopped reading a queue longer than
        its batches (``TICK_BATCHES``)."""
        self._running: dict[str, threading.Lock] = {}
        """Per tenant, held through a pass: the lease is this replica's, so it keeps other
        replicas out but not this replica's other threads (the loop, Assigns' inline passes)."""

    # --- the loop ----------------------------------------------------------------------------

    def start(self) -> None:
        """Run passes in a background thread until ``stop``."""
        self._thread = threading.Thread(target=self._loop, name="dispatcher", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Finish the current pass and stop."""
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def wake(self, tenant: str) -> None:
        """Ask for a pass over ``tenant`` soon (capacity freed, agents changed)."""
        with self._wakeup:
            self._pending.add(tenant)
            self._wakeup.notify_all()

    def _loop(self) -> None:
        while True:
            with self._wakeup:
                if not self._pending and not self._stopping:
                    self._wakeup.wait(self._tick_s)
                if self._stopping:
                    return
                tenants, self._pending = self._pending, set()
                # A full pass at least every tick, even when wake-ups keep coming.
                ticked = not tenants or time.monotonic() - self._last_full >= self._tick_s
            try:
                if ticked:
                    self._last_full = time.monotonic()
                    tenants |= set(self._store.tenants())
            except RouterError as err:  # Redis down: try again on the next tick
                log.warning("dispatch_failed", error=err.logged)
                continue
            except Exception:  # never let the loop die; the next tick retries
                log.exception("dispatch_crashed")
                continue
            if not ticked:
                for tenant in sorted(tenants):
                    self._run_guarded(tenant, ticked=False)
                continue
            try:
                self._sweep(sorted(tenants))
            except Exception:  # never let the loop die; the next tick retries
                log.exception("dispatch_crashed")

    def _sweep(self, tenants: list[str]) -> None:
        """A tick over ``tenants``: a look at ``SWEEP_BATCH`` of them at a time in one round
        trip (``Store.open_passes``: most are idle, quiet or another replica's), then the
        tick's pass of each tenant that has one due, opened and run alone (``run_tick``), so
        no tenant is kept from the other replicas while the tick gets to it. On one Redis
        server a failed look is Redis down: the rest of the tick waits for the next."""
        for start in range(0, len(tenants), SWEEP_BATCH):
            batch = tenants[start : start + SWEEP_BATCH]
            quiet = {tenant: self._quiet[tenant] for tenant in batch if tenant in self._quiet}
            try:
                grants = self._store.open_passes(
                    batch, self._owner, self._lease_ms, self._tick_hold_ms, quiet
                )
            except RouterError as err:
                log.warning("dispatch_failed", error=err.logged)
                return
            for tenant, grant in zip(batch, grants, strict=True):
                if isinstance(grant, RouterError):
                    log.warning("dispatch_failed", tenant=tenant, error=grant.logged)
                elif grant in (PassGrant.FULL, PassGrant.WAKE):
                    self._run_guarded(tenant, ticked=True)
                else:
                    self._run(tenant, grant)  # no pass due: the gauges only

    def _run_guarded(self, tenant: str, *, ticked: bool) -> None:
        """One tenant's pass; a failure is logged and retried on the next tick, and never
        keeps the other tenants from their passes."""
        try:
            if ticked:
                self.run_tick(tenant)
            else:
                self.run_once(tenant, full=False, wait_s=None)
        except RouterError as err:  # Redis down or this tenant's pass refused: next tick
            log.warning("dispatch_failed", tenant=tenant, error=err.logged)
        except Exception:  # never let the loop die; the next tick retries
            log.exception("dispatch_crashed", tenant=tenant)

    # --- one pass ----------------------------------------------------------------------------

    def run_once(
        self, tenant: str, *, full: bool = True, wait_s: float | None = 0.0
    ) -> DispatchReport:
        """One pass over ``tenant``: timers, then one batch solve and its commits.

        ``full=False`` (a wake-up) skips the agent scan when nothing waits: reclaiming and
        SLA checks need no reaction faster than the tick, and a Complete should not cost a
        read of every agent. When no call waits and no offer has expired it is one read,
        without the lease.

        One pass per tenant at a time in this replica: while another thread's runs, this
        one waits for it up to ``wait_s`` (``None``: as long as it takes), else is skipped
        and asks for a pass after it (the running one may have read the queue before the
        call that brought this one)."""
        running = self._running_lock(tenant)
        if not running.acquire(timeout=-1 if wait_s is None else max(wait_s, 0.0)):
            self.wake(tenant)
            return DispatchReport(skipped=True)
        try:
            if not full:
                grant = self._store.open_pass(tenant, self._owner, self._lease_ms, 0)
                return self._run(tenant, grant)
            if not self._store.acquire_lease(tenant, self._owner, self._lease_ms):
                return DispatchReport(skipped=True)
            return self._run(tenant, PassGrant.FULL)
        finally:
            running.release()

    def run_tick(self, tenant: str) -> DispatchReport:
        """The tick's pass over ``tenant``: the full pass if this replica holds the tenant's
        tick marker or can take it (reading past a first batch nobody could take, up to
        ``TICK_BATCHES``), else a wake-up (after any pass of this replica's that runs now)."""
        with self._running_lock(tenant):
            grant = self._store.open_pass(tenant, self._owner, self._lease_ms, self._tick_hold_ms)
            return self._run(tenant, grant, batches=TICK_BATCHES)

    def _running_lock(self, tenant: str) -> threading.Lock:
        """The lock held through each of this replica's passes over ``tenant``."""
        return self._running.setdefault(tenant, threading.Lock())

    def _run(self, tenant: str, grant: PassGrant, *, batches: int = 1) -> DispatchReport:
        """The pass ``grant`` allows (a full one over up to ``batches`` batches), then the
        lease back."""
        if grant is PassGrant.HELD:
            return DispatchReport(skipped=True)
        if grant in (PassGrant.IDLE, PassGrant.QUIET):  # nothing waits: the gauges say so
            metrics.QUEUE_DEPTH.labels(tenant).set(0)
            metrics.LONGEST_WAIT.labels(tenant).set(0)
            return DispatchReport()
        try:
            # Inside an Assign (an inline pass) the events written are not that request's:
            # each call's own trace is bound for its work, none for the rest, and the lines
            # carry no call or request id of the Assign's.
            with tracing.continuing(""), logs.without("call_id", "request_id"):
                full = grant is PassGrant.FULL
                return self._pass(tenant, full=full, batches=batches if full else 1)
        finally:
            self._store.release_lease(tenant, self._owner)

    def _pass(self, tenant: str, *, full: bool, batches: int = 1) -> DispatchReport:
        view = self._store.load_queue(tenant, self._batch_size)
        timed_out = self._time_out(tenant, view) if view.offers_due else 0
        if timed_out:  # their calls wait again
            view = self._store.load_queue(tenant, self._batch_size)
        if not full and not timed_out and view.depth == 0:
            return DispatchReport()
        reclaimed = self._reclaim(tenant, view)
        if reclaimed:
            view = self._store.load_queue(tenant, self._batch_size)
        first = view  # the first batch, as solved: what the queue gauges show
        placed = conflicts = escalated = expired = later = offset = 0
        placed_ids: set[str] = set()
        ahead: Counter[Channel] = Counter()  # calls of each channel left waiting in the batches
        scan = self._scans.pop(tenant, None) if batches > 1 else None  # a tick's pass
        removed = 0  # calls of the first batch placed or expired: they were ahead of a scan
        for batch in range(batches):
            if batch:  # the rest of the queue, while agents have room for some of it
                if scan is not None and scan.offset - removed > offset:  # on from the last tick
                    offset, ahead = scan.offset - removed, scan.ahead
                scan = None
                view = self._store.load_queue(tenant, self._batch_size, offset=offset)
                if not view.calls or not _room_left(view.snapshot):
                    break
            view, gone = self._expire(tenant, view)
            expired, later = expired + gone, later + (gone if batch else 0)
            first = first if batch else view  # the first batch's depth counts its expiries
            calls, changed = self._escalate(tenant, view, ahead)
            escalated += changed
            if changed and not batch:  # priorities changed: read the first batch again
                view = first = self._store.load_queue(tenant, self._batch_size)
                calls, _ = self._escalate(tenant, view, ahead)
            batch_placed, batch_conflicts = self._place(tenant, view, calls)
            placed_ids |= batch_placed
            placed, conflicts = placed + len(batch_placed), conflicts + batch_conflicts
            left = [call.channel for call in view.calls if call.call_id not in batch_placed]
            more = view.depth > offset + len(view.calls)
            ahead.update(left)
            offset += len(left)
            removed += 0 if batch else len(batch_placed) + gone
            if not left or not more or len(view.calls) + gone < self._batch_size:
                break  # (a batch the queue filled is read on from, expired calls or not)
            if batch == batches - 1 and batches > 1:  # more behind: the next tick reads on
                self._scans[tenant] = Scan(offset, ahead.copy())
        behind = self._expire_behind(tenant, first) if batches > 1 else 0  # a tick's pass
        report = DispatchReport(
            placed=placed,
            conflicts=conflicts,
            timed_out=timed_out,
            reclaimed=reclaimed,
            escalated=escalated,
            expired=expired + behind,
            queued=first.depth - placed - later - behind,
        )
        return self._finish(tenant, first, report, placed_ids, full=full)

    def _finish(
        self, tenant: str, first: QueueView, report: DispatchReport, placed: set[str], *, full: bool
    ) -> DispatchReport:
        """A pass's gauges, log line and follow-up; ``first``: its first batch's view."""
        _measure(tenant, first, report, placed)
        if full:
            self._note_quiet(tenant, first, report)
        if not report.idle:
            log.info("dispatch_finished", tenant=tenant, **dataclasses.asdict(report))
        if report.conflicts:  # agents changed under us: go again soon
            self.wake(tenant)
        return report

    def _note_quiet(self, tenant: str, view: QueueView, report: DispatchReport) -> None:
        """After a full pass: when it found nothing waiting and did nothing, what its quiet
        ticks rest on (``PassGrant.QUIET``: no lease, no read), ``quiet_at`` for the lease
        script. No agent holding work: the head ``view``'s agents are as of; until an agent
        changes, or a call or an offer appears, there is nothing to look for. Agents holding
        work: also the policy's version and the first time one of them may have left with
        work that could move (``reclaim_due_ms``: a heartbeat lapsing, an absence or the
        shift's end starting), ``<head>|<until ms, 0: none>|<policy version>``; none left
        already, else the next tick makes the full pass."""
        self._quiet.pop(tenant, None)
        if not view.agents_rev or view.depth or not report.idle:
            return
        snapshot = view.snapshot
        busy = [agent for agent in snapshot.agents if agent.active]
        if not busy:
            self._quiet[tenant] = view.agents_rev
            return
        now, policy = snapshot.now_ms, snapshot.policy
        dues = [reclaim_due_ms(agent, now, policy) for agent in busy]
        until = min((due for due in dues if due is not None), default=0)
        if until == 0 or until > now:
            self._quiet[tenant] = f"{view.agents_rev}|{until}|{policy.version}"

    def _time_out(self, tenant: str, view: QueueView) -> int:
        """Time out the offers whose expiry has passed; how many. With tracing on, each is an
        ``offer_timeout`` span in the trace its call kept."""
        timed_out = 0
        policy = view.snapshot.policy
        heard = not self._store.unavailable_within(outage_grace_s(policy), tenant)
        offers = self._store.expired_offers(tenant)
        traces = self._traces(tenant, [offer.call_id for offer in offers])
        for offer in offers:
            work = _work_attributes(tenant, offer.call_id, offer.agent_id, offer.assignment_id)
            with tracing.queued_work(traces.get(offer.call_id, ""), work, "offer_timeout") as span:
                try:
                    self._store.decline_offer(
                        tenant,
                        offer.assignment_id,
                        offer.token,
                        timed_out=True,
                        policy=policy,
                        count_missed=heard,
                    )
                    timed_out += 1
                    metrics.OFFERS_TIMED_OUT.labels(tenant).inc()
                    result = "timed_out"
                except FailedPreconditionError:  # accepted or ended meanwhile
                    result = "gone"
                if span is not None:
                    span.set_attribute("router.result", result)
        return timed_out

    def _traces(self, tenant: str, call_ids: list[str]) -> Mapping[str, str]:
        """The traces ``call_ids`` kept, when spans are made (one read), else none."""
        if not call_ids or not tracing.enabled():
            return {}
        return self._store.call_traces(tenant, call_ids)

    def _reclaim(self, tenant: str, view: QueueView) -> int:
        snapshot = view.snapshot
        policy = snapshot.policy
        if not policy.reclaim_on_absence:
            return 0
        moved = 0
        busy = [agent for agent in snapshot.agents if agent.active]  # the others hold nothing
        if not busy:
            return 0
        rules = policy
        if self._store.unavailable_within(outage_grace_s(policy), tenant):  # heartbeats wait
            rules = dataclasses.replace(policy, heartbeat_timeout_s=0)
        for agent in busy:
            if must_reclaim(agent, snapshot.now_ms, rules):
                started = time.time_ns()
                taken = self._store.reclaim(
                    tenant,
                    agent.agent_id,
                    channels=reclaim_channels(agent, snapshot.now_ms, rules),
                    policy=policy,
                    seen=agent,
                )
                ended = time.time_ns()
                moved += len(taken)
                metrics.RECLAIMED.labels(tenant).inc(len(taken))
                traces = self._traces(tenant, [asg.call_id for asg in taken])
                for asg in taken:  # each a span in its call's trace, timed around the script
                    work = _work_attributes(tenant, asg.call_id, asg.agent_id, asg.assignment_id)
                    kept = traces.get(asg.call_id, "")
                    tracing.finished_work(kept, "reclaim", work, started, ended)
        return moved

    def _expire(self, tenant: str, view: QueueView) -> tuple[QueueView, int]:
        """Calls of ``view`` that have waited their channel's ``max_wait_s`` leave the queue;
        the view without them, and how many."""
        policy = view.snapshot.policy
        if not any(policy.max_wait_s.values()):
            return view, 0
        waiting = [
            Waiting(
                call.call_id, call.channel, limit_from_ms(call), view.traces.get(call.call_id, "")
            )
            for call in view.calls
        ]
        gone = self._expire_due(tenant, policy, view.snapshot.now_ms, waiting)
        if not gone:
            return view, 0
        kept = tuple(call for call in view.calls if call.call_id not in gone)
        return dataclasses.replace(view, calls=kept, depth=view.depth - len(gone)), len(gone)

    def _expire_behind(self, tenant: str, first: QueueView) -> int:
        """A tick's look for calls past the first batch that reached their channel's limit,
        whether or not any agent has room (the passes read on only while one has): up to a
        batch of each channel, wherever they wait (``Store.due_waits``: one read, by the
        start of each call's wait), so a chat behind thousands of older emails expires on
        the first tick after its limit. How many expired."""
        policy = first.snapshot.policy
        if not any(policy.max_wait_s.values()) or first.depth <= self._batch_size:
            return 0
        due = self._store.due_waits(
            tenant, policy.max_wait_s, first.snapshot.now_ms, self._batch_size
        )
        traces = self._traces(tenant, [call.call_id for call in due])
        waiting = [dataclasses.replace(call, trace=traces.get(call.call_id, "")) for call in due]
        gone = self._expire_due(tenant, policy, first.snapshot.now_ms, waiting)
        scan = self._scans.get(tenant)
        if scan is not None and gone:  # they may have been ahead of where placement reads on
            channels = Counter(call.channel for call in waiting if call.call_id in gone)
            self._scans[tenant] = Scan(max(0, scan.offset - len(gone)), scan.ahead - channels)
        return len(gone)

    def _expire_due(
        self, tenant: str, policy: Policy, now: int, waiting: Iterable[Waiting]
    ) -> set[str]:
        """The calls of ``waiting`` that have waited their channel's ``max_wait_s`` leave the
        queue (the store re-checks each on its clock and the policy's version); their ids."""
        limits = policy.max_wait_s
        gone: set[str] = set()
        for call in waiting:
            limit = limits.get(call.channel, 0)
            if not limit or now - call.since_ms < limit * 1000:
                continue
            if not deadline.allows(0.0):  # inline in an Assign whose client stopped waiting
                self.wake(tenant)
                break
            with tracing.continuing(call.trace):
                try:
                    expired = self._store.expire_call(
                        tenant,
                        call.call_id,
                        max_wait_s=limit,
                        policy_version=policy.version,
                        found=call,
                    )
                except NotFoundError:  # gone meanwhile, or an index entry left without it
                    continue
                if expired:
                    gone.add(call.call_id)
                    metrics.CALLS_EXPIRED.labels(tenant, call.channel.value).inc()
        return gone

    def _escalate(
        self, tenant: str, view: QueueView, ahead: Counter[Channel]
    ) -> tuple[list[Call], int]:
        """SLA marks for the waiting calls (``ahead``: calls of each channel waiting before
        the view's); at-risk calls are widened for this solve."""
        snapshot = view.snapshot
        policy, now = snapshot.policy, snapshot.now_ms
        if not view.calls:
            return [], 0
        completed = self._store.completions(tenant, now - RATE_WINDOW_MS)
        calls: list[Call] = []
        changed = 0
        before = ahead.copy()  # the channel's calls before: its agents serve them first
        pools: dict[Hashable, PoolTerms] = {}  # calls asking the same mostly share a pool
        for queued in view.calls:
            before[queued.channel] += 1
            position = before[queued.channel]
            key = pool_key(queued, now, policy)
            terms = pools.get(key)
            if terms is None:
                pool = agents_for(queued, snapshot.agents, now, policy)
                terms = pools[key] = pool_terms(queued.channel, completed, pool, policy, now)
            wait = wait_at(position, terms)
            at_risk, breached = sla_state(queued, now, wait, policy)
            call_id = queued.call_id
            with tracing.continuing(view.traces.get(call_id, "")):
                if at_risk and self._store.mark_sla(tenant, call_id, breached=False, policy=policy):
                    changed += 1
                    metrics.SLA_EVENTS.labels(tenant, "at_risk").inc()
                if breached and self._store.mark_sla(tenant, call_id, breached=True, policy=policy):
                    metrics.SLA_EVENTS.labels(tenant, "breached").inc()
            calls.append(widen_for_risk(queued, now, policy) if at_risk else queued)
        return calls, changed

    def _place(self, tenant: str, view: QueueView, calls: list[Call]) -> tuple[set[str], int]:
        """One batch solve and its commits: the calls placed, and the commits that lost a
        race (re-planned on the next pass)."""
        snapshot = view.snapshot
        if not calls:
            return set(), 0
        self._passes += 1
        with deciding("batch", snapshot, len(calls)):
            decision = decide(snapshot, calls, rng=rng_for(f"{tenant}:{snapshot.now_ms}"))
        agents = {agent.agent_id: agent for agent in snapshot.agents}
        by_id = {call.call_id: call for call in view.calls}  # as stored, not as widened
        policy = snapshot.policy
        placed: set[str] = set()
        conflicts = 0
        for placement in decision.placements:
            if placement.agent_id is None:
                continue
            if not deadline.allows(0.0):  # inline in an Assign whose client stopped waiting
                self.wake(tenant)
                break
            call = by_id[placement.call_id]
            work: dict[str, str | int] = {
                "router.tenant": tenant,
                "router.call_id": call.call_id,
                "router.agent_id": placement.agent_id,
                "router.waited_ms": waited_ms(call, snapshot.now_ms),
            }
            claim = Claim(
                request_id="",
                fingerprint="",
                call=call,
                agent_id=placement.agent_id,
                expected_seq=agents[placement.agent_id].seq,
                units=policy.units_for(call.channel),
                heartbeat_timeout_s=policy.heartbeat_timeout_s,
                explanation=placement.explanation,
                offer_timeout_s=policy.offer_timeout_s.get(call.channel, 0),
                from_queue=True,
                capacity=policy.capacity_for(agents[placement.agent_id].profile, call.channel),
                expected_version=agents[placement.agent_id].profile.version,
                policy_version=policy.version,
                until_ms=eligible_until_ms(
                    agents[placement.agent_id].profile, snapshot.now_ms, policy.reserved_s_for(call)
                ),
            )
            with tracing.queued_work(view.traces.get(call.call_id, ""), work) as span:
                result = self._store.commit_assignment(tenant, claim)
                if span is not None:
                    span.set_attribute("router.result", _RESULTS.get(type(result), "other"))
            if isinstance(result, Committed):
                placed.add(call.call_id)
                metrics.DISPATCH_PLACED.labels(tenant).inc()
                waited = waited_ms(call, result.assignment.created_ms)  # at the commit
                metrics.CALL_WAIT.labels(tenant, call.channel.value).observe(waited / 1000)
            elif isinstance(result, Conflict):
                conflicts += 1
                metrics.DISPATCH_CONFLICTS.inc()
            elif isinstance(result, Gone):
                continue
        return placed, conflicts


def _work_attributes(
    tenant: str, call_id: str, agent_id: str, assignment_id: str
) -> dict[str, str | int]:
    """A span's attributes for the dispatcher's work on an assignment."""
    return {
        "router.tenant": tenant,
        "router.call_id": call_id,
        "router.agent_id": agent_id,
        "router.assignment_id": assignment_id,
    }


def _room_left(snapshot: Snapshot) -> bool:
    """Some present agent still has room in its unit budget (a batch further back may hold
    a call for them)."""
    now, policy = snapshot.now_ms, snapshot.policy
    return any(
        agent.units_used < AGENT_UNIT_BUDGET and is_present(agent, now, policy)
        for agent in snapshot.agents
    )


def _measure(tenant: str, view: QueueView, report: DispatchReport, placed: set[str]) -> None:
    """The queue gauges after a pass (the counters move as each thing happens, so a pass
    that fails half-way loses none): the depth left, and the longest wait among the calls
    of ``view`` (the first batch) still waiting."""
    now = view.snapshot.now_ms
    metrics.QUEUE_DEPTH.labels(tenant).set(max(0, report.queued))
    waits = (waited_ms(call, now) for call in view.calls if call.call_id not in placed)
    metrics.LONGEST_WAIT.labels(tenant).set(max(waits, default=0) / 1000)
