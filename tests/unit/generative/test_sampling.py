"""The sampler: greedy is argmax, top-k/top-p masks, seeds, logprobs."""

from __future__ import annotations

import math

import pytest
import torch

from modelplane.serving.runtime.generative.sampling import apply_top_k_top_p, sample
from modelplane.serving.runtime.generative.types import SamplingParams

NEG = float("-inf")


def shared(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_greedy_is_the_argmax_of_every_row() -> None:
    logits = torch.randn(5, 50, generator=shared(1))
    params = [SamplingParams(temperature=0.0)] * 5
    found = sample(logits, params, [None] * 5, shared())
    assert [s.token_id for s in found] == logits.argmax(dim=-1).tolist()


def test_greedy_rows_stay_argmax_next_to_random_rows() -> None:
    logits = torch.randn(4, 50, generator=shared(2))
    params = [SamplingParams(temperature=0.0), SamplingParams(temperature=1.5)] * 2
    found = sample(logits, params, [None] * 4, shared())
    assert found[0].token_id == int(logits[0].argmax())
    assert found[2].token_id == int(logits[2].argmax())


def test_top_k_keeps_the_k_largest_and_zero_keeps_all() -> None:
    logits = torch.tensor([[1.0, 4.0, 3.0, 2.0], [1.0, 4.0, 3.0, 2.0]])
    masked = apply_top_k_top_p(logits, torch.tensor([2, 0]), None)
    assert masked[0].tolist() == [NEG, 4.0, 3.0, NEG]
    assert masked[1].tolist() == logits[1].tolist()


def test_top_p_keeps_the_smallest_set_that_reaches_p() -> None:
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]] * 3).log()
    masked = apply_top_k_top_p(logits, None, torch.tensor([0.5, 0.7, 1.0]))
    kept = [[not math.isinf(x) for x in row] for row in masked.tolist()]
    assert kept == [[True, False, False, False], [True, True, False, False], [True, True, True, True]]


def test_top_p_always_keeps_the_most_likely_token() -> None:
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0]])
    masked = apply_top_k_top_p(logits, None, torch.tensor([0.01]))
    assert sum(not math.isinf(x) for x in masked[0].tolist()) == 1


def test_top_k_one_is_greedy_at_any_temperature() -> None:
    logits = torch.randn(3, 40, generator=shared(3))
    params = [SamplingParams(temperature=5.0, top_k=1)] * 3
    found = sample(logits, params, [None] * 3, shared(4))
    assert [s.token_id for s in found] == logits.argmax(dim=-1).tolist()


def draws(seed: int, logits: torch.Tensor, mates: int) -> list[int]:
    """Twenty draws for one seeded row, batched with ``mates`` other rows (some seeded)."""
    row = SamplingParams(temperature=1.0, seed=seed)
    generator = seeded(seed)
    others = [SamplingParams(temperature=0.8, top_p=0.9, seed=None if i % 2 else i) for i in range(mates)]
    other_generators = [None if i % 2 else seeded(i) for i in range(mates)]
    out = []
    noise = shared(99)
    for _ in range(20):
        batch = torch.cat([logits.unsqueeze(0), torch.randn(mates, logits.shape[0], generator=noise)])
        found = sample(batch, [row, *others], [generator, *other_generators], noise)
        out.append(found[0].token_id)
    return out


def test_a_seed_reproduces_its_draws_whatever_the_batch() -> None:
    logits = torch.zeros(30)  # uniform: every draw is the noise's choice
    alone = draws(7, logits, mates=0)
    assert draws(7, logits, mates=0) == alone
    assert draws(7, logits, mates=5) == alone
    assert draws(8, logits, mates=0) != alone


def test_draws_follow_the_distribution() -> None:
    logits = torch.tensor([[0.9, 0.1]]).log().repeat(2000, 1)
    found = sample(logits, [SamplingParams(temperature=1.0)] * 2000, [None] * 2000, shared(5))
    ones = sum(s.token_id for s in found)
    assert 120 < ones < 280  # about 200; 6 standard deviations either side


def test_logprobs_are_the_raw_distribution_with_the_top_n() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    params = [SamplingParams(temperature=0.0, logprobs=2)]
    (found,) = sample(logits, params, [None], shared())
    raw = logits.log_softmax(dim=-1)[0].tolist()
    assert found.logprob is not None
    assert found.logprob.token_id == 0
    assert found.logprob.logprob == pytest.approx(raw[0])
    assert [t for t, _ in found.logprob.top] == [0, 1]
    assert [v for _, v in found.logprob.top] == pytest.approx(raw[:2])


def test_logprobs_only_where_asked_and_zero_means_just_the_chosen_token() -> None:
    logits = torch.randn(2, 10, generator=shared(6))
    params = [SamplingParams(temperature=0.0, logprobs=0), SamplingParams(temperature=0.0)]
    first, second = sample(logits, params, [None, None], shared())
    assert first.logprob is not None
    assert first.logprob.top == ()
    assert second.logprob is None
