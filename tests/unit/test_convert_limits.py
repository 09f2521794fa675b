"""Limits on hostile input: bounded error messages, character rules, timestamps, durations."""

from __future__ import annotations

import pytest
from google.protobuf import field_mask_pb2  # noqa: F401  # keeps the well-known types loaded
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from router import convert, routing_api
from router.domain import Policy
from router.errors import InvalidArgumentError
from router.policies import policy_from_pb
from router.v1 import routing_pb2
from router.v1 import types_pb2 as pb


def test_shown_clips_and_escapes() -> None:
    """Error messages quote at most 64 characters, with controls and non-ASCII escaped."""
    assert convert.shown("en") == "'en'"
    assert convert.shown("a\x00é") == "'a\\x00\\xe9'"
    long = convert.shown("x" * 100_000)
    assert long == "'" + "x" * 64 + "'..."


@pytest.mark.parametrize(
    "value", ["\u212a", "bil\tling", "billing\n", "bill ing", "é", "", "  ", "x" * 65]
)
def test_skill_names_are_ascii_without_controls(value: str) -> None:
    """The Kelvin sign is not ``k``; tabs and newlines are refused, not stripped."""
    with pytest.raises(InvalidArgumentError) as err:
        convert.skill_name("skill", value)
    assert err.value.field == "skill"


def test_skill_names_still_normalise_case_and_spaces() -> None:
    """Upper case and surrounding spaces are still accepted and normalised."""
    assert convert.skill_name("skill", " Billing ") == "billing"


@pytest.mark.parametrize("value", ["\u212a\u212a", "en\t", "e\u0301n", "x" * 100_000])
def test_language_tags_are_ascii_and_errors_are_short(value: str) -> None:
    """Non-ASCII tags are refused and the message never carries the whole value."""
    with pytest.raises(InvalidArgumentError) as err:
        convert.language("call.language", value)
    assert len(str(err.value)) < 200


def test_language_tags_normalise() -> None:
    """Case and surrounding spaces are normalised."""
    assert convert.language("l", " PT-BR ") == "pt-br"


@pytest.mark.parametrize("value", ["localtime", "Factory", "x" * 100_000, "Europe/Lisbon\x00"])
def test_timezones_are_real_iana_zones(value: str) -> None:
    """Host-specific names and huge values are refused with a short message."""
    with pytest.raises(InvalidArgumentError) as err:
        convert.timezone("agent.timezone", value)
    assert len(str(err.value)) < 200


def test_text_refuses_c1_controls_and_line_separators() -> None:
    """C1 controls and U+2028/U+2029 count as control characters."""
    for char in ("\x85", "\x9b", "\u2028", "\u2029"):
        with pytest.raises(InvalidArgumentError):
            convert.text("agent.name", f"a{char}b", max_len=200)
    assert convert.text("agent.name", "Zoë 漢字", max_len=200) == "Zoë 漢字"


@pytest.mark.parametrize(
    "ts",
    [
        Timestamp(seconds=-1),
        Timestamp(seconds=253_402_300_800),
        Timestamp(seconds=2**62),
        Timestamp(seconds=1_800_000_000, nanos=-1),
        Timestamp(seconds=1_800_000_000, nanos=1_000_000_000),
    ],
)
def test_instants_outside_the_timestamp_range_are_refused(ts: Timestamp) -> None:
    """Only 1970..9999 with nanos in range: what every response can convert back."""
    with pytest.raises(InvalidArgumentError) as err:
        convert.instant("agent.shift_end", ts)
    assert err.value.field == "agent.shift_end"


def test_instant_in_range() -> None:
    """A normal instant is its epoch milliseconds."""
    assert convert.instant("t", Timestamp(seconds=1_800_000_000, nanos=5_000_000)) == (
        1_800_000_000_005
    )


def test_shift_end_out_of_range_is_refused_before_any_write() -> None:
    """A shift end the protobuf library could not send back is refused by name."""
    agent = pb.Agent(agent_id="a", shift_end=Timestamp(seconds=2**62))
    with pytest.raises(InvalidArgumentError) as err:
        convert.agent_from_pb(agent)
    assert err.value.field == "agent.shift_end"


@pytest.mark.parametrize("nanos", [0, 999_999])
def test_a_shift_end_at_the_epoch_is_refused_not_taken_for_none(nanos: int) -> None:
    """A shift end within the first millisecond of 1970 would read as 0 ms, which stores
    "no shift end": refused by name instead of dropped."""
    agent = pb.Agent(agent_id="a", shift_end=Timestamp(seconds=0, nanos=nanos))
    with pytest.raises(InvalidArgumentError, match="after 1970-01-01") as err:
        convert.agent_from_pb(agent)
    assert err.value.field == "agent.shift_end"
    assert convert.agent_from_pb(agent.__class__(agent_id="a")).shift_end_ms == 0
    later = pb.Agent(agent_id="a", shift_end=Timestamp(seconds=0, nanos=1_000_000))
    assert convert.agent_from_pb(later).shift_end_ms == 1


