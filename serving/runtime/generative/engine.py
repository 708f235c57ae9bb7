"""The asynchronous engine: :class:`.types.Engine` over a background thread that runs the steps.

Threading: the event loop never touches torch. ``generate()`` checks the request, puts it in an
inbox (a list under a lock) and wakes the engine thread; the thread loops: drain the inbox and
the aborts, run one :class:`.core.EngineCore` step, hand each increment to its request's
``asyncio.Queue`` through ``loop.call_soon_threadsafe`` (one call per event loop per step). A
consumer that stops early (``aclose()``, cancellation, a dropped iterator) queues an abort that
the thread applies before its next step: the sequence leaves the batch, its blocks are freed.

The thread loads the weights itself, so :meth:`LLMEngine.start` returns at once and
:attr:`LLMEngine.ready` turns true when the model is on its device (:meth:`LLMEngine.wait_ready`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncGenerator, Callable
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from pathlib import Path

import torch

from modelplane.serving.runtime.generative.block_manager import BlockManager
from modelplane.serving.runtime.generative.config import DEFAULT_CPU_KV_CACHE_BYTES, EngineConfig
from modelplane.serving.runtime.generative.core import EngineCore, StepInfo
from modelplane.serving.runtime.generative.loader import (
    load_model,
    read_model_config,
    resolve_device,
    resolve_dtype,
)
from modelplane.serving.runtime.generative.runner import ModelRunner, kv_bytes_per_block
from modelplane.serving.runtime.generative.scheduler import Scheduler
from modelplane.serving.runtime.generative.tokenizer import HFTokenizer
from modelplane.serving.runtime.generative.types import (
    EngineNotReadyError,
    EngineStats,
    GenerationError,
    GenerationOutput,
    InvalidRequestError,
    ModelInfo,
    QueueFullError,
    SamplingParams,
)

log = logging.getLogger(__name__)

_Item = GenerationOutput | BaseException


@dataclass(frozen=True)
class _Request:
    request_id: str
    prompt_token_ids: tuple[int, ...]
    params: SamplingParams


@dataclass(frozen=True)
class _Stream:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[_Item]


def _put_all(items: list[tuple[asyncio.Queue[_Item], _Item]]) -> None:
    for queue, item in items:
        queue.put_nowait(item)


class LLMEngine:
    """A Hugging Face causal LM served with continuous batching and a paged, prefix-cached KV cache.

    ``on_step`` (optional) is called on the engine thread after every step with a
    :class:`.core.StepInfo`; it must be quick and thread-safe (update counters, no I/O).
    """

    def __init__(self, config: EngineConfig, on_step: Callable[[StepInfo], None] | None = None) -> None:
        config.check()
        self.config = config
        self._model_config = read_model_config(config.model_dir)
        self._tokenizer = HFTokenizer(config.model_dir)
        # Cheap checks first, so that a misconfigured engine fails here rather than in its thread.
        self._device = resolve_device(config.device)
        self._dtype = resolve_dtype(config.dtype, self._device, self._model_config.raw)
        args = self._model_config.args
        max_len = config.max_model_len or args.max_position_embeddings
        if args.sliding_window is not None and max_len > args.sliding_window:
            if config.max_model_len is not None:
                raise ValueError(
                    f"max_model_len {max_len} is beyond the model's sliding window of {args.sliding_window} "
                    "tokens (sliding-window attention is not implemented)"
                )
            max_len = args.sliding_window
        self._info = ModelInfo(
            name=config.model_name or Path(config.model_dir).name,
            max_model_len=max_len,
            created=int(time.time()),
        )
        self._on_step = on_step
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._loaded = threading.Event()
        self._inbox: list[_Request] = []
        self._aborts: list[str] = []
        self._streams: dict[str, _Stream] = {}
        self._thread: threading.Thread | None = None
        self._core: EngineCore | None = None
        self._load_error: BaseException | None = None
        self._stopping = False
        self._stats = EngineStats()
        self._num_waiting = 0

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def tokenizer(self) -> HFTokenizer:
        return self._tokenizer

    @property
    def ready(self) -> bool:
        return self._core is not None and not self._stopping

    def stats(self) -> EngineStats:
        """The snapshot the engine thread published after its last step (or abort)."""
        return self._stats

    def start(self) -> None:
        """Start the engine thread, which loads the weights and then runs the steps."""
        if self._thread is not None:
            raise RuntimeError("the engine was already started")
        self._thread = threading.Thread(target=self._main, name="generative-engine", daemon=True)
        self._thread.start()

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until the model is loaded; raise what loading raised, or TimeoutError."""
        if self._thread is None:
            raise RuntimeError("the engine was not started: call start() first")
        if not self._loaded.wait(timeout):
            raise TimeoutError(f"the model did not load within {timeout} s")
        if self._load_error is not None:
            raise RuntimeError(f"the model failed to load: {self._load_error}") from self._load_error

    def stop(self, timeout: float | None = 30.0) -> None:
        """Abort every request (each stream ends with ``finish_reason="abort"``) and join the thread."""
        with self._lock:
            self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    async def generate(
        self, request_id: str, prompt_token_ids: Seq[int], params: SamplingParams
    ) -> AsyncGenerator[GenerationOutput, None]:
        """See :meth:`.types.Engine.generate`; the checks run at the first ``__anext__``."""
        stream = self._admit(request_id, tuple(prompt_token_ids), params)
        finished = False
        try:
            while True:
                item = await stream.queue.get()
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                finished = item.finished
                yield item
                if finished:
                    return
        finally:
            with self._lock:
                self._streams.pop(request_id, None)
                if not finished:
                    self._aborts.append(request_id)
            if not finished:
                self._wake.set()

    def _admit(self, request_id: str, prompt: tuple[int, ...], params: SamplingParams) -> _Stream:
        core = self._core
        if core is None or self._stopping:
            if self._load_error is not None:
                raise EngineNotReadyError(f"the model failed to load: {self._load_error}")
            raise EngineNotReadyError(
                "the engine is stopping" if self._stopping else "the model is still loading"
            )
        core.check_request(prompt, params)
        stream = _Stream(asyncio.get_running_loop(), asyncio.Queue())
        with self._lock:
            if self._stopping:
                raise EngineNotReadyError("the engine is stopping")
            if request_id in self._streams:
                raise InvalidRequestError(f"request id {request_id!r} is already in use")
            waiting = self._num_waiting + len(self._inbox)
            if waiting >= self.config.max_waiting:
                raise QueueFullError(
                    f"{waiting} requests are waiting (max_waiting is {self.config.max_waiting})"
                )
            self._streams[request_id] = stream
            self._inbox.append(_Request(request_id, prompt, params))
        self._wake.set()
        return stream

    # The engine thread.

    def _main(self) -> None:
        try:
            core = self._build_core()
        except BaseException as exc:  # reported through wait_ready() and EngineNotReadyError
            log.exception("the generative engine could not load %s", self.config.model_dir)
            self._load_error = exc
            self._loaded.set()
            return
        self._core = core
        self._publish(core)
        self._loaded.set()
        try:
            self._loop(core)
        finally:
            self._shutdown(core)

    def _build_core(self) -> EngineCore:
        config, model_config = self.config, self._model_config
        device, dtype = self._device, self._dtype
        model = load_model(model_config, self._info.max_model_len, dtype, device, config.quantization)
        per_block = kv_bytes_per_block(model.args, config.block_size, dtype)
        if config.kv_cache_bytes is not None:
            budget = config.kv_cache_bytes
        elif device.type == "cuda":
            free, _total = torch.cuda.mem_get_info(device)
            budget = int(free * config.gpu_memory_fraction)
        else:
            budget = DEFAULT_CPU_KV_CACHE_BYTES
        num_blocks = budget // per_block
        if num_blocks < 1:
            raise ValueError(f"a KV cache of {budget} bytes holds no block ({per_block} bytes each)")
        log.info(
            "KV cache: %d blocks of %d tokens (%d bytes each) on %s",
            num_blocks,
            config.block_size,
            per_block,
            device,
        )
        runner = ModelRunner(model, num_blocks, config.block_size, device, dtype, seed=config.seed)
        manager = BlockManager(num_blocks, config.block_size, config.enable_prefix_caching)
        scheduler = Scheduler(manager, config.max_num_seqs, config.max_num_batched_tokens)
        eos = set(self._model_config.eos_token_ids)
        if self._tokenizer.eos_token_id is not None:
            eos.add(self._tokenizer.eos_token_id)
        return EngineCore(
            runner, scheduler, self._tokenizer, eos, self._info.max_model_len, model.args.vocab_size
        )

    def _loop(self, core: EngineCore) -> None:
        while True:
            with self._lock:
                inbox, self._inbox = self._inbox, []
                aborts, self._aborts = self._aborts, []
                self._num_waiting += len(inbox)  # they wait in the scheduler now: still counted
                if self._stopping:
                    self._inbox = inbox  # answered by _shutdown
                    return
            for request in inbox:
                core.add_request(request.request_id, request.prompt_token_ids, request.params)
            for request_id in aborts:
                core.abort_request(request_id)
            if inbox or aborts:
                self._publish(core)
            if not core.has_work:
                self._wake.wait()
                self._wake.clear()
                continue
            try:
                outputs, info = core.step()
            except Exception as exc:  # a broken step fails the requests in it, not the engine
                log.exception("a generative engine step failed")
                message = f"the engine failed: {type(exc).__name__}: {exc}"
                for request_id in core.request_ids:
                    core.abort_request(request_id)
                    self._deliver([(request_id, GenerationError(message))])
                self._publish(core)
                continue
            self._publish(core)  # first: a consumer that sees its last increment sees it counted
            self._deliver([(o.request_id, o) for o in outputs])
            if info is not None and self._on_step is not None:
                try:
                    self._on_step(info)
                except Exception:
                    log.exception("the engine's on_step hook raised")

    def _deliver(self, items: list[tuple[str, _Item]]) -> None:
        """Hand the increments to their event loops: one thread-safe call per loop."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[str, asyncio.Queue[_Item], _Item]]] = {}
        with self._lock:
            for request_id, item in items:
                stream = self._streams.get(request_id)
                if stream is not None:
                    by_loop.setdefault(stream.loop, []).append((request_id, stream.queue, item))
        for loop, batch in by_loop.items():
            try:
                loop.call_soon_threadsafe(_put_all, [(queue, item) for _, queue, item in batch])
            except RuntimeError:  # the consumer's event loop is closed: nobody will read these
                with self._lock:
                    for request_id, _queue, _item in batch:
                        self._streams.pop(request_id, None)
                        self._aborts.append(request_id)

    def _publish(self, core: EngineCore) -> None:
        with self._lock:
            pending = len(self._inbox)
            self._num_waiting = len(core.scheduler.waiting)
        self._stats = core.stats(extra_waiting=pending)

    def _shutdown(self, core: EngineCore) -> None:
        outputs: list[tuple[str, _Item]] = [(o.request_id, o) for o in core.abort_all()]
        with self._lock:
            inbox, self._inbox = self._inbox, []
        for request in inbox:
            aborted = GenerationOutput(
                request_id=request.request_id,
                token_ids=(),
                text="",
                prompt_tokens=len(request.prompt_token_ids),
                completion_tokens=0,
                finished=True,
                finish_reason="abort",
            )
            outputs.append((request.request_id, aborted))
        self._deliver(outputs)
        self._publish(core)
