"""Artifact fetching: local paths, file:// and HTTP with a bearer token, sha256-verified and atomic."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
import torch

from modelplane.serving.runtime.artifacts import ArtifactError, artifact_filename, bearer_token, fetch
from modelplane.serving.runtime.config import parse_config
from modelplane.serving.runtime.loader import LoadError, find_model_file, load_module
from modelplane.testing.runtime import Mlp, make_mlp, mlp_config

PAYLOAD = b"model bytes " * 1000
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    requests: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.requests.append(self.headers.get("Authorization", ""))
        if self.path.endswith("/missing.pt"):
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        self.wfile.write(PAYLOAD)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def base_url() -> Iterator[str]:
    Handler.requests = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(10)


def test_local_path_and_file_uri(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(PAYLOAD)
    assert fetch(str(path), DIGEST, tmp_path / "cache") == path
    assert fetch(path.as_uri(), None, tmp_path / "cache") == path
    with pytest.raises(ArtifactError, match="expected"):
        fetch(str(path), "0" * 64, tmp_path / "cache")
    with pytest.raises(ArtifactError, match="does not exist"):
        fetch(str(tmp_path / "nope.pt"), None, tmp_path / "cache")


def test_http_download_is_verified_cached_and_sends_the_token(
    tmp_path: Path, base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELPLANE_ARTIFACT_TOKEN", "tok")
    target = fetch(f"{base_url}/v1/models/m/versions/1/model.pt", DIGEST, tmp_path / "cache")
    assert target == tmp_path / "cache" / DIGEST / "model.pt"
    assert target.read_bytes() == PAYLOAD
    assert Handler.requests == ["Bearer tok"]
    assert fetch(f"{base_url}/v1/models/m/versions/1/model.pt", DIGEST, tmp_path / "cache") == target
    assert len(Handler.requests) == 1  # served from the cache


def test_digest_mismatch_leaves_no_file(tmp_path: Path, base_url: str) -> None:
    wrong = "f" * 64
    with pytest.raises(ArtifactError, match="expected " + wrong):
        fetch(f"{base_url}/model.pt", wrong, tmp_path / "cache")
    assert list((tmp_path / "cache" / wrong).iterdir()) == []


def test_http_errors_and_bad_inputs(tmp_path: Path, base_url: str) -> None:
    with pytest.raises(ArtifactError, match="HTTP 404"):
        fetch(f"{base_url}/missing.pt", None, tmp_path / "cache")
    with pytest.raises(ArtifactError, match="64 lowercase hex"):
        fetch(f"{base_url}/model.pt", "abc", tmp_path / "cache")
    with pytest.raises(ArtifactError, match="not supported"):
        fetch("ftp://example/model.pt", None, tmp_path / "cache")


def test_artifact_file_names_are_never_paths() -> None:
    assert artifact_filename("http://h/a/model.pt2", "model.pt") == "model.pt2"
    assert artifact_filename("http://h/a/..%2F..%2Fevil.pt", "model.pt") == "model.pt"
    assert artifact_filename("http://h/a/.hidden.pt", "model.pt") == "model.pt"
    assert artifact_filename("http://h/a/download?x=1", "model.pt") == "model.pt"


def test_token_from_file(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("abc\n")
    assert bearer_token({"MODELPLANE_ARTIFACT_TOKEN_FILE": str(token)}) == "abc"
    assert (
        bearer_token({"MODELPLANE_ARTIFACT_TOKEN": "x", "MODELPLANE_ARTIFACT_TOKEN_FILE": str(token)}) == "x"
    )
    assert bearer_token({}) is None
    with pytest.raises(ArtifactError, match="token file"):
        bearer_token({"MODELPLANE_ARTIFACT_TOKEN_FILE": str(tmp_path / "missing")})


def test_loads_torch_export_and_state_dict(tmp_path: Path) -> None:
    model = make_mlp(seed=1)
    x = torch.randn(3, 64)
    want = model(x).detach()
    exported = torch.export.export(
        model, (torch.randn(2, 64),), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    torch.export.save(exported, str(tmp_path / "model.pt2"))
    spec = parse_config(mlp_config("m"), "m")
    loaded = load_module(find_model_file(tmp_path), spec, torch.device("cpu"))
    torch.testing.assert_close(loaded(x), want)

    torch.save(model.state_dict(), tmp_path / "model.pth")
    with pytest.raises(LoadError, match="module_class"):
        load_module(tmp_path / "model.pth", spec, torch.device("cpu"))
    extra = 'parameters { key: "module_class" value { string_value: "modelplane.testing.runtime:Mlp" } }'
    spec = parse_config(mlp_config("m", extra=extra), "m")
    loaded = load_module(tmp_path / "model.pth", spec, torch.device("cpu"))
    assert isinstance(loaded, Mlp)
    torch.testing.assert_close(loaded(x), want)


def test_state_dict_loading_never_unpickles_objects(tmp_path: Path) -> None:
    torch.save({"weights": object()}, tmp_path / "model.pth")  # a pickle that is not a plain state_dict
    extra = 'parameters { key: "module_class" value { string_value: "modelplane.testing.runtime:Mlp" } }'
    spec = parse_config(mlp_config("m", extra=extra), "m")
    with pytest.raises(LoadError, match="cannot load"):
        load_module(tmp_path / "model.pth", spec, torch.device("cpu"))


def test_missing_or_corrupt_model_file(tmp_path: Path) -> None:
    with pytest.raises(LoadError, match="no model file"):
        find_model_file(tmp_path)
    (tmp_path / "model.pt").write_bytes(b"not a torchscript archive")
    spec = parse_config(mlp_config("m"), "m")
    with pytest.raises(LoadError, match="cannot load"):
        load_module(tmp_path / "model.pt", spec, torch.device("cpu"))
