"""The README's "On a cluster, by hand" section, run exactly as written on the test cluster.

The commands between the README's ``by-hand`` markers run as one bash script (``set -euo
pipefail``), in a scratch folder that sees the repository's ``crds/`` and ``deploy/``, with the
test cluster's ``kubectl`` and this environment's ``modelplane`` on ``PATH``: the README cannot
drift from what works. The Helm path has its own test (test_chart.py).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelplane.testing.cluster import Cluster

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
#: What the section creates in the cluster, gone before (a fresh cluster) and after the test.
NAMESPACES = ("models", "modelplane-system")


def by_hand_script(readme: str) -> str:
    """The bash between the ``by-hand`` markers, as one script."""
    section = re.search(r"<!-- by-hand:begin -->(.*?)<!-- by-hand:end -->", readme, re.DOTALL)
    assert section is not None, "README.md lost its by-hand markers"
    blocks = re.findall(r"```bash\n(.*?)```", section.group(1), re.DOTALL)
    assert blocks, "no bash block between the by-hand markers"
    return "\n".join(blocks)


def test_the_script_is_the_readmes_commands_in_order() -> None:
    script = by_hand_script(README.read_text())
    steps = [
        "kubectl apply --server-side -f crds/",
        "kubectl apply -f deploy/operator/peering.yaml",
        "kubectl apply -f deploy/operator/rbac.yaml",
        "modelplane registry serve",
        "modelplane registry versions create iris --artifact model.pt2",
        "kubectl create secret generic modelplane-artifact-token",
        "modelplane operator",
        "kubectl apply -n models -f deploy/examples/iris.yaml",
        "modelplane router --discovery kubernetes",
        "/ns/models/v2/models/iris/infer",
    ]
    positions = [script.find(step) for step in steps]
    assert -1 not in positions, dict(zip(steps, positions, strict=True))
    assert positions == sorted(positions), "the README's steps are out of order"


def _fresh(cluster: Cluster) -> None:
    # A ModelDeployment left by an interrupted run keeps its finalizer with no operator to remove it.
    listed = cluster.kubectl("get", "modeldeployments", "-n", "models", "-o", "json", check=False)
    left = json.loads(listed.stdout)["items"] if listed.returncode == 0 else []  # no CRD yet: none
    for item in left:
        cluster.kubectl(
            "patch", "modeldeployment", item["metadata"]["name"], "-n", "models",
            "--type=merge", "-p", '{"metadata": {"finalizers": null}}',
        )  # fmt: skip
    for namespace in NAMESPACES:
        cluster.kubectl("delete", "namespace", namespace, "--ignore-not-found", "--wait=true", timeout=180)
    cluster.kubectl(
        "delete",
        "-f",
        str(REPO / "deploy" / "operator" / "rbac.yaml"),
        "-f",
        str(REPO / "deploy" / "router" / "rbac.yaml"),
        "--ignore-not-found",
        check=False,
    )


@pytest.fixture
def workdir(cluster: Cluster, tmp_path: Path) -> Iterator[Path]:
    """A scratch folder with the repository's crds/ and deploy/, on a cluster without the section's
    namespaces (as a user's fresh cluster); they are removed again afterwards."""
    for name in ("crds", "deploy"):
        (tmp_path / name).symlink_to(REPO / name)
    _fresh(cluster)
    try:
        yield tmp_path
    finally:
        _fresh(cluster)


def test_the_readme_by_hand_path_ends_in_an_answer_through_the_router(
    cluster: Cluster, workdir: Path
) -> None:
    script = by_hand_script(README.read_text())
    tools = [str(Path(sys.executable).parent), str(Path(cluster.kubectl_path).parent), "/usr/bin", "/bin"]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MODELPLANE_")},
        "PATH": os.pathsep.join(tools),
        "KUBECONFIG": str(cluster.kubeconfig),
    }
    process = subprocess.Popen(
        ["bash", "-c", "set -euo pipefail\n" + script],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # the background processes share its group: stopped together below
    )
    try:
        stdout, stderr = process.communicate(timeout=600)
    finally:
        # Deleted while the operator still runs, so it removes its finalizer (the registry's
        # records of what serves); then the registry, the operator and the router stop.
        cluster.kubectl("delete", "modeldeployments", "--all", "-n", "models", "--timeout=120s", check=False)
        os.killpg(process.pid, signal.SIGTERM)
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(workdir.glob("*.log")))
    assert process.returncode == 0, f"stdout:\n{stdout}\nstderr:\n{stderr}\n{logs}"
    answer = json.loads(stdout.strip().splitlines()[-1])
    assert answer["model_name"] == "iris"
    (output,) = answer["outputs"]
    assert output["shape"] == [1, 3]
    assert "iris" in stdout  # `kubectl get modeldeployments` printed its row
