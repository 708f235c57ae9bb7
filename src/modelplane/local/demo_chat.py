"""The generative demo of the local stack: a tiny Llama trained on Modelplane's docs, served as ``demo-chat``.

On first run ``modelplane up`` builds a byte-level BPE tokenizer from the documentation
(:mod:`modelplane.local.corpus`), trains a Llama-architecture causal LM of well under a million
parameters on it (seeded: the same corpus gives the same weights; about half a minute on one
CPU core), saves it as a Hugging Face model directory with a chat template, and registers the
directory as model ``demo-chat`` (task text-generation, format hf-causal-lm, alias
``production``), so it goes through the path a team's language model takes: the supervisor
fetches the directory and runs ``modelplane llm-runtime`` on it, the router serves it at
``/v1/completions`` and ``/v1/chat/completions``. It writes Modelplane-flavoured sentences, not
answers: a demo of the serving path, not of a model.

The training text is the docs twice over: each section as plain text (for completions), and each
paragraph as a chat exchange, the heading turned into the user's question and the paragraph the
assistant's answer, closed by the end-of-sequence token (so chat answers stop by themselves).
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelplane.local.corpus import Corpus, load_corpus
from modelplane.local.demo import has_ready_version
from modelplane.registry_client.client import RegistryClient

if TYPE_CHECKING:  # transformers takes seconds to import: only training needs it
    from transformers import PreTrainedTokenizerFast

DEMO_CHAT_NAME = "demo-chat"
DEMO_CHAT_ALIAS = "production"
SAMPLE_PROMPT = "How does the router work?"
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>")
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}"
    "</s>\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
QUESTIONS = ("{heading}", "Tell me about {lower}.", "What about {lower}?", "How does {lower} work?")
DEMO_CHAT_DEPLOYMENT = f"""\
# The generative demo, created by `modelplane up` on first run: a tiny language model trained on
# Modelplane's docs, served by `modelplane llm-runtime` (OpenAI API through the router's /v1).
# Edit or delete this file: the local stack applies the change within a couple of seconds.
apiVersion: modelplane.io/v1alpha1
kind: ModelDeployment
metadata:
  name: {DEMO_CHAT_NAME}
spec:
  model:
    name: {DEMO_CHAT_NAME}
    alias: {DEMO_CHAT_ALIAS}
  resources:
    gpu:
      count: 0
  autoscaling:
    minReplicas: 1
    maxReplicas: 1
  batching:
    maxBatchSize: 8          # sequences generated together
  llm:
    dtype: float32           # CPU
    maxModelLen: 512         # prompt plus completion tokens
    maxNumBatchedTokens: 512
    kvCacheBytes: 16Mi       # plenty for 8 sequences of 512 tokens of this model (256Mi by default)
"""

Progress = Callable[[int, int, float], None]  # step (0: starting), steps, loss


@dataclass(frozen=True)
class ChatTraining:
    """The model's shape and the training schedule (the version's params)."""

    vocab_size: int = 1024
    hidden_size: int = 128
    intermediate_size: int = 384
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 512
    context: int = 64
    batch_size: int = 16
    steps: int = 400
    learning_rate: float = 5e-3
    seed: int = 0


@dataclass(frozen=True)
class TrainedChat:
    path: Path
    loss: float
    parameters: int
    seconds: float
    corpus_source: str
    training: ChatTraining

    def params(self) -> dict[str, str]:
        return {key: str(value) for key, value in asdict(self.training).items()}


def chat_texts(corpus: Corpus) -> list[str]:
    """The training documents, as the chat template renders them (pure)."""
    texts = []
    for section in corpus.sections:
        body = "\n".join(section.paragraphs)
        texts.append(f"<s>{section.heading}\n{body}</s>\n" if section.heading else f"<s>{body}</s>\n")
    count = 0
    for section in corpus.sections:
        if not section.heading:
            continue
        for paragraph in section.paragraphs:
            question = QUESTIONS[count % len(QUESTIONS)].format(
                heading=section.heading, lower=section.heading[:1].lower() + section.heading[1:]
            )
            texts.append(f"<s><|user|>\n{question}</s>\n<|assistant|>\n{paragraph}</s>\n")
            count += 1
    return texts


def train_tokenizer(corpus: Corpus, vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE over the corpus (any text encodes), BOS first, with the chat template."""
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
    tokenizer.train_from_iterator(corpus.text().splitlines(), trainer=trainer)
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


