"""Incremental detokenization: only complete characters and correctly spaced word pieces."""

from __future__ import annotations

import pytest

from modelplane.serving.runtime.generative.detokenizer import IncrementalDetokenizer
from modelplane.serving.runtime.generative.tokenizer import HFTokenizer
from modelplane.serving.runtime.generative.types import Tokenizer
from modelplane.testing.generative import ByteTokenizer, PieceTokenizer, make_tokenizer_dir


def increments(tokenizer: Tokenizer, prompt: list[int], new: list[int]) -> list[str]:
    detokenizer = IncrementalDetokenizer(tokenizer, prompt)
    return [detokenizer.step(t) for t in new]


def test_a_multi_byte_character_is_emitted_once_complete() -> None:
    tokenizer = ByteTokenizer()
    text = "aé東🙂"
    steps = increments(tokenizer, tokenizer.encode("x"), tokenizer.encode(text))
    # a | é (2 bytes) | 東 (3 bytes) | 🙂 (4 bytes): text appears on each character's last byte.
    assert steps == ["a", "", "é", "", "", "東", "", "", "", "🙂"]
    assert "".join(steps) == text


def test_a_prompt_ending_mid_character_does_not_leak_its_bytes() -> None:
    tokenizer = ByteTokenizer()
    encoded = tokenizer.encode("né")
    steps = increments(tokenizer, encoded, tokenizer.encode("ok"))
    assert "".join(steps) == "ok"


def test_flush_gives_up_on_an_incomplete_character_at_the_end() -> None:
    tokenizer = ByteTokenizer()
    detokenizer = IncrementalDetokenizer(tokenizer, [120])
    assert detokenizer.step(0xE6) == ""
    assert detokenizer.flush() == "\ufffd"
    assert detokenizer.flush() == ""


def test_word_pieces_keep_their_leading_spaces() -> None:
    tokenizer = PieceTokenizer(["\u2581Hello", "\u2581world", "!", "\u2581again"])
    steps = increments(tokenizer, [0], [1, 2, 3])
    assert steps == [" world", "!", " again"]  # decoding each piece alone would drop the spaces


def test_the_first_piece_after_an_empty_context_has_no_space() -> None:
    tokenizer = PieceTokenizer(["\u2581Hello", "\u2581world"])
    assert increments(tokenizer, [], [0, 1]) == ["Hello", " world"]


@pytest.fixture(scope="module")
def bpe(tmp_path_factory: pytest.TempPathFactory) -> HFTokenizer:
    return HFTokenizer(make_tokenizer_dir(tmp_path_factory.mktemp("tokenizer")))


@pytest.mark.parametrize("text", ["Zürich 東京 🙂🚀 naïve", "plain words, then ∞ → ✓ and 日本語"])
def test_a_byte_level_bpe_streams_exactly_its_full_decode(bpe: HFTokenizer, text: str) -> None:
    prompt = bpe.encode("The prompt: ")
    ids = bpe.encode(text)[1:]  # no BOS in the middle of a text
    steps = increments(bpe, prompt, ids)
    assert "".join(steps) == bpe.decode(ids) == text
    assert not any("\ufffd" in s for s in steps)
