"""What the generative engine's weight-only int8 costs in quality, on a fixed prompt set.

The model is trained, not random (a random model's outputs say nothing about quality): the local
stack's ``demo-chat`` recipe (:mod:`modelplane.local.demo_chat`, a Llama trained on Modelplane's
docs), by default a larger shape of it. Two measurements, fp32 against int8:

1. Teacher-forced, on the training text cut into fixed windows: perplexity, the share of positions
   where both pick the same next token (top-1 agreement), and the mean KL divergence of int8's
   next-token distribution from fp32's. The int8 side is the transformers model with every decoder
   projection swapped for the engine's own ``Int8Linear`` (the scheme ``quantization: int8`` uses).
2. End to end, through the engine itself (``LLMEngine``, ``quantization=None`` and ``"int8"``): a
   fixed set of chat prompts (the docs' headings as questions), greedy, up to ``--max-tokens``:
   how many completions are identical, and the mean share of each completion before the first
   token that differs.

Also the decoder weights' bytes each way. Raw file: ``results/llm_int8_quality.json`` (machine,
command, commit, versions, the model's shape, every figure, every completion pair).

    .venv/bin/python benchmarks/llm_int8_quality.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import platform
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent


def swap_int8(model: Any) -> None:
    """Replace every linear layer of the decoder (not the embeddings or the LM head) by Int8Linear."""
    from modelplane.serving.runtime.generative.llama import Int8Linear

    for module in list(model.model.layers.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, torch.nn.Linear):
                setattr(module, name, Int8Linear(child))  # type: ignore[arg-type]  # duck-typed: weight, bias


def decoder_bytes(model: Any) -> int:
    tensors = [*model.model.layers.parameters(), *model.model.layers.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def teacher_forced(
    reference: Any, quantized: Any, ids: list[int], context: int, windows: int
) -> dict[str, float]:
    """Perplexity of both, top-1 agreement and mean KL(fp32 || int8) over fixed windows of ``ids``."""
    step = max(1, (len(ids) - context - 1) // windows)
    starts = list(range(0, len(ids) - context - 1, step))[:windows]
    batch = torch.tensor([ids[s : s + context + 1] for s in starts])
    inputs, targets = batch[:, :-1], batch[:, 1:]
    with torch.inference_mode():
        ref = torch.log_softmax(reference(inputs).logits.float(), dim=-1)
        quant = torch.log_softmax(quantized(inputs).logits.float(), dim=-1)
    nll_ref = -ref.gather(-1, targets.unsqueeze(-1)).mean().item()
    nll_quant = -quant.gather(-1, targets.unsqueeze(-1)).mean().item()
    agreement = (ref.argmax(-1) == quant.argmax(-1)).float().mean().item()
    kl = (ref.exp() * (ref - quant)).sum(-1).mean().item()
    return {
        "positions": float(inputs.numel()),
        "perplexity_fp32": math.exp(nll_ref),
        "perplexity_int8": math.exp(nll_quant),
        "perplexity_ratio": math.exp(nll_quant - nll_ref),
        "top1_agreement": agreement,
        "mean_kl_fp32_int8": kl,
    }


async def engine_completions(
    model_dir: Path, prompts: list[list[int]], max_tokens: int, quantization: str | None
) -> list[list[int]]:
    from modelplane.serving.runtime.generative.config import EngineConfig
    from modelplane.serving.runtime.generative.engine import LLMEngine
    from modelplane.serving.runtime.generative.types import SamplingParams

    engine = LLMEngine(
        EngineConfig(
            model_dir=str(model_dir),
            dtype="float32",
            device="cpu",
            max_num_seqs=len(prompts),
            max_num_batched_tokens=max(2048, len(prompts)),
            kv_cache_bytes=64 << 20,
            quantization=quantization,  # type: ignore[arg-type]  # None or "int8"
        )
    )
    engine.start()
    await asyncio.to_thread(engine.wait_ready, 300)
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0)

    async def one(i: int) -> list[int]:
        tokens: list[int] = []
        async for out in engine.generate(f"{quantization}-{i}", prompts[i], params):
            tokens.extend(out.token_ids)
        return tokens

    try:
        return list(await asyncio.gather(*(one(i) for i in range(len(prompts)))))
    finally:
        engine.stop()


def common_prefix(a: list[int], b: list[int]) -> int:
    count = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        count += 1
    return count


def git_commit() -> str:
    out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=HERE, check=False)
    dirty = subprocess.run(
        ["git", "status", "--porcelain"], capture_output=True, text=True, cwd=HERE, check=False
    )
    return out.stdout.strip() + (" (with working tree changes)" if dirty.stdout.strip() else "")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hidden", type=int, default=256, help="hidden size (demo-chat: 128)")
    parser.add_argument("--layers", type=int, default=4, help="decoder layers (demo-chat: 2)")
    parser.add_argument("--steps", type=int, default=600, help="training steps (demo-chat: 400)")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--windows", type=int, default=64, help="teacher-forced windows of 64 tokens")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "llm_int8_quality.json")
    args = parser.parse_args()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from modelplane.local.corpus import load_corpus
    from modelplane.local.demo_chat import ChatTraining, chat_texts, train

    corpus = load_corpus()
    shape = ChatTraining(
        hidden_size=args.hidden,
        intermediate_size=3 * args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=max(1, args.hidden // 32),
        num_key_value_heads=max(1, args.hidden // 64),
        steps=args.steps,
    )
    with tempfile.TemporaryDirectory() as work:
        print(
            f"training the model ({shape.steps} steps, hidden {shape.hidden_size}, "
            f"{shape.num_hidden_layers} layers)...",
            flush=True,
        )
        trained = train(
            Path(work) / "model",
            corpus,
            shape,
            lambda s, n, loss: (
                print(f"  step {s}/{n} loss {loss:.3f}", flush=True) if s and s % 100 == 0 else None
            ),
        )
        print(f"  {trained.parameters:,} parameters, final loss {trained.loss:.3f}, {trained.seconds:.0f} s")
        auto: Any = AutoModelForCausalLM
        reference = auto.from_pretrained(str(trained.path), dtype=torch.float32).eval()
        quantized = auto.from_pretrained(str(trained.path), dtype=torch.float32).eval()
        bytes_fp32 = decoder_bytes(reference)
        swap_int8(quantized)
        bytes_int8 = decoder_bytes(quantized)
        tokenizer: Any = AutoTokenizer.from_pretrained(str(trained.path))
        ids = [
            i for text in chat_texts(corpus) for i in tokenizer(text, add_special_tokens=False)["input_ids"]
        ]
        forced = teacher_forced(reference, quantized, ids, 64, args.windows)
        print("teacher-forced: " + ", ".join(f"{k} {v:.4g}" for k, v in forced.items()))

        headings = [s.heading for s in corpus.sections if s.heading][: args.prompts]
        texts = [
            tokenizer.apply_chat_template(
                [{"role": "user", "content": h}], add_generation_prompt=True, tokenize=False
            )
            for h in headings
        ]
        prompts = [list(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
        fp32 = asyncio.run(engine_completions(trained.path, prompts, args.max_tokens, None))
        int8 = asyncio.run(engine_completions(trained.path, prompts, args.max_tokens, "int8"))
    pairs = []
    shares = []
    for heading, a, b in zip(headings, fp32, int8, strict=True):
        prefix = common_prefix(a, b)
        shares.append(prefix / max(len(a), 1))
        pairs.append(
            {
                "prompt": heading,
                "fp32": tokenizer.decode(a),
                "int8": tokenizer.decode(b),
                "same_tokens_before_first_difference": prefix,
                "fp32_tokens": len(a),
                "int8_tokens": len(b),
            }
        )
    identical = sum(1 for a, b in zip(fp32, int8, strict=True) if a == b)
    engine_figures = {
        "prompts": len(prompts),
        "identical_completions": identical,
        "mean_share_before_first_difference": sum(shares) / len(shares),
    }
    print(
        f"engine, greedy: {identical}/{len(prompts)} completions identical; "
        "mean share before the first difference "
        f"{engine_figures['mean_share_before_first_difference']:.3f}"
    )
    print(
        f"decoder weights: {bytes_fp32 / 1e6:.2f} MB fp32, {bytes_int8 / 1e6:.2f} MB int8 "
        f"({bytes_int8 / bytes_fp32:.2f}x)"
    )
    doc = {
        "command": " ".join(["benchmarks/llm_int8_quality.py", *sys.argv[1:]]),
        "commit": git_commit(),
        "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
        "versions": {
            "torch": torch.__version__,
            "transformers": version("transformers"),
            "modelplane": version("modelplane"),
        },
        "model": {
            "parameters": trained.parameters,
            "final_loss": trained.loss,
            "training": trained.params(),
            "corpus": trained.corpus_source,
        },
        "decoder_bytes": {"fp32": bytes_fp32, "int8": bytes_int8},
        "teacher_forced": forced,
        "engine_greedy": engine_figures,
        "completions": pairs,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"raw results: {args.output}")


if __name__ == "__main__":
    main()
