"""Pid records of pod processes, so that no process outlives its pod, its agent or its cluster.

Each pod has ``<agent dir>/pods/<uid>.json`` listing the process groups of its running containers.
A restarted agent (or ``dev-cluster down``) kills every group it finds there before doing anything
else: the pods are then started afresh, with their restart counts carried on. Before signalling, a
group leader is checked to carry ``MODELPLANE_POD_UID=<uid>`` in its environment, so a reused pid
is never hit.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

UID_ENV = "MODELPLANE_POD_UID"


def records_dir(agent_dir: Path) -> Path:
    return agent_dir / "pods"


def write(agent_dir: Path, uid: str, data: dict[str, Any]) -> None:
    directory = records_dir(agent_dir)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f"{uid}.json.tmp"
    tmp.write_text(json.dumps(data))
    tmp.replace(directory / f"{uid}.json")


def remove(agent_dir: Path, uid: str) -> None:
    (records_dir(agent_dir) / f"{uid}.json").unlink(missing_ok=True)


def read_all(agent_dir: Path) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    directory = records_dir(agent_dir)
    if not directory.is_dir():
        return out
    for path in directory.glob("*.json"):
        with contextlib.suppress(OSError, ValueError):
            out[path.stem] = json.loads(path.read_text())
    return out


def belongs_to(pid: int, uid: str) -> bool:
    """Whether ``pid`` is alive and was started for the pod ``uid``."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"{UID_ENV}={uid}".encode() in environ.split(b"\0")


def kill_group(pid: int, uid: str, grace: float = 0.0) -> bool:
    """SIGTERM (when ``grace``) then SIGKILL the process group led by ``pid``, if it is the pod's."""
    if not belongs_to(pid, uid):
        return False
    if grace > 0:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and belongs_to(pid, uid):
            time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    return True


def kill_recorded(agent_dir: Path) -> int:
    """Kill every recorded pod process group; return how many were still there."""
    killed = 0
    for uid, data in read_all(agent_dir).items():
        for pid in data.get("pgids", []):
            if kill_group(int(pid), uid):
                killed += 1
        remove(agent_dir, uid)
    return killed
