"""``Store`` on Redis 7: the production store, shared by every router replica.

This is the only module that imports ``redis``; the store methods live in driver-free mixins
(``redis_agents``, ``redis_routing``, ``redis_calls`` on ``redis_base``) and reach Redis
through the plumbing here. Writes that must not interleave are Lua scripts in ``router/lua/``
(``_lib.lua`` is prepended to each), run by ``EVALSHA``, and by ``EVAL`` of their source on
a NOSCRIPT after a restart or failover (``_eval``). Business outcomes come back from a script as
``{status, ...}`` arrays and become results or ``router.errors``; driver failures (connection,
timeout, loading, read-only replica, cluster down, OOM, BUSY) become ``StoreUnavailableError``.

Time: ``now_ms`` is Redis ``TIME``. Writing scripts take the time themselves
(``redis.call('TIME')``, allowed with Redis 7's effects replication) so a write costs one round
trip; reads that need "now" put ``TIME`` in the same ``MULTI`` as their reads. Tests may pass a
``clock`` that replaces Redis time everywhere (scripts then receive it as ``ARGV[1]``). TTLs
are relative (``PEXPIRE``) and so follow Redis time; the dispatcher lease also stores its
expiry, so it expires in store time under a test clock too.

Round trips: ``commit_assignment``, ``create_agent`` (plus the tenants ``SADD``), ``enqueue``
(same), ``set_presence``, ``heartbeat``, ``mark_sla``, ``expire_call``, leases and
``open_pass`` 1 (one script);
``update_agent``, ``delete_agent``, ``put_policy`` 2 (a read, then a compare-and-set script);
``accept_offer``, ``decline_offer``, ``finish_assignment`` 2 (the assignment's agent and
call ids are read first so the script declares every key it touches, as Redis Cluster
requires; 1 on the replica that committed or already read them, which remembers them);
``reclaim`` 3 (the agent's work, each assignment's call, the script);
``cancel_call`` 3 (call, its assignment, the script, which re-checks both);
``load_candidates`` 1 (the read-only ``index_changes`` script: policy, time, whether the
request id was seen, how many agents hold the skills, and the agents changed in the routing
index since this replica's mirror of it was current, ``index_mirror``), plus 1 for the
agents whose rev is not in the decoded-agent cache (``redis_cache``); ``load_snapshot``
2 (policy, ``TIME`` and ids in one ``MULTI``; then every agent's hash and in-window work
spans in a second); ``load_queue`` up to 3 (policy, ``TIME``, the queued ids, the first
offer's expiry and the heads of ``idx:revs`` and ``idx:beatlog`` in one ``MULTI``, which
also carries every agent id, rev and heartbeat unless the replica holds them from a read at
the same heads; if the heads moved, that read again with the lists; then the queued calls
and the agents not cached at their rev); ``read_events`` 1 (``XINFO STREAM`` and ``XRANGE``
in one ``MULTI``), then blocking ``XREAD`` calls; ``history`` 1 (what was written since this
replica's mirror of it was current, ``router.history_mirror``), 2 when it reads it all;
``waiting`` 2 (the queue's slice, then its calls' fields).

Redis Cluster (``docs/redis-cluster.md``): ``from_url`` detects a cluster (``INFO cluster``
says ``cluster_enabled:1``, or the URL scheme is ``redis+cluster://``) and then uses a
``RedisCluster`` client: scripts and single-key commands go to the node of their key's slot;
a ``MULTI`` goes, on that node's own connection pool, to the primary of the tenant's slot (so
``TIME`` may sit in it), refreshing the slot map and retrying on MOVED or a lost node.
CLUSTERDOWN, TRYAGAIN, MASTERDOWN, an uncovered slot or an unreachable node during a failover
are ``StoreUnavailableError`` (UNAVAILABLE). The single-server path is unchanged.

Both clients pack commands with ``_Packer`` (``hiredis.pack_command`` in one C call, the bytes
redis-py's own packer writes), given to the single server's connections as their
``command_packer`` and to a cluster's nodes through their connection class; everything else
(retries, health checks, script loading) stays redis-py's.

Key schema, version 1. Every key but ``rt:v1:tenants`` starts with ``rt:v1:{<tenant>}:``; the
hash tag puts one tenant in one Redis Cluster slot, so every script and ``MULTI`` is
single-slot. On a cluster, ``rt:v1:tenants`` lives in its own slot (on whichever primary owns
it): creating agents and queueing calls, and the dispatcher's tenant list, also depend on that
node.

=========================  ======  =======================================  ==================
key (after the prefix)     type    content                                  TTL / writer
=========================  ======  =======================================  ==================
``agent:<agent_id>``       HASH    ``profile`` (JSON, ``codec``, no         none; create/
                                   version), ``version``, ``presence``,     update/delete
                                   ``presence_reason``,                     agent,
                                   ``presence_since``, ``heartbeat``,       set_presence,
                                   ``seq``, ``last_free``,                  heartbeat, every
                                   ``last_assigned``, ``perf_sum``,         script that
                                   ``perf_weight``, ``perf_ts``,            starts or ends
                                   ``missed`` (offers missed in a row),     work
                                   ``rev`` (see ``idx:revs``),
                                   and ``a:<assignment_id>`` =
                                   ``<channel>|<units>|<start_ms>|
                                   <offered 0/1>|<wrap_until_ms>`` per
                                   piece of work holding capacity (the
                                   load is derived from these, so it
                                   cannot drift). A field whose
                                   ``wrap_until`` has passed no longer
                                   counts; the next script on the agent
                                   moves it to ``work``
``work:<agent_id>``        ZSET    finished spans, member                   none, trimmed to
                                   ``<assignment_id>|<start>|<end>|         24 h on each
                                   <units>``, score ``end`` (a wrap-up      write; scripts
                                   ends at its ``wrap_until``)              ending work,
                                                                            delete_agent
``agents``                 ZSET    every agent id, score 0 (``BYLEX``       none; create/
                                   cursor for ``list_agents``)              delete agent
``idx:skill:<skill>``      SET     ids of agents holding ``<skill>``        none; create/
                                                                            update/delete
``idx:ready``              ZSET    agents whose presence is ``available``,  none; every
                                   score the units of their work in         script that
                                   progress or offered (wrap-ups left out:  changes an agent
                                   it over-approximates who has room)       (``index_agent``)
``idx:revs``               ZSET    agent id -> its hash's ``rev``, a        none; as
                                   deleted agent at the rev of its          ``idx:ready``;
                                   deletion (so the members above a rev     deletions pruned
                                   are the agents changed since: the        after 10 min by a
                                   change log replicas mirror); member      later deletion
                                   ``""`` is the tenant's rev counter
                                   (started at Redis time in µs, so a rev
                                   never comes back)
``idx:gone``               ZSET    deleted agent id -> the rev of its       none; delete
                                   deletion, until pruned from both;        agent
                                   member ``""``: the highest rev pruned
                                   (a mirror older than it reads the
                                   whole index)
``idx:retired``            HASH    deleted agent id -> ``version|seq`` of   none; delete
                                   its last life: created again, the agent  agent, create
                                   continues one past both (so nothing      agent
                                   read from the old one is taken for it)
``idx:beats``              ZSET    agent id -> its latest heartbeat (ms);   none; heartbeat
                                   a heartbeat takes no ``rev``: readers
                                   patch it into the agents they cached
``idx:beatlog``            ZSET    agent id -> the rev of its latest        none; heartbeat
                                   heartbeat (member ``""``: the counter),
                                   the heartbeats' change log
``idx:version``            STRING  the index version built for the tenant   none; ``reindex``
                                   (``index_changes`` answers               (in batches of
                                   ``unindexed`` until it matches the       500 agents)
                                   code's; version 1's ``idx:rev`` hash is
                                   deleted then)
``policy``                 STRING  policy JSON (``codec``, with             none; put_policy
                                   version); absent = ``Policy()`` v0
``asg:<assignment_id>``    HASH    ``call_id``, ``agent_id``,               7 d after it
                                   ``channel``, ``units``, ``token``,       ends; commit,
                                   ``state``, ``created``, ``ended``,       accept, decline,
                                   ``offer_expires``, ``explanation``       finish, reclaim,
                                   (JSON)                                   cancel_call
``call:<call_id>``         HASH    ``call`` (JSON as it arrived),           none while alive;
                                   ``channel``, ``status``,                 7 d once
                                   ``assignment_id`` (current or last,      completed,
                                   "" if none), ``updated``, ``origin``     cancelled,
                                   (age origin: enqueued, else created,     abandoned or
                                   else first write), ``enqueued`` (0       expired; every
                                   until it first waits), ``priority``      routing script
                                   (current), ``excluded`` (JSON array of
                                   agents who declined it),
                                   ``handed_back`` (when an agent last
                                   gave it back after holding it: the
                                   queue time limit counts from there),
                                   ``callback``,
                                   ``at_risk``, ``breached`` (``0``/``1``);
                                   ``trace`` (the W3C traceparent of the
                                   request that created it, if any)
``timeline:<call_id>``     LIST    the call's events, each a JSON array     as its call;
                                   ``[id, type, ts, call_id, agent_id,      every script
                                   k, v, ...]``; the latest 200             that emits a
                                                                            call event
``queue``                  ZSET    QUEUED call ids, score                   none; enqueue,
                                   ``store.queue_score`` (age origin minus  commit (from
                                   priority x aging), ties by call id       queue), decline,
                                                                            finish (release),
                                                                            reclaim, cancel,
                                                                            mark_sla, expire
``queue:waits``            ZSET    ``<channel>|<since>|<call_id>`` per      none; enqueue,
                                   QUEUED call, every score 0: since (15    commit (from
                                   digits) when its wait toward the queue   queue), decline,
                                   time limit began (``handed_back``, else  finish (release),
                                   ``origin``); by member, each channel's   reclaim, cancel,
                                   calls in the order their waits began     expire,
                                   (``Store.due_waits``); the calls it      ``index_waits``;
                                   lacks are added by ``build_waits``, an   expire drops a
                                   entry of a call no longer waiting is     stale entry
                                   dropped by ``expire_call``
``offers``                 ZSET    OFFERED assignment ids, score expiry     none; commit,
                                                                            accept, decline,
                                                                            reclaim, cancel
``history``                ZSET    ``<event id, zero-padded>|<kind>|        none, trimmed to
                                   <channel>|<wait_ms>|<call_id>``, score   2 h on each
                                   time; kinds ``answered``, ``abandoned``, write; commit,
                                   ``expired``, ``completed``               accept, finish,
                                                                            cancel, expire
``done:<channel>``         ZSET    the channel's ``completed`` history keys none, trimmed to
                                   (``Store.completions``), score time      15 min on each
                                                                            write; finish
``done:since``             STRING  when the ``done`` sets started counting  none; finish
``req:<request_id>``       HASH    ``fingerprint``, ``call_id``             24 h; commit,
                                                                            enqueue
``fence``                  STRING  fencing-token counter (``INCR``)         none; commit
``lease:dispatch``         STRING  ``<expires_ms>|<owner>``                 the lease TTL
                                                                            (Redis time);
                                                                            lease script
``lease:tick``             STRING  ``<expires_ms>|<owner>``: the replica    two ticks (Redis
                                   making the tenant's full pass each       time); lease
                                   tick (the others only check for work)    script
``events``                 STREAM  ``type``, ``ts``, ``call_id``,           ``MAXLEN ~``
                                   ``agent_id`` + event data                100000; every
                                                                            write script
``rt:v1:tenants`` (whole   SET     tenants with agents or calls (no hash    none; ``SADD``
key, no prefix)                    tag: never touched inside a script)      before the
                                                                            create_agent and
                                                                            enqueue scripts
=========================  ======  =======================================  ==================

Wrap-up counts as work: a completed assignment with wrap-up keeps its ``a:`` field (capacity
held, ``ActiveWork.wrap_until_ms`` set) and its span is recorded from its start to the end of
the wrap-up, so rolling occupancy (``scoring.load``, which counts held work as running until
now) sees after-call work as busy, as the industry's occupancy does, with neither a gap nor a
double count when the wrap-up ends. ``last_free`` becomes the wrap-up end. Only COMPLETED
writes a ``completed`` history entry (handle time = completion - assignment start, wrap-up
excluded); released and cancelled work does not.

Ordering: ties never depend on the random assignment ids where order is visible: ``reclaim``
handles an agent's work, and ``expired_offers`` returns equal expiries, in token (creation)
order; history ties sort by event id (write order); queue ties by call id.

Work spans live under ``work:<id>`` rather than ``agent:<id>:work`` because agent ids may
contain ``:`` (``agent:x:work`` would collide with the hash of agent ``x:work``). Assignment
ids are uuid4 hex minted here. Times are epoch milliseconds.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib import resources
from typing import Any

import hiredis
import redis
from opentelemetry.trace import SpanKind
from redis._parsers.encoders import Encoder
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.connection import HiredisRespSerializer, PythonRespSerializer
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ClusterError,
    MovedError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.retry import Retry

from router import metrics, tracing
from router import store_common as rules
from router.errors import RouterError, StoreUnavailableError
from router.history_mirror import HistoryMirrors
from router.redis_agents import TOMBSTONES_KEPT_S, RedisAgents
from router.redis_cache import AgentCache, PartiesCache
from router.redis_calls import RedisCalls
from router.redis_routing import RedisRouting
from router.redis_schema import TENANTS_KEY, Keys, event_from_entry, text, text_or_none, texts
from router.store import NONE_QUIET, Event, PassGrant

_SCRIPTS = (
    "create_agent",
    "update_agent",
    "delete_agent",
    "set_presence",
    "heartbeat",
    "put_policy",
    "commit_assignment",
    "enqueue",
    "accept_offer",
    "decline_offer",
    "finish_assignment",
    "reclaim",
    "cancel_call",
    "mark_sla",
    "expire_call",
    "request_callback",
    "lease",
    "index_changes",
    "reindex",
    "index_waits",
    "prune_waits",
)
_READ_ONLY = frozenset({"index_changes"})
"""Scripts that write nothing (``flags=no-writes``: they also run while Redis refuses
writes, e.g. at its memory limit)."""
_UNAVAILABLE = (
    redis.ConnectionError,
    redis.TimeoutError,
    ReadOnlyError,
    TryAgainError,
    ClusterError,  # CLUSTERDOWN, MASTERDOWN, redirections without end ("TTL exhausted")
    AskError,  # and MOVED: a slot still moving after the client's retries
    SlotNotCoveredError,
    OutOfMemoryError,
)
_NON_LOCAL = "access a non local key"
"""A script's command on a key its node does not hold while the tenant's slot migrates (the
scripts touch no key after emptying it, so the node refused them before any write:
``tests/integration/test_slot_migration.py``): retry once the slot has moved."""
_WRITABLE = "#!lua\nreturn 1"
"""``check_writable``'s script: no flags, so Redis treats it as one that may write."""
_REFUSING_WRITES = ("NOREPLICAS", "MISCONF", "MASTERDOWN")
"""Error replies of a Redis that refuses writes for now (too few replicas in sync with
``min-replicas-to-write``, a failed save or AOF write, a replica cut off from its primary),
before the command ran: nothing was written, and a retry may pass once it recovers."""
_ROUTE_ERRORS = (
    redis.ConnectionError,
    redis.TimeoutError,
    ReadOnlyError,
    TryAgainError,
    ClusterDownError,
    AskError,
)
"""Failures of a transaction routed to a slot's node that a refreshed slot map may cure."""
_ROUTE_ATTEMPTS = 3
_BUFFER_CUTOFF = 6000
"""redis-py's default: bulk strings past this size are sent as their own buffers."""
_CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
"""URL schemes that skip cluster detection: ``redis+cluster://host:port`` is a cluster."""


