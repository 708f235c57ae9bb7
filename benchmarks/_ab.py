"""What the A/B benchmarks share: a git revision's tree, and paired rounds of wrk over two servers.

A change to a request path moves its cost by tens of microseconds per request, less than a shared
machine drifts between two runs. So both sides run at once and wrk (pinned to the last CPU) loads
one at a time, alternating which goes first in each round, so a noisy spell hits both. Reported:
the median over rounds of each side's CPU time per 1,000 requests (user and system, from
``/proc``), req/s and p50, and the new/old ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from modelplane.local.processes import cpu_times
from modelplane.testing.runtime import make_mlp, mlp_config, write_model
from runtime_vs_peers import machine, run_wrk

REPO = Path(__file__).resolve().parent.parent


def ab_arguments(doc: str | None, what: str, duration: float) -> argparse.ArgumentParser:
    """The options every A/B script takes: the old side's revision, and how to load both."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help=f"git revision of the old {what}")
    parser.add_argument("--concurrency", type=int, default=64, help="wrk connections")
    parser.add_argument("--duration", type=float, default=duration, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=6)
    return parser


@contextlib.contextmanager
def revision_tree(revision: str, work: Path) -> Iterator[Path]:
    """A detached work tree of ``revision`` under ``work``, removed afterwards."""
    tree = work / "base"
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(tree), revision], check=True
    )
    try:
        yield tree
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False)


@contextlib.contextmanager
def ab_workspace(base: str) -> Iterator[tuple[contextlib.ExitStack[bool | None], Path, Path]]:
    """Print the machine; yield an exit stack for the servers, a scratch folder whose ``models``
    holds the reference MLP, and the tree of revision ``base``; all removed afterwards."""
    print(json.dumps(machine(), indent=2), flush=True)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        base_tree = stack.enter_context(revision_tree(base, work))
        write_model(work / "models", "mlp", make_mlp(0), mlp_config("mlp"))
        yield stack, work, base_tree


def paired_rounds(
    sides: dict[str, tuple[int, int]], concurrency: int, duration: float, rounds: int
) -> dict[str, list[dict[str, float]]]:
    """wrk against each side (name: (port, pid)) per round, the order alternating; the points."""
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
    for round_index in range(rounds):
        order = list(sides) if round_index % 2 == 0 else list(reversed(sides))
        for name in order:
            port, pid = sides[name]
            user0, sys0 = cpu_times(pid)
            point = run_wrk(port, concurrency, duration)
            user1, sys1 = cpu_times(pid)
            thousands = max(point["rps"] * duration / 1000, 1e-9)
            point["user_s_per_1k"] = (user1 - user0) / thousands
            point["sys_s_per_1k"] = (sys1 - sys0) / thousands
            runs[name].append(point)
            print(f"  round {round_index + 1} {name} {json.dumps(point)}", flush=True)
    return runs


def report(runs: dict[str, list[dict[str, float]]], heading: str) -> None:
    """Print each side's medians and the new/old ratios."""
    keys = ("user_s_per_1k", "sys_s_per_1k", "rps", "p50_ms")
    medians = {
        name: {k: statistics.median(p[k] for p in points) for k in keys} for name, points in runs.items()
    }
    print(f"\n{heading}, median per side:")
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
