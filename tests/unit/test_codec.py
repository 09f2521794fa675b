"""``router.codec``: stored agent profiles decode to what was stored, sharing alike parts."""

from __future__ import annotations

import dataclasses
import json

import pytest

from router import codec
from router.domain import AgentProfile, Channel, frozen_map
from router.errors import RouterError


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
