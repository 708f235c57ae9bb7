"""One request's run through an engine, timed for the metrics and always closed.

:func:`run` wraps ``engine.generate``: it calls it lazily (so a refusal raised at the call and one
raised at the first ``__anext__`` arrive the same way, at the first output), observes time to first
token and the gaps between increments as the increments arrive, and closes the engine's iterator in
every case (finished, failed, or closed early because the client went away), which is what tells
the engine to abort the sequence and free its KV-cache blocks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass

from modelplane.serving.runtime.generative.metrics import ModelMetrics
from modelplane.serving.runtime.generative.types import (
    Engine,
    FinishReason,
    GenerationError,
    GenerationOutput,
    SamplingParams,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Submission:
    """What one request asks of one engine."""

    engine: Engine
    request_id: str
    prompt_token_ids: Sequence[int]
    params: SamplingParams
    arrival: float  # time.perf_counter() when the request arrived


async def _close(outputs: AsyncIterator[GenerationOutput], request_id: str) -> None:
    aclose = getattr(outputs, "aclose", None)
    if aclose is None:
        return
    try:
        await aclose()
    except Exception:
        # Raised from a finally block: it must not hide why the run ended.
        log.exception("request %s: closing the engine's iterator failed", request_id)


async def run(submission: Submission, metrics: ModelMetrics) -> AsyncGenerator[GenerationOutput, None]:
    """Yield the engine's increments until the finished one; close the engine's iterator on exit.

    A request the engine refuses (:class:`GenerationError` before any output) is not counted; one
    that runs is counted once in ``request_success`` by how it finished, ``abort`` when it was
    closed early.
    """
    outputs = submission.engine.generate(
        submission.request_id, submission.prompt_token_ids, submission.params
    )
    accepted = False
    finish: FinishReason = "abort"
    last: float | None = None
    ended: float | None = None
    try:
        async for output in outputs:
            now = time.perf_counter()
            accepted = True
            tokens = len(output.token_ids)
            if tokens:
                if last is None:
                    metrics.observe_first_token(now - submission.arrival)
                else:
                    metrics.observe_tokens(now - last, tokens)
                last = now
            if output.finished:
                finish = output.finish_reason or "stop"
                ended = now
            yield output
            if output.finished:
                return
        log.warning("request %s: the engine ended its outputs without a finished one", submission.request_id)
    except GenerationError:
        if accepted:
            log.warning("request %s: the engine failed it after it started", submission.request_id)
        raise
    except Exception:
        log.exception("request %s: the engine raised", submission.request_id)
        raise
    except BaseException:
        # Closed early (GeneratorExit) or cancelled while waiting: the client went away from a
        # request the engine had taken.
        accepted = True
        raise
    finally:
        await _close(outputs, submission.request_id)
        if accepted:
            metrics.observe_finished(finish, (ended or time.perf_counter()) - submission.arrival)
