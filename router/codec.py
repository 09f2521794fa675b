"""Explicit JSON for the domain types the stores keep, plus the small encodings both stores share.

Every field is written under its own name, so a stored record is readable by humans, by other
languages and by the next version of this code: decoders take missing fields from the dataclass
defaults and ignore unknown ones (rolling upgrades). Never pickle, never protobuf: the wire
contract and the storage format evolve separately.

A record that cannot be decoded is a server fault (``RouterError``, code INTERNAL), not a
client error.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from router.domain import (
    Absence,
    AbsenceKind,
    AgentProfile,
    Call,
    Channel,
    Exclusion,
    Explanation,
    Policy,
    SkillRequirement,
    SlaTarget,
    Strategy,
    Weights,
    WideningStep,
    frozen_map,
)
from router.errors import RouterError
from router.memo import TextMemo

T = TypeVar("T")


def _dumps(value: Mapping[str, Any]) -> str:
    # Insertion order is kept (no sort_keys): maps such as score parts round-trip in order.
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _loads(kind: str, text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise RouterError(f"stored {kind} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise RouterError(f"stored {kind} is not a JSON object")
    return value


def _decoding(kind: str, build: Callable[[], T]) -> T:
    """Run ``build``; a malformed stored record becomes ``RouterError`` (INTERNAL)."""
    try:
        return build()
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise RouterError(f"stored {kind} is unreadable: {exc!r}") from exc


def _channel_map(raw: Mapping[str, Any]) -> Mapping[Channel, int]:
    return _channel_items(tuple((str(key), int(value)) for key, value in raw.items()))


# Maps and sets that many agents hold alike (a team's skills, the usual capacity, a language
# set) are decoded once and shared: they are immutable, and every object a cached agent
# holds is one more for each of the garbage collector's full passes to walk.


@functools.lru_cache(maxsize=4_096)
def _channel_items(items: tuple[tuple[str, int], ...]) -> Mapping[Channel, int]:
    return frozen_map({Channel(key): value for key, value in items})


@functools.lru_cache(maxsize=4_096)
def _skill_levels(items: tuple[tuple[str, int], ...]) -> Mapping[str, int]:
    return frozen_map(dict(items))


@functools.lru_cache(maxsize=4_096)
def _languages(names: tuple[str, ...]) -> frozenset[str]:
    return frozenset(names)


def _channel_ints(values: Mapping[Channel, int]) -> dict[str, int]:
    return {str(ch): n for ch, n in values.items()}


# --- agent profile ---------------------------------------------------------------------------


def encode_profile(profile: AgentProfile) -> str:
    """JSON of ``profile`` without its version (the stores keep the version beside it)."""
    return _dumps(
        {
            "agent_id": profile.agent_id,
            "name": profile.name,
            "team": profile.team,
            "skills": dict(profile.skills),
            "languages": sorted(profile.languages),
            "region": profile.region,
            "timezone": profile.timezone,
            "capacity": {str(ch): n for ch, n in profile.capacity.items()},
            "max_occupancy": profile.max_occupancy,
            "absences": [
                {
                    "absence_id": a.absence_id,
                    "kind": str(a.kind),
                    "start_ms": a.start_ms,
                    "end_ms": a.end_ms,
                    "note": a.note,
                }
                for a in profile.absences
            ],
            "shift_end_ms": profile.shift_end_ms,
        }
    )


def _decode_profile(text: str, version: int) -> AgentProfile:
    """``decode_profile`` without the memo."""
    raw = _loads("agent profile", text)

    def build() -> AgentProfile:
        occupancy = raw.get("max_occupancy")
        return AgentProfile(
            agent_id=str(raw["agent_id"]),
            name=str(raw.get("name", "")),
            team=str(raw.get("team", "")),
            skills=_skill_levels(tuple((str(k), int(v)) for k, v in raw.get("skills", {}).items())),
            languages=_languages(tuple(str(x) for x in raw.get("languages", []))),
            region=str(raw.get("region", "")),
            timezone=str(raw.get("timezone", "")),
            capacity=_channel_map(raw.get("capacity", {})),
            max_occupancy=None if occupancy is None else float(occupancy),
            absences=tuple(
                Absence(
                    absence_id=str(a["absence_id"]),
                    kind=AbsenceKind(a["kind"]),
                    start_ms=int(a["start_ms"]),
                    end_ms=int(a["end_ms"]),
                    note=str(a.get("note", "")),
                )
                for a in raw.get("absences", [])
            ),
            shift_end_ms=int(raw.get("shift_end_ms", 0)),
            version=version,
        )

    return _decoding("agent profile", build)


PROFILE_MEMO_BYTES = 64 * 2**20
"""Decoded profiles kept (``decode_profile``): texts and their ``memo.ENTRY_OVERHEAD``, 64
MiB (some 40,000 agents' profiles of a typical size)."""

decode_profile: TextMemo[AgentProfile] = TextMemo(_decode_profile, PROFILE_MEMO_BYTES)
"""``decode_profile(text, version)``: inverse of ``encode_profile``; ``version`` comes from
the store's own field. Memoised on the exact stored text: a profile is immutable, so reusing
the decoded object for the same bytes changes no decision, and every snapshot still reads
the text (and version) fresh from the store."""


# --- call ------------------------------------------------------------------------------------


def encode_call(call: Call) -> str:
    """JSON of a routed ``Call`` (the stores keep its changing parts, such as a boosted
    priority, the agents who declined it or ``handed_back_ms``, beside this JSON). Request
    digests hash it (``assigner.fingerprint``): a field added here changes every digest, and
    a retry reaching a replica of the other version would be refused."""
    return _dumps(
        {
            "call_id": call.call_id,
            "channel": str(call.channel),
            "required_skills": [
                {"skill": r.skill, "min_level": r.min_level} for r in call.required_skills
            ],
            "preferred_skills": list(call.preferred_skills),
            "language": call.language,
            "region": call.region,
            "timezone": call.timezone,
            "priority": call.priority,
            "preferred_agent_id": call.preferred_agent_id,
            "attributes": dict(call.attributes),
            "team": call.team,
            "region_required": call.region_required,
            "expected_handle_s": call.expected_handle_s,
            "created_ms": call.created_ms,
            "enqueued_ms": call.enqueued_ms,
            "excluded_agents": list(call.excluded_agents),
        }
    )


def decode_call(text: str) -> Call:
    """Inverse of ``encode_call``."""
    raw = _loads("call", text)

    def build() -> Call:
        return Call(
            call_id=str(raw["call_id"]),
            channel=Channel(raw["channel"]),
            required_skills=tuple(
                SkillRequirement(skill=str(r["skill"]), min_level=int(r["min_level"]))
                for r in raw.get("required_skills", [])
            ),
            preferred_skills=tuple(str(s) for s in raw.get("preferred_skills", [])),
            language=str(raw.get("language", "")),
            region=str(raw.get("region", "")),
            timezone=str(raw.get("timezone", "")),
            priority=int(raw.get("priority", 0)),
            preferred_agent_id=str(raw.get("preferred_agent_id", "")),
            attributes=frozen_map({str(k): str(v) for k, v in raw.get("attributes", {}).items()}),
            team=str(raw.get("team", "")),
            region_required=bool(raw.get("region_required", False)),
            expected_handle_s=int(raw.get("expected_handle_s", 0)),
            created_ms=int(raw.get("created_ms", 0)),
            enqueued_ms=int(raw.get("enqueued_ms", 0)),
            excluded_agents=tuple(str(a) for a in raw.get("excluded_agents", [])),
        )

    return _decoding("call", build)


# --- explanation -----------------------------------------------------------------------------


def encode_explanation(explanation: Explanation) -> str:
    """JSON of an ``Explanation``."""
    return _dumps(
        {
            "strategy": str(explanation.strategy),
            "candidates": explanation.candidates,
            "excluded": {str(k): v for k, v in explanation.excluded.items()},
            "score_parts": dict(explanation.score_parts),
            "score": explanation.score,
            "runner_up_agent_id": explanation.runner_up_agent_id,
            "runner_up_score": explanation.runner_up_score,
            "widening_step": explanation.widening_step,
        }
    )


def decode_explanation(text: str) -> Explanation:
    """Inverse of ``encode_explanation``."""
    raw = _loads("explanation", text)

    def build() -> Explanation:
        return Explanation(
            strategy=Strategy(raw["strategy"]),
            candidates=int(raw.get("candidates", 0)),
            excluded=frozen_map({Exclusion(k): int(v) for k, v in raw.get("excluded", {}).items()}),
            score_parts=frozen_map(
                {str(k): float(v) for k, v in raw.get("score_parts", {}).items()}
            ),
            score=float(raw.get("score", 0.0)),
            runner_up_agent_id=str(raw.get("runner_up_agent_id", "")),
            runner_up_score=float(raw.get("runner_up_score", 0.0)),
            widening_step=int(raw.get("widening_step", 0)),
        )

    return _decoding("explanation", build)


# --- policy ----------------------------------------------------------------------------------

_WEIGHT_FIELDS = ("skill", "performance", "region", "previous_agent", "idle", "load")


def encode_policy(policy: Policy) -> str:
    """JSON of a ``Policy``, version included."""
    return _dumps(
        {
            "strategy": str(policy.strategy),
            "weights": {name: getattr(policy.weights, name) for name in _WEIGHT_FIELDS},
            "max_occupancy": policy.max_occupancy,
            "occupancy_window_s": policy.occupancy_window_s,
            "channel_capacity": _channel_ints(policy.channel_capacity),
            "channel_units": _channel_ints(policy.channel_units),
            "heartbeat_timeout_s": policy.heartbeat_timeout_s,
            "top_k": policy.top_k,
            "performance_prior": policy.performance_prior,
            "performance_prior_weight": policy.performance_prior_weight,
            "performance_half_life_s": policy.performance_half_life_s,
            "idle_horizon_s": policy.idle_horizon_s,
            "offer_timeout_s": _channel_ints(policy.offer_timeout_s),
            "wrap_up_s": _channel_ints(policy.wrap_up_s),
            "max_wait_s": _channel_ints(policy.max_wait_s),
            "expected_handle_s": _channel_ints(policy.expected_handle_s),
            "sla": {
                str(ch): {"target_s": t.target_s, "goal": t.goal} for ch, t in policy.sla.items()
            },
            "sla_at_risk": policy.sla_at_risk,
            "escalation_priority_boost": policy.escalation_priority_boost,
            "escalation_group": policy.escalation_group,
            "widening": [
                {
                    "after_s": step.after_s,
                    "level_drop": step.level_drop,
                    "teams": list(step.teams),
                    "any_region": step.any_region,
                }
                for step in policy.widening
            ],
            "aging_s_per_priority": policy.aging_s_per_priority,
            "max_missed_offers": policy.max_missed_offers,
            "callback_threshold_s": policy.callback_threshold_s,
            "reclaim_on_absence": policy.reclaim_on_absence,
            "reclaim_channels": sorted(str(ch) for ch in policy.reclaim_channels),
            "max_queue": policy.max_queue,
            "version": policy.version,
        }
    )


def _sla(raw: Mapping[str, Any]) -> Mapping[Channel, SlaTarget]:
    return frozen_map(
        {
            Channel(ch): SlaTarget(int(t["target_s"]), float(t.get("goal", 0.8)))
            for ch, t in raw.items()
        }
    )


def _widening(raw: list[Any]) -> tuple[WideningStep, ...]:
    return tuple(
        WideningStep(
            after_s=int(step["after_s"]),
            level_drop=int(step.get("level_drop", 0)),
            teams=tuple(str(team) for team in step.get("teams", [])),
            any_region=bool(step.get("any_region", False)),
        )
        for step in raw
    )


def decode_policy(text: str) -> Policy:
    """Inverse of ``encode_policy``; absent fields keep ``Policy()`` defaults."""
    raw = _loads("policy", text)
    default = Policy()

    def build() -> Policy:
        weights = raw.get("weights", {})
        return Policy(
            strategy=Strategy(raw.get("strategy", default.strategy)),
            weights=Weights(
                **{
                    name: float(weights.get(name, getattr(default.weights, name)))
                    for name in _WEIGHT_FIELDS
                }
            ),
            max_occupancy=float(raw.get("max_occupancy", default.max_occupancy)),
            occupancy_window_s=int(raw.get("occupancy_window_s", default.occupancy_window_s)),
            channel_capacity=_channel_map(raw.get("channel_capacity", default.channel_capacity)),
            channel_units=_channel_map(raw.get("channel_units", default.channel_units)),
            heartbeat_timeout_s=int(raw.get("heartbeat_timeout_s", default.heartbeat_timeout_s)),
            top_k=int(raw.get("top_k", default.top_k)),
            performance_prior=float(raw.get("performance_prior", default.performance_prior)),
            performance_prior_weight=float(
                raw.get("performance_prior_weight", default.performance_prior_weight)
            ),
            performance_half_life_s=int(
                raw.get("performance_half_life_s", default.performance_half_life_s)
            ),
            idle_horizon_s=int(raw.get("idle_horizon_s", default.idle_horizon_s)),
            offer_timeout_s=_channel_map(raw.get("offer_timeout_s", default.offer_timeout_s)),
            wrap_up_s=_channel_map(raw.get("wrap_up_s", default.wrap_up_s)),
            max_wait_s=_channel_map(raw.get("max_wait_s", default.max_wait_s)),
            expected_handle_s=_channel_map(raw.get("expected_handle_s", default.expected_handle_s)),
            sla=_sla(raw["sla"]) if "sla" in raw else default.sla,
            sla_at_risk=float(raw.get("sla_at_risk", default.sla_at_risk)),
            escalation_priority_boost=int(
                raw.get("escalation_priority_boost", default.escalation_priority_boost)
            ),
            escalation_group=str(raw.get("escalation_group", default.escalation_group)),
            widening=_widening(raw.get("widening", [])),
            aging_s_per_priority=int(raw.get("aging_s_per_priority", default.aging_s_per_priority)),
            max_missed_offers=int(raw.get("max_missed_offers", default.max_missed_offers)),
            callback_threshold_s=int(raw.get("callback_threshold_s", default.callback_threshold_s)),
            reclaim_on_absence=bool(raw.get("reclaim_on_absence", default.reclaim_on_absence)),
            reclaim_channels=(
                frozenset(Channel(ch) for ch in raw["reclaim_channels"])
                if "reclaim_channels" in raw
                else default.reclaim_channels
            ),
            max_queue=int(raw.get("max_queue", default.max_queue)),
            version=int(raw.get("version", 0)),
        )

    return _decoding("policy", build)
