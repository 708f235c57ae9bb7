"""From sampled tokens to :class:`.types.GenerationOutput` increments: text, stops, finish reasons.

Pure Python over the :class:`.types.Tokenizer` protocol. The rules, in order, for each token:

- a token in ``stop_token_ids``, or an EOS (unless ``ignore_eos``), finishes with ``"stop"``; it
  counts as a completion token and is in ``token_ids``, but its text is never emitted;
- otherwise its text (see :mod:`.detokenizer`) goes through the stop strings: text that could be
  the start of a stop string is held back; a stop string found ends the output just before it
  (``"stop"``), the rest of the text dropped;
- ``max_tokens`` reached, or the context full, finishes with ``"length"``.

On a finish, text still held back (an incomplete character, a prefix of a stop string that
never completed) is flushed into the last increment.
"""

from __future__ import annotations

from collections.abc import Set

from modelplane.serving.runtime.generative.detokenizer import IncrementalDetokenizer
from modelplane.serving.runtime.generative.sequence import Sample, Sequence
from modelplane.serving.runtime.generative.types import FinishReason, GenerationOutput, Tokenizer


class StopStrings:
    """Holds back text that might begin a stop string; reports the first one that completes."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """The text safe to emit now, and whether a stop string was found (output ends there)."""
        if not self._stops:
            return text, False
        buffer = self._held + text
        cut = min((i for i in (buffer.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self._held = ""
            return buffer[:cut], True
        keep = self._longest_partial(buffer)
        self._held = buffer[len(buffer) - keep :]
        return buffer[: len(buffer) - keep], False

    def _longest_partial(self, buffer: str) -> int:
        """The length of the longest suffix of ``buffer`` that is a proper prefix of a stop string."""
        longest = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(buffer)), longest, -1):
                if buffer.endswith(stop[:size]):
                    longest = size
                    break
        return longest

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held


class RequestState:
    """One request's output side: its sequence, detokenizer and stop strings."""

    def __init__(
        self, seq: Sequence, tokenizer: Tokenizer, eos_token_ids: Set[int], max_model_len: int
    ) -> None:
        self.seq = seq
        self._detokenizer = IncrementalDetokenizer(tokenizer, seq.prompt_token_ids)
        self._stops = StopStrings(seq.params.stop)
        self._stop_ids = frozenset(seq.params.stop_token_ids) | (
            frozenset() if seq.params.ignore_eos else frozenset(eos_token_ids)
        )
        self._max_model_len = max_model_len

    def on_sample(self, sample: Sample) -> GenerationOutput:
        """Append the sampled token and say what it adds to the output."""
        seq, params = self.seq, self.seq.params
        seq.append_token(sample.token_id)
        reason: FinishReason | None = None
        text, hit = "", False
        if sample.token_id in self._stop_ids:
            reason = "stop"
        else:
            text, hit = self._stops.feed(self._detokenizer.step(sample.token_id))
            if hit:
                reason = "stop"
        if reason is None and (
            seq.num_output_tokens >= params.max_tokens or seq.num_tokens >= self._max_model_len
        ):
            reason = "length"
        if reason is not None and not hit:  # the end: flush what was held back
            tail, hit = self._stops.feed(self._detokenizer.flush())
            text += tail if hit else tail + self._stops.flush()
            reason = "stop" if hit else reason
        return GenerationOutput(
            request_id=seq.request_id,
            token_ids=(sample.token_id,),
            text=text,
            prompt_tokens=seq.num_prompt_tokens,
            completion_tokens=seq.num_output_tokens,
            finished=reason is not None,
            finish_reason=reason,
            logprobs=(sample.logprob,) if sample.logprob is not None else (),
            cached_prompt_tokens=seq.cached_prompt_tokens or 0,
        )

    def aborted(self) -> GenerationOutput:
        seq = self.seq
        return GenerationOutput(
            request_id=seq.request_id,
            token_ids=(),
            text="",
            prompt_tokens=seq.num_prompt_tokens,
            completion_tokens=seq.num_output_tokens,
            finished=True,
            finish_reason="abort",
            cached_prompt_tokens=seq.cached_prompt_tokens or 0,
        )
