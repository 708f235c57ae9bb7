"""Fetch a directory artifact (a Hugging Face model folder) from the registry, every file checked.

The registry lists the directory's files (``GET .../versions/V/files``: path, sha256, size) and
the operator passes the digest of that list (:func:`~modelplane.registry_client.manifest.
manifest_digest`) from the version it resolved. The list must hash to that digest, so no file can
be added, dropped or swapped on the way; each file is downloaded to a temporary name, checked
against its sha256 and only then renamed into place. A file already in place with the right
digest is kept, so a restarted init container resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from modelplane.registry_client.manifest import FileEntry, ManifestError, manifest_digest, verify_directory
from modelplane.serving.runtime.artifacts import ArtifactError, bearer_token, sha256_file

_CHUNK = 1 << 20


def _headers() -> dict[str, str]:
    token = bearer_token()
    return {"Authorization": f"Bearer {token}"} if token else {}


def read_manifest(manifest_url: str, digest: str, client: httpx.Client) -> list[FileEntry]:
    """The directory's file list, refused unless it hashes to ``digest``."""
    response = client.get(manifest_url)
    if response.status_code != 200:
        hint = " (check the artifact token)" if response.status_code in (401, 403) else ""
        raise ArtifactError(f"listing {manifest_url} answered HTTP {response.status_code}{hint}")
    try:
        entries = [FileEntry.model_validate(item) for item in response.json()["files"]]
    except (ValueError, KeyError, TypeError, ValidationError) as exc:
        raise ArtifactError(f"{manifest_url} did not answer a file list: {exc}") from exc
    listed = manifest_digest(entries)
    if listed != digest:
        raise ArtifactError(f"the files listed at {manifest_url} hash to {listed}, expected {digest}")
    return entries


def _download(url: str, target: Path, entry: FileEntry, client: httpx.Client) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".partial-")
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, client.stream("GET", url) as response:
            if response.status_code != 200:
                raise ArtifactError(f"downloading {url} answered HTTP {response.status_code}")
            for chunk in response.iter_bytes(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != entry.sha256:
            raise ArtifactError(
                f"{entry.path}: downloaded sha256 {digest.hexdigest()}, expected {entry.sha256}"
            )
        tmp.replace(target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def fetch_directory(
    manifest_url: str, digest: str, dest: Path, *, timeout_s: float = 300.0
) -> list[FileEntry]:
    """Make ``dest`` hold exactly the checked files of the directory artifact; returns its entries."""
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    with httpx.Client(headers=_headers(), timeout=timeout_s, follow_redirects=False) as client:
        entries = read_manifest(manifest_url, digest, client)
        for entry in entries:
            target = root.joinpath(*entry.path.split("/"))
            if not target.resolve().is_relative_to(root):  # paths are checked; this is the last guard
                raise ArtifactError(f"{entry.path}: outside the model directory")
            if (
                target.is_file()
                and target.stat().st_size == entry.size
                and sha256_file(target) == entry.sha256
            ):
                continue  # already here and intact (a restarted download)
            _download(f"{manifest_url.rstrip('/')}/{quote(entry.path)}", target, entry, client)
    try:
        verify_directory(root, entries, digest)
    except ManifestError as exc:
        raise ArtifactError(str(exc)) from exc
    return entries
