"""Bad input gets a clear 4xx problem document and stores nothing; a good request works right after."""

from __future__ import annotations

import hashlib
import json
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelplane.testing.registry import RegistryProcess
from modelplane.testing.registry_fixtures import TEST_MAX_ARTIFACT_BYTES, TEST_MAX_BODY_BYTES

PROBLEM = "application/problem+json"
TRAVERSAL_NAMES = [
    "../etc",
    "..\\etc",
    "/etc/passwd",
    "%2e%2e",
    "%2e%2e%2fetc",
    "a..b",
    "a\x00b",
    "",
    "x" * 129,
    "-lead",
    "file:///etc/passwd",
]
BAD_SOURCES = [
    "../../etc/passwd",
    "/etc/passwd",
    "file:///etc/passwd",
    "http:///#/../../etc/",
    "s3://bucket/../../etc/passwd",
    "s3://bucket/%2e%2e/%2e%2e/etc",
    "s3://bucket/%252e%252e/etc",
    "https://host/a\x00b",
    "C:\\Windows\\system32",
    "runs:/abc/..\\..\\x",
    "https://user:pw@host/x",
]
BAD_FILENAMES = [
    "../escape.bin",
    "..\\escape.bin",
    "/etc/passwd",
    "%2e%2e%2fescape",
    "a/b",
    "a\x00b",
    ".hidden",
]


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def snapshot(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def assert_problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body = r.json()
    assert body["status"] == status
    assert str(body["type"]).startswith("https://modelplane.io/problems/")
    return dict(body)


@pytest.fixture(scope="module")
def http(registry: RegistryProcess) -> httpx.Client:
    client = registry.http()
    client.post("/api/v1/models", json={"name": "target"}).raise_for_status()
    return client


def assert_still_works(http: httpx.Client) -> None:
    """A valid request succeeds right after a bad one (nothing is left half-done)."""
    r = http.get("/api/v1/models/target")
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("name", TRAVERSAL_NAMES)
def test_bad_model_names_are_refused(http: httpx.Client, name: str) -> None:
    before = http.get("/api/v1/models", params={"limit": 1000}).json()["items"]
    body = assert_problem(http.post("/api/v1/models", json={"name": name}), 422)
    assert body["errors"]
    assert body["errors"][0]["loc"][:2] == ["body", "name"]
    assert http.get("/api/v1/models", params={"limit": 1000}).json()["items"] == before
    assert_still_works(http)


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/models/..%2F..%2Fetc%2Fpasswd",
        "/api/v1/models/%2e%2e/versions",
        "/api/v1/models/..%5C..%5Cwindows",
        "/api/v1/models/target/versions/1/artifact/..%2F..%2F..%2Fetc%2Fpasswd",
        "/api/v1/models/a%00b",
    ],
)
def test_traversal_in_url_paths_is_refused(http: httpx.Client, path: str) -> None:
    r = http.get(path)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert r.headers["content-type"] == PROBLEM
    assert "root:" not in r.text
    assert_still_works(http)


@pytest.mark.parametrize("source", BAD_SOURCES)
def test_bad_sources_are_refused(http: httpx.Client, source: str) -> None:
    latest = http.get("/api/v1/models/target").json()["latest_version"]
    body = assert_problem(http.post("/api/v1/models/target/versions", json={"source": source}), 422)
    assert body["errors"][0]["loc"][:2] == ["body", "source"]
    assert http.get("/api/v1/models/target").json()["latest_version"] == latest
    assert_still_works(http)


def test_good_sources_are_accepted(http: httpx.Client) -> None:
    for source in ["s3://bucket/models/resnet/1", "runs:/0a1b/model", "https://models.example.com/r.pt"]:
        r = http.post("/api/v1/models/target/versions", json={"source": source})
        assert r.status_code == 201
        assert r.json()["source"] == source


