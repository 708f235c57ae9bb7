"""SQLite durability: a registry started with default settings fsyncs every commit (WAL +
``synchronous=FULL``); the faster ``NORMAL`` only when asked for by name; anything else refused."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from typer.testing import CliRunner

from modelplane.cli.registry import app as registry_cli
from modelplane.serving.registry.app import create_app
from modelplane.serving.registry.config import Settings
from modelplane.serving.registry.db import Database, create_db_engine

ENV = "MODELPLANE_REGISTRY_SQLITE_SYNCHRONOUS"
FULL, NORMAL = 2, 1  # what ``PRAGMA synchronous`` reads back


def pragmas(db: Database) -> list[tuple[int, str]]:
    """``(synchronous, journal_mode)`` as the app's own read session and write transaction see them."""
    seen = []
    for session_of in (db.read, db.write):
        with session_of() as session:
            synchronous = session.execute(text("PRAGMA synchronous")).scalar_one()
            journal_mode = session.execute(text("PRAGMA journal_mode")).scalar_one()
            seen.append((synchronous, journal_mode))
    return seen


def started_registry_pragmas(settings: Settings) -> list[tuple[int, str]]:
    """Start the app (lifespan: migrations, bootstrap) and read the pragmas through its engine."""
    app = create_app(settings)
    with TestClient(app) as client:
        assert client.get("/readyz").status_code == 200
        db = app.state.service.store.db
        return pragmas(db)


def test_default_registry_runs_sqlite_wal_with_synchronous_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV, raising=False)
    settings = Settings.from_env(f"sqlite:///{tmp_path / 'registry.db'}", tmp_path / "artifacts")
    assert settings.sqlite_synchronous == "FULL"
    assert started_registry_pragmas(settings) == [(FULL, "wal"), (FULL, "wal")]


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_normal_only_when_asked_and_said_out_loud(
    how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    if how == "environment":
        monkeypatch.setenv(ENV, "normal")
        settings = Settings.from_env(url, tmp_path / "artifacts")
    else:
        monkeypatch.setenv(ENV, "bogus")  # the explicit argument (the CLI flag) wins over the environment
        settings = Settings.from_env(url, tmp_path / "artifacts", sqlite_synchronous="NORMAL")
    assert settings.sqlite_synchronous == "NORMAL"
    with caplog.at_level(logging.WARNING, logger="modelplane.serving.registry.db"):
        assert started_registry_pragmas(settings) == [(NORMAL, "wal"), (NORMAL, "wal")]
    assert any("synchronous=NORMAL" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("value", ["off", "OFF", "extra", "0", "2", "fast", "full; drop table x"])
def test_other_levels_are_refused_naming_the_choices(value: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"not one of: full: .*; normal: "):
        Settings(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "artifacts", sqlite_synchronous=value)
    with pytest.raises(ValueError, match="not one of"):
        create_db_engine(f"sqlite:///{tmp_path / 'r.db'}", sqlite_synchronous=value)
    assert not (tmp_path / "r.db").exists()


def test_serve_refuses_a_bad_level_before_touching_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "registry.db"
    args = ["serve", "--database-url", f"sqlite:///{db}", "--artifact-root", str(tmp_path / "artifacts")]
    monkeypatch.delenv(ENV, raising=False)
    flag = CliRunner().invoke(registry_cli, [*args, "--sqlite-synchronous", "off"])
    monkeypatch.setenv(ENV, "off")
    env = CliRunner().invoke(registry_cli, args)
    for result in (flag, env):
        assert result.exit_code == 1, result.output
        assert "SQLite synchronous level 'off' is not one of: full" in " ".join(result.output.split())
    assert not db.exists()
    assert not (tmp_path / "artifacts").exists()


def test_postgresql_ignores_the_sqlite_level_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="modelplane.serving.registry.db"):
        engine = create_db_engine("postgresql://registry@127.0.0.1:1/registry", sqlite_synchronous="normal")
    engine.dispose()  # never connected: create_engine is lazy
    assert any("ignored" in r.getMessage() for r in caplog.records)
