"""Registry vs MLflow's model registry: same operations, same client, same machine, one run.

Both servers run as one process on loopback with a SQLite backend: this project's registry
(``modelplane registry serve``) and MLflow's tracking server (``mlflow server``, its REST API
``/api/2.0/mlflow/...``), installed into its own virtualenv under ``benchmarks/.work/`` on first use.
One ``httpx.Client`` with keep-alive drives both, one request at a time, so the figures are per-request
server cost plus loopback HTTP. Operations: create models, create versions, set (move) an alias, get
the version behind an alias, search versions; then the models grow to ``--big-versions`` versions and
get-by-alias latency is measured again. Both servers run at once and every operation alternates
between them in blocks, so load from elsewhere on the machine falls on both alike.

    .venv/bin/python benchmarks/registry_vs_mlflow.py --versions 1000 --big-versions 10000
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from modelplane.local.processes import free_port

WORK = Path(__file__).resolve().parent / ".work"
MLFLOW_VENV = WORK / "mlflow-venv"
TOKEN = "benchmark-admin-token-0123456789"  # noqa: S105 - a throwaway server's bootstrap token
SOURCE = "s3://bench-bucket/models/model.pt"


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout}s")


def ensure_mlflow() -> Path:
    exe = MLFLOW_VENV / "bin" / "mlflow"
    if not exe.exists():
        print("installing mlflow into", MLFLOW_VENV, file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(MLFLOW_VENV)], check=True)
        subprocess.run([str(MLFLOW_VENV / "bin" / "pip"), "install", "-q", "mlflow"], check=True)
    return exe


def mlflow_version() -> str:
    out = subprocess.run(
        [str(MLFLOW_VENV / "bin" / "python"), "-c", "import mlflow; print(mlflow.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


@contextmanager
def serve_modelplane(tmp: Path) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "MODELPLANE_REGISTRY_BOOTSTRAP_TOKEN": TOKEN}
    cmd = [
        sys.executable, "-m", "modelplane.serving.registry", "serve",
        "--host", "127.0.0.1", "--port", str(port),
        "--database-url", f"sqlite:///{tmp / 'modelplane.db'}", "--artifact-root", str(tmp / "artifacts"),
        "--log-level", "warning",
    ]  # fmt: skip
    with (tmp / "modelplane.log").open("wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@contextmanager
def serve_mlflow(tmp: Path) -> Iterator[str]:
    port = free_port()
    cmd = [
        str(ensure_mlflow()), "server", "--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}",
        "--default-artifact-root", (tmp / "mlruns").as_uri(), "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip
    with (tmp / "mlflow.log").open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_ready(f"http://127.0.0.1:{port}/health", proc, timeout=180)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=1000, help="versions created and timed")
    parser.add_argument(
        "--big-versions", type=int, default=10000, help="model size for the second lookup run"
    )
    parser.add_argument("--lookups", type=int, default=2000, help="get-by-alias requests per measurement")
    parser.add_argument("--searches", type=int, default=200)
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument(
        "--only", choices=["modelplane", "mlflow"], help="run one peer (for profiling; no ratios)"
    )
    args = parser.parse_args()

    peers: list[tuple[str, Callable[[Path], AbstractContextManager[str]], type[Driver], dict[str, str]]] = [
        ("modelplane", serve_modelplane, ModelplaneDriver, {"Authorization": f"Bearer {TOKEN}"}),
        ("mlflow", serve_mlflow, MlflowDriver, {}),
    ]
    with ExitStack() as stack:
        drivers: dict[str, Driver] = {}
        for peer, serve, driver_cls, headers in peers:
            if args.only and peer != args.only:
                continue
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"bench-{peer}-")))
            url = stack.enter_context(serve(tmp))
            client = stack.enter_context(
                httpx.Client(base_url=url, headers=headers, timeout=60, trust_env=False)
            )
            drivers[peer] = driver_cls(client)
        started = time.perf_counter()
        raw = run_all(drivers, args.versions, args.big_versions, args.lookups, args.searches)
        print(f"both peers done in {time.perf_counter() - started:.0f}s", file=sys.stderr)

    mlflow_v = mlflow_version() if "mlflow" in raw else "-"
    cpu = platform.processor() or platform.machine()
    print(f"\nmachine: {cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}, MLflow {mlflow_v}")
    print(f"{'operation':<22}{'peer':<12}{'ops/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    for op in next(iter(raw.values())):
        for peer in raw:
            r = raw[peer][op]
            print(f"{op:<22}{peer:<12}{r['ops_per_s']:>10}{r['p50_ms']:>10}{r['p99_ms']:>10}")
    if len(raw) < 2:
        return
    print("\nratios (modelplane / mlflow throughput; mlflow / modelplane p99):")
    for op in raw["modelplane"]:
        a, b = raw["modelplane"][op], raw["mlflow"][op]
        thr = a["ops_per_s"] / b["ops_per_s"] if b["ops_per_s"] else float("nan")
        p99 = b["p99_ms"] / a["p99_ms"] if a["p99_ms"] else float("nan")
        print(f"  {op:<22} throughput x{thr:.2f}   p99 x{p99:.2f}")
    print(f"get_by_alias_big measured at {args.big_versions} versions per model")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"args": vars(args) | {"json": str(args.json)}, "results": raw}, indent=2)
        )


if __name__ == "__main__":
    main()
