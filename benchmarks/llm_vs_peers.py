"""Generative runtime vs transformers serve and a plain generate server: one Llama, streamed, side by side.

Peers, all up at once on the same machine, the same random-weight Llama (``--model-size bench``:
about 58M parameters, hidden 512, 8 layers, vocab 32,000), the same prompts and the same client:
this project's engine (``modelplane llm-runtime``); Hugging Face's ``transformers serve`` at the
pinned transformers of this environment, continuous batching on (``--continuous-batching
--attn-implementation sdpa``, its documented fast configuration; it needs ``accelerate``, which goes
into ``benchmarks/.work/venv-transformers-serve`` on first use, the rest comes from this
environment); and the naive baseline, ``peers/fastapi_generate.py`` (FastAPI + ``model.generate``,
one request at a time under a lock). Every peer answers ``/v1/completions`` with server-sent
events; every request is greedy, ``--prompt-tokens`` in and exactly ``--output-tokens`` out (EOS
ignored). Closed-loop load at each of ``--levels`` streams, after a warm-up of every peer; per
peer and level: output tokens/s, time to first token p50/p99, inter-token latency p50/p99, and
the servers' CPU time per 1,000 tokens. The limit is measured in the same run: the engine's own
decode loop in this process (its Python API, one sequence, the same weights).

    .venv/bin/python benchmarks/llm_vs_peers.py
    .venv/bin/python benchmarks/llm_vs_peers.py --model-size small --levels 1,4 --requests 4
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

import httpx
import numpy as np
from safetensors import safe_open

from modelplane.local.processes import free_port, modelplane_command, spawn
from modelplane.testing.generative import make_llama_dir, train_tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runtime_vs_peers import PEER_PACKAGES, WORK, ensure_peer_venv, group_cpu_seconds, machine

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ENDPOINT = "/v1/completions"
OURS, TRANSFORMERS_SERVE, PLAIN = "modelplane", "transformers-serve", "fastapi-generate"
PEERS = (OURS, TRANSFORMERS_SERVE, PLAIN)
SERVED_NAME = "bench-llama"
# transformers serve loads models with a device map, which needs accelerate (its `serving` extra
# lists it); installed without dependencies so that the venv reuses this environment's torch.
ACCELERATE = "accelerate==1.15.0"
PEER_PACKAGES[TRANSFORMERS_SERVE] = ["--no-deps", ACCELERATE, "psutil==7.2.2"]
TRANSFORMERS_SERVE_FLAGS = ("--continuous-batching", "--attn-implementation", "sdpa")

# Model shapes: "bench" is the one the targets are about; "small" runs in seconds (tests, trials).
MODEL_SIZES: dict[str, dict[str, int]] = {
    "small": {
        "vocab_size": 1024,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
    },
    "bench": {
        "vocab_size": 32000,
        "hidden_size": 512,
        "intermediate_size": 1408,
        "num_hidden_layers": 8,
        "num_attention_heads": 8,
        "num_key_value_heads": 8,
        "max_position_embeddings": 2048,
    },
}
DTYPE_BYTES = {"float32": 4, "auto": 4, "bfloat16": 2, "float16": 2}

# The targets: output tokens/s at THROUGHPUT_LEVEL streams against each peer, and the engine's
# inter-token latency at one stream over HTTP against its own in-process decode loop.
THROUGHPUT_LEVEL = 32
THROUGHPUT_TARGETS = {TRANSFORMERS_SERVE: 3.0, PLAIN: 10.0}
ITL_LIMIT_FACTOR = 1.2


# The pure part: figures from recorded event times, ratios, verdicts, the raw file.


@dataclass
class RequestRecord:
    """One streamed request: when it was sent and when each text event arrived (perf_counter
    seconds), the token counts the server reported, and what went wrong if anything did."""

    sent: float
    events: list[float] = field(default_factory=list)
    prompt_tokens: int = 0
    output_tokens: int = 0
    error: str | None = None


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile, interpolated linearly between ranks (numpy's default); NaN when empty."""
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else math.nan


def ttft_ms(record: RequestRecord) -> float:
    """Time to first token: from sending the request to the first event with text."""
    return (record.events[0] - record.sent) * 1000


