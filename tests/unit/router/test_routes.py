"""Static routes and the route table: what `--discovery static --routes FILE` users write."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from modelplane.serving.router.routes import RoutesError, RouteTable, parse_static_routes

DOC = yaml.safe_load(
    """
models:
  iris:
    - {version: "1", http: "http://127.0.0.1:8000", grpc: "127.0.0.1:8001", weight: 80}
    - {version: "1", http: "http://127.0.0.2:8000/", grpc: "127.0.0.2:8001"}
    - {version: "2", http: "http://127.0.0.3:8000", weight: 20}
    - {version: "3", http: "http://127.0.0.4:8000", weight: 0, shadow: 10}
"""
)


def test_versions_endpoints_weights_and_shadow_are_read() -> None:
    route = parse_static_routes(DOC)["iris"]
    assert [(b.version, b.weight) for b in route.backends] == [("1", 80), ("2", 20), ("3", 0)]
    assert [e.http for e in route.endpoints["1"]] == ["http://127.0.0.1:8000", "http://127.0.0.2:8000"]
    assert route.endpoints["1"][0].grpc == "127.0.0.1:8001"
    assert route.shadow is not None
    assert (route.shadow.version, route.shadow.weight) == ("3", 10)
    assert route.ready()


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({}, "`models:` mapping"),
        ({"models": {"../etc": [{"http": "http://x"}]}}, "invalid model name"),
        ({"models": {"m": []}}, "non-empty list"),
        ({"models": {"m": [{"http": "ftp://x"}]}}, "`http` must be"),
        (
            {"models": {"m": [{"http": "http://x", "weight": 130}]}},
            "`weight` must be an integer from 0 to 100",
        ),
        ({"models": {"m": [{"http": "http://x", "wieght": 1}]}}, "unknown keys ['wieght']"),
    ],
)
def test_invalid_documents_are_rejected_naming_the_problem(doc: Any, message: str) -> None:
    with pytest.raises(RoutesError) as caught:
        parse_static_routes(doc)
    assert message in str(caught.value)


def test_refresh_keeps_live_endpoint_state_and_reports_models_that_became_ready() -> None:
    table = RouteTable()
    assert table.replace(parse_static_routes(DOC)) == {"iris"}
    endpoint = table.get("iris").endpoints["1"][0]  # type: ignore[union-attr]
    endpoint.outstanding = 3
    assert table.replace(parse_static_routes(DOC)) == set()
    assert table.get("iris").endpoints["1"][0] is endpoint  # type: ignore[union-attr]
    assert endpoint.outstanding == 3
