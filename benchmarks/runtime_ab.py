"""Runtime A/B: the runtime at a git revision against the working tree's, both loaded directly.

For changes to the runtime's HTTP path, whose effect is smaller than a shared machine's drift
between two runs of ``runtime_vs_peers.py``. Both runtimes serve the reference MLP from the same
model repository at once; wrk (pinned to the last CPU) loads one at a time, alternating which goes
first in each round (``_ab.py``). Reported: the median over rounds of each runtime's CPU time per
1,000 requests (all its threads: the event loop and the model's worker), req/s and p50, and the
new/old ratios.

    .venv/bin/python benchmarks/runtime_ab.py --base e321eef --concurrency 1 --rounds 6
"""

from __future__ import annotations

import sys
from pathlib import Path

from modelplane.testing.runtime import RuntimeProcess

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _ab import ab_arguments, ab_workspace, paired_rounds, report
from runtime_vs_peers import run_wrk


def main() -> None:
    parser = ab_arguments(__doc__, "runtime", duration=4.0)
    args = parser.parse_args()
    with ab_workspace(args.base) as (stack, work, base_tree):
        # The old tree's package comes first on the path, ahead of the installed working tree.
        runtimes = {
            "old": stack.enter_context(
                RuntimeProcess(work / "models", env={"PYTHONPATH": str(base_tree / "src")})
            ),
            "new": stack.enter_context(RuntimeProcess(work / "models")),
        }
        sides = {}
        for name, runtime in runtimes.items():
            assert runtime.process is not None
            run_wrk(runtime.http_port, 8, 2.0)  # warm up
            sides[name] = (runtime.http_port, runtime.process.pid)
        runs = paired_rounds(sides, args.concurrency, args.duration, args.rounds)
    report(runs, f"c={args.concurrency}, {args.rounds} rounds of {args.duration:g}s")


if __name__ == "__main__":
    main()
