"""Request targets from V2 paths, and the shadow comparison of V2 answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from modelplane.serving.router import paths
from modelplane.serving.router.paths import Target, parse_target, route_keys
from modelplane.serving.router.shadow import outputs_match


@pytest.mark.parametrize(
    ("path", "header", "expected"),
    [
        ("/v2/models/iris/infer", None, Target(None, "iris", None, "/infer")),
        ("/v2/models/iris", None, Target(None, "iris", None, "")),
        ("/v2/models/iris/versions/3/ready", None, Target(None, "iris", "3", "/ready")),
        ("/ns/team-a/v2/models/iris/infer", "other", Target("team-a", "iris", None, "/infer")),
        ("/v2/models/iris/infer", "team-b", Target("team-b", "iris", None, "/infer")),
        ("/v2/models/iris/infer", "Not_A_Namespace", Target(None, "iris", None, "/infer")),
    ],
)
def test_targets_are_parsed(path: str, header: str | None, expected: Target) -> None:
    assert parse_target(path, header) == expected


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/../etc/infer",
        "/v2/models/iris/versions/x/infer",
        "/v2/models/iris/infer/extra",
        "/v2/models/",
        "/v2/models/iris%2F..",
        "/ns/UPPER/v2/models/iris/infer",
    ],
)
def test_malformed_paths_are_not_routed(path: str) -> None:
    assert parse_target(path, None) is None


def test_remembered_targets_never_carry_another_request_s_namespace() -> None:
    # Parsed with a header first, then without: the second must not get the header's namespace.
    assert parse_target("/v2/models/memo/infer", "team-c") == Target("team-c", "memo", None, "/infer")
    assert parse_target("/v2/models/memo/infer", None) == Target(None, "memo", None, "/infer")
    assert parse_target("/v2/models/memo/infer", "team-d") == Target("team-d", "memo", None, "/infer")
    assert parse_target("/v2/models/memo/infer", "") == Target(None, "memo", None, "/infer")


def test_the_memo_of_targets_stays_bounded() -> None:
    for index in range(paths.MAX_REMEMBERED_TARGETS + 10):
        assert parse_target(f"/v2/models/m{index}/infer", None) == Target(None, f"m{index}", None, "/infer")
    assert len(paths._TARGETS) <= paths.MAX_REMEMBERED_TARGETS


def test_backend_path_pins_the_chosen_version_and_keys_try_namespace_first() -> None:
    target = Target(None, "iris", None, "/infer")
    assert target.backend_path("4") == "/v2/models/iris/versions/4/infer"
    assert route_keys(target.model, None, "default") == ["default/iris", "iris"]
    assert route_keys("iris", "team-a", "default")[0] == "team-a/iris"


def _json_answer(values: list[float]) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    doc = {"outputs": [{"name": "y", "datatype": "FP32", "shape": [1, len(values)], "data": values}]}
    return json.dumps(doc).encode(), [(b"content-type", b"application/json")]


def _binary_answer(values: list[float]) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    raw = np.asarray(values, dtype=np.float32).tobytes()
    header = json.dumps(
        {
            "outputs": [
                {
                    "name": "y",
                    "datatype": "FP32",
                    "shape": [1, len(values)],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    ).encode()
    return header + raw, [(b"inference-header-content-length", str(len(header)).encode())]


def test_equal_outputs_match_across_json_and_binary_encodings() -> None:
    assert outputs_match(*_json_answer([0.1, 0.9]), *_binary_answer([0.1, 0.9]))
    assert outputs_match(*_json_answer([0.1, 0.9]), *_json_answer([0.1000001, 0.9]))


def test_different_outputs_or_shapes_are_mismatches() -> None:
    assert not outputs_match(*_json_answer([0.1, 0.9]), *_json_answer([0.9, 0.1]))
    assert not outputs_match(*_json_answer([0.1, 0.9]), *_json_answer([0.1, 0.9, 0.0]))