def _learning_rate(step: int, training: ChatTraining) -> float:
    """Linear warm-up over 20 steps, then cosine decay to a tenth."""
    warm = min(1.0, (step + 1) / 20)
    cosine = 0.5 * (1 + math.cos(math.pi * step / training.steps))
    return training.learning_rate * warm * (0.1 + 0.9 * cosine)


def train(
    out: Path,
    corpus: Corpus | None = None,
    training: ChatTraining | None = None,
    progress: Progress | None = None,
) -> TrainedChat:
    """Train the tokenizer and the model on ``corpus`` (default: the docs) and save both in ``out``."""
    started = time.monotonic()
    training = training or ChatTraining()
    if progress is not None:
        progress(0, training.steps, math.nan)  # step 0: the tokenizer is being built
    corpus = corpus or load_corpus()
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = train_tokenizer(corpus, training.vocab_size)
    backend: Any = tokenizer.backend_tokenizer
    ids = [i for text in chat_texts(corpus) for i in backend.encode(text, add_special_tokens=False).ids]
    if len(ids) <= training.context + 1:
        raise ValueError(f"the corpus ({corpus.source}) is too short to train on: {len(ids)} tokens")
    data = torch.tensor(ids)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=training.hidden_size,
        intermediate_size=training.intermediate_size,
        num_hidden_layers=training.num_hidden_layers,
        num_attention_heads=training.num_attention_heads,
        num_key_value_heads=training.num_key_value_heads,
        max_position_embeddings=training.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one core, and the same sums on every machine
    try:
        torch.manual_seed(training.seed)
        model: Any = LlamaForCausalLM(config)
        optimizer = torch.optim.AdamW(model.parameters(), lr=training.learning_rate, weight_decay=0.01)
        windows = torch.Generator().manual_seed(training.seed)
        loss = math.inf
        model.train()
        for step in range(training.steps):
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(step, training)
            starts = torch.randint(0, len(ids) - training.context, (training.batch_size,), generator=windows)
            batch = torch.stack([data[s : s + training.context] for s in starts.tolist()])
            output = model(input_ids=batch, labels=batch)  # the model shifts the labels itself
            optimizer.zero_grad()
            output.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            loss = float(output.loss.detach())
            if progress is not None:
                progress(step + 1, training.steps, loss)
        model.eval()
    finally:
        torch.set_num_threads(threads)
    out.mkdir(parents=True, exist_ok=True)
    _save_quietly(model, tokenizer, out)
    parameters = sum(p.numel() for p in model.parameters())
    return TrainedChat(out, loss, parameters, time.monotonic() - started, corpus.source, training)


def _save_quietly(model: Any, tokenizer: PreTrainedTokenizerFast, out: Path) -> None:
    """``save_pretrained`` without its progress bar (it would land in the middle of ``modelplane up``)."""
    from transformers.utils import logging

    hf_logging: Any = logging  # partly untyped
    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(str(out))
        tokenizer.save_pretrained(str(out))
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def ensure_demo_chat(
    client: RegistryClient, workdir: Path, progress: Progress | None = None
) -> tuple[int, TrainedChat] | None:
    """Train and register ``demo-chat`` once; returns the new version and the training's summary, or
    None when the registry already has a ready version."""
    description = "Tiny chat model made by `modelplane up`, trained on Modelplane's docs"
    if has_ready_version(client, DEMO_CHAT_NAME, description):
        return None
    workdir.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="demo-chat-", dir=workdir))
    try:
        trained = train(folder / DEMO_CHAT_NAME, progress=progress)
        version = client.create_version(
            DEMO_CHAT_NAME,
            task="text-generation",
            format="hf-causal-lm",
            framework="pytorch",
            description=f"A Llama of {trained.parameters:,} parameters trained for "
            f"{trained.training.steps} steps on {trained.corpus_source}. It writes in the docs' "
            "words; it does not know the answers.",
            metrics={"loss": trained.loss, "training_seconds": round(trained.seconds, 1)},
            params=trained.params(),
        )
        client.upload_directory(DEMO_CHAT_NAME, version.version, trained.path)
        client.set_alias(DEMO_CHAT_NAME, DEMO_CHAT_ALIAS, version.version)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return version.version, trained


def write_demo_chat_deployment(folder: Path) -> Path | None:
    """Write ``demo-chat.yaml`` unless a file of that name is already there."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{DEMO_CHAT_NAME}.yaml"
    if path.exists():
        return None
    path.write_text(DEMO_CHAT_DEPLOYMENT)
    return path