def itl_ms(record: RequestRecord) -> list[float]:
    """Inter-token latencies: the gaps between consecutive text events of one answer."""
    return [
        (later - earlier) * 1000 for earlier, later in zip(record.events, record.events[1:], strict=False)
    ]


def check_record(record: RequestRecord, prompt_tokens: int, output_tokens: int) -> RequestRecord:
    """Marks an answer of the wrong size as failed: every peer must do the same work."""
    if record.error is None and (record.prompt_tokens, record.output_tokens) != (
        prompt_tokens,
        output_tokens,
    ):
        record.error = (
            f"{record.prompt_tokens} prompt and {record.output_tokens} output tokens, "
            f"expected {prompt_tokens} and {output_tokens}"
        )
    return record


def summarize(records: Sequence[RequestRecord], wall_s: float) -> dict[str, float]:
    """One point's figures: output tokens/s over the wall time, TTFT and ITL percentiles over
    the successful requests, and the mean time per output token after the first (TPOT)."""
    good = [r for r in records if r.error is None and r.events]
    ttfts = [ttft_ms(r) for r in good]
    itls = [gap for r in good for gap in itl_ms(r)]
    tpots = [(r.events[-1] - r.events[0]) * 1000 / (r.output_tokens - 1) for r in good if r.output_tokens > 1]
    tokens = sum(r.output_tokens for r in good)
    return {
        "requests": len(records),
        "errors": len(records) - len(good),
        "output_tokens": tokens,
        "wall_s": wall_s,
        "tokens_per_s": tokens / wall_s if wall_s > 0 else math.nan,
        "ttft_p50_ms": percentile(ttfts, 50),
        "ttft_p99_ms": percentile(ttfts, 99),
        "itl_p50_ms": percentile(itls, 50),
        "itl_p99_ms": percentile(itls, 99),
        "tpot_mean_ms": float(np.mean(tpots)) if tpots else math.nan,
        "events_per_token": sum(len(r.events) for r in good) / tokens if tokens else math.nan,
    }


Results = dict[str, dict[int, dict[str, float]]]  # peer -> level -> figures


def ratios(results: Results, base: str = OURS) -> dict[str, dict[int, dict[str, float]]]:
    """``base`` against each other peer at each level both measured: output tokens/s as
    base/peer, and TTFT and ITL p50 as peer/base (above 1: ``base`` is faster on every figure)."""
    ours = results.get(base, {})
    table: dict[str, dict[int, dict[str, float]]] = {}
    for peer, points in results.items():
        if peer == base:
            continue
        for level in sorted(set(points) & set(ours)):
            mine, theirs = ours[level], points[level]
            table.setdefault(peer, {})[level] = {
                "tokens_per_s": _ratio(mine["tokens_per_s"], theirs["tokens_per_s"]),
                "ttft_p50": _ratio(theirs["ttft_p50_ms"], mine["ttft_p50_ms"]),
                "itl_p50": _ratio(theirs["itl_p50_ms"], mine["itl_p50_ms"]),
            }
    return table


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else math.nan


@dataclass(frozen=True)
class Verdict:
    target: str
    figure: str
    met: bool | None  # None: not measured in this run (a peer failed, or the level was not run)


def target_verdicts(results: Results, limit: dict[str, float] | None) -> list[Verdict]:
    """Each target, on this run's figures: throughput at THROUGHPUT_LEVEL streams against each
    peer, and ITL p50 at one stream within ITL_LIMIT_FACTOR of the in-process decode loop's."""
    verdicts = []
    table = ratios(results)
    for peer, floor in THROUGHPUT_TARGETS.items():
        target = f"c={THROUGHPUT_LEVEL} output tokens/s >= {floor:g}x {peer}"
        ratio = table.get(peer, {}).get(THROUGHPUT_LEVEL, {}).get("tokens_per_s", math.nan)
        verdicts.append(_verdict(target, f"{ratio:.2f}x", ratio, ratio >= floor))
    target = f"c=1 ITL p50 within {ITL_LIMIT_FACTOR:g}x the in-process decode loop"
    ours = results.get(OURS, {}).get(1, {}).get("itl_p50_ms", math.nan)
    inside = limit["itl_p50_ms"] if limit else math.nan
    factor = _ratio(ours, inside)
    figure = f"{ours:.2f} vs {inside:.2f} ms ({factor:.2f}x)"
    verdicts.append(_verdict(target, figure, factor, factor <= ITL_LIMIT_FACTOR))
    return verdicts


