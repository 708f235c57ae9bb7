"""The database fixtures give each test module a fresh, real database on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa

_metadata = sa.MetaData()
_probe = sa.Table(
    "probe", _metadata, sa.Column("id", sa.Integer, primary_key=True), sa.Column("note", sa.Text)
)


def test_database_starts_empty_and_keeps_what_is_written(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    try:
        assert sa.inspect(engine).get_table_names() == []
        _metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(_probe.insert(), [{"note": "a"}, {"note": "b"}])
        with engine.connect() as conn:
            assert conn.execute(sa.select(_probe.c.note).order_by(_probe.c.id)).scalars().all() == ["a", "b"]
    finally:
        engine.dispose()


def test_postgres_backend_is_really_postgres(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT version()")).scalar_one().startswith("PostgreSQL")
    finally:
        engine.dispose()