@contextmanager
def _driver_errors() -> Iterator[None]:
    """Translate driver exceptions into the error tree. The client's message names the kind
    of failure only (``_kind``); the driver's text, which may name the server's address and
    keys, goes to the log as the error's ``cause``."""
    errors = metrics.REDIS_ERRORS
    try:
        yield
    except _UNAVAILABLE as exc:
        errors.labels("unavailable").inc()
        raise StoreUnavailableError(f"redis unavailable: {_kind(exc)}", cause=str(exc)) from exc
    except redis.ResponseError as exc:
        if str(exc).startswith("BUSY"):  # a long script is running; safe to retry later
            errors.labels("busy").inc()
            raise StoreUnavailableError("redis busy: retry", cause=str(exc)) from exc
        if (
            isinstance(exc, NoScriptError)
            or str(exc).startswith(_REFUSING_WRITES)
            or _NON_LOCAL in str(exc)
        ):
            errors.labels("unavailable").inc()
            message = f"redis unavailable: {_kind(exc)}"
            raise StoreUnavailableError(message, cause=str(exc)) from exc
        errors.labels("refused").inc()
        raise RouterError(f"redis refused a command: {_kind(exc)}", cause=str(exc)) from exc
    except redis.RedisError as exc:
        errors.labels("failed").inc()
        raise RouterError(f"redis failed: {_kind(exc)}", cause=str(exc)) from exc
    except RedisClusterException as exc:  # not a RedisError: the cluster client's own errors
        message = str(exc)
        if "cannot be connected" in message or "not covered" in message:
            errors.labels("unavailable").inc()
            raise StoreUnavailableError("redis cluster unavailable", cause=message) from exc
        errors.labels("failed").inc()
        raise RouterError("redis cluster client failed", cause=message) from exc


