"""The model directory's own tokenizer and chat template, behind :class:`.types.Tokenizer`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer


class HFTokenizer:
    """``transformers.AutoTokenizer`` from the model directory, offline; special tokens are kept
    out of decoded text (a stop token's text is never part of a completion)."""

    def __init__(self, model_dir: str | Path) -> None:
        self._tokenizer: Any = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        eos = self._tokenizer.eos_token_id
        self.eos_token_id: int | None = int(eos) if isinstance(eos, int) else None
        self.vocab_size: int = len(self._tokenizer)

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self._tokenizer, "chat_template", None))

    def encode(self, text: str) -> list[int]:
        """Plain text to ids, with the special tokens the model expects (a BOS, for Llama)."""
        ids: list[int] = self._tokenizer.encode(text)
        return ids

    def decode(self, token_ids: Sequence[int]) -> str:
        text: str = self._tokenizer.decode(list(token_ids), skip_special_tokens=True)
        return text

    def apply_chat_template(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        if not self.has_chat_template:
            raise ValueError("this model's tokenizer has no chat template")
        ids = self._tokenizer.apply_chat_template(
            [dict(m) for m in messages], add_generation_prompt=True, tokenize=True, return_dict=False
        )
        return [int(i) for i in ids]
