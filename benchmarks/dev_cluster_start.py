"""Dev cluster start-up: warm start (binaries cached) to all nodes Ready, repeated; optional cold build.

There is no peer to run beside it (kind/k3d need container runtimes this machine does not have), so
it reports raw seconds per repeat and their spread. ``--cold`` first builds into an empty cache
directory (a full cold build from the module proxy: many minutes).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _cli(*args: str, env: dict[str, str] | None = None) -> float:
    start = time.monotonic()
    subprocess.run(
        [str(Path(sys.executable).parent / "modelplane"), *args], check=True, env=env, capture_output=True
    )
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cold", action="store_true", help="also time a build into an empty cache")
    args = parser.parse_args()
    if args.cold:
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "MODELPLANE_CACHE_DIR": cache}
            seconds = _cli("dev-cluster", "build", env=env)
            print(
                f"cold build (etcd, kube-apiserver, controller-manager, scheduler, kubectl): {seconds:.0f}s"
            )
    print(f"warm build check (all cached): {_cli('dev-cluster', 'build'):.2f}s")
    times = []
    for i in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            state = str(Path(tmp) / "cluster")
            elapsed = _cli("dev-cluster", "up", "--state-dir", state)
            _cli("dev-cluster", "down", "--state-dir", state)
        times.append(elapsed)
        print(f"warm start {i + 1}: {elapsed:.1f}s to all nodes Ready")
    print(f"warm start: median {statistics.median(times):.1f}s, min {min(times):.1f}s, max {max(times):.1f}s")


if __name__ == "__main__":
    main()
