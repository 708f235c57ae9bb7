"""Property-based API testing with schemathesis against the live ``/openapi.json``: every operation,
a bounded number of generated requests each, no 5xx and every response matching the document.

``DELETE /api/v1/tokens/{token_id}`` is left out: generated ids would revoke the very token the run
uses (revocation is covered by the authorization tests).
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode, checks
from schemathesis.core.result import Ok

from modelplane.testing.registry import ADMIN_TOKEN, RegistryProcess

MAX_EXAMPLES = 15


@pytest.fixture
def api_schema(registry: RegistryProcess) -> schemathesis.BaseSchema:
    with registry.client() as client:
        if not any(True for _ in client.list_models(name_prefix="fuzz")):
            client.create_model("fuzz", tags={"k": "v"})
            client.create_version("fuzz", source="s3://bucket/fuzz/1")
            client.set_alias("fuzz", "production", 1)
    schema = schemathesis.openapi.from_url(registry.url + "/openapi.json")
    return schema.exclude(method="DELETE", path_regex=r"^/api/v1/tokens/")


def _fuzz_operation(
    operation: schemathesis.APIOperation[Any, Any, Any, Any], mode: GenerationMode
) -> str | None:
    """Run bounded generated cases against one operation; the first failure's message, or None."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    def run(case: schemathesis.Case[Any]) -> None:
        case.call_and_validate(
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            checks=[
                checks.not_a_server_error,
                checks.response_schema_conformance,
                checks.content_type_conformance,
            ],
            timeout=30,
        )

    try:
        run()
    except Unsatisfiable:  # no invalid input exists (an operation without parameters or body)
        return None
    except Exception as exc:  # a failing example: report it with the operation's name
        return f"{operation.label} ({mode.value}): {exc}"
    return None


def test_api_conforms_to_its_openapi_document(api_schema: schemathesis.BaseSchema) -> None:
    failures = []
    operations = []
    for result in api_schema.get_all_operations():
        assert isinstance(result, Ok), (
            f"the OpenAPI document has an operation schemathesis cannot read: {result}"
        )
        operations.append(result.ok())
    assert len(operations) > 30
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            failure = _fuzz_operation(operation, mode)
            if failure:
                failures.append(failure)
    assert not failures, "\n\n".join(failures)
