"""structlog set-up: one JSON line per event when not on a terminal, context via contextvars."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

import structlog


def configure(*, level: str = "info", json: bool | None = None) -> None:
    """Configure structlog once, at start-up (never at import time).

    ``json=None`` picks JSON unless stderr is a terminal. Request context (method, tenant,
    request and call ids, trace) is bound per RPC with ``structlog.contextvars`` by the
    interceptor. What other libraries log through the standard ``logging`` module (gRPC,
    redis-py, the OpenTelemetry exporter) comes out in the same format, with its logger's
    name: at warning and above, or everything at ``debug``.
    """
    use_json = (not sys.stderr.isatty()) if json is None else json
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = _LineHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    wanted = logging.getLevelNamesMapping()[level.upper()]
    root.setLevel(wanted if wanted <= logging.DEBUG else max(logging.WARNING, wanted))


class _LineHandler(logging.Handler):
    """Writes each formatted record through a structlog ``PrintLogger`` on the same file, so
    under the lock structlog keeps per file: a ``logging`` record (gRPC, the OpenTelemetry
    exporter) and a structlog event written at once by two threads come out as two whole
    lines, never one spliced into the other (a ``StreamHandler`` has a lock of its own)."""

    def __init__(self, file: TextIO) -> None:
        super().__init__()
        self._printer = structlog.PrintLogger(file)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._printer.msg(self.format(record))
        except Exception:  # logging's convention: report, never raise
            self.handleError(record)


def silence(*, level: str = "critical") -> None:
    """Write nothing (simulations, benchmarks, tests). Events at ``level`` and above still
    reach the processors, so ``structlog.testing.capture_logs`` can read them."""
    structlog.configure(
        processors=[],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.ReturnLoggerFactory(),
        cache_logger_on_first_use=False,
    )


@contextmanager
def without(*keys: str) -> Iterator[None]:
    """Leave ``keys`` of the bound context off the lines written inside (work done for
    others inside a request: a dispatcher pass run by an Assign is not that call's); they
    are bound again after."""
    bound = structlog.contextvars.get_contextvars()
    kept = {key: bound[key] for key in keys if key in bound}
    structlog.contextvars.unbind_contextvars(*keys)
    try:
        yield
    finally:
        structlog.contextvars.bind_contextvars(**kept)
