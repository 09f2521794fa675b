"""``router.codec``: stored agent profiles decode to what was stored, sharing alike parts."""

from __future__ import annotations

import dataclasses
import json

import pytest

from router import codec
from router.domain import (
    Absence,
    AbsenceKind,
    AgentProfile,
    Channel,
    Policy,
    WideningStep,
    frozen_map,
)
from router.errors import RouterError
from router.redis_base import POLICY_MEMO_BYTES, _decoded


def _profile(agent_id: str, **changes: object) -> AgentProfile:
    fields: dict[str, object] = {
        "skills": frozen_map({"billing": 7, "tech": 3}),
        "languages": frozenset({"en", "pt-br"}),
        "capacity": frozen_map({Channel.CHAT: 4, Channel.VOICE: 1}),
        "region": "EU",
    }
    return AgentProfile(agent_id, **{**fields, **changes})  # type: ignore[arg-type]


def test_profiles_decoded_alike_share_their_parts() -> None:
    """Agents with the same skills, capacity and languages hold one object of each (each
    object a cached agent holds is one more for the collector's full passes to walk), and
    every profile still decodes to exactly what was stored."""
    first, second = _profile("a1"), _profile("a2")
    other = _profile("a3", skills=frozen_map({"billing": 2}), languages=frozenset({"es"}))
    decoded = [codec.decode_profile(codec.encode_profile(p), 5) for p in (first, second, other)]
    assert decoded == [dataclasses.replace(p, version=5) for p in (first, second, other)]
    a, b, c = decoded
    assert a.skills is b.skills
    assert a.capacity is b.capacity
    assert a.languages is b.languages
    assert c.skills is not a.skills
    assert dict(c.skills) == {"billing": 2}
    assert c.languages == frozenset({"es"})
    assert c.capacity is a.capacity
    with pytest.raises(TypeError):
        a.skills["billing"] = 1  # type: ignore[index]  # shared, so it must stay read-only


@pytest.mark.parametrize(
    ("field", "value"),
    [("skills", {"billing": "x"}), ("capacity", {"fax": 1}), ("capacity", {"chat": [1]})],
)
def test_an_unreadable_stored_profile_is_a_server_fault(field: str, value: object) -> None:
    """A stored profile whose skills or capacity cannot be read is ``RouterError``
    (INTERNAL), and the next good one still decodes."""
    raw = json.loads(codec.encode_profile(_profile("a1")))
    raw[field] = value
    with pytest.raises(RouterError, match="stored agent profile is unreadable"):
        codec.decode_profile(json.dumps(raw), 1)
    assert codec.decode_profile(codec.encode_profile(_profile("a1")), 1).skills["billing"] == 7


def test_the_decoded_profiles_kept_are_bounded_by_size_not_count() -> None:
    """Each update of an agent is a new stored text; the memo of decoded profiles keeps at
    most ``PROFILE_MEMO_BYTES`` of them (a 260 KB profile updated 2,000 times held 1 GB in
    a memo bounded by count), dropping the oldest first, and a profile larger than the
    whole memo still decodes."""
    notes = "é" * 2000
    absences = tuple(
        Absence(f"x{n}", AbsenceKind.OTHER, n * 1000, n * 1000 + 500, note=notes)
        for n in range(100)
    )
    big = _profile("big", absences=absences)
    text = codec.encode_profile(big)
    assert len(text) > 200_000
    for version in range(1, 2 * codec.PROFILE_MEMO_BYTES // len(text) + 2):
        assert codec.decode_profile(text, version).version == version
        assert codec.decode_profile.size <= codec.PROFILE_MEMO_BYTES
    small = codec.encode_profile(_profile("a1"))
    assert codec.decode_profile(small, 1) is codec.decode_profile(small, 1)
    huge = codec.encode_profile(_profile("huge", name="n" * (codec.PROFILE_MEMO_BYTES + 1)))
    assert codec.decode_profile(huge, 1).name == "n" * (codec.PROFILE_MEMO_BYTES + 1)


def test_the_decoded_policies_kept_are_bounded_by_size_not_count() -> None:
    """The same for policies: each ``UpdatePolicy`` is a new text; the stores' memo of
    decoded policies keeps at most ``POLICY_MEMO_BYTES`` of them (a 150 KB policy updated
    1,500 times held 340 MB in a memo bounded by count)."""
    teams = tuple("équipe-" + "x" * 100 + str(n) for n in range(20))
    steps = tuple(WideningStep(after_s=10 * (n + 1), teams=teams) for n in range(10))
    for n in range(2 * POLICY_MEMO_BYTES // 25_000 + 2):
        text = codec.encode_policy(Policy(widening=steps, aging_s_per_priority=n + 1))
        assert len(text) > 25_000
        assert _decoded(text).policy.widening == steps
        assert _decoded.size <= POLICY_MEMO_BYTES
