"""Shared pytest set-up: the API-test fixtures live in tests/integration/service.py."""

pytest_plugins = ["tests.integration.service"]