def _verdict(target: str, figure: str, value: float, met: bool) -> Verdict:
    return Verdict(target, "not measured", None) if math.isnan(value) else Verdict(target, figure, met)


def verdict_word(met: bool | None) -> str:
    return {True: "met", False: "MISSED", None: "n/a"}[met]


def request_row(peer: str, level: int, record: RequestRecord, level_start: float) -> dict[str, Any]:
    """One line of the per-request raw file: times in ms from the start of the point."""
    return {
        "peer": peer,
        "level": level,
        "sent_ms": round((record.sent - level_start) * 1000, 3),
        "event_ms": [round((t - record.sent) * 1000, 3) for t in record.events],
        "prompt_tokens": record.prompt_tokens,
        "output_tokens": record.output_tokens,
        "error": record.error,
    }


def record_from_row(row: dict[str, Any]) -> RequestRecord:
    """The inverse of :func:`request_row` (times relative to the request): to recompute figures."""
    return RequestRecord(
        sent=0.0,
        events=[t / 1000 for t in row["event_ms"]],
        prompt_tokens=row["prompt_tokens"],
        output_tokens=row["output_tokens"],
        error=row["error"],
    )


def raw_document(
    *,
    run: dict[str, Any],
    peers: dict[str, dict[str, Any]],
    limit: dict[str, float] | None,
    results: Results,
    verdicts: list[Verdict],
) -> dict[str, Any]:
    """The raw file: how it was run (machine, versions, commit, command, model, workload), each
    peer's configuration or why it could not be measured, the figures, ratios and verdicts."""
    return {
        "benchmark": "llm_vs_peers",
        **run,
        "peers": peers,
        "in_process_limit": limit,
        "results": {
            peer: {str(level): point for level, point in points.items()} for peer, points in results.items()
        },
        "ratios": {
            peer: {str(level): r for level, r in by_level.items()}
            for peer, by_level in ratios(results).items()
        },
        "targets": [asdict(v) for v in verdicts],
    }


def report_lines(results: Results, limit: dict[str, float] | None, verdicts: list[Verdict]) -> list[str]:
    """The printed summary: a row per peer and level, the ratios, the limit and the verdicts."""
    lines = [
        "",
        f"{'peer':18} {'c':>3} {'tok/s':>8} {'TTFT p50':>9} {'p99':>9} {'ITL p50':>8} {'p99':>8} "
        f"{'CPU s/1k tok':>12} {'errors':>6}",
    ]
    for peer, points in results.items():
        for level, p in sorted(points.items()):
            cpu = p.get("server_cpu_s_per_1k_tokens", math.nan)
            lines.append(
                f"{peer:18} {level:>3} {p['tokens_per_s']:8.1f} {p['ttft_p50_ms']:9.1f} "
                f"{p['ttft_p99_ms']:9.1f} {p['itl_p50_ms']:8.2f} {p['itl_p99_ms']:8.2f} {cpu:12.2f} "
                f"{p['errors']:>6.0f}"
            )
    lines.append(
        "(ms; output tokens/s over the point's wall time; server CPU = user+system of its processes)"
    )
    if limit:
        lines.append(
            f"\nin-process decode loop ({OURS} engine, 1 sequence): ITL p50 {limit['itl_p50_ms']:.2f} ms, "
            f"p99 {limit['itl_p99_ms']:.2f} ms, {limit['tokens_per_s']:.1f} tokens/s"
        )
    lines.append("")
    for peer, by_level in ratios(results).items():
        for level, r in sorted(by_level.items()):
            lines.append(
                f"{OURS} / {peer:18} c={level:<3} tokens/s {r['tokens_per_s']:6.2f}x   "
                f"TTFT p50 {r['ttft_p50']:6.2f}x   ITL p50 {r['itl_p50']:6.2f}x"
            )
    lines.append("(tokens/s ours/theirs; TTFT and ITL theirs/ours: above 1, ours is faster)\n")
    lines.extend(f"  {verdict_word(v.met):6} {v.target:58} {v.figure}" for v in verdicts)
    return lines


