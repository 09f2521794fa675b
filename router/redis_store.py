"""``Store`` on Redis 7: the production store, shared by every router replica.

This is the only module that imports ``redis``. Writes that must not interleave are Lua scripts
in ``router/lua/`` (``_lib.lua`` is prepended to each), loaded with ``register_script`` so a
NOSCRIPT after a restart or failover reloads them. Business outcomes come back from a script as
``{status, ...}`` arrays and become results or ``router.errors``; driver failures (connection,
timeout, loading, read-only replica, cluster down, OOM, BUSY) become ``StoreUnavailableError``.

Time: ``now_ms`` is Redis ``TIME``. Writing scripts take the time themselves
(``redis.call('TIME')``, allowed with Redis 7's effects replication) so a write costs one round
trip; reads that need "now" put ``TIME`` in the same pipeline as their reads. Tests may pass a
``clock`` that replaces Redis time everywhere (scripts then receive it as ``ARGV[1]``). TTLs
are always relative (``PEXPIRE``) and so follow Redis time.

Round trips: ``commit_assignment``, ``create_agent``, ``set_presence``, ``heartbeat`` 1 (one
script); ``update_agent``, ``delete_agent``, ``put_policy`` 2 (a read, then a compare-and-set
script); ``finish_assignment`` 2 (the assignment's agent and call ids are read first so the
script declares every key it touches, as Redis Cluster requires); ``cancel_call`` 3 (call,
then its assignment, then the script, which re-checks both); ``load_snapshot`` 2 (policy,
``TIME``, the candidate ids ``SINTER idx:skill:*`` and ``ZCARD agents`` in one ``MULTI``; then
every candidate's hash and in-window work spans in a second ``MULTI``).

Key schema, version 1. Every key starts with ``rt:v1:{<tenant>}:``; the hash tag puts one
tenant in one Redis Cluster slot, so every script and ``MULTI`` is single-slot.

============================  ======  =====================================  ================
key (after the prefix)        type    content                                TTL / writer
============================  ======  =====================================  ================
``agent:<agent_id>``          HASH    ``profile`` (JSON, ``codec``, no       none; create/
                                      version), ``version``, ``presence``,   update/delete
                                      ``presence_reason``,                   agent,
                                      ``presence_since``, ``heartbeat``,     set_presence,
                                      ``seq``, ``last_free``,                heartbeat,
                                      ``last_assigned``, ``perf_sum``,       commit, finish,
                                      ``perf_weight``, ``perf_ts``, and      cancel_call
                                      ``a:<assignment_id>`` =
                                      ``<channel>|<units>|<start_ms>`` per
                                      active assignment (the load is
                                      derived from these, so it cannot drift)
``work:<agent_id>``           ZSET    finished spans, member                 none, trimmed to
                                      ``<assignment_id>|<start>|<end>|       24 h on each
                                      <units>``, score ``end``               finish; finish,
                                                                             cancel_call,
                                                                             delete_agent
``agents``                    ZSET    every agent id, score 0 (``BYLEX``     none; create/
                                      cursor for ``list_agents``)            delete agent
``idx:skill:<skill>``         SET     ids of agents holding ``<skill>``      none; create/
                                                                             update/delete
``policy``                    STRING  policy JSON (``codec``, with           none; put_policy
                                      version); absent = ``Policy()`` v0
``asg:<assignment_id>``       HASH    ``call_id``, ``agent_id``,             7 d after it
                                      ``channel``, ``units``, ``token``,     ends; commit,
                                      ``state``, ``created``, ``ended``,     finish,
                                      ``explanation`` (JSON)                 cancel_call
``call:<call_id>``            HASH    ``call`` (JSON), ``status``,           7 d after it is
                                      ``assignment_id`` (current or last),   released/ended,
                                      ``updated``                            removed by a new
                                                                             commit; same
``req:<request_id>``          HASH    ``fingerprint``, ``assignment_id``     24 h; commit
``fence``                     STRING  fencing-token counter (``INCR``)       none; commit
``events``                    STREAM  ``type``, ``ts``, ``call_id``,         ``MAXLEN ~``
                                      ``agent_id`` + event data              100000; every
                                                                             write script
============================  ======  =====================================  ================

Work spans live under ``work:<id>`` rather than ``agent:<id>:work`` because agent ids may
contain ``:`` (``agent:x:work`` would collide with the hash of agent ``x:work``). Assignment
ids are uuid4 hex minted here. Times are epoch milliseconds.
"""

