"""The operator under faults: SIGKILLed at random moments while ModelDeployments churn.

Pods are placed on the dev cluster's kwok nodes (kwok marks them Running and Ready), so 20
ModelDeployments cost only API objects, never serving processes: the test exercises the
operator's reconciliation, not the runtime.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelplane.registry_client.client import RegistryClientError
from modelplane.testing.cluster import Cluster, wait_for
from modelplane.testing.modeldeployments import get_md, md_manifest, wait_ready
from modelplane.testing.operator import MLP_SIGNATURE, OperatorProcess
from modelplane.testing.registry import ADMIN_TOKEN, RegistryProcess
from modelplane.testing.serving_fixtures import REPO

pytestmark = pytest.mark.e2e

KWOK_PLACEMENT = {
    "nodeSelector": {"type": "kwok"},
    "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
}
CHILD_KINDS = ("Deployment", "Service", "PodDisruptionBudget")

OperatorFactory = Callable[..., OperatorProcess]


def kwok_spec(version: int, replicas: int) -> dict[str, Any]:
    """A ModelDeployment spec whose pods land on kwok nodes (one fake GPU each)."""
    return {
        "model": {"name": "iris", "version": version},
        "replicas": replicas,
        "resources": {"gpu": {"count": 1}},
        "scheduling": KWOK_PLACEMENT,
        "autoscaling": {"mode": "none", "maxReplicas": 4},
    }


@pytest.fixture
def operators(
    cluster: Cluster,
    crds: None,
    model_registry: tuple[RegistryProcess, Any],
    tmp_path: Path,
) -> Iterator[OperatorFactory]:
    """Makes operator processes against the test cluster; all are stopped after the test."""
    server, _ = model_registry
    made: list[OperatorProcess] = []

    def make(*extra: str, standalone: bool = True, kubeconfig: Path | None = None) -> OperatorProcess:
        process = OperatorProcess(
            kubeconfig=kubeconfig or cluster.kubeconfig,
            registry_url=server.url,
            registry_token=ADMIN_TOKEN,
            log_path=tmp_path / f"operator-{len(made)}.log",
            extra_args=list(extra),
            standalone=standalone,
        )
        made.append(process)
        return process

    try:
        yield make
    finally:
        for process in made:
            process.stop()
        for process in made:
            print(f"\n----- {process.log_path.name} -----\n{process.log_tail(3000)}")


@pytest.fixture
def namespace(operators: OperatorFactory, namespace: str) -> str:
    """The test's namespace, set up after (so deleted before) the operators stop: their finalizer
    is removed by a running operator, as in a cluster where the operator outlives its objects."""
    return namespace


def _needs_kwok(cluster: Cluster) -> None:
    if cluster.kwok_nodes == 0:
        pytest.skip("needs the dev cluster's kwok nodes (`make cluster-bins` builds kwok)")


def convergence_problems(cluster: Cluster, namespace: str, wanted: dict[str, dict[str, Any]]) -> list[str]:
    """Everything that differs from "each wanted ModelDeployment is Ready as specified, with one
    child of each kind, and nothing else exists"; empty when converged."""
    problems: list[str] = []
    mds = {m["metadata"]["name"]: m for m in cluster.get_json("md", "-n", namespace)["items"]}
    for name in sorted(set(mds) - set(wanted)):
        problems.append(f"{name}: still exists after deletion")
    uids = {m["metadata"]["uid"]: name for name, m in mds.items() if name in wanted}
    for name, spec in sorted(wanted.items()):
        md = mds.get(name)
        if md is None:
            problems.append(f"{name}: missing")
            continue
        status = md.get("status", {})
        ready: dict[str, Any] = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), {})
        if status.get("observedGeneration") != md["metadata"]["generation"]:
            problems.append(f"{name}: observedGeneration {status.get('observedGeneration')}")
        if ready.get("status") != "True":
            problems.append(f"{name}: Ready={ready.get('status')} ({ready.get('reason')})")
        if status.get("readyReplicas") != spec["replicas"]:
            problems.append(f"{name}: readyReplicas {status.get('readyReplicas')} != {spec['replicas']}")
        if status.get("model", {}).get("version") != spec["model"]["version"]:
            problems.append(f"{name}: serves version {status.get('model', {}).get('version')}")
    children = cluster.get_json("deploy,svc,pdb", "-n", namespace)["items"]
    counts: dict[tuple[str, str], int] = {}
    for child in children:
        owners = [ref.get("uid") for ref in child["metadata"].get("ownerReferences", [])]
        owner = next((uids[uid] for uid in owners if uid in uids), None)
        label = f"{child['kind']}/{child['metadata']['name']}"
        if owner is None:
            problems.append(f"{label}: orphan (owners {owners})")
            continue
        counts[(owner, child["kind"])] = counts.get((owner, child["kind"]), 0) + 1
        if child["kind"] == "Deployment" and child["spec"]["replicas"] != wanted[owner]["replicas"]:
            problems.append(f"{label}: replicas {child['spec']['replicas']}")
    for name in wanted:
        for kind in CHILD_KINDS:
            if counts.get((name, kind), 0) != 1:
                problems.append(f"{name}: {counts.get((name, kind), 0)} {kind}")
    return problems