# The model and the prompts.


@dataclass(frozen=True)
class BenchModel:
    path: Path
    filler_tokens: int  # the tokenizer's extra tokens <t0>, <t1>, ...: one token each, for prompts
    parameters: int
    shape: dict[str, int]


def build_model(size: str, root: Path) -> BenchModel:
    """A random Llama of ``size`` with the project's test tokenizer, grown to the model's vocabulary
    with one-token fillers ``<tN>``: prompts of an exact length, and every generated token decodes
    to text of its own (so every peer sends one event per token)."""
    shape: dict[str, Any] = dict(MODEL_SIZES[size])
    vocab_size = shape.pop("vocab_size")
    tokenizer = train_tokenizer()
    fillers = vocab_size - len(tokenizer)
    tokenizer.add_tokens([f"<t{i}>" for i in range(fillers)])
    tokenizer.save_pretrained(str(root / "tokenizer"))
    path = make_llama_dir(root / "model", root / "tokenizer", **shape)
    return BenchModel(path, fillers, count_parameters(path), MODEL_SIZES[size])


def count_parameters(model_dir: Path) -> int:
    total = 0
    for file in model_dir.glob("*.safetensors"):
        with safe_open(str(file), framework="numpy") as weights:
            total += sum(math.prod(weights.get_slice(name).get_shape()) for name in weights.keys())  # noqa: SIM118
    return total


def prompt_text(index: int, prompt_tokens: int, fillers: int) -> str:
    """Prompt ``index``: ``prompt_tokens - 1`` random fillers (the tokenizer adds a BOS). Each index
    gives a different prompt from its first block on, so no peer reuses a cached prefix."""
    rng = random.Random(index)
    return "".join(f"<t{rng.randrange(fillers)}>" for _ in range(prompt_tokens - 1))


class Prompts:
    """Hands out prompts never used before in the run (warm-ups included)."""

    def __init__(self, prompt_tokens: int, fillers: int) -> None:
        self.prompt_tokens, self.fillers, self.used = prompt_tokens, fillers, 0

    def take(self, count: int) -> list[str]:
        start, self.used = self.used, self.used + count
        return [prompt_text(i, self.prompt_tokens, self.fillers) for i in range(start, self.used)]


# The peers.


@dataclass(frozen=True)
class Peer:
    name: str
    command: list[str]
    port: int
    model: str  # the request's "model"
    body: dict[str, Any]  # how this peer is told to ignore EOS
    env: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def kv_cache_bytes(shape: dict[str, int], dtype: str, sequences: int, tokens: int, block: int = 16) -> int:
    """A KV cache that holds ``sequences`` of ``tokens`` with room to spare (at least the CPU default)."""
    head_dim = shape["hidden_size"] // shape["num_attention_heads"]
    per_token = 2 * shape["num_hidden_layers"] * shape["num_key_value_heads"] * head_dim * DTYPE_BYTES[dtype]
    blocks = sequences * (math.ceil(tokens / block) + 1)
    return max(256 << 20, 2 * blocks * block * per_token)


def ours(model: BenchModel, args: argparse.Namespace, port: int) -> Peer:
    cache = kv_cache_bytes(model.shape, args.dtype, max(args.levels), args.prompt_tokens + args.output_tokens)
    flags = ["--device", args.device, "--dtype", args.dtype, "--max-num-seqs", str(max(64, *args.levels))]
    flags += ["--kv-cache-bytes", str(cache)]
    command = [*modelplane_command(), "llm-runtime", str(model.path), "--served-model-name", SERVED_NAME]
    command += ["--host", "127.0.0.1", "--port", str(port), *flags]
    return Peer(OURS, command, port, SERVED_NAME, {"ignore_eos": True}, settings={"flags": flags})


