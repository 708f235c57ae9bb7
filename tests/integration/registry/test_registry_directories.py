"""Directory artifacts through a real registry process, on SQLite and PostgreSQL: files uploaded one
by one with their sha256 (resumable), listed, committed against the canonical manifest digest and
downloaded verified; bad digests, path traversal, incomplete or extra file lists and writes to a
committed version are refused with nothing stored. And the CLI on a tiny Hugging Face folder."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelplane.registry_client.client import RegistryClient, RegistryClientError
from modelplane.registry_client.manifest import FileEntry, manifest_digest, scan_directory
from modelplane.testing.registry import ADMIN_TOKEN, RegistryProcess
from modelplane.testing.registry_fixtures import TEST_MAX_ARTIFACT_BYTES

PROBLEM = "application/problem+json"
TRAVERSALS = [
    ("%2E%2E/x", "../x"),
    ("a/%2E%2E/%2E%2E/b", "a/../../b"),
    ("/etc/passwd", "/etc/passwd"),
    ("a%5Cb", "a\\b"),
    ("a//b", "a//b"),
    ("/".join("abcdefghi"), "9 levels"),
    ("a%00b", "a NUL b"),
    ("%2Ehidden", ".hidden"),
]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return root


def new_version(registry: RegistryProcess, model: str, **fields: Any) -> int:
    with registry.client() as client:
        if not any(m.name == model for m in client.list_models(name_prefix=model)):
            client.create_model(model)
        return client.create_version(model, **fields).version


def put_file(
    http: httpx.Client, model: str, version: int, path: str, data: bytes, digest: str | None = None
) -> httpx.Response:
    return http.put(
        f"/api/v1/models/{model}/versions/{version}/files/{path}",
        content=data,
        headers={
            "X-Checksum-Sha256": "sha256:" + (digest or sha(data)),
            "Content-Type": "application/octet-stream",
        },
    )


def blob(registry: RegistryProcess, hexdigest: str) -> Path:
    return registry.artifact_root / "sha256" / hexdigest[:2] / hexdigest[2:]


class CountingTransport(httpx.HTTPTransport):
    """Counts PUTs of directory files; ``fail_after`` PUTs, the next one fails like a dropped link."""

    def __init__(self, fail_after: int | None = None) -> None:
        super().__init__()
        self.puts: list[str] = []
        self.fail_after = fail_after

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PUT" and "/files/" in request.url.path:
            if self.fail_after is not None and len(self.puts) >= self.fail_after:
                raise httpx.ConnectError("connection dropped (test)", request=request)
            self.puts.append(request.url.path.rsplit("/files/", 1)[1])
        return super().handle_request(request)


def test_directory_upload_list_commit_download(registry: RegistryProcess, tmp_path: Path) -> None:
    files = {
        "config.json": json.dumps({"architectures": ["LlamaForCausalLM"]}).encode(),
        "model-00001-of-00002.safetensors": os.urandom(300_000),
        "model-00002-of-00002.safetensors": os.urandom(1000),
        "tokenizer/tokenizer.json": b'{"version": "1.0"}',
        "empty.txt": b"",
    }
    root = make_tree(tmp_path / "tiny-llm", files)
    version = new_version(registry, "dir-flow", task="text-generation", format="hf-causal-lm")
    entries = scan_directory(root)
    with registry.client() as client:
        pending = client.get_version("dir-flow", version)
        assert (pending.task, pending.format, pending.artifact) == ("text-generation", "hf-causal-lm", None)
        v = client.upload_directory("dir-flow", version, root)
        assert v.status == "READY"
        assert v.artifact is not None
        assert v.artifact.kind == "directory"
        assert v.artifact.files == len(files)
        assert v.artifact.size == sum(len(d) for d in files.values())
        assert v.artifact.digest == manifest_digest(entries)
        assert v.artifact.filename == "tiny-llm"
        assert (v.task, v.format) == ("text-generation", "hf-causal-lm")

        listing = client.list_files("dir-flow", version)
        assert listing.committed
        assert listing.digest == v.artifact.digest
        assert [f.path for f in listing.files] == sorted(files)
        assert {f.path: (f.sha256, f.size) for f in listing.files} == {
            p: (sha(d), len(d)) for p, d in files.items()
        }

        dest = tmp_path / "download"
        got = client.download_directory("dir-flow", version, dest)
        assert got.digest == v.artifact.digest
        for rel, data in files.items():
            assert (dest / rel).read_bytes() == data
        assert scan_directory(dest) == entries
        with pytest.raises(RegistryClientError, match="directory artifact"):
            client.download_artifact("dir-flow", version, tmp_path / "single")

        # The audit log has every file and the commit.
        actions = [e.action for e in client.audit(object_id=f"dir-flow/{version}")]
        assert actions.count("version.file.upload") == len(files)
        assert actions[-1] == "version.artifact.commit"

    with registry.http() as http:
        base = f"/api/v1/models/dir-flow/versions/{version}"
        data = files["model-00001-of-00002.safetensors"]
        r = http.get(f"{base}/files/model-00001-of-00002.safetensors")
        assert r.status_code == 200
        assert r.content == data
        assert r.headers["ETag"] == f'"sha256:{sha(data)}"'
        assert r.headers["X-Checksum-Sha256"] == f"sha256:{sha(data)}"
        r = http.get(f"{base}/files/model-00001-of-00002.safetensors", headers={"Range": "bytes=10-19"})
        assert r.status_code == 206
        assert r.content == data[10:20]
        r = http.get(
            f"{base}/files/tokenizer/tokenizer.json",
            headers={"If-None-Match": f'"sha256:{sha(files["tokenizer/tokenizer.json"])}"'},
        )
        assert r.status_code == 304
        r = http.get(f"{base}/files/tokenizer/absent.json")
        assert r.status_code == 404
        assert r.headers["content-type"] == PROBLEM
        assert http.get(f"{base}/files/%2E%2E/x").status_code == 400
        r = http.get(f"{base}/artifact")
        assert r.status_code == 404
        assert "directory artifact" in r.json()["detail"]
        spec = http.get("/openapi.json").json()
        for route in ("/files", "/files/{path}", "/files:commit"):
            assert "/api/v1/models/{name}/versions/{version}" + route in spec["paths"]


def test_resume_uploads_only_the_missing_files(registry: RegistryProcess, tmp_path: Path) -> None:
    files = {f"shard-{i}.bin": os.urandom(10_000 + i) for i in range(6)}
    root = make_tree(tmp_path / "resume", files)
    version = new_version(registry, "dir-resume")

    # The link drops after three files: those three are stored, the version stays PENDING.
    dropping = CountingTransport(fail_after=3)
    with RegistryClient(registry.url, ADMIN_TOKEN, transport=dropping) as client:
        with pytest.raises(httpx.ConnectError):
            client.upload_directory("dir-resume", version, root)
        listing = client.list_files("dir-resume", version)
        assert not listing.committed
        assert listing.digest is None
        assert [f.path for f in listing.files] == dropping.puts == sorted(files)[:3]
        assert client.get_version("dir-resume", version).status == "PENDING"

    counting = CountingTransport()
    progressed: list[int] = []
    with RegistryClient(registry.url, ADMIN_TOKEN, transport=counting) as client:
        v = client.upload_directory("dir-resume", version, root, progress=progressed.append)
        assert counting.puts == sorted(files)[3:]
        assert sum(progressed) == sum(len(d) for d in files.values())
        assert v.status == "READY"
        assert v.artifact is not None
        assert v.artifact.digest == manifest_digest(scan_directory(root))
        # Again: nothing to upload, and committing the same files answers the version unchanged.
        counting.puts.clear()
        again = client.upload_directory("dir-resume", version, root)
        assert counting.puts == []
        assert again.artifact == v.artifact
        assert again.updated_at == v.updated_at

    with registry.http() as http:
        # Re-putting a stored path with the same digest is a no-op 200 before the commit...
        version2 = new_version(registry, "dir-resume")
        assert put_file(http, "dir-resume", version2, "a.bin", b"abc").status_code == 201
        r = put_file(http, "dir-resume", version2, "a.bin", b"abc")
        assert r.status_code == 200
        assert r.json() == {"path": "a.bin", "sha256": sha(b"abc"), "size": 3}
        # ... another digest for it is a 409, and the stored file is unchanged.
        r = put_file(http, "dir-resume", version2, "a.bin", b"abd")
        assert r.status_code == 409
        assert r.json()["type"].endswith("/already-exists")
        listed = http.get(f"/api/v1/models/dir-resume/versions/{version2}/files").json()
        assert listed == {
            "files": [{"path": "a.bin", "sha256": sha(b"abc"), "size": 3}],
            "digest": None,
            "committed": False,
        }


def test_bad_digest_and_path_traversal_store_nothing(registry: RegistryProcess) -> None:
    version = new_version(registry, "dir-bad")
    base = f"/api/v1/models/dir-bad/versions/{version}"
    with registry.http() as http:
        data = b"some weights that never arrive intact"
        r = put_file(http, "dir-bad", version, "weights.bin", data, digest=sha(b"other"))
        assert r.status_code == 400
        assert r.headers["content-type"] == PROBLEM
        assert r.json()["type"].endswith("/digest-mismatch")
        assert not blob(registry, sha(data)).exists()
        assert not blob(registry, sha(b"other")).exists()
        r = http.put(f"{base}/files/weights.bin", content=data)
        assert r.status_code == 400  # no digest header
        r = http.put(f"{base}/files/weights.bin", content=data, headers={"X-Checksum-Sha256": "md5:abc"})
        assert r.status_code == 400
        assert http.get(f"{base}/files").json()["files"] == []

        for i, (raw, what) in enumerate(TRAVERSALS):
            payload = f"traversal {i}".encode()
            r = put_file(http, "dir-bad", version, raw, payload)
            assert r.status_code == 400, (what, r.status_code, r.text)
            assert r.headers["content-type"] == PROBLEM
            assert r.json()["type"].endswith("/invalid-input"), what
            assert not blob(registry, sha(payload)).exists(), what
            listed = [f["path"] for f in http.get(f"{base}/files").json()["files"]]
            assert listed == [f"ok/{j}.bin" for j in range(i)], what
            # A valid request right after succeeds.
            ok = put_file(http, "dir-bad", version, f"ok/{i}.bin", payload)
            assert ok.status_code == 201, ok.text
            assert blob(registry, sha(payload)).read_bytes() == payload
            listed = [f["path"] for f in http.get(f"{base}/files").json()["files"]]
            assert listed == [f"ok/{j}.bin" for j in range(i + 1)]
        assert not (registry.artifact_root.parent / "x").exists()

        # Over the per-file limit: 413, nothing stored.
        big = b"\x01" * (TEST_MAX_ARTIFACT_BYTES + 1)
        r = put_file(http, "dir-bad", version, "big.bin", big)
        assert r.status_code == 413
        assert not blob(registry, sha(big)).exists()

        # A read token may list but not upload.
        with registry.client() as admin:
            reader = admin.create_token("dir-reader", ["read"]).token
        with registry.http(reader) as ro:
            assert ro.get(f"{base}/files").status_code == 200
            assert put_file(ro, "dir-bad", version, "r.bin", b"r").status_code == 403
            r = ro.post(f"{base}/files:commit", json={"files": []})
            assert r.status_code == 403


def test_commit_checks_the_file_list(registry: RegistryProcess) -> None:
    version = new_version(registry, "dir-commit")
    base = f"/api/v1/models/dir-commit/versions/{version}"
    stored = {"a.json": b"{}", "b/c.bin": b"c" * 100}
    with registry.http() as http:
        for rel, data in stored.items():
            assert put_file(http, "dir-commit", version, rel, data).status_code == 201
        entries = [{"path": p, "sha256": sha(d), "size": len(d)} for p, d in stored.items()]

        def commit(files: list[dict[str, Any]], **extra: Any) -> httpx.Response:
            return http.post(f"{base}/files:commit", json={"files": files, **extra})

        missing = commit([*entries, {"path": "d.bin", "sha256": sha(b"d"), "size": 1}])
        assert missing.status_code == 409
        assert missing.headers["content-type"] == PROBLEM
        assert missing.json()["type"].endswith("/manifest-mismatch")
        assert "not uploaded: d.bin" in missing.json()["detail"]
        extra = commit(entries[:1])
        assert extra.status_code == 409
        assert "uploaded but not listed: b/c.bin" in extra.json()["detail"]
        wrong_size = commit([entries[0], {**entries[1], "size": 99}])
        assert wrong_size.status_code == 409
        assert "another sha256 or size: b/c.bin" in wrong_size.json()["detail"]
        assert commit([]).status_code == 400
        assert commit([entries[0], entries[0], entries[1]]).status_code == 400  # a path twice
        assert commit([{**entries[0], "path": "../a.json"}]).status_code == 422
        too_many = [{"path": f"f{i}", "sha256": "0" * 64, "size": 0} for i in range(10_001)]
        r = commit(too_many)  # ~900 KB: over the JSON limit, within the commit's own
        assert r.status_code == 400, r.text
        assert "at most 10000" in r.json()["detail"]

        # Nothing changed by the failed commits.
        v = http.get(f"/api/v1/models/dir-commit/versions/{version}").json()
        assert (v["status"], v["artifact"]) == ("PENDING", None)

        # A single-file artifact cannot be added to a version with directory files.
        r = http.put(f"{base}/artifact", content=b"x", headers={"X-Checksum-Sha256": "sha256:" + sha(b"x")})
        assert r.status_code == 409

        done = commit(list(reversed(entries)), name="my-model")
        assert done.status_code == 200, done.text
        body = done.json()
        assert body["status"] == "READY"
        files = [FileEntry.model_validate(e) for e in entries]
        assert body["artifact"] == {
            "digest": manifest_digest(files),
            "size": 102,
            "filename": "my-model",
            "kind": "directory",
            "files": 2,
        }
        # Committing the same files again: the version unchanged; other files: 409.
        again = commit(entries, name="my-model")
        assert again.status_code == 200
        assert again.json() == body
        assert commit(entries[:1]).status_code == 409
        # Files of a committed (READY) version are immutable.
        r = put_file(http, "dir-commit", version, "new.bin", b"new")
        assert r.status_code == 409
        assert r.json()["type"].endswith("/invalid-state")
        assert put_file(http, "dir-commit", version, "a.json", b"{}").status_code == 409
        listing = http.get(f"{base}/files").json()
        assert listing["committed"] is True
        assert listing["digest"] == body["artifact"]["digest"]
        assert [f["path"] for f in listing["files"]] == ["a.json", "b/c.bin"]

        # Files cannot be added to a version with a single-file artifact, nor to a FAILED one.
        single = new_version(registry, "dir-commit")
        r = http.put(
            f"/api/v1/models/dir-commit/versions/{single}/artifact",
            content=b"w",
            headers={"X-Checksum-Sha256": "sha256:" + sha(b"w")},
        )
        assert r.status_code == 200
        assert r.json()["artifact"]["kind"] == "file"
        assert r.json()["artifact"]["files"] == 1
        assert put_file(http, "dir-commit", single, "a.json", b"{}").status_code == 409
        failed = new_version(registry, "dir-commit")
        http.patch(
            f"/api/v1/models/dir-commit/versions/{failed}", json={"status": "FAILED"}
        ).raise_for_status()
        assert put_file(http, "dir-commit", failed, "a.json", b"{}").status_code == 409
        assert http.get(f"/api/v1/models/dir-commit/versions/{failed}/files").json()["files"] == []
        # Unknown versions and models are 404.
        assert put_file(http, "dir-commit", 99, "a.json", b"{}").status_code == 404
        assert http.get("/api/v1/models/absent-model/versions/1/files").status_code == 404


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelplane.serving.registry", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "COLUMNS": "200", **env},
    )


def tiny_hf_directory(root: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    root.mkdir(parents=True)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 8,
        "vocab_size": 16,
    }
    (root / "config.json").write_text(json.dumps(config))
    torch.manual_seed(0)
    save_file(
        {"model.embed_tokens.weight": torch.randn(16, 8), "lm_head.weight": torch.randn(16, 8)},
        str(root / "model.safetensors"),
    )
    (root / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"type": "BPE"}}))
    (root / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    return root


def test_cli_registers_a_hugging_face_directory(registry: RegistryProcess, tmp_path: Path) -> None:
    env = {"MODELPLANE_REGISTRY_URL": registry.url, "MODELPLANE_REGISTRY_TOKEN": ADMIN_TOKEN}
    root = tiny_hf_directory(tmp_path / "tiny-llama")
    assert cli("models", "create", "tiny-llama", env=env).returncode == 0
    created = cli("versions", "create", "tiny-llama", "--artifact", str(root), env=env)
    assert created.returncode == 0, created.stderr
    version = json.loads(created.stdout)
    assert version["status"] == "READY"
    assert version["format"] == "hf-causal-lm"
    assert version["task"] == "text-generation"
    assert version["signature"] is None
    assert "warning" not in created.stderr  # a generative directory needs no signature
    entries = scan_directory(root)
    assert [e.path for e in entries] == ["config.json", "model.safetensors", "tokenizer.json"]
    assert version["artifact"]["digest"] == manifest_digest(entries)
    assert version["artifact"]["kind"] == "directory"
    assert version["artifact"]["files"] == 3

    dest = tmp_path / "down"
    got = cli("versions", "download", "tiny-llama", str(version["version"]), str(dest), env=env)
    assert got.returncode == 0, got.stderr
    assert "3 files" in got.stdout
    for entry in entries:
        assert (dest / entry.path).read_bytes() == (root / entry.path).read_bytes()

    # Explicit --task and --format; `versions upload` takes a directory too.
    made = cli(
        "versions",
        "create",
        "tiny-llama",
        "--task",
        "text2text-generation",
        "--format",
        "hf-causal-lm",
        env=env,
    )
    assert made.returncode == 0, made.stderr
    v2 = json.loads(made.stdout)
    assert (v2["task"], v2["format"], v2["status"]) == ("text2text-generation", "hf-causal-lm", "PENDING")
    assert "warning" not in made.stderr
    uploaded = cli("versions", "upload", "tiny-llama", str(v2["version"]), str(root), env=env)
    assert uploaded.returncode == 0, uploaded.stderr
    assert json.loads(uploaded.stdout)["artifact"]["digest"] == manifest_digest(entries)

    # Bad options create nothing.
    for bad in (["--format", "onnx"], ["--task", "Text Generation"]):
        refused = cli("versions", "create", "tiny-llama", *bad, env=env)
        assert refused.returncode == 1
        assert "no version was created" in refused.stderr
    with registry.client() as client:
        assert [v.version for v in client.list_versions("tiny-llama")] == [1, 2]

    # A file keeps its format from the suffix (and its warning); a plain upload leaves it None.
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"not really torchscript")
    plain = cli("versions", "create", "tiny-llama", "--artifact", str(weights), env=env)
    assert plain.returncode == 0, plain.stderr
    assert json.loads(plain.stdout)["format"] == "torchscript"
    assert "warning" in plain.stderr
    with registry.client() as client:
        v4 = client.create_version("tiny-llama")
        assert client.upload_artifact("tiny-llama", v4.version, weights).format is None
