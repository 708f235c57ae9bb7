"""pytest fixtures for the registry suites: a real server per test module, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from modelplane.testing.registry import RegistryProcess

# Small limits, so tests can probe them at exactly limit and limit + 1 bytes.
TEST_MAX_ARTIFACT_BYTES = 2 * 1024 * 1024
TEST_MAX_BODY_BYTES = 64 * 1024
TEST_ENV = {
    "MODELPLANE_REGISTRY_MAX_BODY_BYTES": str(TEST_MAX_BODY_BYTES),
    "MODELPLANE_REGISTRY_MAX_ARTIFACT_BYTES": str(TEST_MAX_ARTIFACT_BYTES),
    "MODELPLANE_REGISTRY_WEBHOOK_ALLOW_LOOPBACK": "1",
    "MODELPLANE_REGISTRY_WEBHOOK_BACKOFF_BASE_S": "0.2",
    "MODELPLANE_REGISTRY_WEBHOOK_BACKOFF_MAX_S": "1",
    "MODELPLANE_REGISTRY_WEBHOOK_POLL_INTERVAL_S": "0.2",
}


@pytest.fixture(scope="module")
def registry(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    """A registry server on a fresh database (SQLite and PostgreSQL) and a fresh artifact root."""
    base = tmp_path_factory.mktemp("registry")
    server = RegistryProcess(
        database_url=database_url,
        artifact_root=base / "artifacts",
        log_path=base / "registry.log",
        env_extra=dict(TEST_ENV),
    ).start()
    try:
        yield server
    finally:
        server.stop()
