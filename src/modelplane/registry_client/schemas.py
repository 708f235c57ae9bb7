"""Request and response bodies: separate Create / Update / Public models per resource.

Create and Update models forbid unknown fields (a typo such as ``descripton`` is a 422, not a silent
no-op); every string is checked for NUL bytes and unpaired surrogates, which no database stores.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from modelplane.registry_client import validation
from modelplane.registry_client.manifest import FileEntry as FileEntry  # re-exported here

VersionStatus = Literal["PENDING", "READY", "FAILED"]
Scope = Literal["read", "write", "admin"]
EventName = Literal["version.created", "version.ready", "alias.moved"]
ArtifactFormat = Literal["torchscript", "torch-export", "state-dict", "hf-causal-lm"]
ArtifactKind = Literal["file", "directory"]
Datatype = Literal[
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BF16", "BYTES",
]  # fmt: skip


def _clean_text(value: str) -> str:
    if "\x00" in value:
        raise ValueError("text must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("text must be valid Unicode (no unpaired surrogates)") from exc
    return value


Text = Annotated[str, AfterValidator(_clean_text)]
ShortText = Annotated[str, Field(max_length=256), AfterValidator(_clean_text)]
LongText = Annotated[str, Field(max_length=10_000), AfterValidator(_clean_text)]
TagValue = Annotated[str, Field(max_length=1024), AfterValidator(_clean_text)]
ModelName = Annotated[str, Field(min_length=1, max_length=128), AfterValidator(validation.check_model_name)]
AliasName = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(validation.check_alias)]
TagKey = Annotated[str, Field(min_length=1, max_length=128), AfterValidator(validation.check_tag_key)]
Source = Annotated[
    str, Field(min_length=1, max_length=validation.MAX_SOURCE_LENGTH), AfterValidator(validation.check_source)
]
Task = Annotated[
    str,
    Field(min_length=1, max_length=64, pattern=validation.TASK_PATTERN),
    AfterValidator(validation.check_task),
]
Tags = Annotated[dict[TagKey, TagValue], Field(max_length=100)]
Metric = Annotated[float, Field(allow_inf_nan=False)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- errors -------------------------------------------------------------------------------------


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="Where the error is: ['body', 'name'], ['query', 'limit'], ...")
    msg: str
    type: str


class Problem(BaseModel):
    """RFC 9457 problem details; ``type`` is a stable URI a client can switch on."""

    type: str = Field(description="Stable URI naming the kind of problem")
    title: str
    status: int
    detail: str = ""
    instance: str | None = None
    errors: list[FieldError] | None = Field(default=None, description="Field-level detail (validation)")


# --- models -------------------------------------------------------------------------------------


class ModelCreate(Strict):
    name: ModelName = Field(description=f"Pattern: {validation.MODEL_NAME_PATTERN}, no '..'")
    description: LongText = ""
    tags: Tags = Field(default_factory=dict)


class ModelUpdate(Strict):
    description: LongText | None = None


class ModelPublic(BaseModel):
    name: str
    description: str
    tags: dict[str, str]
    created_by: str
    created_at: dt.datetime
    updated_at: dt.datetime
    latest_version: int = Field(description="Highest version number handed out so far (0: none)")
    aliases: dict[str, int] = Field(description="Alias name → version number")


# --- versions -----------------------------------------------------------------------------------


class TensorSpec(Strict):
    name: Annotated[str, Field(min_length=1, max_length=128), AfterValidator(_clean_text)]
    datatype: Datatype
    shape: Annotated[list[Annotated[int, Field(ge=-1, le=2**31)]], Field(max_length=16)] = Field(
        description="-1 marks a dynamic dimension"
    )


class Signature(Strict):
    inputs: Annotated[list[TensorSpec], Field(max_length=64)] = Field(default_factory=list)
    outputs: Annotated[list[TensorSpec], Field(max_length=64)] = Field(default_factory=list)


class VersionCreate(Strict):
    description: LongText = ""
    author: ShortText | None = Field(default=None, description="Defaults to the token's name")
    source: Source | None = Field(
        default=None, description="Where the model came from: s3://, gs://, https://, runs:/, models:/ ..."
    )
    run_id: ShortText | None = None
    framework: Annotated[str, Field(max_length=64), AfterValidator(_clean_text)] | None = None
    signature: Signature | None = None
    metrics: Annotated[dict[TagKey, Metric], Field(max_length=1000)] = Field(default_factory=dict)
    params: Annotated[dict[TagKey, TagValue], Field(max_length=1000)] = Field(default_factory=dict)
    tags: Tags = Field(default_factory=dict)
    task: Task | None = Field(
        default=None, description="Hugging Face pipeline task, such as 'text-generation' (a-z, 0-9, '-')"
    )
    format: ArtifactFormat | None = Field(
        default=None,
        description="What the artifact is: torchscript (.pt), torch-export (.pt2), state-dict (.pth) or "
        "hf-causal-lm (a Hugging Face causal language model directory); never guessed by the registry",
    )


class VersionUpdate(Strict):
    description: LongText | None = None
    status: Literal["READY", "FAILED"] | None = Field(
        default=None, description="PENDING → FAILED, or PENDING → READY for a version with a source"
    )
    status_message: LongText | None = None
    metrics: Annotated[dict[TagKey, Metric], Field(max_length=1000)] | None = None


class ArtifactInfo(BaseModel):
    digest: str = Field(description="sha256:<64 hex>; for a directory, the sha256 of its canonical manifest")
    size: int = Field(description="bytes; for a directory, of all its files")
    filename: str = Field(description="download name; for a directory, the name given at commit or ''")
    kind: ArtifactKind = "file"
    files: int = Field(default=1, description="how many files (1 for a single file)")


class VersionPublic(BaseModel):
    model: str
    version: int
    description: str
    author: str
    source: str | None
    run_id: str | None
    framework: str | None
    task: str | None = None
    format: ArtifactFormat | None = None
    signature: Signature | None
    metrics: dict[str, float]
    params: dict[str, str]
    tags: dict[str, str]
    status: VersionStatus
    status_message: str
    artifact: ArtifactInfo | None
    aliases: list[str]
    created_at: dt.datetime
    updated_at: dt.datetime


class FileList(BaseModel):
    """The files of a version's directory artifact, sorted by path (staged ones before the commit)."""

    files: list[FileEntry]
    digest: str | None = Field(description="The manifest digest 'sha256:<hex>', once committed; else null")
    committed: bool