_ERROR_CODE = re.compile(r"(?:Command # \d+ \(.*?\) of pipeline caused error: )?([A-Z]{3,})\b")


def _kind(exc: Exception) -> str:
    """What a client may learn of a driver error: Redis's error code when the reply still
    has one (``NOREPLICAS``, ``WRONGTYPE``, ...), else the exception's class
    (``ConnectionError``, ``OutOfMemoryError``: redis-py strips the codes it maps to a
    class), never its text."""
    found = _ERROR_CODE.match(str(exc))
    return found.group(1) if found else type(exc).__name__


def _cluster_hint(url: str) -> tuple[str, bool]:
    """``url`` with a ``redis+cluster`` / ``rediss+cluster`` scheme made plain, and whether
    it had one."""
    scheme, sep, rest = url.partition("://")
    plain = _CLUSTER_SCHEMES.get(scheme.lower())
    return (f"{plain}{sep}{rest}", True) if plain and sep else (url, False)


def _is_cluster(client: redis.Redis) -> bool:
    """``INFO cluster`` says ``cluster_enabled:1``. A server that cannot be asked (down, or
    INFO not allowed) counts as a single server; a MOVED reply later switches the store."""
    try:
        return int(client.info("cluster").get("cluster_enabled", 0)) == 1
    except redis.RedisError:
        return False


