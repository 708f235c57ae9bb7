"""A typed, synchronous Python client of the registry's REST API (httpx).

Used by the operator (resolve a model reference, report deployments), the serving runtime (download
an artifact and check its digest) and the CLI. Errors arrive as ``RegistryClientError`` carrying the
server's problem document (``status``, ``type``, ``detail``).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from modelplane.registry_client import manifest, schemas, validation

ProgressFn = Callable[[int], None]
FileFn = Callable[[str, int], None]
M = TypeVar("M", bound=BaseModel)
CHUNK = 1 << 20


class RegistryClientError(Exception):
    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        self.type = str(problem.get("type", ""))
        self.detail = str(problem.get("detail", ""))
        super().__init__(f"HTTP {status} {problem.get('title', '')}: {self.detail}".strip())


def file_sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            hasher.update(chunk)
    return "sha256:" + hasher.hexdigest()


class RegistryClient:
    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers=headers,
            timeout=timeout,
            transport=transport,
            trust_env=False,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing -----------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise _error(response)
        return response

    def _typed(self, model: type[M], method: str, path: str, **kwargs: Any) -> M:
        return model.model_validate_json(self._request(method, path, **kwargs).content)

    @staticmethod
    def _etag_headers(if_match: str | None) -> dict[str, str]:
        return {"If-Match": if_match} if if_match else {}

    # --- models -------------------------------------------------------------------------------

    def create_model(
        self, name: str, description: str = "", tags: dict[str, str] | None = None
    ) -> schemas.ModelPublic:
        body = {"name": name, "description": description, "tags": tags or {}}
        return self._typed(schemas.ModelPublic, "POST", "/api/v1/models", json=body)

    def get_model(self, name: str) -> schemas.ModelPublic:
        return self._typed(schemas.ModelPublic, "GET", f"/api/v1/models/{name}")

    def get_model_etag(self, name: str) -> str:
        return self._request("GET", f"/api/v1/models/{name}").headers["ETag"]

    def list_models(
        self, name_prefix: str | None = None, tags: list[str] | None = None, page_size: int = 100
    ) -> Iterator[schemas.ModelPublic]:
        params: dict[str, Any] = {"limit": page_size}
        if name_prefix:
            params["name_prefix"] = name_prefix
        if tags:
            params["tag"] = tags
        yield from self._pages("/api/v1/models", params, schemas.ModelPublic)

    def update_model(self, name: str, description: str, if_match: str | None = None) -> schemas.ModelPublic:
        return self._typed(
            schemas.ModelPublic,
            "PATCH",
            f"/api/v1/models/{name}",
            json={"description": description},
            headers=self._etag_headers(if_match),
        )

    def delete_model(self, name: str) -> None:
        self._request("DELETE", f"/api/v1/models/{name}")

    def set_model_tag(self, name: str, key: str, value: str) -> schemas.ModelPublic:
        return self._typed(
            schemas.ModelPublic, "PUT", f"/api/v1/models/{name}/tags/{key}", json={"value": value}
        )

    # --- versions -----------------------------------------------------------------------------

    def create_version(self, name: str, **fields: Any) -> schemas.VersionPublic:
        """Fields as in ``schemas.VersionCreate`` (description, author, source, framework, signature...)."""
        body = schemas.VersionCreate.model_validate(fields).model_dump(mode="json", exclude_none=True)
        return self._typed(schemas.VersionPublic, "POST", f"/api/v1/models/{name}/versions", json=body)

    def get_version(self, name: str, version: int) -> schemas.VersionPublic:
        return self._typed(schemas.VersionPublic, "GET", f"/api/v1/models/{name}/versions/{version}")

    def list_versions(
        self, name: str, page_size: int = 100, **filters: Any
    ) -> Iterator[schemas.VersionPublic]:
        params: dict[str, Any] = {"limit": page_size, **{k: v for k, v in filters.items() if v is not None}}
        yield from self._pages(f"/api/v1/models/{name}/versions", params, schemas.VersionPublic)

    def search_versions(self, page_size: int = 100, **filters: Any) -> Iterator[schemas.VersionPublic]:
        params: dict[str, Any] = {"limit": page_size, **{k: v for k, v in filters.items() if v is not None}}
        yield from self._pages("/api/v1/versions", params, schemas.VersionPublic)

    def update_version(
        self, name: str, version: int, if_match: str | None = None, **fields: Any
    ) -> schemas.VersionPublic:
        body = schemas.VersionUpdate.model_validate(fields).model_dump(mode="json", exclude_none=True)
        return self._typed(
            schemas.VersionPublic,
            "PATCH",
            f"/api/v1/models/{name}/versions/{version}",
            json=body,
            headers=self._etag_headers(if_match),
        )

    def delete_version(self, name: str, version: int) -> None:
        self._request("DELETE", f"/api/v1/models/{name}/versions/{version}")

    def set_version_tag(self, name: str, version: int, key: str, value: str) -> schemas.VersionPublic:
        return self._typed(
            schemas.VersionPublic,
            "PUT",
            f"/api/v1/models/{name}/versions/{version}/tags/{key}",
            json={"value": value},
        )

    # --- artifacts ----------------------------------------------------------------------------

    def upload_artifact(
        self,
        name: str,
        version: int,
        path: Path,
        filename: str | None = None,
        progress: ProgressFn | None = None,
    ) -> schemas.VersionPublic:
        """Stream ``path`` to the registry with its sha256; the version becomes READY if it matches."""
        digest = file_sha256(path)

        def body() -> Iterator[bytes]:
            with path.open("rb") as f:
                while chunk := f.read(CHUNK):
                    if progress is not None:
                        progress(len(chunk))
                    yield chunk

        return self._typed(
            schemas.VersionPublic,
            "PUT",
            f"/api/v1/models/{name}/versions/{version}/artifact",
            content=body(),
            params={"filename": filename or path.name},
            headers={
                "X-Checksum-Sha256": digest,
                "Content-Type": "application/octet-stream",
                "Content-Length": str(path.stat().st_size),
            },
        )

    def download_artifact(
        self, name: str, version: int, dest: Path, progress: ProgressFn | None = None
    ) -> schemas.ArtifactInfo:
        """Download to ``dest`` atomically, verifying the sha256 the registry announces."""
        info = self.get_version(name, version).artifact
        if info is None:
            raise RegistryClientError(
                404, {"title": "No artifact", "detail": f"{name}/{version} has no artifact"}
            )
        if info.kind == "directory":
            raise RegistryClientError(
                404,
                {
                    "title": "A directory artifact",
                    "detail": f"{name}/{version} has a directory artifact: use download_directory",
                },
            )
        self._download_to(f"/api/v1/models/{name}/versions/{version}/artifact", dest, info.digest, progress)
        return info

    def _download_to(self, url: str, dest: Path, digest: str | None, progress: ProgressFn | None) -> str:
        """Stream ``url`` into ``dest`` atomically; its sha256 must be ``digest`` (or, when None, the
        ``X-Checksum-Sha256`` the registry announces). Returns the digest."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        hasher = hashlib.sha256()
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=".download-")
        try:
            with os.fdopen(fd, "wb") as out, self._http.stream("GET", url) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error(response)
                expected = digest or response.headers.get("X-Checksum-Sha256")
                for chunk in response.iter_bytes(CHUNK):
                    hasher.update(chunk)
                    out.write(chunk)
                    if progress is not None:
                        progress(len(chunk))
            actual = "sha256:" + hasher.hexdigest()
            if actual != expected:
                raise RegistryClientError(
                    502, {"title": "Digest mismatch", "detail": f"downloaded {actual}, expected {expected}"}
                )
            os.replace(tmp_name, dest)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return actual

    # --- directory artifacts ------------------------------------------------------------------

    @staticmethod
    def _file_url(name: str, version: int, path: str) -> str:
        validation.check_file_path(path)
        return f"/api/v1/models/{name}/versions/{version}/files/{urllib.parse.quote(path, safe='/')}"

    def list_files(self, name: str, version: int) -> schemas.FileList:
        """The files of a directory artifact (staged ones too, before the commit), sorted by path."""
        return self._typed(schemas.FileList, "GET", f"/api/v1/models/{name}/versions/{version}/files")

    def upload_file(
        self,
        name: str,
        version: int,
        path: str,
        local: Path,
        sha256: str | None = None,
        progress: ProgressFn | None = None,
    ) -> schemas.FileEntry:
        """Upload ``local`` as the file ``path`` of a directory artifact (``sha256``: hex, or computed)."""
        digest = sha256 or manifest.sha256_file(local)

        def body() -> Iterator[bytes]:
            with local.open("rb") as f:
                while chunk := f.read(CHUNK):
                    if progress is not None:
                        progress(len(chunk))
                    yield chunk

        return self._typed(
            schemas.FileEntry,
            "PUT",
            self._file_url(name, version, path),
            content=body(),
            headers={
                "X-Checksum-Sha256": "sha256:" + digest,
                "Content-Type": "application/octet-stream",
                "Content-Length": str(local.stat().st_size),
            },
        )

    def commit_files(
        self, name: str, version: int, files: Sequence[schemas.FileEntry], dirname: str | None = None
    ) -> schemas.VersionPublic:
        """Make the uploaded files the version's directory artifact (READY); they must match exactly."""
        body: dict[str, Any] = {"files": [f.model_dump(mode="json") for f in files]}
        if dirname is not None:
            body["name"] = dirname
        return self._typed(
            schemas.VersionPublic, "POST", f"/api/v1/models/{name}/versions/{version}/files:commit", json=body
        )

    def upload_directory(
        self,
        name: str,
        version: int,
        directory: Path,
        progress: ProgressFn | None = None,
        *,
        on_file: FileFn | None = None,
        hash_progress: ProgressFn | None = None,
    ) -> schemas.VersionPublic:
        """Upload a directory as the version's artifact, resuming where an earlier upload stopped.

        Hashes every file (``manifest.scan_directory``: names starting with '.' are left out), asks
        the registry what it already has, uploads only the missing files (``progress`` gets the bytes
        of each file as it goes, skipped files at once; ``on_file`` the path and size of each file
        uploaded) and commits; the version is READY with the directory's manifest digest.
        """
        entries = manifest.scan_directory(directory, hash_progress)
        listing = self.list_files(name, version)
        stored = {f.path: f for f in listing.files}
        for entry in entries:
            if stored.get(entry.path) == entry:
                if progress is not None:
                    progress(entry.size)
                continue
            if on_file is not None:
                on_file(entry.path, entry.size)
            local = directory.joinpath(*entry.path.split("/"))
            self.upload_file(name, version, entry.path, local, entry.sha256, progress)
        dirname: str | None = directory.resolve().name
        try:
            validation.check_filename(dirname or "")
        except ValueError:
            dirname = None
        return self.commit_files(name, version, entries, dirname)

    def download_file(
        self,
        name: str,
        version: int,
        path: str,
        dest: Path,
        sha256: str | None = None,
        progress: ProgressFn | None = None,
    ) -> str:
        """Download one file of a directory artifact to ``dest`` atomically, verifying its sha256
        (``sha256`` hex, or the digest the registry announces); returns ``sha256:<hex>``."""
        return self._download_to(
            self._file_url(name, version, path), dest, "sha256:" + sha256 if sha256 else None, progress
        )

    def download_directory(
        self,
        name: str,
        version: int,
        dest: Path,
        progress: ProgressFn | None = None,
        *,
        on_file: FileFn | None = None,
    ) -> schemas.FileList:
        """Download a version's directory artifact into ``dest``, verifying every file's sha256 and the
        manifest digest against the version's artifact digest.

        Files already in ``dest`` with the right sha256 are kept (a resumed download); other files
        in ``dest`` are left alone.
        """
        info = self.get_version(name, version).artifact
        if info is None or info.kind != "directory":
            what = "no artifact" if info is None else "a single-file artifact (use download_artifact)"
            raise RegistryClientError(
                404, {"title": "No directory artifact", "detail": f"{name}/{version} has {what}"}
            )
        listing = self.list_files(name, version)
        if not listing.committed or listing.digest != info.digest:
            raise RegistryClientError(
                502,
                {"title": "Digest mismatch", "detail": f"the file list of {name}/{version} is not committed"},
            )
        actual = manifest.manifest_digest(listing.files)
        if actual != info.digest:
            raise RegistryClientError(
                502,
                {
                    "title": "Digest mismatch",
                    "detail": f"the file list of {name}/{version} hashes to {actual}, not {info.digest}",
                },
            )
        root = dest.resolve()
        for entry in listing.files:
            target = root.joinpath(*entry.path.split("/"))
            if not target.resolve().is_relative_to(root):
                raise RegistryClientError(
                    502, {"title": "Bad path", "detail": f"{entry.path!r} leaves {root}"}
                )
            if (
                target.is_file()
                and target.stat().st_size == entry.size
                and manifest.sha256_file(target) == entry.sha256
            ):
                if progress is not None:
                    progress(entry.size)
                continue
            if on_file is not None:
                on_file(entry.path, entry.size)
            self.download_file(name, version, entry.path, target, entry.sha256, progress)
        return listing

    # --- aliases ------------------------------------------------------------------------------

    def set_alias(self, name: str, alias: str, version: int) -> schemas.AliasPublic:
        return self._typed(
            schemas.AliasPublic, "PUT", f"/api/v1/models/{name}/aliases/{alias}", json={"version": version}
        )

    def get_alias(self, name: str, alias: str) -> schemas.AliasPublic:
        return self._typed(schemas.AliasPublic, "GET", f"/api/v1/models/{name}/aliases/{alias}")

    def get_version_by_alias(self, name: str, alias: str) -> schemas.VersionPublic:
        return self._typed(schemas.VersionPublic, "GET", f"/api/v1/models/{name}/aliases/{alias}/version")

    def list_aliases(self, name: str) -> list[schemas.AliasPublic]:
        return [
            schemas.AliasPublic.model_validate(a)
            for a in self._request("GET", f"/api/v1/models/{name}/aliases").json()
        ]

    def delete_alias(self, name: str, alias: str) -> None:
        self._request("DELETE", f"/api/v1/models/{name}/aliases/{alias}")

    def alias_history(self, name: str, alias: str) -> list[schemas.AliasEventPublic]:
        rows = self._request("GET", f"/api/v1/models/{name}/aliases/{alias}/history").json()
        return [schemas.AliasEventPublic.model_validate(r) for r in rows]

    def resolve(
        self, name: str, version: int | None = None, alias: str | None = None
    ) -> schemas.VersionPublic:
        """The version a model reference names: exactly one of ``version`` or ``alias``."""
        if (version is None) == (alias is None):
            raise ValueError("give exactly one of version or alias")
        if version is not None:
            return self.get_version(name, version)
        assert alias is not None
        return self.get_version_by_alias(name, alias)

    # --- deployments --------------------------------------------------------------------------

    def report_deployment(
        self, name: str, version: int, namespace: str, deployment: str
    ) -> schemas.DeploymentPublic:
        return self._typed(
            schemas.DeploymentPublic,
            "PUT",
            f"/api/v1/models/{name}/versions/{version}/deployments/{namespace}/{deployment}",
        )

    def remove_deployment(self, name: str, version: int, namespace: str, deployment: str) -> None:
        self._request(
            "DELETE", f"/api/v1/models/{name}/versions/{version}/deployments/{namespace}/{deployment}"
        )

    def list_deployments(self, name: str) -> list[schemas.DeploymentPublic]:
        rows = self._request("GET", f"/api/v1/models/{name}/deployments").json()
        return [schemas.DeploymentPublic.model_validate(r) for r in rows]

    # --- admin --------------------------------------------------------------------------------

    def create_token(
        self, name: str, scopes: list[str], name_prefixes: list[str] | None = None
    ) -> schemas.TokenCreated:
        body = {"name": name, "scopes": scopes, "name_prefixes": name_prefixes or []}
        return self._typed(schemas.TokenCreated, "POST", "/api/v1/tokens", json=body)

    def list_tokens(self) -> list[schemas.TokenPublic]:
        return [schemas.TokenPublic.model_validate(t) for t in self._request("GET", "/api/v1/tokens").json()]

    def revoke_token(self, token_id: int) -> None:
        self._request("DELETE", f"/api/v1/tokens/{token_id}")

    def audit(self, object_id: str | None = None, page_size: int = 100) -> Iterator[schemas.AuditPublic]:
        params: dict[str, Any] = {"limit": page_size}
        if object_id:
            params["object_id"] = object_id
        yield from self._pages("/api/v1/audit", params, schemas.AuditPublic)

    def create_webhook(
        self, url: str, events: list[str], secret: str | None = None
    ) -> schemas.WebhookCreated:
        body: dict[str, Any] = {"url": url, "events": events}
        if secret:
            body["secret"] = secret
        return self._typed(schemas.WebhookCreated, "POST", "/api/v1/webhooks", json=body)

    def list_deliveries(self, webhook_id: int) -> list[schemas.DeliveryPublic]:
        rows = self._request("GET", f"/api/v1/webhooks/{webhook_id}/deliveries").json()
        return [schemas.DeliveryPublic.model_validate(r) for r in rows]

    def ready(self) -> bool:
        try:
            return self._http.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    def _pages(self, path: str, params: dict[str, Any], model: type[M]) -> Iterator[M]:
        cursor: str | None = None
        for _ in range(1_000_000):
            page_params = dict(params)
            if cursor:
                page_params["cursor"] = cursor
            page = self._request("GET", path, params=page_params).json()
            for item in page["items"]:
                yield model.model_validate(item)
            cursor = page.get("next_cursor")
            if not cursor:
                return


def _error(response: httpx.Response) -> RegistryClientError:
    try:
        problem = response.json()
        if not isinstance(problem, dict):
            problem = {"detail": str(problem)}
    except ValueError:
        problem = {"title": response.reason_phrase, "detail": response.text[:500]}
    return RegistryClientError(response.status_code, problem)
