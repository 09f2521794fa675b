"""The service's log set-up: one line per event in one format, whoever logs it."""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Iterator

import pytest
import structlog

from router import logs


@pytest.fixture
def configured() -> Iterator[None]:
    """``logs.configure`` for the test; the tests' quiet set-up and the standard library's
    handlers put back after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        logs.silence(level="info")


def _lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


def test_the_routers_events_are_json_lines_with_the_bound_context(
    configured: None, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure(level="info", json=True)
    structlog.contextvars.bind_contextvars(tenant="acme", call_id="c1")
    try:
        structlog.get_logger("router.test").info("rpc_finished", code="OK")
    finally:
        structlog.contextvars.clear_contextvars()
    (line,) = _lines(capsys.readouterr().err)
    assert line["event"] == "rpc_finished"
    assert (line["level"], line["tenant"], line["call_id"], line["code"]) == (
        "info",
        "acme",
        "c1",
        "OK",
    )
    assert str(line["timestamp"]).endswith("Z")


def test_other_libraries_warnings_come_out_as_the_same_json(
    configured: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """A library logging through ``logging`` (here as the OpenTelemetry exporter does when
    the collector is down) writes a JSON line with its logger's name; below warning,
    nothing, so libraries' chatter stays out."""
    logs.configure(level="info", json=True)
    exporter = logging.getLogger("opentelemetry.exporter.otlp.proto.grpc.exporter")
    exporter.warning("Transient error %s encountered while exporting traces", "UNAVAILABLE")
    exporter.info("not shown")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("redis.client").exception("reply failed")
    first, second = _lines(capsys.readouterr().err)
    assert first["event"] == "Transient error UNAVAILABLE encountered while exporting traces"
    assert first["level"] == "warning"
    assert first["logger"] == "opentelemetry.exporter.otlp.proto.grpc.exporter"
    assert "timestamp" in first
    assert second["level"] == "error"
    assert "ValueError: boom" in str(second["exception"])


def test_the_debug_level_lets_libraries_debug_lines_through(
    configured: None, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure(level="debug", json=True)
    logging.getLogger("grpc").debug("details")
    (line,) = _lines(capsys.readouterr().err)
    assert (line["event"], line["level"], line["logger"]) == ("details", "debug", "grpc")


def test_lines_written_at_once_by_structlog_and_logging_stay_whole(
    configured: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two threads, one logging through structlog and one through ``logging`` (as the
    service's events and the OpenTelemetry exporter's complaints), 1,500 lines each at
    once: every line is one whole JSON object (they once came out spliced into one)."""
    logs.configure(level="info", json=True)
    start = threading.Barrier(2)

    def ours() -> None:
        log = structlog.get_logger("router.test")
        start.wait(5)
        for n in range(1500):
            log.info("rpc_finished", n=n)

    def theirs() -> None:
        exporter = logging.getLogger("opentelemetry.exporter")
        start.wait(5)
        for n in range(1500):
            exporter.warning("Transient error %d", n)

    writers = [threading.Thread(target=ours), threading.Thread(target=theirs)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads take turns as often as they can
    try:
        for writer in writers:
            writer.start()
        for writer in writers:
            writer.join(30)
    finally:
        sys.setswitchinterval(interval)
    lines = _lines(capsys.readouterr().err)
    assert len(lines) == 3000
