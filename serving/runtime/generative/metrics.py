"""Prometheus metrics of the generative API, under the names vLLM exports.

Dashboards, alerts and autoscalers written for vLLM (Grafana's vLLM dashboard, KEDA or
HorizontalPodAutoscaler rules on ``vllm:num_requests_waiting`` or the KV-cache usage) work against
this server unchanged, so the names, label (``model_name``, the served name) and histogram
buckets follow vLLM's V1 engine as of v0.11 (from what we know of vLLM v0.8+ metrics; not checked
against vLLM's source here). In v0.11 vLLM renamed four metrics and kept exporting the old names for
a deprecation window: ``vllm:gpu_cache_usage_perc`` became ``vllm:kv_cache_usage_perc``,
``vllm:gpu_prefix_cache_{queries,hits}`` became ``vllm:prefix_cache_{queries,hits}`` and
``vllm:time_per_output_token_seconds`` became ``vllm:inter_token_latency_seconds`` (the same
measure in V1: the time between output tokens). Dashboards and autoscaling rules written before the
rename still use the old names, so :data:`DEPRECATED_ALIASES` exports them too with the same values
(``legacy_names=False`` turns them off).

Two sources:

- the engine's own figures (queue lengths, KV-cache usage, cumulative token, preemption and
  prefix-cache counts) are read from ``engine.stats()`` when Prometheus scrapes, by a custom
  collector, so nothing on the hot path keeps them;
- what only the API layer sees (time to first token, the gaps between increments, end-to-end
  latency, how each request finished) is observed per request; label children are bound once per
  model so the hot path does no label lookups.

One :class:`~prometheus_client.CollectorRegistry` per app, never the process-global default, so
several apps in one process (tests) do not collide.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from modelplane.serving.runtime.generative.types import Engine, EngineStats, FinishReason

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# The names, as scraped (a counter's samples carry ``_total``). The one place they are spelled.
NUM_REQUESTS_RUNNING = "vllm:num_requests_running"
NUM_REQUESTS_WAITING = "vllm:num_requests_waiting"
KV_CACHE_USAGE_PERC = "vllm:kv_cache_usage_perc"  # a fraction in [0, 1], despite the name
PROMPT_TOKENS_TOTAL = "vllm:prompt_tokens_total"
GENERATION_TOKENS_TOTAL = "vllm:generation_tokens_total"
NUM_PREEMPTIONS_TOTAL = "vllm:num_preemptions_total"
PREFIX_CACHE_QUERIES_TOTAL = "vllm:prefix_cache_queries_total"
PREFIX_CACHE_HITS_TOTAL = "vllm:prefix_cache_hits_total"
REQUEST_SUCCESS_TOTAL = "vllm:request_success_total"  # label finished_reason: stop | length | abort
TIME_TO_FIRST_TOKEN_SECONDS = "vllm:time_to_first_token_seconds"  # noqa: S105 (a metric, not a secret)
INTER_TOKEN_LATENCY_SECONDS = "vllm:inter_token_latency_seconds"  # noqa: S105 (a metric, not a secret)
E2E_REQUEST_LATENCY_SECONDS = "vllm:e2e_request_latency_seconds"

#: Names vLLM deprecated in v0.11, exported alongside the current ones: current -> old.
DEPRECATED_ALIASES: Mapping[str, str] = {
    KV_CACHE_USAGE_PERC: "vllm:gpu_cache_usage_perc",
    PREFIX_CACHE_QUERIES_TOTAL: "vllm:gpu_prefix_cache_queries_total",
    PREFIX_CACHE_HITS_TOTAL: "vllm:gpu_prefix_cache_hits_total",
    INTER_TOKEN_LATENCY_SECONDS: "vllm:time_per_output_token_seconds",
}

MODEL_LABEL = "model_name"
FINISHED_REASON_LABEL = "finished_reason"

# vLLM's buckets, so quantiles computed from either server are comparable.
TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
ITL_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
)  # fmt: skip
E2E_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip

_FINISH_REASONS: tuple[FinishReason, ...] = ("stop", "length", "abort")


def _family(sample_name: str) -> str:
    """The name ``prometheus_client`` wants for a counter whose samples end in ``_total``."""
    return sample_name.removesuffix("_total")


_Family = GaugeMetricFamily | CounterMetricFamily


class _EngineCollector(Collector):
    """The engine-side figures, read from ``engine.stats()`` at scrape time."""

    def __init__(self, engines: Mapping[str, Engine], legacy_names: bool) -> None:
        self._engines = engines
        self._legacy = legacy_names

    def _names(self, name: str) -> list[str]:
        alias = DEPRECATED_ALIASES.get(name) if self._legacy else None
        return [name] if alias is None else [name, alias]

    def _families(self) -> list[tuple[_Family, str]]:
        """Empty families, each with the :class:`EngineStats` figure it reports."""
        gauges = {
            NUM_REQUESTS_RUNNING: ("running", "Requests in the running batch"),
            NUM_REQUESTS_WAITING: ("waiting", "Requests waiting to be scheduled"),
            KV_CACHE_USAGE_PERC: ("kv_cache_usage", "KV-cache usage: 1 means every block is in use"),
        }
        counters = {
            PROMPT_TOKENS_TOTAL: ("prompt_tokens", "Prompt tokens prefilled"),
            GENERATION_TOKENS_TOTAL: ("generation_tokens", "Tokens generated"),
            NUM_PREEMPTIONS_TOTAL: ("preemptions", "Sequences preempted to free KV-cache blocks"),
            PREFIX_CACHE_QUERIES_TOTAL: ("prefix_queries", "Prompt tokens looked up in the prefix cache"),
            PREFIX_CACHE_HITS_TOTAL: ("prefix_hits", "Prompt tokens found in the prefix cache"),
        }
        families: list[tuple[_Family, str]] = []
        for name, (figure, doc) in gauges.items():
            families += [(GaugeMetricFamily(n, doc, labels=[MODEL_LABEL]), figure) for n in self._names(name)]
        for name, (figure, doc) in counters.items():
            families += [
                (CounterMetricFamily(_family(n), doc, labels=[MODEL_LABEL]), figure)
                for n in self._names(name)
            ]
        return families

    def describe(self) -> Iterator[Metric]:
        # Registration asks for the names only: no engine is asked for stats before the first scrape.
        for family, _ in self._families():
            yield family

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        for model, engine in self._engines.items():
            try:
                stats = engine.stats()
            except Exception:
                # One engine's broken stats must not fail the whole scrape (and so every other metric).
                log.exception("engine %s: stats() failed; its engine metrics are left out", model)
                continue
            for family, figure in families:
                family.add_metric([model], float(_figure(stats, figure)))
        for family, _ in families:
            yield family


def _figure(stats: EngineStats, name: str) -> float:
    value: float = getattr(stats, name)
    return value


@dataclass(frozen=True)
class ModelMetrics:
    """One model's per-request metrics, bound to its label once."""

    ttft: Histogram
    itl: tuple[Histogram, ...]  # the current name and, with legacy names, the deprecated one
    e2e: Histogram
    finished: Mapping[FinishReason, Counter]

    def observe_first_token(self, seconds: float) -> None:
        self.ttft.observe(seconds)

    def observe_tokens(self, gap_s: float, tokens: int) -> None:
        """An increment of ``tokens`` tokens ``gap_s`` after the previous one.

        Observed once per token (at ``gap_s / tokens``), as vLLM counts it: the histogram's count is
        the number of tokens after the first, so ``sum / count`` is the mean time per output token.
        """
        per_token = gap_s / tokens
        for histogram in self.itl:
            for _ in range(tokens):
                histogram.observe(per_token)

    def observe_finished(self, reason: FinishReason, e2e_s: float) -> None:
        self.finished[reason].inc()
        self.e2e.observe(e2e_s)


