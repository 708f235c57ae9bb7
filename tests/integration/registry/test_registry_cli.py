"""The ``modelplane registry`` commands against a real server: bootstrap a token straight in the
database, then create, upload, alias and download through the API; and anonymous read mode."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx

from modelplane.testing.registry import RegistryProcess


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelplane.serving.registry", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def test_cli_bootstrap_token_upload_alias_download(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'cli.db'}"
    made = cli("tokens", "create", "ops", "--scope", "admin", "--database-url", db_url)
    assert made.returncode == 0, made.stderr
    token = json.loads(made.stdout)["token"]
    server = RegistryProcess(db_url, tmp_path / "artifacts", tmp_path / "registry.log", env_extra={}).start()
    try:
        env = {"MODELPLANE_REGISTRY_URL": server.url, "MODELPLANE_REGISTRY_TOKEN": token}
        assert cli("models", "create", "cli-model", "--description", "from the CLI", env=env).returncode == 0
        # --quiet prints the secret alone, from the server as from the database.
        reader = cli("tokens", "create", "reader", "--scope", "read", "-q", env=env)
        assert reader.returncode == 0, reader.stderr
        boot = cli("tokens", "create", "boot", "--scope", "read", "--database-url", db_url, "--quiet")
        for secret in (reader.stdout, boot.stdout):
            assert secret.count("\n") == 1
            assert re.fullmatch(r"[A-Za-z0-9_-]{20,}\n", secret), secret
            ok = cli("models", "get", "cli-model", env={**env, "MODELPLANE_REGISTRY_TOKEN": secret.strip()})
            assert ok.returncode == 0, ok.stderr
        weights = tmp_path / "model.pt"
        weights.write_bytes(os.urandom(300_000))
        created = cli(
            "versions", "create", "cli-model", "--framework", "torch", "--artifact", str(weights), env=env
        )
        assert created.returncode == 0, created.stderr
        version = json.loads(created.stdout)
        assert version["status"] == "READY"
        assert version["artifact"]["digest"] == "sha256:" + hashlib.sha256(weights.read_bytes()).hexdigest()
        assert cli("aliases", "set", "cli-model", "production", "1", env=env).returncode == 0
        out = tmp_path / "down" / "model.pt"
        assert cli("versions", "download", "cli-model", "1", str(out), env=env).returncode == 0
        assert out.read_bytes() == weights.read_bytes()
        listed = cli("models", "list", env=env)
        assert "cli-model" in listed.stdout
        assert "production→1" in listed.stdout
        refused = cli("models", "create", "../etc", env=env)
        assert refused.returncode == 1
        assert "422" in refused.stderr
        no_token = cli(
            "models",
            "get",
            "cli-model",
            env={"MODELPLANE_REGISTRY_URL": server.url, "MODELPLANE_REGISTRY_TOKEN": ""},
        )
        assert no_token.returncode == 1
        assert "401" in no_token.stderr
    finally:
        server.stop()


def test_anonymous_read_allows_reads_only(tmp_path: Path) -> None:
    server = RegistryProcess(
        f"sqlite:///{tmp_path / 'anon.db'}",
        tmp_path / "artifacts",
        tmp_path / "registry.log",
        args_extra=["--anonymous-read"],
    ).start()
    try:
        with server.client() as admin:
            admin.create_model("public")
        with httpx.Client(base_url=server.url, trust_env=False) as anon:
            assert anon.get("/api/v1/models/public").status_code == 200
            assert anon.post("/api/v1/models/public/versions", json={}).status_code == 401
            assert anon.get("/api/v1/tokens").status_code == 401
    finally:
        server.stop()
