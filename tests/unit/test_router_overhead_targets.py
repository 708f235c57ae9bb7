"""The router benchmark's verdicts on issue 8's targets: what RESULTS.md reports as met or missed."""

from __future__ import annotations

import pytest

from router_overhead import paired, quartiles, target_verdicts, within_nginx_factor


def test_quartiles_interpolate_between_ranks() -> None:
    assert quartiles([5.0, 1.0, 3.0, 2.0, 4.0]) == (2.0, 3.0, 4.0)
    assert quartiles([1.0, 2.0]) == (1.25, 1.5, 1.75)
    assert quartiles([7.0]) == (7.0, 7.0, 7.0)
    with pytest.raises(ValueError, match="no values"):
        quartiles([])


@pytest.mark.parametrize(
    ("router", "nginx", "met"),
    [
        (0.30, 0.20, True),  # 1.5x exactly
        (0.31, 0.20, False),
        (0.0, 0.0, True),
        (0.01, 0.0, False),  # nginx adds nothing: neither may the router
        (-0.90, -1.80, True),  # nginx gains 1.8 ms: the router must keep half of it
        (-0.80, -1.80, False),
        (-2.50, -1.80, True),
    ],
)
def test_within_nginx_factor(router: float, nginx: float, met: bool) -> None:
    assert within_nginx_factor(router, nginx) is met


def test_paired_figures_pair_each_round_with_its_own_direct_run() -> None:
    raw = {
        "direct": {
            1: [{"p50_ms": 1.0, "p99_ms": 2.0, "rps": 100.0}, {"p50_ms": 3.0, "p99_ms": 4.0, "rps": 50.0}]
        },
        "router": {
            1: [
                {"p50_ms": 1.2, "p99_ms": 2.5, "rps": 90.0, "proxy_cpu_s_per_1k": 0.1},
                {"p50_ms": 3.4, "p99_ms": 4.1, "rps": 40.0, "proxy_cpu_s_per_1k": 0.3},
            ]
        },
    }
    figures = paired(raw, "router", 1)
    assert figures["added_p50_ms"] == pytest.approx(0.3)  # median of +0.2 and +0.4
    assert figures["added_p50_ms_q1"] == pytest.approx(0.25)
    assert figures["throughput_ratio"] == pytest.approx(0.85)  # median of 0.9 and 0.8
    assert figures["proxy_cpu_s_per_1k"] == pytest.approx(0.2)


def test_verdicts_cover_every_target_measured() -> None:
    def point(added: float, ratio: float = 1.0) -> dict[str, float]:
        return {"added_p50_ms": added, "throughput_ratio": ratio}

    figures = {
        "router": {1: point(0.4), 16: point(1.2), 64: point(-0.5, 0.89)},
        "nginx": {1: point(0.2), 16: point(0.9), 64: point(-1.2, 1.1)},
    }
    verdicts = {target: met for target, _, met in target_verdicts(figures)}
    assert verdicts == {
        "c=1 added p50 <= 0.5 ms": True,
        "c=16 added p50 <= 1 ms": False,
        "c=64 throughput >= 0.9x direct": False,
        "c=1 added p50 within 1.5x nginx's": False,
        "c=16 added p50 within 1.5x nginx's": True,
        "c=64 added p50 within 1.5x nginx's": False,
    }
    # Without nginx installed, the comparison is left out rather than passed.
    alone = target_verdicts({"router": figures["router"]})
    assert [target for target, _, _ in alone] == [
        "c=1 added p50 <= 0.5 ms",
        "c=16 added p50 <= 1 ms",
        "c=64 throughput >= 0.9x direct",
    ]