class Churn:
    """Creates 20 ModelDeployments, then updates and deletes them at random, until stopped."""

    def __init__(
        self, cluster: Cluster, namespace: str, seed: int, count: int = 20, deletions: int = 5
    ) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.rng = random.Random(seed)
        self.names = [f"md-{i:02d}" for i in range(count)]
        self.deletions = deletions
        self.wanted: dict[str, dict[str, Any]] = {}
        self.errors: list[str] = []
        self.operations = 0
        self.stop = threading.Event()

    def _run(self, *args: str, manifest: dict[str, Any] | None = None) -> None:
        result = self.cluster.kubectl(
            *args, "-n", self.namespace, input=json.dumps(manifest) if manifest else None, check=False
        )
        if result.returncode != 0:
            self.errors.append(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        self.operations += 1

    def run(self) -> None:
        for name in self.names:
            spec = kwok_spec(self.rng.choice([1, 2]), self.rng.choice([1, 2]))
            self._run("apply", "-f", "-", manifest=md_manifest(name, spec))
            self.wanted[name] = spec
        deleted = 0
        deadline = time.monotonic() + 300
        while not self.stop.is_set() and time.monotonic() < deadline:
            name = self.rng.choice(sorted(self.wanted))
            if deleted < self.deletions and self.rng.random() < 0.15:
                self._run("delete", "md", name, "--wait=false")
                del self.wanted[name]
                deleted += 1
            else:
                spec = dict(self.wanted[name])
                if self.rng.random() < 0.5:
                    spec["replicas"] = 3 - spec["replicas"]
                else:
                    spec["model"] = {"name": "iris", "version": 3 - spec["model"]["version"]}
                self._run("apply", "-f", "-", manifest=md_manifest(name, spec))
                self.wanted[name] = spec
            self.stop.wait(self.rng.uniform(0.1, 0.6))


@pytest.mark.slow
@pytest.mark.timeout(600)  # 20 operator start-ups: about 2 min on an idle 2-core machine
def test_sigkilled_twenty_times_during_churn_the_operator_converges(
    cluster: Cluster, namespace: str, operators: OperatorFactory
) -> None:
    _needs_kwok(cluster)
    rng = random.Random(20)
    operator = operators()
    churn = Churn(cluster, namespace, seed=7)
    worker = threading.Thread(target=churn.run, daemon=True)
    worker.start()
    try:
        for cycle in range(20):
            operator.launch()
            if cycle % 4 == 3:
                time.sleep(rng.uniform(0.5, 3.0))  # while it starts up: watches half set up
            else:
                operator.wait_healthy(timeout=60)
                time.sleep(rng.uniform(0.0, 3.0))  # mid-reconcile
            operator.kill()
    finally:
        churn.stop.set()
        worker.join(timeout=60)
    assert not worker.is_alive()
    assert churn.errors == []
    # The last restart: everything converges within 60 s.
    operator.launch()
    wanted = dict(churn.wanted)
    assert len(wanted) == 15
    try:
        wait_for(
            "convergence after the last restart",
            lambda: not convergence_problems(cluster, namespace, wanted),
            timeout=60,
            interval=1,
        )
    except AssertionError:
        problems = convergence_problems(cluster, namespace, wanted)
        raise AssertionError("did not converge in 60 s:\n" + "\n".join(problems)) from None


# --- least privilege --------------------------------------------------------------------------

RBAC = REPO / "deploy" / "operator" / "rbac.yaml"
PEERING = REPO / "deploy" / "operator" / "peering.yaml"
OPERATOR_NAMESPACE = "modelplane-system"


@pytest.fixture
def peering(cluster: Cluster, crds: None) -> None:
    """The kopf peering resource of deploy/operator/peering.yaml (cluster-wide); its type comes
    with crds/."""
    cluster.kubectl(
        "wait", "--for=condition=Established", "crd/clusterkopfpeerings.kopf.dev", "--timeout=60s"
    )
    cluster.kubectl("apply", "--server-side", "-f", str(PEERING))


def service_account_kubeconfig(cluster: Cluster, directory: Path) -> Path:
    """A kubeconfig for the operator's ServiceAccount (deploy/operator/rbac.yaml), with a token
    from the TokenRequest API: the same identity and rights the operator has in a cluster."""
    namespace_yaml = cluster.kubectl(
        "create", "namespace", OPERATOR_NAMESPACE, "--dry-run=client", "-o", "yaml"
    ).stdout
    cluster.kubectl("apply", "-f", "-", input=namespace_yaml)
    cluster.kubectl("apply", "-f", str(RBAC))
    token = cluster.kubectl(
        "create", "token", "modelplane-operator", "-n", OPERATOR_NAMESPACE, "--duration=1h"
    ).stdout.strip()
    config = yaml.safe_load(
        cluster.kubectl("config", "view", "--raw", "--minify", "--flatten", "-o", "yaml").stdout
    )
    config["users"] = [{"name": "modelplane-operator", "user": {"token": token}}]
    for context in config["contexts"]:
        context["context"]["user"] = "modelplane-operator"
    path = directory / "operator.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_operator_works_with_only_its_service_accounts_rights(
    cluster: Cluster, namespace: str, operators: OperatorFactory, peering: None, tmp_path: Path
) -> None:
    _needs_kwok(cluster)
    kubeconfig = service_account_kubeconfig(cluster, tmp_path)
    denied = cluster.kubectl(
        "--kubeconfig", str(kubeconfig), "get", "secrets", "-n", namespace, check=False
    )  # the later --kubeconfig wins: this runs as the operator
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower(), denied.stderr
    # The API server's own verdict on what the ServiceAccount may do.
    who = f"--as=system:serviceaccount:{OPERATOR_NAMESPACE}:modelplane-operator"
    for verb, resource in [
        ("list", "secrets"),
        ("watch", "secrets"),
        ("get", "secrets"),
        ("*", "*"),
        ("bind", "clusterroles"),
        ("escalate", "clusterroles"),
        ("impersonate", "serviceaccounts"),
        ("create", "pods"),
        ("delete", "nodes"),
    ]:
        answer = cluster.kubectl("auth", "can-i", verb, resource, "-A", who, check=False).stdout.strip()
        assert answer == "no", f"the operator may {verb} {resource}"
    for verb, resource in [
        ("patch", "modeldeployments.modelplane.io/status"),
        ("create", "deployments.apps"),
    ]:
        answer = cluster.kubectl("auth", "can-i", verb, resource, "-A", who, check=False).stdout.strip()
        assert answer == "yes", f"the operator may not {verb} {resource}"
    operator = operators(standalone=False, kubeconfig=kubeconfig).start()
    cluster.apply(md_manifest("least", kwok_spec(1, 2)), namespace)
    md = wait_ready(cluster, namespace, "least", replicas=2, timeout=90)
    assert md["status"]["model"]["version"] == 1
    kinds = sorted(i["kind"] for i in cluster.get_json("deploy,svc,pdb", "-n", namespace)["items"])
    assert kinds == sorted(CHILD_KINDS)
    events = cluster.get_json("events", "-n", namespace, "--field-selector", "involvedObject.name=least")
    assert any(e["reason"] == "Ready" for e in events["items"])
    log = operator.log_tail(200_000)
    assert "Forbidden" not in log, log[-3000:]
    assert " 403" not in log, log[-3000:]


