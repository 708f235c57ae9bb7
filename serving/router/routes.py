"""The route table: for each model, its versions' weights and ready endpoints.

Discovery sources (a static YAML file, the Kubernetes API, the local stack) build
:class:`ModelRoute` values and replace them in the table atomically; the proxy only reads. Endpoint
objects are kept across updates when their key is unchanged, so in-flight counts and ejection
state survive a refresh.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from modelplane.serving.router.balancing import Backend, Endpoint, authority_of

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class RoutesError(ValueError):
    """A routes document is invalid; the message names the entry."""


@dataclass
class ModelRoute:
    """How to reach one model: versions with weights, their endpoints, and an optional shadow.

    ``name`` is the table key: ``namespace/deployment`` from Kubernetes discovery, the bare model
    name from static routes.
    """

    name: str
    backends: list[Backend]
    endpoints: dict[str, list[Endpoint]]  # version → ready endpoints
    shadow: Backend | None = None  # weight = percent of requests copied
    scaled_to_zero: bool = False  # no endpoints on purpose: buffer and activate, don't 404
    backend_model: str | None = None  # the runtime's name for the model, when it differs from `name`
    generative: bool = False  # an OpenAI-API runtime: balanced by its engine's load (scraped)
    prefix_affinity: bool = False  # /v1 requests sharing a prompt prefix prefer the same endpoint

    def ready(self) -> bool:
        return any(self.endpoints.get(b.version) for b in self.backends if b.weight > 0)


@dataclass
class RouteTable:
    """Model name (optionally ``namespace/name``) → route."""

    routes: dict[str, ModelRoute] = field(default_factory=dict)

    def get(self, name: str) -> ModelRoute | None:
        return self.routes.get(name)

    def replace(self, routes: Mapping[str, ModelRoute]) -> set[str]:
        """Swap in a new set of routes, keeping live endpoint state; returns models that became ready."""
        old = self.routes
        became_ready = set()
        for name, route in routes.items():
            previous = old.get(name)
            if previous is not None:
                known = {e.key: e for eps in previous.endpoints.values() for e in eps}
                route.endpoints = {
                    version: [_keep(known.get(e.key), e) for e in eps]
                    for version, eps in route.endpoints.items()
                }
            if route.ready() and (previous is None or not previous.ready()):
                became_ready.add(name)
        self.routes = dict(routes)
        return became_ready


def _keep(existing: Endpoint | None, fresh: Endpoint) -> Endpoint:
    if existing is None or (existing.http, existing.grpc) != (fresh.http, fresh.grpc):
        return fresh
    return existing


def parse_static_routes(document: Any) -> dict[str, ModelRoute]:
    """Build routes from the static file's content.

    Format::

        models:
          iris:
            - {version: "1", http: "http://127.0.0.1:8000", grpc: "127.0.0.1:8001", weight: 100}
            - {version: "2", http: "http://127.0.0.1:9000", weight: 0, shadow: 10}

    Entries with the same version are endpoints of that version; ``weight`` is the version's share
    (its first entry's value counts); ``shadow`` (0 to 100) copies that percent of requests to it.

    A model may instead be a mapping with its endpoints under ``endpoints`` and route-level fields:
    ``generative: true`` (an OpenAI-API runtime, balanced by its engine's load), ``prefixAffinity:
    true`` (``/v1`` requests sharing a prompt prefix prefer one endpoint) and ``backendModel: NAME``
    (the name the runtime serves the model under, when it differs)::

        models:
          llama:
            generative: true
            prefixAffinity: true
            endpoints:
              - {http: "http://127.0.0.1:8000"}
    """
    if not isinstance(document, Mapping) or not isinstance(document.get("models"), Mapping):
        raise RoutesError("the routes file must be a mapping with a `models:` mapping")
    routes: dict[str, ModelRoute] = {}
    for name, value in document["models"].items():
        if not isinstance(name, str) or not MODEL_NAME.fullmatch(name):
            raise RoutesError(f"invalid model name {name!r}")
        entries = value.get("endpoints") if isinstance(value, Mapping) else value
        if not isinstance(entries, list) or not entries:
            raise RoutesError(f"model {name!r}: expected a non-empty list of endpoints")
        route = _static_route(name, entries)
        if isinstance(value, Mapping):
            _route_fields(route, value)
        routes[name] = route
    return routes


def _route_fields(route: ModelRoute, fields: Mapping[str, Any]) -> None:
    where = f"model {route.name!r}"
    unknown = set(fields) - {"endpoints", "generative", "prefixAffinity", "backendModel"}
    if unknown:
        raise RoutesError(f"{where}: unknown keys {sorted(unknown)}")
    for key in ("generative", "prefixAffinity"):
        if not isinstance(fields.get(key, False), bool):
            raise RoutesError(f"{where}: `{key}` must be true or false")
    backend_model = fields.get("backendModel")
    if backend_model is not None and (
        not isinstance(backend_model, str) or not MODEL_NAME.fullmatch(backend_model)
    ):
        raise RoutesError(f"{where}: `backendModel` must be a model name")
    route.generative = bool(fields.get("generative", False))
    route.prefix_affinity = bool(fields.get("prefixAffinity", False))
    route.backend_model = backend_model


def _static_route(name: str, entries: Iterable[Any]) -> ModelRoute:
    weights: dict[str, int] = {}
    endpoints: dict[str, list[Endpoint]] = {}
    shadow: Backend | None = None
    for i, entry in enumerate(entries):
        where = f"model {name!r} entry {i}"
        if not isinstance(entry, Mapping):
            raise RoutesError(f"{where}: expected a mapping")
        unknown = set(entry) - {"version", "http", "grpc", "weight", "shadow"}
        if unknown:
            raise RoutesError(f"{where}: unknown keys {sorted(unknown)}")
        version = str(entry.get("version", "1"))
        http = entry.get("http")
        if not isinstance(http, str):
            raise RoutesError(f"{where}: `http` must be a URL like http://127.0.0.1:8000")
        try:
            authority_of(http)
        except ValueError:
            raise RoutesError(
                f"{where}: `http` must be a plain http://HOST:PORT URL (got {http!r}); the router "
                "speaks cleartext HTTP/1.1 to runtimes, put TLS between pods in a service mesh"
            ) from None
        grpc = entry.get("grpc")
        if grpc is not None and not isinstance(grpc, str):
            raise RoutesError(f"{where}: `grpc` must be host:port")
        weight = entry.get("weight", 100)
        shadow_percent = entry.get("shadow", 0)
        for key, value in (("weight", weight), ("shadow", shadow_percent)):
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 100:
                raise RoutesError(f"{where}: `{key}` must be an integer from 0 to 100")
        weights.setdefault(version, weight)
        endpoints.setdefault(version, []).append(
            Endpoint(key=f"{version}@{http}", http=http.rstrip("/"), grpc=grpc)
        )
        if shadow_percent:
            shadow = Backend(version=version, weight=shadow_percent, role="shadow")
    backends = [Backend(version=v, weight=w, role="stable") for v, w in weights.items()]
    return ModelRoute(name=name, backends=backends, endpoints=endpoints, shadow=shadow)
