"""What the router does with the parts of Triton's protocol that it does not simply route (pure).

- **Shared memory** (``/v2/systemsharedmemory/...``, ``/v2/cudasharedmemory/...``, gRPC
  ``SystemSharedMemory*`` / ``CudaSharedMemory*``): answered by the router itself with the
  protocol's error (HTTP 400 ``{"error": ...}``, gRPC ``INVALID_ARGUMENT``). A region lives in the
  memory of the client's host; the pods the router forwards to run elsewhere. An inference request
  that names a region (``shared_memory_region`` in an input's or output's parameters) gets the same
  refusal and is never forwarded: on a pod, the name could only reach some other client's region.
- **Repository control** (``POST /v2/repository/models/NAME/load|unload``, gRPC
  ``RepositoryModelLoad``/``Unload``): refused the same way. What runs is owned by the
  ModelDeployment (or the routes file), which the operator reconciles; a load or unload sent
  through the router would make one pod differ from its Deployment until it restarts.
- **Statistics of every model** (``GET /v2/models/stats``, ``ModelStatistics`` without a name):
  refused; a model's statistics (``/v2/models/NAME/stats``) are summed over its pods
  (:mod:`.statistics`).
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

#: Triton's names of the extensions the router serves (``GET /v2``, gRPC ``ServerMetadata``).
ROUTER_EXTENSIONS = ["binary_tensor_data", "model_configuration", "model_repository", "statistics"]

SHARED_MEMORY_KEY = "shared_memory_region"

SHARED_MEMORY_REFUSED = (
    "shared memory is not available through the router: a shared-memory region lives on the "
    "client's host and the router forwards to runtime pods on other hosts; register and use regions "
    "directly against a runtime pod on the same host, or send the tensors in the request"
)
REPOSITORY_CONTROL_REFUSED = (
    "model {action} is refused by the router: the models it serves are managed by their "
    "ModelDeployment (or the router's routes file), not by repository load/unload calls; "
    "change the ModelDeployment instead"
)
ALL_MODELS_STATISTICS_REFUSED = (
    "the router gives statistics per model: name one, GET /v2/models/NAME/stats "
    "(gRPC: ModelStatistics with a name); they are summed over every pod of the model"
)

_NAMESPACE_PREFIX = re.compile(r"^/ns/[^/]+(?=/v2/)")
_REPOSITORY_CONTROL = re.compile(r"^/v2/repository/models/[^/]+/(load|unload)$")


def local_refusal(path: str) -> str | None:
    """The refusal for a V2 path the router answers itself with a 400, or None.

    Shared-memory management (any path under ``/v2/systemsharedmemory`` or
    ``/v2/cudasharedmemory``) and repository load/unload, with or without a ``/ns/NAMESPACE`` prefix.
    """
    path = _NAMESPACE_PREFIX.sub("", path, count=1)
    if path.startswith(("/v2/systemsharedmemory", "/v2/cudasharedmemory")):
        return SHARED_MEMORY_REFUSED
    match = _REPOSITORY_CONTROL.match(path)
    if match is not None:
        return REPOSITORY_CONTROL_REFUSED.format(action=match.group(1))
    return None


def infer_shared_memory_refusal(
    body: bytes, headers: Iterable[tuple[bytes, bytes]], max_body_bytes: int
) -> str | None:
    """The refusal for an HTTP inference request that names a shared-memory region, or None.

    Looks at the JSON of the request (all of a JSON body; the header part of a binary-tensor body,
    ``Inference-Header-Content-Length`` bytes), inflating a gzip or deflate body first (at most
    ``max_body_bytes``). A body that cannot be read is not refused here: it is the runtime's to
    answer (400), and it names no region the runtime could use either.
    """
    header_length: int | None = None
    encoding = b""
    for name, value in headers:
        if name == b"inference-header-content-length":
            try:
                header_length = int(value)
            except ValueError:
                return None
        elif name == b"content-encoding":
            encoding = value.strip().lower()
    limit = max_body_bytes if header_length is None else min(max_body_bytes, header_length)
    if encoding in (b"gzip", b"deflate"):
        try:
            body = zlib.decompressobj(wbits=31 if encoding == b"gzip" else 15).decompress(body, limit)
        except zlib.error:
            return None
    elif encoding not in (b"", b"identity"):
        return None
    try:
        request = json.loads(body[:limit])
    except ValueError:  # JSON and UTF-8 errors alike
        return None
    if not isinstance(request, Mapping):
        return None
    for kind in ("inputs", "outputs"):
        tensors = request.get(kind)
        if not isinstance(tensors, list):
            continue
        for tensor in tensors:
            parameters = tensor.get("parameters") if isinstance(tensor, Mapping) else None
            if isinstance(parameters, Mapping) and SHARED_MEMORY_KEY in parameters:
                return _tensor_refusal(kind[:-1], tensor.get("name"))
    return None


class _Tensor(Protocol):
    """An input or requested output of a gRPC ``ModelInferRequest``."""

    @property
    def name(self) -> str: ...

    @property
    def parameters(self) -> Any: ...


def grpc_shared_memory_refusal(inputs: Iterable[_Tensor], outputs: Iterable[_Tensor]) -> str | None:
    """The refusal for a gRPC ``ModelInferRequest`` whose inputs or outputs name a region, or None."""
    for kind, tensors in (("input", inputs), ("output", outputs)):
        for tensor in tensors:
            if SHARED_MEMORY_KEY in tensor.parameters:
                return _tensor_refusal(kind, tensor.name)
    return None


def _tensor_refusal(kind: str, name: object) -> str:
    named = f" {name!r}" if isinstance(name, str) else ""
    return f"{kind}{named} names a shared-memory region ({SHARED_MEMORY_KEY}): {SHARED_MEMORY_REFUSED}"
