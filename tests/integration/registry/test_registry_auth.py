"""Every route needs a token (401 without); too small a scope or another name prefix gets 403."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest

from modelplane.testing.registry import RegistryProcess

PUBLIC = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics")}
DATA = b"authz artifact"
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()

# (method, path template) → (scope needed, request kwargs). The test checks this table covers every
# operation in the OpenAPI document, so a new route cannot skip the authorization tests.
ROUTES: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {
    ("POST", "/api/v1/models"): ("write", {"json": {"name": "{model}-new"}}),
    ("GET", "/api/v1/models"): ("read", {}),
    ("GET", "/api/v1/models/{name}"): ("read", {}),
    ("PATCH", "/api/v1/models/{name}"): ("write", {"json": {"description": "x"}}),
    ("DELETE", "/api/v1/models/{name}"): ("write", {}),
    ("PUT", "/api/v1/models/{name}/tags/{key}"): ("write", {"json": {"value": "v"}}),
    ("DELETE", "/api/v1/models/{name}/tags/{key}"): ("write", {}),
    ("POST", "/api/v1/models/{name}/versions"): ("write", {"json": {}}),
    ("GET", "/api/v1/models/{name}/versions"): ("read", {}),
    ("GET", "/api/v1/versions"): ("read", {}),
    ("GET", "/api/v1/models/{name}/versions/{version}"): ("read", {}),
    ("PATCH", "/api/v1/models/{name}/versions/{version}"): ("write", {"json": {"description": "x"}}),
    ("DELETE", "/api/v1/models/{name}/versions/{version}"): ("write", {}),
    ("PUT", "/api/v1/models/{name}/versions/{version}/tags/{key}"): ("write", {"json": {"value": "v"}}),
    ("DELETE", "/api/v1/models/{name}/versions/{version}/tags/{key}"): ("write", {}),
    ("PUT", "/api/v1/models/{name}/versions/{version}/deployments/{namespace}/{deployment}"): ("write", {}),
    ("DELETE", "/api/v1/models/{name}/versions/{version}/deployments/{namespace}/{deployment}"): (
        "write",
        {},
    ),
    ("GET", "/api/v1/models/{name}/deployments"): ("read", {}),
    ("GET", "/api/v1/models/{name}/aliases"): ("read", {}),
    ("PUT", "/api/v1/models/{name}/aliases/{alias}"): ("write", {"json": {"version": 1}}),
    ("GET", "/api/v1/models/{name}/aliases/{alias}"): ("read", {}),
    ("DELETE", "/api/v1/models/{name}/aliases/{alias}"): ("write", {}),
    ("GET", "/api/v1/models/{name}/aliases/{alias}/version"): ("read", {}),
    ("GET", "/api/v1/models/{name}/aliases/{alias}/history"): ("read", {}),
    ("PUT", "/api/v1/models/{name}/versions/{version}/artifact"): (
        "write",
        {"content": DATA, "headers": {"X-Checksum-Sha256": DIGEST}},
    ),
    ("GET", "/api/v1/models/{name}/versions/{version}/artifact"): ("read", {}),
    ("PUT", "/api/v1/models/{name}/versions/{version}/files/{path}"): (
        "write",
        {"content": DATA, "headers": {"X-Checksum-Sha256": DIGEST}},
    ),
    ("GET", "/api/v1/models/{name}/versions/{version}/files"): ("read", {}),
    ("GET", "/api/v1/models/{name}/versions/{version}/files/{path}"): ("read", {}),
    ("POST", "/api/v1/models/{name}/versions/{version}/files:commit"): (
        "write",
        {"json": {"files": [{"path": "config.json", "sha256": DIGEST[7:], "size": len(DATA)}]}},
    ),
    ("POST", "/api/v1/tokens"): ("admin", {"json": {"name": "{model}-tok", "scopes": ["read"]}}),
    ("GET", "/api/v1/tokens"): ("admin", {}),
    ("DELETE", "/api/v1/tokens/{token_id}"): ("admin", {}),
    ("GET", "/api/v1/audit"): ("admin", {}),
    ("POST", "/api/v1/webhooks"): (
        "admin",
        {"json": {"url": "http://127.0.0.1:9/hook", "events": ["alias.moved"]}},
    ),
    ("GET", "/api/v1/webhooks"): ("admin", {}),
    ("DELETE", "/api/v1/webhooks/{webhook_id}"): ("admin", {}),
    ("GET", "/api/v1/webhooks/{webhook_id}/deliveries"): ("admin", {}),
}
RANK = {"read": 1, "write": 2, "admin": 3}


@pytest.fixture(scope="module")
def tokens(registry: RegistryProcess) -> dict[str, str]:
    """Tokens of each scope, one limited to the prefix 'team-a.', and a model the routes can address."""
    with registry.client() as admin:
        out = {
            scope: admin.create_token(f"only-{scope}", [scope]).token for scope in ("read", "write", "admin")
        }
        out["team-a"] = admin.create_token("team-a-writer", ["write"], ["team-a."]).token
        for model in ("authz", "team-a.model", "team-b.model"):
            admin.create_model(model)
            admin.create_version(model)
            admin.set_alias(model, "prod", 1)
        revoked = admin.create_token("revoked-one", ["admin"])
        admin.revoke_token(revoked.id)
        out["revoked"] = revoked.token
        out["hook"] = str(admin.create_webhook("http://127.0.0.1:9/hook", ["alias.moved"]).id)
        out["token_id"] = str(revoked.id)
    return out


def concrete(path: str, model: str, tokens: dict[str, str]) -> str:
    return path.format(
        name=model,
        key="k",
        version=1,
        namespace="ns",
        deployment="dep",
        alias="prod",
        token_id=tokens["token_id"],
        webhook_id=tokens["hook"],
        path="config.json",
    )


def request(http: httpx.Client, method: str, path: str, model: str, kwargs: dict[str, Any]) -> httpx.Response:
    kw = dict(kwargs)
    if "json" in kw:
        kw["json"] = {k: (v.format(model=model) if isinstance(v, str) else v) for k, v in kw["json"].items()}
    return http.request(method, path, **kw)


def test_route_table_covers_every_operation(registry: RegistryProcess) -> None:
    spec = httpx.get(registry.url + "/openapi.json", trust_env=False).json()
    operations = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    assert operations - PUBLIC == set(ROUTES)


@pytest.mark.parametrize(("method", "path"), sorted(ROUTES))
def test_without_token_every_route_is_401(
    registry: RegistryProcess, tokens: dict[str, str], method: str, path: str
) -> None:
    _, kwargs = ROUTES[(method, path)]
    for token in (None, "not-a-token", tokens["revoked"]):
        with registry.http(token=token) as http:
            r = request(http, method, concrete(path, "authz", tokens), "authz", kwargs)
        assert r.status_code == 401, (token, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert r.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("method", "path"), sorted(ROUTES))
def test_too_small_a_scope_is_403(
    registry: RegistryProcess, tokens: dict[str, str], method: str, path: str
) -> None:
    needed, kwargs = ROUTES[(method, path)]
    for scope in ("read", "write"):
        if RANK[scope] >= RANK[needed]:
            continue
        with registry.http(token=tokens[scope]) as http:
            r = request(http, method, concrete(path, "authz", tokens), "authz", kwargs)
        assert r.status_code == 403, (scope, r.text)
        assert r.json()["type"] == "https://modelplane.io/problems/forbidden"


@pytest.mark.parametrize(
    ("method", "path"), sorted(k for k in ROUTES if "{name}" in k[1] or k == ("POST", "/api/v1/models"))
)
def test_token_limited_to_a_prefix_is_403_elsewhere(
    registry: RegistryProcess, tokens: dict[str, str], method: str, path: str
) -> None:
    _, kwargs = ROUTES[(method, path)]
    with registry.http(token=tokens["team-a"]) as http:
        r = request(http, method, concrete(path, "team-b.model", tokens), "team-b.model", kwargs)
    assert r.status_code == 403, r.text


def test_prefix_token_works_inside_its_prefix_and_lists_only_it(
    registry: RegistryProcess, tokens: dict[str, str]
) -> None:
    with registry.http(token=tokens["team-a"]) as http:
        assert http.post("/api/v1/models/team-a.model/versions", json={}).status_code == 201
        names = [m["name"] for m in http.get("/api/v1/models").json()["items"]]
        assert names == ["team-a.model"]
        models = {v["model"] for v in http.get("/api/v1/versions").json()["items"]}
        assert models == {"team-a.model"}
    with registry.http(token=tokens["read"]) as http:
        assert http.get("/api/v1/models/team-b.model").status_code == 200
