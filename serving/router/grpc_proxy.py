"""The router's V2 gRPC front end: ``inference.GRPCInferenceService`` calls routed by ``model_name``.

Requests and responses are passed through as raw bytes: the router decodes only what it needs to
route (the model's name and version) and re-encodes nothing, so ``raw_input_contents`` is never
copied into Python objects twice. Health, server metadata and the repository index are answered
locally; ``ModelStatistics`` for a model is summed over its pods (:mod:`.statistics_fanout`); the
shared-memory and repository load/unload calls are refused with ``INVALID_ARGUMENT`` and so is an
inference that names a shared-memory region (:mod:`.extensions`); ``ModelStreamInfer`` is
``UNIMPLEMENTED``, as on the runtime (other calls the router does not know: gRPC's own
``UNIMPLEMENTED``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import json_format
from tritonclient.grpc import service_pb2

from modelplane import __version__
from modelplane.serving.router.balancing import Endpoint
from modelplane.serving.router.dispatch import BackendUnavailableError, Dispatcher, RequestError
from modelplane.serving.router.extensions import (
    ALL_MODELS_STATISTICS_REFUSED,
    REPOSITORY_CONTROL_REFUSED,
    ROUTER_EXTENSIONS,
    SHARED_MEMORY_REFUSED,
    grpc_shared_memory_refusal,
)
from modelplane.serving.router.routes import ModelRoute
from modelplane.serving.router.statistics_fanout import StatisticsFanOut
from modelplane.serving.router.upstream import UpstreamPool

SERVICE = "inference.GRPCInferenceService"
NAMESPACE_METADATA = "x-modelplane-namespace"
STICKY_METADATA = "x-modelplane-session"

# Routed method → request message type (to read model name and version from). ModelInferRequest
# names them ``model_name``/``model_version``; the other requests ``name``/``version``.
ROUTED: dict[str, Any] = {
    "ModelInfer": service_pb2.ModelInferRequest,
    "ModelMetadata": service_pb2.ModelMetadataRequest,
    "ModelReady": service_pb2.ModelReadyRequest,
    "ModelConfig": service_pb2.ModelConfigRequest,
}
# Calls the router refuses itself (INVALID_ARGUMENT), and why.
REFUSED = {
    **{
        f"{kind}SharedMemory{call}": SHARED_MEMORY_REFUSED
        for kind in ("System", "Cuda")
        for call in ("Status", "Register", "Unregister")
    },
    "RepositoryModelLoad": REPOSITORY_CONTROL_REFUSED.format(action="load"),
    "RepositoryModelUnload": REPOSITORY_CONTROL_REFUSED.format(action="unload"),
}
STREAM_REFUSED = (
    "ModelStreamInfer is not routed (the runtime does not serve it either): "
    "call ModelInfer (tritonclient: infer or async_infer)"
)
NAME_FIELDS = {"ModelInfer": ("model_name", "model_version")}
STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
}
_FAILED_CODES = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS}


def _identity(data: bytes) -> bytes:
    return data


def _refuse(code: grpc.StatusCode, message: str) -> Callable[[Any, grpc.aio.ServicerContext], Any]:
    """A handler that answers every call with ``code`` and ``message``."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message)

    return refuse


class _Answer:
    """A backend's reply: response bytes, or the gRPC error to pass back to the client."""

    __slots__ = ("error", "payload")

    def __init__(self, payload: bytes | None, error: grpc.aio.AioRpcError | None) -> None:
        self.payload = payload
        self.error = error


