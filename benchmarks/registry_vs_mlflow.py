"""Registry vs MLflow's model registry: same operations, same client, same durability, one run.

Both servers run as one process on loopback: this project's registry (``modelplane registry serve``)
and MLflow's tracking server (``mlflow server``, its REST API ``/api/2.0/mlflow/...``), installed at a
pinned version into its own virtualenv under ``benchmarks/.work/`` on first use. Each backend is a
leg of its own, both peers on the same kind of database with the same durability: an acknowledged
write is on disk (fsynced) before the answer.

- ``sqlite``: ours in WAL mode with ``synchronous=FULL`` (its default), MLflow with SQLite's defaults
  (rollback journal, ``synchronous=FULL``; MLflow sets neither). Each setting is read back through the
  peer's own engine and written into the output.
- ``postgres``: one private PostgreSQL server with its durable defaults (``fsync=on``,
  ``synchronous_commit=on``; not the test suite's ``fsync=off``), one database per peer, both through
  psycopg 3 (SQLAlchemy 2.1's driver for ``postgresql://``). Needs the server binaries (Debian's
  ``postgresql``); without them the leg is skipped with a message.

All data (SQLite files, the PostgreSQL cluster) lives under ``--data-dir`` (default
``benchmarks/.work/registry-data``, on disk: a tmpfs would make fsync free); its filesystem is
recorded. One ``httpx.Client`` with keep-alive drives each peer, one request at a time, so the
figures are per-request server cost plus loopback HTTP. Operations: create models, create versions,
set (move) an alias, get the version behind an alias, search versions; then the models grow to
``--big-versions`` versions and get-by-alias latency is measured again. Both servers of a leg run at
once and every operation alternates between them in blocks, so load from elsewhere on the machine
falls on both alike. The raw file records the machine, the command, the commit, the versions of
both peers and the durability settings of each leg.

    .venv/bin/python benchmarks/registry_vs_mlflow.py --versions 1000 --big-versions 10000
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from modelplane.local.processes import free_port

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"
MLFLOW_VENV = WORK / "mlflow-venv"
# Pinned: the versions are written into the results; change a pin and the venv is rebuilt.
# psycopg 3: SQLAlchemy 2.1 (what mlflow 3.17.2 installs) picks it for the plain ``postgresql://`` URL
# MLflow's docs spell; the same driver and build (binary) as ours.
MLFLOW_PACKAGES = ["mlflow==3.17.2", "psycopg[binary]==3.3.9"]
TOKEN = "benchmark-admin-token-0123456789"  # noqa: S105 - a throwaway server's bootstrap token
SOURCE = "s3://bench-bucket/models/model.pt"
BACKENDS = ("sqlite", "postgres")

# Read back, through each peer's own engine, the settings that decide what a commit waits for.
SQLITE_PROBE = (
    "with engine.connect() as c:\n"
    "    sync = c.exec_driver_sql('PRAGMA synchronous').scalar()\n"
    "    journal = c.exec_driver_sql('PRAGMA journal_mode').scalar()\n"
    "    lib = c.exec_driver_sql('select sqlite_version()').scalar()\n"
    "print(json.dumps({'synchronous': {0: 'OFF', 1: 'NORMAL', 2: 'FULL', 3: 'EXTRA'}[sync],"
    " 'journal_mode': journal, 'sqlite_library': lib}))\n"
)
POSTGRES_PROBE = (
    "with engine.connect() as c:\n"
    "    got = {k: c.exec_driver_sql('SHOW ' + k).scalar() for k in"
    " ('synchronous_commit', 'fsync', 'full_page_writes', 'wal_sync_method', 'server_version')}\n"
    "print(json.dumps(got | {'driver': engine.dialect.driver}))\n"
)
ENGINE_OF = {
    "modelplane": "from modelplane.serving.registry.db import create_db_engine\n"
    "engine = create_db_engine(URL, pool_size=1, sqlite_synchronous=SYNC)\n",
    "mlflow": "from mlflow.store.db.utils import create_sqlalchemy_engine\n"
    "engine = create_sqlalchemy_engine(URL)\n",
}


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
            raise RuntimeError(f"server exited with {proc.returncode}; the end of {log}:\n{tail}")
        try:
            if httpx.get(url, timeout=2, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout}s")


def mlflow_python() -> Path:
    """MLflow's virtualenv at the pinned versions (rebuilt when the pins change)."""
    python = MLFLOW_VENV / "bin" / "python"
    marker = MLFLOW_VENV / ".installed"
    wanted = " ".join(MLFLOW_PACKAGES) + "\n"
    if not marker.exists() or marker.read_text() != wanted:
        print("installing", *MLFLOW_PACKAGES, "into", MLFLOW_VENV, file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(MLFLOW_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *MLFLOW_PACKAGES], check=True)
        marker.write_text(wanted)
    return python


