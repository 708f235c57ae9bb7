"""The naive baseline: a bare FastAPI ``/v1/completions`` over ``model.generate``, one request at a time.

What a team writes first to put a causal LM behind HTTP: ``transformers``' ``generate`` with a
streamer, under a lock (generate holds the model for the whole answer, so requests queue), and
OpenAI-shaped server-sent events out, one per token. Run with uvicorn; ``LLM_MODEL_DIR`` names
the model directory, ``LLM_DEVICE`` and ``LLM_DTYPE`` (default ``cpu``, ``float32``) where and how
it runs. ``ignore_eos`` in a request is honoured with ``min_new_tokens``.
"""

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.generation.streamers import BaseStreamer

MODEL_DIR = os.environ["LLM_MODEL_DIR"]
DEVICE = os.environ.get("LLM_DEVICE", "cpu")
DTYPE = getattr(torch, os.environ.get("LLM_DTYPE", "float32"))

tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR, local_files_only=True)
model = AutoModelForCausalLM.from_pretrained(MODEL_DIR, local_files_only=True, dtype=DTYPE).to(DEVICE).eval()
lock = asyncio.Lock()
app = FastAPI()


class TokenQueue(BaseStreamer):
    """Hands each generated token id to the event loop (``generate`` runs in a worker thread)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[int | None] = asyncio.Queue()
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate() first puts the prompt
            self.prompt_seen = True
            return
        for token in value.reshape(-1).tolist():
            self.loop.call_soon_threadsafe(self.queue.put_nowait, int(token))

    def end(self) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, None)


def generate(prompt_ids: torch.Tensor, body: dict[str, Any], streamer: TokenQueue) -> None:
    max_tokens = int(body.get("max_tokens") or 16)
    temperature = float(body.get("temperature", 1.0))
    with torch.inference_mode():
        model.generate(
            prompt_ids,
            attention_mask=torch.ones_like(prompt_ids),
            max_new_tokens=max_tokens,
            min_new_tokens=max_tokens if body.get("ignore_eos") else None,
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else None,
            top_p=None,
            top_k=None,
            pad_token_id=tokenizer.pad_token_id,
            streamer=streamer,
        )


def chunk(request_id: str, text: str, finish_reason: str | None = None) -> str:
    choice = {"index": 0, "text": text, "finish_reason": finish_reason}
    doc = {"id": request_id, "object": "text_completion", "created": int(time.time()), "choices": [choice]}
    return f"data: {json.dumps(doc)}\n\n"


async def completion_events(request_id: str, body: dict[str, Any]) -> AsyncIterator[str]:
    async with lock:
        prompt_ids = tokenizer(body["prompt"], return_tensors="pt").input_ids.to(DEVICE)
        streamer = TokenQueue(asyncio.get_running_loop())
        worker = asyncio.create_task(asyncio.to_thread(generate, prompt_ids, body, streamer))
        generated: list[int] = []
        text = ""
        while (token := await streamer.queue.get()) is not None:
            generated.append(token)
            full = tokenizer.decode(generated, skip_special_tokens=True)
            if full.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
                continue
            yield chunk(request_id, full[len(text) :])
            text = full
        await worker
    yield chunk(request_id, "", "length" if len(generated) >= int(body.get("max_tokens") or 16) else "stop")
    if (body.get("stream_options") or {}).get("include_usage"):
        prompt_tokens = int(prompt_ids.shape[-1])
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(generated),
            "total_tokens": prompt_tokens + len(generated),
        }
        yield f"data: {json.dumps({'id': request_id, 'choices': [], 'usage': usage})}\n\n"
    yield "data: [DONE]\n\n"


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/v1/completions", response_model=None)
async def completions(request: Request) -> StreamingResponse | JSONResponse:
    body = await request.json()
    request_id = f"cmpl-{uuid.uuid4().hex}"
    if body.get("stream"):
        return StreamingResponse(completion_events(request_id, body), media_type="text/event-stream")
    texts = [
        json.loads(event[6:])["choices"]
        async for event in completion_events(request_id, body)
        if not event.startswith("data: [DONE]")
    ]
    text = "".join(c[0]["text"] for c in texts if c)
    return JSONResponse(
        {"id": request_id, "object": "text_completion", "choices": [{"index": 0, "text": text}]}
    )
