"""The V2 gRPC front end: ``inference.GRPCInferenceService`` on ``grpc.aio``, as tritonclient.grpc expects.

Tensors arrive in ``raw_input_contents`` (what tritonclient sends; one entry per input not in shared
memory) or in the typed ``contents`` fields; outputs go back in ``raw_output_contents`` (an empty
entry for an output written to shared memory, so the entries stay aligned with the outputs).
Errors use the gRPC code matching the HTTP status the HTTP front end would send.
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
    Tensor,
    array_from_bytes,
    array_from_json,
    check_shape,
    shared_input,
    shared_output,
)
from modelplane.serving.runtime.datatypes import NUMPY_DTYPES
from modelplane.serving.runtime.errors import InferenceError, bad_request
from modelplane.serving.runtime.http_app import EXTENSIONS
from modelplane.serving.runtime.inference import infer, model_metadata
from modelplane.serving.runtime.lifecycle import Lifecycle
from modelplane.serving.runtime.metrics import RuntimeMetrics
from modelplane.serving.runtime.models import ModelManager, ServedModel
from modelplane.serving.runtime.shared_memory import (
    BYTE_SIZE,
    CUDA_UNAVAILABLE,
    OFFSET,
    REGION,
    SharedMemoryRegistry,
    tensor_place,
)
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


def shared_memory_params(params: Any) -> dict[str, Any]:
    """The shared memory entries of a tensor's ``InferParameter`` map, as plain values."""
    found: dict[str, Any] = {}
    for key in (REGION, BYTE_SIZE, OFFSET):
        if key in params:
            choice = params[key].WhichOneof("parameter_choice")
            found[key] = None if choice is None else getattr(params[key], choice)
    return found


def decode_grpc_request(request: Any, shared_memory: SharedMemoryRegistry | None = None) -> InferRequest:
    """ModelInferRequest -> :class:`InferRequest`, with the same checks as the HTTP codec."""
    if not request.inputs:
        raise bad_request("request must have at least one input")
    places = [tensor_place(f"input {t.name!r}", shared_memory_params(t.parameters)) for t in request.inputs]
    raw = request.raw_input_contents
    in_messages = sum(place is None for place in places)
    if raw and len(raw) != in_messages:
        raise bad_request(
            f"raw_input_contents has {len(raw)} entries for {in_messages} inputs not in shared memory; "
            "send one per input"
        )
    inputs: list[Tensor] = []
    next_raw = 0
    for tensor, place in zip(request.inputs, places, strict=True):
        name, datatype = tensor.name, tensor.datatype
        if datatype not in NUMPY_DTYPES:
            raise bad_request(
                f"input {name!r}: datatype {datatype!r} is not supported; use one of {SUPPORTED}"
            )
        shape, count = check_shape(name, list(tensor.shape))
        if place is not None:
            if tensor.HasField("contents"):
                raise bad_request(f"input {name!r}: its data is in shared memory; it must not have contents")
            array = shared_input(shared_memory, name, place, datatype, shape)
        elif raw:
            array = array_from_bytes(name, datatype, shape, count, raw[next_raw])
            next_raw += 1
        else:
            field = _CONTENT_FIELDS.get(datatype)
            if field is None:
                raise bad_request(f"input {name!r}: {datatype} must be sent in raw_input_contents")
            values = list(getattr(tensor.contents, field))
            array = array_from_json(name, datatype, shape, count, values)
        inputs.append(Tensor(name, datatype, shape, array))
    outputs = [
        shared_output(shared_memory, o.name, True, shared_memory_params(o.parameters))
        for o in request.outputs
    ] or None
    return InferRequest(request.id, inputs, outputs, True)


class InferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    def __init__(
        self,
        manager: ModelManager,
        metrics: RuntimeMetrics,
        lifecycle: Lifecycle,
        shared_memory: SharedMemoryRegistry | None = None,
    ) -> None:
        self.manager = manager
        self.metrics = metrics
        self.lifecycle = lifecycle
        self.shared_memory = shared_memory if shared_memory is not None else SharedMemoryRegistry()

    async def _abort(self, context: Any, exc: InferenceError) -> None:
        await context.abort(STATUS_TO_CODE.get(exc.status, grpc.StatusCode.UNKNOWN), exc.message)

    async def ServerLive(self, request: Any, context: Any) -> Any:  # noqa: N802 (names fixed by the proto)
        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        return service_pb2.ServerReadyResponse(ready=self.lifecycle.accepting and self.manager.ready())

    async def ModelReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        # An unknown or unloaded model is not ready (as Triton answers), not an error:
        # tritonclient.grpc's is_model_ready then returns False instead of raising.
        try:
            model = self.manager.resolve(request.name, request.version or None)
        except InferenceError:
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
            decoded = decode_grpc_request(request, self.shared_memory)
            input_ns = time.perf_counter_ns() - decoding
            outputs = await infer(model, decoded, self.shared_memory)
            encoding = time.perf_counter_ns()
            response = service_pb2.ModelInferResponse(
                model_name=name, model_version=str(model.version), id=request.id
            )
            shared = decoded.shared_outputs()
            for out_name, datatype, array, _binary in outputs:
                response.outputs.add(name=out_name, datatype=datatype, shape=array.shape)
                data = b"" if out_name in shared else np.ascontiguousarray(array).tobytes()
                response.raw_output_contents.append(data)
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

    async def SystemSharedMemoryStatus(self, request: Any, context: Any) -> Any:  # noqa: N802
        try:
            regions = self.shared_memory.status(request.name)
        except InferenceError as exc:
            await self._abort(context, exc)
            raise
        response = service_pb2.SystemSharedMemoryStatusResponse()
        for region in regions:
            response.regions[region.name].CopyFrom(
                service_pb2.SystemSharedMemoryStatusResponse.RegionStatus(
                    name=region.name, key=region.key, offset=region.offset, byte_size=region.byte_size
                )
            )
        return response

    async def SystemSharedMemoryRegister(self, request: Any, context: Any) -> Any:  # noqa: N802
        try:
            self.shared_memory.register(request.name, request.key, request.offset, request.byte_size)
        except InferenceError as exc:
            await self._abort(context, exc)
            raise
        return service_pb2.SystemSharedMemoryRegisterResponse()

    async def SystemSharedMemoryUnregister(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.shared_memory.unregister(request.name)
        return service_pb2.SystemSharedMemoryUnregisterResponse()

    async def _no_cuda(self, context: Any) -> Any:
        await self._abort(context, bad_request(CUDA_UNAVAILABLE))

    async def CudaSharedMemoryStatus(self, request: Any, context: Any) -> Any:  # noqa: N802
        return await self._no_cuda(context)

    async def CudaSharedMemoryRegister(self, request: Any, context: Any) -> Any:  # noqa: N802
        return await self._no_cuda(context)

    async def CudaSharedMemoryUnregister(self, request: Any, context: Any) -> Any:  # noqa: N802
        return await self._no_cuda(context)

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
