"""The LLM benchmark's pure parts: figures from recorded event times, ratios, verdicts, the raw file."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from llm_vs_peers import (
    OURS,
    PLAIN,
    TRANSFORMERS_SERVE,
    RequestRecord,
    Results,
    Verdict,
    check_record,
    itl_ms,
    percentile,
    prompt_text,
    ratios,
    raw_document,
    read_event,
    record_from_row,
    request_row,
    summarize,
    target_verdicts,
    ttft_ms,
)


def record(sent: float, events: list[float], tokens: int | None = None) -> RequestRecord:
    count = len(events) if tokens is None else tokens
    return RequestRecord(sent=sent, events=events, prompt_tokens=8, output_tokens=count)


def point(tokens_per_s: float, ttft: float = 10.0, itl: float = 5.0) -> dict[str, float]:
    return {"tokens_per_s": tokens_per_s, "ttft_p50_ms": ttft, "itl_p50_ms": itl}


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 50) == 3.0
    assert percentile([1.0, 2.0], 50) == 1.5
    assert percentile(list(range(101)), 99) == pytest.approx(99.0)
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))


def test_ttft_and_itl_come_from_the_event_times() -> None:
    r = record(10.0, [10.25, 10.30, 10.40])
    assert ttft_ms(r) == pytest.approx(250.0)
    assert itl_ms(r) == pytest.approx([50.0, 100.0])
    assert itl_ms(record(0.0, [1.0])) == []


def test_summarize_pools_the_gaps_of_every_answer_and_skips_failures() -> None:
    records = [
        record(0.0, [0.1, 0.2, 0.3]),
        record(0.0, [0.2, 0.4, 0.6]),
        RequestRecord(sent=0.0, events=[0.05], error="HTTP 500"),
    ]
    figures = summarize(records, wall_s=2.0)
    assert figures["requests"] == 3
    assert figures["errors"] == 1
    assert figures["output_tokens"] == 6
    assert figures["tokens_per_s"] == pytest.approx(3.0)
    assert figures["ttft_p50_ms"] == pytest.approx(150.0)
    assert figures["itl_p50_ms"] == pytest.approx(150.0)  # gaps 100, 100, 200, 200
    assert figures["tpot_mean_ms"] == pytest.approx(150.0)
    assert figures["events_per_token"] == 1.0


def test_summarize_counts_tokens_by_usage_when_events_carry_several() -> None:
    figures = summarize([record(0.0, [0.1, 0.3], tokens=4)], wall_s=1.0)
    assert figures["output_tokens"] == 4
    assert figures["events_per_token"] == 0.5
    assert figures["tpot_mean_ms"] == pytest.approx(200 / 3)


def test_summarize_with_no_answer_is_nan_not_an_error() -> None:
    figures = summarize([RequestRecord(sent=0.0, error="refused")], wall_s=1.0)
    assert figures["tokens_per_s"] == 0.0
    assert math.isnan(figures["ttft_p50_ms"])
    assert math.isnan(figures["itl_p99_ms"])


def test_check_record_fails_answers_of_the_wrong_size() -> None:
    assert check_record(record(0.0, [0.1, 0.2]), 8, 2).error is None
    short = check_record(record(0.0, [0.1]), 8, 2)
    assert short.error == "8 prompt and 1 output tokens, expected 8 and 2"
    failed = check_record(RequestRecord(sent=0.0, error="HTTP 503"), 8, 2)
    assert failed.error == "HTTP 503"


def test_read_event_times_text_events_and_takes_the_usage() -> None:
    r = RequestRecord(sent=0.0)
    read_event('data: {"choices": [{"index": 0, "text": "<t5>"}]}', r)
    read_event('data: {"choices": [{"index": 0, "text": "", "finish_reason": "length"}]}', r)
    read_event(": keep-alive", r)
    read_event('data: {"choices": [], "usage": {"prompt_tokens": 8, "completion_tokens": 1}}', r)
    read_event("data: [DONE]", r)
    assert len(r.events) == 1
    assert (r.prompt_tokens, r.output_tokens, r.error) == (8, 1, None)
    read_event('data: {"error": "engine died"}', r)
    assert r.error == "engine died"


def test_ratios_put_ours_on_top_for_throughput_and_below_for_latency() -> None:
    results: Results = {
        OURS: {1: point(100.0, ttft=10.0, itl=5.0), 32: point(900.0)},
        TRANSFORMERS_SERVE: {1: point(50.0, ttft=20.0, itl=10.0)},
    }
    table = ratios(results)
    assert list(table) == [TRANSFORMERS_SERVE]
    assert table[TRANSFORMERS_SERVE] == {1: {"tokens_per_s": 2.0, "ttft_p50": 2.0, "itl_p50": 2.0}}


def test_targets_met_missed_and_not_measured() -> None:
    results: Results = {
        OURS: {1: point(40.0, itl=6.0), 32: point(900.0)},
        TRANSFORMERS_SERVE: {32: point(300.0)},  # exactly 3x
        PLAIN: {32: point(100.0)},  # 9x: missed
    }
    verdicts = target_verdicts(results, {"itl_p50_ms": 5.0})  # 1.2x exactly
    assert [v.met for v in verdicts] == [True, False, True]
    assert verdicts[0].figure == "3.00x"
    assert verdicts[2].figure == "6.00 vs 5.00 ms (1.20x)"
    slow = target_verdicts({OURS: {1: point(40.0, itl=6.1)}}, {"itl_p50_ms": 5.0})
    assert [v.met for v in slow] == [None, None, False]
    assert slow[0].figure == "not measured"
    assert target_verdicts({OURS: {1: point(40.0)}}, None)[2] == Verdict(
        "c=1 ITL p50 within 1.2x the in-process decode loop", "not measured", None
    )


def test_raw_document_is_json_with_string_levels_and_every_section() -> None:
    results: Results = {OURS: {1: point(100.0)}, PLAIN: {1: point(10.0)}}
    verdicts = target_verdicts(results, {"itl_p50_ms": 5.0})
    peers: dict[str, dict[str, Any]] = {
        PLAIN: {"endpoint": "/v1/completions", "error": None},
        TRANSFORMERS_SERVE: {"error": "no accelerate"},
    }
    doc = json.loads(
        json.dumps(
            raw_document(
                run={"commit": "abc", "machine": {"cores": "2"}},
                peers=peers,
                limit={"itl_p50_ms": 5.0},
                results=results,
                verdicts=verdicts,
            )
        )
    )
    assert doc["benchmark"] == "llm_vs_peers"
    assert doc["commit"] == "abc"
    assert doc["peers"][TRANSFORMERS_SERVE]["error"] == "no accelerate"
    assert doc["results"][OURS]["1"]["tokens_per_s"] == 100.0
    assert doc["ratios"][PLAIN]["1"]["tokens_per_s"] == 10.0
    assert doc["in_process_limit"] == {"itl_p50_ms": 5.0}
    assert doc["targets"][2] == {
        "target": "c=1 ITL p50 within 1.2x the in-process decode loop",
        "figure": "5.00 vs 5.00 ms (1.00x)",
        "met": True,
    }


def test_request_rows_round_trip_to_the_same_figures() -> None:
    records = [record(100.0, [100.2, 100.25, 100.4]), record(100.1, [100.3, 100.35, 100.45])]
    rows = [json.loads(json.dumps(request_row(OURS, 8, r, level_start=100.0))) for r in records]
    assert rows[1]["sent_ms"] == pytest.approx(100.0)
    assert rows[1]["event_ms"] == pytest.approx([200.0, 250.0, 350.0])
    again = summarize([record_from_row(row) for row in rows], wall_s=0.45)
    assert again == pytest.approx(summarize(records, wall_s=0.45))


def test_prompts_are_fixed_length_and_different() -> None:
    first, second = prompt_text(0, 128, 1000), prompt_text(1, 128, 1000)
    assert first.count("<t") == 127  # the tokenizer adds the BOS
    assert first != second
    assert first[:60] != second[:60]
    assert prompt_text(0, 128, 1000) == first