class GrpcFrontEnd:
    """Builds the generic handler and keeps one channel per backend endpoint."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        max_message_bytes: int,
        request_timeout_s: float,
        statistics: StatisticsFanOut | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.max_message_bytes = max_message_bytes
        self.request_timeout_s = request_timeout_s
        self.draining = False
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._pool: UpstreamPool | None = None  # ours, when no fan-out (and its pool) was shared
        if statistics is None:
            self._pool = UpstreamPool(request_timeout_s=request_timeout_s)
            statistics = StatisticsFanOut(dispatcher, self._pool)
        self.statistics = statistics

    def handler(self) -> grpc.GenericRpcHandler:
        handlers: dict[str, grpc.RpcMethodHandler] = {
            method: grpc.unary_unary_rpc_method_handler(
                self._routed_handler(method), request_deserializer=_identity, response_serializer=_identity
            )
            for method in ROUTED
        }
        handlers["ServerLive"] = grpc.unary_unary_rpc_method_handler(
            self._server_live,
            request_deserializer=service_pb2.ServerLiveRequest.FromString,
            response_serializer=service_pb2.ServerLiveResponse.SerializeToString,
        )
        handlers["ServerReady"] = grpc.unary_unary_rpc_method_handler(
            self._server_ready,
            request_deserializer=service_pb2.ServerReadyRequest.FromString,
            response_serializer=service_pb2.ServerReadyResponse.SerializeToString,
        )
        handlers["ServerMetadata"] = grpc.unary_unary_rpc_method_handler(
            self._server_metadata,
            request_deserializer=service_pb2.ServerMetadataRequest.FromString,
            response_serializer=service_pb2.ServerMetadataResponse.SerializeToString,
        )
        handlers["RepositoryIndex"] = grpc.unary_unary_rpc_method_handler(
            self._repository_index,
            request_deserializer=service_pb2.RepositoryIndexRequest.FromString,
            response_serializer=service_pb2.RepositoryIndexResponse.SerializeToString,
        )
        handlers["ModelStatistics"] = grpc.unary_unary_rpc_method_handler(
            self._model_statistics,
            request_deserializer=service_pb2.ModelStatisticsRequest.FromString,
            response_serializer=service_pb2.ModelStatisticsResponse.SerializeToString,
        )
        for method, message in REFUSED.items():
            handlers[method] = grpc.unary_unary_rpc_method_handler(
                _refuse(grpc.StatusCode.INVALID_ARGUMENT, message),
                request_deserializer=_identity,
                response_serializer=_identity,
            )
        handlers["ModelStreamInfer"] = grpc.stream_stream_rpc_method_handler(
            _refuse(grpc.StatusCode.UNIMPLEMENTED, STREAM_REFUSED),
            request_deserializer=_identity,
            response_serializer=_identity,
        )
        return grpc.method_handlers_generic_handler(SERVICE, handlers)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
        if self._pool is not None:
            await self._pool.close()

    def _channel(self, endpoint: Endpoint) -> grpc.aio.Channel:
        assert endpoint.grpc is not None
        channel = self._channels.get(endpoint.grpc)
        if channel is None:
            options = [
                ("grpc.max_send_message_length", self.max_message_bytes),
                ("grpc.max_receive_message_length", self.max_message_bytes),
                ("grpc.keepalive_time_ms", 30_000),
            ]
            channel = grpc.aio.insecure_channel(endpoint.grpc, options=options)
            self._channels[endpoint.grpc] = channel
        return channel

    def _routed_handler(self, method: str) -> Callable[[bytes, grpc.aio.ServicerContext], Any]:
        message_type = ROUTED[method]
        path = f"/{SERVICE}/{method}"
        name_field, version_field = NAME_FIELDS.get(method, ("name", "version"))
        infer = method == "ModelInfer"

        async def handle(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            try:
                parsed = message_type.FromString(request)
            except Exception:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"cannot decode the {method} request")
            metadata = {
                key: value for key, value in (context.invocation_metadata() or ()) if isinstance(value, str)
            }
            model: str = getattr(parsed, name_field)
            requested_version: str = getattr(parsed, version_field)
            if infer:
                refusal = grpc_shared_memory_refusal(parsed.inputs, parsed.outputs)
                if refusal is not None:
                    self.dispatcher.metrics.request_count(model, "", "400").inc()
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, refusal)
            started = time.perf_counter()

            async def call(route: ModelRoute, endpoint: Endpoint, version: str) -> _Answer:
                if endpoint.grpc is None:
                    raise BackendUnavailableError("the endpoint serves no gRPC")
                forwarded = request
                backend_model = route.backend_model or model
                if version != requested_version or backend_model != model:
                    # Pin the version chosen by the split and the runtime's model name.
                    pinned = message_type.FromString(request)
                    setattr(pinned, version_field, version)
                    setattr(pinned, name_field, backend_model)
                    forwarded = pinned.SerializeToString()
                stub = self._channel(endpoint).unary_unary(
                    path, request_serializer=_identity, response_deserializer=_identity
                )
                try:
                    payload = await stub(forwarded, timeout=self.request_timeout_s)
                except grpc.aio.AioRpcError as exc:
                    if exc.code() == grpc.StatusCode.UNAVAILABLE:
                        raise BackendUnavailableError(exc.details() or "unavailable") from exc
                    return _Answer(None, exc)
                return _Answer(payload, None)

            try:
                done = await self.dispatcher.dispatch(
                    model,
                    metadata.get(NAMESPACE_METADATA),
                    requested_version or None,
                    metadata.get(STICKY_METADATA),
                    call,
                    unavailable=lambda answer: False,
                    failed=lambda answer: answer.error is not None and answer.error.code() in _FAILED_CODES,
                )
            except RequestError as exc:
                self.dispatcher.metrics.request_count(model, "", str(exc.status)).inc()
                await context.abort(STATUS_CODES.get(exc.status, grpc.StatusCode.UNKNOWN), exc.message)
            answer = done.result
            self.dispatcher.metrics.request_latency(model).observe(time.perf_counter() - started)
            if answer.error is not None:
                code = answer.error.code()
                self.dispatcher.metrics.request_count(model, done.version, code.name).inc()
                await context.abort(code, answer.error.details() or "")
            self.dispatcher.metrics.request_count(model, done.version, "OK").inc()
            assert answer.payload is not None
            return answer.payload

        return handle

    async def _server_live(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return service_pb2.ServerLiveResponse(live=True)

    async def _server_ready(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return service_pb2.ServerReadyResponse(ready=not self.draining)

    async def _server_metadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return service_pb2.ServerMetadataResponse(
            name="modelplane-router", version=__version__, extensions=ROUTER_EXTENSIONS
        )

    async def _model_statistics(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """A model's statistics summed over its pods; all models' are refused (name one)."""
        if not request.name:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, ALL_MODELS_STATISTICS_REFUSED)
        metadata = {
            key: value for key, value in (context.invocation_metadata() or ()) if isinstance(value, str)
        }
        metrics = self.dispatcher.metrics
        try:
            document = await self.statistics.collect(
                request.name, metadata.get(NAMESPACE_METADATA), request.version or None
            )
        except RequestError as exc:
            metrics.request_count(request.name, "", str(exc.status)).inc()
            await context.abort(STATUS_CODES.get(exc.status, grpc.StatusCode.UNKNOWN), exc.message)
        metrics.request_count(request.name, request.version, "OK").inc()
        return json_format.ParseDict(
            document, service_pb2.ModelStatisticsResponse(), ignore_unknown_fields=True
        )

    async def _repository_index(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        response = service_pb2.RepositoryIndexResponse()
        for route in self.dispatcher.table.routes.values():
            state = "READY" if route.ready() else "UNAVAILABLE"
            for backend in route.backends:
                response.models.add(name=route.name, version=backend.version, state=state)
        return response