def transformers_serve(model: BenchModel, args: argparse.Namespace, port: int) -> Peer:
    python = ensure_peer_venv(TRANSFORMERS_SERVE)
    flags = [
        *TRANSFORMERS_SERVE_FLAGS,
        "--device",
        args.device,
        "--dtype",
        args.dtype,
        "--log-level",
        "warning",
    ]
    command = [str(python), "-m", "transformers.cli.transformers", "serve", str(model.path), *flags]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    # Pinned to the model on the command line: requests name it by its path. EOS can only be
    # turned off through a request's generation_config; -1 is the id no token has.
    body = {"generation_config": json.dumps({"eos_token_id": -1})}
    env = {"TRANSFORMERS_OFFLINE": "1"}
    settings = {"flags": flags, "continuous_batching": True, "accelerate": ACCELERATE.split("==")[1]}
    return Peer(TRANSFORMERS_SERVE, command, port, str(model.path), body, env, settings)


def plain(model: BenchModel, args: argparse.Namespace, port: int) -> Peer:
    command = [sys.executable, "-m", "uvicorn", "fastapi_generate:app", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--log-level", "warning", "--no-access-log"]
    env = {
        "PYTHONPATH": str(HERE / "peers"),
        "LLM_MODEL_DIR": str(model.path),
        "LLM_DEVICE": args.device,
        "LLM_DTYPE": "float32" if args.dtype == "auto" else args.dtype,
    }
    settings = {
        "module": "benchmarks/peers/fastapi_generate.py",
        "concurrency": "one request at a time (lock)",
    }
    return Peer(PLAIN, command, port, SERVED_NAME, {"ignore_eos": True}, env, settings)


BUILDERS = {OURS: ours, TRANSFORMERS_SERVE: transformers_serve, PLAIN: plain}


@contextlib.asynccontextmanager
async def running(peer: Peer, probe: str, prompt_tokens: int, timeout_s: float = 600.0) -> AsyncIterator[int]:
    """The peer's server, up until the block ends; yields its process group (its pid). Ready once
    ``/health`` answers 200 and a short request (``probe``) streams the right number of tokens
    (counted by the server's usage: a token that decodes to no text of its own has no event)."""
    log = WORK / f"{peer.name}.log"
    log.unlink(missing_ok=True)
    process = spawn(peer.command, log, env={"HF_HUB_OFFLINE": "1", **peer.env})
    try:
        await wait_ready(peer, process, log, timeout_s)
        async with httpx.AsyncClient(timeout=httpx.Timeout(30.0, read=timeout_s)) as client:
            record = check_record(await stream_request(client, peer, probe, 4), prompt_tokens, 4)
        if record.error or not record.events:
            raise RuntimeError(f"{peer.name}'s first answer (4 tokens): {record.error}; see {relative(log)}")
        yield process.pid
    finally:
        stop(process)


async def wait_ready(peer: Peer, process: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=5.0) as client:
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{peer.name} exited with {process.returncode}; end of {relative(log)}:\n{tail(log)}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(peer.url + "/health")).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{peer.name} did not answer /health within {timeout_s:.0f}s; see {relative(log)}"
                )
            await asyncio.sleep(0.5)


def relative(path: Path) -> str:
    return os.path.relpath(path, REPO)


def tail(log: Path, chars: int = 2000) -> str:
    return log.read_text(errors="replace")[-chars:]


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's whole process group (transformers serve runs its model in a child)."""
    for signal_number, wait_s in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal_number)
        try:
            process.wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


# The load.


async def stream_request(
    client: httpx.AsyncClient, peer: Peer, prompt: str, output_tokens: int
) -> RequestRecord:
    """One greedy streamed completion; the time of every event that carries text."""
    body = {
        "model": peer.model,
        "prompt": prompt,
        "max_tokens": output_tokens,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
        **peer.body,
    }
    record = RequestRecord(sent=time.perf_counter())
    try:
        async with client.stream("POST", peer.url + ENDPOINT, json=body) as response:
            if response.status_code != 200:
                await response.aread()
                record.error = f"HTTP {response.status_code}: {response.text[:200]}"
                return record
            async for line in response.aiter_lines():
                read_event(line, record)
    except httpx.HTTPError as error:
        record.error = f"{type(error).__name__}: {error}"
    return record


