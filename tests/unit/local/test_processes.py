"""Children started with ``die_with_parent`` (every test helper's) or with ``spawn`` (the local
stack's) do not outlive their parent, even when it is killed with SIGKILL and runs no clean-up; and
``spawn`` starts them without fork(), so gRPC running in the parent prints nothing about it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelplane.local.processes import die_with_parent_command

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a Linux parent-death signal")

PARENT = """
import subprocess, sys, time
from modelplane.local.processes import die_with_parent
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], preexec_fn=die_with_parent)
print(child.pid, flush=True)
time.sleep(120)
"""

SPAWNING_PARENT = """
import sys, time
from pathlib import Path
from modelplane.local.processes import spawn
child = spawn([sys.executable, "-c", "import time; time.sleep(120)"], Path(sys.argv[1]))
print(child.pid, flush=True)
time.sleep(120)
"""

# A gRPC server runs (as the router's does in `modelplane up`) while children start; argv[2] says how.
GRPC_PARENT = """
import asyncio, subprocess, sys
from pathlib import Path
import grpc
from modelplane.local.processes import die_with_parent, spawn

async def main() -> None:
    server = grpc.aio.server()
    server.add_insecure_port("127.0.0.1:0")
    await server.start()
    for _ in range(5):
        if sys.argv[2] == "spawn":
            child = spawn([sys.executable, "-c", "pass"], Path(sys.argv[1]))
        else:
            child = subprocess.Popen([sys.executable, "-c", "pass"], preexec_fn=die_with_parent)
        child.wait()
        await asyncio.sleep(0.01)
    await server.stop(None)

asyncio.run(main())
"""

GRPC_FORK_LINE = "skipping fork() handlers"


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def assert_child_dies_with_its_killed_parent(*parent_args: str) -> None:
    parent = subprocess.Popen([sys.executable, "-c", *parent_args], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert alive(child)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(child), "the child outlived its parent"
    finally:
        parent.kill()
        parent.wait()


@linux_only
def test_a_child_dies_with_its_killed_parent() -> None:
    assert_child_dies_with_its_killed_parent(PARENT)


@linux_only
def test_a_spawned_child_dies_with_its_killed_parent(tmp_path: Path) -> None:
    assert_child_dies_with_its_killed_parent(SPAWNING_PARENT, str(tmp_path / "child.log"))


@linux_only
def test_a_child_whose_parent_is_already_gone_does_not_start(tmp_path: Path) -> None:
    """The signal is asked for in the child: had its parent died before, it would never come."""
    marker = tmp_path / "ran"
    # As if its parent were this test's parent: the child's real parent (this test) is another process.
    command = die_with_parent_command(["touch", str(marker)], parent=os.getppid())
    result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode != 0
    assert "the parent process exited first" in result.stderr
    assert not marker.exists()
    # With its real parent, the same command runs.
    subprocess.run(die_with_parent_command(["touch", str(marker)]), timeout=30, check=True)
    assert marker.exists()


def test_a_missing_program_is_reported_by_the_parent() -> None:
    with pytest.raises(FileNotFoundError):
        die_with_parent_command(["no-such-program-anywhere"])


def _grpc_parent_stderr(how: str, log: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-c", GRPC_PARENT, str(log), how],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={**os.environ, "GRPC_VERBOSITY": "INFO"},  # gRPC prints the line at INFO
    )
    return result.stderr


@linux_only
def test_spawning_next_to_a_grpc_server_prints_nothing_about_fork(tmp_path: Path) -> None:
    """`modelplane up` printed gRPC's "Other threads are currently calling into gRPC, skipping
    fork() handlers" once per child: a preexec_fn made subprocess fork(), which runs gRPC's fork
    handlers. spawn() uses none."""
    forked = _grpc_parent_stderr("preexec_fn", tmp_path / "forked.log")
    if GRPC_FORK_LINE not in forked:  # what the test guards against; gone from gRPC itself?
        pytest.skip(f"gRPC no longer prints {GRPC_FORK_LINE!r} when a child is forked:\n{forked}")
    spawned = _grpc_parent_stderr("spawn", tmp_path / "spawned.log")
    assert GRPC_FORK_LINE not in spawned, spawned
