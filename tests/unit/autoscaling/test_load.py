"""The autoscaler's load: requests per model summed over routers, averaged over each interval."""

from __future__ import annotations

import pytest

from modelplane.autoscaling.load import (
    ConcurrencyAverager,
    Scrape,
    parse_router_metrics,
    parse_router_page,
)

ROUTER_A = """# HELP modelplane_router_in_flight_requests In flight
# TYPE modelplane_router_in_flight_requests gauge
modelplane_router_in_flight_requests{model="team/iris"} 5.0
modelplane_router_in_flight_requests{model="team/other"} 1.0
# HELP modelplane_router_queued_requests Queued
# TYPE modelplane_router_queued_requests gauge
modelplane_router_queued_requests{model="team/iris"} 2.0
"""
ROUTER_B = """# TYPE modelplane_router_in_flight_requests gauge
modelplane_router_in_flight_requests{model="team/iris"} 3.0
# TYPE modelplane_router_requests_total counter
modelplane_router_requests_total{model="team/iris",version="3",code="200"} 100.0
"""


def test_load_is_summed_over_routers_per_model() -> None:
    loads = parse_router_metrics([ROUTER_A, ROUTER_B])
    assert loads["team/iris"].in_flight == 8.0
    assert loads["team/iris"].queued == 2.0
    assert loads["team/iris"].concurrency == 10.0
    assert loads["team/other"].concurrency == 1.0


def test_no_routers_means_no_load() -> None:
    assert parse_router_metrics([]) == {}


def page(uptime: float | None, areas: dict[str, float] | None, in_flight: dict[str, float]) -> str:
    """A router's /metrics text as the router writes it (areas None: a router without the counter)."""
    lines = [
        "# HELP modelplane_router_in_flight_requests In flight",
        "# TYPE modelplane_router_in_flight_requests gauge",
    ]
    lines += [f'modelplane_router_in_flight_requests{{model="{m}"}} {v}' for m, v in in_flight.items()]
    if areas is not None:
        lines += [
            "# HELP modelplane_router_concurrency_seconds Request-seconds",
            "# TYPE modelplane_router_concurrency_seconds counter",
        ]
        lines += [f'modelplane_router_concurrency_seconds_total{{model="{m}"}} {v}' for m, v in areas.items()]
    if uptime is not None:
        lines += [
            "# TYPE modelplane_router_uptime_seconds gauge",
            f"modelplane_router_uptime_seconds {uptime}",
        ]
    return "\n".join(lines) + "\n"


def scrape(text: str, at: float) -> Scrape:
    return Scrape(parse_router_page(text), at)


def test_concurrency_is_the_growth_of_the_area_over_the_routers_own_interval_summed_over_routers() -> None:
    averager = ConcurrencyAverager()
    first = averager.update(
        {
            "a": scrape(
                page(10.0, {"team/iris": 100.0, "team/other": 5.0}, {"team/iris": 0, "team/other": 0}), 0
            ),
            "b": scrape(page(500.0, {"team/iris": 7.0}, {"team/iris": 1}), 0),
        }
    )
    # First scrape: nothing to difference against, so the gauges (0 + 1) are the figure.
    assert first["team/iris"].concurrency == 1.0
    # The scraper's own clock says 3 s (a slow answer); each router's clock says 2 s.
    second = averager.update(
        {
            "a": scrape(
                page(12.0, {"team/iris": 106.0, "team/other": 5.0}, {"team/iris": 0, "team/other": 0}), 3
            ),
            "b": scrape(page(502.0, {"team/iris": 8.0}, {"team/iris": 9}), 3),
        }
    )
    assert second["team/iris"].concurrency == pytest.approx(6.0 / 2 + 1.0 / 2)
    assert second["team/iris"].in_flight == 9.0  # the gauges are still reported as they are
    assert second["team/other"].concurrency == 0.0  # idle for the interval, whatever it had before


