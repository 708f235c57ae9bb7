"""Resolve a ModelDeployment's model reference into the artifacts to serve.

The registry says which version an alias points at, where its artifact is, its digest and its
tensor signature (from which the runtime's model configuration is written). A direct
``storageUri`` skips the registry. Failures are classified: a registry that cannot be reached is
temporary (retry with back-off), an unknown model or alias is permanent (report and wait for a
spec change).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from modelplane.api.labels import Role
from modelplane.api.v1alpha1 import ModelDeploymentSpec, ModelSource, ModelSpec

ServedKind = Literal["tensor", "generative"]


@dataclass(frozen=True)
class ServedVersion:
    """One resolved version to run: where its artifact is and what it is.

    A ``tensor`` model is one file served by the V2 runtime with ``config_pbtxt``; a ``generative``
    one is a Hugging Face model directory (``artifact_uri`` lists its files, ``sha256`` is the
    digest of that list) served by the generative engine, with no tensor configuration.
    """

    role: Role
    model_name: str
    version: int | None  # None for a direct storageUri
    artifact_uri: str
    sha256: str | None
    config_pbtxt: str  # Triton model configuration the runtime serves it with ("" for generative)
    kind: ServedKind = "tensor"


class ResolutionError(Exception):
    """The reference cannot be resolved now; ``temporary`` says whether retrying may help."""

    def __init__(self, reason: str, message: str, *, temporary: bool) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.temporary = temporary


@dataclass(frozen=True)
class Resolved:
    """A resolved model reference, ready to render."""

    served: ServedVersion
    description: str  # for the ModelResolved condition, e.g. "iris version 3 (alias production)"


@dataclass(frozen=True)
class ServingOptions:
    """What of the spec shapes the runtime configuration."""

    max_batch_size: int
    max_latency_ms: float
    gpus: int

    @classmethod
    def from_spec(cls, spec: ModelDeploymentSpec) -> ServingOptions:
        return cls(spec.batching.max_batch_size, spec.batching.max_latency_ms, spec.resources.gpu.count)


class Resolver(Protocol):
    """Turns (model name, source) into what to serve; implemented against the registry."""

    async def resolve(
        self, name: str, source: ModelSource, role: Role, options: ServingOptions
    ) -> Resolved: ...


def spec_sources(model: ModelSpec) -> ModelSource:
    """The stable version's source, as a plain ModelSource."""
    return ModelSource(
        version=model.version,
        alias=model.alias,
        storage_uri=model.storage_uri,
        sha256=model.sha256,
        signature=model.signature,
    )