def read_event(line: str, record: RequestRecord) -> None:
    """One line of a server-sent event stream into ``record``: a text event's arrival time, the usage."""
    if not line.startswith("data:"):
        return
    data = line[5:].strip()
    if data == "[DONE]":
        return
    now = time.perf_counter()
    doc = json.loads(data)
    if "error" in doc:
        record.error = str(doc["error"])[:200]
    if any(choice.get("text") for choice in doc.get("choices") or ()):
        record.events.append(now)
    if doc.get("usage"):
        record.prompt_tokens = int(doc["usage"]["prompt_tokens"])
        record.output_tokens = int(doc["usage"]["completion_tokens"])


async def run_point(
    peer: Peer, prompts: list[str], level: int, output_tokens: int
) -> tuple[list[RequestRecord], float, float]:
    """``prompts`` through ``level`` closed-loop streams; returns the records, the start time and
    the wall time (from the first request sent to the last answer's end)."""
    pending = iter(prompts)
    records: list[RequestRecord] = []
    limits = httpx.Limits(max_connections=level, max_keepalive_connections=level)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(30.0, read=1800.0)) as client:

        async def stream() -> None:
            for prompt in pending:
                records.append(await stream_request(client, peer, prompt, output_tokens))

        start = time.perf_counter()
        await asyncio.gather(*(stream() for _ in range(level)))
        return records, start, time.perf_counter() - start


async def warm_up(peer: Peer, prompts: Prompts, levels: list[int]) -> None:
    """Short answers at one stream and at the highest level: first-call costs, batch shapes."""
    await run_point(peer, prompts.take(2), 1, 8)
    await run_point(peer, prompts.take(max(levels)), max(levels), 16)


async def decode_limit(
    model: BenchModel, args: argparse.Namespace, prompts: Prompts, runs: int = 3
) -> dict[str, float]:
    """The engine's own decode loop in this process (its Python API, no HTTP): ``runs`` answers of
    one sequence, each event timed as it leaves ``generate``."""
    from modelplane.serving.runtime.generative.config import EngineConfig
    from modelplane.serving.runtime.generative.engine import LLMEngine
    from modelplane.serving.runtime.generative.types import SamplingParams

    cache = kv_cache_bytes(model.shape, args.dtype, 1, args.prompt_tokens + args.output_tokens)
    engine = LLMEngine(
        EngineConfig(str(model.path), device=args.device, dtype=args.dtype, kv_cache_bytes=cache)
    )
    engine.start()
    await asyncio.to_thread(engine.wait_ready, 600)
    params = SamplingParams(max_tokens=args.output_tokens, temperature=0.0, ignore_eos=True)
    records = []
    try:
        for index, text in enumerate(prompts.take(runs + 1)):
            ids = engine.tokenizer.encode(text)
            record = RequestRecord(sent=time.perf_counter(), prompt_tokens=len(ids))
            async for output in engine.generate(f"limit-{index}", ids, params):
                record.events.append(time.perf_counter())
                record.output_tokens += len(output.token_ids)
            records.append(check_record(record, args.prompt_tokens, args.output_tokens))
    finally:
        engine.stop()
    return summarize(records[1:], sum(r.events[-1] - r.sent for r in records[1:] if r.events))


@dataclass
class Run:
    results: Results = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)


