"""Autoscaling step response: 0 → 32 concurrent clients on a dev cluster, and back to 0.

One run on a local dev cluster (started here, stopped at the end, also on Ctrl-C or failure): a
registry holding a real TorchScript MLP, the CRDs, ``modelplane router --discovery kubernetes`` and
``modelplane operator --router-metrics-url ROUTER/metrics`` with the built-in autoscaler, and a
CPU-only ModelDeployment (``minReplicas: 1``, ``maxReplicas: 8``, ``targetConcurrency: 4``).

Load: ``--clients`` closed-loop clients (coroutines on one loop, through the router) for
``--load-seconds``, then none. Every second the timeline records the desired (spec) and ready
replicas, the router's in-flight requests for the model (a point sample) and its mean concurrency
over that second (the autoscaler's signal), and the clients' requests, errors and p99 latency over
that second. It stops once replicas are back at ``minReplicas`` (bounded by ``--settle-seconds``).

Writes ``benchmarks/results/autoscaling_step.csv`` and a plot ``autoscaling_step.png`` (matplotlib is
installed into its own virtualenv under ``benchmarks/.work/`` on first use; ``--no-plot`` skips it),
and prints: seconds from the step to ≥ 6 ready replicas (aim ≤ 30), peak replicas, seconds from the
end of the load back to ``minReplicas``, total requests and errors (aim 0).

    .venv/bin/python benchmarks/autoscaling_step.py
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from modelplane.autoscaling.load import parse_router_page
from modelplane.devcluster import build
from modelplane.devcluster import cluster as devcluster
from modelplane.devcluster.kube import Api, ApiError, Credentials
from modelplane.serving.router.balancing import authority_of
from modelplane.serving.router.upstream import UpstreamPool, UpstreamProtocolError
from modelplane.testing.cluster import Cluster, wait_for
from modelplane.testing.modeldeployments import md_manifest, wait_ready
from modelplane.testing.operator import OperatorProcess, register_mlp
from modelplane.testing.registry import ADMIN_TOKEN, RegistryProcess
from modelplane.testing.router import RouterProcess

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
PLOT_VENV = HERE / ".work" / "plot-venv"
ARTIFACT_SECRET = "modelplane-artifact-token"  # noqa: S105 - a Secret's name
NAMESPACE = "bench"
MODEL = "step"
ROW = np.random.default_rng(11).standard_normal((1, 64)).astype(np.float32)
BODY = {"inputs": [{"name": "INPUT__0", "shape": [1, 64], "datatype": "FP32", "data": ROW.ravel().tolist()}]}
COLUMNS = [
    "t_s", "clients", "spec_replicas", "ready_replicas", "router_in_flight", "router_concurrency",
    "requests", "errors", "p99_ms",
]  # fmt: skip


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@dataclass
class Load:
    """Closed-loop clients through the router; each completion is recorded with its time.

    ``workers`` coroutines on one event loop in one thread, each with its own keep-alive connection
    (the router's own lean HTTP/1.1 client). Clients on the machine under test take CPU from the
    pods being measured; 32 threads of a general-purpose client took a large share of the two
    cores and slowed every pod start, where one loop costs a fraction of a core.
    """

    url: str
    path: str
    workers: int
    bound_s: float
    done: list[tuple[float, float, bool]] = field(default_factory=list)  # (finished, seconds, ok)
    error_samples: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    thread: threading.Thread | None = None

    async def _client(self, pool: UpstreamPool, authority: str, deadline: float) -> None:
        body = json.dumps(BODY).encode()
        headers = [(b"content-type", b"application/json")]
        while not self.stop.is_set() and time.monotonic() < deadline:
            started = time.monotonic()
            detail = ""
            try:
                response = await pool.request(authority, "POST", self.path, headers, body)
                ok = response.status == 200
                if not ok:
                    detail = f"{response.status}: {response.body[:200]!r}"
            except (OSError, TimeoutError, UpstreamProtocolError) as exc:
                ok, detail = False, repr(exc)
            finished = time.monotonic()
            with self.lock:
                self.done.append((finished, finished - started, ok))
                if detail and len(self.error_samples) < 20:
                    self.error_samples.append(detail)
            if not ok:
                await asyncio.sleep(0.01)  # a refused connection must not spin

    async def _main(self) -> None:
        pool = UpstreamPool(connect_timeout_s=5.0, request_timeout_s=60.0, max_idle_per_host=self.workers)
        deadline = time.monotonic() + self.bound_s
        try:
            clients = (self._client(pool, authority_of(self.url), deadline) for _ in range(self.workers))
            await asyncio.gather(*clients)
        finally:
            await pool.close()

    def start(self) -> None:
        self.thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)
        self.thread.start()

    def finish(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(90)

    def window(self, since: float, until: float) -> tuple[int, int, float]:
        """Requests, errors and p99 latency (ms, NaN when none) of completions in [since, until)."""
        with self.lock:
            picked = [(took, ok) for finished, took, ok in self.done if since <= finished < until]
        if not picked:
            return 0, 0, math.nan
        p99 = float(np.percentile([took for took, _ in picked], 99)) * 1000
        return len(picked), sum(1 for _, ok in picked if not ok), p99


def replicas(api: Api) -> tuple[int, int]:
    """(spec replicas, ready replicas) of the benchmark's ModelDeployment (-1, -1 when unreadable)."""
    try:
        md: dict[str, Any] = api.get(
            f"/apis/modelplane.io/v1alpha1/namespaces/{NAMESPACE}/modeldeployments/{MODEL}"
        )
    except (ApiError, httpx.HTTPError):
        return -1, -1
    return int(md["spec"].get("replicas", -1)), int(md.get("status", {}).get("readyReplicas", 0) or 0)


@dataclass
class RouterReading:
    """One scrape of the router: the in-flight gauge and the integrated concurrency with its clock."""

    in_flight: float = math.nan
    area: float = math.nan
    uptime: float = math.nan

    def average_since(self, earlier: RouterReading) -> float:
        """Mean concurrency between two readings: what the autoscaler computes from the same counter."""
        elapsed = self.uptime - earlier.uptime
        return (self.area - earlier.area) / elapsed if elapsed > 0 else math.nan


def read_router(router: RouterProcess) -> RouterReading:
    model = f"{NAMESPACE}/{MODEL}"
    try:
        text = router.metrics_text()
    except httpx.HTTPError:
        return RouterReading()
    page = parse_router_page(text)  # read as the autoscaler reads it
    return RouterReading(
        in_flight=page.in_flight.get(model, 0.0),
        area=(page.areas or {}).get(model, 0.0),
        uptime=page.uptime if page.uptime is not None else math.nan,
    )


def kubectl_binary() -> str:
    """The kubectl the dev cluster build cached (``make cluster-bins``)."""
    path = build.binary_path(build.kubernetes_component(), "kubectl")
    if not path.is_file():
        raise SystemExit("no kubectl: run `make cluster-bins` first (it builds the dev cluster's binaries)")
    return str(path)


@contextmanager
def dev_cluster(directory: Path, keep: bool) -> Iterator[Cluster]:
    """A dev cluster owned by this process (its agent stops it if this process dies); stopped after.

    ``keep`` leaves its state directory (component and pod logs) in place once stopped.
    """
    state = devcluster.up(directory, owner_pid=os.getpid(), report=lambda m: print(m, file=sys.stderr))
    try:
        yield Cluster(kubeconfig=state.kubeconfig, kubectl_path=kubectl_binary(), state_dir=directory)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # stopping must not be cut short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("stopping the dev cluster", file=sys.stderr)
        devcluster.down(directory, keep=keep, report=lambda m: None)


def setup(stack: ExitStack, work: Path, args: argparse.Namespace) -> tuple[Cluster, RouterProcess, float]:
    """Cluster, registry with the model, CRDs, namespace with the artifact Secret, router, operator.

    Also returns the seconds from applying the ModelDeployment to its first ready replica on the idle
    cluster: one pod's cold start, the floor under any scale-up time.
    """
    state_dir = args.keep_logs if args.keep_logs is not None else work / "cluster"
    cluster = stack.enter_context(dev_cluster(state_dir, keep=args.keep_logs is not None))
    registry = RegistryProcess(
        database_url=f"sqlite:///{work / 'registry.db'}",
        artifact_root=work / "artifacts",
        log_path=work / "registry.log",
    ).start()
    stack.callback(registry.stop)
    with registry.client() as client:
        register_mlp(client, work / "models", MODEL, seeds=[1])
        token = client.create_token("serving-pods", scopes=["read"]).token
    cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    cluster.kubectl(
        "wait", "--for=condition=Established", "crd/modeldeployments.modelplane.io", "--timeout=60s"
    )
    cluster.kubectl("create", "namespace", NAMESPACE)
    wait_for(
        "the default service account",
        lambda: cluster.kubectl("get", "sa", "default", "-n", NAMESPACE, check=False).returncode == 0,
        timeout=30,
    )
    cluster.kubectl(
        "create", "secret", "generic", ARTIFACT_SECRET, "-n", NAMESPACE, f"--from-literal=token={token}"
    )
    router = RouterProcess(
        log_path=work / "router.log",
        discovery="kubernetes",
        extra_args=["--queue-timeout", "60", "--drain-timeout", "2"],
        env={"KUBECONFIG": str(cluster.kubeconfig)},
    ).start()
    stack.callback(router.stop)
    operator = OperatorProcess(
        kubeconfig=cluster.kubeconfig,
        registry_url=registry.url,
        registry_token=ADMIN_TOKEN,
        log_path=work / "operator.log",
        extra_args=[
            "--artifact-token-secret",
            ARTIFACT_SECRET,
            "--router-metrics-url",
            router.url + "/metrics",
        ],
    ).start()
    stack.callback(operator.stop)
    spec = {
        "model": {"name": MODEL, "version": 1},
        "replicas": 1,
        "resources": {"gpu": {"count": 0}},
        "autoscaling": {
            "mode": "builtin",
            "minReplicas": args.min_replicas,
            "maxReplicas": args.max_replicas,
            "targetConcurrency": args.target,
            "scaleDownDelaySeconds": args.scale_down_delay,
            "stableWindowSeconds": args.stable_window,
        },
    }
    applied = time.monotonic()
    cluster.apply(md_manifest(MODEL, spec), NAMESPACE)
    wait_ready(cluster, NAMESPACE, MODEL, args.min_replicas, timeout=240)
    cold_start = time.monotonic() - applied

    def answers() -> bool:
        try:
            path = f"/ns/{NAMESPACE}/v2/models/{MODEL}/infer"
            return httpx.post(router.url + path, json=BODY, timeout=10).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for("the model to answer through the router", answers, timeout=60, interval=0.5)
    return cluster, router, cold_start


def run_timeline(api: Api, router: RouterProcess, args: argparse.Namespace) -> list[dict[str, float]]:
    """Idle lead-in, the step, the load, then idle until back at minReplicas (bounded)."""
    path = f"/ns/{NAMESPACE}/v2/models/{MODEL}/infer"
    load = Load(router.url, path, args.clients, bound_s=args.load_seconds + 30)
    rows: list[dict[str, float]] = []
    t0 = time.monotonic() + args.lead_seconds  # the step
    load_end = t0 + args.load_seconds
    started = stopped = False
    tick = previous = time.monotonic()
    reading = read_router(router)
    try:
        while True:
            now = time.monotonic()
            if not started and now >= t0:
                load.start()
                started = True
            if started and not stopped and now >= load_end:
                load.finish()
                stopped = True
                load_end = time.monotonic()
            spec, ready = replicas(api)
            earlier, reading = reading, read_router(router)
            requests, errors, p99 = load.window(previous, now)
            previous = now
            rows.append({
                "t_s": round(now - t0, 2),
                "clients": float(args.clients if started and not stopped else 0),
                "spec_replicas": float(spec),
                "ready_replicas": float(ready),
                "router_in_flight": reading.in_flight,
                "router_concurrency": round(reading.average_since(earlier), 2),
                "requests": float(requests),
                "errors": float(errors),
                "p99_ms": round(p99, 1),
            })  # fmt: skip
            r = rows[-1]
            print(
                f"t={r['t_s']:7.1f}s clients={int(r['clients']):2d} spec={spec} ready={ready} "
                f"in_flight={r['router_in_flight']:.0f} avg={r['router_concurrency']:.1f} "
                f"req={requests} err={errors} p99={p99:.0f}ms",
                flush=True,
            )
            if stopped:
                back = spec == args.min_replicas and ready == args.min_replicas
                if back or now - load_end > args.settle_seconds:
                    break
            tick = max(tick + 1.0, time.monotonic())  # a late sample delays the next, no burst
            time.sleep(max(0.0, tick - time.monotonic()))
    finally:
        load.finish()
    if load.error_samples:
        print("error samples:", *load.error_samples, sep="\n  ")
    return rows


def summarize(rows: list[dict[str, float]], args: argparse.Namespace) -> dict[str, Any]:
    """The headline figures of a timeline (times in seconds from the step / from the load's end)."""
    loaded = [r for r in rows if r["clients"] > 0]
    after = [r for r in rows if r["t_s"] >= args.load_seconds]
    to_six = next((r["t_s"] for r in rows if r["t_s"] >= 0 and r["ready_replicas"] >= args.ready_goal), None)
    asked = next((r["t_s"] for r in rows if r["t_s"] >= 0 and r["spec_replicas"] >= args.ready_goal), None)
    back = next(
        (
            r["t_s"] - args.load_seconds
            for r in after
            if r["clients"] == 0
            and r["spec_replicas"] == args.min_replicas
            and r["ready_replicas"] == args.min_replicas
        ),
        None,
    )
    return {
        "seconds_to_spec_goal": asked,
        "seconds_to_ready_goal": to_six,
        "peak_spec_replicas": max(int(r["spec_replicas"]) for r in rows),
        "peak_ready_replicas": max(int(r["ready_replicas"]) for r in rows),
        "seconds_back_to_min_after_load": back,
        "total_requests": int(sum(r["requests"] for r in rows)),
        "errors": int(sum(r["errors"] for r in rows)),
        "p99_ms_during_load_median_of_seconds": float(
            np.nanmedian([r["p99_ms"] for r in loaded]) if loaded else math.nan
        ),
    }


def shown(path: Path) -> str:
    """A path as printed: relative to the repository when inside it (output that gets recorded)."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def write_csv(rows: list[dict[str, float]], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


PLOT = """
import csv, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
rows = list(csv.DictReader(open(sys.argv[1])))
t = [float(r["t_s"]) for r in rows]
col = lambda k: [float(r[k]) for r in rows]
fig, (a, b) = plt.subplots(2, 1, sharex=True, figsize=(10, 7))
a.step(t, col("spec_replicas"), where="post", label="desired (spec) replicas")
a.step(t, col("ready_replicas"), where="post", label="ready replicas")
a.plot(t, [c / 4 for c in col("router_concurrency")], alpha=0.6,
       label="router concurrency (1 s mean) / target (4)")
a.plot(t, [c / 4 for c in col("clients")], "k--", alpha=0.4, label="clients / target (4)")
a.set_ylabel("replicas"); a.legend(loc="upper right"); a.grid(alpha=0.3)
a.set_title(sys.argv[3])
b.plot(t, col("p99_ms"), color="tab:red", label="client p99 latency (1 s window)")
b.set_ylabel("p99 ms"); b.set_xlabel("seconds from the step"); b.set_yscale("log")
b.legend(loc="upper right"); b.grid(alpha=0.3)
fig.tight_layout(); fig.savefig(sys.argv[2], dpi=100)
"""


def plot(csv_path: Path, png_path: Path, title: str) -> None:
    """Plot the CSV with matplotlib from its own virtualenv (not a dependency of the package)."""
    python = PLOT_VENV / "bin" / "python"
    if not python.exists():
        print("installing matplotlib into", PLOT_VENV, file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(PLOT_VENV)], check=True)
        subprocess.run([str(PLOT_VENV / "bin" / "pip"), "install", "-q", "matplotlib"], check=True)
    subprocess.run([str(python), "-c", PLOT, str(csv_path), str(png_path), title], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--load-seconds", type=float, default=90.0)
    parser.add_argument(
        "--lead-seconds", type=float, default=5.0, help="idle seconds recorded before the step"
    )
    parser.add_argument("--settle-seconds", type=float, default=240.0, help="bound after the load stops")
    parser.add_argument("--min-replicas", type=int, default=1)
    parser.add_argument("--max-replicas", type=int, default=8)
    parser.add_argument("--target", type=int, default=4, help="targetConcurrency per replica")
    parser.add_argument("--scale-down-delay", type=int, default=30)
    parser.add_argument("--stable-window", type=int, default=60)
    parser.add_argument("--ready-goal", type=int, default=6, help="ready replicas the step should reach")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument(
        "--keep-logs",
        type=Path,
        metavar="DIR",
        help="run the dev cluster in DIR (new or empty) and keep its component and pod logs there",
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _interrupt)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="autoscaling-step-") as tmp, ExitStack() as stack:
        cluster, router, cold_start = setup(stack, Path(tmp), args)
        api = Api(Credentials.from_kubeconfig(cluster.kubeconfig), timeout=5.0)
        stack.callback(api.close)
        rows = run_timeline(api, router, args)
    csv_path = args.out / "autoscaling_step.csv"
    write_csv(rows, csv_path)
    summary = {"seconds_first_replica_cold_start": round(cold_start, 1), **summarize(rows, args)}
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"wrote {shown(csv_path)}")
    for key, value in summary.items():
        print(f"{key}: {value}")
    goal = summary["seconds_to_ready_goal"]
    print(
        f"step to >= {args.ready_goal} ready replicas: "
        + (f"{goal:.1f}s (aim <= 30s: {'met' if goal <= 30 else 'NOT met'})" if goal is not None else "never")
    )
    if not args.no_plot:
        png = args.out / "autoscaling_step.png"
        title = (
            f"step 0 -> {args.clients} clients for {args.load_seconds:.0f}s, target {args.target}/replica, "
            f"min {args.min_replicas} max {args.max_replicas}"
        )
        plot(csv_path, png, title)
        print(f"wrote {shown(png)}")


if __name__ == "__main__":
    main()
