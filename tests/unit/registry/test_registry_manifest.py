"""Directory artifacts' pure parts: the manifest digest, file paths, hashing and checking a directory,
and the format the CLI reads from an artifact."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from modelplane.cli.registry import artifact_format
from modelplane.registry_client import validation
from modelplane.registry_client.manifest import (
    FileEntry,
    ManifestError,
    manifest_bytes,
    manifest_digest,
    scan_directory,
    verify_directory,
)
from modelplane.registry_client.schemas import FilesCommit, VersionCreate

A = "a" * 64
B = "b" * 64


def test_manifest_digest_is_the_sha256_of_the_canonical_manifest() -> None:
    files = [
        FileEntry(path="model.safetensors", sha256=B, size=10),
        FileEntry(path="config.json", sha256=A, size=2),
    ]
    canonical = json.dumps(
        sorted([["model.safetensors", B, 10], ["config.json", A, 2]]), separators=(",", ":")
    ).encode()
    assert manifest_bytes(files) == canonical
    assert canonical == f'[["config.json","{A}",2],["model.safetensors","{B}",10]]'.encode()
    assert manifest_digest(files) == "sha256:" + hashlib.sha256(canonical).hexdigest()
    # A fixed value: the registry, the CLI and the runtime must never drift apart.
    assert (
        manifest_digest([("x", A, 0)]) == "sha256:" + hashlib.sha256(f'[["x","{A}",0]]'.encode()).hexdigest()
    )


def test_manifest_digest_is_order_independent_and_sensitive_to_every_field() -> None:
    files = [FileEntry(path=f"d/f{i}.bin", sha256=f"{i:064x}", size=i) for i in range(20)]
    digest = manifest_digest(files)
    assert manifest_digest(list(reversed(files))) == digest
    assert manifest_digest([(f.path, f.sha256, f.size) for f in files]) == digest
    changed = [*files[:-1], FileEntry(path="d/f19.bin", sha256=files[-1].sha256, size=20)]
    assert manifest_digest(changed) != digest
    renamed = [*files[:-1], FileEntry(path="d/g19.bin", sha256=files[-1].sha256, size=19)]
    assert manifest_digest(renamed) != digest
    assert manifest_digest(files[:-1]) != digest


def test_manifest_refuses_duplicates_and_bad_entries() -> None:
    with pytest.raises(ManifestError, match="more than once: x"):
        manifest_digest([("x", A, 1), ("x", B, 2)])
    with pytest.raises(ValidationError):
        manifest_digest([("x", "sha256:" + A, 1)])  # bare hex only
    with pytest.raises(ValidationError):
        manifest_digest([("../x", A, 1)])
    with pytest.raises(ValidationError):
        FileEntry(path="x", sha256=A.upper(), size=1)
    with pytest.raises(ValidationError):
        FileEntry(path="x", sha256=A, size=-1)


@pytest.mark.parametrize(
    "path",
    [
        "config.json",
        "model-00001-of-00002.safetensors",
        "tokenizer/vocab.json",
        "1_Pooling/config.json",
        "_private/x",
        "/".join("abcdefgh"),  # 8 levels
        "a" * 255,
        "/".join(["a" * 63] * 8),  # 511 characters
    ],
)
def test_good_file_paths(path: str) -> None:
    assert validation.check_file_path(path) == path


@pytest.mark.parametrize(
    "path",
    [
        "",
        "../x",
        "a/../../b",
        "..",
        ".",
        "./x",
        "a/./b",
        "/etc/passwd",
        "a\\b",
        "..\\x",
        "a//b",
        "a/",
        "/".join("abcdefghi"),  # 9 levels
        "/".join(["a" * 64] * 8) + "b",  # 521 characters
        "a\x00b",
        "a\nb",
        "a\x7fb",
        ".hidden",
        "a/.git/config",
        "x.",
        "a..b",
        "a b",
        "é",
        "C:/x",
        "%2e%2e/x",
    ],
)
def test_bad_file_paths(path: str) -> None:
    with pytest.raises(ValueError, match="file path"):
        validation.check_file_path(path)


def test_task_and_format_fields() -> None:
    v = VersionCreate(task="text-generation", format="hf-causal-lm")
    assert (v.task, v.format) == ("text-generation", "hf-causal-lm")
    assert VersionCreate().task is None
    for bad in ("Text-Generation", "", "a" * 65, "text generation", "text_generation"):
        with pytest.raises(ValidationError):
            VersionCreate(task=bad)
    with pytest.raises(ValidationError):
        VersionCreate.model_validate({"format": "onnx"})
    with pytest.raises(ValidationError):
        FilesCommit.model_validate({"files": [{"path": "a", "sha256": A, "size": 1, "extra": 1}]})


def _write(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def test_scan_and_verify_directory(tmp_path: Path) -> None:
    root = tmp_path / "model"
    _write(
        root,
        {
            "config.json": b"{}",
            "weights/model.safetensors": b"\x00" * 1000,
            ".gitattributes": b"hidden",
            ".git/HEAD": b"hidden",
        },
    )
    entries = scan_directory(root)
    assert [(e.path, e.size) for e in entries] == [("config.json", 2), ("weights/model.safetensors", 1000)]
    assert entries[0].sha256 == hashlib.sha256(b"{}").hexdigest()
    verify_directory(root, entries, manifest_digest(entries))
    with pytest.raises(ManifestError, match="hashes to"):
        verify_directory(root, entries, "sha256:" + A)
    (root / "config.json").write_bytes(b"[]")
    with pytest.raises(ManifestError, match=r"config.json \(sha256 differs\)"):
        verify_directory(root, entries)
    (root / "config.json").unlink()
    with pytest.raises(ManifestError, match=r"config.json \(missing\)"):
        verify_directory(root, entries)


def test_scan_refuses_what_cannot_be_an_artifact(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="not a directory"):
        scan_directory(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match="holds no files"):
        scan_directory(tmp_path / "empty")
    _write(tmp_path / "bad", {"a b.json": b"{}"})
    with pytest.raises(ManifestError, match=r"a b\.json"):
        scan_directory(tmp_path / "bad")
    _write(tmp_path / "linked", {"x": b"1"})
    (tmp_path / "linked" / "sub").symlink_to(tmp_path / "bad")
    with pytest.raises(ManifestError, match="symbolic link"):
        scan_directory(tmp_path / "linked")


def test_artifact_format(tmp_path: Path) -> None:
    for name, expected in [("m.pt", "torchscript"), ("m.pt2", "torch-export"), ("m.pth", "state-dict")]:
        (tmp_path / name).write_bytes(b"x")
        assert artifact_format(tmp_path / name) == expected
    (tmp_path / "m.onnx").write_bytes(b"x")
    assert artifact_format(tmp_path / "m.onnx") is None
    llm = tmp_path / "llm"
    _write(llm, {"config.json": json.dumps({"architectures": ["LlamaForCausalLM"]}).encode()})
    assert artifact_format(llm) == "hf-causal-lm"
    other = tmp_path / "bert"
    _write(other, {"config.json": json.dumps({"architectures": ["BertModel"]}).encode()})
    assert artifact_format(other) is None
    broken = tmp_path / "broken"
    _write(broken, {"config.json": b"{not json"})
    assert artifact_format(broken) is None
    assert artifact_format(tmp_path / "empty-dir-absent") is None
