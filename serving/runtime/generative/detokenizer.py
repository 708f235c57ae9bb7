"""Incremental detokenization: the text each new token completes, and nothing half-made.

Decoding one token at a time breaks multi-byte characters (a byte-level BPE token may end inside
a UTF-8 sequence) and word pieces (SentencePiece's leading-space marker depends on what came
before). So, like vLLM's detokenizer, each step decodes a short window twice, the tokens already
emitted (``prefix_offset:read_offset``) and the window with the new tokens (``prefix_offset:``),
and emits the difference, unless it ends in U+FFFD (an incomplete character: wait for more).
"""

from __future__ import annotations

from modelplane.serving.runtime.generative.types import Tokenizer

_CONTEXT_TOKENS = 5  # prompt tokens decoded before the first new one, for word-piece context
_REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    """Feed it a sequence's new token ids one by one; it returns the text they complete."""

    def __init__(self, tokenizer: Tokenizer, prompt_token_ids: list[int] | tuple[int, ...]) -> None:
        self._tokenizer = tokenizer
        self._ids = list(prompt_token_ids[-_CONTEXT_TOKENS:])
        self._prefix_offset = 0
        self._read_offset = len(self._ids)

    def step(self, token_id: int) -> str:
        self._ids.append(token_id)
        return self._delta(final=False)

    def flush(self) -> str:
        """At the end of the sequence: whatever is still held back, even an incomplete character."""
        return self._delta(final=True)

    def _delta(self, final: bool) -> str:
        if self._read_offset == len(self._ids):
            return ""
        window = self._ids[self._prefix_offset :]
        prefix_text = self._tokenizer.decode(self._ids[self._prefix_offset : self._read_offset])
        new_text = self._tokenizer.decode(window)
        if len(new_text) <= len(prefix_text) or (new_text.endswith(_REPLACEMENT) and not final):
            return ""
        delta = new_text[len(prefix_text) :]
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._ids)
        # Keep the window short: drop what no later decode needs.
        del self._ids[: self._prefix_offset]
        self._read_offset -= self._prefix_offset
        self._prefix_offset = 0
        return delta
