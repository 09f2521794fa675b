"""Validation at the edge: protobuf in, domain out, errors naming the field."""

from __future__ import annotations

import dataclasses

import pytest
from google.protobuf import field_mask_pb2  # noqa: F401  # keeps the well-known types loaded
from google.protobuf.duration_pb2 import Duration

from router import convert
from router.assigner import fingerprint
from router.domain import Call, Channel, Policy, SkillRequirement, Strategy
from router.errors import InvalidArgumentError
from router.policies import POLICY_FIELDS, policy_from_pb, policy_to_pb
from router.settings import Settings, SettingsError
from router.v1 import types_pb2 as pb


def _call(**changes: object) -> pb.Call:
    call = pb.Call(
        call_id="c1",
        channel=pb.CHANNEL_CHAT,
        required_skills=[pb.SkillRequirement(skill="Billing", min_level=4)],
        language="PT-BR",
    )
    for name, value in changes.items():
        setattr(call, name, value)
    return call


def test_call_is_normalised() -> None:
    """Skill names and language tags are case-insensitive and stored lower-case."""
    call = convert.call_from_pb(_call())
    assert call.channel is Channel.CHAT
    assert call.required_skills == (SkillRequirement("billing", 4),)
    assert call.language == "pt-br"


def test_round_trip_keeps_the_call() -> None:
    """A call converted to protobuf and back is the same call."""
    call = convert.call_from_pb(_call(priority=3, region="eu"))
    assert convert.call_from_pb(convert.call_to_pb(call)) == call


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"call_id": ""}, "call.call_id"),
        ({"call_id": "has space"}, "call.call_id"),
        ({"channel": 0}, "call.channel"),
        ({"priority": 11}, "call.priority"),
        ({"timezone": "Nowhere/City"}, "call.timezone"),
        ({"language": "e"}, "call.language"),
        ({"preferred_agent_id": "bad id"}, "call.preferred_agent_id"),
    ],
)
def test_bad_call_fields_are_named(changes: dict[str, object], field: str) -> None:
    """Every invalid field is reported by its path."""
    with pytest.raises(InvalidArgumentError) as err:
        convert.call_from_pb(_call(**changes))
    assert err.value.field == field


def test_duplicate_required_skill_is_refused() -> None:
    """A skill required twice is ambiguous."""
    msg = _call()
    msg.required_skills.append(pb.SkillRequirement(skill="billing", min_level=2))
    with pytest.raises(InvalidArgumentError, match="listed twice"):
        convert.call_from_pb(msg)


def test_fingerprint_ignores_attribute_order_but_not_content() -> None:
    """Retries that serialise maps in another order still match; a changed field does not."""
    a = _call()
    a.attributes["x"] = "1"
    a.attributes["y"] = "2"
    b = _call()
    b.attributes["y"] = "2"
    b.attributes["x"] = "1"
    assert fingerprint(convert.call_from_pb(a)) == fingerprint(convert.call_from_pb(b))
    b.attributes["x"] = "3"
    assert fingerprint(convert.call_from_pb(a)) != fingerprint(convert.call_from_pb(b))


def test_policy_round_trip_and_mask() -> None:
    """Every policy field survives a round trip; a mask changes only what it names."""
    policy = Policy()
    assert policy_from_pb(policy_to_pb(policy), POLICY_FIELDS, policy) == policy
    changed = policy_from_pb(pb.Policy(strategy=pb.STRATEGY_RANDOM, top_k=0), ["strategy"], policy)
    assert changed.strategy is Strategy.RANDOM
    assert changed.top_k == policy.top_k


def test_one_setting_of_one_channel_changes_alone() -> None:
    """A listed channel keeps every field left unset, its default capacity included (it
    was taken as 0, turning the channel off for agents without a capacity of their own);
    a capacity of 0 set explicitly still turns it off."""
    policy = Policy()
    offers = pb.ChannelSetting(channel=pb.CHANNEL_CHAT, offer_timeout=Duration(seconds=30))
    changed = policy_from_pb(pb.Policy(channels=[offers]), ["channels"], policy)
    assert changed.offer_timeout_s[Channel.CHAT] == 30
    assert changed.channel_capacity == policy.channel_capacity
    assert changed.channel_capacity[Channel.CHAT] == 3
    off = pb.ChannelSetting(channel=pb.CHANNEL_CHAT, default_capacity=0)
    closed = policy_from_pb(pb.Policy(channels=[off]), ["channels"], changed)
    assert closed.channel_capacity[Channel.CHAT] == 0
    assert closed.offer_timeout_s[Channel.CHAT] == 30
    assert policy_from_pb(policy_to_pb(closed), ["channels"], policy) == closed


