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


def test_0002_keeps_existing_versions_and_goes_back(database_url: str) -> None:
    """0001 → 0002 on a database with a version: its task, format and artifact kind read as unset
    (a single file); back to 0001 keeps the version and its tags and aliases; and up again."""
    from modelplane.serving.registry.db import Database
    from modelplane.serving.registry.store.sql import SqlStore

    migrate.downgrade(database_url, "base")
    migrate.upgrade(database_url, "0001")
    engine = create_db_engine(database_url, pool_size=1)
    now = "2026-01-01 00:00:00+00:00"
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO registered_models (id, name, description, created_by, created_at, "
                    "updated_at, revision, last_version) VALUES (1, 'old', '', 'ops', :t, :t, 1, 1)"
                ),
                {"t": now},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO model_versions (id, model_id, version, description, author, signature, "
                    "metrics, params, status, status_message, artifact_digest, artifact_size, "
                    "artifact_filename, created_at, updated_at, revision) VALUES (1, 1, 1, '', 'ops', "
                    "'{}', '{}', '{}', 'READY', '', :d, 3, 'model.pt', :t, :t, 1)"
                ),
                {"t": now, "d": "sha256:" + "a" * 64},
            )
            conn.execute(sa.text("INSERT INTO version_tags VALUES (1, 'stage', 'prod')"))
            conn.execute(sa.text("INSERT INTO aliases VALUES (1, 'production', 1, 'ops', :t)"), {"t": now})
    finally:
        engine.dispose()

    migrate.upgrade(database_url)
    assert "artifact_files" in table_names(database_url)
    db = Database(database_url, pool_size=1)
    try:
        old = SqlStore(db).get_version("old", 1).body
    finally:
        db.dispose()
    assert (old.task, old.format) == (None, None)
    assert old.artifact is not None
    assert (old.artifact.kind, old.artifact.files, old.artifact.filename) == ("file", 1, "model.pt")
    assert (old.tags, old.aliases) == ({"stage": "prod"}, ["production"])

    migrate.downgrade(database_url, "0001")
    assert "artifact_files" not in table_names(database_url)
    engine = create_db_engine(database_url, pool_size=1)
    try:
        columns = {c["name"] for c in sa.inspect(engine).get_columns("model_versions")}
        assert not columns & {"task", "format", "artifact_kind", "artifact_file_count"}
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM model_versions")).scalar_one() == 1
            assert conn.execute(sa.text("SELECT count(*) FROM version_tags")).scalar_one() == 1
            assert conn.execute(sa.text("SELECT count(*) FROM aliases")).scalar_one() == 1
    finally:
        engine.dispose()
    migrate.upgrade(database_url)
    migrate.downgrade(database_url, "base")
    assert table_names(database_url) == set()