# --- two replicas -----------------------------------------------------------------------------


def child_versions(cluster: Cluster, namespace: str) -> dict[str, str]:
    return {
        f"{i['kind']}/{i['metadata']['name']}": i["metadata"]["resourceVersion"]
        for i in cluster.get_json("deploy,svc,pdb", "-n", namespace)["items"]
    }


def test_two_replicas_one_acts_and_the_other_takes_over_when_it_dies(
    cluster: Cluster, namespace: str, operators: OperatorFactory, peering: None
) -> None:
    _needs_kwok(cluster)
    peered = ("--peering-lifetime", "10")
    active = operators("--peering-priority", "200", *peered, standalone=False).start()
    standby = operators("--peering-priority", "100", *peered, standalone=False).start()
    # Both are in the peering record, with their priorities: the standby stays paused.
    wait_for(
        "both replicas in the peering record",
        lambda: (
            sorted(
                p.get("priority")
                for p in (cluster.get_json("clusterkopfpeering", "modelplane").get("status") or {}).values()
            )
            == [100, 200]
        ),
        timeout=30,
    )
    cluster.apply(md_manifest("pair", kwok_spec(1, 1)), namespace)
    wait_ready(cluster, namespace, "pair", replicas=1, timeout=90)
    before = child_versions(cluster, namespace)
    # Spec-neutral changes make the active replica reconcile; the standby must not touch anything.
    for i in range(5):
        done = active.metric("modelplane_operator_reconciles_total")
        cluster.kubectl("annotate", "md/pair", "-n", namespace, f"example.com/touch={i}", "--overwrite")

        def reconciled(done: float = done) -> bool:
            return active.metric("modelplane_operator_reconciles_total") > done

        wait_for(f"reconcile {i + 1}", reconciled)
    assert child_versions(cluster, namespace) == before
    assert standby.metric("modelplane_operator_reconciles_total") == 0
    assert active.metric("modelplane_operator_child_writes_total") > 0
    active.kill()
    cluster.apply(md_manifest("pair", kwok_spec(2, 2)), namespace)
    md = wait_ready(cluster, namespace, "pair", replicas=2, timeout=90)
    assert md["status"]["model"]["version"] == 2
    assert standby.metric("modelplane_operator_reconciles_total") > 0
    assert "Resuming operations" in standby.log_tail(100_000)


