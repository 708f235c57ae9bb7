"""Resolving model references through the registry's REST API (the typed client, off the loop).

A version or alias becomes a :class:`ServedVersion`: the artifact's download URL and digest, and
the runtime configuration written from the version's signature. A direct ``storageUri`` carries
its signature in the spec (a TorchScript file does not record its tensors' names and shapes), as
an InferenceService's storage URI does with its model configuration; the registry is not asked.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import quote

import httpx

from modelplane.api.labels import Role
from modelplane.api.v1alpha1 import ModelSource
from modelplane.registry_client.client import RegistryClient, RegistryClientError
from modelplane.registry_client.schemas import VersionPublic
from modelplane.resolution.modelconfig import SignatureError, Tensor, model_config
from modelplane.resolution.resolver import ResolutionError, Resolved, ServedVersion, ServingOptions


def model_filename(uploaded: str) -> str | None:
    """What the runtime must call the artifact uploaded as ``uploaded``: ``model.pt2`` for a
    torch.export program; None for the runtime's default, TorchScript ``model.pt``."""
    return "model.pt2" if uploaded.lower().endswith(".pt2") else None


@dataclass(frozen=True)
class RegistryResolver:
    """Resolves against one registry; ``artifact_base_url`` is how pods reach it (may differ from
    ``base_url`` when the operator runs outside the cluster)."""

    base_url: str
    token: str | None
    artifact_base_url: str | None = None
    timeout_s: float = 10.0

    async def resolve(self, name: str, source: ModelSource, role: Role, options: ServingOptions) -> Resolved:
        return await asyncio.to_thread(self._resolve, name, source, role, options)

    def _resolve(self, name: str, source: ModelSource, role: Role, options: ServingOptions) -> Resolved:
        if source.storage_uri is not None:
            return self._direct(name, source, role, options)
        version = self._fetch(name, source)
        if version.status != "READY" or version.artifact is None:
            raise ResolutionError(
                "VersionNotReady",
                f"model {name!r} version {version.version} is {version.status} (no verified artifact yet)",
                temporary=version.status == "PENDING",
            )
        digest = version.artifact.digest.removeprefix("sha256:")
        base = (self.artifact_base_url or self.base_url).rstrip("/")
        version_url = f"{base}/api/v1/models/{quote(name, safe='')}/versions/{version.version}"
        if version.format == "hf-causal-lm":
            return self._generative(name, version, role, source, version_url, digest)
        artifact_uri = f"{version_url}/artifact"
        signature = version.signature
        inputs = [Tensor(t.name, t.datatype, tuple(t.shape)) for t in (signature.inputs if signature else [])]
        outputs = [
            Tensor(t.name, t.datatype, tuple(t.shape)) for t in (signature.outputs if signature else [])
        ]
        try:
            config = model_config(
                name,
                inputs,
                outputs,
                max_batch_size=options.max_batch_size,
                max_latency_ms=options.max_latency_ms,
                gpus=options.gpus,
                artifact_uri=artifact_uri,
                sha256=digest,
                version=version.version,
                model_filename=model_filename(version.artifact.filename),
            )
        except SignatureError as exc:
            raise ResolutionError("SignatureInvalid", str(exc), temporary=False) from exc
        served = ServedVersion(role, name, version.version, artifact_uri, digest, config)
        via = f" (alias {source.alias})" if source.alias else ""
        return Resolved(
            served=served, description=f"{name} version {version.version}{via}, sha256:{digest[:12]}"
        )

    @staticmethod
    def _generative(
        name: str, version: VersionPublic, role: Role, source: ModelSource, version_url: str, digest: str
    ) -> Resolved:
        """A causal language model: its directory, named by the digest of its file list."""
        assert version.artifact is not None
        if version.artifact.kind != "directory":
            raise ResolutionError(
                "ArtifactNotDirectory",
                f"model {name!r} version {version.version} is a causal language model (format "
                "hf-causal-lm) but its artifact is one file: upload the model's directory "
                "(config.json, *.safetensors, tokenizer files) as the version's artifact",
                temporary=False,
            )
        served = ServedVersion(role, name, version.version, f"{version_url}/files", digest, "", "generative")
        via = f" (alias {source.alias})" if source.alias else ""
        return Resolved(
            served=served,
            description=f"{name} version {version.version}{via}, a causal language model of "
            f"{version.artifact.files} files, sha256:{digest[:12]}",
        )

    def _direct(self, name: str, source: ModelSource, role: Role, options: ServingOptions) -> Resolved:
        """A ``storageUri`` with the signature the spec carries: no registry call at all."""
        assert source.storage_uri is not None
        if source.signature is None:
            raise ResolutionError(
                "SignatureUnknown",
                f"storageUri {source.storage_uri} needs a tensor signature: set `signature` "
                "(inputs and outputs) beside it, or register the model and refer to its version",
                temporary=False,
            )
        try:
            config = model_config(
                name,
                [Tensor(t.name, t.datatype, tuple(t.shape)) for t in source.signature.inputs],
                [Tensor(t.name, t.datatype, tuple(t.shape)) for t in source.signature.outputs],
                max_batch_size=options.max_batch_size,
                max_latency_ms=options.max_latency_ms,
                gpus=options.gpus,
                artifact_uri=source.storage_uri,
                sha256=source.sha256,
                version=1,
            )
        except SignatureError as exc:
            raise ResolutionError("SignatureInvalid", str(exc), temporary=False) from exc
        served = ServedVersion(role, name, None, source.storage_uri, source.sha256, config)
        checked = f", sha256:{source.sha256[:12]}" if source.sha256 else " (no sha256 given: not verified)"
        return Resolved(served=served, description=f"{name} from {source.storage_uri}{checked}")

    def _fetch(self, name: str, source: ModelSource) -> VersionPublic:
        try:
            with RegistryClient(self.base_url, token=self.token, timeout=self.timeout_s) as client:
                return client.resolve(name, version=source.version, alias=source.alias)
        except RegistryClientError as exc:
            if exc.status == 404:
                what = f"alias {source.alias!r}" if source.alias else f"version {source.version}"
                raise ResolutionError(
                    "AliasNotFound" if source.alias else "ModelNotFound",
                    f"model {name!r} {what} is not in the registry: {exc.detail}",
                    temporary=False,
                ) from exc
            if exc.status in (401, 403):
                raise ResolutionError(
                    "RegistryUnauthorized",
                    f"the registry refused the operator's token ({exc.status}): "
                    "give it a token with the read scope",
                    temporary=True,
                ) from exc
            raise ResolutionError("RegistryError", str(exc), temporary=True) from exc
        except httpx.HTTPError as exc:
            raise ResolutionError(
                "RegistryUnavailable",
                f"the registry at {self.base_url} is unreachable: {exc}",
                temporary=True,
            ) from exc
