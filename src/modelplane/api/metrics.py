"""Metric names that cross a part's boundary: one part exposes them, another reads them.

The router exposes its load per model, and the operator's autoscaler and the local stack read it;
the runtime exposes its in-flight gauge, which the operator's HorizontalPodAutoscaler reads through
a metrics adapter. Names are the *sample* names as scraped (a counter's carries ``_total``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Requests in flight to a model's pods, by ``model``, at the moment of the scrape.
ROUTER_IN_FLIGHT = "modelplane_router_in_flight_requests"
#: Requests waiting for a scaled-to-zero model, by ``model``: the activation signal.
ROUTER_QUEUED = "modelplane_router_queued_requests"
#: The integral over time of in-flight plus queued requests, by ``model``, in request-seconds: its
#: rate is the average concurrency, the autoscaler's signal.
ROUTER_CONCURRENCY_SECONDS = "modelplane_router_concurrency_seconds_total"
#: Seconds since the router's metrics began: the clock the concurrency counter is read at.
ROUTER_UPTIME = "modelplane_router_uptime_seconds"
#: Sequences waiting for a batch slot in a generative model's engines, by ``model``: the sum over
#: its pods of ``vllm:num_requests_waiting`` as the router last read them (each router reads every
#: pod, so several routers report the same figure: take the largest, never the sum).
ROUTER_ENGINE_WAITING = "modelplane_router_engine_requests_waiting"
#: Sequences in the running batches of a generative model's engines, by ``model``, read likewise
#: (``vllm:num_requests_running``).
ROUTER_ENGINE_RUNNING = "modelplane_router_engine_requests_running"
#: Requests answered by the router, by ``model``, ``version`` and ``code``.
ROUTER_REQUESTS = "modelplane_router_requests_total"
#: Time from request to response in the router, by ``model`` (a histogram).
ROUTER_REQUEST_DURATION = "modelplane_router_request_duration_seconds"

#: Requests in flight in one runtime pod, by ``model``: the HorizontalPodAutoscaler's metric.
RUNTIME_IN_FLIGHT = "modelplane_runtime_inflight_requests"


def counter_family(sample_name: str) -> str:
    """The family name ``prometheus_client`` wants for a counter whose samples end in ``_total``."""
    return sample_name.removesuffix("_total")


@dataclass(frozen=True)
class LoadReport:
    """What one router reports of its load: the figures behind the ``ROUTER_*`` load metrics.

    ``in_flight`` and ``queued`` are the gauges per model; ``areas`` the concurrency counter per
    model (``None``: a router that does not expose it); ``uptime`` the clock that counter is read at;
    ``engine_waiting`` and ``engine_running`` the generative models' engine queues, summed over
    their pods (only models whose pods' load the router reads appear). A router renders this as
    Prometheus text, and the local stack reads it typed.
    """

    in_flight: dict[str, float]
    queued: dict[str, float]
    areas: dict[str, float] | None = None
    uptime: float | None = None
    engine_waiting: dict[str, float] = field(default_factory=dict)
    engine_running: dict[str, float] = field(default_factory=dict)
