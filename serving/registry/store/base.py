"""The store interface: every write is one transaction that also appends its audit entry and queues
its webhook deliveries, so a change, its audit record and its notifications commit or vanish together.
"""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from modelplane.registry_client import schemas


@dataclass(frozen=True)
class TokenRecord:
    id: int
    name: str
    scopes: tuple[str, ...]
    name_prefixes: tuple[str, ...]
    revoked: bool


B = TypeVar("B", schemas.ModelPublic, schemas.VersionPublic)


@dataclass(frozen=True)
class Versioned(Generic[B]):
    """A resource and its ETag (derived from its revision)."""

    etag: str
    body: B


@dataclass(frozen=True)
class ArtifactRef:
    digest: str
    size: int
    filename: str


@dataclass(frozen=True)
class DueDelivery:
    id: int
    webhook_id: int
    url: str
    secret: str
    event: str
    payload: dict[str, object]
    attempts: int


@dataclass(frozen=True)
class VersionFilter:
    model: str | None = None
    name_prefix: str | None = None
    author: str | None = None
    framework: str | None = None
    status: str | None = None
    tags: Sequence[tuple[str, str | None]] = ()
    allowed_prefixes: Sequence[str] = ()


class RegistryStore(ABC):
    """Persistence for the registry. Implementations raise ``errors.RegistryError`` subclasses."""

    @abstractmethod
    def take_enqueued(self) -> bool:
        """True once after any event queued a webhook delivery (then the dispatcher is woken)."""

    # models
    @abstractmethod
    def create_model(self, actor: str, data: schemas.ModelCreate) -> Versioned[schemas.ModelPublic]: ...
    @abstractmethod
    def get_model(self, name: str) -> Versioned[schemas.ModelPublic]: ...
    @abstractmethod
    def list_models(
        self,
        name_prefix: str | None,
        tags: Sequence[tuple[str, str | None]],
        allowed_prefixes: Sequence[str],
        after: int | None,
        limit: int,
    ) -> tuple[list[schemas.ModelPublic], int | None]: ...
    @abstractmethod
    def update_model(
        self, actor: str, name: str, data: schemas.ModelUpdate, if_match: str | None
    ) -> Versioned[schemas.ModelPublic]: ...
    @abstractmethod
    def delete_model(self, actor: str, name: str, if_match: str | None) -> None: ...
    @abstractmethod
    def set_model_tag(
        self, actor: str, name: str, key: str, value: str | None
    ) -> Versioned[schemas.ModelPublic]: ...

    # versions
    @abstractmethod
    def create_version(
        self, actor: str, name: str, data: schemas.VersionCreate
    ) -> Versioned[schemas.VersionPublic]: ...
    @abstractmethod
    def get_version(self, name: str, version: int) -> Versioned[schemas.VersionPublic]: ...
    @abstractmethod
    def list_versions(
        self, flt: VersionFilter, after: int | None, limit: int
    ) -> tuple[list[schemas.VersionPublic], int | None]: ...
    @abstractmethod
    def update_version(
        self, actor: str, name: str, version: int, data: schemas.VersionUpdate, if_match: str | None
    ) -> Versioned[schemas.VersionPublic]: ...
    @abstractmethod
    def delete_version(self, actor: str, name: str, version: int, if_match: str | None) -> None: ...
    @abstractmethod
    def set_version_tag(
        self, actor: str, name: str, version: int, key: str, value: str | None
    ) -> Versioned[schemas.VersionPublic]: ...
    @abstractmethod
    def check_upload_allowed(self, name: str, version: int) -> None: ...
    @abstractmethod
    def attach_artifact(
        self, actor: str, name: str, version: int, artifact: ArtifactRef
    ) -> Versioned[schemas.VersionPublic]: ...
    @abstractmethod
    def get_artifact(self, name: str, version: int) -> ArtifactRef: ...

    # directory artifacts (files uploaded one by one, then committed)
    @abstractmethod
    def check_file_upload(self, name: str, version: int, entry_path: str, sha256: str) -> bool:
        """Raise unless a file may be stored at ``entry_path``; True when it is already, with ``sha256``."""

    @abstractmethod
    def add_artifact_file(self, actor: str, name: str, version: int, entry: schemas.FileEntry) -> bool:
        """Record a stored file; True when new, False when the path already had this digest."""

    @abstractmethod
    def list_artifact_files(self, name: str, version: int) -> schemas.FileList: ...
    @abstractmethod
    def get_artifact_file(self, name: str, version: int, entry_path: str) -> schemas.FileEntry: ...
    @abstractmethod
    def commit_artifact_files(
        self, actor: str, name: str, version: int, files: Sequence[schemas.FileEntry], dirname: str | None
    ) -> tuple[bool, Versioned[schemas.VersionPublic]]:
        """Make the stored files the version's directory artifact (READY).

        (False, version) when it already was, with the same files."""

    # aliases
    @abstractmethod
    def set_alias(self, actor: str, name: str, alias: str, version: int) -> schemas.AliasPublic: ...
    @abstractmethod
    def get_alias(self, name: str, alias: str) -> schemas.AliasPublic: ...
    @abstractmethod
    def resolve_alias(self, name: str, alias: str) -> Versioned[schemas.VersionPublic]: ...
    @abstractmethod
    def list_aliases(self, name: str) -> list[schemas.AliasPublic]: ...
    @abstractmethod
    def delete_alias(self, actor: str, name: str, alias: str) -> None: ...
    @abstractmethod
    def alias_history(self, name: str, alias: str) -> list[schemas.AliasEventPublic]: ...

    # deployments
    @abstractmethod
    def report_deployment(
        self, actor: str, name: str, version: int, namespace: str, deployment: str
    ) -> schemas.DeploymentPublic: ...
    @abstractmethod
    def remove_deployment(
        self, actor: str, name: str, version: int, namespace: str, deployment: str
    ) -> None: ...
    @abstractmethod
    def list_deployments(self, name: str) -> list[schemas.DeploymentPublic]: ...

    # tokens
    @abstractmethod
    def create_token(
        self, actor: str, data: schemas.TokenCreate, token_hash: str, replace: bool = False
    ) -> schemas.TokenPublic: ...
    @abstractmethod
    def find_token(self, token_hash: str) -> TokenRecord | None: ...
    @abstractmethod
    def list_tokens(self) -> list[schemas.TokenPublic]: ...
    @abstractmethod
    def revoke_token(self, actor: str, token_id: int) -> None: ...

    # audit
    @abstractmethod
    def list_audit(
        self, object_id: str | None, after: int | None, limit: int
    ) -> tuple[list[schemas.AuditPublic], int | None]: ...

    # webhooks
    @abstractmethod
    def create_webhook(
        self, actor: str, url: str, events: list[str], secret: str
    ) -> schemas.WebhookPublic: ...
    @abstractmethod
    def list_webhooks(self) -> list[schemas.WebhookPublic]: ...
    @abstractmethod
    def delete_webhook(self, actor: str, webhook_id: int) -> None: ...
    @abstractmethod
    def list_deliveries(self, webhook_id: int, limit: int) -> list[schemas.DeliveryPublic]: ...
    @abstractmethod
    def due_deliveries(self, now: dt.datetime, limit: int, lease_s: float = 60.0) -> list[DueDelivery]: ...
    @abstractmethod
    def record_delivery(
        self,
        delivery_id: int,
        ok: bool,
        status_code: int | None,
        error: str,
        next_attempt_at: dt.datetime | None,
    ) -> None: ...

    # health
    @abstractmethod
    def ping(self) -> None: ...
