"""The whole model → version → artifact → alias flow over HTTP, on SQLite and on PostgreSQL."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from modelplane.registry_client.client import RegistryClientError
from modelplane.testing.registry import RegistryProcess

PROBLEM = "application/problem+json"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def upload(
    http: httpx.Client, name: str, version: int, data: bytes, digest: str | None = None
) -> httpx.Response:
    return http.put(
        f"/api/v1/models/{name}/versions/{version}/artifact",
        content=data,
        params={"filename": "model.pt"},
        headers={"X-Checksum-Sha256": digest or sha(data), "Content-Type": "application/octet-stream"},
    )


def test_model_version_artifact_alias_flow(registry: RegistryProcess, tmp_path: Path) -> None:
    with registry.http() as http:
        r = http.post(
            "/api/v1/models",
            json={"name": "resnet", "description": "image classifier", "tags": {"team": "vision"}},
        )
        assert r.status_code == 201, r.text
        assert r.headers["Location"] == "/api/v1/models/resnet"
        assert r.json()["created_by"] == "bootstrap"

        signature = {
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 224, 224]}],
            "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 1000]}],
        }
        r = http.post(
            "/api/v1/models/resnet/versions",
            json={
                "description": "first",
                "author": "alice",
                "source": "runs:/abc123/model",
                "run_id": "abc123",
                "framework": "torch",
                "signature": signature,
                "metrics": {"top1": 0.76},
                "params": {"lr": "0.1"},
                "tags": {"stage": "candidate"},
            },
        )
        assert r.status_code == 201, r.text
        v1 = r.json()
        assert (v1["version"], v1["status"], v1["author"], v1["signature"]) == (
            1,
            "PENDING",
            "alice",
            signature,
        )
        assert r.headers["Location"] == "/api/v1/models/resnet/versions/1"
        assert http.post("/api/v1/models/resnet/versions", json={"framework": "torch"}).json()["version"] == 2
        assert http.post("/api/v1/models/resnet/versions", json={"framework": "onnx"}).json()["version"] == 3

        data = bytes(range(256)) * 4096  # 1 MiB
        r = upload(http, "resnet", 1, data)
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "READY"
        assert r.json()["artifact"] == {
            "digest": sha(data),
            "size": len(data),
            "filename": "model.pt",
            "kind": "file",
            "files": 1,
        }
        assert (r.json()["task"], r.json()["format"]) == (None, None)
        blob = registry.artifact_root / "sha256" / sha(data)[7:9] / sha(data)[9:]
        assert blob.read_bytes() == data

        r = http.get("/api/v1/models/resnet/versions/1/artifact")
        assert r.status_code == 200
        assert r.content == data
        assert r.headers["ETag"] == f'"{sha(data)}"'
        r = http.get("/api/v1/models/resnet/versions/1/artifact", headers={"Range": "bytes=100-199"})
        assert r.status_code == 206
        assert r.content == data[100:200]
        assert r.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
        r = http.get("/api/v1/models/resnet/versions/1/artifact", headers={"If-None-Match": f'"{sha(data)}"'})
        assert r.status_code == 304
        r = http.get("/api/v1/models/resnet/versions/1/artifact", headers={"Range": f"bytes={len(data)}-"})
        assert r.status_code == 416

        # An artifact is immutable once the version is READY.
        r = upload(http, "resnet", 1, b"other")
        assert r.status_code == 409
        assert r.headers["content-type"] == PROBLEM

        # Aliases: set, move, resolve, history.
        assert http.put("/api/v1/models/resnet/aliases/production", json={"version": 1}).status_code == 200
        r = http.get("/api/v1/models/resnet/aliases/production/version")
        assert r.status_code == 200
        assert r.json()["version"] == 1
        assert r.json()["aliases"] == ["production"]
        upload(http, "resnet", 3, b"v3 weights").raise_for_status()
        r = http.put("/api/v1/models/resnet/aliases/production", json={"version": 3})
        assert r.json()["version"] == 3
        assert http.get("/api/v1/models/resnet/aliases/production/version").json()["version"] == 3
        history = http.get("/api/v1/models/resnet/aliases/production/history").json()
        assert [(h["from_version"], h["to_version"]) for h in history] == [(None, 1), (1, 3)]
        assert http.get("/api/v1/models/resnet").json()["aliases"] == {"production": 3}
        r = http.put("/api/v1/models/resnet/aliases/production", json={"version": 99})
        assert r.status_code == 404
        assert http.get("/api/v1/models/resnet/aliases/production").json()["version"] == 3

        # Tags on models and versions.
        r = http.put("/api/v1/models/resnet/versions/2/tags/stage", json={"value": "rejected"})
        assert r.json()["tags"] == {"stage": "rejected"}
        assert http.delete("/api/v1/models/resnet/versions/2/tags/stage").json()["tags"] == {}
        assert http.delete("/api/v1/models/resnet/versions/2/tags/stage").status_code == 404

    # The typed client sees the same thing, and downloads with digest verification.
    with registry.client() as client:
        resolved = client.resolve("resnet", alias="production")
        assert resolved.version == 3
        info = client.download_artifact("resnet", 1, tmp_path / "out" / "model.pt")
        assert (tmp_path / "out" / "model.pt").read_bytes() == data
        assert info.digest == sha(data)
        with pytest.raises(RegistryClientError) as err:
            client.create_model("resnet")
        assert err.value.status == 409
        assert err.value.type.endswith("/already-exists")


def test_etag_if_match_and_delete_guard(registry: RegistryProcess) -> None:
    with registry.http() as http:
        r = http.post("/api/v1/models", json={"name": "guarded"})
        etag = r.headers["ETag"]
        r = http.patch("/api/v1/models/guarded", json={"description": "one"}, headers={"If-Match": etag})
        assert r.status_code == 200
        assert r.headers["ETag"] != etag
        stale = http.patch("/api/v1/models/guarded", json={"description": "two"}, headers={"If-Match": etag})
        assert stale.status_code == 412
        assert stale.headers["content-type"] == PROBLEM
        assert stale.json()["type"] == "https://modelplane.io/problems/precondition-failed"
        assert http.get("/api/v1/models/guarded").json()["description"] == "one"

        v = http.post("/api/v1/models/guarded/versions", json={"source": "s3://bucket/guarded/1"}).json()
        r = http.get("/api/v1/models/guarded/versions/1")
        r2 = http.patch(
            "/api/v1/models/guarded/versions/1",
            json={"status": "READY"},
            headers={"If-Match": r.headers["ETag"]},
        )
        assert r2.status_code == 200, r2.text
        assert r2.json()["status"] == "READY"
        assert v["version"] == 1

        r = http.put("/api/v1/models/guarded/versions/1/deployments/prod/guarded-svc")
        assert r.status_code == 200
        assert r.json()["namespace"] == "prod"
        assert [d["deployment"] for d in http.get("/api/v1/models/guarded/deployments").json()] == [
            "guarded-svc"
        ]
        r = http.delete("/api/v1/models/guarded")
        assert r.status_code == 409
        assert r.json()["type"].endswith("/in-use")
        assert "prod/guarded-svc" in r.json()["detail"]
        assert http.delete("/api/v1/models/guarded/versions/1").status_code == 409
        assert http.get("/api/v1/models/guarded").status_code == 200

        assert (
            http.delete("/api/v1/models/guarded/versions/1/deployments/prod/guarded-svc").status_code == 204
        )
        assert http.delete("/api/v1/models/guarded").status_code == 204
        assert http.get("/api/v1/models/guarded").status_code == 404
        # A new model of the same name starts numbering again at 1.
        http.post("/api/v1/models", json={"name": "guarded"}).raise_for_status()
        assert http.post("/api/v1/models/guarded/versions", json={}).json()["version"] == 1


def test_search_filters_and_cursor_pagination(registry: RegistryProcess) -> None:
    with registry.http() as http:
        for i in range(7):
            http.post(
                "/api/v1/models", json={"name": f"search-{i}", "tags": {"parity": str(i % 2)}}
            ).raise_for_status()
        http.post("/api/v1/models", json={"name": "other-model"}).raise_for_status()

        names: list[str] = []
        cursor = None
        for _ in range(10):
            params: dict[str, str | int] = {"name_prefix": "search-", "limit": 3}
            if cursor:
                params["cursor"] = cursor
            page = http.get("/api/v1/models", params=params).json()
            names += [m["name"] for m in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert names == [f"search-{i}" for i in range(7)]
        odd = http.get("/api/v1/models", params={"tag": "parity=1"}).json()["items"]
        assert sorted(m["name"] for m in odd) == ["search-1", "search-3", "search-5"]

        for author, framework in [("ann", "torch"), ("bob", "onnx"), ("ann", "onnx")]:
            http.post(
                "/api/v1/models/search-0/versions", json={"author": author, "framework": framework}
            ).raise_for_status()
        r = http.get("/api/v1/models/search-0/versions", params={"author": "ann"}).json()
        assert [v["version"] for v in r["items"]] == [1, 3]
        r = http.get("/api/v1/versions", params={"framework": "onnx", "name_prefix": "search-"}).json()
        assert [(v["model"], v["version"]) for v in r["items"]] == [("search-0", 2), ("search-0", 3)]
        page1 = http.get("/api/v1/models/search-0/versions", params={"limit": 2}).json()
        page2 = http.get(
            "/api/v1/models/search-0/versions", params={"limit": 2, "cursor": page1["next_cursor"]}
        ).json()
        assert [v["version"] for v in page1["items"] + page2["items"]] == [1, 2, 3]
        assert page2["next_cursor"] is None

        bad = http.get("/api/v1/models", params={"cursor": page1["next_cursor"]})
        assert bad.status_code == 400
        assert bad.headers["content-type"] == PROBLEM


def test_audit_log_names_the_actor(registry: RegistryProcess) -> None:
    with registry.client() as admin:
        writer = admin.create_token("audit-writer", ["write"])
    with registry.client(writer.token) as client:
        client.create_model("audited")
        client.update_model("audited", "changed")
        client.create_version("audited", description="v1")
        client.set_alias("audited", "staging", 1)
    with registry.client() as admin:
        entries = list(admin.audit())
    mine = [(e.actor, e.action, e.object_id) for e in entries if e.object_id.startswith("audited")]
    assert mine == [
        ("audit-writer", "model.create", "audited"),
        ("audit-writer", "model.update", "audited"),
        ("audit-writer", "version.create", "audited/1"),
        ("audit-writer", "alias.set", "audited@staging"),
    ]
    update = next(e for e in entries if e.action == "model.update" and e.object_id == "audited")
    assert update.before is not None
    assert update.after is not None
    assert (update.before["description"], update.after["description"]) == ("", "changed")


def test_health_ready_metrics_need_no_token(registry: RegistryProcess) -> None:
    with registry.http(token=None) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        assert http.get("/readyz").json() == {"status": "ready"}
        r = http.get("/metrics")
        assert r.status_code == 200
        assert "modelplane_registry_requests_total" in r.text
        spec = http.get("/openapi.json").json()
        assert "/api/v1/models/{name}/versions/{version}/artifact" in spec["paths"]
