"""Serving runtime vs KServe and MLServer: one TorchScript MLP over V2 REST (wrk) and gRPC, side by side.

Peers, one server at a time on the same machine: this runtime (``modelplane runtime``) as a
ModelDeployment configures it by default (dynamic batching, ``maxBatchSize: 32``, ``maxLatencyMs:
5``) and with batching off (``modelplane-nobatch``, what batching costs or buys), KServe's
Python ModelServer, Seldon MLServer (default settings and ``parallel_workers: 0``), and a bare
FastAPI endpoint doing the same forward (the reference for latency at concurrency 1). KServe and
MLServer run in their own virtualenvs under ``benchmarks/.work/`` (created on first use with pip;
they reuse this environment's torch as a fallback import path so no second torch is installed).
REST load: ``wrk`` (Debian package ``wrk``) pinned to the last CPU; gRPC load: ``_grpc_load.py``
(grpc.aio), pinned the same way. Also measured: the in-process torch forward rate (the limit).

    .venv/bin/python benchmarks/runtime_vs_peers.py --duration 15
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import torch

from modelplane.local.processes import free_port
from modelplane.testing.runtime import make_mlp, mlp_config, save_torchscript

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"
# MLServer 1.7's workers call asyncio.get_event_loop() outside a loop, which uvloop >= 0.22 refuses.
PEER_PACKAGES = {"kserve": ["kserve"], "mlserver": ["mlserver", "uvloop<0.22"]}


def load_cpu() -> str:
    """The CPU the load generator is pinned to (the last one), so it competes least with servers."""
    return str(max(os.sched_getaffinity(0)))


def ensure_peer_venv(name: str) -> Path:
    """``benchmarks/.work/venv-NAME`` with the peer's package; returns its python."""
    venv = WORK / f"venv-{name}"
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    if not marker.exists():
        print(f"installing {name} into {os.path.relpath(venv)} (first run only)...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PEER_PACKAGES[name]], check=True)
        marker.write_text("ok\n")
    # torch comes from this environment, appended after the peer's own packages.
    peer_site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (peer_site / "zz_modelplane_torch.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return python


@dataclass
class Peer:
    name: str
    command: list[str]
    http_port: int
    grpc_port: int | None
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None


def prepare(model_path: Path, peers: list[str]) -> list[Peer]:
    result: list[Peer] = []
    for name in peers:
        http_port, grpc_port = free_port(), free_port()
        if name in ("modelplane", "modelplane-nobatch"):
            repo = WORK / f"repo-{name}"
            shutil.rmtree(repo, ignore_errors=True)
            (repo / "mlp" / "1").mkdir(parents=True)
            shutil.copy(model_path, repo / "mlp" / "1" / "model.pt")
            (repo / "mlp" / "config.pbtxt").write_text(runtime_config(batching=name == "modelplane"))
            command = [
                str(Path(sys.executable).parent / "modelplane"),
                "runtime",
                "--model-repository",
                str(repo),
                "--host",
                "127.0.0.1",
                "--http-port",
                str(http_port),
                "--grpc-port",
                str(grpc_port),
                "--threads",
                "1",
            ]
            result.append(Peer(name, command, http_port, grpc_port))
        elif name == "fastapi":
            command = [
                sys.executable,
                "-m",
                "uvicorn",
                "fastapi_mlp:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(http_port),
                "--log-level",
                "warning",
                "--no-access-log",
            ]
            env = {"MLP_MODEL_PATH": str(model_path), "PYTHONPATH": str(HERE / "peers")}
            result.append(Peer(name, command, http_port, None, env))
        elif name == "kserve":
            python = ensure_peer_venv("kserve")
            command = [
                str(python),
                str(HERE / "peers" / "kserve_mlp.py"),
                "--model_path",
                str(model_path),
                "--http_port",
                str(http_port),
                "--grpc_port",
                str(grpc_port),
            ]
            result.append(Peer(name, command, http_port, grpc_port))
        elif name.startswith("mlserver"):
            python = ensure_peer_venv("mlserver")
            folder = WORK / f"repo-{name}"
            shutil.rmtree(folder, ignore_errors=True)
            (folder / "mlp").mkdir(parents=True)
            shutil.copy(HERE / "peers" / "mlserver_mlp.py", folder / "mlp" / "mlserver_mlp.py")
            settings: dict[str, object] = {
                "host": "127.0.0.1",
                "http_port": http_port,
                "grpc_port": grpc_port,
                "metrics_port": free_port(),
            }
            if name == "mlserver-pw0":
                settings["parallel_workers"] = 0
            (folder / "settings.json").write_text(json.dumps(settings))
            (folder / "mlp" / "model-settings.json").write_text(
                json.dumps(
                    {
                        "name": "mlp",
                        "implementation": "mlserver_mlp.TorchMLP",
                        "parameters": {"uri": str(model_path)},
                    }
                )
            )
            command = [str(python.parent / "mlserver"), "start", str(folder)]
            result.append(Peer(name, command, http_port, grpc_port, cwd=folder / "mlp"))
        else:
            raise SystemExit(f"unknown peer {name!r}")
    return result


# What the operator writes for a ModelDeployment's defaults (spec.batching: maxBatchSize 32,
# maxLatencyMs 5.0): the configuration a user gets without tuning anything.
DEFAULT_MAX_BATCH = 32
DEFAULT_DELAY_US = 5000


def runtime_config(*, batching: bool) -> str:
    """The runtime's config for the MLP: the deployment defaults, or no dynamic batching at all."""
    config = mlp_config("mlp", max_batch_size=DEFAULT_MAX_BATCH, delay_us=DEFAULT_DELAY_US)
    if batching:
        return config
    return "\n".join(line for line in config.splitlines() if not line.startswith("dynamic_batching"))


def group_cpu_seconds(pgid: int) -> float:
    """CPU time (user + system) of every process in a process group: the server and its workers.

    Requests per CPU-second is the efficiency figure that stays meaningful when other work
    shares the machine; req/s alone moves with whatever else runs.
    """
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:
                total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def running(peer: Peer, timeout_s: float = 120.0) -> Iterator[int]:
    log = (WORK / f"{peer.name}.log").open("wb")
    env = {**os.environ, "OMP_NUM_THREADS": "1", **peer.env}
    process = subprocess.Popen(
        peer.command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=peer.cwd, start_new_session=True
    )
    try:
        deadline = time.monotonic() + timeout_s
        url = f"http://127.0.0.1:{peer.http_port}/v2/models/mlp/infer"
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{peer.name} exited; see {log.name}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.post(url, content=request_body(), headers=JSON, timeout=5).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{peer.name} did not answer within {timeout_s}s; see {log.name}")
            time.sleep(0.5)
        yield process.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        log.close()


JSON = {"content-type": "application/json"}
INPUT = np.random.default_rng(0).standard_normal((1, 64), dtype=np.float32)


def request_body() -> bytes:
    tensor = {"name": "INPUT__0", "shape": [1, 64], "datatype": "FP32", "data": INPUT.ravel().tolist()}
    return json.dumps({"inputs": [tensor]}).encode()


def check_answer(peer: Peer, model: torch.nn.Module) -> None:
    """Every peer must compute the same thing before its speed means anything."""
    url = f"http://127.0.0.1:{peer.http_port}/v2/models/mlp/infer"
    response = httpx.post(url, content=request_body(), headers=JSON, timeout=10)
    got = np.array(response.json()["outputs"][0]["data"], dtype=np.float32).reshape(1, 10)
    with torch.no_grad():
        want = model(torch.from_numpy(INPUT)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [[{body}]]
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %d %d %d %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
"""


def run_wrk(port: int, concurrency: int, seconds: float) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_SCRIPT.format(body=request_body().decode()))
    try:
        command = [
            "taskset",
            "-c",
            load_cpu(),
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{max(1, round(seconds))}s",
            "-s",
            f.name,
        ]
        out = subprocess.run(
            [*command, f"http://127.0.0.1:{port}/v2/models/mlp/infer"],
            check=True,
            capture_output=True,
            text=True,
            timeout=seconds + 60,
        ).stdout
    finally:
        os.unlink(f.name)
    fields = next(line for line in out.splitlines() if line.startswith("RESULT")).split()[1:]
    requests, duration_us, p50, p99, errors, non2xx = (int(v) for v in fields)
    return {
        "rps": requests / (duration_us / 1e6),
        "p50_ms": p50 / 1000,
        "p99_ms": p99 / 1000,
        "errors": errors + non2xx,
    }


def run_grpc(port: int, concurrency: int, seconds: float) -> dict[str, float]:
    command = ["taskset", "-c", load_cpu(), sys.executable, str(HERE / "_grpc_load.py")]
    out = subprocess.run(
        [*command, f"127.0.0.1:{port}", str(concurrency), str(seconds)],
        check=True,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    ).stdout
    doc = json.loads(out.strip().splitlines()[-1])
    return {
        "rps": doc["requests"] / doc["seconds"],
        "p50_ms": doc["p50_us"] / 1000,
        "p99_ms": doc["p99_us"] / 1000,
        "errors": doc["errors"],
    }


def forward_rate(model_path: Path, seconds: float) -> dict[str, float]:
    """In-process torch forwards/s at batch 1 and samples/s at batch 32: what no server can beat."""
    torch.set_num_threads(1)
    model = torch.jit.load(str(model_path)).eval()  # type: ignore[no-untyped-call]
    rates = {}
    for batch in (1, 32):
        x = torch.randn(batch, 64)
        with torch.inference_mode():
            for _ in range(200):
                model(x)
            count, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                for _ in range(100):
                    model(x)
                count += 100
        rates[f"batch{batch}_samples_per_s"] = count * batch / (time.perf_counter() - start)
    return rates


def machine() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with contextlib.suppress(OSError):
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split(":", 1)[1].strip()
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": mem,
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gpu": "none (CPU only)" if not torch.cuda.is_available() else torch.cuda.get_device_name(0),
        "loadavg_at_start": Path("/proc/loadavg").read_text().strip(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per point")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before each peer's points")
    parser.add_argument("--rest", default="1,8,64", help="REST concurrencies")
    parser.add_argument("--grpc", default="8,64", help="gRPC concurrencies")
    parser.add_argument(
        "--peers",
        default="modelplane,modelplane-nobatch,fastapi,kserve,mlserver,mlserver-pw0",
        help="comma-separated peers",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="repeats of every point; the median is reported"
    )
    parser.add_argument("--output", type=Path, default=HERE / "results" / "runtime_vs_peers.json")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: install the Debian package `wrk` (apt-get install wrk)")
    WORK.mkdir(parents=True, exist_ok=True)
    model = make_mlp(seed=0)
    model_path = save_torchscript(model, WORK / "model" / "model.pt")
    rest = [int(c) for c in args.rest.split(",") if c]
    grpc_points = [int(c) for c in args.grpc.split(",") if c]
    info = machine()
    print(json.dumps(info, indent=2))
    limit = forward_rate(model_path, min(args.duration, 5.0))
    print(f"torch in-process: {limit}", flush=True)

    peers = prepare(model_path, args.peers.split(","))
    plan = [("rest", c) for c in rest] + [("grpc", c) for c in grpc_points]
    raw: dict[str, dict[str, list[dict[str, float]]]] = {p.name: {} for p in peers}
    with contextlib.ExitStack() as stack:
        # All servers start first and idle; load goes to one at a time. Each round visits every
        # peer for every point, in a rotating order, so background noise hits all peers alike.
        pgids = {}
        for peer in peers:
            print(f"starting {peer.name}", flush=True)
            pgids[peer.name] = stack.enter_context(running(peer))
            check_answer(peer, model)
            run_wrk(peer.http_port, 8, args.warmup)
        for round_index in range(args.rounds):
            for protocol, c in plan:
                order = peers[round_index % len(peers) :] + peers[: round_index % len(peers)]
                for peer in order:
                    if protocol == "grpc" and peer.grpc_port is None:
                        continue
                    cpu_before = group_cpu_seconds(pgids[peer.name])
                    if protocol == "rest":
                        point = run_wrk(peer.http_port, c, args.duration)
                    else:
                        assert peer.grpc_port is not None
                        point = run_grpc(peer.grpc_port, c, args.duration)
                    served = point["rps"] * args.duration
                    cpu = group_cpu_seconds(pgids[peer.name]) - cpu_before
                    point["server_cpu_us_per_req"] = cpu / max(served, 1) * 1e6
                    raw[peer.name].setdefault(f"{protocol}_c{c}", []).append(point)
                    summary = json.dumps({k: round(v, 3) for k, v in point.items()})
                    print(
                        f"  round {round_index + 1} {peer.name:13} {protocol} c={c:<3} {summary}", flush=True
                    )
    results = {name: {p: median_point(runs) for p, runs in points.items()} for name, points in raw.items()}
    report(results, limit)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "machine": info,
                "command": " ".join(sys.argv),
                "commit": git_commit(),
                "peer_versions": peer_versions(args.peers.split(",")),
                "batching_targets": batching_verdicts(results),
                "torch_limit": limit,
                "results_median": results,
                "rounds": raw,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"raw results: {args.output}")


def git_commit() -> str:
    out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=HERE, check=False)
    dirty = subprocess.run(
        ["git", "status", "--porcelain"], capture_output=True, text=True, cwd=HERE, check=False
    )
    return out.stdout.strip() + (" (with working tree changes)" if dirty.stdout.strip() else "")


def peer_versions(peers: list[str]) -> dict[str, str]:
    """The versions of the peers' packages, from their virtualenvs (and this one's)."""
    from importlib.metadata import version

    found = {"modelplane": version("modelplane"), "torch": torch.__version__, "wrk": wrk_version()}
    for name, packages in PEER_PACKAGES.items():
        if not any(p.startswith(name) for p in peers):
            continue
        python = WORK / f"venv-{name}" / "bin" / "python"
        for package in packages:
            bare = package.split("<")[0].split("=")[0]
            out = subprocess.run(
                [str(python), "-c", f"from importlib.metadata import version; print(version({bare!r}))"],
                capture_output=True,
                text=True,
                check=False,
            )
            found[bare] = out.stdout.strip() or "unknown"
    return found


def wrk_version() -> str:
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    return (out.stdout + out.stderr).split("[")[0].strip() or "unknown"


def batching_verdicts(results: dict[str, dict[str, dict[str, float]]]) -> list[dict[str, object]]:
    """Issue 23's targets for batching that never costs a lone request, from one run's medians."""
    ours, off, kserve = (results.get(n, {}) for n in ("modelplane", "modelplane-nobatch", "kserve"))
    verdicts: list[dict[str, object]] = []

    def add(name: str, value: float, target: float, met: bool) -> None:
        verdicts.append({"target": name, "value": round(value, 3), "goal": target, "met": met})

    if "rest_c1" in ours and "rest_c1" in kserve:
        ratio = ours["rest_c1"]["rps"] / kserve["rest_c1"]["rps"]
        add("c=1 req/s vs KServe (x)", ratio, 2.5, ratio >= 2.5)
    if "rest_c1" in ours and "rest_c1" in off:
        gap = ours["rest_c1"]["p50_ms"] - off["rest_c1"]["p50_ms"]
        add("c=1 p50 minus batching off (ms)", gap, 0.1, gap <= 0.1)
    if "rest_c64" in ours and "rest_c64" in kserve:
        ratio = ours["rest_c64"]["rps"] / kserve["rest_c64"]["rps"]
        add("c=64 req/s vs KServe (x)", ratio, 5.0, ratio >= 5.0)
        p99 = ours["rest_c64"]["p99_ms"] / kserve["rest_c64"]["p99_ms"]
        add("c=64 p99 vs KServe's (x)", p99, 0.25, p99 <= 0.25)
    return verdicts


def median_point(runs: list[dict[str, float]]) -> dict[str, float]:
    """The run with the median req/s (its latencies and CPU figure travel with it)."""
    ordered = sorted(runs, key=lambda r: r["rps"])
    return ordered[len(ordered) // 2]


def report(results: dict[str, dict[str, dict[str, float]]], limit: dict[str, float]) -> None:
    points = sorted(
        {p for r in results.values() for p in r},
        key=lambda p: (p.split("_")[0] != "rest", int(p.split("_c")[1])),
    )
    print(f"\n{'peer':14}" + "".join(f"{p:>34}" for p in points))
    for name, r in results.items():
        cells = []
        for p in points:
            v = r.get(p)
            cells.append(
                f"{v['rps']:6.0f}/s {v['p50_ms']:5.1f}/{v['p99_ms']:6.1f}ms "
                f"{v['server_cpu_us_per_req']:5.0f}us"
                if v
                else ""
            )
        print(f"{name:14}" + "".join(f"{c:>34}" for c in cells))
    print("(median of the rounds by req/s: req/s, p50/p99 latency, server CPU per request)")
    ours = results.get("modelplane", {})
    print(
        f"\ntorch in-process limit: {limit['batch1_samples_per_s']:.0f} forwards/s at batch 1, "
        f"{limit['batch32_samples_per_s']:.0f} samples/s at batch 32"
    )
    for other in results:
        if other == "modelplane":
            continue
        for p in points:
            if p in ours and p in results[other] and results[other][p]["rps"] > 0:
                ratio = ours[p]["rps"] / results[other][p]["rps"]
                cpu = results[other][p]["server_cpu_us_per_req"] / max(ours[p]["server_cpu_us_per_req"], 1e-9)
                print(
                    f"modelplane / {other:13} {p:10} req/s {ratio:5.2f}x   "
                    f"requests per CPU-second {cpu:5.2f}x"
                )
    for verdict in batching_verdicts(results):
        state = "met   " if verdict["met"] else "MISSED"
        print(f"  {state} {verdict['target']:34} {verdict['value']} (goal {verdict['goal']})")
    if "fastapi" in results and "rest_c1" in ours:
        print(
            f"REST c=1 p50: modelplane {ours['rest_c1']['p50_ms']:.3f} ms vs bare FastAPI "
            f"{results['fastapi']['rest_c1']['p50_ms']:.3f} ms"
        )


if __name__ == "__main__":
    main()
