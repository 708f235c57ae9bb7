"""ASGI middleware: body-size limit for JSON endpoints, and request metrics.

Plain ASGI (not ``BaseHTTPMiddleware``) so streamed uploads and downloads pass through untouched.
"""

from __future__ import annotations

import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelplane.serving.registry.metrics import LATENCY, REQUESTS
from modelplane.serving.registry.problems import problem_response

# PUT .../versions/{version}/files/{path}: one file of a directory artifact, streamed like an artifact.
_FILE_UPLOAD = re.compile(r"^/api/v1/models/[^/]+/versions/[^/]+/files/")
_FILES_COMMIT = re.compile(r"^/api/v1/models/[^/]+/versions/[^/]+/files:commit$")
#: A commit lists up to 10,000 files (path up to 512 characters, sha256, size): its own, larger limit.
COMMIT_MAX_BODY_BYTES = 8 * 1024 * 1024


def is_artifact_upload(scope: Scope) -> bool:
    if scope.get("method") != "PUT":
        return False
    path = str(scope.get("path", ""))
    return path.endswith("/artifact") or _FILE_UPLOAD.match(path) is not None


def body_limit(scope: Scope, default: int) -> int:
    if scope.get("method") == "POST" and _FILES_COMMIT.match(str(scope.get("path", ""))):
        return max(default, COMMIT_MAX_BODY_BYTES)
    return default


class BodyLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` with 413 before any route sees them.

    Artifact and directory-file uploads are exempt: they stream to disk under their own (much
    larger) limit; a directory commit (a list of up to 10,000 files) has a limit of its own.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_artifact_upload(scope):
            await self.app(scope, receive, send)
            return
        max_bytes = body_limit(scope, self.max_bytes)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            await self._refuse(scope, receive, send, max_bytes)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > max_bytes:
                await self._refuse(scope, receive, send, max_bytes)
                return
            chunks.append(body)
            more = bool(message.get("more_body", False))
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, max_bytes: int) -> None:
        response = problem_response(
            413,
            "payload-too-large",
            "Payload too large",
            f"request bodies are limited to {max_bytes} bytes",
            str(scope.get("path", "")),
        )
        await response(scope, receive, send)


class MetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = str(scope.get("method", ""))
            REQUESTS.labels(method, template, str(status)).inc()
            LATENCY.labels(method, template).observe(time.perf_counter() - start)