def _open_args(
    tenant: str, owner: str, ttl_ms: int, tick_ms: int, quiet_at: str, *, peek: bool
) -> tuple[list[str], list[str | int]]:
    """The keys and arguments of the lease script's ``open`` for one tenant."""
    k = Keys(tenant)
    keys = [k.lease, k.tick, k.queue, k.offers, k.revs, k.policy]
    return keys, ["open", owner, ttl_ms, tick_ms, quiet_at, "1" if peek else "0"]


def _source(name: str) -> str:
    """``#!lua`` + ``_lib.lua`` + the script. The shebang (no flags) leaves EVAL's
    compatibility mode: on a Redis Cluster node the server then refuses a script that
    touches a key of another slot than its declared keys, instead of allowing it."""
    lua = resources.files("router") / "lua"
    lib, body = (lua / "_lib.lua").read_text("utf-8"), (lua / f"{name}.lua").read_text("utf-8")
    flags = " flags=no-writes" if name in _READ_ONLY else ""
    return f"#!lua{flags}\n{lib}\n{body}"


class _Packer:
    """Packs a command in one call of hiredis' C packer, which takes text, bytes, integers
    and floats and writes exactly what redis-py's own packer writes for them (a test holds
    the two to it); anything else, and a command name of several words, goes through
    redis-py's packer. Saves the client's per-argument Python checks (three scripts and
    about 90 arguments per Assign+Complete pair). Stateless: one serves every connection."""

    def __init__(self) -> None:
        encoder = Encoder("utf-8", "strict", False)  # type: ignore[no-untyped-call]
        fallback = PythonRespSerializer(_BUFFER_CUTOFF, encoder.encode)
        self._fallback = HiredisRespSerializer(fallback.pack, encoder.encode)  # type: ignore[no-untyped-call]

    def pack(self, *args: Any) -> list[bytes]:
        """The command ``args`` in the Redis protocol."""
        head = args[0]
        if type(head) is str and " " not in head:
            try:
                return [hiredis.pack_command(args)]
            except TypeError:  # an argument hiredis does not take: the client says which
                pass
        packed: list[bytes] = self._fallback.pack(*args)
        return packed


_PACKER = _Packer()