# --- the registry's deployment records --------------------------------------------------------


def deployed(server: RegistryProcess, namespace: str, name: str) -> list[int]:
    with server.client() as client:
        return sorted(
            d.version
            for d in client.list_deployments("iris")
            if d.namespace == namespace and d.deployment == name
        )


def test_registry_records_follow_the_served_version_and_go_with_the_finalizer(
    cluster: Cluster,
    namespace: str,
    operators: OperatorFactory,
    model_registry: tuple[RegistryProcess, Any],
) -> None:
    _needs_kwok(cluster)
    server, _ = model_registry
    operators().start()
    cluster.apply(md_manifest("rec", kwok_spec(1, 1)), namespace)
    md = wait_ready(cluster, namespace, "rec", replicas=1, timeout=90)
    assert md["metadata"]["finalizers"] == ["modelplane.io/finalizer"]
    assert deployed(server, namespace, "rec") == [1]
    assert md["status"]["registryRecords"] == [{"model": "iris", "version": 1}]
    # The registry's guard sees the deployed version: neither it nor its model can be deleted.
    with server.client() as client:
        attempts: list[Callable[[], object]] = [
            lambda: client.delete_version("iris", 1),
            lambda: client.delete_model("iris"),
        ]
        for attempt in attempts:
            with pytest.raises(RegistryClientError) as refused:
                attempt()
            assert refused.value.status == 409
            assert "in use" in str(refused.value).lower() or "in-use" in str(refused.value)
    cluster.apply(md_manifest("rec", kwok_spec(2, 1)), namespace)
    wait_for(
        "version 2 serving and recorded alone",
        lambda: (
            get_md(cluster, namespace, "rec")["status"].get("model", {}).get("version") == 2
            and deployed(server, namespace, "rec") == [2]
        ),
        timeout=90,
    )
    cluster.kubectl("delete", "md", "rec", "-n", namespace, "--wait=true", "--timeout=60s", timeout=90)
    assert deployed(server, namespace, "rec") == []


