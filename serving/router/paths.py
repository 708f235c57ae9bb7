"""Which model a V2 request is for, from its path (and the namespace, from a prefix or a header).

The scheme, documented for users:

- ``/v2/models/NAME/...`` routes to model NAME in the router's default namespace;
- ``/ns/NAMESPACE/v2/models/NAME/...`` or the header ``X-Modelplane-Namespace: NAMESPACE`` picks
  another namespace (the prefix wins over the header);
- ``/v2/models/NAME/versions/V/...`` pins version V and bypasses the canary split.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NAMESPACE_HEADER = "x-modelplane-namespace"
_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
_PATH = re.compile(
    rf"^(?:/ns/(?P<ns>[a-z0-9]([a-z0-9-]{{0,61}}[a-z0-9])?))?"
    rf"/v2/models/(?P<name>{_NAME})(?:/versions/(?P<version>[0-9]{{1,18}}))?"
    rf"(?P<rest>/ready|/infer|/config|/stats)?$"
)
_NAMESPACE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class Target:
    """The model a request addresses, and the backend path to forward to."""

    namespace: str | None
    model: str
    version: str | None
    rest: str  # "", "/ready", "/infer", ...

    def backend_path(self, version: str | None, model: str | None = None) -> str:
        """The path on the runtime (``model`` when it names the model differently), version-qualified."""
        name = model or self.model
        if version is None:
            return f"/v2/models/{name}{self.rest}"
        return f"/v2/models/{name}/versions/{version}{self.rest}"


MAX_REMEMBERED_TARGETS = 4096
_TARGETS: dict[str, Target] = {}  # path → its target, for requests without a namespace header


def parse_target(path: str, namespace_header: str | None) -> Target | None:
    """The target of a model-scoped V2 path, or None if the path is not one.

    Targets of paths without a namespace header are remembered (bounded; a full memo starts over):
    a router sees the same few paths over and over, and the match and the target it builds cost a
    microsecond or more per request, most of the router's own routing work.
    """
    if namespace_header:
        return _parse(path, namespace_header)
    target = _TARGETS.get(path)
    if target is None:
        target = _parse(path, None)
        if target is not None:
            if len(_TARGETS) >= MAX_REMEMBERED_TARGETS:
                _TARGETS.clear()
            _TARGETS[path] = target
    return target


def _parse(path: str, namespace_header: str | None) -> Target | None:
    match = _PATH.match(path)
    if match is None:
        return None
    namespace = match.group("ns")
    if namespace is None and namespace_header and _NAMESPACE.match(namespace_header):
        namespace = namespace_header
    return Target(
        namespace=namespace,
        model=match.group("name"),
        version=match.group("version"),
        rest=match.group("rest") or "",
    )


def route_keys(model: str, namespace: str | None, default_namespace: str) -> list[str]:
    """Table keys to try, most specific first: ``namespace/name``, then a bare ``name``."""
    return [f"{namespace or default_namespace}/{model}", model]