def package_versions(python: Path | str, packages: list[str]) -> dict[str, str]:
    code = (
        "import json, sqlite3\nfrom importlib.metadata import version\n"
        f"found = {{p: version(p) for p in {packages!r}}}\n"
        "print(json.dumps(found | {'sqlite3 library': sqlite3.sqlite_version}))"
    )
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout))


def probe(peer: str, python: Path | str, url: str, sqlite_synchronous: str) -> dict[str, str]:
    """The durability settings ``peer``'s own engine gives its connections to ``url``."""
    body = SQLITE_PROBE if url.startswith("sqlite") else POSTGRES_PROBE
    code = f"import json\nURL = {url!r}\nSYNC = {sqlite_synchronous!r}\n" + ENGINE_OF[peer] + body
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


@contextmanager
def serve_modelplane(tmp: Path, database_url: str, sqlite_synchronous: str) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "MODELPLANE_REGISTRY_BOOTSTRAP_TOKEN": TOKEN}
    cmd = [
        sys.executable, "-m", "modelplane.serving.registry", "serve",
        "--host", "127.0.0.1", "--port", str(port),
        "--database-url", database_url, "--artifact-root", str(tmp / "artifacts"),
        "--sqlite-synchronous", sqlite_synchronous, "--log-level", "warning",
    ]  # fmt: skip
    with (tmp / "modelplane.log").open("wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz", proc, tmp / "modelplane.log")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@contextmanager
def serve_mlflow(tmp: Path, database_url: str) -> Iterator[str]:
    port = free_port()
    cmd = [
        str(mlflow_python().parent / "mlflow"), "server", "--backend-store-uri", database_url,
        "--default-artifact-root", (tmp / "mlruns").as_uri(), "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip
    with (tmp / "mlflow.log").open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_ready(f"http://127.0.0.1:{port}/health", proc, tmp / "mlflow.log", timeout=180)
        yield f"http://127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


@contextmanager
def durable_postgres(root: Path) -> Iterator[str]:
    """A private PostgreSQL server with its default durability; yields its admin DSN (no database).

    Unlike the test suite's server (``fsync=off``), nothing is turned off: ``fsync``,
    ``synchronous_commit`` and ``full_page_writes`` stay ``on``.
    """
    from modelplane.testing.postgres import find_bindir

    bindir = find_bindir()
    datadir = root / "pgdata"
    run_as: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root; Debian's package creates `postgres`
        run_as = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, user="postgres", group="postgres")
    port = free_port()
    run_checked(
        [*run_as, str(bindir / "initdb"), "-D", str(datadir), "-U", "postgres", "--auth=trust",
         "--encoding=UTF8"],
    )  # fmt: skip
    options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root}"
    run_checked(
        [*run_as, str(bindir / "pg_ctl"), "-D", str(datadir), "-l", str(root / "server.log"),
         "-o", options, "-w", "-t", "60", "start"],
    )  # fmt: skip
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run(
            [*run_as, str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "fast", "-w", "stop"],
            check=False,
            capture_output=True,
        )


def run_checked(cmd: list[str]) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed ({result.returncode}):\n{result.stdout}{result.stderr}")


