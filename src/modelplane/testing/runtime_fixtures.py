"""pytest fixtures around :mod:`modelplane.testing.runtime` (a plugin listed in ``tests/conftest.py``).

``runtime_repository`` / ``runtime_server``: one real ``modelplane runtime`` process per test
session, serving the reference models; tests that change server state (drain, load/unload of
artifact-backed models) start their own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # torch is imported only by the tests that use these fixtures
    import torch

    from modelplane.testing.runtime import RuntimeProcess

#: The shared server's body limit: small, so the limit±1 cases stay cheap.
TEST_MAX_BODY_BYTES = 65536

FAULTY_CONFIG = """
name: "faulty"
platform: "pytorch_libtorch"
max_batch_size: 8
input [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 4 ] } ]
dynamic_batching { max_queue_delay_microseconds: 200000 }
parameters { key: "batch_wait" value { string_value: "full" } }
"""


@pytest.fixture(scope="session")
def reference_mlp() -> torch.nn.Module:
    """The MLP the shared server serves as ``mlp`` and ``mlp_batched`` (same weights)."""
    from modelplane.testing.runtime import make_mlp

    return make_mlp(seed=0)


@pytest.fixture(scope="session")
def runtime_repository(tmp_path_factory: pytest.TempPathFactory, reference_mlp: torch.nn.Module) -> Path:
    from modelplane.testing.runtime import (
        FailsOnNegative,
        TwoInputs,
        mlp_config,
        two_input_config,
        write_model,
    )

    root = tmp_path_factory.mktemp("runtime") / "models"
    write_model(root, "mlp", reference_mlp, mlp_config("mlp", max_batch_size=64, delay_us=500))
    # A long queue delay, always waited (not the adaptive default): concurrent requests are sure to
    # meet in one batch.
    full_wait = 'parameters { key: "batch_wait" value { string_value: "full" } }'
    write_model(
        root,
        "mlp_batched",
        reference_mlp,
        mlp_config("mlp_batched", max_batch_size=64, delay_us=100_000, extra=full_wait),
    )
    write_model(root, "scratch", reference_mlp, mlp_config("scratch", max_batch_size=8, delay_us=0))
    write_model(root, "two", TwoInputs(), two_input_config("two"))
    write_model(root, "faulty", FailsOnNegative(), FAULTY_CONFIG)
    return root


@pytest.fixture(scope="session")
def runtime_server(runtime_repository: Path) -> Iterator[RuntimeProcess]:
    from modelplane.testing.runtime import RuntimeProcess

    server = RuntimeProcess(
        runtime_repository, ("--max-body-bytes", str(TEST_MAX_BODY_BYTES), "--threads", "1")
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()
