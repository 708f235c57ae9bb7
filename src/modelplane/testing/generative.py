"""Tiny generative models for tests and benchmarks: a tokenizer trained in a second, random Llamas.

Nothing is downloaded: the tokenizer is a byte-level BPE trained with ``tokenizers`` on the text
below (with multi-byte characters, so detokenization is exercised) and saved as a Hugging Face
tokenizer directory with a chat template; the models are ``LlamaForCausalLM`` from a config
with random weights, saved with ``save_pretrained`` (safetensors) next to the tokenizer files.
Also: predictable toy tokenizers, and throughput measurements of an engine against
``transformers``' ``generate`` (for tests that print them and for the benchmarks).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelplane.serving.runtime.generative.types import Engine, SamplingParams

if TYPE_CHECKING:  # transformers takes seconds to import: only the builders below need it
    from transformers import PreTrainedTokenizerFast

CORPUS = """\
Modelplane runs machine-learning models as a service on Kubernetes. A platform team installs it
with Helm; a model team registers a model version in the registry, applies a ModelDeployment,
and Modelplane does the rest: the operator reconciles it into serving pods, the serving runtime
loads the model and speaks the inference protocol, the router splits traffic between versions,
and the autoscaler scales each deployment with its load, down to zero and back.
The engine batches every running sequence into one step. Each step computes one new token for
every sequence that is decoding and a chunk of the prompt of every sequence that is starting.
Keys and values live in a paged cache of fixed-size blocks; full blocks are shared between
requests with the same prefix. When the cache is full, the newest sequence waits and is
recomputed later. The quick brown fox jumps over the lazy dog, again and again, 0123456789.
Café, naïve, façade, jalapeño, Zürich, smörgåsbord; 東京, 日本語, 한국어, Ελληνικά, русский; ✓ → ∞ 🙂 🚀.
"""

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>")
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}"
    "</s>\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

# A Llama of about 50M parameters (random weights) for throughput measurements.
LLAMA_50M: dict[str, Any] = {
    "hidden_size": 512,
    "intermediate_size": 1536,
    "num_hidden_layers": 16,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "max_position_embeddings": 2048,
}


class ByteTokenizer:
    """One token per UTF-8 byte (ids 0-255) and an EOS (256): characters span several tokens.

    Satisfies :class:`modelplane.serving.runtime.generative.types.Tokenizer`, for tests that need
    a tokenizer whose every split is predictable.
    """

    EOS = 256
    eos_token_id: int | None = EOS

    def encode(self, text: str) -> list[int]:
        return list(text.encode())

    def decode(self, token_ids: Sequence[int]) -> str:
        return bytes(t for t in token_ids if t < 256).decode(errors="replace")

    def apply_chat_template(self, messages: Sequence[dict[str, str]]) -> list[int]:
        return self.encode("".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: ")


class PieceTokenizer:
    """SentencePiece-like pieces: ``▁`` marks a space, and decoded text never starts with one."""

    eos_token_id: int | None = None

    def __init__(self, pieces: Sequence[str]) -> None:
        self.pieces = list(pieces)

    def encode(self, text: str) -> list[int]:
        return [self.pieces.index(p) for p in text.replace(" ", " \u2581").split(" ") if p]

    def decode(self, token_ids: Sequence[int]) -> str:
        return "".join(self.pieces[t] for t in token_ids).replace("\u2581", " ").removeprefix(" ")

    def apply_chat_template(self, messages: Sequence[dict[str, str]]) -> list[int]:
        return self.encode(" ".join(m["content"] for m in messages))


def train_tokenizer(vocab_size: int = 512, text: str = CORPUS) -> PreTrainedTokenizerFast:
    """A byte-level BPE (every byte is a token, so any text encodes) with a BOS post-processor."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = text.splitlines()
    tokenizer.train_from_iterator([*lines, *(line.lower() for line in lines)], trainer=trainer)
    bos = tokenizer.token_to_id("<s>")
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    fast: Any = PreTrainedTokenizerFast  # untyped in transformers
    wrapped: PreTrainedTokenizerFast = fast(
        tokenizer_object=tokenizer,
        bos_token="<s>",  # noqa: S106 (a token, not a password)
        eos_token="</s>",  # noqa: S106
        pad_token="<pad>",  # noqa: S106
    )
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def make_tokenizer_dir(path: Path, vocab_size: int = 512) -> Path:
    """Train the tokenizer and save it (tokenizer.json, tokenizer_config.json with the template)."""
    path.mkdir(parents=True, exist_ok=True)
    train_tokenizer(vocab_size).save_pretrained(str(path))
    return path


