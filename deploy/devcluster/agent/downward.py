"""A container's environment, as the kubelet builds it: literal values with ``$(VAR)`` expansion,
the downward API (``fieldRef``, ``resourceFieldRef``), ConfigMap and Secret keys, ``envFrom``.

Pure: the caller fetches the referenced ConfigMaps and Secrets and passes them in.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any


class EnvError(ValueError):
    """The env cannot be built (a missing key, an unsupported field); the pod cannot start."""


_SUFFIXES = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")


def parse_quantity(text: str | int | float) -> Decimal:
    """A Kubernetes quantity (``500m``, ``1Gi``, ``2``) as a Decimal."""
    match = _QUANTITY.match(str(text).strip())
    if not match or match.group(2) not in _SUFFIXES:
        raise EnvError(f"not a quantity: {text!r}")
    number, suffix = match.groups()
    if suffix and suffix[0] in "eE" and suffix not in _SUFFIXES:
        raise EnvError(f"not a quantity: {text!r}")
    return Decimal(number) * _SUFFIXES[suffix]


_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: defined names are replaced, ``$$`` is a literal ``$``,
    anything else is left as written."""

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _VAR.sub(sub, text)


_FIELD_KEY = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


def field_value(path: str, pod: Mapping[str, Any], pod_ip: str, host_ip: str) -> str:
    """The value of a ``fieldRef.fieldPath`` for this pod."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
    }
    if path in simple:
        return str(simple[path])
    match = _FIELD_KEY.match(path)
    if match:
        kind, key = match.groups()
        return str((meta.get(kind) or {}).get(key, ""))
    if path in ("metadata.labels", "metadata.annotations"):
        values = meta.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(values.items()))
    raise EnvError(f"unsupported fieldRef.fieldPath {path!r}")


def resource_value(
    ref: Mapping[str, Any],
    containers: list[Mapping[str, Any]],
    current: str,
    node_allocatable: Mapping[str, str],
) -> str:
    """A ``resourceFieldRef``: the container's limit or request, rounded up in units of ``divisor``.

    As on a kubelet, an unset limit reads as the node's allocatable amount and an unset request as 0
    (for ``requests.cpu``/``requests.memory``).
    """
    name = ref.get("containerName") or current
    container = next((c for c in containers if c.get("name") == name), None)
    if container is None:
        raise EnvError(f"resourceFieldRef names unknown container {name!r}")
    resource = str(ref.get("resource", ""))
    section, _, kind = resource.partition(".")
    if section not in ("limits", "requests") or not kind:
        raise EnvError(f"unsupported resourceFieldRef.resource {resource!r}")
    values = (container.get("resources") or {}).get(section) or {}
    raw = values.get(kind)
    if raw is None and section == "requests":
        raw = ((container.get("resources") or {}).get("limits") or {}).get(kind)
    if raw is None:
        raw = node_allocatable.get(kind, "0") if section == "limits" else "0"
    divisor = parse_quantity(ref.get("divisor") or "1")
    if divisor <= 0:
        raise EnvError(f"resourceFieldRef divisor must be positive, got {ref.get('divisor')!r}")
    return str(math.ceil(parse_quantity(raw) / divisor))


def _lookup(
    source: Mapping[str, Any], objects: Mapping[str, Mapping[str, str]], kind: str, secret: bool
) -> str | None:
    name = source.get("name", "")
    key = source.get("key", "")
    optional = bool(source.get("optional", False))
    data = objects.get(name)
    if data is None or key not in data:
        if optional:
            return None
        # The kubelet's wording, which the operator recognizes.
        if data is None:
            raise EnvError(f'{kind} "{name}" not found')
        raise EnvError(f"couldn't find key {key} in {kind} {name}")
    value = data[key]
    return base64.b64decode(value).decode() if secret else value


def build_env(
    container: Mapping[str, Any],
    pod: Mapping[str, Any],
    pod_ip: str,
    host_ip: str,
    config_maps: Mapping[str, Mapping[str, str]],
    secrets: Mapping[str, Mapping[str, str]],
    node_allocatable: Mapping[str, str],
) -> dict[str, str]:
    """The container's env in Kubernetes order: ``envFrom`` first, then ``env`` entries in order,
    each ``value`` expanded against what was defined before it."""
    env: dict[str, str] = {}
    containers = list((pod.get("spec") or {}).get("containers") or []) + list(
        (pod.get("spec") or {}).get("initContainers") or []
    )
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            ref = source["configMapRef"]
            data = config_maps.get(ref.get("name", ""))
            secret = False
        elif "secretRef" in source:
            ref = source["secretRef"]
            data = secrets.get(ref.get("name", ""))
            secret = True
        else:
            continue
        if data is None:
            if ref.get("optional"):
                continue
            raise EnvError(f'{"secret" if secret else "configmap"} "{ref.get("name")}" not found')
        for key, raw in data.items():
            env[prefix + key] = base64.b64decode(raw).decode() if secret else raw
    for item in container.get("env") or []:
        name = item["name"]
        if "valueFrom" not in item:
            env[name] = expand(str(item.get("value", "")), env)
            continue
        source = item["valueFrom"]
        value: str | None = None
        if "fieldRef" in source:
            value = field_value(source["fieldRef"]["fieldPath"], pod, pod_ip, host_ip)
        elif "resourceFieldRef" in source:
            value = resource_value(
                source["resourceFieldRef"], containers, container["name"], node_allocatable
            )
        elif "configMapKeyRef" in source:
            value = _lookup(source["configMapKeyRef"], config_maps, "configmap", secret=False)
        elif "secretKeyRef" in source:
            value = _lookup(source["secretKeyRef"], secrets, "secret", secret=True)
        else:
            raise EnvError(f"unsupported valueFrom in env {name!r}: {sorted(source)}")
        if value is not None:
            env[name] = value
    return env


def referenced_objects(pod: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """Names of the ConfigMaps and Secrets the pod's env refers to (to fetch before ``build_env``)."""
    config_maps: set[str] = set()
    secrets: set[str] = set()
    spec = pod.get("spec") or {}
    for container in list(spec.get("initContainers") or []) + list(spec.get("containers") or []):
        for source in container.get("envFrom") or []:
            if "configMapRef" in source:
                config_maps.add(source["configMapRef"].get("name", ""))
            if "secretRef" in source:
                secrets.add(source["secretRef"].get("name", ""))
        for item in container.get("env") or []:
            ref = item.get("valueFrom") or {}
            if "configMapKeyRef" in ref:
                config_maps.add(ref["configMapKeyRef"].get("name", ""))
            if "secretKeyRef" in ref:
                secrets.add(ref["secretKeyRef"].get("name", ""))
    return config_maps, secrets


