"""pytest fixtures for Modelplane's suites (loaded from ``tests/conftest.py`` as a plugin).

- ``postgres_server``: one real PostgreSQL server per test session.
- ``postgres_url`` / ``sqlite_url``: a fresh, empty database per test module, as a SQLAlchemy URL.
- ``database_url``: both of the above, so a suite written once runs on SQLite and on PostgreSQL.
- the ``gpu`` marker: such tests are skipped cleanly where CUDA is not available.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from modelplane.testing.postgres import PostgresServer, sqlalchemy_url


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``gpu`` tests where torch sees no CUDA device (the suite never depends on a GPU)."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (none visible to torch)")
    for item in gpu_items:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def postgres_url(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> Iterator[str]:
    prefix = (
        "t_" + "".join(c if c.isalnum() else "_" for c in request.module.__name__.rsplit(".", 1)[-1])[:30]
    )
    dsn = postgres_server.create_database(prefix.lower())
    try:
        yield sqlalchemy_url(dsn)
    finally:
        postgres_server.drop_database(dsn)


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path: Path = tmp_path_factory.mktemp("sqlite") / "modelplane.db"
    return f"sqlite:///{path}"


@pytest.fixture(
    scope="module",
    params=[pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)],
)
def database_url(request: pytest.FixtureRequest) -> str:
    """A fresh database per module, once on SQLite and once on PostgreSQL."""
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(name))