def create_database(admin_dsn: str, name: str) -> str:
    import psycopg

    with psycopg.connect(f"{admin_dsn}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{admin_dsn}/{name}"


class Driver(ABC):
    """The operations, spelled for one registry's REST API."""

    def __init__(self, client: httpx.Client) -> None:
        self.c = client

    @abstractmethod
    def create_model(self, name: str) -> None: ...
    @abstractmethod
    def create_version(self, name: str) -> int: ...
    @abstractmethod
    def set_alias(self, name: str, alias: str, version: int) -> None: ...
    @abstractmethod
    def get_by_alias(self, name: str, alias: str) -> int: ...
    @abstractmethod
    def search(self, name: str) -> int: ...


class ModelplaneDriver(Driver):
    def create_model(self, name: str) -> None:
        self.c.post("/api/v1/models", json={"name": name}).raise_for_status()

    def create_version(self, name: str) -> int:
        r = self.c.post(f"/api/v1/models/{name}/versions", json={"source": SOURCE, "framework": "torch"})
        r.raise_for_status()
        return int(r.json()["version"])

    def set_alias(self, name: str, alias: str, version: int) -> None:
        self.c.put(f"/api/v1/models/{name}/aliases/{alias}", json={"version": version}).raise_for_status()

    def get_by_alias(self, name: str, alias: str) -> int:
        r = self.c.get(f"/api/v1/models/{name}/aliases/{alias}/version")
        r.raise_for_status()
        return int(r.json()["version"])

    def search(self, name: str) -> int:
        r = self.c.get(f"/api/v1/models/{name}/versions", params={"limit": 100})
        r.raise_for_status()
        return len(r.json()["items"])


class MlflowDriver(Driver):
    API = "/api/2.0/mlflow"

    def create_model(self, name: str) -> None:
        self.c.post(f"{self.API}/registered-models/create", json={"name": name}).raise_for_status()

    def create_version(self, name: str) -> int:
        r = self.c.post(f"{self.API}/model-versions/create", json={"name": name, "source": SOURCE})
        r.raise_for_status()
        return int(r.json()["model_version"]["version"])

    def set_alias(self, name: str, alias: str, version: int) -> None:
        body = {"name": name, "alias": alias, "version": str(version)}
        self.c.post(f"{self.API}/registered-models/alias", json=body).raise_for_status()

    def get_by_alias(self, name: str, alias: str) -> int:
        r = self.c.get(f"{self.API}/registered-models/alias", params={"name": name, "alias": alias})
        r.raise_for_status()
        return int(r.json()["model_version"]["version"])

    def search(self, name: str) -> int:
        params: dict[str, str | int] = {"filter": f"name='{name}'", "max_results": 100}
        r = self.c.get(f"{self.API}/model-versions/search", params=params)
        r.raise_for_status()
        return len(r.json().get("model_versions", []))


@dataclass
class Measure:
    ops: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)

    def add(self, fn: Callable[[], object]) -> None:
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        self.ops += 1
        self.seconds += elapsed
        self.latencies_ms.append(elapsed * 1000)

    @property
    def rate(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    def pct(self, p: float) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]

    def row(self) -> dict[str, float]:
        return {
            "ops": self.ops,
            "ops_per_s": round(self.rate, 1),
            "p50_ms": round(self.pct(50), 2),
            "p99_ms": round(self.pct(99), 2),
            "mean_ms": round(statistics.fmean(self.latencies_ms), 2) if self.latencies_ms else 0.0,
        }


BLOCKS = 10