def make_llama_dir(
    path: Path,
    tokenizer_dir: Path,
    *,
    architecture: str = "llama",
    hidden_size: int = 64,
    intermediate_size: int = 128,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    max_position_embeddings: int = 512,
    tie_word_embeddings: bool = False,
    initializer_range: float = 0.2,
    seed: int = 0,
    **extra: Any,
) -> Path:
    """A random-weight Llama saved as a Hugging Face model directory, with ``tokenizer_dir``'s files.

    ``architecture`` "mistral" or "qwen2" builds that model class instead (same weight layout;
    Qwen2 adds Q/K/V biases, given random values here so that loading them is tested). The
    default ``initializer_range`` is ten times Llama's: random logits become peaked enough that
    greedy decoding is driven by the context rather than by near-ties.
    """
    import torch
    import transformers
    from transformers import PreTrainedTokenizerFast

    prefix = {"llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2"}[architecture]
    config_class: Any = getattr(transformers, f"{prefix}Config")
    model_class: Any = getattr(transformers, f"{prefix}ForCausalLM")
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(tokenizer_dir), local_files_only=True)
    config = config_class(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings,
        initializer_range=initializer_range,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )
    torch.manual_seed(seed)
    model: Any = model_class(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(".bias"):
                param.normal_(0.0, initializer_range)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(path))
    for file in tokenizer_dir.iterdir():
        if file.is_file():
            shutil.copy(file, path / file.name)
    return path


def make_tiny_llama_dir(root: Path, **overrides: Any) -> Path:
    """A tokenizer and a tiny Llama under ``root`` (``root/tokenizer``, ``root/model``): the model dir."""
    tokenizer_dir = make_tokenizer_dir(root / "tokenizer")
    return make_llama_dir(root / "model", tokenizer_dir, **overrides)


@dataclass(frozen=True)
class Throughput:
    """Decode speed of one stream alone, and of ``streams`` streams together (prefill included)."""

    single_stream_tokens_per_s: float
    aggregate_tokens_per_s: float
    streams: int


def same_length_prompts(encode: Callable[[str], list[int]], count: int, length: int = 16) -> list[list[int]]:
    """``count`` different prompts of exactly ``length`` tokens (so a static batch needs no padding)."""
    words = " ".join(CORPUS.split())
    prompts = []
    for i in range(count):
        ids = encode(words[i * 13 : i * 13 + 8 * length])[:length]
        prompts.append(ids + [ids[-1]] * (length - len(ids)))
    return prompts


async def measure_engine(engine: Engine, prompts: list[list[int]], max_tokens: int) -> Throughput:
    """Greedy, EOS ignored: one stream (first to last token), then all prompts at once (wall time)."""
    import asyncio

    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    warm = SamplingParams(max_tokens=2, temperature=0.0, ignore_eos=True)
    async for _output in engine.generate("warm-up", prompts[0], warm):
        pass
    stamps = [time.perf_counter() async for _output in engine.generate("single", prompts[0], params)]
    single = (len(stamps) - 1) / (stamps[-1] - stamps[0])

    async def stream(i: int) -> int:
        return sum([len(o.token_ids) async for o in engine.generate(f"stream-{i}", prompts[i], params)])

    started = time.perf_counter()
    total = sum(await asyncio.gather(*(stream(i) for i in range(len(prompts)))))
    return Throughput(single, total / (time.perf_counter() - started), len(prompts))


def measure_transformers(model_dir: Path, prompts: list[list[int]], max_tokens: int) -> Throughput:
    """The same with ``transformers``' ``generate``: one prompt, then one static batch of all of them."""
    import torch
    import transformers

    auto: Any = transformers.AutoModelForCausalLM
    model = auto.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    model.generation_config.eos_token_id = None  # like ignore_eos
    model.generation_config.pad_token_id = 0
    with torch.inference_mode():
        model.generate(torch.tensor(prompts[:1]), max_new_tokens=2, do_sample=False)
        started = time.perf_counter()
        model.generate(torch.tensor(prompts[:1]), max_new_tokens=max_tokens, do_sample=False)
        single = max_tokens / (time.perf_counter() - started)
        batch = torch.tensor(prompts)
        started = time.perf_counter()
        model.generate(
            batch, attention_mask=torch.ones_like(batch), max_new_tokens=max_tokens, do_sample=False
        )
        aggregate = len(prompts) * max_tokens / (time.perf_counter() - started)
    return Throughput(single, aggregate, len(prompts))