class FilesCommit(Strict):
    """The complete list of a directory artifact's files: the registry checks it against what is stored."""

    files: list[FileEntry] = Field(description="Every file, exactly as uploaded (at most 10,000)")
    name: (
        Annotated[str, Field(min_length=1, max_length=255), AfterValidator(validation.check_filename)] | None
    ) = Field(default=None, description="The directory's name, shown as the artifact's filename")


# --- tags, aliases, deployments -----------------------------------------------------------------


class TagSet(Strict):
    value: TagValue


class AliasSet(Strict):
    version: int = Field(ge=1, le=2**31 - 1)


class AliasPublic(BaseModel):
    model: str
    alias: str
    version: int
    updated_by: str
    updated_at: dt.datetime


class AliasEventPublic(BaseModel):
    alias: str
    from_version: int | None
    to_version: int | None
    actor: str
    at: dt.datetime


class DeploymentPublic(BaseModel):
    model: str
    version: int
    namespace: str
    deployment: str
    reported_by: str
    reported_at: dt.datetime


# --- tokens, audit, webhooks --------------------------------------------------------------------


class TokenCreate(Strict):
    name: ModelName
    scopes: Annotated[list[Scope], Field(min_length=1, max_length=3)]
    name_prefixes: Annotated[
        list[Annotated[str, Field(max_length=128), AfterValidator(_clean_text)]], Field(max_length=32)
    ] = Field(default_factory=list, description="Model-name prefixes the token is limited to (empty: all)")


class TokenPublic(BaseModel):
    id: int
    name: str
    scopes: list[Scope]
    name_prefixes: list[str]
    created_by: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None


class TokenCreated(TokenPublic):
    token: str = Field(description="The secret; shown only in this response")


class AuditPublic(BaseModel):
    id: int
    at: dt.datetime
    actor: str
    action: str
    object_type: str
    object_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class WebhookCreate(Strict):
    url: Annotated[str, Field(min_length=1, max_length=2048), AfterValidator(_clean_text)]
    events: Annotated[list[EventName], Field(min_length=1, max_length=3)]
    secret: Annotated[str, Field(min_length=16, max_length=128), AfterValidator(_clean_text)] | None = Field(
        default=None, description="HMAC key; generated when omitted"
    )


class WebhookPublic(BaseModel):
    id: int
    url: str
    events: list[EventName]
    active: bool
    created_by: str
    created_at: dt.datetime


class WebhookCreated(WebhookPublic):
    secret: str = Field(description="HMAC-SHA256 key for X-Modelplane-Signature; shown only here")


class DeliveryPublic(BaseModel):
    id: int
    event: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    last_status_code: int | None
    last_error: str
    created_at: dt.datetime
    delivered_at: dt.datetime | None
    payload: dict[str, Any]


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last")


class Health(BaseModel):
    status: str
