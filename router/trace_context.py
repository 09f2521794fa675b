"""W3C trace context (``traceparent``) read from a request's gRPC metadata.

A caller instrumented with OpenTelemetry (or any W3C trace-context propagator) sends the
trace its request belongs to as ``traceparent`` metadata. The service does not record spans
of its own; it puts the caller's trace id and span id on every log line the RPC writes, and
the trace id on the RPC's latency sample as a Prometheus exemplar, so an operator can go from
a trace to the router's lines for it, and from a slow bucket on a dashboard to one trace.

An invalid header is ignored, as the W3C recommendation says, and never fails the RPC.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

HEADER = "traceparent"
MAX_LENGTH = 512
"""Longer values are not looked at (a version 00 header is 55 characters)."""

_VERSION_00 = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_LATER_VERSION = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:-.*)?")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16
_SAMPLED = 0x01


@dataclass(frozen=True, slots=True)
class TraceContext:
    """The trace a request belongs to, as its caller sent it."""

    trace_id: str
    """32 lower-case hex digits."""
    parent_id: str
    """The caller's span: 16 lower-case hex digits."""
    sampled: bool
    """Whether the caller records this trace (the ``sampled`` flag)."""

    def log_fields(self) -> dict[str, str]:
        """The fields bound to the RPC's log lines."""
        return {"trace_id": self.trace_id, "parent_span_id": self.parent_id}


def parse_traceparent(value: str) -> TraceContext | None:
    """The trace context in a ``traceparent`` value, or ``None`` when it is not valid.

    Version ``00`` must be exactly four fields; a later version (not ``ff``) is read by its
    first four and may append more after a dash. Hex digits are lower case; all-zero trace
    and parent ids are invalid. Spaces and tabs around the value are allowed."""
    if len(value) > MAX_LENGTH:
        return None
    value = value.strip(" \t")
    found = _VERSION_00.fullmatch(value)
    if found is not None:
        trace_id, parent_id, flags = found.groups()
    else:
        later = _LATER_VERSION.fullmatch(value)
        if later is None or later.group(1) in ("00", "ff"):
            return None
        trace_id, parent_id, flags = later.group(2, 3, 4)
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return TraceContext(trace_id, parent_id, bool(int(flags, 16) & _SAMPLED))


def from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> TraceContext | None:
    """The trace context of a request's invocation metadata: its first ``traceparent``
    entry (keys compared without case), or ``None`` if absent or invalid."""
    for key, value in metadata or ():
        if key.lower() == HEADER:
            return parse_traceparent(value) if isinstance(value, str) else None
    return None
