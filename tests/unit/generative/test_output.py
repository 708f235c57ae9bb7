"""From tokens to output increments: stop strings held back and cut, stop ids, EOS, lengths."""

from __future__ import annotations

from modelplane.serving.runtime.generative.output import RequestState, StopStrings
from modelplane.serving.runtime.generative.sequence import Sample, Sequence
from modelplane.serving.runtime.generative.types import GenerationOutput, SamplingParams
from modelplane.testing.generative import ByteTokenizer

EOS = ByteTokenizer.EOS


def run(text_or_ids: str | list[int], max_model_len: int = 1000, **params: object) -> list[GenerationOutput]:
    """Feed the tokens one by one until the request finishes."""
    tokenizer = ByteTokenizer()
    ids = tokenizer.encode(text_or_ids) if isinstance(text_or_ids, str) else text_or_ids
    sampling = SamplingParams(**{"max_tokens": 100, **params})  # type: ignore[arg-type]
    state = RequestState(Sequence("r", (65, 66), sampling), tokenizer, {EOS}, max_model_len)
    outputs = []
    for token in ids:
        outputs.append(state.on_sample(Sample(token)))
        if outputs[-1].finished:
            break
    return outputs


def text(outputs: list[GenerationOutput]) -> str:
    return "".join(o.text for o in outputs)


def test_a_stop_string_is_held_back_then_cut() -> None:
    outputs = run("abENDxyz", stop=("END",))
    assert [o.text for o in outputs] == ["a", "b", "", "", ""]
    assert outputs[-1].finished
    assert outputs[-1].finish_reason == "stop"
    assert outputs[-1].completion_tokens == 5  # the stop string's tokens were generated


def test_held_text_that_is_not_a_stop_is_released() -> None:
    outputs = run("xyaq", stop=("xyz",))
    assert [o.text for o in outputs] == ["", "", "xya", "q"]
    assert not outputs[-1].finished


def test_the_earliest_of_several_stop_strings_wins() -> None:
    assert text(run("one two three", stop=("three", " two"))) == "one"


def test_a_stop_string_over_multi_byte_characters() -> None:
    outputs = run("東京へ行く", stop=("へ",))
    assert text(outputs) == "東京"
    assert outputs[-1].finish_reason == "stop"


def test_a_stop_token_id_finishes_without_its_text() -> None:
    outputs = run([104, 105, 33, 106], stop_token_ids=(33,))
    assert text(outputs) == "hi"
    assert outputs[-1].finish_reason == "stop"
    assert outputs[-1].token_ids == (33,)


def test_eos_finishes_unless_ignored() -> None:
    assert run([104, EOS, 105])[-1].finish_reason == "stop"
    outputs = run([104, EOS, 105], ignore_eos=True, max_tokens=3)
    assert len(outputs) == 3
    assert outputs[-1].finish_reason == "length"


def test_max_tokens_finishes_with_length_and_flushes_held_text() -> None:
    outputs = run("abE", stop=("END",), max_tokens=3)
    assert [o.text for o in outputs] == ["a", "b", "E"]
    assert outputs[-1].finish_reason == "length"
    assert outputs[-1].completion_tokens == 3


def test_the_context_length_finishes_with_length() -> None:
    outputs = run("abcdef", max_model_len=4)  # a 2-token prompt: two tokens fit
    assert len(outputs) == 2
    assert outputs[-1].finish_reason == "length"


def test_an_incomplete_character_at_the_end_is_flushed() -> None:
    outputs = run([0x61, 0xE6], max_tokens=2)
    assert text(outputs) == "a\ufffd"


def test_increments_carry_counts_and_logprob_slots() -> None:
    outputs = run("abc", max_tokens=3)
    assert [o.completion_tokens for o in outputs] == [1, 2, 3]
    assert all(o.prompt_tokens == 2 and o.logprobs == () for o in outputs)


def test_stop_strings_on_their_own() -> None:
    stops = StopStrings(("<end>",))
    assert stops.feed("hello <e") == ("hello ", False)
    assert stops.feed("n") == ("", False)
    assert stops.feed("d> more") == ("", True)
    assert StopStrings(()).feed("<end>") == ("<end>", False)
