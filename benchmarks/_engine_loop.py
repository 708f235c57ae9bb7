"""The generative engine's decode loop in-process, next to transformers' ``generate`` on the same weights.

A helper of the benchmarks (not a side-by-side peer benchmark of its own): it builds a random-weight
Llama from a config (by default about 50M parameters: hidden 512, 8 layers, 8 heads, intermediate
1408, vocabulary 32000) with a word-level tokenizer of the same vocabulary, runs the engine on N
concurrent greedy streams of P prompt tokens and T output tokens, and prints output tokens/s with
the mean and p50 of its decode steps (the steps that computed no prompt token). ``--hf`` adds
``model.generate`` on one padded batch of the same prompts, the reference for "what torch does".

``--engine-source DIR`` loads the engine's modules from DIR, a copy of the package from another
revision (``git archive REV serving/runtime/generative``), so that two versions run back to back
under the same conditions with this same script:

    .venv/bin/python benchmarks/_engine_loop.py --streams 1 32 --repeats 3 --hf
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

GENERATIVE = "modelplane.serving.runtime.generative"


@dataclass(frozen=True)
class Shape:
    """The model's size; the defaults are the ~50M-parameter Llama of the engine's performance goal."""

    hidden_size: int = 512
    intermediate_size: int = 1408
    num_hidden_layers: int = 8
    num_attention_heads: int = 8
    num_key_value_heads: int = 8
    vocab_size: int = 32000


@dataclass(frozen=True)
class LoopResult:
    """One run of N streams: output tokens per second (wall time) and the decode steps' times."""

    label: str
    streams: int
    tokens_per_s: float
    step_mean_ms: float | None = None
    step_p50_ms: float | None = None


def use_engine_source(source: Path | None) -> None:
    """Make the engine's modules load from ``source`` (an older copy of the package) instead."""
    if source is None:
        return
    package = importlib.import_module(GENERATIVE)
    package.__path__ = [str(source.resolve())]