class _Packs:
    """Mixed into a connection class: its connections pack with ``_PACKER`` (a Redis Cluster
    client builds its nodes' connections from a class, not from a packer)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("command_packer", _PACKER)
        super().__init__(*args, **kwargs)


class _PackedConnection(_Packs, redis.Connection):
    """A TCP connection packing with ``_PACKER``."""


class _PackedSSLConnection(_Packs, redis.SSLConnection):
    """A TLS connection packing with ``_PACKER``."""


def single_client(url: str, **options: Any) -> redis.Redis:
    """A client of the single Redis server at ``url`` (``redis.Redis.from_url``'s
    ``options``) whose commands ``_Packer`` packs: the one ``RedisStore.from_url`` uses."""
    return redis.Redis.from_url(url, command_packer=_PACKER, **options)


def cluster_client(url: str, **options: Any) -> RedisCluster:
    """A Redis Cluster client from the node at ``url`` (``redis://`` or ``rediss://``),
    its nodes' commands packed by ``_Packer``: the one ``RedisStore.from_url`` uses.

    It sends no command twice (``retry``: none, unless ``options`` give one): redis-py's
    cluster client would send a script again after a timeout or a dropped connection, and
    a script that ran the first time would run twice, answering for the second run (an
    agent created, then ALREADY_EXISTS). A failure is UNAVAILABLE, as on one server (a
    read's too: a Watch resumes from its cursor), and a later command finds the new slot
    map (redis-py refreshes it at most once a second); MOVED and ASK are followed as
    before."""
    tls = urllib.parse.urlsplit(url).scheme == "rediss"
    connection_class = _PackedSSLConnection if tls else _PackedConnection
    options.setdefault("retry", Retry(NoBackoff(), 0))
    return RedisCluster.from_url(url, connection_class=connection_class, **options)


def _packs_text(client: redis.Redis | RedisCluster) -> bool:
    """Whether ``client``'s connections pack with ``_PACKER``, which packs text in C."""
    kwargs = client.get_connection_kwargs()
    connection_class = kwargs.get("connection_class")
    return kwargs.get("command_packer") is _PACKER or (
        isinstance(connection_class, type) and issubclass(connection_class, _Packs)
    )


def _utf8(values: Sequence[str | int]) -> list[bytes | int]:
    """``values`` with every string as UTF-8 bytes (what the client would send for it)."""
    return [value.encode() if isinstance(value, str) else value for value in values]


class RedisStore(RedisAgents, RedisRouting, RedisCalls):
    """A ``router.store.Store`` on a Redis 7 server or a Redis Cluster (one slot per tenant)."""

    def __init__(
        self,
        client: redis.Redis | RedisCluster,
        clock: Callable[[], int] | None = None,
        *,
        events_maxlen: int = rules.EVENTS_MAXLEN,
        tombstones_kept_s: float = TOMBSTONES_KEPT_S,
        record_ttl_ms: int = rules.RECORD_TTL_MS,
    ) -> None:
        """``client`` must decode responses (``decode_responses=True``); a ``RedisCluster``
        client puts the store in cluster mode. ``clock`` (epoch ms) replaces Redis time, for
        tests only; production leaves it ``None``. ``events_maxlen`` caps the event stream
        (approximately; tests make it small); ``tombstones_kept_s``: how long a deleted
        agent stays in the routing index's change log (tests make it 0); ``record_ttl_ms``:
        how long a finished call's records (call, assignments, timeline) are kept."""
        kwargs = client.get_connection_kwargs()
        if not kwargs.get("decode_responses"):
            raise RouterError("RedisStore needs a client created with decode_responses=True")
        self._clock = clock
        self._events_maxlen = events_maxlen
        self._record_ttl_ms = record_ttl_ms
        self._tombstones_kept_us = round(tombstones_kept_s * 1_000_000)
        self._agent_cache = AgentCache()
        self._parties_seen = PartiesCache()
        self._known_policies = {}
        self._mirrors = {}
        self._waits_built = {}
        self._agent_lists = {}
        self._histories = HistoryMirrors()
        timeout = kwargs.get("socket_timeout")
        # A blocking XREAD must return before the socket times out: block in slices.
        self._block_slice_ms = max(1, int(float(timeout) * 500)) if timeout else 0
        self._url: str | None = None
        """Set by ``from_url``: lets a store that met a MOVED reply switch to cluster mode."""
        self._options: dict[str, Any] = {}
        self._switch = threading.Lock()
        self._unavailable_at: dict[str, float] = {}
        """``time.monotonic()`` of the last request that found Redis unavailable, per scope
        (``_scope``)."""
        self._use(client)

    def _use(self, client: redis.Redis | RedisCluster) -> None:
        self._client = client
        self._cluster = client if isinstance(client, RedisCluster) else None
        self._packs_text = _packs_text(client)
        """The client's commands go through ``_Packer``, which packs text in C."""
        self._scripts: dict[str, Script] = {
            name: client.register_script(_source(name)) for name in _SCRIPTS
        }
        self._writable = client.register_script(_WRITABLE)

    @property
    def cluster_mode(self) -> bool:
        """Whether the store talks to a Redis Cluster (a ``RedisCluster`` client)."""
        return self._cluster is not None

    @classmethod
    def from_url(
        cls, url: str, *, timeout_s: float = 2.0, record_ttl_ms: int = rules.RECORD_TTL_MS
    ) -> RedisStore:
        """A store on the Redis at ``url`` (``redis://``, ``rediss://`` or ``unix://``), with
        ``timeout_s`` bounding every command and connection attempt.

        A Redis Cluster is detected: ``INFO cluster`` on the URL's server says
        ``cluster_enabled:1``, and the store then uses a ``RedisCluster`` client that finds
        every node from that one. ``redis+cluster://`` (``rediss+cluster://``) skips the
        detection. A server that cannot be asked at start counts as a single server; if it
        later answers MOVED, the store switches to cluster mode by itself (that request
        fails with UNAVAILABLE, a retry works)."""
        url, forced = _cluster_hint(url)
        options: dict[str, Any] = {
            "decode_responses": True,
            "socket_timeout": timeout_s,
            "socket_connect_timeout": timeout_s,
            "health_check_interval": 30,
        }
        client = single_client(url, **options)
        if forced or _is_cluster(client):
            client.close()
            with _driver_errors():
                store = cls(cluster_client(url, **options), record_ttl_ms=record_ttl_ms)
        else:
            store = cls(client, record_ttl_ms=record_ttl_ms)
        store._url, store._options = url, options
        return store

    @staticmethod
    def redact(url: str) -> str:
        """``url`` with any password (``user:password@`` or a ``password`` query parameter)
        replaced by ``***``, for logs."""
        password = urllib.parse.urlsplit(url).password
        if password is not None:
            url = url.replace(f":{password}@", ":***@", 1)
        head, question, rest = url.partition("?")
        if not question:
            return url
        query, hash_, fragment = rest.partition("#")
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        hidden = [(k, "***" if k.lower() == "password" else v) for k, v in pairs]
        return f"{head}?{urllib.parse.urlencode(hidden, safe='*')}{hash_}{fragment}"

    def close(self) -> None:
        """Close the client's connections."""
        self._client.close()

    # --- plumbing ----------------------------------------------------------------------------

    @contextmanager
    def _errors(self, operation: str, target: str = "", *, key: str = "") -> Iterator[None]:
        """``_driver_errors``, and a MOVED reply to a single-server client switches the store
        to cluster mode (when it came from ``from_url``); a failure as unavailable is noted
        for ``unavailable_within`` (on a cluster, for the tenant of ``key``). Inside a traced
        request, the round trip is a client span named by the Redis ``operation`` and its
        ``target`` (a script's name)."""
        try:
            if tracing.enabled():
                name = f"{operation} {target}" if target else operation
                attributes = {"db.system.name": "redis", "db.operation.name": operation}
                with tracing.span(name, attributes, kind=SpanKind.CLIENT), _driver_errors():
                    yield
            else:
                with _driver_errors():
                    yield
        except StoreUnavailableError as exc:
            self._unavailable_at[self._scope(key)] = time.monotonic()
            if self._cluster is None and isinstance(exc.__cause__, MovedError):
                self._become_cluster()
            raise

    def _become_cluster(self) -> None:
        if self._url is None:
            return
        with self._switch:
            if self._cluster is not None:
                return
            try:
                cluster = cluster_client(self._url, **self._options)
            except (redis.RedisError, RedisClusterException):
                return  # still unreachable: the next MOVED tries again
            old = self._client
            self._use(cluster)
            old.close()

    def _run(self, name: str, keys: Sequence[str], args: Sequence[str | int]) -> list[Any]:
        now = "" if self._clock is None else str(self._clock())
        trace = tracing.request_trace()
        if trace:  # the scripts' first argument: '<clock>;<traceparent>' (see _lib.lua)
            now = f"{now};{trace}"
        if self._packs_text:
            script_keys: Sequence[str | bytes] = keys
            script_args: Sequence[str | int | bytes] = [now, *args]
        else:
            # Text encoded here, in one pass: the client's encoder otherwise runs four type
            # checks per argument, and a pair's three scripts carry about 90.
            script_keys, script_args = [key.encode() for key in keys], _utf8([now, *args])
        with self._errors("EVALSHA", name, key=keys[0] if keys else ""):
            reply = self._eval(self._scripts[name], script_keys, script_args)
        if not isinstance(reply, list):
            raise RouterError(f"script {name} replied {reply!r}")
        return reply

    def _eval(
        self, script: Script, keys: Sequence[str | bytes], args: Sequence[str | int | bytes]
    ) -> Any:
        """``EVALSHA``; when the node does not know the script (a restart, a failover to a
        replica that never ran it, ``SCRIPT FLUSH``), ``EVAL`` of its source on the same
        node, which runs it and keeps it. (The client's own fallback, ``SCRIPT LOAD``, goes
        to every primary of a cluster, so one primary down failed every tenant's request.)"""
        try:
            return self._client.evalsha(script.sha, len(keys), *keys, *args)
        except NoScriptError:
            return self._client.eval(text(script.script), len(keys), *keys, *args)

    def _transaction(
        self, k: Keys, build: Callable[[Any], object], *, raise_on_error: bool = True
    ) -> list[Any]:
        """``MULTI`` the commands ``build`` queues on a pipeline, ``EXEC``. On a cluster the
        transaction goes to the primary of the tenant's slot, on that node's own client
        (every key of ``k`` is in that slot; keyless commands such as ``TIME`` then work too);
        a MOVED (failover, resharding) or a lost node refreshes the slot map and retries."""
        cluster = self._cluster
        if cluster is None:
            pipe = self._client.pipeline(transaction=True)
            build(pipe)
            return list(pipe.execute(raise_on_error=raise_on_error))
        for attempt in range(_ROUTE_ATTEMPTS):
            node = cluster.get_node_from_key(k.events)  # type: ignore[no-untyped-call]
            try:
                pipe = cluster.get_redis_connection(node).pipeline(transaction=True)
                build(pipe)
                return list(pipe.execute(raise_on_error=raise_on_error))
            except _ROUTE_ERRORS as exc:
                if attempt + 1 == _ROUTE_ATTEMPTS:
                    raise
                metrics.RETRIES.labels("route").inc()
                if isinstance(exc, AskError) and not isinstance(exc, MovedError):
                    time.sleep(0.05)  # a slot migrating: ASKING cannot cover a MULTI; wait
                elif isinstance(exc, MovedError):
                    cluster.nodes_manager.move_slot(exc)
                else:
                    time.sleep(0.05 * (attempt + 1))
                    cluster.nodes_manager.initialize(last_failed_node_name=node.name)
        raise AssertionError("unreachable")  # pragma: no cover

    def _multi(
        self, k: Keys, build: Callable[[Any], object], *, now: bool = False
    ) -> tuple[int, list[Any]]:
        def queue(pipe: Any) -> None:
            if now and self._clock is None:
                pipe.time()
            build(pipe)

        with self._errors("MULTI", key=k.prefix):
            replies = self._transaction(k, queue)
        if not now:
            return 0, replies
        if self._clock is not None:
            return self._clock(), replies
        seconds, micros = replies.pop(0)
        return int(seconds) * 1000 + int(micros) // 1000, replies

    def _hmget(self, key: str, *names: str) -> list[str | None]:
        with self._errors("HMGET", key=key):
            return [text_or_none(value) for value in self._client.hmget(key, list(names))]

    def _register_tenant(self, tenant: str) -> None:
        # Before the script: a tenant is never missing from the set while it has data.
        with self._errors("SADD"):
            self._client.sadd(TENANTS_KEY, tenant)

    def unavailable_within(self, seconds: float, tenant: str) -> bool:
        """``Store.unavailable_within``: this replica's last request that found Redis
        unavailable (on a cluster: the node of ``tenant``'s slot) was at most ``seconds``
        ago."""
        at = self._unavailable_at.get(self._scope(Keys(tenant).prefix))
        return at is not None and time.monotonic() - at <= seconds

    def _scope(self, key: str) -> str:
        """Whose outage a failure on ``key`` is: on a cluster the tenant of the key's hash tag
        (other tenants live on other nodes; "" for keys of none), else every tenant's ("")."""
        if self._cluster is None or "{" not in key:
            return ""
        return key[key.index("{") + 1 : key.index("}")]

    def check_writable(self) -> None:
        """``Store.check_writable``: runs a script that may write (it writes nothing), which
        Redis refuses up front while it takes no writes: loading its data, at its memory
        limit, refusing writes (NOREPLICAS, MISCONF), or a replica. On a cluster, on each
        primary until one takes it: unavailable only when none does (with some of them
        down, their tenants' requests answer UNAVAILABLE, and taking every replica of the
        service out of a load balancer would help none of the others)."""
        cluster = self._cluster
        if cluster is None:
            with self._errors("EVALSHA", "writable"):
                self._eval(self._writable, [TENANTS_KEY], [])
            return
        failed: list[StoreUnavailableError] = []
        for node in cluster.get_primaries():  # type: ignore[no-untyped-call]
            try:
                with self._errors("EVAL", "writable"):
                    cluster.execute_command("EVAL", _WRITABLE, 0, target_nodes=node)  # type: ignore[no-untyped-call]
                return
            except StoreUnavailableError as exc:
                failed.append(exc)
        raise failed[-1] if failed else StoreUnavailableError("redis cluster has no primary")

    def now_ms(self) -> int:
        """Redis server time (or the test clock); on a cluster, the time of any one node."""
        if self._clock is not None:
            return self._clock()
        with self._errors("TIME"):
            seconds, micros = self._client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    # --- tenants and the dispatcher lease ----------------------------------------------------

    def tenants(self) -> list[str]:
        """``SMEMBERS rt:v1:tenants``, sorted."""
        with self._errors("SMEMBERS"):
            return sorted(text(t) for t in self._client.smembers(TENANTS_KEY))

    def acquire_lease(self, tenant: str, owner: str, ttl_ms: int) -> bool:
        """One script: take the lease if free or expired, extend it if ``owner`` holds it."""
        rules.check_lease(owner, ttl_ms)
        return bool(self._run("lease", [Keys(tenant).lease], ["acquire", owner, ttl_ms])[0] == "ok")

    def open_pass(
        self, tenant: str, owner: str, ttl_ms: int, tick_ms: int, quiet_at: str = ""
    ) -> PassGrant:
        """One script: the lease, the tick marker, and whether a call waits or an offer
        expired (``ZCARD`` of the queue, the first offer's expiry), or, for ``quiet_at``,
        whether nothing is queued or offered and ``idx:revs``' counter still stands there."""
        rules.check_lease(owner, ttl_ms, tick_ms)
        return self._open(tenant, owner, ttl_ms, tick_ms, quiet_at, peek=False)

    def _open(
        self, tenant: str, owner: str, ttl_ms: int, tick_ms: int, quiet_at: str, *, peek: bool
    ) -> PassGrant:
        """The lease script's ``open`` for one tenant (``peek``: only looking)."""
        return PassGrant(
            self._run("lease", *_open_args(tenant, owner, ttl_ms, tick_ms, quiet_at, peek=peek))[0]
        )

    def open_passes(
        self,
        tenants: Sequence[str],
        owner: str,
        ttl_ms: int,
        tick_ms: int,
        quiet_at: Mapping[str, str] = NONE_QUIET,
    ) -> list[PassGrant | RouterError]:
        """Each tenant's ``open_pass`` script, only looking (``Store.open_passes``), all in one
        pipeline; a tenant whose script failed there (its node lost the script, a slot
        moving), and on a cluster every tenant when the pipeline failed as a whole (a node
        away), is opened alone, which answers its own error (and notes its own outage) if
        it persists. On one server a pipeline that failed is the whole call's error."""
        rules.check_lease(owner, ttl_ms, tick_ms)
        now = "" if self._clock is None else str(self._clock())
        sha = self._scripts["lease"].sha
        pipe = self._client.pipeline(transaction=False)
        replies: list[Any] = []  # per tenant: its reply, or why it was not sent
        for tenant in tenants:
            try:
                keys, args = _open_args(
                    tenant, owner, ttl_ms, tick_ms, quiet_at.get(tenant, ""), peek=True
                )
            except RouterError as exc:  # a name no request could have written
                replies.append(exc)
                continue
            pipe.evalsha(sha, len(keys), *keys, now, *args)
            replies.append(None)
        sent = iter(self._peeks(pipe))
        grants: list[PassGrant | RouterError] = []
        for tenant, refused in zip(tenants, replies, strict=True):
            reply = refused or next(sent)
            if isinstance(reply, RouterError):
                grants.append(reply)
            elif isinstance(reply, list) and reply:
                grants.append(PassGrant(text(reply[0])))
            else:  # NOSCRIPT, MOVED, a node away: alone, with the single call's handling
                try:
                    quiet = quiet_at.get(tenant, "")
                    grants.append(self._open(tenant, owner, ttl_ms, tick_ms, quiet, peek=True))
                except RouterError as exc:
                    grants.append(exc)
        return grants

    def _peeks(self, pipe: Any) -> list[Any]:
        """The replies of ``open_passes``' pipeline; on a cluster, ``None`` for each script
        when the pipeline failed as a whole (each tenant is then opened alone)."""
        count = len(pipe)
        if not count:
            return []
        if self._cluster is None:
            with self._errors("EVALSHA", "lease"):
                return list(pipe.execute(raise_on_error=False))
        try:
            return list(pipe.execute(raise_on_error=False))
        except (redis.RedisError, RedisClusterException):
            return [None] * count

    def release_lease(self, tenant: str, owner: str) -> None:
        """One script: delete the lease if ``owner`` holds it."""
        self._run("lease", [Keys(tenant).lease], ["release", owner, 0])

    # --- events ------------------------------------------------------------------------------

    def read_events(
        self, tenant: str, after_id: str = "0", limit: int = 100, block_ms: int = 0
    ) -> list[Event]:
        """``XINFO STREAM`` (trim check, a cursor ahead of the newest, or what "$" stands
        for) and ``XRANGE`` in one ``MULTI``; then, if nothing came and ``block_ms > 0``,
        ``XREAD BLOCK`` in slices shorter than the socket timeout until an event comes or the
        time is up."""
        k = Keys(tenant)
        if after_id == "$":
            if block_ms <= 0 or limit <= 0:
                return []
            return self._block(k, self.last_event_id(tenant), limit, block_ms)
        cursor = rules.parse_event_id(after_id)
        reading = limit > 0 and cursor != (rules.U64_MAX, rules.U64_MAX)
        info, entries = self._stream(k, f"({cursor[0]}-{cursor[1]}" if reading else None, limit)
        newest = rules.parse_event_id(text(info["last-generated-id"])) if info else (0, 0)
        if cursor > newest:
            raise rules.events_ahead(after_id, newest)
        if not reading:
            return []
        if info and cursor != rules.EVENTS_START:
            first = info.get("first-entry")
            trimmed = int(info.get("entries-added", 0)) > int(info.get("length", 0))
            if trimmed and first and cursor < rules.parse_event_id(text(first[0])):
                raise rules.events_trimmed(after_id)
        if entries or block_ms <= 0:
            return entries
        return self._block(k, f"{cursor[0]}-{cursor[1]}", limit, block_ms)

    def last_event_id(self, tenant: str) -> str:
        """``last-generated-id`` of ``XINFO STREAM`` ("0-0" before the first event)."""
        info, _ = self._stream(Keys(tenant), None, 0)
        return text(info["last-generated-id"]) if info else "0-0"

    def _stream(
        self, k: Keys, start: str | None, limit: int
    ) -> tuple[dict[str, Any] | None, list[Event]]:
        """``XINFO STREAM`` (``None`` when there is no stream yet) and, from ``start``
        (exclusive form), ``XRANGE`` in one ``MULTI``."""

        def build(pipe: Any) -> None:
            pipe.xinfo_stream(k.events)
            if start is not None:
                pipe.xrange(k.events, start, "+", count=limit)

        with self._errors("MULTI", key=k.prefix):
            replies = self._transaction(k, build, raise_on_error=False)
            for reply in replies:
                if isinstance(reply, redis.ResponseError) and "no such key" in str(reply):
                    continue
                if isinstance(reply, Exception):
                    raise reply
        info = replies[0] if isinstance(replies[0], dict) else None
        entries = replies[1] if start is not None else []
        return info, [event_from_entry(text(i), texts(fields)) for i, fields in entries]

    def _block(self, k: Keys, cursor: str, limit: int, block_ms: int) -> list[Event]:
        deadline = time.monotonic() + block_ms / 1000
        while True:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0:
                return []
            wait_ms = min(left_ms, self._block_slice_ms) if self._block_slice_ms else left_ms
            with self._errors("XREAD", key=k.prefix):
                reply: Any = self._client.xread({k.events: cursor}, count=limit, block=wait_ms)
            for _, entries in reply or []:  # RESP2: [[stream, [(id, fields), ...]]]
                if entries:
                    return [event_from_entry(text(i), texts(fields)) for i, fields in entries]
