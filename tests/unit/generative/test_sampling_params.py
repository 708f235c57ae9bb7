"""SamplingParams.check names the first parameter out of range."""

from __future__ import annotations

import pytest

from modelplane.serving.runtime.generative.types import InvalidRequestError, SamplingParams


@pytest.mark.parametrize(
    ("params", "named"),
    [
        (SamplingParams(max_tokens=0), "max_tokens"),
        (SamplingParams(temperature=-0.1), "temperature"),
        (SamplingParams(top_p=0.0), "top_p"),
        (SamplingParams(top_p=1.5), "top_p"),
        (SamplingParams(top_k=-1), "top_k"),
        (SamplingParams(logprobs=21), "logprobs"),
        (SamplingParams(logprobs=-1), "logprobs"),
    ],
)
def test_out_of_range_parameters_are_refused_by_name(params: SamplingParams, named: str) -> None:
    with pytest.raises(InvalidRequestError, match=named):
        params.check()


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(),
        SamplingParams(max_tokens=1, temperature=0.0, top_p=1.0, top_k=0, logprobs=0),
        SamplingParams(temperature=2.0, top_p=0.01, top_k=1, seed=3, logprobs=20, stop=("x",)),
    ],
)
def test_parameters_in_range_pass(params: SamplingParams) -> None:
    params.check()