def make_word_tokenizer_dir(path: Path, vocab_size: int) -> Path:
    """A word-level tokenizer of ``vocab_size`` tokens (``w3``...; 0-2 pad, BOS, EOS): any id decodes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>"]
    vocab = {token: i for i, token in enumerate(specials)}
    vocab.update({f"w{i}": i for i in range(len(specials), vocab_size)})
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))  # noqa: S106 (a token)
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    fast: Any = PreTrainedTokenizerFast  # untyped in transformers
    wrapped = fast(
        tokenizer_object=tokenizer,
        bos_token="<s>",  # noqa: S106 (a token, not a password)
        eos_token="</s>",  # noqa: S106
        pad_token="<pad>",  # noqa: S106
    )
    path.mkdir(parents=True, exist_ok=True)
    wrapped.save_pretrained(str(path))
    return path


def make_model_dir(root: Path, shape: Shape) -> Path:
    from modelplane.testing.generative import make_llama_dir

    tokenizer_dir = make_word_tokenizer_dir(root / "tokenizer", shape.vocab_size)
    return make_llama_dir(
        root / "model",
        tokenizer_dir,
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads,
        max_position_embeddings=2048,
        initializer_range=0.02,
    )


def random_prompts(count: int, length: int, vocab_size: int, seed: int = 0) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab_size, (count, length), generator=generator)
    prompts: list[list[int]] = ids.tolist()
    return prompts


def percentile_50(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


async def run_engine_streams(engine: Any, prompts: list[list[int]], max_tokens: int, tag: str) -> int:
    """All prompts at once, greedy, EOS ignored; the number of output tokens."""
    from modelplane.serving.runtime.generative.types import SamplingParams

    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)

    async def stream(i: int) -> int:
        return sum([len(o.token_ids) async for o in engine.generate(f"{tag}-{i}", prompts[i], params)])

    return sum(await asyncio.gather(*(stream(i) for i in range(len(prompts)))))


async def measure_engine(
    model_dir: Path, prompts: list[list[int]], max_tokens: int, repeats: int, profile: Path | None
) -> list[LoopResult]:
    """``repeats`` runs of all prompts through one engine (after a warm-up)."""
    from modelplane.serving.runtime.generative.config import EngineConfig
    from modelplane.serving.runtime.generative.engine import LLMEngine

    decode_steps: list[float] = []

    def on_step(info: Any) -> None:
        if info.num_prefill_tokens == 0:
            decode_steps.append(info.duration_s)

    config = EngineConfig(
        model_dir=str(model_dir),
        dtype="float32",
        device="cpu",
        max_num_seqs=max(len(prompts), 1),
        max_num_batched_tokens=max(2048, len(prompts)),
        kv_cache_bytes=512 << 20,
        enable_prefix_caching=False,  # every repeat computes its prompts again
    )
    engine = LLMEngine(config, on_step=on_step)
    engine.start()
    await asyncio.to_thread(engine.wait_ready, 300)
    results = []
    try:
        await run_engine_streams(engine, prompts, 4, "warm-up")
        for repeat in range(repeats):
            decode_steps.clear()
            profiler = cProfile.Profile() if profile is not None and repeat == 0 else None
            started = time.perf_counter()
            if profiler is not None:
                profiler.enable()  # the event loop's side; the engine thread is profiled by torch
            tokens = await run_engine_streams(engine, prompts, max_tokens, f"run{repeat}")
            elapsed = time.perf_counter() - started
            if profiler is not None and profile is not None:
                profiler.disable()
                profiler.dump_stats(str(profile))
            results.append(
                LoopResult(
                    "engine",
                    len(prompts),
                    tokens / elapsed,
                    1000 * statistics.fmean(decode_steps) if decode_steps else None,
                    1000 * percentile_50(decode_steps) if decode_steps else None,
                )
            )
    finally:
        engine.stop()
    return results


def measure_transformers(
    model_dir: Path, prompts: list[list[int]], max_tokens: int, repeats: int
) -> list[LoopResult]:
    """``model.generate`` on one batch of all prompts (same length: no padding), greedy."""
    import transformers

    auto: Any = transformers.AutoModelForCausalLM
    model = auto.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    model.generation_config.eos_token_id = None  # like ignore_eos
    model.generation_config.pad_token_id = 0
    batch = torch.tensor(prompts)
    results = []
    with torch.inference_mode():
        model.generate(batch, attention_mask=torch.ones_like(batch), max_new_tokens=2, do_sample=False)
        for _ in range(repeats):
            started = time.perf_counter()
            model.generate(
                batch, attention_mask=torch.ones_like(batch), max_new_tokens=max_tokens, do_sample=False
            )
            elapsed = time.perf_counter() - started
            results.append(LoopResult("transformers", len(prompts), len(prompts) * max_tokens / elapsed))
    return results


def measure_ceiling(model_dir: Path, streams: int, prompt_tokens: int, max_tokens: int, repeats: int) -> str:
    """What the weights' arithmetic alone allows on this machine, for N streams of P in and T out.

    Times the model's forward (transformers, no KV cache, no attention to speak of: one position)
    for a decode step of ``streams`` sequences, and for one prompt of ``prompt_tokens`` computing
    logits for its last position only (as a server's prefill does). A server that decodes all
    streams in every step and computes each prompt once needs at least ``max_tokens`` decode steps
    and ``streams`` prefills for ``streams * max_tokens`` output tokens: its output tokens/s cannot
    exceed that ratio, whatever its scheduling; attention over the context only adds to it.
    """
    import transformers

    auto: Any = transformers.AutoModelForCausalLM
    model = auto.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    decode_ids = torch.randint(3, 1000, (streams, 1))
    prompt_ids = torch.randint(3, 1000, (1, prompt_tokens))

    def best_of(call: Any) -> float:
        times = []
        for _ in range(repeats + 2):
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
        return min(times[2:])  # the fastest after two warm-ups: a bound, not a typical figure

    with torch.inference_mode():
        decode_s = best_of(lambda: model(decode_ids, use_cache=False))
        prefill_s = best_of(lambda: model(prompt_ids, use_cache=False, logits_to_keep=1))
    total_s = max_tokens * decode_s + streams * prefill_s
    ceiling = streams * max_tokens / total_s
    return (
        f"ceiling       streams {streams:>3}  {ceiling:8.1f} tok/s  (decode step of {streams}: "
        f"{1000 * decode_s:.2f} ms, prefill of {prompt_tokens}: {1000 * prefill_s:.2f} ms; "
        f"{max_tokens} steps + {streams} prefills = {total_s:.2f} s for {streams * max_tokens} tokens)"
    )


def summarize(results: list[LoopResult]) -> str:
    """The medians over repeats, with every repeat's tokens/s."""
    first = results[0]
    rates = [r.tokens_per_s for r in results]
    line = f"{first.label:<13} streams {first.streams:>3}  {statistics.median(rates):8.1f} tok/s"
    means = [r.step_mean_ms for r in results if r.step_mean_ms is not None]
    p50s = [r.step_p50_ms for r in results if r.step_p50_ms is not None]
    if means and p50s:
        line += (
            f"  decode step mean {statistics.median(means):6.2f} ms  p50 {statistics.median(p50s):6.2f} ms"
        )
    return line + "  (runs: " + ", ".join(f"{r:.1f}" for r in rates) + ")"


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hf", action="store_true", help="also run transformers' generate")
    parser.add_argument(
        "--ceiling", action="store_true", help="also the bound the weights' arithmetic sets (no engine)"
    )
    parser.add_argument("--no-engine", action="store_true", help="skip the engine (with --ceiling or --hf)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--layers", type=int, default=Shape.num_hidden_layers)
    parser.add_argument("--model-dir", type=Path, help="where the model is built (reused when there)")
    parser.add_argument("--engine-source", type=Path, help="load the engine's modules from this copy")
    parser.add_argument("--profile", type=Path, help="cProfile the event loop's side of the first run")
    return parser.parse_args()


def main() -> None:
    args = arguments()
    use_engine_source(args.engine_source)
    if args.threads:
        torch.set_num_threads(args.threads)
    shape = Shape(num_hidden_layers=args.layers)
    with tempfile.TemporaryDirectory() as work:
        model_dir = args.model_dir or Path(work)
        if not (model_dir / "model" / "config.json").is_file():
            make_model_dir(model_dir, shape)
        model_dir = model_dir / "model"
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {shape}")
        for streams in args.streams:
            prompts = random_prompts(streams, args.prompt_tokens, shape.vocab_size)
            if args.ceiling:
                print(measure_ceiling(model_dir, streams, args.prompt_tokens, args.max_tokens, args.repeats))
            if not args.no_engine:
                found = asyncio.run(
                    measure_engine(model_dir, prompts, args.max_tokens, args.repeats, args.profile)
                )
                print(summarize(found), flush=True)
            if args.hf:
                print(
                    summarize(measure_transformers(model_dir, prompts, args.max_tokens, args.repeats)),
                    flush=True,
                )


if __name__ == "__main__":
    main()
