"""Engines and sessions for SQLite and PostgreSQL, set up so concurrent writers never fail and an
acknowledged write survives a power loss.

SQLite: WAL (readers never block the writer), ``synchronous=FULL`` (every commit is fsynced before it
returns: in WAL mode ``NORMAL`` syncs only at checkpoints, so the last commits before a power loss
could vanish after the client was told they were stored), foreign keys on, a busy timeout, and
``BEGIN IMMEDIATE`` for write transactions: a writer takes the lock when its transaction starts and
waits (up to the busy timeout) instead of failing half way with "database is locked" when it upgrades
a read lock. ``NORMAL`` is available only when asked for by name (``--sqlite-synchronous normal``),
for data that may be thrown away, and a warning says so at start-up.
PostgreSQL: psycopg 3 (``postgresql+psycopg://``), pre-ping, and the same one-transaction-per-write;
its durability is the server's (``synchronous_commit=on``, its default, fsyncs the WAL at commit).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection
from sqlalchemy.engine.url import make_url
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_S = 30.0
_BEGIN_OPTION = "modelplane_sqlite_begin"

SQLITE_SYNCHRONOUS_DEFAULT = "FULL"
SQLITE_SYNCHRONOUS_LEVELS = {
    "FULL": "every commit fsynced before it returns (durable: survives power loss)",
    "NORMAL": "commits fsynced only at WAL checkpoints (faster; the last commits can be lost on power "
    "loss or an OS crash, never on a crash of the process alone)",
}


def sqlite_synchronous_level(value: str) -> str:
    """The ``PRAGMA synchronous`` level named by ``value`` (any case), or ValueError naming the choices.

    Only FULL and NORMAL are offered: OFF can corrupt the database on power loss, and in WAL mode
    EXTRA syncs nothing more than FULL.
    """
    level = value.strip().upper()
    if level not in SQLITE_SYNCHRONOUS_LEVELS:
        choices = "; ".join(
            f"{name.lower()}: {meaning}" for name, meaning in SQLITE_SYNCHRONOUS_LEVELS.items()
        )
        raise ValueError(f"SQLite synchronous level {value!r} is not one of: {choices}")
    return level


def normalize_url(url: str) -> str:
    """Select psycopg 3 for plain ``postgresql://`` URLs (SQLAlchemy's default driver is psycopg2)."""
    parsed = make_url(url)
    if parsed.drivername in {"postgresql", "postgres"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def create_db_engine(
    url: str, pool_size: int = 10, sqlite_synchronous: str = SQLITE_SYNCHRONOUS_DEFAULT
) -> Engine:
    """An engine for ``url``; ``sqlite_synchronous`` applies to SQLite only (FULL unless asked)."""
    url = normalize_url(url)
    synchronous = sqlite_synchronous_level(sqlite_synchronous)
    if make_url(url).get_backend_name() == "sqlite":
        engine = create_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False},
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_timeout=60,
        )
        _configure_sqlite(engine, synchronous)
        return engine
    if synchronous != SQLITE_SYNCHRONOUS_DEFAULT:
        log.warning(
            "sqlite synchronous=%s ignored: the database is %s, whose durability is the server's "
            "(synchronous_commit)",
            synchronous,
            make_url(url).get_backend_name(),
        )
    return create_engine(
        url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, pool_timeout=60
    )


def _configure_sqlite(engine: Engine, synchronous: str) -> None:
    if synchronous != SQLITE_SYNCHRONOUS_DEFAULT:
        log.warning(
            "SQLite synchronous=%s: %s. Use it only for data that may be thrown away.",
            synchronous,
            SQLITE_SYNCHRONOUS_LEVELS[synchronous],
        )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin (see "begin" below).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


class Database:
    """One engine plus the two ways to use it: a read session and a write transaction."""

    def __init__(
        self, url: str, pool_size: int = 10, sqlite_synchronous: str = SQLITE_SYNCHRONOUS_DEFAULT
    ) -> None:
        self.url = normalize_url(url)
        self.engine = create_db_engine(self.url, pool_size=pool_size, sqlite_synchronous=sqlite_synchronous)
        write_bind = self.engine.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})
        self._read = sessionmaker(bind=self.engine, expire_on_commit=False, autoflush=False)
        self._write = sessionmaker(bind=write_bind, expire_on_commit=False, autoflush=True)

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._read() as session, session.begin():
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with self._write() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
