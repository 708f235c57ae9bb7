"""The V2 gRPC front end: ``inference.GRPCInferenceService`` on ``grpc.aio``, as tritonclient.grpc expects.

Tensors arrive in ``raw_input_contents`` (what tritonclient sends) or in the typed ``contents``
fields; outputs always go back in ``raw_output_contents``. Errors use the gRPC code matching the
HTTP status the HTTP front end would send.
"""

from __future__ import annotations

import time
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

from modelplane import __version__
from modelplane.serving.runtime.codec import (
    SUPPORTED,
    InferRequest,
    RequestedOutput,
    Tensor,
    array_from_bytes,
    array_from_json,
    check_shape,
)
from modelplane.serving.runtime.datatypes import NUMPY_DTYPES
from modelplane.serving.runtime.errors import InferenceError, bad_request
from modelplane.serving.runtime.http_app import EXTENSIONS
from modelplane.serving.runtime.inference import infer, model_metadata
from modelplane.serving.runtime.lifecycle import Lifecycle
from modelplane.serving.runtime.metrics import RuntimeMetrics
from modelplane.serving.runtime.models import ModelManager, ServedModel
from modelplane.serving.runtime.statistics import model_statistics_proto

STATUS_TO_CODE = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
}

#: Which typed ``InferTensorContents`` field carries each datatype (FP16/BF16 travel raw only).
_CONTENT_FIELDS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


def decode_grpc_request(request: Any) -> InferRequest:
    """ModelInferRequest -> :class:`InferRequest`, with the same checks as the HTTP codec."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise bad_request(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs; send one per input"
        )
    if not request.inputs:
        raise bad_request("request must have at least one input")
    inputs: list[Tensor] = []
    for i, tensor in enumerate(request.inputs):
        name, datatype = tensor.name, tensor.datatype
        if datatype not in NUMPY_DTYPES:
            raise bad_request(
                f"input {name!r}: datatype {datatype!r} is not supported; use one of {SUPPORTED}"
            )
        shape, count = check_shape(name, list(tensor.shape))
        if raw:
            array = array_from_bytes(name, datatype, shape, count, raw[i])
        else:
            field = _CONTENT_FIELDS.get(datatype)
            if field is None:
                raise bad_request(f"input {name!r}: {datatype} must be sent in raw_input_contents")
            values = list(getattr(tensor.contents, field))
            array = array_from_json(name, datatype, shape, count, values)
        inputs.append(Tensor(name, datatype, shape, array))
    outputs = [RequestedOutput(o.name, True) for o in request.outputs] or None
    return InferRequest(request.id, inputs, outputs, True)


class InferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    def __init__(self, manager: ModelManager, metrics: RuntimeMetrics, lifecycle: Lifecycle) -> None:
        self.manager = manager
        self.metrics = metrics
        self.lifecycle = lifecycle

    async def _abort(self, context: Any, exc: InferenceError) -> None:
        await context.abort(STATUS_TO_CODE.get(exc.status, grpc.StatusCode.UNKNOWN), exc.message)

    async def ServerLive(self, request: Any, context: Any) -> Any:  # noqa: N802 (names fixed by the proto)
        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        return service_pb2.ServerReadyResponse(ready=self.lifecycle.accepting and self.manager.ready())

    async def ModelReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        try:
            model = self.manager.resolve(request.name, request.version or None)
        except InferenceError as exc:
            if exc.status == 404:
                await self._abort(context, exc)
            return service_pb2.ModelReadyResponse(ready=False)
        return service_pb2.ModelReadyResponse(ready=model.state == "READY" and self.lifecycle.accepting)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        return service_pb2.ServerMetadataResponse(
            name="modelplane", version=__version__, extensions=EXTENSIONS
        )

    async def ModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        try:
            model = self.manager.resolve(request.name, request.version or None)
        except InferenceError as exc:
            await self._abort(context, exc)
            raise
        doc = model_metadata(model, self.manager.versions_of(request.name))
        tensor = service_pb2.ModelMetadataResponse.TensorMetadata
        return service_pb2.ModelMetadataResponse(
            name=doc["name"],
            versions=doc["versions"],
            platform=doc["platform"],
            inputs=[tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in doc["inputs"]],
            outputs=[
                tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in doc["outputs"]
            ],
        )

    async def ModelConfig(self, request: Any, context: Any) -> Any:  # noqa: N802
        try:
            model = self.manager.resolve(request.name, request.version or None)
        except InferenceError as exc:
            await self._abort(context, exc)
            raise
        return service_pb2.ModelConfigResponse(config=model.spec.config)

    async def ModelInfer(self, request: Any, context: Any) -> Any:  # noqa: N802
        name = request.model_name
        started = time.perf_counter()
        try:
            self.lifecycle.begin()
        except InferenceError as exc:
            self.metrics.request_refused(name, "grpc", "503")
            await self._abort(context, exc)
            raise
        self.metrics.request_started(name)
        code = "500"
        model: ServedModel | None = None
        try:
            model = self.manager.resolve(name, request.model_version or None)
            decoding = time.perf_counter_ns()
            decoded = decode_grpc_request(request)
            input_ns = time.perf_counter_ns() - decoding
            outputs = await infer(model, decoded)
            encoding = time.perf_counter_ns()
            response = service_pb2.ModelInferResponse(
                model_name=name, model_version=str(model.version), id=request.id
            )
            for out_name, datatype, array, _binary in outputs:
                response.outputs.add(name=out_name, datatype=datatype, shape=array.shape)
                response.raw_output_contents.append(np.ascontiguousarray(array).tobytes())
            model.stats.request_succeeded(
                int((time.perf_counter() - started) * 1e9), input_ns, time.perf_counter_ns() - encoding
            )
            code = "200"
            return response
        except InferenceError as exc:
            code = str(exc.status)
            if model is not None:
                model.stats.request_failed(int((time.perf_counter() - started) * 1e9))
            await self._abort(context, exc)
            raise
        finally:
            self.metrics.request_finished(name, "grpc", code, time.perf_counter() - started)
            self.lifecycle.end()

    async def ModelStatistics(self, request: Any, context: Any) -> Any:  # noqa: N802
        try:
            entries = self.manager.statistics(request.name, request.version or None)
        except InferenceError as exc:
            await self._abort(context, exc)
            raise
        return model_statistics_proto(entries)

    async def RepositoryIndex(self, request: Any, context: Any) -> Any:  # noqa: N802
        response = service_pb2.RepositoryIndexResponse()
        for row in self.manager.index():
            response.models.add(
                name=row["name"],
                version=row.get("version", ""),
                state=row["state"],
                reason=row.get("reason", ""),
            )
        return response

    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:  # noqa: N802
        try:
            await self.manager.load(request.model_name)
        except InferenceError as exc:
            await self._abort(context, exc)
        return service_pb2.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:  # noqa: N802
        try:
            await self.manager.unload(request.model_name)
        except InferenceError as exc:
            await self._abort(context, exc)
        return service_pb2.RepositoryModelUnloadResponse()


def create_server(servicer: InferenceServicer, address: str, max_message_bytes: int) -> tuple[Any, int]:
    """A grpc.aio server with the servicer on ``address``; returns it and the bound port."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 0),
        ]
    )
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port(address)
    return server, port