from __future__ import annotations

import dataclasses
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from typing import Any

import redis
from redis.commands.core import Script
from redis.exceptions import ClusterDownError, OutOfMemoryError, ReadOnlyError, TryAgainError

from router import codec
from router import store_common as rules
from router.domain import (
    AgentProfile,
    AgentSnapshot,
    Assignment,
    AssignmentState,
    Call,
    CallRecord,
    CallStatus,
    Policy,
    Presence,
    Snapshot,
)
from router.errors import AlreadyExistsError, NotFoundError, RouterError, StoreUnavailableError
from router.redis_schema import (
    Keys,
    agent_from_hash,
    agent_from_view,
    assignment_from_hash,
    event_from_entry,
    pairs,
)
from router.store import AgentQuery, Claim, CommitResult, Committed, Conflict, Event

_SCRIPTS = (
    "create_agent",
    "update_agent",
    "delete_agent",
    "set_presence",
    "heartbeat",
    "put_policy",
    "commit_assignment",
    "finish_assignment",
    "cancel_call",
)
_UNAVAILABLE = (
    redis.ConnectionError,
    redis.TimeoutError,
    ReadOnlyError,
    TryAgainError,
    ClusterDownError,
    OutOfMemoryError,
)
_SCAN_CHUNK = 200


@contextmanager
def _driver_errors() -> Iterator[None]:
    """Translate driver exceptions into the error tree."""
    try:
        yield
    except _UNAVAILABLE as exc:
        raise StoreUnavailableError(f"redis unavailable: {exc}") from exc
    except redis.ResponseError as exc:
        if str(exc).startswith("BUSY"):  # a long script is running; safe to retry later
            raise StoreUnavailableError(f"redis busy: {exc}") from exc
        raise RouterError(f"redis refused a command: {exc}") from exc
    except redis.RedisError as exc:
        raise RouterError(f"redis failed: {exc}") from exc


def _source(name: str) -> str:
    lua = resources.files("router") / "lua"
    return (lua / "_lib.lua").read_text("utf-8") + "\n" + (lua / f"{name}.lua").read_text("utf-8")


