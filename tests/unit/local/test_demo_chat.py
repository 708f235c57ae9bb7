"""demo-chat: trained once from the docs, it answers in the docs' words through the real engine.

The module trains the model ``modelplane up`` trains (same corpus, same settings) once, then asks
the generative engine (``modelplane llm-runtime``'s, through its Python API) for a greedy answer to
the prompt ``modelplane up`` prints: most of its words must be words of the corpus, which noise
from an untrained or broken model is not. Determinism and the registration are checked with a
training of a few steps.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from modelplane.local import demo_chat
from modelplane.local.corpus import Corpus, Section, load_corpus, normalize_word
from modelplane.local.demo_chat import (
    DEMO_CHAT_NAME,
    SAMPLE_PROMPT,
    ChatTraining,
    TrainedChat,
    chat_texts,
    ensure_demo_chat,
    train,
    write_demo_chat_deployment,
)
from modelplane.local.specs import load_file
from modelplane.registry_client.client import RegistryClient, RegistryClientError
from modelplane.serving.runtime.generative.config import EngineConfig
from modelplane.serving.runtime.generative.engine import LLMEngine
from modelplane.serving.runtime.generative.types import SamplingParams

MIN_CORPUS_WORDS = 0.6
TINY = ChatTraining(
    vocab_size=300, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
    num_key_value_heads=1, max_position_embeddings=64, context=16, batch_size=2, steps=3,
)  # fmt: skip
SMALL_CORPUS = Corpus(
    (
        Section("The router", ("The router routes requests to ready pods.", "It buffers while pods start.")),
        Section("The registry", ("The registry keeps model versions and their artifacts.",)),
    ),
    "a test",
)


def corpus_word_ratio(text: str, words: frozenset[str]) -> float:
    found = [w for w in (normalize_word(w) for w in text.split()) if w]
    return sum(w in words for w in found) / len(found) if found else 0.0


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainedChat:
    steps: list[int] = []
    result = train(
        tmp_path_factory.mktemp("demo-chat") / "model", progress=lambda s, n, loss: steps.append(s)
    )
    assert steps[0] == 0
    assert steps[-1] == result.training.steps
    return result


@pytest.fixture(scope="module")
def engine(trained: TrainedChat) -> Iterator[LLMEngine]:
    config = EngineConfig(
        model_dir=str(trained.path), model_name=DEMO_CHAT_NAME, device="cpu", kv_cache_bytes=4 << 20
    )
    engine = LLMEngine(config)
    engine.start()
    try:
        engine.wait_ready(120)
        yield engine
    finally:
        engine.stop()


def greedy(engine: LLMEngine, prompt: list[int], max_tokens: int = 48) -> str:
    async def run() -> str:
        pieces = []
        params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
        async for output in engine.generate("greedy", prompt, params):
            pieces.append(output.text)
        return "".join(pieces)

    return asyncio.run(run())


@pytest.mark.slow
def test_the_model_is_a_small_llama_directory_with_a_chat_template(trained: TrainedChat) -> None:
    config = json.loads((trained.path / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert 300_000 <= trained.parameters <= 3_000_000
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in trained.path.iterdir()
    }
    assert trained.corpus_source.startswith("README.md and ")


@pytest.mark.slow
def test_a_greedy_chat_answer_is_made_of_the_docs_words(engine: LLMEngine) -> None:
    prompt = engine.tokenizer.apply_chat_template([{"role": "user", "content": SAMPLE_PROMPT}])
    answer = greedy(engine, prompt)
    print(f"demo-chat, greedy, to {SAMPLE_PROMPT!r}: {answer!r}")
    assert len(answer.split()) >= 3, answer
    ratio = corpus_word_ratio(answer, load_corpus().words())
    print(f"corpus words: {ratio:.0%}")
    assert ratio >= MIN_CORPUS_WORDS, answer


@pytest.mark.slow
def test_a_greedy_completion_continues_in_the_docs_words(engine: LLMEngine) -> None:
    answer = greedy(engine, engine.tokenizer.encode("The router"), max_tokens=32)
    assert len(answer.split()) >= 3, answer
    assert corpus_word_ratio(answer, load_corpus().words()) >= MIN_CORPUS_WORDS, answer


def test_chat_texts_hold_each_section_and_each_paragraph_as_an_exchange() -> None:
    texts = chat_texts(SMALL_CORPUS)
    assert (
        texts[0]
        == "<s>The router\nThe router routes requests to ready pods.\nIt buffers while pods start.</s>\n"
    )
    exchanges = [t for t in texts if "<|assistant|>" in t]
    assert len(exchanges) == 3
    assert exchanges[0] == (
        "<s><|user|>\nThe router</s>\n<|assistant|>\nThe router routes requests to ready pods.</s>\n"
    )
    assert exchanges[1].startswith("<s><|user|>\nTell me about the router.</s>\n")


def test_training_is_deterministic(tmp_path: Path) -> None:
    first = train(tmp_path / "a", SMALL_CORPUS, TINY)
    second = train(tmp_path / "b", SMALL_CORPUS, TINY)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (first.path / name).read_bytes() == (second.path / name).read_bytes(), name
    assert first.loss == second.loss


class FakeRegistry:
    """What ensure_demo_chat asks of the registry, recorded."""

    def __init__(self, ready: bool) -> None:
        self.ready = ready
        self.calls: list[tuple[str, Any]] = []

    def get_model(self, name: str) -> object:
        if not self.ready:
            raise RegistryClientError(404, {"detail": "no such model"})
        return SimpleNamespace(name=name)

    def list_versions(self, name: str) -> list[object]:
        return [SimpleNamespace(version=1, status="READY")]

    def create_model(self, name: str, description: str) -> None:
        self.calls.append(("create_model", name))

    def create_version(self, name: str, **fields: Any) -> object:
        self.calls.append(("create_version", fields))
        return SimpleNamespace(version=1)

    def upload_directory(self, name: str, version: int, directory: Path) -> None:
        self.calls.append(("upload_directory", sorted(p.name for p in directory.iterdir())))

    def set_alias(self, name: str, alias: str, version: int) -> None:
        self.calls.append(("set_alias", (alias, version)))


def test_demo_chat_is_registered_as_a_language_model_directory_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_train = demo_chat.train
    monkeypatch.setattr(
        demo_chat, "train", lambda out, progress: real_train(out, SMALL_CORPUS, TINY, progress)
    )
    registry = FakeRegistry(ready=False)
    created = ensure_demo_chat(cast(RegistryClient, registry), tmp_path)
    assert created is not None
    assert created[0] == 1
    names = [call[0] for call in registry.calls]
    assert names == ["create_model", "create_version", "upload_directory", "set_alias"]
    fields = registry.calls[1][1]
    assert (fields["task"], fields["format"]) == ("text-generation", "hf-causal-lm")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(registry.calls[2][1])
    assert registry.calls[3][1] == ("production", 1)
    assert list(tmp_path.iterdir()) == []  # the model directory was uploaded, then removed

    assert ensure_demo_chat(cast(RegistryClient, FakeRegistry(ready=True)), tmp_path) is None


def test_the_deployment_file_is_valid_and_never_overwritten(tmp_path: Path) -> None:
    path = write_demo_chat_deployment(tmp_path)
    assert path == tmp_path / "demo-chat.yaml"
    [deployment], errors = load_file(path)
    assert errors == []
    spec = deployment.spec
    assert (deployment.name, spec.model.name, spec.model.alias) == ("demo-chat", "demo-chat", "production")
    assert spec.resources.gpu.count == 0
    assert (spec.llm.dtype, spec.llm.max_model_len, spec.llm.kv_cache_bytes) == ("float32", 512, "16Mi")
    path.write_text("# edited\n")
    assert write_demo_chat_deployment(tmp_path) is None
    assert path.read_text() == "# edited\n"
