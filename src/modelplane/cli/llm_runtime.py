"""``modelplane llm-runtime``: serve a Hugging Face causal LM over the OpenAI API (and V2 generate).

The engine's flags carry vLLM's names (``--max-model-len``, ``--max-num-seqs``, ...), so the same
ModelDeployment settings map onto either engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modelplane.cli.options import DrainDelay, DrainTimeout


def llm_runtime(
    model: Annotated[
        Path,
        typer.Argument(
            help="A Hugging Face model directory: config.json, *.safetensors and the tokenizer files.",
            exists=True,
            file_okay=False,
            resolve_path=True,
        ),
    ],
    served_model_name: Annotated[
        str | None,
        typer.Option("--served-model-name", help="The name clients use (default: the directory's name)."),
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on")] = "0.0.0.0",  # noqa: S104
    port: Annotated[int, typer.Option("--port", help="HTTP port (OpenAI API, V2 generate, /metrics)")] = 8000,
    dtype: Annotated[
        str,
        typer.Option(
            "--dtype", help="auto (float32 on CPU, the checkpoint's on GPU), float32, bfloat16, float16"
        ),
    ] = "auto",
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N")] = "auto",
    max_model_len: Annotated[
        int | None,
        typer.Option("--max-model-len", min=1, help="Prompt plus completion tokens (default: the model's)"),
    ] = None,
    max_num_seqs: Annotated[
        int, typer.Option("--max-num-seqs", min=1, help="Sequences in one batch at most")
    ] = 64,
    max_num_batched_tokens: Annotated[
        int,
        typer.Option("--max-num-batched-tokens", min=1, help="Tokens computed in one engine step at most"),
    ] = 2048,
    block_size: Annotated[int, typer.Option("--block-size", min=1, help="Tokens per KV-cache block")] = 16,
    kv_cache_bytes: Annotated[
        int | None,
        typer.Option(
            "--kv-cache-bytes", min=1, help="KV-cache size (default: 256 MiB on CPU, see below on GPU)"
        ),
    ] = None,
    gpu_memory_utilization: Annotated[
        float,
        typer.Option(
            "--gpu-memory-utilization",
            min=0.01,
            max=1.0,
            help="Share of the GPU memory left after the weights",
        ),
    ] = 0.9,
    max_waiting: Annotated[
        int, typer.Option("--max-waiting", min=1, help="Requests queued at most; more get 429")
    ] = 1024,
    prefix_caching: Annotated[
        bool,
        typer.Option(
            "--enable-prefix-caching/--no-enable-prefix-caching", help="Share cached prompt prefixes"
        ),
    ] = True,
    quantization: Annotated[
        str | None, typer.Option("--quantization", help="int8: weight-only int8 linear layers")
    ] = None,
    max_body_bytes: Annotated[
        int, typer.Option("--max-body-bytes", min=1, help="Largest accepted request body")
    ] = 16 * 1024 * 1024,
    drain_timeout: DrainTimeout = 30.0,
    drain_delay: DrainDelay = 0.0,
) -> None:
    """Serve a causal language model with continuous batching: OpenAI's API and Triton's generate."""
    from modelplane.serving.runtime.generative.config import EngineConfig
    from modelplane.serving.runtime.generative.server import LlmRuntimeOptions, run

    name = served_model_name or model.name
    config = EngineConfig(
        model_dir=str(model),
        model_name=name,
        dtype=dtype,  # type: ignore[arg-type]  # checked by the engine, which names the choices
        device=device,
        block_size=block_size,
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens,
        max_model_len=max_model_len,
        kv_cache_bytes=kv_cache_bytes,
        gpu_memory_fraction=gpu_memory_utilization,
        max_waiting=max_waiting,
        enable_prefix_caching=prefix_caching,
        quantization=quantization,  # type: ignore[arg-type]  # checked by EngineConfig.check
    )
    try:
        config.check()
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    run(
        LlmRuntimeOptions(
            engine=config,
            served_model_name=name,
            host=host,
            port=port,
            max_body_bytes=max_body_bytes,
            drain_timeout_s=drain_timeout,
            drain_delay_s=drain_delay,
        )
    )
