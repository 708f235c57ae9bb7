"""Child processes of the local stack: started on loopback, logging to files, never left behind.

Each child gets its own session (a Ctrl-C in the terminal reaches only ``modelplane up``, which
then drains and stops the children in order) and, on Linux, a parent-death signal, so even a
``kill -9`` of ``modelplane up`` does not leave runtimes or the registry running.

:func:`spawn` asks for that signal in the child itself, before it execs the command
(:func:`die_with_parent_command`), not with a ``preexec_fn``: a ``preexec_fn`` makes ``subprocess``
fork() instead of vfork(), and fork() runs the fork handlers of the libraries loaded here: gRPC's
print "Other threads are currently calling into gRPC, skipping fork() handlers" at every start
while a gRPC server runs in this process, as the router's does in ``modelplane up``.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Runs in the child before exec (``preexec_fn``): ask the kernel for SIGTERM when the parent
    dies. Start such children from the main thread: the signal follows the thread that forked.
    :func:`spawn` does the same without a ``preexec_fn`` (see the module's docstring)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


# The first thing the child runs (a bare interpreter: -I -S, no site-packages, a few milliseconds):
# what die_with_parent() does, then exec of the command, which keeps the pid and the signal. A parent
# that died before the prctl() would never send the signal, so the child checks and leaves.
_DIE_WITH_PARENT_EXEC = f"""\
import ctypes, os, signal, sys
ctypes.CDLL("libc.so.6", use_errno=True).prctl({PR_SET_PDEATHSIG}, signal.SIGTERM)
if os.getppid() != int(sys.argv[1]):
    sys.exit("not started: the parent process exited first")
os.execv(sys.argv[2], sys.argv[3:])
"""


def die_with_parent_command(
    args: Sequence[str], path: str | None = None, *, parent: int | None = None
) -> list[str]:
    """``args`` as a command that gets SIGTERM when ``parent`` (default: this process) dies: a Linux
    parent-death signal set in the child itself, so that the child can start without a
    ``preexec_fn`` (and so without fork()). As with :func:`die_with_parent`, start it from the main
    thread. The program is looked up on ``path`` (default: ``$PATH``) here, so that a missing one
    raises ``FileNotFoundError`` here, as ``subprocess.Popen`` does."""
    program = shutil.which(args[0], path=path)
    if program is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), args[0])
    pid = os.getpid() if parent is None else parent
    return [sys.executable, "-I", "-S", "-c", _DIE_WITH_PARENT_EXEC, str(pid), program, *args]


def modelplane_command() -> list[str]:
    """How to run this same ``modelplane`` (the interpreter of this process, not whatever is on PATH)."""
    return [sys.executable, "-m", "modelplane"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now (the one helper for this)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU seconds a process has used so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks  # utime, stime (fields 14 and 15)


def spawn(
    args: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a child whose stdout and stderr go to ``log_path`` (appended), in a session of its own,
    that dies with this process (on Linux; start it from the main thread)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    child_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    command = list(args)
    if sys.platform.startswith("linux"):
        command = die_with_parent_command(command, child_env.get("PATH", os.defpath))
    with log_path.open("ab") as log:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_env,
            start_new_session=True,  # and no preexec_fn: see the module's docstring
        )


async def terminate(process: subprocess.Popen[bytes], timeout_s: float) -> int:
    """SIGTERM, wait up to ``timeout_s`` (the child drains), then SIGKILL; returns the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        await asyncio.to_thread(process.wait, timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        await asyncio.to_thread(process.wait, 10)
    return int(process.returncode)
