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

import sys
from pathlib import Path

from modelplane.testing.compiled import compiled_env
from modelplane.testing.router import RouterProcess, write_routes
from modelplane.testing.runtime import RuntimeProcess

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _ab import REPO, ab_arguments, ab_workspace, paired_rounds, report
from runtime_vs_peers import run_wrk


def main() -> None:
    parser = ab_arguments(__doc__, "router", duration=5.0)
    for side in ("old", "new"):
        parser.add_argument(
            f"--{side}-build",
            choices=("compiled", "source"),
            default="compiled",
            help=f"the {side} router as the control image ships it (mypyc, see setup.py) or as source",
        )
    args = parser.parse_args()
    with ab_workspace(args.base) as (stack, work, base_tree):
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
        sides = {}
        for name, router in routers.items():
            assert router.process is not None
            sides[name] = (router.port, router.process.pid)
        runs = paired_rounds(sides, args.concurrency, args.duration, args.rounds)
    report(runs, f"c={args.concurrency}, {args.rounds} rounds of {args.duration:g}s")


def package_env(tree: Path, build: str) -> dict[str, str]:
    """PYTHONPATH for a router run from ``tree``, compiled (built once, cached) or as source."""
    if build == "compiled":
        print(f"compiled build of {tree} (a minute the first time)...", flush=True)
        return compiled_env(tree)
    return {"PYTHONPATH": str(tree / "src")}


if __name__ == "__main__":
    main()
