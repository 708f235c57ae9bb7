"""Where the local stack keeps its state: one data directory, resumable by the next ``modelplane up``.

```
DATA_DIR/
  registry.db, artifacts/   the registry (SQLite and the content-addressed artifact store)
  token                     the registry's admin token (mode 0600)
  deployments/              ModelDeployment YAML files (default; --deployments picks another)
  repositories/, cache/     runtime model repositories and downloaded artifacts
  logs/                     one log file per process
  stack.json                how to reach the running stack (ports, pid); removed on exit
  status.json               the supervisor's latest view of every deployment
  state.json                what survives restarts (deployment creation times, settings)
```
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

DEFAULT_DATA_DIR = Path(".modelplane")


class StackNotRunningError(RuntimeError):
    """No ``modelplane up`` is running on this data directory."""


class AlreadyRunningError(RuntimeError):
    """Another ``modelplane up`` already uses this data directory."""


def write_json(path: Path, value: Any) -> None:
    """Replace ``path`` atomically, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(value, out, indent=2, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class DataDir:
    root: Path

    @classmethod
    def at(cls, path: Path) -> DataDir:
        return cls(path.expanduser().resolve())

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.root / 'registry.db'}"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def default_deployments(self) -> Path:
        return self.root / "deployments"

    @property
    def repositories(self) -> Path:
        return self.root / "repositories"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def stack_file(self) -> Path:
        return self.root / "stack.json"

    @property
    def status_file(self) -> Path:
        return self.root / "status.json"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def token_file(self) -> Path:
        """Where :meth:`token` keeps the registry admin token."""
        return self.root / "token"

    def create(self) -> None:
        for folder in (self.root, self.artifacts, self.repositories, self.cache, self.logs):
            folder.mkdir(parents=True, exist_ok=True)

    def token(self) -> str:
        """The registry admin token, created on first use and kept (mode 0600) for later runs."""
        path = self.root / "token"
        if path.exists():
            return path.read_text().strip()
        token = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(token + "\n")
        return token

    @contextlib.contextmanager
    def lock(self) -> Any:
        """Hold the data directory for this process (released by the kernel if it dies)."""
        handle: IO[str] = (self.root / "lock").open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            running = read_json(self.stack_file)
            pid = running.get("pid", "?")
            raise AlreadyRunningError(
                f"another `modelplane up` (pid {pid}) already runs on {self.root}: stop it (Ctrl-C in its "
                "terminal) or pick another --data-dir"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    def running_stack(self) -> dict[str, Any]:
        """How to reach the running stack; raises StackNotRunningError with what to do."""
        info = read_json(self.stack_file)
        pid = info.get("pid")
        if not isinstance(pid, int) or not _alive(pid):
            raise StackNotRunningError(
                f"no local stack runs on {self.root}: start it with `modelplane up --data-dir {self.root}` "
                "(or pass the --data-dir it uses)"
            )
        return info


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