def test_a_router_that_restarted_or_lacks_the_counter_falls_back_to_its_gauges_this_time() -> None:
    averager = ConcurrencyAverager()
    averager.update(
        {
            "new": scrape(page(100.0, {"m": 50.0}, {"m": 1}), 0),
            "old": scrape(page(None, None, {"m": 4}), 0),
        }
    )
    # "new" restarted: its clock and its counter went back; "old" never had the counter.
    loads = averager.update(
        {
            "new": scrape(page(1.0, {"m": 0.5}, {"m": 2}), 1),
            "old": scrape(page(None, None, {"m": 3}), 1),
        }
    )
    assert loads["m"].concurrency == 2.0 + 3.0
    # The next interval of the restarted router is measured again.
    loads = averager.update({"new": scrape(page(2.0, {"m": 4.5}, {"m": 5}), 2)})
    assert loads["m"].concurrency == 4.0


def test_a_counter_that_went_back_or_a_model_that_vanished_means_a_restart() -> None:
    averager = ConcurrencyAverager()
    averager.update({"r": scrape(page(None, {"m": 50.0, "gone": 3.0}, {"m": 1, "gone": 0}), 0)})
    # Without an uptime the scraper's clock is used; "gone" vanished, so no difference is trusted.
    loads = averager.update({"r": scrape(page(None, {"m": 60.0}, {"m": 2}), 1)})
    assert loads["m"].concurrency == 2.0
    assert "gone" not in loads
    loads = averager.update({"r": scrape(page(None, {"m": 55.0}, {"m": 7}), 2)})
    assert loads["m"].concurrency == 7.0  # counter went down
    loads = averager.update({"r": scrape(page(None, {"m": 57.0, "new": 0.5}, {"m": 7}), 4)})
    assert loads["m"].concurrency == 1.0  # and measured again from there
    assert loads["new"].concurrency == 0.25  # a model first seen within the interval starts from zero


def test_a_failed_scrape_is_bridged_by_the_next_one_over_the_longer_interval() -> None:
    averager = ConcurrencyAverager()
    averager.update({"r": scrape(page(10.0, {"m": 0.0}, {"m": 0}), 0)})
    assert averager.update({}) == {}  # this round the router did not answer
    loads = averager.update({"r": scrape(page(14.0, {"m": 12.0}, {"m": 0}), 4)})
    assert loads["m"].concurrency == 3.0


def test_point_in_time_parsing_ignores_the_counter() -> None:
    loads = parse_router_metrics([page(5.0, {"m": 1000.0}, {"m": 2})])
    assert loads["m"].concurrency == 2.0
    assert loads["m"].average is None


ENGINES_A = """# TYPE modelplane_router_engine_requests_waiting gauge
modelplane_router_engine_requests_waiting{model="team/chat"} 3.0
# TYPE modelplane_router_engine_requests_running gauge
modelplane_router_engine_requests_running{model="team/chat"} 8.0
# TYPE modelplane_router_in_flight_requests gauge
modelplane_router_in_flight_requests{model="team/chat"} 6.0
"""
ENGINES_B = """# TYPE modelplane_router_engine_requests_waiting gauge
modelplane_router_engine_requests_waiting{model="team/chat"} 2.0
# TYPE modelplane_router_engine_requests_running gauge
modelplane_router_engine_requests_running{model="team/chat"} 9.0
# TYPE modelplane_router_in_flight_requests gauge
modelplane_router_in_flight_requests{model="team/chat"} 5.0
"""


def test_engine_queues_are_read_per_model_and_taken_at_their_largest_over_routers() -> None:
    # Both routers read the same pods: requests add up across routers, the engines' queues do not.
    loads = parse_router_metrics([ENGINES_A, ENGINES_B])
    chat = loads["team/chat"]
    assert chat.in_flight == 11.0
    assert (chat.engine_waiting, chat.engine_running) == (3.0, 9.0)
    # A router that reads no generative pods leaves the figures as they are; a model whose pods
    # no router reads (a tensor model) has none at all.
    mixed = parse_router_metrics([ENGINES_A, ROUTER_B, ENGINES_B])
    assert (mixed["team/chat"].engine_waiting, mixed["team/chat"].engine_running) == (3.0, 9.0)
    assert mixed["team/iris"].engine_waiting is None


def test_engine_queues_pass_through_the_averager() -> None:
    averager = ConcurrencyAverager()
    averager.update({"a": Scrape(parse_router_page(ENGINES_A), 0.0)})
    loads = averager.update({"a": Scrape(parse_router_page(ENGINES_A), 1.0)})
    assert (loads["team/chat"].engine_waiting, loads["team/chat"].engine_running) == (3.0, 8.0)
