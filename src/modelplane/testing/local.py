"""``modelplane up`` as a real subprocess for tests: free ports, a temporary data directory, its output."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelplane.local.layout import read_json
from modelplane.local.processes import die_with_parent, free_port
from modelplane.local.stack import READY_LINE, STOP_HINT


def children_of(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parents[int(entry.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@dataclass
class UpProcess:
    """One ``modelplane up`` run; ``output`` collects its stdout and stderr as it comes."""

    data_dir: Path
    deployments: Path
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    process: subprocess.Popen[str] | None = None
    lines: list[str] = field(default_factory=list)

    def start(self) -> UpProcess:
        command = [
            sys.executable, "-m", "modelplane", "up",
            "--data-dir", str(self.data_dir),
            "--deployments", str(self.deployments),
            "--http-port", str(self.http_port),
            "--grpc-port", str(self.grpc_port),
        ]  # fmt: skip
        env = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            preexec_fn=die_with_parent,
        )
        stream = self.process.stdout
        assert stream is not None
        threading.Thread(target=lambda: self.lines.extend(stream), daemon=True).start()
        return self

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while text not in self.output:
            assert self.process is not None
            if self.process.poll() is not None:
                time.sleep(0.2)
                raise RuntimeError(f"modelplane up exited with {self.process.returncode}:\n{self.output}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{text!r} did not appear within {timeout_s}s:\n{self.output}")
            time.sleep(0.1)

    def wait_ready(self, timeout_s: float = 240.0) -> UpProcess:
        """Until the ready message is out whole (the curl command and snippet come after its first line)."""
        deadline = time.monotonic() + timeout_s
        self.wait_for(READY_LINE, timeout_s)
        self.wait_for(STOP_HINT, max(1.0, deadline - time.monotonic()))
        return self

    def status(self) -> dict[str, Any]:
        return read_json(self.data_dir / "status.json")

    def deployment(self, name: str) -> dict[str, Any]:
        for row in self.status().get("deployments", []):
            if row["name"] == name:
                return dict(row)
        raise KeyError(name)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60.0) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            for pid in children_of(self.process.pid):
                os.kill(pid, signal.SIGKILL)
            self.process.kill()
            self.process.wait(10)
            raise
