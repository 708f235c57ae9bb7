"""The registry SIGKILLed in the middle of an upload: after a restart the database is consistent, the
version is still PENDING, no partial artifact is served and the temp file is gone."""

from __future__ import annotations

import hashlib
import socket
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from modelplane.serving.registry.db import create_db_engine
from modelplane.testing.registry import ADMIN_TOKEN, RegistryProcess
from modelplane.testing.registry_fixtures import TEST_ENV


def wait_for(predicate: object, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> RegistryProcess:
    return RegistryProcess(
        database_url=database_url,
        artifact_root=tmp_path / "artifacts",
        log_path=tmp_path / "registry.log",
        env_extra=dict(TEST_ENV),
    )


def test_sigkill_during_upload_then_restart(server: RegistryProcess) -> None:
    server.start()
    try:
        with server.client() as client:
            client.create_model("crashy")
            client.create_version("crashy")
        payload = b"w" * 1_500_000
        digest = "sha256:" + hashlib.sha256(payload).hexdigest()
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        try:
            head = (
                "PUT /api/v1/models/crashy/versions/1/artifact?filename=model.pt HTTP/1.1\r\n"
                f"Host: 127.0.0.1\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nX-Checksum-Sha256: {digest}\r\n"
                f"Content-Type: application/octet-stream\r\nContent-Length: {len(payload)}\r\n\r\n"
            )
            sock.sendall(head.encode() + payload[:700_000])
            tmp_dir = server.artifact_root / "tmp"
            assert wait_for(lambda: any(p.stat().st_size > 0 for p in tmp_dir.iterdir())), server.log_tail()
            server.kill()
        finally:
            sock.close()
        assert list(tmp_dir.iterdir()), "the killed server should have left its temp file behind"

        server.start()
        assert list(tmp_dir.iterdir()) == []
        assert [p for p in (server.artifact_root / "sha256").rglob("*") if p.is_file()] == []
        with server.http() as http:
            v = http.get("/api/v1/models/crashy/versions/1").json()
            assert (v["status"], v["artifact"]) == ("PENDING", None)
            assert http.get("/api/v1/models/crashy/versions/1/artifact").status_code == 404
            assert http.get("/api/v1/models/crashy").json()["latest_version"] == 1
            r = http.put(
                "/api/v1/models/crashy/versions/1/artifact",
                content=payload,
                headers={"X-Checksum-Sha256": digest},
            )
            assert r.status_code == 200
            assert r.json()["status"] == "READY"
            assert http.get("/api/v1/models/crashy/versions/1/artifact").content == payload
            assert http.post("/api/v1/models/crashy/versions", json={}).json()["version"] == 2
    finally:
        server.stop()

    engine = create_db_engine(server.database_url, pool_size=1)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
                assert conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall() == []
            rows = conn.execute(
                sa.text("SELECT version, status FROM model_versions ORDER BY version")
            ).fetchall()
            assert [tuple(r) for r in rows] == [(1, "READY"), (2, "PENDING")]
    finally:
        engine.dispose()
