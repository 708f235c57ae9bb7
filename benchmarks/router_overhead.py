"""Router overhead: one runtime reached directly, through ``modelplane router`` and through nginx.

One ``modelplane runtime`` serves the reference TorchScript MLP. In front of it, side by side in one
run: the router (``--discovery static``, one route to that runtime) and nginx as a plain reverse
proxy with keep-alive to the same backend (Debian package ``nginx-light`` or ``nginx``; skipped
with a message when not installed). REST load comes from ``wrk`` pinned to the last CPU, at each
concurrency, in rotating order over many short rounds. Reported per point: req/s and p50/p99 of
the median round; then, for each proxy, its added p50/p99 and throughput ratio against the direct
run of the same round (the runs of one round are back to back, so a noisy spell hits both sides of
a pair), as the median over rounds with the interquartile range; and the proxy's CPU seconds per
1,000 requests (from ``/proc``), the figure that carries to machines where the proxy and the
runtime do not share cores. Last, each of issue 8's targets with its figure, met or missed.

Short rounds, many of them: a shared machine's speed drifts over minutes (the direct runs of one
long run have differed by 40 % between its first and last round), and a pair of windows a few
seconds apart sees the same speed; the median over many pairs then hardly moves between runs.

With ``--relay`` a third reference joins: ``_relay.py``, a byte relay in Python on uvloop that
parses nothing. Its CPU per request is the floor of any data plane written in Python; the router's
CPU above it is the work of the router's own request path. The CPU figures are split into user and
system time: the kernel's share (the reads, writes and wake-ups) is the same for every proxy.

With ``--isolate`` the proxies (router, nginx) get the first CPU to themselves and the runtime
shares the last one with wrk, in every run, direct included: the layout of a serving cluster, where
the router runs on other cores than the model. Without it everything shares all CPUs, and on a
small machine the proxy's CPU comes straight out of the runtime's.

    .venv/bin/python benchmarks/router_overhead.py --duration 4 --rounds 9

The router is the build the control image ships, its request path compiled by mypyc (``setup.py``;
built once per source state and cached); ``--build source`` runs the interpreted source instead.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from modelplane.local.processes import cpu_times, free_port
from modelplane.testing.compiled import compiled_env
from modelplane.testing.router import RouterProcess, write_routes
from modelplane.testing.runtime import RuntimeProcess, make_mlp, mlp_config, write_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runtime_vs_peers import machine, request_body, run_wrk

HERE = Path(__file__).resolve().parent

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    upstream backend {{ server {backend}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 64m;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def nginx_binary() -> str | None:
    for candidate in ("nginx", "/usr/sbin/nginx"):
        found = shutil.which(candidate)
        if found:
            return found
    return None


@contextlib.contextmanager
def running_nginx(binary: str, backend: str, work: Path) -> Iterator[tuple[int, int]]:
    """nginx in the foreground; yields its port and the master's pid."""
    port = free_port()
    work.mkdir(parents=True, exist_ok=True)
    conf = work / "nginx.conf"
    conf.write_text(NGINX_CONF.format(work=work, backend=backend, port=port))
    process = subprocess.Popen([binary, "-c", str(conf), "-p", str(work)], stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        else:
            raise SystemExit(f"nginx did not start: {(work / 'nginx-error.log').read_text(errors='replace')}")
        yield port, process.pid
    finally:
        process.terminate()
        process.wait(10)


def tree_pids(pid: int) -> list[int]:
    """A process and its descendants (nginx's master and worker), from ``/proc``."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            pending.extend(
                int(c) for c in Path(f"/proc/{current}/task/{current}/children").read_text().split()
            )
    return found


def pin(pid: int, cpu: str) -> None:
    """Pin a process, its threads and its children to ``cpu``."""
    for each in tree_pids(pid):
        subprocess.run(["taskset", "-a", "-pc", cpu, str(each)], check=True, capture_output=True)


def tree_cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of a process and its children (nginx's master and worker)."""
    user = system = 0.0
    for each in tree_pids(pid):
        with contextlib.suppress(OSError):
            u, s = cpu_times(each)
            user, system = user + u, system + s
    return user, system


@contextlib.contextmanager
def running_relay(backend_port: int) -> Iterator[tuple[int, int]]:
    """``_relay.py`` in front of the backend; yields its port and pid."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(HERE / "_relay.py"), str(port), "127.0.0.1", str(backend_port)]
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit("the Python relay (benchmarks/_relay.py) did not start")
            time.sleep(0.1)
        yield port, process.pid
    finally:
        process.terminate()
        process.wait(10)


def check(port: int) -> None:
    response = httpx.post(
        f"http://127.0.0.1:{port}/v2/models/mlp/infer",
        content=request_body(),
        headers={"content-type": "application/json"},
        timeout=10,
    )
    response.raise_for_status()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per point and round")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load on each target first")
    parser.add_argument("--concurrency", default="1,16,64", help="comma-separated wrk connections")
    parser.add_argument(
        "--rounds", type=int, default=9, help="repeats of every point; the median is reported"
    )
    parser.add_argument(
        "--relay",
        action="store_true",
        help="also measure a byte relay in Python (the floor of a Python data plane)",
    )
    parser.add_argument(
        "--isolate",
        action="store_true",
        help="pin the proxies to the first CPU and the runtime to the last one (with wrk)",
    )
    parser.add_argument(
        "--build",
        choices=("compiled", "source"),
        default="compiled",
        help="the router as the control image ships it (request path compiled by mypyc) or as source",
    )
    parser.add_argument("--output", type=Path, default=None, help="raw results (JSON)")
    args = parser.parse_args()
    suffix = "_isolated" if args.isolate else ""
    output = args.output or HERE / "results" / f"router_overhead{suffix}.json"
    if args.isolate and len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("--isolate needs at least 2 CPUs")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: install the Debian package `wrk` (apt-get install wrk)")
    levels = [int(c) for c in args.concurrency.split(",") if c]
    info = machine()
    print(json.dumps(info, indent=2), flush=True)
    nginx = nginx_binary()
    if nginx is None:
        print(
            "nginx is not installed: skipping the nginx reference (apt-get install nginx-light)", flush=True
        )

    if args.build == "compiled":
        print("compiled build of the router (a minute the first time)...", flush=True)
    router_env = compiled_env() if args.build == "compiled" else {}
    info["router_build"] = args.build

    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        write_model(work / "models", "mlp", make_mlp(0), mlp_config("mlp"))
        runtime = stack.enter_context(RuntimeProcess(work / "models"))
        routes = write_routes(
            work / "routes.yaml",
            {"mlp": [{"version": "1", "http": runtime.http_url, "grpc": runtime.grpc_address}]},
        )
        router = RouterProcess(log_path=work / "router.log", routes=routes, env=router_env).start()
        stack.callback(router.stop)
        targets = {"direct": runtime.http_port, "router": router.port}
        assert router.process is not None
        cpu_of = {"router": functools.partial(tree_cpu_times, router.process.pid)}
        pids = {"router": router.process.pid}
        if nginx is not None:
            port, pid = stack.enter_context(running_nginx(nginx, runtime.http_address, work / "nginx"))
            targets["nginx"] = port
            cpu_of["nginx"] = functools.partial(tree_cpu_times, pid)
            pids["nginx"] = pid
        if args.relay:
            port, pid = stack.enter_context(running_relay(runtime.http_port))
            targets["relay"] = port
            cpu_of["relay"] = functools.partial(tree_cpu_times, pid)
            pids["relay"] = pid
        if args.isolate:
            first, last = min(os.sched_getaffinity(0)), max(os.sched_getaffinity(0))
            assert runtime.process is not None
            pin(runtime.process.pid, str(last))
            for pid in pids.values():
                pin(pid, str(first))
        for port in targets.values():
            check(port)
            run_wrk(port, 8, args.warmup)
        names = list(targets)
        raw: dict[str, dict[int, list[dict[str, float]]]] = {n: {c: [] for c in levels} for n in names}
        for round_index in range(args.rounds):
            for c in levels:
                order = names[round_index % len(names) :] + names[: round_index % len(names)]
                for name in order:
                    proxy_cpu = cpu_of.get(name)
                    cpu_before = proxy_cpu() if proxy_cpu else (0.0, 0.0)
                    point = run_wrk(targets[name], c, args.duration)
                    if proxy_cpu is not None:
                        (user_now, system_now), (user_then, system_then) = proxy_cpu(), cpu_before
                        user, system = user_now - user_then, system_now - system_then
                        per_1k = 1000 / max(point["rps"] * args.duration, 1)
                        point["proxy_cpu_s_per_1k"] = (user + system) * per_1k
                        point["proxy_user_s_per_1k"] = user * per_1k
                    raw[name][c].append(point)
                    print(f"  round {round_index + 1} {name:7} c={c:<3} {json.dumps(point)}", flush=True)
    figures, verdicts = report(raw, levels)
    results = {n: {c: median(runs) for c, runs in points.items()} for n, points in raw.items()}
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(
        json.dumps(
            {
                "machine": info,
                "command": " ".join(sys.argv),
                "isolated": args.isolate,
                "paired_median": figures,
                "targets": [{"target": t, "figure": figure, "met": met} for t, figure, met in verdicts],
                "results_median": results,
                "rounds": raw,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"raw results: {os.path.relpath(output)}")


def median(runs: list[dict[str, float]]) -> dict[str, float]:
    """The run with the median p50 (its other figures travel with it)."""
    return sorted(runs, key=lambda r: r["p50_ms"])[len(runs) // 2]


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """First quartile, median and third quartile (linear interpolation between ranks)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")

    def at(fraction: float) -> float:
        position = fraction * (len(ordered) - 1)
        low = int(position)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

    return at(0.25), at(0.5), at(0.75)


def paired(raw: dict[str, dict[int, list[dict[str, float]]]], name: str, level: int) -> dict[str, float]:
    """Each round's proxy point against the same round's direct point (run back to back), then
    the median over rounds (and the quartiles, ``*_q1``/``*_q3``): a noisy neighbour that slows
    one round slows both sides of its pair."""
    pairs = list(zip(raw[name][level], raw["direct"][level], strict=True))
    series = {
        "added_p50_ms": [p["p50_ms"] - d["p50_ms"] for p, d in pairs],
        "added_p99_ms": [p["p99_ms"] - d["p99_ms"] for p, d in pairs],
        "throughput_ratio": [p["rps"] / max(d["rps"], 1e-9) for p, d in pairs],
    }
    for key in ("proxy_cpu_s_per_1k", "proxy_user_s_per_1k"):
        values = [p[key] for p, _ in pairs if key in p]
        if values:
            series[key] = values
    figures = {}
    for key, values in series.items():
        figures[key + "_q1"], figures[key], figures[key + "_q3"] = quartiles(values)
    return figures


# Issue 8's targets for the router: added p50 at a concurrency, throughput against direct at c=64,
# and added latency no worse than 1.5x nginx's at every concurrency measured.
ADDED_P50_LIMIT_MS = {1: 0.5, 16: 1.0}
THROUGHPUT_LEVEL, THROUGHPUT_FLOOR = 64, 0.9
NGINX_FACTOR = 1.5


def within_nginx_factor(router_added: float, nginx_added: float, factor: float = NGINX_FACTOR) -> bool:
    """The router's added latency is no worse than ``factor`` times nginx's.

    For a positive nginx figure that is ``router <= factor * nginx``. Where nginx's added latency
    is zero or negative (the proxy smoothed the backend's load and the median got faster), the same
    margin is read as a difference: the router may add at most ``(factor - 1) * |nginx|`` more
    than nginx, so it has to keep at least half of nginx's gain at 1.5x.
    """
    return router_added - nginx_added <= (factor - 1) * abs(nginx_added)


def target_verdicts(figures: dict[str, dict[int, dict[str, float]]]) -> list[tuple[str, str, bool]]:
    """Each target issue 8 sets for the router: (target, the figure, met), for the levels measured."""
    router = figures.get("router", {})
    nginx = figures.get("nginx", {})
    verdicts = []
    for level, limit in ADDED_P50_LIMIT_MS.items():
        if level in router:
            added = router[level]["added_p50_ms"]
            verdicts.append((f"c={level} added p50 <= {limit:g} ms", f"{added:+.3f} ms", added <= limit))
    if THROUGHPUT_LEVEL in router:
        ratio = router[THROUGHPUT_LEVEL]["throughput_ratio"]
        verdicts.append(
            (
                f"c={THROUGHPUT_LEVEL} throughput >= {THROUGHPUT_FLOOR:g}x direct",
                f"{ratio:.2f}x",
                ratio >= THROUGHPUT_FLOOR,
            )
        )
    for level in sorted(set(router) & set(nginx)):
        ours, theirs = router[level]["added_p50_ms"], nginx[level]["added_p50_ms"]
        verdicts.append(
            (
                f"c={level} added p50 within {NGINX_FACTOR:g}x nginx's",
                f"{ours:+.3f} vs {theirs:+.3f} ms",
                within_nginx_factor(ours, theirs),
            )
        )
    return verdicts


def report(
    raw: dict[str, dict[int, list[dict[str, float]]]], levels: list[int]
) -> tuple[dict[str, dict[int, dict[str, float]]], list[tuple[str, str, bool]]]:
    """Print the medians, the paired figures and the verdicts; returns the paired figures per
    proxy and level, and the verdicts."""
    results = {n: {c: median(runs) for c, runs in points.items()} for n, points in raw.items()}
    print(f"\n{'target':8}" + "".join(f"{'c=' + str(c):>32}" for c in levels))
    for name, points in results.items():
        cells = [
            f"{p['rps']:6.0f}/s {p['p50_ms']:6.3f}/{p['p99_ms']:7.3f}ms" for p in (points[c] for c in levels)
        ]
        print(f"{name:8}" + "".join(f"{cell:>32}" for cell in cells))
    print("(median round by p50: req/s, p50/p99 latency)\n")
    figures = {n: {c: paired(raw, n, c) for c in levels} for n in raw if n != "direct"}
    for name, by_level in figures.items():
        for c, f in by_level.items():
            line = (
                f"{name:6} c={c:<3} added p50 {f['added_p50_ms']:+7.3f} ms "
                f"[{f['added_p50_ms_q1']:+.3f}, {f['added_p50_ms_q3']:+.3f}]  "
                f"added p99 {f['added_p99_ms']:+7.3f} ms  "
                f"throughput {f['throughput_ratio']:5.2f}x direct "
                f"[{f['throughput_ratio_q1']:.2f}, {f['throughput_ratio_q3']:.2f}]"
            )
            if "proxy_cpu_s_per_1k" in f:
                line += f"  {name} CPU {f['proxy_cpu_s_per_1k']:.3f} s per 1,000 requests"
                if "proxy_user_s_per_1k" in f:
                    line += f" (user {f['proxy_user_s_per_1k']:.3f})"
            print(line)
    print("(each round against the same round's direct run: median over rounds [quartiles])\n")
    verdicts = target_verdicts(figures)
    for target, figure, met in verdicts:
        print(f"  {'met   ' if met else 'MISSED'} {target:36} {figure}")
    print("(issue 8's targets for the router, on the medians above)")
    return figures, verdicts


if __name__ == "__main__":
    main()
