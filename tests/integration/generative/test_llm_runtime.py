"""``modelplane llm-runtime`` as a real process: load, serve the official client, drain on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import torch
from transformers import AutoTokenizer, LlamaForCausalLM

from modelplane.local.processes import die_with_parent, free_port
from modelplane.testing.generative import make_tiny_llama_dir

NAME = "tiny-chat"


class LlmRuntime:
    def __init__(self, model_dir: Path, log_path: Path) -> None:
        self.model_dir = model_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        command = [
            sys.executable, "-m", "modelplane", "llm-runtime", str(model_dir),
            "--served-model-name", NAME,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--max-num-seqs", "8", "--kv-cache-bytes", str(8 * 1024 * 1024),
            "--drain-delay", "1", "--drain-timeout", "20",
        ]  # fmt: skip
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
            )

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log()
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"not ready in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_llama_dir(tmp_path_factory.mktemp("llm"))


@pytest.fixture
def runtime(model_dir: Path, tmp_path: Path) -> Iterator[LlmRuntime]:
    server = LlmRuntime(model_dir, tmp_path / "llm-runtime.log")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def test_the_official_client_gets_what_transformers_would_generate(
    runtime: LlmRuntime, model_dir: Path
) -> None:
    client = openai.OpenAI(base_url=f"{runtime.url}/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list().data] == [NAME]

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    prompt = "the registry keeps every version"
    completion = client.completions.create(model=NAME, prompt=prompt, max_tokens=12, temperature=0)
    reference: Any = LlamaForCausalLM.from_pretrained(str(model_dir))
    reference.eval()
    ids = torch.tensor([tokenizer.encode(prompt)])
    with torch.no_grad():
        expected = reference.generate(ids, max_new_tokens=12, do_sample=False)[0, ids.shape[1] :]
    assert completion.choices[0].text == tokenizer.decode(expected.tolist(), skip_special_tokens=True)
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == ids.shape[1]

    chunks = list(
        client.chat.completions.create(
            model=NAME,
            messages=[{"role": "user", "content": "what does the router do?"}],
            max_tokens=10,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens >= 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text  # words of the tiny model's vocabulary

    metrics = httpx.get(f"{runtime.url}/metrics", timeout=5).text
    assert 'vllm:generation_tokens_total{model_name="tiny-chat"}' in metrics
    assert "vllm:kv_cache_usage_perc" in metrics


def test_sigterm_lets_a_stream_in_flight_finish_while_readiness_goes_away(runtime: LlmRuntime) -> None:
    client = openai.OpenAI(base_url=f"{runtime.url}/v1", api_key="unused", max_retries=0)
    started = threading.Event()
    finish: list[str | None] = []

    def stream() -> None:
        for chunk in client.completions.create(
            model=NAME,
            prompt="the operator",
            max_tokens=200,
            temperature=0,
            stream=True,
            extra_body={"ignore_eos": True},
        ):
            started.set()
            if chunk.choices and chunk.choices[0].finish_reason:
                finish.append(chunk.choices[0].finish_reason)

    reader = threading.Thread(target=stream)
    reader.start()
    assert started.wait(30)
    os.kill(runtime.process.pid, signal.SIGTERM)
    # The lame-duck second: not ready any more, still serving.
    deadline = time.monotonic() + 5
    while httpx.get(f"{runtime.url}/health", timeout=2).status_code == 200:
        assert time.monotonic() < deadline, "readiness did not turn off after SIGTERM"
        time.sleep(0.05)
    reader.join(60)
    assert finish == ["length"]  # the stream ran to its end, not cut by the shutdown
    assert runtime.process.wait(timeout=30) == 0
