"""The registry's pure decisions: names, sources, paths, webhook destinations, cursors, back-off."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from modelplane.registry_client import validation
from modelplane.serving.registry import errors
from modelplane.serving.registry.artifacts import ArtifactStore, is_within, parse_digest
from modelplane.serving.registry.auth import Principal, require
from modelplane.serving.registry.pagination import InvalidCursorError, decode_cursor, encode_cursor
from modelplane.serving.registry.store.sql import etag_matches
from modelplane.serving.registry.webhooks import (
    address_refusal,
    backoff_s,
    sign,
    validate_url,
    verify_signature,
)


@pytest.mark.parametrize("name", ["resnet", "team-a.resnet50", "A_b-9", "x", "a" * 128])
def test_good_model_names(name: str) -> None:
    assert validation.check_model_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "a" * 129, "../x", "a..b", "-a", "a-", "a/b", "a\\b", "a b", "a\x00b", ".hidden", "%2e%2e", "é"],
)
def test_bad_model_names(name: str) -> None:
    with pytest.raises(ValueError, match="model name"):
        validation.check_model_name(name)


@pytest.mark.parametrize("alias", ["production", "canary-2", "a"])
def test_good_aliases(alias: str) -> None:
    assert validation.check_alias(alias) == alias


@pytest.mark.parametrize("alias", ["3", "Production", "-x", "x-", "a_b", "", "a" * 65])
def test_bad_aliases(alias: str) -> None:
    with pytest.raises(ValueError, match="alias"):
        validation.check_alias(alias)


@pytest.mark.parametrize(
    "source",
    [
        "s3://bucket/key/model.pt",
        "gs://b/k",
        "https://host.example/m.tar",
        "runs:/abc123/model",
        "models:/resnet/3",
    ],
)
def test_good_sources(source: str) -> None:
    assert validation.check_source(source) == source


@pytest.mark.parametrize(
    "source",
    [
        "../../etc/passwd",
        "/etc/passwd",
        "file:///etc/passwd",
        "http:///#/../../etc/",
        "s3://b/../../etc",
        "s3://b/%2e%2e/etc",
        "s3://b/%252e%252e/etc",
        "s3://b/a\\..\\b",
        "s3://b/a\x00",
        "https://u:p@host/x",
        "runs://host/x",
        "ftp://host/x",
        "s3://b/x?p=..",
        "s3://b/x#..",
        "C:\\x",
    ],
)
def test_bad_sources(source: str) -> None:
    with pytest.raises(ValueError, match="source"):
        validation.check_source(source)


@pytest.mark.parametrize("name", ["../x", "a/b", "..", "a\\b", "/abs", ".x", "a\x00"])
def test_bad_filenames(name: str) -> None:
    with pytest.raises(ValueError, match="file name"):
        validation.check_filename(name)


def test_blob_paths_stay_inside_the_root(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "root", max_bytes=10)
    digest = parse_digest("AB" * 32)
    assert digest == "sha256:" + "ab" * 32
    path = store.blob_path(digest)
    assert is_within(store.root, path)
    assert path.parent.name == "ab"
    for bad in ["sha256:../../etc/passwd", "sha256:" + "g" * 64, "md5:" + "a" * 32, "sha256:" + "a" * 63]:
        with pytest.raises(errors.InvalidInputError):
            store.blob_path(bad)
    with pytest.raises(errors.InvalidInputError):
        parse_digest("sha256:" + "a" * 63)
    assert not is_within(tmp_path / "root", tmp_path / "root" / ".." / "x")
    (tmp_path / "root" / "link").symlink_to(tmp_path)
    assert not is_within(tmp_path / "root", tmp_path / "root" / "link" / "x")


def fake_resolver(answers: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    return lambda host: answers[host]


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://hooks.example.com/x", True),
        ("http://10.0.0.5:8080/x", True),
        ("http://127.0.0.1/x", False),
        ("http://[::1]/x", False),
        ("http://169.254.169.254/", False),
        ("http://metadata.internal/", False),
        ("http://rebind.example/", False),
        ("http://[fe80::1]/", False),
        ("http://[fd00:ec2::254]/", False),
        ("http://0.0.0.0/", False),
        ("http://224.0.0.1/", False),
        ("gopher://x/", False),
    ],
)
def test_webhook_destinations(url: str, allowed: bool) -> None:
    resolver = fake_resolver(
        {
            "hooks.example.com": ["93.184.216.34"],
            "metadata.internal": ["169.254.169.254"],
            "rebind.example": ["93.184.216.34", "127.0.0.1"],
            "x": ["93.184.216.34"],
        }
    )
    if allowed:
        assert validate_url(url, allow_loopback=False, resolver=resolver) == url
    else:
        with pytest.raises(errors.InvalidInputError):
            validate_url(url, allow_loopback=False, resolver=resolver)


def test_loopback_only_when_allowed() -> None:
    loop = ipaddress.ip_address("127.0.0.1")
    assert address_refusal(loop, allow_loopback=True) is None
    assert address_refusal(loop, allow_loopback=False) is not None
    assert address_refusal(ipaddress.ip_address("169.254.169.254"), allow_loopback=True) is not None


def test_signatures_and_backoff() -> None:
    sig = sign("s3cret", "1700000000", b'{"a":1}')
    assert sig.startswith("sha256=")
    assert verify_signature("s3cret", "1700000000", b'{"a":1}', sig)
    assert not verify_signature("s3cret", "1700000001", b'{"a":1}', sig)
    assert not verify_signature("s3cret", "1700000000", b'{"a":2}', sig)
    assert [backoff_s(n, 2.0, 10.0) for n in range(1, 6)] == [2.0, 4.0, 8.0, 10.0, 10.0]


def test_cursors_round_trip_and_reject_foreign_input() -> None:
    assert decode_cursor("models", encode_cursor("models", 42)) == 42
    for bad in ["", "!!!", encode_cursor("versions", 42), "bW9kZWxzOi0x", "a" * 65, "bW9kZWxzOg"]:
        with pytest.raises(InvalidCursorError):
            decode_cursor("models", bad)


def test_if_match() -> None:
    assert etag_matches(None, '"m1-2"')
    assert etag_matches("*", '"m1-2"')
    assert etag_matches('"m1-1", "m1-2"', '"m1-2"')
    assert not etag_matches('"m1-1"', '"m1-2"')


def test_scopes_and_prefixes() -> None:
    writer = Principal("w", ("write",), ("team-a.",))
    require(writer, "read", "team-a.m")
    require(writer, "write", "team-a.m")
    with pytest.raises(errors.ForbiddenError):
        require(writer, "admin")
    with pytest.raises(errors.ForbiddenError):
        require(writer, "read", "team-b.m")
    require(Principal("a", ("admin",)), "write", "anything")
