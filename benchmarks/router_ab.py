"""Router A/B: the router at a git revision against the working tree's, in front of one runtime.

For changes to the router's data path, whose effect (a few tens of microseconds of CPU per
request) is smaller than a shared machine's drift between two runs of ``router_overhead.py``. Both
routers run at once, each with a static route to the same ``modelplane runtime`` (the reference
MLP); wrk (pinned to the last CPU) loads one at a time, alternating which goes first in each round,
so a noisy spell hits both. Reported: the median over rounds of each router's CPU time per 1,000
requests (user and system, from ``/proc``), req/s and p50, and the new/old ratios.

    .venv/bin/python benchmarks/router_ab.py --base c3c4d93 --concurrency 64 --rounds 6

Both routers are the compiled build the control image ships (``setup.py``; built once per source
state and cached) unless ``--old-build source`` / ``--new-build source``; the same revision on both
sides with different builds measures what compiling gives:

    .venv/bin/python benchmarks/router_ab.py --base HEAD --old-build source --new-build compiled
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from modelplane.local.processes import cpu_times
from modelplane.testing.compiled import compiled_env
from modelplane.testing.router import RouterProcess, write_routes
from modelplane.testing.runtime import RuntimeProcess, make_mlp, mlp_config, write_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runtime_vs_peers import machine, run_wrk

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", required=True, help="git revision of the old router")
    parser.add_argument("--concurrency", type=int, default=64, help="wrk connections")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=6)
    for side in ("old", "new"):
        parser.add_argument(
            f"--{side}-build",
            choices=("compiled", "source"),
            default="compiled",
            help=f"the {side} router as the control image ships it (mypyc, see setup.py) or as source",
        )
    args = parser.parse_args()
    print(json.dumps(machine(), indent=2), flush=True)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        base_tree = work / "base"
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(base_tree), args.base],
            check=True,
        )
        stack.callback(
            subprocess.run,
            ["git", "-C", str(REPO), "worktree", "remove", "--force", str(base_tree)],
            check=False,
        )
        write_model(work / "models", "mlp", make_mlp(0), mlp_config("mlp"))
        runtime = stack.enter_context(RuntimeProcess(work / "models"))
        routes = write_routes(
            work / "routes.yaml",
            {"mlp": [{"version": "1", "http": runtime.http_url, "grpc": runtime.grpc_address}]},
        )
        # Each tree's package comes first on the path, ahead of the installed working tree.
        routers = {
            side: RouterProcess(log_path=work / f"{side}.log", routes=routes, env=package_env(tree, build))
            for side, tree, build in (("old", base_tree, args.old_build), ("new", REPO, args.new_build))
        }
        for router in routers.values():
            router.start()
            stack.callback(router.stop)
            run_wrk(router.port, 8, 2.0)  # warm up
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in routers}
        for round_index in range(args.rounds):
            order = list(routers) if round_index % 2 == 0 else list(reversed(routers))
            for name in order:
                router = routers[name]
                assert router.process is not None
                user0, sys0 = cpu_times(router.process.pid)
                point = run_wrk(router.port, args.concurrency, args.duration)
                user1, sys1 = cpu_times(router.process.pid)
                thousands = max(point["rps"] * args.duration / 1000, 1e-9)
                point["user_s_per_1k"] = (user1 - user0) / thousands
                point["sys_s_per_1k"] = (sys1 - sys0) / thousands
                runs[name].append(point)
                print(f"  round {round_index + 1} {name} {json.dumps(point)}", flush=True)
    keys = ("user_s_per_1k", "sys_s_per_1k", "rps", "p50_ms")
    medians = {
        name: {k: statistics.median(p[k] for p in points) for k in keys} for name, points in runs.items()
    }
    print(f"\nc={args.concurrency}, {args.rounds} rounds of {args.duration:g}s, median per router:")
    for name, m in medians.items():
        cpu = m["user_s_per_1k"] + m["sys_s_per_1k"]
        print(
            f"  {name}: CPU {cpu:.3f} s per 1,000 requests (user {m['user_s_per_1k']:.3f}, "
            f"system {m['sys_s_per_1k']:.3f}), {m['rps']:.0f} req/s, p50 {m['p50_ms']:.3f} ms"
        )
    old, new = medians["old"], medians["new"]
    cpu_ratio = (new["user_s_per_1k"] + new["sys_s_per_1k"]) / (old["user_s_per_1k"] + old["sys_s_per_1k"])
    print(
        f"  new/old: CPU per request {cpu_ratio:.2f}x, req/s {new['rps'] / old['rps']:.2f}x, "
        f"p50 {new['p50_ms'] / old['p50_ms']:.2f}x"
    )


def package_env(tree: Path, build: str) -> dict[str, str]:
    """PYTHONPATH for a router run from ``tree``, compiled (built once, cached) or as source."""
    if build == "compiled":
        print(f"compiled build of {tree} (a minute the first time)...", flush=True)
        return compiled_env(tree)
    return {"PYTHONPATH": str(tree / "src")}


if __name__ == "__main__":
    main()
