"""The SQLAlchemy store (SQLite and PostgreSQL): one short transaction per write.

Version numbers: the model row's ``last_version`` is incremented with ``UPDATE ... RETURNING`` in the
transaction that inserts the version. On PostgreSQL the row lock serializes concurrent creators; on
SQLite ``BEGIN IMMEDIATE`` does. The unique constraint on (model, version) backs this up, and a
unique violation is retried a bounded number of times before it becomes a 409.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, literal, select, text, union_all, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, selectinload

from modelplane.registry_client import schemas
from modelplane.registry_client.manifest import MAX_FILES, manifest_digest
from modelplane.serving.registry import errors
from modelplane.serving.registry.db import Database
from modelplane.serving.registry.models import (
    Alias,
    AliasEvent,
    ApiToken,
    ArtifactFile,
    AuditEntry,
    DeploymentRecord,
    ModelTag,
    ModelVersion,
    RegisteredModel,
    VersionTag,
    Webhook,
    WebhookDelivery,
    utcnow,
)
from modelplane.serving.registry.store.base import (
    ArtifactRef,
    DueDelivery,
    RegistryStore,
    TokenRecord,
    Versioned,
    VersionFilter,
)

log = logging.getLogger(__name__)
VERSION_CREATE_ATTEMPTS = 5
_VERSION_COLUMNS = tuple(ModelVersion.__table__.columns)

# The hot read paths (get a version, resolve an alias), built once with bound parameters.
# Joined model → alias (primary key model_id, name) → version (primary key): constant cost however
# many versions the model has.
_VERSION_BY_ALIAS = (
    select(*_VERSION_COLUMNS, RegisteredModel.name)
    .select_from(RegisteredModel)
    .join(Alias, Alias.model_id == RegisteredModel.id)
    .join(ModelVersion, ModelVersion.id == Alias.version_id)
    .where(RegisteredModel.name == bindparam("name"), Alias.name == bindparam("alias"))
)
_VERSION_BY_NUMBER = (
    select(*_VERSION_COLUMNS, RegisteredModel.name)
    .join(RegisteredModel, ModelVersion.model_id == RegisteredModel.id)
    .where(RegisteredModel.name == bindparam("name"), ModelVersion.version == bindparam("version"))
)
_ACTIVE_WEBHOOKS = select(Webhook.id, Webhook.events).where(Webhook.active.is_(True))
# The write path of every new version (the most frequent write), in Core: the ORM's unit of work
# cost more than the SQL itself.
_ALLOCATE_VERSION = (
    update(RegisteredModel)
    .where(RegisteredModel.name == bindparam("model_name"))
    .values(last_version=RegisteredModel.last_version + 1)
    .returning(RegisteredModel.id, RegisteredModel.last_version)
)
_INSERT_VERSION = insert(ModelVersion).returning(ModelVersion.id)
_INSERT_VERSION_TAG = insert(VersionTag)
_INSERT_AUDIT = insert(AuditEntry)
_VERSION_EXTRAS = union_all(  # tags and aliases of one version, in one round trip
    select(literal("t"), VersionTag.key, VersionTag.value).where(
        VersionTag.version_id == bindparam("version_id")
    ),
    select(literal("a"), Alias.name, literal("")).where(Alias.version_id == bindparam("version_id")),
)


# The columns of a version that its public form shows (read from an ORM row or a Core row alike).
_PUBLIC_VERSION_FIELDS = (
    "version",
    "description",
    "author",
    "source",
    "run_id",
    "framework",
    "task",
    "format",
    "signature",
    "metrics",
    "params",
    "status",
    "status_message",
    "artifact_digest",
    "artifact_size",
    "artifact_filename",
    "artifact_kind",
    "artifact_file_count",
    "created_at",
    "updated_at",
)
_LISTED = 20  # how many paths an error message names


def _version_from_row(
    m: Mapping[Any, Any], model: str, tags: dict[str, str], aliases: list[str]
) -> schemas.VersionPublic:
    """A version's public form from its column values (a Core row's mapping or the inserted values)."""
    artifact = None
    if m["artifact_digest"] is not None:
        directory = m["artifact_kind"] == "directory"
        artifact = schemas.ArtifactInfo(
            digest=m["artifact_digest"],
            size=m["artifact_size"] or 0,
            filename=m["artifact_filename"] or "",
            kind="directory" if directory else "file",
            files=(m["artifact_file_count"] or 0) if directory else 1,
        )
    return schemas.VersionPublic(
        model=model,
        version=m["version"],
        description=m["description"],
        author=m["author"],
        source=m["source"],
        run_id=m["run_id"],
        framework=m["framework"],
        task=m["task"],
        format=m["format"],
        signature=schemas.Signature.model_validate(m["signature"]) if m["signature"] else None,
        metrics=m["metrics"],
        params=m["params"],
        tags=tags,
        status=m["status"],
        status_message=m["status_message"],
        artifact=artifact,
        aliases=aliases,
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


def model_etag(row: RegisteredModel) -> str:
    return f'"m{row.id}-{row.revision}"'


def version_etag(row: ModelVersion) -> str:
    return f'"v{row.id}-{row.revision}"'


def etag_matches(if_match: str | None, etag: str) -> bool:
    """RFC 9110 If-Match: '*' or a list of strong entity tags; absent means no precondition."""
    if if_match is None:
        return True
    candidates = [c.strip() for c in if_match.split(",")]
    return "*" in candidates or etag in candidates


def _check_if_match(if_match: str | None, etag: str) -> None:
    if not etag_matches(if_match, etag):
        raise errors.PreconditionFailedError(
            f"If-Match {if_match} does not match the current ETag {etag}: the resource changed; "
            "GET it again and retry with the new ETag"
        )


def _is_unique_violation(exc: IntegrityError) -> bool:
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate is not None:
        return str(sqlstate) == "23505"
    return "UNIQUE constraint failed" in str(orig)


def _like_prefix(column: Any, prefixes: Sequence[str]) -> Any:
    from sqlalchemy import or_

    return or_(*[column.startswith(p, autoescape=True) for p in prefixes])


class SqlStore(RegistryStore):
    def __init__(self, db: Database) -> None:
        self.db = db
        self._enqueued = threading.Event()  # a webhook delivery was queued since the last take

    # --- helpers ------------------------------------------------------------------------------

    @staticmethod
    def _model_row(session: Session, name: str, lock: bool = False) -> RegisteredModel:
        stmt = (
            select(RegisteredModel)
            .where(RegisteredModel.name == name)
            .options(selectinload(RegisteredModel.tags))
        )
        if lock:
            stmt = stmt.with_for_update()
        row = session.scalars(stmt).one_or_none()
        if row is None:
            raise errors.NotFoundError(f"model {name!r} does not exist")
        return row

    @staticmethod
    def _version_row(session: Session, name: str, version: int, lock: bool = False) -> ModelVersion:
        stmt = (
            select(ModelVersion)
            .join(RegisteredModel, ModelVersion.model_id == RegisteredModel.id)
            .where(RegisteredModel.name == name, ModelVersion.version == version)
            .options(selectinload(ModelVersion.tags))
        )
        if lock:
            stmt = stmt.with_for_update(of=ModelVersion)
        row = session.scalars(stmt).one_or_none()
        if row is None:
            raise errors.NotFoundError(f"version {version} of model {name!r} does not exist")
        return row

    @staticmethod
    def _aliases_by_model(session: Session, model_ids: Sequence[int]) -> dict[int, dict[str, int]]:
        out: dict[int, dict[str, int]] = {mid: {} for mid in model_ids}
        if not model_ids:
            return out
        rows = session.execute(
            select(Alias.model_id, Alias.name, ModelVersion.version)
            .join(ModelVersion, Alias.version_id == ModelVersion.id)
            .where(Alias.model_id.in_(model_ids))
        )
        for model_id, alias, version in rows:
            out[model_id][alias] = version
        return out

    @staticmethod
    def _aliases_by_version(session: Session, version_ids: Sequence[int]) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {vid: [] for vid in version_ids}
        if not version_ids:
            return out
        for version_id, alias in session.execute(
            select(Alias.version_id, Alias.name).where(Alias.version_id.in_(version_ids)).order_by(Alias.name)
        ):
            out[version_id].append(alias)
        return out

    @staticmethod
    def _model_public(row: RegisteredModel, aliases: dict[str, int]) -> schemas.ModelPublic:
        return schemas.ModelPublic(
            name=row.name,
            description=row.description,
            tags={t.key: t.value for t in row.tags},
            created_by=row.created_by,
            created_at=row.created_at,
            updated_at=row.updated_at,
            latest_version=row.last_version,
            aliases=dict(sorted(aliases.items())),
        )

    @staticmethod
    def _version_public(
        row: ModelVersion, aliases: list[str], model_name: str | None = None
    ) -> schemas.VersionPublic:
        columns = {name: getattr(row, name) for name in _PUBLIC_VERSION_FIELDS}
        tags = {t.key: t.value for t in row.tags}
        return _version_from_row(
            columns, model_name if model_name is not None else row.model.name, tags, aliases
        )

    def _model_versioned(self, session: Session, row: RegisteredModel) -> Versioned[schemas.ModelPublic]:
        aliases = self._aliases_by_model(session, [row.id])[row.id]
        return Versioned(model_etag(row), self._model_public(row, aliases))

    def _version_versioned(self, session: Session, row: ModelVersion) -> Versioned[schemas.VersionPublic]:
        aliases = self._aliases_by_version(session, [row.id])[row.id]
        return Versioned(version_etag(row), self._version_public(row, aliases))

    @staticmethod
    def _audit(
        session: Session,
        actor: str,
        action: str,
        object_type: str,
        object_id: str,
        before: Any = None,
        after: Any = None,
    ) -> None:
        def dump(value: Any) -> dict[str, Any] | None:
            if value is None:
                return None
            if hasattr(value, "model_dump"):
                return dict(value.model_dump(mode="json"))
            return dict(value)

        session.connection().execute(
            _INSERT_AUDIT,
            {
                "at": utcnow(),
                "actor": actor,
                "action": action,
                "object_type": object_type,
                "object_id": object_id,
                "before": dump(before),
                "after": dump(after),
            },
        )

    def _enqueue(self, session: Session, event: str, payload: dict[str, Any]) -> None:
        """Queue one delivery per subscribed webhook, inside the transaction of the event itself."""
        for hook_id, events in session.connection().execute(_ACTIVE_WEBHOOKS):
            if event in events:
                session.add(
                    WebhookDelivery(webhook_id=hook_id, event=event, payload={"event": event, **payload})
                )
                self._enqueued.set()

    def take_enqueued(self) -> bool:
        # A flag, not a count: a rolled-back event at worst wakes the dispatcher for nothing, and a
        # wake lost to a race is covered by the dispatcher's own poll.
        if not self._enqueued.is_set():
            return False
        self._enqueued.clear()
        return True

    # --- models -------------------------------------------------------------------------------

    def create_model(self, actor: str, data: schemas.ModelCreate) -> Versioned[schemas.ModelPublic]:
        try:
            with self.db.write() as s:
                now = utcnow()
                row = RegisteredModel(
                    name=data.name,
                    description=data.description,
                    created_by=actor,
                    created_at=now,
                    updated_at=now,
                    revision=1,
                    last_version=0,
                )
                row.tags = [ModelTag(key=k, value=v) for k, v in data.tags.items()]
                s.add(row)
                s.flush()
                result = Versioned(model_etag(row), self._model_public(row, {}))
                self._audit(s, actor, "model.create", "model", data.name, after=result.body)
                return result
        except IntegrityError as exc:
            if _is_unique_violation(exc):
                raise errors.AlreadyExistsError(f"model {data.name!r} already exists") from exc
            raise

    def get_model(self, name: str) -> Versioned[schemas.ModelPublic]:
        with self.db.read() as s:
            return self._model_versioned(s, self._model_row(s, name))

    def list_models(
        self,
        name_prefix: str | None,
        tags: Sequence[tuple[str, str | None]],
        allowed_prefixes: Sequence[str],
        after: int | None,
        limit: int,
    ) -> tuple[list[schemas.ModelPublic], int | None]:
        stmt = (
            select(RegisteredModel).order_by(RegisteredModel.id).options(selectinload(RegisteredModel.tags))
        )
        if name_prefix:
            stmt = stmt.where(RegisteredModel.name.startswith(name_prefix, autoescape=True))
        if allowed_prefixes:
            stmt = stmt.where(_like_prefix(RegisteredModel.name, allowed_prefixes))
        for key, value in tags:
            cond = select(ModelTag.model_id).where(ModelTag.key == key)
            if value is not None:
                cond = cond.where(ModelTag.value == value)
            stmt = stmt.where(RegisteredModel.id.in_(cond))
        if after is not None:
            stmt = stmt.where(RegisteredModel.id > after)
        with self.db.read() as s:
            rows = list(s.scalars(stmt.limit(limit + 1)))
            more = len(rows) > limit
            rows = rows[:limit]
            aliases = self._aliases_by_model(s, [r.id for r in rows])
            items = [self._model_public(r, aliases[r.id]) for r in rows]
        return items, (rows[-1].id if more and rows else None)

    def update_model(
        self, actor: str, name: str, data: schemas.ModelUpdate, if_match: str | None
    ) -> Versioned[schemas.ModelPublic]:
        with self.db.write() as s:
            row = self._model_row(s, name, lock=True)
            _check_if_match(if_match, model_etag(row))
            before = self._model_versioned(s, row).body
            if data.description is not None:
                row.description = data.description
            row.revision += 1
            row.updated_at = utcnow()
            s.flush()
            result = self._model_versioned(s, row)
            self._audit(s, actor, "model.update", "model", name, before=before, after=result.body)
            return result

    def delete_model(self, actor: str, name: str, if_match: str | None) -> None:
        with self.db.write() as s:
            row = self._model_row(s, name, lock=True)
            _check_if_match(if_match, model_etag(row))
            deployed = s.scalars(
                select(DeploymentRecord)
                .join(ModelVersion, DeploymentRecord.version_id == ModelVersion.id)
                .where(ModelVersion.model_id == row.id)
                .limit(5)
            ).all()
            if deployed:
                names = ", ".join(f"{d.namespace}/{d.deployment}" for d in deployed)
                raise errors.InUseError(
                    f"model {name!r} has versions in use by deployments ({names}); "
                    "remove those deployments (or their records) first"
                )
            before = self._model_versioned(s, row).body
            s.execute(delete(RegisteredModel).where(RegisteredModel.id == row.id))
            self._audit(s, actor, "model.delete", "model", name, before=before)

    def set_model_tag(
        self, actor: str, name: str, key: str, value: str | None
    ) -> Versioned[schemas.ModelPublic]:
        with self.db.write() as s:
            row = self._model_row(s, name, lock=True)
            before = self._model_versioned(s, row).body
            existing = {t.key: t for t in row.tags}
            if value is None:
                if key not in existing:
                    raise errors.NotFoundError(f"model {name!r} has no tag {key!r}")
                row.tags.remove(existing[key])
            elif key in existing:
                existing[key].value = value
            else:
                row.tags.append(ModelTag(key=key, value=value))
            row.revision += 1
            row.updated_at = utcnow()
            s.flush()
            result = self._model_versioned(s, row)
            action = "model.tag.delete" if value is None else "model.tag.set"
            self._audit(s, actor, action, "model", name, before=before, after=result.body)
            return result

    # --- versions -----------------------------------------------------------------------------

    def create_version(
        self, actor: str, name: str, data: schemas.VersionCreate
    ) -> Versioned[schemas.VersionPublic]:
        last_exc: Exception | None = None
        for attempt in range(VERSION_CREATE_ATTEMPTS):
            try:
                return self._create_version_once(actor, name, data)
            except IntegrityError as exc:
                if not _is_unique_violation(exc):
                    raise
                last_exc = exc
                log.warning("version number collision on %s (attempt %d); retrying", name, attempt + 1)
            except OperationalError as exc:
                # SQLite's busy timeout or a PostgreSQL serialization hiccup: the transaction rolled
                # back as a whole, so retrying cannot double-insert.
                last_exc = exc
                log.warning("transient database error creating a version of %s: %s", name, exc)
        raise errors.UnavailableError(
            f"could not allocate a version number for {name!r} after {VERSION_CREATE_ATTEMPTS} attempts; "
            "retry the request"
        ) from last_exc

    def _create_version_once(
        self, actor: str, name: str, data: schemas.VersionCreate
    ) -> Versioned[schemas.VersionPublic]:
        with self.db.write() as s:
            conn = s.connection()
            allocated = conn.execute(_ALLOCATE_VERSION, {"model_name": name}).one_or_none()
            if allocated is None:
                raise errors.NotFoundError(f"model {name!r} does not exist")
            model_id, number = allocated
            now = utcnow()
            values: dict[str, Any] = {
                "model_id": model_id,
                "version": number,
                "description": data.description,
                "author": data.author or actor,
                "source": data.source,
                "run_id": data.run_id,
                "framework": data.framework,
                "signature": data.signature.model_dump(mode="json") if data.signature else {},
                "metrics": dict(data.metrics),
                "params": dict(data.params),
                "status": "PENDING",
                "status_message": "",
                "artifact_digest": None,
                "artifact_size": None,
                "artifact_filename": None,
                "artifact_kind": None,
                "artifact_file_count": None,
                "task": data.task,
                "format": data.format,
                "created_at": now,
                "updated_at": now,
                "revision": 1,
            }
            version_id = conn.execute(_INSERT_VERSION, values).scalar_one()
            if data.tags:
                conn.execute(
                    _INSERT_VERSION_TAG,
                    [{"version_id": version_id, "key": k, "value": v} for k, v in data.tags.items()],
                )
            body = _version_from_row({**values, "id": version_id}, name, dict(data.tags), [])
            result = Versioned(f'"v{version_id}-1"', body)
            self._audit(s, actor, "version.create", "version", f"{name}/{number}", after=result.body)
            self._enqueue(s, "version.created", {"model": name, "version": number, "actor": actor})
            return result

    def get_version(self, name: str, version: int) -> Versioned[schemas.VersionPublic]:
        found = self._read_version_fast(_VERSION_BY_NUMBER, {"name": name, "version": version})
        if found is None:
            raise errors.NotFoundError(f"version {version} of model {name!r} does not exist")
        return found

    def _model_row_exists(self, name: str) -> None:
        with self.db.engine.connect() as conn:
            if conn.execute(select(RegisteredModel.id).where(RegisteredModel.name == name)).first() is None:
                raise errors.NotFoundError(f"model {name!r} does not exist")

    def _read_version_fast(
        self, stmt: Any, params: dict[str, Any]
    ) -> Versioned[schemas.VersionPublic] | None:
        """One version as its public form from Core rows: the read path that runs most often.

        The statements are built once (module level, bound parameters), so a call costs two
        executions of cached compiled SQL and no statement construction.
        """
        with self.db.engine.connect() as conn:
            row = conn.execute(stmt, params).first()
            if row is None:
                return None
            m = row._mapping
            extras = conn.execute(_VERSION_EXTRAS, {"version_id": m["id"]}).all()
        tags = {k: v for kind, k, v in extras if kind == "t"}
        aliases = sorted(k for kind, k, _ in extras if kind == "a")
        body = _version_from_row(m, m["name"], tags, aliases)
        return Versioned(f'"v{m["id"]}-{m["revision"]}"', body)

    def list_versions(
        self, flt: VersionFilter, after: int | None, limit: int
    ) -> tuple[list[schemas.VersionPublic], int | None]:
        stmt = (
            select(ModelVersion)
            .join(RegisteredModel, ModelVersion.model_id == RegisteredModel.id)
            .options(selectinload(ModelVersion.tags))
        )
        if flt.model is not None:
            stmt = stmt.where(RegisteredModel.name == flt.model).order_by(ModelVersion.version)
            key_col: Any = ModelVersion.version
        else:
            stmt = stmt.order_by(ModelVersion.id)
            key_col = ModelVersion.id
        if flt.name_prefix:
            stmt = stmt.where(RegisteredModel.name.startswith(flt.name_prefix, autoescape=True))
        if flt.allowed_prefixes:
            stmt = stmt.where(_like_prefix(RegisteredModel.name, flt.allowed_prefixes))
        if flt.author is not None:
            stmt = stmt.where(ModelVersion.author == flt.author)
        if flt.framework is not None:
            stmt = stmt.where(ModelVersion.framework == flt.framework)
        if flt.status is not None:
            stmt = stmt.where(ModelVersion.status == flt.status)
        for key, value in flt.tags:
            cond = select(VersionTag.version_id).where(VersionTag.key == key)
            if value is not None:
                cond = cond.where(VersionTag.value == value)
            stmt = stmt.where(ModelVersion.id.in_(cond))
        if after is not None:
            stmt = stmt.where(key_col > after)
        with self.db.read() as s:
            if flt.model is not None:
                self._model_row(s, flt.model)
            rows = list(s.scalars(stmt.limit(limit + 1)).unique())
            more = len(rows) > limit
            rows = rows[:limit]
            aliases = self._aliases_by_version(s, [r.id for r in rows])
            items = [self._version_public(r, aliases[r.id]) for r in rows]
        next_key = None
        if more and rows:
            next_key = rows[-1].version if flt.model is not None else rows[-1].id
        return items, next_key

    def update_version(
        self, actor: str, name: str, version: int, data: schemas.VersionUpdate, if_match: str | None
    ) -> Versioned[schemas.VersionPublic]:
        with self.db.write() as s:
            row = self._version_row(s, name, version, lock=True)
            _check_if_match(if_match, version_etag(row))
            before = self._version_versioned(s, row).body
            became_ready = False
            if data.status is not None and data.status != row.status:
                if row.status != "PENDING":
                    raise errors.InvalidStateError(
                        f"version {version} of {name!r} is {row.status}; "
                        "only a PENDING version changes status"
                    )
                if data.status == "READY" and row.source is None and row.artifact_digest is None:
                    raise errors.InvalidStateError(
                        "a version becomes READY by uploading its artifact (or, for a version with a "
                        "source, by setting status READY); this one has neither"
                    )
                row.status = data.status
                became_ready = data.status == "READY"
            if data.description is not None:
                row.description = data.description
            if data.status_message is not None:
                row.status_message = data.status_message
            if data.metrics is not None:
                row.metrics = {**row.metrics, **data.metrics}
            row.revision += 1
            row.updated_at = utcnow()
            s.flush()
            result = self._version_versioned(s, row)
            self._audit(
                s, actor, "version.update", "version", f"{name}/{version}", before=before, after=result.body
            )
            if became_ready:
                self._enqueue(s, "version.ready", {"model": name, "version": version, "actor": actor})
            return result

    def delete_version(self, actor: str, name: str, version: int, if_match: str | None) -> None:
        with self.db.write() as s:
            row = self._version_row(s, name, version, lock=True)
            _check_if_match(if_match, version_etag(row))
            deployed = s.scalars(
                select(DeploymentRecord).where(DeploymentRecord.version_id == row.id).limit(5)
            ).all()
            if deployed:
                names = ", ".join(f"{d.namespace}/{d.deployment}" for d in deployed)
                raise errors.InUseError(f"version {version} of {name!r} is in use by deployments ({names})")
            aliases = self._aliases_by_version(s, [row.id])[row.id]
            if aliases:
                raise errors.InUseError(
                    f"version {version} of {name!r} is the target of aliases {aliases}; "
                    "move or delete them first"
                )
            before = self._version_versioned(s, row).body
            s.execute(delete(ModelVersion).where(ModelVersion.id == row.id))
            self._audit(s, actor, "version.delete", "version", f"{name}/{version}", before=before)

    def set_version_tag(
        self, actor: str, name: str, version: int, key: str, value: str | None
    ) -> Versioned[schemas.VersionPublic]:
        with self.db.write() as s:
            row = self._version_row(s, name, version, lock=True)
            before = self._version_versioned(s, row).body
            existing = {t.key: t for t in row.tags}
            if value is None:
                if key not in existing:
                    raise errors.NotFoundError(f"version {version} of {name!r} has no tag {key!r}")
                row.tags.remove(existing[key])
            elif key in existing:
                existing[key].value = value
            else:
                row.tags.append(VersionTag(key=key, value=value))
            row.revision += 1
            row.updated_at = utcnow()
            s.flush()
            result = self._version_versioned(s, row)
            action = "version.tag.delete" if value is None else "version.tag.set"
            self._audit(s, actor, action, "version", f"{name}/{version}", before=before, after=result.body)
            return result

    def check_upload_allowed(self, name: str, version: int) -> None:
        with self.db.read() as s:
            row = self._version_row(s, name, version)
            if row.status != "PENDING":
                raise errors.InvalidStateError(
                    f"version {version} of {name!r} is {row.status}; artifacts are immutable once a "
                    "version is READY or FAILED: create a new version"
                )
            self._check_no_staged_files(s, row, name)

    @staticmethod
    def _check_no_staged_files(s: Session, row: ModelVersion, name: str) -> None:
        staged = s.execute(select(ArtifactFile.id).where(ArtifactFile.version_id == row.id).limit(1)).first()
        if staged is not None:
            raise errors.InvalidStateError(
                f"version {row.version} of {name!r} has files of a directory artifact uploaded; "
                f"commit them (POST .../versions/{row.version}/files:commit) or create a new version "
                "for a single-file artifact"
            )

    def attach_artifact(
        self, actor: str, name: str, version: int, artifact: ArtifactRef
    ) -> Versioned[schemas.VersionPublic]:
        with self.db.write() as s:
            row = self._version_row(s, name, version, lock=True)
            if row.status != "PENDING":
                raise errors.InvalidStateError(
                    f"version {version} of {name!r} is {row.status}; artifacts are immutable once set"
                )
            self._check_no_staged_files(s, row, name)
            before = self._version_versioned(s, row).body
            row.artifact_digest = artifact.digest
            row.artifact_size = artifact.size
            row.artifact_filename = artifact.filename
            row.status = "READY"
            row.revision += 1
            row.updated_at = utcnow()
            s.flush()
            result = self._version_versioned(s, row)
            self._audit(
                s,
                actor,
                "version.artifact.upload",
                "version",
                f"{name}/{version}",
                before=before,
                after=result.body,
            )
            self._enqueue(
                s,
                "version.ready",
                {"model": name, "version": version, "digest": artifact.digest, "actor": actor},
            )
            return result

    def get_artifact(self, name: str, version: int) -> ArtifactRef:
        with self.db.read() as s:
            row = self._version_row(s, name, version)
            if row.artifact_digest is None or row.status != "READY":
                raise errors.NotFoundError(
                    f"version {version} of {name!r} has no artifact (status {row.status})"
                )
            if row.artifact_kind == "directory":
                raise errors.NotFoundError(
                    f"version {version} of {name!r} has a directory artifact, not a single file: list "
                    f"its files at /api/v1/models/{name}/versions/{version}/files and download each"
                )
            return ArtifactRef(
                row.artifact_digest, row.artifact_size or 0, row.artifact_filename or "artifact"
            )

    # --- directory artifacts ------------------------------------------------------------------

    @staticmethod
    def _check_files_allowed(row: ModelVersion, name: str) -> None:
        if row.artifact_kind == "directory":
            raise errors.InvalidStateError(
                f"version {row.version} of {name!r} is {row.status}: its directory artifact is committed "
                "and immutable; create a new version"
            )
        if row.artifact_digest is not None:
            raise errors.InvalidStateError(
                f"version {row.version} of {name!r} has a single-file artifact; a directory artifact "
                "needs a new version"
            )
        if row.status != "PENDING":
            raise errors.InvalidStateError(
                f"version {row.version} of {name!r} is {row.status}; files are uploaded only to a "
                "PENDING version: create a new version"
            )

    @staticmethod
    def _file_rows(s: Session, version_id: int) -> list[ArtifactFile]:
        return list(
            s.scalars(
                select(ArtifactFile).where(ArtifactFile.version_id == version_id).order_by(ArtifactFile.path)
            )
        )

    @staticmethod
    def _check_stored_file(s: Session, row: ModelVersion, name: str, entry_path: str, sha256: str) -> bool:
        """True when ``entry_path`` is stored with ``sha256``; 409 with another; 400 when full."""
        existing = s.execute(
            select(ArtifactFile.sha256).where(
                ArtifactFile.version_id == row.id, ArtifactFile.path == entry_path
            )
        ).scalar_one_or_none()
        if existing is not None:
            if existing == sha256:
                return True
            raise errors.AlreadyExistsError(
                f"{entry_path!r} of version {row.version} of {name!r} is already stored with sha256 "
                f"{existing}, not {sha256}; files are immutable once uploaded: create a new version"
            )
        count = s.scalar(
            select(func.count()).select_from(ArtifactFile).where(ArtifactFile.version_id == row.id)
        )
        if (count or 0) >= MAX_FILES:
            raise errors.InvalidInputError(
                f"version {row.version} of {name!r} already has {MAX_FILES} files, the most a directory "
                "artifact may have"
            )
        return False

    def check_file_upload(self, name: str, version: int, entry_path: str, sha256: str) -> bool:
        with self.db.read() as s:
            row = self._version_row(s, name, version)
            self._check_files_allowed(row, name)
            return self._check_stored_file(s, row, name, entry_path, sha256)

    def add_artifact_file(self, actor: str, name: str, version: int, entry: schemas.FileEntry) -> bool:
        try:
            with self.db.write() as s:
                row = self._version_row(s, name, version, lock=True)
                self._check_files_allowed(row, name)
                if self._check_stored_file(s, row, name, entry.path, entry.sha256):
                    return False
                s.add(
                    ArtifactFile(
                        version_id=row.id,
                        path=entry.path,
                        sha256=entry.sha256,
                        size=entry.size,
                        uploaded_by=actor,
                        uploaded_at=utcnow(),
                    )
                )
                s.flush()
                self._audit(s, actor, "version.file.upload", "version", f"{name}/{version}", after=entry)
                return True
        except IntegrityError as exc:
            if not _is_unique_violation(exc):
                raise
            # A concurrent upload of the same path won: the same digest is a no-op, another a 409.
            if self.check_file_upload(name, version, entry.path, entry.sha256):
                return False
            raise

    def list_artifact_files(self, name: str, version: int) -> schemas.FileList:
        with self.db.read() as s:
            row = self._version_row(s, name, version)
            committed = row.artifact_kind == "directory"
            files = [
                schemas.FileEntry(path=r.path, sha256=r.sha256, size=r.size)
                for r in self._file_rows(s, row.id)
            ]
            return schemas.FileList(
                files=files, digest=row.artifact_digest if committed else None, committed=committed
            )

    def get_artifact_file(self, name: str, version: int, entry_path: str) -> schemas.FileEntry:
        with self.db.read() as s:
            row = self._version_row(s, name, version)
            found = s.scalars(
                select(ArtifactFile).where(ArtifactFile.version_id == row.id, ArtifactFile.path == entry_path)
            ).one_or_none()
            if found is None:
                raise errors.NotFoundError(f"version {version} of {name!r} has no file {entry_path!r}")
            return schemas.FileEntry(path=found.path, sha256=found.sha256, size=found.size)

    def commit_artifact_files(
        self, actor: str, name: str, version: int, files: Sequence[schemas.FileEntry], dirname: str | None
    ) -> tuple[bool, Versioned[schemas.VersionPublic]]:
        digest = manifest_digest(files)
        with self.db.write() as s:
            row = self._version_row(s, name, version, lock=True)
            if row.artifact_kind == "directory" and row.artifact_digest == digest:
                return False, self._version_versioned(s, row)  # a retried commit: nothing to do
            self._check_files_allowed(row, name)
            stored = {
                r.path: schemas.FileEntry(path=r.path, sha256=r.sha256, size=r.size)
                for r in self._file_rows(s, row.id)
            }
            requested = {f.path: f for f in files}
            missing = sorted(p for p in requested if p not in stored)
            extra = sorted(p for p in stored if p not in requested)
            differ = sorted(p for p in requested if p in stored and stored[p] != requested[p])
            if missing or extra or differ:
                parts = []
                for what, paths in (
                    ("not uploaded", missing),
                    ("uploaded but not listed", extra),
                    ("uploaded with another sha256 or size", differ),
                ):
                    if paths:
                        more = f" and {len(paths) - _LISTED} more" if len(paths) > _LISTED else ""
                        parts.append(f"{what}: {', '.join(paths[:_LISTED])}{more}")
                raise errors.ManifestMismatchError(
                    f"the files listed do not match the files stored for version {version} of "
                    f"{name!r} ({'; '.join(parts)}); nothing was committed"
                )
            before = self._version_versioned(s, row).body
            row.artifact_digest = digest
            row.artifact_size = sum(f.size for f in files)
            row.artifact_filename = dirname or ""
            row.artifact_kind = "directory"
            row.artifact_file_count = len(files)
            row.status = "READY"
            row.revision += 1
            row.updated_at = utcnow()
            s.flush()
            result = self._version_versioned(s, row)
            self._audit(
                s,
                actor,
                "version.artifact.commit",
                "version",
                f"{name}/{version}",
                before=before,
                after=result.body,
            )
            self._enqueue(
                s, "version.ready", {"model": name, "version": version, "digest": digest, "actor": actor}
            )
            return True, result

    # --- aliases ------------------------------------------------------------------------------

    @staticmethod
    def _alias_public(name: str, row: Alias) -> schemas.AliasPublic:
        return schemas.AliasPublic(
            model=name,
            alias=row.name,
            version=row.version.version,
            updated_by=row.updated_by,
            updated_at=row.updated_at,
        )

    def set_alias(self, actor: str, name: str, alias: str, version: int) -> schemas.AliasPublic:
        with self.db.write() as s:
            model = self._model_row(s, name, lock=True)
            target = self._version_row(s, name, version)
            current = s.get(Alias, (model.id, alias))
            previous = current.version.version if current is not None else None
            if current is None:
                current = Alias(
                    model_id=model.id, name=alias, version_id=target.id, updated_by=actor, updated_at=utcnow()
                )
                s.add(current)
            else:
                current.version_id = target.id
                current.updated_by = actor
                current.updated_at = utcnow()
            s.flush()
            s.refresh(current, ["version"])
            if previous != version:
                s.add(
                    AliasEvent(
                        model_id=model.id, alias=alias, from_version=previous, to_version=version, actor=actor
                    )
                )
                self._enqueue(
                    s,
                    "alias.moved",
                    {
                        "model": name,
                        "alias": alias,
                        "from_version": previous,
                        "to_version": version,
                        "actor": actor,
                    },
                )
            result = self._alias_public(name, current)
            self._audit(
                s,
                actor,
                "alias.set",
                "alias",
                f"{name}@{alias}",
                before={"version": previous} if previous is not None else None,
                after={"version": version},
            )
            return result

    def get_alias(self, name: str, alias: str) -> schemas.AliasPublic:
        with self.db.read() as s:
            row = s.scalars(
                select(Alias)
                .join(RegisteredModel, Alias.model_id == RegisteredModel.id)
                .where(RegisteredModel.name == name, Alias.name == alias)
            ).one_or_none()
            if row is None:
                self._model_row(s, name)
                raise errors.NotFoundError(f"model {name!r} has no alias {alias!r}")
            return self._alias_public(name, row)

    def resolve_alias(self, name: str, alias: str) -> Versioned[schemas.VersionPublic]:
        """The version behind ``name@alias`` (the operator's hot path): two Core queries, no ORM."""
        found = self._read_version_fast(_VERSION_BY_ALIAS, {"name": name, "alias": alias})
        if found is None:
            self._model_row_exists(name)
            raise errors.NotFoundError(f"model {name!r} has no alias {alias!r}")
        return found

    def list_aliases(self, name: str) -> list[schemas.AliasPublic]:
        with self.db.read() as s:
            model = self._model_row(s, name)
            rows = s.scalars(select(Alias).where(Alias.model_id == model.id).order_by(Alias.name))
            return [self._alias_public(name, r) for r in rows]

    def delete_alias(self, actor: str, name: str, alias: str) -> None:
        with self.db.write() as s:
            model = self._model_row(s, name, lock=True)
            row = s.get(Alias, (model.id, alias))
            if row is None:
                raise errors.NotFoundError(f"model {name!r} has no alias {alias!r}")
            previous = row.version.version
            s.delete(row)
            s.add(
                AliasEvent(
                    model_id=model.id, alias=alias, from_version=previous, to_version=None, actor=actor
                )
            )
            self._audit(s, actor, "alias.delete", "alias", f"{name}@{alias}", before={"version": previous})

    def alias_history(self, name: str, alias: str) -> list[schemas.AliasEventPublic]:
        with self.db.read() as s:
            model = self._model_row(s, name)
            rows = s.scalars(
                select(AliasEvent)
                .where(AliasEvent.model_id == model.id, AliasEvent.alias == alias)
                .order_by(AliasEvent.id)
                .limit(10_000)
            )
            return [
                schemas.AliasEventPublic(
                    alias=r.alias,
                    from_version=r.from_version,
                    to_version=r.to_version,
                    actor=r.actor,
                    at=r.at,
                )
                for r in rows
            ]

    # --- deployments --------------------------------------------------------------------------

    def report_deployment(
        self, actor: str, name: str, version: int, namespace: str, deployment: str
    ) -> schemas.DeploymentPublic:
        with self.db.write() as s:
            row = self._version_row(s, name, version, lock=True)
            rec = s.scalars(
                select(DeploymentRecord).where(
                    DeploymentRecord.version_id == row.id,
                    DeploymentRecord.namespace == namespace,
                    DeploymentRecord.deployment == deployment,
                )
            ).one_or_none()
            if rec is None:
                rec = DeploymentRecord(
                    version_id=row.id,
                    namespace=namespace,
                    deployment=deployment,
                    reported_by=actor,
                    reported_at=utcnow(),
                )
                s.add(rec)
                self._audit(
                    s,
                    actor,
                    "deployment.report",
                    "version",
                    f"{name}/{version}",
                    after={"namespace": namespace, "deployment": deployment},
                )
            else:
                rec.reported_by = actor
                rec.reported_at = utcnow()
            s.flush()
            return schemas.DeploymentPublic(
                model=name,
                version=version,
                namespace=namespace,
                deployment=deployment,
                reported_by=rec.reported_by,
                reported_at=rec.reported_at,
            )

    def remove_deployment(self, actor: str, name: str, version: int, namespace: str, deployment: str) -> None:
        with self.db.write() as s:
            row = self._version_row(s, name, version, lock=True)
            result = s.execute(
                delete(DeploymentRecord).where(
                    DeploymentRecord.version_id == row.id,
                    DeploymentRecord.namespace == namespace,
                    DeploymentRecord.deployment == deployment,
                )
            )
            if getattr(result, "rowcount", 0) == 0:
                raise errors.NotFoundError(
                    f"no record of deployment {namespace}/{deployment} using version {version} of {name!r}"
                )
            self._audit(
                s,
                actor,
                "deployment.remove",
                "version",
                f"{name}/{version}",
                before={"namespace": namespace, "deployment": deployment},
            )

    def list_deployments(self, name: str) -> list[schemas.DeploymentPublic]:
        with self.db.read() as s:
            model = self._model_row(s, name)
            rows = s.execute(
                select(DeploymentRecord, ModelVersion.version)
                .join(ModelVersion, DeploymentRecord.version_id == ModelVersion.id)
                .where(ModelVersion.model_id == model.id)
                .order_by(ModelVersion.version, DeploymentRecord.namespace, DeploymentRecord.deployment)
            )
            return [
                schemas.DeploymentPublic(
                    model=name,
                    version=version,
                    namespace=rec.namespace,
                    deployment=rec.deployment,
                    reported_by=rec.reported_by,
                    reported_at=rec.reported_at,
                )
                for rec, version in rows
            ]

    # --- tokens -------------------------------------------------------------------------------

    @staticmethod
    def _token_public(row: ApiToken) -> schemas.TokenPublic:
        return schemas.TokenPublic(
            id=row.id,
            name=row.name,
            scopes=list(row.scopes),
            name_prefixes=list(row.name_prefixes),
            created_by=row.created_by,
            created_at=row.created_at,
            revoked_at=row.revoked_at,
        )

    def create_token(
        self, actor: str, data: schemas.TokenCreate, token_hash: str, replace: bool = False
    ) -> schemas.TokenPublic:
        try:
            with self.db.write() as s:
                existing = s.scalars(select(ApiToken).where(ApiToken.name == data.name)).one_or_none()
                if existing is not None and replace:
                    existing.token_hash = token_hash
                    existing.scopes = list(data.scopes)
                    existing.name_prefixes = list(data.name_prefixes)
                    existing.revoked_at = None
                    row = existing
                else:
                    row = ApiToken(
                        name=data.name,
                        token_hash=token_hash,
                        scopes=list(data.scopes),
                        name_prefixes=list(data.name_prefixes),
                        created_by=actor,
                        created_at=utcnow(),
                    )
                    s.add(row)
                s.flush()
                public = self._token_public(row)
                self._audit(s, actor, "token.create", "token", data.name, after=public)
                return public
        except IntegrityError as exc:
            if _is_unique_violation(exc):
                raise errors.AlreadyExistsError(f"a token named {data.name!r} already exists") from exc
            raise

    def find_token(self, token_hash: str) -> TokenRecord | None:
        with self.db.read() as s:
            row = s.scalars(select(ApiToken).where(ApiToken.token_hash == token_hash)).one_or_none()
            if row is None:
                return None
            return TokenRecord(
                row.id,
                row.name,
                tuple(row.scopes),
                tuple(row.name_prefixes),
                revoked=row.revoked_at is not None,
            )

    def list_tokens(self) -> list[schemas.TokenPublic]:
        with self.db.read() as s:
            return [
                self._token_public(r) for r in s.scalars(select(ApiToken).order_by(ApiToken.id).limit(10_000))
            ]

    def revoke_token(self, actor: str, token_id: int) -> None:
        with self.db.write() as s:
            row = s.get(ApiToken, token_id)
            if row is None:
                raise errors.NotFoundError(f"token {token_id} does not exist")
            if row.revoked_at is None:
                row.revoked_at = utcnow()
                self._audit(s, actor, "token.revoke", "token", row.name)

    # --- audit --------------------------------------------------------------------------------

    def list_audit(
        self, object_id: str | None, after: int | None, limit: int
    ) -> tuple[list[schemas.AuditPublic], int | None]:
        stmt = select(AuditEntry).order_by(AuditEntry.id)
        if object_id is not None:
            stmt = stmt.where(AuditEntry.object_id == object_id)
        if after is not None:
            stmt = stmt.where(AuditEntry.id > after)
        with self.db.read() as s:
            rows = list(s.scalars(stmt.limit(limit + 1)))
        more = len(rows) > limit
        rows = rows[:limit]
        items = [
            schemas.AuditPublic(
                id=r.id,
                at=r.at,
                actor=r.actor,
                action=r.action,
                object_type=r.object_type,
                object_id=r.object_id,
                before=r.before,
                after=r.after,
            )
            for r in rows
        ]
        return items, (rows[-1].id if more and rows else None)

    # --- webhooks -----------------------------------------------------------------------------

    @staticmethod
    def _webhook_public(row: Webhook) -> schemas.WebhookPublic:
        return schemas.WebhookPublic(
            id=row.id,
            url=row.url,
            events=list(row.events),
            active=row.active,
            created_by=row.created_by,
            created_at=row.created_at,
        )

    def create_webhook(self, actor: str, url: str, events: list[str], secret: str) -> schemas.WebhookPublic:
        with self.db.write() as s:
            row = Webhook(url=url, secret=secret, events=sorted(set(events)), active=True, created_by=actor)
            s.add(row)
            s.flush()
            public = self._webhook_public(row)
            self._audit(s, actor, "webhook.create", "webhook", str(row.id), after=public)
            return public

    def list_webhooks(self) -> list[schemas.WebhookPublic]:
        with self.db.read() as s:
            return [
                self._webhook_public(r) for r in s.scalars(select(Webhook).order_by(Webhook.id).limit(10_000))
            ]

    def delete_webhook(self, actor: str, webhook_id: int) -> None:
        with self.db.write() as s:
            row = s.get(Webhook, webhook_id)
            if row is None:
                raise errors.NotFoundError(f"webhook {webhook_id} does not exist")
            before = self._webhook_public(row)
            s.execute(delete(Webhook).where(Webhook.id == webhook_id))
            self._audit(s, actor, "webhook.delete", "webhook", str(webhook_id), before=before)

    def list_deliveries(self, webhook_id: int, limit: int) -> list[schemas.DeliveryPublic]:
        with self.db.read() as s:
            if s.get(Webhook, webhook_id) is None:
                raise errors.NotFoundError(f"webhook {webhook_id} does not exist")
            rows = s.scalars(
                select(WebhookDelivery)
                .where(WebhookDelivery.webhook_id == webhook_id)
                .order_by(WebhookDelivery.id.desc())
                .limit(limit)
            )
            return [
                schemas.DeliveryPublic(
                    id=r.id,
                    event=r.event,
                    status=r.status,
                    attempts=r.attempts,
                    last_status_code=r.last_status_code,
                    last_error=r.last_error,
                    created_at=r.created_at,
                    delivered_at=r.delivered_at,
                    payload=r.payload,
                )
                for r in rows
            ]

    def due_deliveries(self, now: dt.datetime, limit: int, lease_s: float = 60.0) -> list[DueDelivery]:
        """Claim due deliveries for ``lease_s`` seconds, so two registry replicas never send one together.

        A claim moves ``next_attempt_at`` past the lease, conditioned on the row being unchanged; a
        dispatcher that dies mid-send leaves the row to be retried when the lease runs out.
        """
        due = (WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now)
        with self.db.read() as s:
            if s.execute(select(WebhookDelivery.id).where(*due).limit(1)).first() is None:
                return []
        claimed: list[DueDelivery] = []
        with self.db.write() as s:
            rows = s.execute(
                select(WebhookDelivery, Webhook)
                .join(Webhook, WebhookDelivery.webhook_id == Webhook.id)
                .where(*due)
                .order_by(WebhookDelivery.id)
                .limit(limit)
            ).all()
            lease_until = now + dt.timedelta(seconds=lease_s)
            for d, w in rows:
                result = s.execute(
                    update(WebhookDelivery)
                    .where(WebhookDelivery.id == d.id, WebhookDelivery.attempts == d.attempts, *due)
                    .values(next_attempt_at=lease_until),
                    execution_options={"synchronize_session": False},
                )
                if getattr(result, "rowcount", 0) == 1:
                    claimed.append(DueDelivery(d.id, w.id, w.url, w.secret, d.event, d.payload, d.attempts))
        return claimed

    def record_delivery(
        self,
        delivery_id: int,
        ok: bool,
        status_code: int | None,
        error: str,
        next_attempt_at: dt.datetime | None,
    ) -> None:
        with self.db.write() as s:
            row = s.get(WebhookDelivery, delivery_id)
            if row is None:
                return
            row.attempts += 1
            row.last_status_code = status_code
            row.last_error = error[:2000]
            if ok:
                row.status = "delivered"
                row.delivered_at = utcnow()
            elif next_attempt_at is None:
                row.status = "failed"
            else:
                row.next_attempt_at = next_attempt_at

    # --- health -------------------------------------------------------------------------------

    def ping(self) -> None:
        with self.db.read() as s:
            s.execute(text("SELECT 1"))

    def count_versions(self) -> int:
        with self.db.read() as s:
            return int(s.scalar(select(func.count()).select_from(ModelVersion)) or 0)