def test_absence_times_out_of_range_are_refused() -> None:
    """Both ends of an absence are checked instants."""
    absence = pb.Absence(
        kind=pb.ABSENCE_KIND_OTHER,
        start_time=Timestamp(seconds=-86400),
        end_time=Timestamp(seconds=0),
    )
    with pytest.raises(InvalidArgumentError) as err:
        convert.absence_from_pb(absence, "x")
    assert err.value.field == "absence.start_time"


@pytest.mark.parametrize(
    "d",
    [
        Duration(seconds=1, nanos=-1),
        Duration(seconds=-1, nanos=1),
        Duration(nanos=1_000_000_000),
        Duration(seconds=315_576_000_001),
    ],
)
def test_invalid_durations_are_refused(d: Duration) -> None:
    """Durations must follow the protobuf rules before any range applies."""
    with pytest.raises(InvalidArgumentError) as err:
        convert.duration_seconds("outcome.handle_time", d)
    assert err.value.field == "outcome.handle_time"


def test_valid_duration_seconds() -> None:
    """Negative durations are valid Durations (ranges per field refuse them later)."""
    assert convert.duration_seconds("d", Duration(seconds=-2, nanos=-500_000_000)) == -2.5


def test_language_count_is_checked_before_each_tag() -> None:
    """Too many languages is reported as such, even when the tags are bad too."""
    with pytest.raises(InvalidArgumentError) as err:
        convert.languages_from_pb("agent.languages", ["!"] * 21)
    assert err.value.field == "agent.languages"


def test_bad_skill_keys_are_escaped_in_the_field_path() -> None:
    """A control character in a skill key does not reach the status message raw."""
    with pytest.raises(InvalidArgumentError) as err:
        convert.skills_from_pb("agent.skills", {"a\x00b": 3})
    assert err.value.field == "agent.skills[a\\x00b]"


def test_attribute_keys_are_escaped_in_the_field_path() -> None:
    """A non-ASCII attribute key (here a right-to-left override, which would reverse the
    rest of a log line or status message as shown) is escaped in the path of its value's
    error, as every other echoed input."""
    msg = routing_pb2.AssignRequest(
        call=pb.Call(call_id="c", channel=pb.CHANNEL_CHAT, attributes={"k\u202e": "v" * 513})
    ).call
    with pytest.raises(InvalidArgumentError) as err:
        convert.call_from_pb(msg)
    assert err.value.field == "call.attributes[k\\u202e]"
    assert "\u202e" not in str(err.value)


def test_unknown_mask_paths_are_not_echoed_in_full() -> None:
    """A huge unknown path in an update mask yields a short message."""
    with pytest.raises(InvalidArgumentError) as err:
        convert.agent_fields_from_pb(pb.Agent(), ["x" * 100_000])
    assert len(str(err.value)) < 200
    with pytest.raises(InvalidArgumentError) as err:
        policy_from_pb(pb.Policy(), ["y" * 100_000], Policy())
    assert len(str(err.value)) < 200


def test_reclaim_channels_listed_twice_are_refused() -> None:
    """Each channel at most once, which also bounds the list."""
    msg = pb.Policy(reclaim_channels=[pb.CHANNEL_EMAIL, pb.CHANNEL_EMAIL])
    with pytest.raises(InvalidArgumentError) as err:
        policy_from_pb(msg, ["reclaim_channels"], Policy())
    assert err.value.field == "policy.reclaim_channels[1]"


def test_policy_durations_must_be_valid() -> None:
    """A Duration with mixed signs is refused by its field path."""
    msg = pb.Policy(idle_horizon=Duration(seconds=60, nanos=-1))
    with pytest.raises(InvalidArgumentError) as err:
        policy_from_pb(msg, ["idle_horizon"], Policy())
    assert err.value.field == "policy.idle_horizon"


@pytest.mark.parametrize(
    "cursor",
    ["\uff11\uff12\uff13-0", "18446744073709551616-0", "0-99999999999999999999", "12", "1-2-3"],
)
def test_watch_cursors_are_ascii_stream_ids_in_range(cursor: str) -> None:
    """Unicode digits and parts over 64 bits are refused as ``after_event_id``."""
    with pytest.raises(InvalidArgumentError) as err:
        routing_api._watch_cursor(cursor)
    assert err.value.field == "after_event_id"


def test_watch_cursor_accepts_the_documented_forms() -> None:
    """Empty, "0" and a stream id pass unchanged."""
    for cursor in ("", "0", "1700000000000-0", "18446744073709551615-18446744073709551615"):
        assert routing_api._watch_cursor(cursor) == cursor


def test_watch_types_are_bounded() -> None:
    """At most 32 types; each an upper-case name, quoted briefly when wrong."""
    too_many = routing_pb2.WatchRequest(tenant="t", types=["ASSIGNED"] * 33)
    with pytest.raises(InvalidArgumentError) as err:
        routing_api._watch_filter(too_many)
    assert err.value.field == "types"
    huge = routing_pb2.WatchRequest(tenant="t", types=["x" * 100_000])
    with pytest.raises(InvalidArgumentError) as err:
        routing_api._watch_filter(huge)
    assert len(str(err.value)) < 200
    assert routing_api._watch_filter(routing_pb2.WatchRequest(types=["ASSIGNED"])) == {"ASSIGNED"}