class GenerativeMetrics:
    """The metrics of one generative app: a registry, the per-request metrics, the engines' figures."""

    def __init__(self, registry: CollectorRegistry | None = None, *, legacy_names: bool = True) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.legacy_names = legacy_names
        labels = [MODEL_LABEL]
        self._success = Counter(
            _family(REQUEST_SUCCESS_TOTAL),
            "Requests finished, by how they finished",
            [*labels, FINISHED_REASON_LABEL],
            registry=self.registry,
        )
        self._ttft = Histogram(
            TIME_TO_FIRST_TOKEN_SECONDS,
            "Request arrival to its first generated token",
            labels,
            buckets=TTFT_BUCKETS,
            registry=self.registry,
        )
        itl_names = [INTER_TOKEN_LATENCY_SECONDS]
        if legacy_names:
            itl_names.append(DEPRECATED_ALIASES[INTER_TOKEN_LATENCY_SECONDS])
        self._itl = [
            Histogram(name, "Time between output tokens", labels, buckets=ITL_BUCKETS, registry=self.registry)
            for name in itl_names
        ]
        self._e2e = Histogram(
            E2E_REQUEST_LATENCY_SECONDS,
            "Request arrival to its last token",
            labels,
            buckets=E2E_BUCKETS,
            registry=self.registry,
        )
        self._models: dict[str, ModelMetrics] = {}
        self._watching = False

    def watch(self, engines: Mapping[str, Engine]) -> None:
        """Report these engines' figures at every scrape (once per metrics object)."""
        if self._watching:
            raise ValueError(
                "these metrics already report an app's engines; use one GenerativeMetrics per app"
            )
        self._watching = True
        self.registry.register(_EngineCollector(engines, self.legacy_names))

    def model(self, name: str) -> ModelMetrics:
        """The per-request metrics of ``name``, label children bound on first use."""
        bound = self._models.get(name)
        if bound is None:
            bound = ModelMetrics(
                ttft=self._ttft.labels(name),
                itl=tuple(h.labels(name) for h in self._itl),
                e2e=self._e2e.labels(name),
                finished={reason: self._success.labels(name, reason) for reason in _FINISH_REASONS},
            )
            self._models[name] = bound
        return bound

    def exposition(self) -> bytes:
        """The text a scrape of ``/metrics`` gets."""
        return generate_latest(self.registry)
