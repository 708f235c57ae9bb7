"""The router's V2 gRPC front end: ``inference.GRPCInferenceService`` calls routed by ``model_name``.

Requests and responses are passed through as raw bytes: the router decodes only what it needs to
route (the model's name and version) and re-encodes nothing, so ``raw_input_contents`` is never
copied into Python objects twice. Health and the repository index are answered locally.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
from tritonclient.grpc import service_pb2

from modelplane import __version__
from modelplane.serving.router.balancing import Endpoint
from modelplane.serving.router.dispatch import BackendUnavailableError, Dispatcher, RequestError
from modelplane.serving.router.routes import ModelRoute

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
    "ModelStatistics": service_pb2.ModelStatisticsRequest,
}
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


class _Answer:
    """A backend's reply: response bytes, or the gRPC error to pass back to the client."""

    __slots__ = ("error", "payload")

    def __init__(self, payload: bytes | None, error: grpc.aio.AioRpcError | None) -> None:
        self.payload = payload
        self.error = error


class GrpcFrontEnd:
    """Builds the generic handler and keeps one channel per backend endpoint."""

    def __init__(self, dispatcher: Dispatcher, max_message_bytes: int, request_timeout_s: float) -> None:
        self.dispatcher = dispatcher
        self.max_message_bytes = max_message_bytes
        self.request_timeout_s = request_timeout_s
        self.draining = False
        self._channels: dict[str, grpc.aio.Channel] = {}

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
        return grpc.method_handlers_generic_handler(SERVICE, handlers)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()

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
            name="modelplane-router", version=__version__, extensions=[]
        )

    async def _repository_index(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        response = service_pb2.RepositoryIndexResponse()
        for route in self.dispatcher.table.routes.values():
            state = "READY" if route.ready() else "UNAVAILABLE"
            for backend in route.backends:
                response.models.add(name=route.name, version=backend.version, state=state)
        return response
