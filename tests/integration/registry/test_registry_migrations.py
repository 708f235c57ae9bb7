"""Alembic: empty → head → base → head on SQLite and PostgreSQL, and the ORM agrees with the migrations."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from modelplane.serving.registry import migrate
from modelplane.serving.registry.db import create_db_engine
from modelplane.serving.registry.models import Base


def table_names(url: str) -> set[str]:
    engine = create_db_engine(url, pool_size=1)
    try:
        return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_downgrade_and_orm_agreement(database_url: str) -> None:
    assert table_names(database_url) == set()
    head = ScriptDirectory.from_config(migrate.alembic_config(database_url)).get_current_head()

    migrate.upgrade(database_url)
    assert migrate.current_revision_for(database_url) == head
    assert table_names(database_url) == set(Base.metadata.tables)

    engine = create_db_engine(database_url, pool_size=1)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
            )
        assert diff == [], f"ORM models and migrations differ; write a migration for: {diff}"
    finally:
        engine.dispose()

    migrate.upgrade(database_url)  # idempotent at head
    migrate.downgrade(database_url, "base")
    assert table_names(database_url) == set()
    assert migrate.current_revision_for(database_url) is None
    migrate.upgrade(database_url)
    assert table_names(database_url) == set(Base.metadata.tables)
