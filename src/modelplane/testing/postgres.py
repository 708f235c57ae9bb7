"""A throwaway PostgreSQL server for tests: a private data directory, loopback only, trust auth.

The server is real (Debian's ``postgresql`` package); only its lifetime is the test session's. When
``MODELPLANE_TEST_POSTGRES_DSN`` names an existing server (an admin DSN), that server is used instead.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from modelplane.local.processes import free_port

ENV_DSN = "MODELPLANE_TEST_POSTGRES_DSN"


class PostgresUnavailableError(RuntimeError):
    """PostgreSQL cannot be started here; the message says what to install or set."""


def find_bindir() -> Path:
    """Locate the directory with ``initdb`` and ``pg_ctl`` (Debian keeps them off PATH)."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_major_version, reverse=True)
    if candidates:
        return Path(candidates[0]).parent
    raise PostgresUnavailableError(
        "PostgreSQL server binaries not found (no initdb on PATH or in /usr/lib/postgresql/*/bin). "
        "Install them with `apt-get install postgresql` (or run `make system-deps`), "
        f"or point {ENV_DSN} at a server you run."
    )


def _major_version(initdb_path: str) -> int:
    try:
        return int(Path(initdb_path).parts[-3])
    except (ValueError, IndexError):
        return 0


def sqlalchemy_url(dsn: str) -> str:
    """Turn a libpq URL into the SQLAlchemy form that selects the psycopg 3 driver."""
    for prefix in ("postgresql://", "postgres://"):
        if dsn.startswith(prefix):
            return "postgresql+psycopg://" + dsn[len(prefix) :]
    return dsn


@dataclass
class PostgresServer:
    """A running server and the admin DSN to reach it; ``create_database`` hands out fresh databases."""

    admin_dsn: str
    _datadir: Path | None = None
    _bindir: Path | None = None
    _run_as: list[str] = field(default_factory=list)

    @classmethod
    def start(cls) -> PostgresServer:
        """Start a private server (or adopt ``$MODELPLANE_TEST_POSTGRES_DSN``) and wait until it accepts."""
        external = os.environ.get(ENV_DSN)
        if external:
            server = cls(admin_dsn=external)
            server._wait_ready(timeout=10)
            return server
        bindir = find_bindir()
        root = Path(tempfile.mkdtemp(prefix="modelplane-pg-"))
        datadir = root / "data"
        run_as: list[str] = []
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root; Debian's package creates the `postgres` user.
            run_as = ["runuser", "-u", "postgres", "--"]
            shutil.chown(root, user="postgres", group="postgres")
        port = free_port()
        _run(
            [
                *run_as,
                str(bindir / "initdb"),
                "-D",
                str(datadir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            ]
        )
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root} -c fsync=off"
        )
        _run(
            [
                *run_as,
                str(bindir / "pg_ctl"),
                "-D",
                str(datadir),
                "-l",
                str(root / "server.log"),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            ]
        )
        server = cls(
            admin_dsn=f"postgresql://postgres@127.0.0.1:{port}/postgres",
            _datadir=datadir,
            _bindir=bindir,
            _run_as=run_as,
        )
        server._wait_ready(timeout=30)
        return server

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.admin_dsn, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise PostgresUnavailableError(
                        f"PostgreSQL at {self.admin_dsn} did not answer: {exc}"
                    ) from exc
                time.sleep(0.2)

    def create_database(self, prefix: str = "test") -> str:
        """Create an empty database and return its libpq DSN."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        base, _, _ = self.admin_dsn.rpartition("/")
        return f"{base}/{name}"

    def drop_database(self, dsn: str) -> None:
        """Drop a database made by ``create_database``, closing connections left open to it."""
        name = dsn.rpartition("/")[2]
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        """Stop a server this object started; an adopted external server is left running."""
        if self._datadir is None or self._bindir is None:
            return
        subprocess.run(
            [
                *self._run_as,
                str(self._bindir / "pg_ctl"),
                "-D",
                str(self._datadir),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(self._datadir.parent, ignore_errors=True)


def _run(cmd: list[str]) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise PostgresUnavailableError(
            f"`{' '.join(cmd)}` failed (exit {result.returncode}):\n{result.stdout}{result.stderr}"
        )
