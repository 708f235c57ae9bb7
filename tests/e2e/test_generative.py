"""A causal language model from the registry, deployed by the operator, answering the openai client.

The model directory is uploaded to a real registry; the ModelDeployment names it like any model;
the operator renders a pod whose init container fetches and checks every file and whose runtime is
the generative engine; the official ``openai`` client streams from the pod and through a router.
The operator's autoscaler reads that router's page: streams in flight and the engines' queues
scale the model out, back, to zero, and up again for the next stream.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from modelplane.testing.cluster import Cluster, wait_for
from modelplane.testing.generative import make_tiny_llama_dir
from modelplane.testing.modeldeployments import condition, get_md, md_manifest, serving_pods, wait_ready
from modelplane.testing.operator import ARTIFACT_SECRET, OperatorProcess
from modelplane.testing.registry import RegistryProcess
from modelplane.testing.router import RouterProcess
from modelplane.testing.serving_fixtures import running_operator

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def chat_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RegistryProcess, str]]:
    """A registry holding model ``chat`` version 1, a tiny Llama directory; and a read token."""
    base = tmp_path_factory.mktemp("chat-registry")
    server = RegistryProcess(f"sqlite:///{base / 'r.db'}", base / "artifacts", base / "registry.log").start()
    try:
        with server.client() as client:
            client.create_model("chat")
            client.create_version("chat", format="hf-causal-lm", task="text-generation")
            client.upload_directory("chat", 1, make_tiny_llama_dir(base / "model"))
            token = client.create_token("pods", scopes=["read"]).token
        yield server, token
    finally:
        server.stop()


@pytest.fixture(scope="module")
def chat_router(
    cluster_session: Cluster, crds: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RouterProcess]:
    """A router finding pods from EndpointSlices; it holds requests while a model scales from zero."""
    process = RouterProcess(
        log_path=tmp_path_factory.mktemp("router") / "router.log",
        discovery="kubernetes",
        extra_args=["--queue-timeout", "180", "--drain-timeout", "2"],
        env={"KUBECONFIG": str(cluster_session.kubeconfig)},
    ).start()
    try:
        yield process
    finally:
        process.stop()
        print(f"\n----- router log -----\n{process.log_tail(3000)}")


@pytest.fixture(scope="module")
def chat_operator(
    cluster_session: Cluster,
    crds: None,
    chat_registry: tuple[RegistryProcess, str],
    chat_router: RouterProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    """The operator, its autoscaler reading the router's load (streams and the engines' queues)."""
    server, _ = chat_registry
    log_dir = tmp_path_factory.mktemp("operator")
    extra = ["--router-metrics-url", chat_router.url + "/metrics"]
    with running_operator(cluster_session, server, log_dir, extra) as process:
        yield process


def artifact_secret(cluster: Cluster, namespace: str, token: str) -> None:
    cluster.kubectl(
        "create", "secret", "generic", ARTIFACT_SECRET, "-n", namespace, f"--from-literal=token={token}"
    )


def test_a_language_model_becomes_ready_and_streams_to_the_openai_client(
    cluster: Cluster,
    namespace: str,
    chat_registry: tuple[RegistryProcess, str],
    chat_operator: OperatorProcess,
    chat_router: RouterProcess,
) -> None:
    artifact_secret(cluster, namespace, chat_registry[1])
    spec = {
        "model": {"name": "chat", "version": 1},
        "batching": {"maxBatchSize": 8},
        "llm": {"kvCacheBytes": "16Mi"},
    }
    cluster.apply(md_manifest("chat", spec), namespace)
    md = wait_ready(cluster, namespace, "chat", 1, timeout=240)
    assert "causal language model" in condition(md, "ModelResolved")["message"]
    (pod,) = serving_pods(cluster, namespace, "chat")
    assert pod["metadata"]["labels"]["modelplane.io/api"] == "openai"

    client = openai.OpenAI(
        base_url=f"http://{pod['status']['podIP']}:8000/v1", api_key="unused", max_retries=0
    )
    assert [m.id for m in client.models.list().data] == ["chat"]
    chunks = list(
        client.chat.completions.create(
            model="chat",
            messages=[{"role": "user", "content": "what does the operator do?"}],
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens >= 1
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    # Through the router, which finds the pod from its EndpointSlice and speaks OpenAI's API to it.
    routed = openai.OpenAI(base_url=f"{chat_router.url}/ns/{namespace}/v1", api_key="unused", max_retries=0)
    wait_for("chat routable", lambda: [m.id for m in routed.models.list().data] == ["chat"], timeout=60)
    stream = routed.completions.create(model="chat", prompt="the router", max_tokens=8, stream=True)
    pieces = [chunk for chunk in stream]
    assert pieces[-1].choices[0].finish_reason in ("length", "stop")
    assert all(p.model == "chat" for p in pieces)


class Streams:
    """``workers`` threads streaming completions through the router back to back until stopped."""

    def __init__(self, client: openai.OpenAI, workers: int, bound_s: float) -> None:
        self.client, self.bound_s = client, bound_s
        self.finished = 0
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(workers)]

    def _run(self) -> None:
        deadline = time.monotonic() + self.bound_s
        while not self.stop.is_set() and time.monotonic() < deadline:
            outcome = stream_once(self.client, max_tokens=32)
            with self.lock:
                if outcome is None:
                    self.finished += 1
                else:
                    self.failures.append(outcome)

    def healthy(self) -> bool:
        """True while no stream failed; raises with the first failures otherwise (no waiting on)."""
        with self.lock:
            if self.failures:
                raise AssertionError(f"{len(self.failures)} streams failed: {self.failures[:3]}")
        return True

    def __enter__(self) -> Streams:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(120)


def stream_once(client: openai.OpenAI, max_tokens: int) -> str | None:
    """One streamed completion of exactly ``max_tokens`` tokens; None when whole, else what went wrong."""
    try:
        chunks = list(
            client.completions.create(
                model="scaled",  # clients name the ModelDeployment; the router knows its model
                prompt="scaling out",
                max_tokens=max_tokens,
                stream=True,
                stream_options={"include_usage": True},
                extra_body={"ignore_eos": True},
            )
        )
    except openai.OpenAIError as exc:
        return repr(exc)
    usage = chunks[-1].usage if chunks else None
    if usage is None or usage.completion_tokens != max_tokens:
        return f"incomplete stream: usage {usage}"
    return None


def replicas_and_ready(cluster: Cluster, namespace: str) -> tuple[int, int]:
    md = get_md(cluster, namespace, "scaled")
    return int(md["spec"].get("replicas", -1)), int(md.get("status", {}).get("readyReplicas", 0))


@pytest.mark.timeout(900)
def test_streams_scale_a_language_model_out_back_to_zero_and_up_again_without_a_failed_request(
    cluster: Cluster,
    namespace: str,
    chat_registry: tuple[RegistryProcess, str],
    chat_operator: OperatorProcess,
    chat_router: RouterProcess,
) -> None:
    artifact_secret(cluster, namespace, chat_registry[1])
    spec = {
        "model": {"name": "chat", "version": 1},
        # An engine runs 4 sequences at once: 32 streams queue in one pod's engine. By concurrency
        # alone one pod would do (target 32); only the engines' queue asks for the second.
        "batching": {"maxBatchSize": 4},
        "llm": {"kvCacheBytes": "16Mi"},
        "autoscaling": {
            "mode": "builtin",
            "minReplicas": 0,
            "maxReplicas": 2,
            "targetConcurrency": 32,
            "stableWindowSeconds": 6,
            "scaleDownDelaySeconds": 0,
            "scaleToZeroGracePeriodSeconds": 6,
        },
    }
    cluster.apply(md_manifest("scaled", spec), namespace)
    wait_ready(cluster, namespace, "scaled", 1, timeout=240)
    client = openai.OpenAI(
        base_url=f"{chat_router.url}/ns/{namespace}/v1", api_key="unused", max_retries=0, timeout=240
    )

    # Out: 32 concurrent streams on one pod whose engine holds 4 ask for both replicas.
    with Streams(client, workers=32, bound_s=300) as streams:
        wait_for(
            "32 streams to scale chat to 2 ready replicas",
            lambda: streams.healthy() and replicas_and_ready(cluster, namespace) == (2, 2),
            timeout=240,
        )
        autoscaler = get_md(cluster, namespace, "scaled")["status"]["autoscaler"]
    assert streams.failures == [], streams.failures[:3]
    assert streams.finished > 0
    assert autoscaler.get("observedEngineWaiting") is not None, autoscaler
    print(f"\nscale-out: {streams.finished} streams finished whole; autoscaler said {autoscaler}")

    # Back, and on to zero once idle.
    wait_for(
        "chat to scale to 0 with no pod left",
        lambda: (
            replicas_and_ready(cluster, namespace)[0] == 0 and not serving_pods(cluster, namespace, "scaled")
        ),
        timeout=240,
    )
    # Up again: streams sent to a model with no pod are held by the router until one is ready.
    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(lambda _: stream_once(client, max_tokens=16), range(8)))
    # Served, so woken: the model had no pod left when they were sent (checked just above), and only
    # a pod answers a stream. (Not read back from spec.replicas: short streams end quickly, and the
    # 6 s grace may already have taken the model back to zero by then; the wake-up posts no Scaled
    # event of its own.)
    assert outcomes == [None] * 8, outcomes
    events = cluster.get_json("events", "-n", namespace, "--field-selector", "involvedObject.name=scaled")
    scaled = [e["message"] for e in events["items"] if e.get("reason") == "Scaled"]
    assert any("-> 2" in m and "engines hold" in m for m in scaled), scaled
    assert any("-> 0: no traffic" in m for m in scaled), scaled