def test_one_weight_changes_alone() -> None:
    """``weights.<name>`` changes that weight (``weights`` sets all six: the others to 0
    unless given); two such paths both apply; a bad value names the weight."""
    policy = Policy()
    msg = pb.Policy(weights=pb.Weights(skill=5, idle=2))
    skill = policy_from_pb(msg, ["weights.skill"], policy)
    assert skill.weights == dataclasses.replace(policy.weights, skill=5.0)
    both = policy_from_pb(msg, ["weights.skill", "weights.idle"], policy)
    assert both.weights == dataclasses.replace(policy.weights, skill=5.0, idle=2.0)
    assert policy_from_pb(msg, ["weights"], policy).weights.load == 0
    with pytest.raises(InvalidArgumentError) as err:
        policy_from_pb(pb.Policy(weights=pb.Weights(load=-1)), ["weights.load"], policy)
    assert err.value.field == "policy.weights.load"
    with pytest.raises(InvalidArgumentError) as err:
        policy_from_pb(msg, ["weights.nope"], policy)
    assert err.value.field == "update_mask"


@pytest.mark.parametrize(
    ("msg", "path", "field"),
    [
        (pb.Policy(max_occupancy=0), "max_occupancy", "policy.max_occupancy"),
        (pb.Policy(top_k=0), "top_k", "policy.top_k"),
        (pb.Policy(weights=pb.Weights(skill=-1)), "weights", "policy.weights.skill"),
        (pb.Policy(weights=pb.Weights(load=float("nan"))), "weights", "policy.weights.load"),
        (pb.Policy(strategy=pb.STRATEGY_UNSPECIFIED), "strategy", "policy.strategy"),
        (pb.Policy(), "occupancy_window", "policy.occupancy_window"),
        (
            pb.Policy(channels=[pb.ChannelSetting(channel=pb.CHANNEL_CHAT, units=101)]),
            "channels",
            "policy.channels[0].units",
        ),
        (pb.Policy(), "no_such_field", "update_mask"),
    ],
)
def test_bad_policy_fields_are_named(msg: pb.Policy, path: str, field: str) -> None:
    """Policy validation names the field it refuses."""
    with pytest.raises(InvalidArgumentError) as err:
        policy_from_pb(msg, [path], Policy())
    assert err.value.field == field


HALF_A_SECOND = Duration(nanos=400_000_000)


@pytest.mark.parametrize(
    ("msg", "path", "field"),
    [
        (
            pb.Policy(heartbeat_timeout=HALF_A_SECOND),
            "heartbeat_timeout",
            "policy.heartbeat_timeout",
        ),
        (
            pb.Policy(callback_threshold=HALF_A_SECOND),
            "callback_threshold",
            "policy.callback_threshold",
        ),
        (
            pb.Policy(
                channels=[pb.ChannelSetting(channel=pb.CHANNEL_CHAT, offer_timeout=HALF_A_SECOND)]
            ),
            "channels",
            "policy.channels[0].offer_timeout",
        ),
    ],
)
def test_a_duration_that_would_round_to_off_is_refused(
    msg: pb.Policy, path: str, field: str
) -> None:
    """Durations are kept in whole seconds, and 0 turns these settings off: 0.4 s is refused
    by name, not taken as off; 0 and 0.6 s (1 s) are taken."""
    with pytest.raises(InvalidArgumentError, match="would round to 0 s") as err:
        policy_from_pb(msg, [path], Policy())
    assert err.value.field == field
    call = convert.call_to_pb(Call("c", Channel.CHAT))
    call.expected_handle_time.CopyFrom(HALF_A_SECOND)
    with pytest.raises(InvalidArgumentError, match="would round to 0 s"):
        convert.call_from_pb(call)
    taken = policy_from_pb(
        pb.Policy(heartbeat_timeout=Duration(nanos=600_000_000)), ["heartbeat_timeout"], Policy()
    )
    assert taken.heartbeat_timeout_s == 1
    off = policy_from_pb(pb.Policy(heartbeat_timeout=Duration()), ["heartbeat_timeout"], Policy())
    assert off.heartbeat_timeout_s == 0


def test_settings_from_env_parses_and_validates() -> None:
    """Settings come from ROUTER_* variables and refuse nonsense with the variable's name."""
    settings = Settings.from_env(
        {"ROUTER_PORT": "6000", "REDIS_URL": "redis://x", "ROUTER_LOG_JSON": "0"}
    )
    assert (settings.port, settings.redis_url, settings.log_json) == (6000, "redis://x", False)
    with pytest.raises(SettingsError, match="ROUTER_PORT"):
        Settings.from_env({"ROUTER_PORT": "seventy"})
    with pytest.raises(SettingsError, match="ROUTER_WORKERS"):
        Settings.from_env({"ROUTER_WORKERS": "0"})


def test_policy_bounds_are_inclusive_except_the_occupancy_cap() -> None:
    """A prior of 0 and a heartbeat timeout of 0 are allowed; an occupancy cap of 0 is not."""
    policy = policy_from_pb(
        pb.Policy(performance_prior=0), ["performance_prior", "heartbeat_timeout"], Policy()
    )
    assert (policy.performance_prior, policy.heartbeat_timeout_s) == (0, 0)
