"""A model's statistics through the router: ask every ready pod of the model, sum the answers.

Used by both front ends (HTTP ``GET /v2/models/NAME[/versions/V]/stats``, gRPC ``ModelStatistics``).
The pods are asked over HTTP (every endpoint has it; gRPC is optional), each for one version
(``/v2/models/NAME/versions/V/stats``), all at once; :func:`.statistics.merge_model_stats` adds the
answers up. Triton's format has no field saying "some pods are missing", and a partial sum reads as
a complete one, so a pod that does not answer (or answers an error, or something that is not
statistics) makes the whole request a 503 naming the pod, with ``Retry-After``. These requests
are not counted as load (the autoscaler's signal) and never wake a model scaled to zero: a model
without pods has no statistics (503).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from modelplane.serving.router.balancing import Endpoint
from modelplane.serving.router.dispatch import Dispatcher, RequestError
from modelplane.serving.router.statistics import StatisticsFormatError, merge_model_stats
from modelplane.serving.router.upstream import (
    UpstreamConnectionError,
    UpstreamPool,
    UpstreamProtocolError,
)

STATISTICS_TIMEOUT_S = 10.0  # per request to a pod; statistics are a few counters
_ACCEPT_JSON = [(b"accept", b"application/json")]


class _PodFailedError(Exception):
    pass


class StatisticsFanOut:
    """Collects one model's statistics from all its pods over the front ends' connection pool."""

    def __init__(
        self, dispatcher: Dispatcher, pool: UpstreamPool, timeout_s: float = STATISTICS_TIMEOUT_S
    ) -> None:
        self.dispatcher = dispatcher
        self.pool = pool
        self.timeout_s = timeout_s

    async def collect(self, model: str, namespace: str | None, version: str | None) -> dict[str, Any]:
        """Triton's JSON answer for ``model`` (all its versions, or ``version``), named ``model``.

        Raises :class:`RequestError`: 404 for an unknown model or version, 503 when the model has
        no ready pod or a pod failed to answer.
        """
        dispatcher = self.dispatcher
        retry_after = dispatcher.settings.retry_after_s
        route = dispatcher.lookup(model, namespace)
        if version is not None:
            if version not in route.endpoints and version not in {b.version for b in route.backends}:
                raise RequestError(404, f"model {model!r} has no version {version!r}")
            versions = [version]
        else:
            versions = sorted(route.endpoints)
        asked = [(v, e) for v in versions for e in route.endpoints.get(v, [])]
        if not asked:
            raise RequestError(
                503,
                f"model {model!r} has no ready pod: its statistics are kept by its pods"
                + (" (it is scaled to zero)" if route.scaled_to_zero else ""),
                retry_after,
            )
        backend_model = route.backend_model or model
        results = await asyncio.gather(
            *(self._ask(e, f"/v2/models/{backend_model}/versions/{v}/stats") for v, e in asked),
            return_exceptions=True,
        )
        failures = []
        for (_, endpoint), result in zip(asked, results, strict=True):
            if isinstance(result, _PodFailedError):
                failures.append(f"{endpoint.key}: {result}")
            elif isinstance(result, BaseException):  # a bug, not a pod's failure: the front end's 500
                raise result
        if failures:
            raise RequestError(
                503,
                f"statistics of model {model!r} are incomplete, so none are given: "
                f"{len(failures)} of {len(asked)} pods failed to answer ({'; '.join(failures)})",
                retry_after,
            )
        try:
            return merge_model_stats(model, results)
        except StatisticsFormatError as exc:  # checked per pod in _ask; kept as a guard
            raise RequestError(503, f"statistics of model {model!r}: {exc}", retry_after) from None

    async def _ask(self, endpoint: Endpoint, path: str) -> Any:
        try:
            async with asyncio.timeout(self.timeout_s):
                answer = await self.pool.request(endpoint.authority, "GET", path, _ACCEPT_JSON, b"")
        except TimeoutError:
            raise _PodFailedError(f"no answer within {self.timeout_s:g}s") from None
        except (UpstreamConnectionError, UpstreamProtocolError) as exc:
            raise _PodFailedError(str(exc)) from None
        if answer.status != 200:
            raise _PodFailedError(f"answered {answer.status}{_error_of(answer.body)}")
        try:
            document = json.loads(answer.body)
            merge_model_stats("", [document])  # its form, checked here so the failure names the pod
        except (ValueError, StatisticsFormatError) as exc:
            raise _PodFailedError(f"answered something that is not Triton's statistics ({exc})") from None
        return document


def _error_of(body: bytes) -> str:
    """The V2 error message of a pod's refusal, for ours (`: message`), or nothing."""
    try:
        message = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return ""
    return f": {message}" if isinstance(message, str) else ""