def remap_mount_paths(value: str, mounts: Mapping[str, str]) -> str:
    """Stand in for a mount namespace: a value that is a volume's ``mountPath`` (or a path under
    it) becomes the same path under the volume's directory on this machine.

    A process here has no mount namespace, so ``/models`` cannot be the volume; rewriting the
    container's arguments and env values that name such paths lets the same pod spec run
    unchanged on a kubelet and on this agent. The longest matching mount wins.
    """
    option = _OPTION.match(value)
    if option is not None:
        # ``--artifact-root=/data/artifacts``: the value of a long option given in one word.
        return option.group(1) + remap_mount_paths(option.group(2), mounts)
    url = _FILE_URL.match(value)
    if url is not None:
        # ``sqlite:////data/db.sqlite``, ``file:///data/x``: the path part of a URL to a local file.
        return url.group(1) + remap_mount_paths(url.group(2), mounts)
    for mount_path in sorted(mounts, key=len, reverse=True):
        root = mount_path.rstrip("/") or "/"
        if value == root:
            return mounts[mount_path]
        if root != "/" and value.startswith(root + "/"):
            return mounts[mount_path] + value[len(root) :]
    return value


_OPTION = re.compile(r"^(--[A-Za-z0-9][A-Za-z0-9-]*=)(.+)$")
"""A command-line option and its value in one word."""

_FILE_URL = re.compile(r"^([a-z][a-z0-9+.-]*:///?)(/[^/].*)$")
"""A URL whose host part is empty, so what follows ``scheme://`` is an absolute local path."""
