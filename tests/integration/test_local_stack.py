"""`modelplane up` end to end, as a user runs it: a subprocess on free ports with its own data directory.

The printed curl command and tritonclient snippet are run as printed (the curl's URL and body through
httpx), and so are the streamed curl command and the official `openai` client snippet for
`demo-chat`, the small language model trained on first run (its answer must be in the docs' words);
a bad deployment file is reported while the demos keep serving; a `minReplicas: 0` deployment goes
to zero processes when idle and answers the next request; a killed runtime is replaced; SIGTERM
leaves no process behind; a second `up` resumes without registering or training again.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modelplane.local.corpus import load_corpus, normalize_word
from modelplane.local.demo import SAMPLE_CLASS
from modelplane.local.stack import CHAT_HINT, STOP_HINT
from modelplane.testing.local import UpProcess, alive, children_of

pytestmark = pytest.mark.timeout(600)

GRPC_FORK_LINE = "skipping fork() handlers"

ZERO_YAML = """\
apiVersion: modelplane.io/v1alpha1
kind: ModelDeployment
metadata:
  name: sleepy
spec:
  model:
    name: demo
    version: 1
  resources:
    gpu:
      count: 0
  autoscaling:
    minReplicas: 0
    maxReplicas: 1
    stableWindowSeconds: 6
    panicWindowSeconds: 2
    scaleDownDelaySeconds: 0
    scaleToZeroGracePeriodSeconds: 3
"""

BAD_YAML = """\
apiVersion: modelplane.io/v1alpha1
kind: ModelDeployment
metadata:
  name: broken
spec:
  model:
    name: demo
    version: 1
  autoscaling:
    maxReplicas: zero
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpProcess]:
    root = tmp_path_factory.mktemp("local-stack")
    deployments = root / "deployments"
    deployments.mkdir()
    (deployments / "sleepy.yaml").write_text(ZERO_YAML)
    (deployments / "broken.yaml").write_text(BAD_YAML)
    up = UpProcess(root / "data", deployments).start()
    try:
        yield up.wait_ready()
    finally:
        up.stop()


def _wait(condition: object, what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout_s}s")
        time.sleep(0.25)


def _printed_curl(output: str, path: str = "/v2/") -> tuple[str, dict[str, object]]:
    line = next(x for x in output.splitlines() if x.startswith("curl ") and path in x)
    words = shlex.split(line)
    url = next(w for w in words if w.startswith("http://"))
    return url, json.loads(words[words.index("-d") + 1])


def _printed_snippet(output: str) -> str:
    start = output.index("import numpy as np")
    end = output.index(CHAT_HINT)
    return output[start:end]


def _printed_openai_snippet(output: str) -> str:
    start = output.index("from openai import OpenAI")
    end = output.index(STOP_HINT)
    return output[start:end]


def _corpus_word_ratio(text: str) -> float:
    corpus = load_corpus().words()
    words = [w for w in (normalize_word(w) for w in text.split()) if w]
    return sum(w in corpus for w in words) / len(words) if words else 0.0


def test_printed_curl_answers_with_the_documented_class(stack: UpProcess) -> None:
    url, body = _printed_curl(stack.output)
    assert url == f"http://127.0.0.1:{stack.http_port}/v2/models/demo/infer"
    response = httpx.post(url, json=body, timeout=60)
    assert response.status_code == 200, response.text
    output = response.json()["outputs"][0]
    assert output["name"] == "OUTPUT__0"
    assert output["shape"] == [1, 3]
    assert max(range(3), key=lambda i: output["data"][i]) == SAMPLE_CLASS
    assert sum(output["data"]) == pytest.approx(1.0, abs=1e-4)


def test_printed_tritonclient_snippet_works_over_http_and_grpc(stack: UpProcess) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _printed_snippet(stack.output)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert [line.split(" ", 1)[0] for line in lines] == ["tritonclient.http", "tritonclient.grpc"]
    for line in lines:
        probabilities = json.loads(line.split(" ", 1)[1])[0]
        assert probabilities.index(max(probabilities)) == SAMPLE_CLASS


def test_printed_streaming_curl_streams_the_chat_models_words(stack: UpProcess) -> None:
    assert "registered model demo-chat version 1 (trained in " in stack.output
    url, body = _printed_curl(stack.output, "/v1/")
    assert url == f"http://127.0.0.1:{stack.http_port}/v1/chat/completions"
    assert body["model"] == "demo-chat"
    assert body["stream"] is True
    events = []
    with httpx.stream("POST", url, json=body, timeout=120) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(line.removeprefix("data: "))
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["model"] for c in chunks} == {"demo-chat"}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert len([c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]) >= 3
    assert _corpus_word_ratio(text) >= 0.6, text


def test_printed_openai_snippet_streams_an_answer_in_the_docs_words(stack: UpProcess) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _printed_openai_snippet(stack.output)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    answer = result.stdout.strip()
    assert len(answer.split()) >= 3, answer
    assert _corpus_word_ratio(answer) >= 0.6, answer
    status = stack.deployment("demo-chat")
    assert status["url"] == f"http://127.0.0.1:{stack.http_port}/v1"
    assert status["readyReplicas"] == 1