async def measure(
    peers: list[Peer], model: BenchModel, args: argparse.Namespace, run: Run
) -> dict[str, float] | None:
    """Every peer up at once and warmed up, the in-process limit, then each level: the peers one
    after the other in an order that rotates per level, so a noisy spell does not hit one peer."""
    prompts = Prompts(args.prompt_tokens, model.filler_tokens)
    async with contextlib.AsyncExitStack() as stack:
        groups: dict[str, int] = {}
        for peer in peers:
            print(f"starting {peer.name}", flush=True)
            try:
                server = running(peer, prompts.take(1)[0], args.prompt_tokens)
                groups[peer.name] = await stack.enter_async_context(server)
                print(f"  warming up {peer.name}", flush=True)
                await warm_up(peer, prompts, args.levels)
            except (RuntimeError, OSError) as error:
                run.failures[peer.name] = str(error)
                print(f"  {peer.name} could not be measured: {error}", flush=True)
        live = [p for p in peers if p.name in groups]
        if OURS not in groups:
            raise SystemExit(f"{OURS} could not be measured: {run.failures.get(OURS)}")
        print("in-process decode loop of the engine (the limit)", flush=True)
        limit = await decode_limit(model, args, prompts)
        print(f"  ITL p50 {limit['itl_p50_ms']:.2f} ms, {limit['tokens_per_s']:.1f} tokens/s", flush=True)
        for index, level in enumerate(args.levels):
            count = args.requests or max(16, 2 * level)
            for peer in live[index % len(live) :] + live[: index % len(live)]:
                await measure_point(peer, groups[peer.name], prompts.take(count), level, args, run)
    return limit


async def measure_point(
    peer: Peer, group: int, prompts: list[str], level: int, args: argparse.Namespace, run: Run
) -> None:
    print(f"  {peer.name:18} c={level:<3} {len(prompts)} requests...", end="", flush=True)
    cpu_before = group_cpu_seconds(group)
    records, start, wall = await run_point(peer, prompts, level, args.output_tokens)
    cpu = group_cpu_seconds(group) - cpu_before
    for record in records:
        check_record(record, args.prompt_tokens, args.output_tokens)
        run.rows.append(request_row(peer.name, level, record, start))
    point = summarize(records, wall)
    point["server_cpu_s_per_1k_tokens"] = cpu * 1000 / max(point["output_tokens"], 1)
    run.results.setdefault(peer.name, {})[level] = point
    print(
        f" {point['tokens_per_s']:.1f} tok/s, TTFT p50 {point['ttft_p50_ms']:.0f} ms, "
        f"ITL p50 {point['itl_p50_ms']:.1f} ms, {point['errors']:.0f} errors ({wall:.0f} s)",
        flush=True,
    )
    first_error = next((r.error for r in records if r.error), None)
    if first_error:
        print(f"    first error: {first_error}", flush=True)


# How the run was made, for the raw file (paths relative to the repository).


def public(text: str, model_dir: Path) -> str:
    """``text`` without this machine's paths: the model directory and the repository's root."""
    return text.replace(str(model_dir), "MODEL_DIR").replace(str(REPO) + os.sep, "")


def git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=REPO, capture_output=True, text=True, check=False
    ).stdout.strip()


def versions(peer_python: Path | None) -> dict[str, str]:
    names = [
        "modelplane",
        "torch",
        "transformers",
        "tokenizers",
        "safetensors",
        "fastapi",
        "uvicorn",
        "httpx",
    ]
    found = {name: metadata.version(name) for name in names}
    if peer_python is not None:
        script = "import accelerate; print(accelerate.__version__)"
        found["accelerate (transformers-serve venv)"] = subprocess.run(
            [str(peer_python), "-c", script], capture_output=True, text=True, check=False
        ).stdout.strip()
    return found


def run_description(args: argparse.Namespace, model: BenchModel, peer_python: Path | None) -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": public(" ".join([os.path.relpath(sys.executable, REPO), *sys.argv]), model.path),
        "commit": git("rev-parse", "HEAD"),
        "working_tree_changes": bool(git("status", "--porcelain")),
        "machine": machine(),
        "versions": versions(peer_python),
        "model": {
            "size": args.model_size,
            "architecture": "LlamaForCausalLM, random weights (modelplane.testing.generative)",
            "parameters": model.parameters,
            "shape": model.shape,
            "device": args.device,
            "dtype": args.dtype,
        },
        "workload": {
            "endpoint": ENDPOINT,
            "streaming": True,
            "greedy": True,
            "prompt_tokens": args.prompt_tokens,
            "output_tokens": args.output_tokens,
            "levels": args.levels,
            "requests": {str(c): args.requests or max(16, 2 * c) for c in args.levels},
        },
    }