def test_bad_artifact_uploads_store_nothing(
    registry: RegistryProcess, http: httpx.Client, tmp_path: Path
) -> None:
    version = http.post("/api/v1/models/target/versions", json={}).json()["version"]
    url = f"/api/v1/models/target/versions/{version}/artifact"
    root = registry.artifact_root
    before = snapshot(root)
    data = b"weights" * 1000

    for filename in BAD_FILENAMES:
        r = http.put(
            url, content=data, params={"filename": filename}, headers={"X-Checksum-Sha256": sha(data)}
        )
        assert_problem(r, 400)
    assert_problem(http.put(url, content=data, headers={"X-Checksum-Sha256": sha(b"other")}), 400)
    assert_problem(http.put(url, content=data), 400)
    assert_problem(http.put(url, content=data, headers={"X-Checksum-Sha256": "sha256:xyz"}), 400)
    assert_problem(http.put(url, content=data, headers={"X-Checksum-Sha256": "md5:" + "0" * 32}), 400)
    too_big = b"\0" * (TEST_MAX_ARTIFACT_BYTES + 1)
    assert_problem(http.put(url, content=too_big, headers={"X-Checksum-Sha256": sha(too_big)}), 413)

    def chunked() -> object:
        yield too_big[: TEST_MAX_ARTIFACT_BYTES // 2]
        yield too_big[TEST_MAX_ARTIFACT_BYTES // 2 :]

    r = http.put(url, content=chunked(), headers={"X-Checksum-Sha256": sha(too_big)})  # type: ignore[arg-type]
    assert_problem(r, 413)

    assert snapshot(root) == before
    assert http.get(f"/api/v1/models/target/versions/{version}").json()["status"] == "PENDING"
    assert_problem(http.get(url), 404)

    exact = b"\1" * TEST_MAX_ARTIFACT_BYTES
    r = http.put(
        url, content=exact, params={"filename": "exact.bin"}, headers={"X-Checksum-Sha256": sha(exact)}
    )
    assert r.status_code == 200
    assert r.json()["artifact"]["size"] == TEST_MAX_ARTIFACT_BYTES
    assert not any(p.startswith("tmp/") for p in snapshot(root))


def _raw_partial_upload(registry: RegistryProcess, path: str, total: int, sent: bytes) -> None:
    with socket.create_connection(("127.0.0.1", registry.port), timeout=10) as sock:
        head = (
            f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {registry_token()}\r\n"
            f"X-Checksum-Sha256: sha256:{'0' * 64}\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {total}\r\n\r\n"
        )
        sock.sendall(head.encode() + sent)
        time.sleep(0.3)


def registry_token() -> str:
    from modelplane.testing.registry import ADMIN_TOKEN

    return ADMIN_TOKEN


def test_interrupted_upload_leaves_nothing(registry: RegistryProcess, http: httpx.Client) -> None:
    version = http.post("/api/v1/models/target/versions", json={}).json()["version"]
    path = f"/api/v1/models/target/versions/{version}/artifact"
    before = [p for p in snapshot(registry.artifact_root) if not p.startswith("tmp/")]
    _raw_partial_upload(registry, path, 1_000_000, b"x" * 300_000)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and list((registry.artifact_root / "tmp").iterdir()):
        time.sleep(0.1)
    assert list((registry.artifact_root / "tmp").iterdir()) == []
    assert [p for p in snapshot(registry.artifact_root) if not p.startswith("tmp/")] == before
    assert http.get(f"/api/v1/models/target/versions/{version}").json()["status"] == "PENDING"
    data = b"complete"
    r = http.put(path, content=data, headers={"X-Checksum-Sha256": sha(data)})
    assert r.status_code == 200
    assert r.json()["status"] == "READY"


def test_invalid_json_unknown_fields_and_body_limits(http: httpx.Client) -> None:
    count = len(http.get("/api/v1/models", params={"limit": 1000}).json()["items"])
    headers = {"Content-Type": "application/json"}
    body = assert_problem(http.post("/api/v1/models", content=b'{"name": "broken",', headers=headers), 400)
    assert body["type"] == "https://modelplane.io/problems/invalid-json"
    assert_problem(http.post("/api/v1/models", content=b"[" * 5000 + b"]" * 5000, headers=headers), 400)
    assert_problem(http.post("/api/v1/models", content=b'"just a string"', headers=headers), 422)
    body = assert_problem(http.post("/api/v1/models", json={"name": "typo", "descripton": "x"}), 422)
    assert ["body", "descripton"] in [e["loc"] for e in body["errors"]]
    body = assert_problem(http.post("/api/v1/models/target/versions", json={"metrics": {"acc": "high"}}), 422)
    assert body["errors"][0]["loc"] == ["body", "metrics", "acc"]
    assert_problem(http.post("/api/v1/models", json={"name": "huge", "description": "d" * 10_001}), 422)

    def padded(name: str, size: int) -> bytes:
        start = json.dumps({"name": name}).encode()[:-1]
        return start + b" " * (size - len(start) - 1) + b"}"

    r = http.post("/api/v1/models", content=padded("at-limit", TEST_MAX_BODY_BYTES), headers=headers)
    assert r.status_code == 201, r.text
    assert_problem(
        http.post("/api/v1/models", content=padded("over-limit", TEST_MAX_BODY_BYTES + 1), headers=headers),
        413,
    )
    assert http.get("/api/v1/models/over-limit").status_code == 404
    names = {m["name"] for m in http.get("/api/v1/models", params={"limit": 1000}).json()["items"]}
    assert len(names) == count + 1
    assert "at-limit" in names
    assert_still_works(http)


def test_canary_outside_root_is_untouched(registry: RegistryProcess, http: httpx.Client) -> None:
    canary = registry.artifact_root.parent / "escape.bin"
    canary.write_bytes(b"canary")
    version = http.post("/api/v1/models/target/versions", json={}).json()["version"]
    data = b"attacker"
    for filename in ["../escape.bin", "../../escape.bin", "..%2fescape.bin"]:
        http.put(
            f"/api/v1/models/target/versions/{version}/artifact",
            content=data,
            params={"filename": filename},
            headers={"X-Checksum-Sha256": sha(data)},
        )
    assert canary.read_bytes() == b"canary"
