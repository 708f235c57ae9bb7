"""Business rules between the routes and the store: who may do what, artifact uploads, webhook wake-ups.

Routes stay thin (HTTP in, HTTP out); the store does one transaction per write (with its audit entry
and webhook outbox rows); this layer checks scopes and name prefixes, validates webhook destinations,
streams artifacts into the content-addressed store before recording them, and pokes the webhook
dispatcher after events so deliveries go out promptly.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Sequence

from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from modelplane.registry_client import schemas
from modelplane.registry_client.manifest import MAX_FILES, ManifestError, manifest_digest
from modelplane.registry_client.validation import check_file_path, check_filename
from modelplane.serving.registry import auth, errors, webhooks
from modelplane.serving.registry.artifacts import ArtifactStore, parse_digest
from modelplane.serving.registry.auth import Principal
from modelplane.serving.registry.config import Settings
from modelplane.serving.registry.store.base import ArtifactRef, RegistryStore, Versioned, VersionFilter


class RegistryService:
    def __init__(
        self,
        store: RegistryStore,
        artifacts: ArtifactStore,
        settings: Settings,
        dispatcher: webhooks.Dispatcher | None = None,
    ) -> None:
        self.store = store
        self.artifacts = artifacts
        self.settings = settings
        self.dispatcher = dispatcher
        self.token_cache = auth.TokenCache()

    def _notify(self) -> None:
        """Wake the webhook dispatcher, only when the event queued a delivery (most have none)."""
        if self.store.take_enqueued() and self.dispatcher is not None:
            self.dispatcher.wake()

    # --- authentication -----------------------------------------------------------------------

    def cached_principal(self, bearer: str) -> tuple[bool, Principal | None]:
        """(True, principal-or-None) when the token's lookup is cached; (False, None) otherwise."""
        return self.token_cache.get(auth.hash_token(bearer))

    def authenticate(self, bearer: str | None) -> Principal | None:
        """The principal for a bearer token; None when there is no valid token."""
        if bearer is None:
            return None
        token_hash = auth.hash_token(bearer)
        cached, principal = self.token_cache.get(token_hash)
        if cached:
            return principal
        record = self.store.find_token(token_hash)
        principal = None
        if record is not None and not record.revoked:
            principal = auth.principal_from(record.name, record.scopes, record.name_prefixes)
        self.token_cache.put(token_hash, principal)
        return principal

    def ensure_bootstrap_token(self) -> None:
        token = self.settings.bootstrap_token
        if not token:
            return
        if len(token) < auth.MIN_BOOTSTRAP_LENGTH:
            raise ValueError(
                f"{auth.BOOTSTRAP_ENV} must be at least {auth.MIN_BOOTSTRAP_LENGTH} characters "
                "(use a random secret)"
            )
        data = schemas.TokenCreate(name=auth.BOOTSTRAP_NAME, scopes=["admin"])
        existing = self.store.find_token(auth.hash_token(token))
        if existing is None or existing.revoked or existing.name != auth.BOOTSTRAP_NAME:
            self.store.create_token("system", data, auth.hash_token(token), replace=True)

    # --- models -------------------------------------------------------------------------------

    def create_model(self, who: Principal, data: schemas.ModelCreate) -> Versioned[schemas.ModelPublic]:
        auth.require(who, "write", data.name)
        return self.store.create_model(who.name, data)

    def get_model(self, who: Principal, name: str) -> Versioned[schemas.ModelPublic]:
        auth.require(who, "read", name)
        return self.store.get_model(name)

    def list_models(
        self,
        who: Principal,
        name_prefix: str | None,
        tags: Sequence[tuple[str, str | None]],
        after: int | None,
        limit: int,
    ) -> tuple[list[schemas.ModelPublic], int | None]:
        auth.require(who, "read")
        return self.store.list_models(name_prefix, tags, who.name_prefixes, after, limit)

    def update_model(
        self, who: Principal, name: str, data: schemas.ModelUpdate, if_match: str | None
    ) -> Versioned[schemas.ModelPublic]:
        auth.require(who, "write", name)
        return self.store.update_model(who.name, name, data, if_match)

    def delete_model(self, who: Principal, name: str, if_match: str | None) -> None:
        auth.require(who, "write", name)
        self.store.delete_model(who.name, name, if_match)

    def set_model_tag(
        self, who: Principal, name: str, key: str, value: str | None
    ) -> Versioned[schemas.ModelPublic]:
        auth.require(who, "write", name)
        return self.store.set_model_tag(who.name, name, key, value)

    # --- versions -----------------------------------------------------------------------------

    def create_version(
        self, who: Principal, name: str, data: schemas.VersionCreate
    ) -> Versioned[schemas.VersionPublic]:
        auth.require(who, "write", name)
        result = self.store.create_version(who.name, name, data)
        self._notify()
        return result

    def get_version(self, who: Principal, name: str, version: int) -> Versioned[schemas.VersionPublic]:
        auth.require(who, "read", name)
        return self.store.get_version(name, version)

    def list_versions(
        self, who: Principal, flt: VersionFilter, after: int | None, limit: int
    ) -> tuple[list[schemas.VersionPublic], int | None]:
        auth.require(who, "read", flt.model)
        flt = VersionFilter(
            model=flt.model,
            name_prefix=flt.name_prefix,
            author=flt.author,
            framework=flt.framework,
            status=flt.status,
            tags=flt.tags,
            allowed_prefixes=who.name_prefixes,
        )
        return self.store.list_versions(flt, after, limit)

    def update_version(
        self, who: Principal, name: str, version: int, data: schemas.VersionUpdate, if_match: str | None
    ) -> Versioned[schemas.VersionPublic]:
        auth.require(who, "write", name)
        result = self.store.update_version(who.name, name, version, data, if_match)
        self._notify()
        return result

    def delete_version(self, who: Principal, name: str, version: int, if_match: str | None) -> None:
        auth.require(who, "write", name)
        self.store.delete_version(who.name, name, version, if_match)

    def set_version_tag(
        self, who: Principal, name: str, version: int, key: str, value: str | None
    ) -> Versioned[schemas.VersionPublic]:
        auth.require(who, "write", name)
        return self.store.set_version_tag(who.name, name, version, key, value)

    # --- artifacts ----------------------------------------------------------------------------

    async def upload_artifact(
        self,
        who: Principal,
        name: str,
        version: int,
        digest_header: str | None,
        filename: str | None,
        declared_size: int | None,
        chunks: AsyncIterator[bytes],
    ) -> Versioned[schemas.VersionPublic]:
        """Stream, verify and store the artifact, then mark the version READY in one transaction."""
        auth.require(who, "write", name)
        if not digest_header:
            raise errors.InvalidInputError(
                "send the artifact's sha256 in the X-Checksum-Sha256 header ('sha256:<64 hex>'); "
                "the registry refuses bytes it cannot check"
            )
        expected = parse_digest(digest_header)
        safe_name = "artifact"
        if filename is not None:
            try:
                safe_name = check_filename(filename)
            except ValueError as exc:
                raise errors.InvalidInputError(str(exc)) from exc
        await run_in_threadpool(self.store.check_upload_allowed, name, version)
        blob = await self.artifacts.put(chunks, expected, declared_size)
        result = await run_in_threadpool(
            self.store.attach_artifact,
            who.name,
            name,
            version,
            ArtifactRef(blob.digest, blob.size, safe_name),
        )
        self._notify()
        return result

    def artifact_for_download(self, who: Principal, name: str, version: int) -> tuple[ArtifactRef, str]:
        auth.require(who, "read", name)
        ref = self.store.get_artifact(name, version)
        path = self.artifacts.blob_path(ref.digest)
        if not path.is_file():
            raise errors.UnavailableError(
                f"the artifact {ref.digest} of {name}/{version} is recorded but missing "
                "from the artifact store"
            )
        return ref, str(path)

    # --- directory artifacts ------------------------------------------------------------------

    @staticmethod
    def _file_path(path: str) -> str:
        try:
            return check_file_path(path)
        except ValueError as exc:
            raise errors.InvalidInputError(f"file path {path[:600]!r}: {exc}") from exc

    async def upload_file(
        self,
        who: Principal,
        name: str,
        version: int,
        path: str,
        digest_header: str | None,
        declared_size: int | None,
        chunks: AsyncIterator[bytes],
    ) -> tuple[bool, schemas.FileEntry]:
        """Stream, verify and store one file of a directory artifact; (True, entry) when it is new.

        The path is checked before anything is read; a path already stored with the same digest is
        a no-op (False: nothing changes), with another digest a 409.
        """
        auth.require(who, "write", name)
        entry_path = self._file_path(path)
        if not digest_header:
            raise errors.InvalidInputError(
                "send the file's sha256 in the X-Checksum-Sha256 header ('sha256:<64 hex>'); "
                "the registry refuses bytes it cannot check"
            )
        expected = parse_digest(digest_header)
        hexdigest = expected.split(":", 1)[1]
        # Refuse before reading the body when the version takes no files or the path has another
        # digest; a path stored with this digest is still read and checked (the answer is then 200).
        await run_in_threadpool(self.store.check_file_upload, name, version, entry_path, hexdigest)
        blob = await self.artifacts.put(chunks, expected, declared_size)
        entry = schemas.FileEntry(path=entry_path, sha256=hexdigest, size=blob.size)
        created = await run_in_threadpool(self.store.add_artifact_file, who.name, name, version, entry)
        return created, entry

    def list_files(self, who: Principal, name: str, version: int) -> schemas.FileList:
        auth.require(who, "read", name)
        return self.store.list_artifact_files(name, version)

    def commit_files(
        self, who: Principal, name: str, version: int, data: schemas.FilesCommit
    ) -> tuple[bool, Versioned[schemas.VersionPublic]]:
        """Check the listed files against the stored ones and make them the version's artifact."""
        auth.require(who, "write", name)
        if not data.files:
            raise errors.InvalidInputError("a directory artifact has at least one file; list them in 'files'")
        if len(data.files) > MAX_FILES:
            raise errors.InvalidInputError(
                f"{len(data.files)} files listed; a directory artifact has at most {MAX_FILES}"
            )
        try:
            manifest_digest(data.files)
        except (ManifestError, ValidationError) as exc:
            raise errors.InvalidInputError(str(exc)) from exc
        gone = [f.path for f in data.files if not self.artifacts.exists("sha256:" + f.sha256)]
        stored = {f.path for f in self.store.list_artifact_files(name, version).files}
        gone = [p for p in gone if p in stored]
        if gone:
            raise errors.UnavailableError(
                f"files of {name}/{version} are recorded but missing from the artifact store: "
                + ", ".join(gone[:20])
            )
        result = self.store.commit_artifact_files(who.name, name, version, data.files, data.name)
        self._notify()
        return result

    def file_for_download(
        self, who: Principal, name: str, version: int, path: str
    ) -> tuple[schemas.FileEntry, str]:
        auth.require(who, "read", name)
        entry = self.store.get_artifact_file(name, version, self._file_path(path))
        blob = self.artifacts.blob_path("sha256:" + entry.sha256)
        if not blob.is_file():
            raise errors.UnavailableError(
                f"the file {entry.path!r} of {name}/{version} (sha256:{entry.sha256}) is recorded but "
                "missing from the artifact store"
            )
        return entry, str(blob)

    # --- aliases ------------------------------------------------------------------------------

    def set_alias(self, who: Principal, name: str, alias: str, version: int) -> schemas.AliasPublic:
        auth.require(who, "write", name)
        result = self.store.set_alias(who.name, name, alias, version)
        self._notify()
        return result

    def get_alias(self, who: Principal, name: str, alias: str) -> schemas.AliasPublic:
        auth.require(who, "read", name)
        return self.store.get_alias(name, alias)

    def resolve_alias(self, who: Principal, name: str, alias: str) -> Versioned[schemas.VersionPublic]:
        auth.require(who, "read", name)
        return self.store.resolve_alias(name, alias)

    def list_aliases(self, who: Principal, name: str) -> list[schemas.AliasPublic]:
        auth.require(who, "read", name)
        return self.store.list_aliases(name)

    def delete_alias(self, who: Principal, name: str, alias: str) -> None:
        auth.require(who, "write", name)
        self.store.delete_alias(who.name, name, alias)

    def alias_history(self, who: Principal, name: str, alias: str) -> list[schemas.AliasEventPublic]:
        auth.require(who, "read", name)
        return self.store.alias_history(name, alias)

    # --- deployments --------------------------------------------------------------------------

    def report_deployment(
        self, who: Principal, name: str, version: int, namespace: str, deployment: str
    ) -> schemas.DeploymentPublic:
        auth.require(who, "write", name)
        return self.store.report_deployment(who.name, name, version, namespace, deployment)

    def remove_deployment(
        self, who: Principal, name: str, version: int, namespace: str, deployment: str
    ) -> None:
        auth.require(who, "write", name)
        self.store.remove_deployment(who.name, name, version, namespace, deployment)

    def list_deployments(self, who: Principal, name: str) -> list[schemas.DeploymentPublic]:
        auth.require(who, "read", name)
        return self.store.list_deployments(name)

    # --- tokens, audit, webhooks (admin) ------------------------------------------------------

    def create_token(self, who: Principal, data: schemas.TokenCreate) -> schemas.TokenCreated:
        auth.require(who, "admin")
        secret = auth.new_token()
        public = self.store.create_token(who.name, data, auth.hash_token(secret))
        return schemas.TokenCreated(**public.model_dump(), token=secret)

    def list_tokens(self, who: Principal) -> list[schemas.TokenPublic]:
        auth.require(who, "admin")
        return self.store.list_tokens()

    def revoke_token(self, who: Principal, token_id: int) -> None:
        auth.require(who, "admin")
        self.store.revoke_token(who.name, token_id)
        self.token_cache.clear()

    def list_audit(
        self, who: Principal, object_id: str | None, after: int | None, limit: int
    ) -> tuple[list[schemas.AuditPublic], int | None]:
        auth.require(who, "admin")
        return self.store.list_audit(object_id, after, limit)

    def create_webhook(self, who: Principal, data: schemas.WebhookCreate) -> schemas.WebhookCreated:
        auth.require(who, "admin")
        webhooks.validate_url(data.url, self.settings.webhooks.allow_loopback)
        secret = data.secret or secrets.token_urlsafe(32)
        public = self.store.create_webhook(who.name, data.url, list(data.events), secret)
        return schemas.WebhookCreated(**public.model_dump(), secret=secret)

    def list_webhooks(self, who: Principal) -> list[schemas.WebhookPublic]:
        auth.require(who, "admin")
        return self.store.list_webhooks()

    def delete_webhook(self, who: Principal, webhook_id: int) -> None:
        auth.require(who, "admin")
        self.store.delete_webhook(who.name, webhook_id)

    def list_deliveries(self, who: Principal, webhook_id: int, limit: int) -> list[schemas.DeliveryPublic]:
        auth.require(who, "admin")
        return self.store.list_deliveries(webhook_id, limit)