def test_a_model_from_a_storage_uri_with_its_signature_is_served_without_a_finalizer(
    cluster: Cluster, namespace: str, operators: OperatorFactory
) -> None:
    _needs_kwok(cluster)
    operators().start()
    spec = kwok_spec(1, 1)
    spec["model"] = {
        "name": "iris",
        "storageUri": "https://models.example.com/iris/model.pt",  # kwok pods never fetch it
        "signature": MLP_SIGNATURE,
    }
    cluster.apply(md_manifest("direct", spec), namespace)
    md = wait_ready(cluster, namespace, "direct", replicas=1, timeout=90)
    assert md["status"]["model"]["storageUri"] == spec["model"]["storageUri"]
    assert "finalizers" not in md["metadata"]
    assert "registryRecords" not in md["status"]
    # The runtime's model configuration carries the spec's signature and the URI.
    template = cluster.get_json("deploy", "direct", "-n", namespace)["spec"]["template"]["spec"]
    rendered = json.dumps(template)
    assert "INPUT__0" in rendered
    assert "models.example.com/iris/model.pt" in rendered


def test_deletion_with_the_registry_down_retries_then_lets_go(
    cluster: Cluster,
    namespace: str,
    operators: OperatorFactory,
    model_registry: tuple[RegistryProcess, Any],
) -> None:
    _needs_kwok(cluster)
    server, _ = model_registry
    operators("--registry-cleanup-timeout", "30").start()
    for name in ("held", "dropped"):
        cluster.apply(md_manifest(name, kwok_spec(1, 1)), namespace)
    for name in ("held", "dropped"):
        wait_ready(cluster, namespace, name, replicas=1, timeout=90)

        def recorded(name: str = name) -> bool:
            return deployed(server, namespace, name) == [1]

        wait_for(f"{name} recorded", recorded)
    server.kill()
    try:
        cluster.kubectl("delete", "md", "held", "-n", namespace, "--wait=false")
        time.sleep(3)  # attempts at 1 s and 2 s back-off against the dead registry
        held = get_md(cluster, namespace, "held")
        assert held["metadata"]["deletionTimestamp"]
        assert held["metadata"]["finalizers"] == ["modelplane.io/finalizer"]
    finally:
        server.start(keep_port=True)
    wait_for(
        "held deleted once the registry is back",
        lambda: cluster.kubectl("get", "md", "held", "-n", namespace, check=False).returncode != 0,
        timeout=90,
    )
    assert deployed(server, namespace, "held") == []
    assert deployed(server, namespace, "dropped") == [1]
    # A registry down for longer than the cleanup timeout: the deletion completes anyway, and an
    # Event names the record left behind.
    server.kill()
    try:
        cluster.kubectl(
            "delete", "md", "dropped", "-n", namespace, "--wait=true", "--timeout=90s", timeout=120
        )
        events = cluster.get_json(
            "events", "-n", namespace, "--field-selector", "involvedObject.name=dropped"
        )
        left = [e for e in events["items"] if e["reason"] == "RegistryRecordsLeft"]
        assert len(left) == 1
        assert left[0]["type"] == "Warning"
        assert "iris v1" in left[0]["message"]
    finally:
        server.start(keep_port=True)
    assert deployed(server, namespace, "dropped") == [1]
    with server.client() as client:
        client.remove_deployment("iris", 1, namespace, "dropped")