class RedisStore:
    """A ``router.store.Store`` on a Redis 7 server (or one Redis Cluster slot per tenant)."""

    def __init__(self, client: redis.Redis, clock: Callable[[], int] | None = None) -> None:
        """``client`` must decode responses (``decode_responses=True``). ``clock`` (epoch ms)
        replaces Redis time, for tests only; production leaves it ``None``."""
        if not client.get_connection_kwargs().get("decode_responses"):
            raise RouterError("RedisStore needs a client created with decode_responses=True")
        self._client = client
        self._clock = clock
        self._scripts: dict[str, Script] = {
            name: client.register_script(_source(name)) for name in _SCRIPTS
        }

    @classmethod
    def from_url(cls, url: str, *, timeout_s: float = 2.0) -> RedisStore:
        """A store on the Redis at ``url`` (``redis://``, ``rediss://`` or ``unix://``), with
        ``timeout_s`` bounding every command and connection attempt."""
        client = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            health_check_interval=30,
        )
        return cls(client)

    @staticmethod
    def redact(url: str) -> str:
        """``url`` with any password replaced by ``***``, for logs."""
        parts = urllib.parse.urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))

    # --- plumbing ----------------------------------------------------------------------------

    def _run(self, name: str, keys: Sequence[str], args: Sequence[str | int]) -> list[Any]:
        now = "" if self._clock is None else str(self._clock())
        with _driver_errors():
            reply = self._scripts[name](keys=list(keys), args=[now, *args])
        if not isinstance(reply, list):
            raise RouterError(f"script {name} replied {reply!r}")
        return reply

    def _hmget(self, key: str, *names: str) -> list[str | None]:
        with _driver_errors():
            return [_text_or_none(value) for value in self._client.hmget(key, list(names))]

    def _hgetall(self, key: str) -> dict[str, str]:
        with _driver_errors():
            return _texts(self._client.hgetall(key))

    def _pipeline_now(self, pipe: Any) -> None:
        if self._clock is None:
            pipe.time()

    def _take_now(self, replies: list[Any]) -> int:
        if self._clock is not None:
            return self._clock()
        seconds, micros = replies.pop(0)
        return int(seconds) * 1000 + int(micros) // 1000

    def _read_agents(
        self, k: Keys, ids: Sequence[str], min_end: int | None
    ) -> tuple[int, list[AgentSnapshot]]:
        """Store time and the agents ``ids`` that still exist, in one ``MULTI`` round trip.
        ``recent`` holds spans ending at ``min_end`` or later (``None``: the last 24 h)."""
        with _driver_errors():
            pipe = self._client.pipeline(transaction=True)
            if min_end is None:
                self._pipeline_now(pipe)
            for agent_id in ids:
                pipe.hgetall(k.agent(agent_id))
                pipe.zrangebyscore(k.work(agent_id), "-inf" if min_end is None else min_end, "+inf")
            replies = list(pipe.execute())
        now = self._take_now(replies) if min_end is None else 0
        cutoff = now - rules.WORK_RETENTION_MS if min_end is None else min_end
        agents = [
            agent_from_hash(fields, spans, cutoff)
            for fields, spans in zip(replies[::2], replies[1::2], strict=True)
            if fields
        ]
        return now, agents

    @staticmethod
    def _cas_loop(what: str, expected_version: int, attempt: Callable[[], int | None]) -> None:
        """Run a compare-and-set ``attempt`` (``None`` when applied, else the version that
        moved in meanwhile): a conditional write fails at once, an unconditional one re-reads
        up to ``MAX_CAS_ATTEMPTS`` times."""
        for _ in range(rules.MAX_CAS_ATTEMPTS):
            moved_to = attempt()
            if moved_to is None:
                return
            if expected_version > 0:
                raise rules.stale_version(what, expected_version, moved_to)
        raise rules.contention(what)

    def now_ms(self) -> int:
        """Redis server time (or the test clock)."""
        if self._clock is not None:
            return self._clock()
        with _driver_errors():
            seconds, micros = self._client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    # --- agents ------------------------------------------------------------------------------

    def create_agent(self, tenant: str, profile: AgentProfile) -> AgentSnapshot:
        """Store a new agent (version 1, presence OFFLINE, seq 1) with its index entries."""
        k, agent_id = Keys(tenant), profile.agent_id
        skills = [k.skill(s) for s in sorted(profile.skills)]
        reply = self._run(
            "create_agent",
            [k.agent(agent_id), k.work(agent_id), k.agents, k.events, *skills],
            [agent_id, codec.encode_profile(profile), rules.EVENTS_MAXLEN, rules.WORK_RETENTION_MS],
        )
        if reply[0] == "exists":
            raise AlreadyExistsError(f"agent {agent_id} already exists")
        return agent_from_view(reply[1])

    def _read_profile(self, k: Keys, agent_id: str) -> AgentProfile:
        text, version = self._hmget(k.agent(agent_id), "profile", "version")
        if text is None or version is None:
            raise rules.agent_not_found(agent_id)
        return codec.decode_profile(text, int(version))

    def update_agent(
        self,
        tenant: str,
        agent_id: str,
        change: Callable[[AgentProfile], AgentProfile],
        expected_version: int = 0,
    ) -> AgentSnapshot:
        """Read, apply ``change``, compare-and-set on the version (re-read on a race when
        ``expected_version`` is 0)."""
        k, what = Keys(tenant), f"agent {agent_id}"
        result: list[AgentSnapshot] = []

        def attempt() -> int | None:
            current = self._read_profile(k, agent_id)
            if expected_version > 0 and expected_version != current.version:
                raise rules.stale_version(what, expected_version, current.version)
            changed = rules.checked_change(change, current)
            removed = sorted(current.skills.keys() - changed.skills.keys())
            added = sorted(changed.skills.keys() - current.skills.keys())
            reply = self._run(
                "update_agent",
                [k.agent(agent_id), k.work(agent_id), k.events]
                + [k.skill(s) for s in (*removed, *added)],
                [
                    current.version,
                    codec.encode_profile(changed),
                    len(removed),
                    agent_id,
                    rules.EVENTS_MAXLEN,
                    rules.WORK_RETENTION_MS,
                ],
            )
            if reply[0] == "missing":
                raise rules.agent_not_found(agent_id)
            if reply[0] == "moved":
                return int(reply[1])
            result.append(agent_from_view(reply[1]))
            return None

        self._cas_loop(what, expected_version, attempt)
        return result[0]

    def delete_agent(self, tenant: str, agent_id: str, expected_version: int = 0) -> None:
        """Remove an idle agent, its work spans and its index entries."""
        k, what = Keys(tenant), f"agent {agent_id}"

        def attempt() -> int | None:
            current = self._read_profile(k, agent_id)
            if expected_version > 0 and expected_version != current.version:
                raise rules.stale_version(what, expected_version, current.version)
            reply = self._run(
                "delete_agent",
                [k.agent(agent_id), k.work(agent_id), k.agents, k.events]
                + [k.skill(s) for s in sorted(current.skills)],
                [current.version, agent_id, rules.EVENTS_MAXLEN],
            )
            if reply[0] == "missing":
                raise rules.agent_not_found(agent_id)
            if reply[0] == "busy":
                raise rules.agent_busy(agent_id, int(reply[1]))
            if reply[0] == "moved":
                return int(reply[1])
            return None

        self._cas_loop(what, expected_version, attempt)

    def get_agent(self, tenant: str, agent_id: str) -> AgentSnapshot:
        """One agent with live state; ``recent`` covers the last 24 h."""
        _, agents = self._read_agents(Keys(tenant), [agent_id], None)
        if not agents:
            raise rules.agent_not_found(agent_id)
        return agents[0]

    def list_agents(
        self, tenant: str, query: AgentQuery, page_size: int, page_token: str = ""
    ) -> tuple[list[AgentSnapshot], str]:
        """Scan the ``agents`` ZSET by id from the cursor, filtering, until the page is full
        and one more match proves there is a next page."""
        k = Keys(tenant)
        after = rules.decode_page_token(page_token) if page_token else None
        start = "-" if after is None else "(" + after
        found: list[AgentSnapshot] = []
        chunk = max(_SCAN_CHUNK, page_size + 1)
        while len(found) <= page_size:
            with _driver_errors():
                reply = self._client.zrange(k.agents, start, "+", bylex=True, offset=0, num=chunk)
            ids = [_text(agent_id) for agent_id in reply]
            if not ids:
                break
            _, agents = self._read_agents(k, ids, None)
            found.extend(agent for agent in agents if rules.matches(query, agent))
            start = "(" + ids[-1]
            if len(ids) < chunk:
                break
        page = found[:page_size]
        more = len(found) > page_size
        return page, rules.encode_page_token(page[-1].agent_id) if more else ""

    def set_presence(
        self, tenant: str, agent_id: str, presence: Presence, reason: str = ""
    ) -> AgentSnapshot:
        """Change presence; counts as a heartbeat; bumps ``seq``; appends an event."""
        k = Keys(tenant)
        reply = self._run(
            "set_presence",
            [k.agent(agent_id), k.work(agent_id), k.events],
            [presence.value, reason, agent_id, rules.EVENTS_MAXLEN, rules.WORK_RETENTION_MS],
        )
        if reply[0] == "missing":
            raise rules.agent_not_found(agent_id)
        return agent_from_view(reply[1])

    def heartbeat(self, tenant: str, agent_id: str) -> int:
        """Record a heartbeat (no ``seq`` bump); returns store time."""
        reply = self._run("heartbeat", [Keys(tenant).agent(agent_id)], [])
        if reply[0] == "missing":
            raise rules.agent_not_found(agent_id)
        return int(reply[1])

    # --- policy ------------------------------------------------------------------------------

    def get_policy(self, tenant: str) -> Policy:
        """The stored policy or ``Policy()`` (version 0)."""
        with _driver_errors():
            text = _text_or_none(self._client.get(Keys(tenant).policy))
        return Policy() if text is None else codec.decode_policy(text)

    def put_policy(self, tenant: str, policy: Policy, expected_version: int = 0) -> Policy:
        """Store ``policy`` as the next version (compare-and-set like ``update_agent``)."""
        k = Keys(tenant)
        result: list[Policy] = []

        def attempt() -> int | None:
            read = self.get_policy(tenant).version
            if expected_version > 0 and expected_version != read:
                raise rules.stale_version("policy", expected_version, read)
            stored = dataclasses.replace(policy, version=read + 1)
            reply = self._run(
                "put_policy",
                [k.policy, k.events],
                [read, codec.encode_policy(stored), rules.EVENTS_MAXLEN],
            )
            if reply[0] == "moved":
                return int(reply[1])
            result.append(stored)
            return None

        self._cas_loop("policy", expected_version, attempt)
        return result[0]

    # --- routing -----------------------------------------------------------------------------

    def load_snapshot(self, tenant: str, call: Call) -> Snapshot:
        """Two ``MULTI`` round trips: policy, time, candidate ids (``SINTER`` of the required
        skills' indexes) and the agent count; then the candidates' hashes and the work spans
        inside the policy's occupancy window."""
        k = Keys(tenant)
        skills = sorted({req.skill for req in call.required_skills})
        with _driver_errors():
            pipe = self._client.pipeline(transaction=True)
            pipe.get(k.policy)
            self._pipeline_now(pipe)
            if skills:
                pipe.sinter([k.skill(s) for s in skills])
            else:
                pipe.zrange(k.agents, 0, -1)
            pipe.zcard(k.agents)
            replies = list(pipe.execute())
        text = replies.pop(0)
        policy = Policy() if text is None else codec.decode_policy(text)
        now = self._take_now(replies)
        candidates, total = sorted(replies[0]), int(replies[1])
        min_end = now - policy.occupancy_window_s * 1000
        _, agents = self._read_agents(k, candidates, min_end) if candidates else (0, [])
        return Snapshot(now, policy, tuple(agents), total - len(candidates))

    def _assignment(self, k: Keys, assignment_id: str) -> Assignment | None:
        fields = self._hgetall(k.asg(assignment_id))
        return assignment_from_hash(assignment_id, fields) if fields else None

    def find_request(self, tenant: str, request_id: str) -> tuple[str, Assignment] | None:
        """The fingerprint and assignment stored for ``request_id`` (two reads)."""
        k = Keys(tenant)
        fingerprint, assignment_id = self._hmget(k.req(request_id), "fingerprint", "assignment_id")
        if fingerprint is None or assignment_id is None:
            return None
        asg = self._assignment(k, assignment_id)
        return None if asg is None else (fingerprint, asg)

    def commit_assignment(self, tenant: str, claim: Claim) -> CommitResult:
        """One script re-checks request, call and agent, then writes everything."""
        k, call, asg_id = Keys(tenant), claim.call, uuid.uuid4().hex
        reply = self._run(
            "commit_assignment",
            [
                k.req(claim.request_id),
                k.call(call.call_id),
                k.agent(claim.agent_id),
                k.asg(asg_id),
                k.fence,
                k.events,
            ],
            [
                claim.fingerprint,
                call.call_id,
                claim.agent_id,
                claim.expected_seq,
                claim.units,
                claim.heartbeat_timeout_s * 1000,
                asg_id,
                codec.encode_call(call),
                codec.encode_explanation(claim.explanation),
                call.channel.value,
                rules.REQUEST_TTL_MS,
                rules.EVENTS_MAXLEN,
            ],
        )
        status = reply[0]
        if status == "replayed":
            stored = self._assignment(k, reply[1])
            if stored is None:
                raise NotFoundError(f"assignment {reply[1]} has expired")
            return Committed(stored, replayed=True)
        if status == "fingerprint":
            raise rules.request_reused()
        if status == "call_assigned":
            raise rules.call_assigned(call.call_id, reply[1])
        if status == "call_finished":
            raise rules.call_finished(call.call_id, reply[1])
        if status == "conflict":
            return Conflict(reply[1])
        return Committed(
            Assignment(
                assignment_id=asg_id,
                call_id=call.call_id,
                agent_id=claim.agent_id,
                channel=call.channel,
                units=claim.units,
                token=int(reply[1]),
                state=AssignmentState.ACTIVE,
                created_ms=int(reply[2]),
                explanation=claim.explanation,
            )
        )

    def finish_assignment(
        self,
        tenant: str,
        assignment_id: str,
        token: int,
        end: AssignmentState,
        *,
        outcome_value: float | None = None,
        half_life_s: int = 0,
    ) -> Assignment:
        """Read the assignment's agent and call ids, then one script ends it."""
        rules.check_ending(end, outcome_value)
        k = Keys(tenant)
        agent_id, call_id = self._hmget(k.asg(assignment_id), "agent_id", "call_id")
        if agent_id is None or call_id is None:
            raise NotFoundError(f"assignment {assignment_id} not found")
        reply = self._run(
            "finish_assignment",
            [k.asg(assignment_id), k.agent(agent_id), k.work(agent_id), k.call(call_id), k.events],
            [
                assignment_id,
                token,
                end.value,
                "" if outcome_value is None else repr(float(outcome_value)),
                half_life_s,
                rules.WORK_RETENTION_MS,
                rules.RECORD_TTL_MS,
                rules.EVENTS_MAXLEN,
            ],
        )
        status = reply[0]
        if status == "missing":
            raise NotFoundError(f"assignment {assignment_id} not found")
        if status == "stale":
            raise rules.stale_token(token, assignment_id)
        if status == "already":
            raise rules.already_ended(assignment_id, reply[1])
        return assignment_from_hash(assignment_id, pairs(reply[1]))

    def cancel_call(self, tenant: str, call_id: str) -> CallRecord:
        """Read the call's assignment and agent, then one script cancels (re-read if the call
        moved on in between, bounded)."""
        k = Keys(tenant)
        for _ in range(rules.MAX_CAS_ATTEMPTS):
            status, asg_id = self._hmget(k.call(call_id), "status", "assignment_id")
            if status is None or asg_id is None:
                raise NotFoundError(f"call {call_id} not found")
            agent_id = self._hmget(k.asg(asg_id), "agent_id")[0] or ""
            reply = self._run(
                "cancel_call",
                [k.call(call_id), k.asg(asg_id), k.agent(agent_id), k.work(agent_id), k.events],
                [
                    asg_id,
                    rules.WORK_RETENTION_MS,
                    rules.RECORD_TTL_MS,
                    rules.EVENTS_MAXLEN,
                    call_id,
                ],
            )
            if reply[0] == "missing":
                raise NotFoundError(f"call {call_id} not found")
            if reply[0] == "completed":
                raise rules.call_finished(call_id, CallStatus.COMPLETED.value)
            if reply[0] == "ok":
                return _call_record(asg_id, pairs(reply[1]), pairs(reply[2]))
        raise rules.contention(f"call {call_id}")

    def get_call(self, tenant: str, call_id: str) -> CallRecord:
        """A call's status and its current or last assignment (two reads)."""
        k = Keys(tenant)
        fields = self._hgetall(k.call(call_id))
        if not fields:
            raise NotFoundError(f"call {call_id} not found")
        asg_id = fields.get("assignment_id", "")
        asg = self._hgetall(k.asg(asg_id)) if asg_id else {}
        return _call_record(asg_id, fields, asg)

    def read_events(self, tenant: str, after_id: str = "0", limit: int = 100) -> list[Event]:
        """``XRANGE`` from just after ``after_id``, at most ``limit`` entries."""
        k = Keys(tenant)
        ms, n = rules.parse_event_id(after_id)
        if limit <= 0 or (ms, n) == (rules.U64_MAX, rules.U64_MAX):
            return []
        with _driver_errors():
            entries = self._client.xrange(k.events, f"({ms}-{n}", "+", count=limit) or []
        return [event_from_entry(_text(event_id), _texts(fields)) for event_id, fields in entries]


def _text_or_none(value: object) -> str | None:
    """A reply value as ``str`` (the client decodes responses)."""
    return None if value is None else _text(value)


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise RouterError("the redis client must be created with decode_responses=True")
    return value


def _texts(mapping: object) -> dict[str, str]:
    if not isinstance(mapping, dict):
        raise RouterError(f"redis replied {type(mapping).__name__} where a hash was expected")
    return {_text(name): _text(value) for name, value in mapping.items()}


def _call_record(asg_id: str, fields: dict[str, str], asg: dict[str, str]) -> CallRecord:
    return CallRecord(
        call=codec.decode_call(fields["call"]),
        status=CallStatus(fields["status"]),
        assignment=assignment_from_hash(asg_id, asg) if asg else None,
        updated_ms=int(fields["updated"]),
    )
