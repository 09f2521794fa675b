"""Shared pytest set-up: the API-test fixtures live in tests/integration/service.py."""

from __future__ import annotations

import pytest

from router import logs

pytest_plugins = ["tests.integration.service"]


@pytest.fixture(autouse=True, scope="session")
def _quiet_logs() -> None:
    """Tests read log lines with ``structlog.testing.capture_logs``, not from stderr."""
    logs.silence(level="info")