def peer_descriptions(
    peers: list[Peer], failures: dict[str, str], model: BenchModel
) -> dict[str, dict[str, Any]]:
    described: dict[str, dict[str, Any]] = {}
    for peer in peers:
        described[peer.name] = {
            "endpoint": ENDPOINT,
            "command": public(" ".join(peer.command), model.path),
            "request_fields": dict(peer.body),
            "settings": peer.settings,
            "error": public(failures[peer.name], model.path) if peer.name in failures else None,
        }
    for name, reason in failures.items():
        described.setdefault(name, {"endpoint": ENDPOINT, "error": public(reason, model.path)})
    return described


class Tee(io.StringIO):
    """Writes to the console and keeps a copy: the console output becomes the ``.txt`` raw file."""

    def __init__(self, console: TextIO) -> None:
        super().__init__()
        self.console = console

    def write(self, text: str) -> int:
        self.console.write(text)
        return super().write(text)

    def flush(self) -> None:
        self.console.flush()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--levels", default="1,8,32", help="comma-separated concurrent streams")
    parser.add_argument(
        "--requests", type=int, default=None, help="requests per level (default: 2 per stream, >= 16)"
    )
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--output-tokens", type=int, default=128)
    parser.add_argument("--model-size", choices=sorted(MODEL_SIZES), default="bench")
    parser.add_argument("--peers", default=",".join(PEERS), help="comma-separated, of: " + ", ".join(PEERS))
    parser.add_argument("--device", default="cpu", help="passed to every peer: cpu, cuda, cuda:N")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    parser.add_argument(
        "--out", type=Path, default=HERE / "results" / "llm_vs_peers.json", help="raw results (JSON)"
    )
    args = parser.parse_args(argv)
    args.levels = [int(c) for c in args.levels.split(",") if c]
    args.peers = [p for p in args.peers.split(",") if p]
    if unknown := set(args.peers) - set(PEERS):
        parser.error(f"unknown peers: {', '.join(sorted(unknown))}")
    if OURS not in args.peers:
        parser.error(f"{OURS} is what the others are compared with")
    if args.prompt_tokens < 2 or args.output_tokens < 2:
        parser.error("--prompt-tokens and --output-tokens must be at least 2")
    return args


def prepare(
    names: list[str], model: BenchModel, args: argparse.Namespace, failures: dict[str, str]
) -> list[Peer]:
    peers = []
    for name in names:
        try:
            peers.append(BUILDERS[name](model, args, free_port()))
        except (subprocess.CalledProcessError, OSError) as error:
            failures[name] = f"could not be set up: {error}"
            print(f"{name} could not be set up: {error}", flush=True)
    return peers


def write_raw(out: Path, document: dict[str, Any], rows: list[dict[str, Any]], console: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2) + "\n")
    out.with_name(out.stem + "_requests.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    out.with_suffix(".txt").write_text(console)


def main() -> None:
    args = parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    tee = Tee(sys.stdout)
    with contextlib.redirect_stdout(tee), tempfile.TemporaryDirectory() as tmp:
        print(f"building the {args.model_size} model (random weights)...", flush=True)
        model = build_model(args.model_size, Path(tmp))
        print(f"  {model.parameters / 1e6:.1f}M parameters", flush=True)
        run = Run()
        peers = prepare(args.peers, model, args, run.failures)
        peer_python = next((Path(p.command[0]) for p in peers if p.name == TRANSFORMERS_SERVE), None)
        description = run_description(args, model, peer_python)
        print(json.dumps(description, indent=2), flush=True)
        limit = asyncio.run(measure(peers, model, args, run))
        verdicts = target_verdicts(run.results, limit)
        for line in report_lines(run.results, limit, verdicts):
            print(line)
        for name, reason in run.failures.items():
            print(f"{name} was not measured: {public(reason, model.path)}")
        document = raw_document(
            run=description,
            peers=peer_descriptions(peers, run.failures, model),
            limit=limit,
            results=run.results,
            verdicts=verdicts,
        )
        print(f"raw results: {relative(args.out)} (and its _requests.jsonl and .txt)")
    write_raw(args.out, document, run.rows, tee.getvalue())


if __name__ == "__main__":
    main()