def interleaved(
    drivers: dict[str, Driver], count: int, op: Callable[[Driver, int], object], into: dict[str, Measure]
) -> None:
    """Run ``count`` calls of ``op`` per peer in alternating blocks, so load on the machine from
    elsewhere lands on both peers alike instead of on whichever ran during the noisy minute."""
    block = max(1, -(-count // BLOCKS))
    for first in range(0, count, block):
        for peer, driver in drivers.items():
            for i in range(first, min(count, first + block)):
                into[peer].add(functools.partial(op, driver, i))


def run_all(
    drivers: dict[str, Driver], versions: int, big_versions: int, lookups: int, searches: int
) -> dict[str, dict[str, dict[str, float]]]:
    names = ("create_model", "create_version", "set_alias", "get_by_alias", "search", "get_by_alias_big")
    results = {op: {peer: Measure() for peer in drivers} for op in names}
    scratch = {peer: Measure() for peer in drivers}
    name = "model-0"
    interleaved(drivers, 20, lambda d, i: d.create_model(f"warm-{i}"), scratch)  # connections, caches
    interleaved(drivers, 100, lambda d, i: d.create_model(f"model-{i}"), results["create_model"])
    interleaved(drivers, versions, lambda d, i: d.create_version(name), results["create_version"])
    interleaved(
        drivers,
        200,
        lambda d, i: d.set_alias(name, "production", 1 + (i * 7) % versions),
        results["set_alias"],
    )
    for d in drivers.values():
        d.set_alias(name, "production", versions // 2)
    interleaved(drivers, lookups, lambda d, i: d.get_by_alias(name, "production"), results["get_by_alias"])
    interleaved(drivers, searches, lambda d, i: d.search(name), results["search"])
    interleaved(drivers, big_versions - versions, lambda d, i: d.create_version(name), scratch)
    for d in drivers.values():
        d.set_alias(name, "production", big_versions // 2)
    interleaved(
        drivers, lookups, lambda d, i: d.get_by_alias(name, "production"), results["get_by_alias_big"]
    )
    return {peer: {op: results[op][peer].row() for op in names} for peer in drivers}


def machine(data_dir: Path) -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with contextlib.suppress(OSError, IndexError):
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split(":", 1)[1].strip()
    fs = subprocess.run(
        ["df", "--output=source,fstype", str(data_dir)], capture_output=True, text=True, check=False
    ).stdout.split()
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": mem,
        "os": platform.platform(),
        "python": platform.python_version(),
        "gpu": "none used",
        "data_dir": str(data_dir),
        "data_dir_filesystem": " ".join(fs[-2:]) if len(fs) >= 2 else "unknown",
        "data_dir_fdatasync_4k_ms": ", ".join(f"{k} {v}" for k, v in fdatasync_ms(data_dir).items()),
        "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "loadavg_at_start": Path("/proc/loadavg").read_text().strip(),
    }


def fdatasync_ms(data_dir: Path, count: int = 200) -> dict[str, float]:
    """What one flush of an appended 4 KiB block costs on ``data_dir``'s disk: the floor under every
    durable commit (a disk whose cache ignores flushes shows microseconds, and is not durable)."""
    path = data_dir / "fdatasync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    times = []
    try:
        for _ in range(count):
            os.write(fd, b"x" * 4096)
            start = time.perf_counter()
            os.fdatasync(fd)
            times.append((time.perf_counter() - start) * 1000)
    finally:
        os.close(fd)
        path.unlink()
    times.sort()
    return {"p50": round(times[len(times) // 2], 3), "p99": round(times[int(len(times) * 0.99)], 3)}


def git_commit() -> str:
    out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=HERE, check=False)
    dirty = subprocess.run(
        ["git", "status", "--porcelain"], capture_output=True, text=True, cwd=HERE, check=False
    )
    return out.stdout.strip() + (" (with working tree changes)" if dirty.stdout.strip() else "")


def peer_versions(backends: list[str]) -> dict[str, dict[str, str]]:
    ours = ["modelplane", "sqlalchemy", "fastapi", "uvicorn", "httpx"]
    theirs = ["mlflow", "sqlalchemy", "fastapi", "uvicorn"]
    if "postgres" in backends:
        ours += ["psycopg", "psycopg-binary"]
        theirs += ["psycopg", "psycopg-binary"]
    return {
        "modelplane": package_versions(sys.executable, ours),
        "mlflow": package_versions(mlflow_python(), theirs),
    }


Leg = dict[str, dict[str, dict[str, float]]]


def run_leg(backend: str, args: argparse.Namespace, root: Path) -> tuple[Leg, dict[str, dict[str, str]]]:
    """Both peers on ``backend``, up at once; returns the figures and what each commit waits for."""
    peers = [p for p in ("modelplane", "mlflow") if args.only in (None, p)]
    with ExitStack() as stack:
        urls: dict[str, str] = {}
        if backend == "postgres":
            pg_root = root / "postgres"
            pg_root.mkdir()
            root.chmod(0o755)  # mkdtemp's 0700 would keep the `postgres` user out
            admin = stack.enter_context(durable_postgres(pg_root))
            urls = {peer: create_database(admin, peer) for peer in peers}
        else:
            urls = {peer: f"sqlite:///{root / (peer + '.db')}" for peer in peers}
        drivers: dict[str, Driver] = {}
        durability: dict[str, dict[str, str]] = {}
        for peer in peers:
            tmp = root / f"{backend}-{peer}"
            tmp.mkdir()
            if peer == "modelplane":
                url = stack.enter_context(
                    serve_modelplane(tmp, urls[peer], args.modelplane_sqlite_synchronous)
                )
                client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
                drivers[peer] = ModelplaneDriver(stack.enter_context(client))
                python: Path | str = sys.executable
            else:
                url = stack.enter_context(serve_mlflow(tmp, urls[peer]))
                drivers[peer] = MlflowDriver(stack.enter_context(httpx.Client(base_url=url, timeout=60)))
                python = mlflow_python()
            durability[peer] = probe(peer, python, urls[peer], args.modelplane_sqlite_synchronous)
            print(f"{backend} {peer}: {json.dumps(durability[peer])}", flush=True)
        started = time.perf_counter()
        raw = run_all(drivers, args.versions, args.big_versions, args.lookups, args.searches)
        print(f"{backend}: both peers done in {time.perf_counter() - started:.0f}s", flush=True)
    return raw, durability


def report(backend: str, raw: Leg, durability: dict[str, dict[str, str]], big_versions: int) -> None:
    print(f"\n== {backend} ==")
    for peer, settings in durability.items():
        print(f"  {peer}: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    print(f"{'operation':<22}{'peer':<12}{'ops/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    for op in next(iter(raw.values())):
        for peer in raw:
            r = raw[peer][op]
            print(f"{op:<22}{peer:<12}{r['ops_per_s']:>10}{r['p50_ms']:>10}{r['p99_ms']:>10}")
    if len(raw) < 2:
        return
    print("ratios (modelplane / mlflow throughput; mlflow / modelplane p99):")
    for op in raw["modelplane"]:
        a, b = raw["modelplane"][op], raw["mlflow"][op]
        thr = a["ops_per_s"] / b["ops_per_s"] if b["ops_per_s"] else float("nan")
        p99 = b["p99_ms"] / a["p99_ms"] if a["p99_ms"] else float("nan")
        print(f"  {op:<22} throughput x{thr:.2f}   p99 x{p99:.2f}")
    print(f"get_by_alias_big measured at {big_versions} versions per model")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=1000, help="versions created and timed")
    parser.add_argument(
        "--big-versions", type=int, default=10000, help="model size for the second lookup run"
    )
    parser.add_argument("--lookups", type=int, default=2000, help="get-by-alias requests per measurement")
    parser.add_argument("--searches", type=int, default=200)
    parser.add_argument(
        "--backends", default=",".join(BACKENDS), help="comma-separated legs: sqlite, postgres"
    )
    parser.add_argument(
        "--modelplane-sqlite-synchronous",
        choices=["full", "normal"],
        default="full",
        help="our SQLite commit sync (full: its default, durable like MLflow's; normal: the old, unfair run)",
    )
    parser.add_argument(
        "--data-dir", type=Path, default=WORK / "registry-data", help="where the databases live (not tmpfs)"
    )
    parser.add_argument(
        "--json", type=Path, default=HERE / "results" / "registry_vs_mlflow_durable.json", help="raw file"
    )
    parser.add_argument(
        "--only", choices=["modelplane", "mlflow"], help="run one peer (for profiling; no ratios)"
    )
    args = parser.parse_args()
    backends = [b for b in args.backends.split(",") if b]
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        parser.error(f"unknown backend(s) {sorted(unknown)}; choose from {', '.join(BACKENDS)}")
    if "postgres" in backends:
        from modelplane.testing.postgres import PostgresUnavailableError, find_bindir

        try:
            find_bindir()
        except PostgresUnavailableError as exc:
            print(f"skipping the postgres leg: {exc}", file=sys.stderr)
            backends.remove("postgres")

    mlflow_python()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    info = machine(args.data_dir)
    versions = peer_versions(backends)
    print(json.dumps({"machine": info, "versions": versions}, indent=2), flush=True)
    results: dict[str, Leg] = {}
    durability: dict[str, dict[str, dict[str, str]]] = {}
    seconds: dict[str, float] = {}
    for backend in backends:
        root = Path(tempfile.mkdtemp(prefix=f"bench-{backend}-", dir=args.data_dir))
        try:
            started = time.perf_counter()
            results[backend], durability[backend] = run_leg(backend, args, root)
            seconds[backend] = round(time.perf_counter() - started, 1)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    for backend in results:
        report(backend, results[backend], durability[backend], args.big_versions)
    info["loadavg_at_end"] = Path("/proc/loadavg").read_text().strip()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "machine": info,
                "command": " ".join([Path(sys.executable).name, *sys.argv]),
                "commit": git_commit(),
                "versions": versions,
                "args": vars(args) | {"json": str(args.json), "data_dir": str(args.data_dir)},
                "durability": durability,
                "seconds_per_leg": seconds,
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"raw results: {os.path.relpath(args.json)}")


if __name__ == "__main__":
    main()