def test_bad_file_is_reported_with_line_and_field_and_others_serve(stack: UpProcess) -> None:
    stack.wait_for("broken.yaml:10: spec.autoscaling.maxReplicas:", 30)
    status = stack.status()
    assert [d["name"] for d in status["deployments"]] == ["demo", "demo-chat", "sleepy"]
    assert any("broken.yaml:10: spec.autoscaling.maxReplicas" in e for e in status["errors"])
    url, body = _printed_curl(stack.output)
    assert httpx.post(url, json=body, timeout=60).status_code == 200


def test_scale_to_zero_and_activation(stack: UpProcess) -> None:
    url = f"http://127.0.0.1:{stack.http_port}/v2/models/sleepy/infer"
    _, body = _printed_curl(stack.output)
    response = httpx.post(url, json=body, timeout=120)  # activates from zero (or finds it running)
    assert response.status_code == 200, response.text
    _wait(lambda: stack.deployment("sleepy")["processes"] == [], "scale to zero", 90)
    assert stack.deployment("sleepy")["ready"] == "0/0"
    response = httpx.post(url, json=body, timeout=120)  # buffered while a runtime starts
    assert response.status_code == 200, response.text
    assert response.json()["model_name"] == "demo"
    assert stack.deployment("sleepy")["readyReplicas"] == 1


def test_killed_runtime_is_replaced_while_the_demo_serves(stack: UpProcess) -> None:
    _wait(lambda: stack.deployment("demo")["readyReplicas"] == 1, "demo ready")
    old = stack.deployment("demo")["processes"][0]["pid"]
    os.kill(old, signal.SIGKILL)

    def replaced() -> bool:
        processes = stack.deployment("demo")["processes"]
        return bool(processes) and processes[0]["pid"] != old and processes[0]["state"] == "ready"

    _wait(replaced, "a replacement runtime", 120)
    url, body = _printed_curl(stack.output)
    assert httpx.post(url, json=body, timeout=60).status_code == 200


def test_cli_get_describe_infer_logs_against_the_stack(stack: UpProcess) -> None:
    env = {**os.environ, "MODELPLANE_DATA_DIR": str(stack.data_dir), "COLUMNS": "200"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "modelplane", *args], capture_output=True, text=True, env=env, timeout=120
        )

    listing = cli("get")
    assert listing.returncode == 0, listing.stderr
    header, *rows = listing.stdout.strip().splitlines()
    assert header.split() == ["NAME", "MODEL", "VERSION", "READY", "GPUS", "URL", "AGE"]
    demo = next(r.split() for r in rows if r.startswith("demo "))
    assert demo[:5] == ["demo", "demo", "1", "1/1", "0"]
    assert demo[5] == f"http://127.0.0.1:{stack.http_port}/v2/models/demo"
    described = cli("describe", "demo")
    assert "Resolved:     demo version 1 (alias production)" in described.stdout
    answered = cli("infer", "demo", "--data", "[[3.0, 3.0, 0.0, 0.0]]")
    assert answered.returncode == 0, answered.stderr
    data = json.loads(answered.stdout)["outputs"][0]["data"]
    assert data.index(max(data)) == 1
    unknown = cli("describe", "nope")
    assert unknown.returncode == 1
    assert "no deployment named 'nope'" in unknown.stderr
    logs = cli("logs", "registry", "--tail", "5")
    assert logs.returncode == 0
    assert logs.stdout.strip()


def test_starting_runtimes_prints_nothing_from_grpc(stack: UpProcess) -> None:
    """The runtimes start while the router's gRPC server runs in `modelplane up`: started with fork(),
    each printed gRPC's "Other threads are currently calling into gRPC, skipping fork() handlers",
    into the ready message too. By now the demo's runtime was replaced and `sleepy` activated."""
    assert GRPC_FORK_LINE not in stack.output


def test_sigterm_stops_everything_and_a_restart_resumes(stack: UpProcess, tmp_path: Path) -> None:
    assert stack.process is not None
    children = children_of(stack.process.pid)
    assert len(children) >= 3  # the registry and at least the demo's and demo-chat's runtimes
    assert stack.stop(signal.SIGTERM) == 0
    _wait(lambda: not any(alive(pid) for pid in children), "every child to exit", 30)
    assert not (stack.data_dir / "stack.json").exists()
    assert "registered model demo " in stack.output
    assert "registered model demo-chat " in stack.output
    assert GRPC_FORK_LINE not in stack.output

    again = UpProcess(stack.data_dir, stack.deployments, stack.http_port, stack.grpc_port).start()
    try:
        again.wait_ready()
        assert "registered model demo" not in again.output
        assert "training demo-chat" not in again.output
        assert [d["name"] for d in again.status()["deployments"]] == ["demo", "demo-chat", "sleepy"]
        url, body = _printed_curl(again.output)
        assert httpx.post(url, json=body, timeout=60).status_code == 200
        with httpx.Client() as client:
            token = (stack.data_dir / "token").read_text().strip()
            stack_info = json.loads((stack.data_dir / "stack.json").read_text())
            for model in ("demo", "demo-chat"):
                versions = client.get(
                    f"{stack_info['registryUrl']}/api/v1/models/{model}/versions",
                    headers={"Authorization": f"Bearer {token}"},
                ).json()
                assert [v["version"] for v in versions["items"]] == [1], model
    finally:
        assert again.stop(signal.SIGINT) == 0
    assert re.search(r"stopped\.", again.output)
    assert GRPC_FORK_LINE not in again.output
