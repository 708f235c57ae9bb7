"""A real registry server in a subprocess for tests: ``modelplane registry serve`` on a free port.

Tests talk to it over HTTP only, so what they exercise is exactly what users get (uvicorn, the
middleware, migrations on start-up). ``kill()`` sends SIGKILL to test crash recovery.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from modelplane.local.processes import die_with_parent, free_port
from modelplane.registry_client.client import RegistryClient

ADMIN_TOKEN = "test-admin-token-0123456789abcdef"  # noqa: S105 - the test servers' bootstrap token
START_TIMEOUT_S = 60.0


@dataclass
class RegistryProcess:
    database_url: str
    artifact_root: Path
    log_path: Path
    env_extra: dict[str, str] = field(default_factory=dict)
    args_extra: list[str] = field(default_factory=list)
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, keep_port: bool = False) -> RegistryProcess:
        """Start the server; ``keep_port`` restarts it where clients already point (after ``kill``)."""
        if not (keep_port and self.port):
            self.port = free_port()
        env = {
            **os.environ,
            "MODELPLANE_REGISTRY_BOOTSTRAP_TOKEN": ADMIN_TOKEN,
            "PYTHONUNBUFFERED": "1",
            **self.env_extra,
        }
        cmd = [
            sys.executable,
            "-m",
            "modelplane.serving.registry",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--database-url",
            self.database_url,
            "--artifact-root",
            str(self.artifact_root),
            "--log-level",
            "warning",
            *self.args_extra,
        ]
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                cmd, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
            )
        finally:
            log.close()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"registry exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2.0, trust_env=False).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"registry not ready after {START_TIMEOUT_S}s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def client(self, token: str | None = ADMIN_TOKEN) -> RegistryClient:
        return RegistryClient(self.url, token)

    def http(self, token: str | None = ADMIN_TOKEN) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30.0, trust_env=False)

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers run (what a crash or the OOM killer does)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
