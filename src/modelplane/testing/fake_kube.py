"""An in-memory Kubernetes API for unit-testing the operator's orchestration.

Why a fake: the reconcile, the coalescing of triggers and the autoscaling step are decisions about
*which* requests to make (apply only what drifted, prune only what this ModelDeployment owns,
write nothing when nothing changed, retry what failed temporarily). The e2e tests check them
against a real API server, which takes minutes; :class:`FakeKube` answers the same calls from a
dict in microseconds, records every write, and fails on request, so that logic can be tested
directly and changed with confidence (the pattern of kopf's own ``tests/handling``).

What it models, and what it does not:

- objects are keyed by (apiVersion, kind, namespace, name); ``get`` and ``list_objects`` return
  copies, so a test cannot change the store by accident;
- ``apply`` deep-merges the manifest onto the stored object (creating it if absent), sets
  ``metadata.uid``, ``generation`` (bumped when ``spec`` changes) and ``resourceVersion``, and
  ignores ``status`` as the real server does for a resource with a status subresource. It does
  not track managed fields: a field dropped from a later manifest stays (the real server would
  remove it), and no defaults are filled in;
- ``patch_merge`` is an RFC 7386 merge patch (``subresource="scale"`` maps
  ``{"spec": {"replicas": N}}`` onto the object's ``spec.replicas``); ``patch_status`` merges into
  ``status``; ``delete`` ignores a missing object like the real client; no garbage collection;
- ``list_objects`` understands equality label selectors (``a=b``, ``a==b``, ``a!=b``) and
  existence (``key``, ``!key``), comma-separated;
- Events go to :attr:`events`; every write that reached the "server" goes to :attr:`log`;
  :attr:`writes` counts like :attr:`modelplane.kube.KubeApi.writes` (apply, delete, merge patch);
- :meth:`fail` makes the next calls of a method raise :class:`~modelplane.kube.KubeError`, to
  test conflicts (409), throttling (429) and server errors (5xx).
"""

from __future__ import annotations

import copy
import itertools
from typing import Any, NamedTuple

from modelplane.kube import KubeError, Manifest, resource_path

Key = tuple[str, str, str, str]  # apiVersion, kind, namespace, name

METHODS = frozenset({"get", "list_objects", "apply", "delete", "patch_merge", "patch_status", "create_event"})


class Write(NamedTuple):
    """One write request that reached the fake API server."""

    method: str  # apply, delete, patch_merge, patch_status or create_event
    kind: str
    name: str


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, ``None`` deletes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _requirement_holds(requirement: str, labels: dict[str, str]) -> bool:
    requirement = requirement.strip()
    if "!=" in requirement:
        key, value = (part.strip() for part in requirement.split("!=", 1))
        return labels.get(key) != value
    if "=" in requirement:
        key, value = (part.strip() for part in requirement.replace("==", "=").split("=", 1))
        return labels.get(key) == value
    if requirement.startswith("!"):
        return requirement[1:].strip() not in labels
    return requirement in labels


def matches(label_selector: str, labels: dict[str, str]) -> bool:
    """Whether ``labels`` satisfy a comma-separated equality/existence selector ("" matches all)."""
    return all(_requirement_holds(r, labels) for r in label_selector.split(",") if r.strip())


class FakeKube:
    """An in-memory implementation of :class:`modelplane.kube.KubeClient` (see the module doc)."""

    def __init__(self, field_manager: str = "modelplane-operator") -> None:
        self.field_manager = field_manager
        self.objects: dict[Key, Manifest] = {}
        self.events: list[Manifest] = []
        self.log: list[Write] = []
        self.writes = 0
        self._faults: dict[str, list[KubeError]] = {}
        self._uids = itertools.count(1)
        self._versions = itertools.count(1)

    # -- for tests: arrange, inspect, inject faults -------------------------------------------

    def fail(self, method: str, status: int, times: int = 1, reason: str = "") -> None:
        """Make the next ``times`` calls of ``method`` raise ``KubeError(status, ...)``."""
        if method not in METHODS:
            raise ValueError(f"FakeKube has no method {method!r}")
        errors = self._faults.setdefault(method, [])
        errors += [KubeError(status, f"{method}: injected HTTP {status}", reason) for _ in range(times)]

    def put(self, manifest: Manifest) -> Manifest:
        """Create or replace an object as another actor would (a user, a controller, the kubelet).

        Not logged as a write. ``uid`` and ``generation`` stay server-managed: the uid of an
        existing object is kept (a new one takes ``metadata.uid`` if given), and ``generation``
        is bumped when ``spec`` changes. Returns a copy of what is stored.
        """
        return copy.deepcopy(self._store(copy.deepcopy(manifest)))

    def stored(self, api_version: str, kind: str, namespace: str, name: str) -> Manifest | None:
        """A copy of the stored object, or None."""
        found = self.objects.get((api_version, kind, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def names(self, api_version: str, kind: str, namespace: str) -> list[str]:
        """The names of the stored objects of a kind in a namespace, sorted."""
        return sorted(k[3] for k in self.objects if k[:3] == (api_version, kind, namespace))

    # -- the KubeClient protocol --------------------------------------------------------------

    async def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> Manifest | None:
        self._call("get", api_version, kind)
        return self.stored(api_version, kind, namespace or "", name)

    async def list_objects(
        self, api_version: str, kind: str, namespace: str, label_selector: str
    ) -> list[Manifest]:
        self._call("list_objects", api_version, kind)
        return [
            copy.deepcopy(self.objects[key])
            for key in sorted(self.objects)
            if key[:3] == (api_version, kind, namespace)
            and matches(label_selector, self.objects[key]["metadata"].get("labels") or {})
        ]

    async def apply(self, manifest: Manifest) -> Manifest:
        self.writes += 1
        self._call("apply", manifest["apiVersion"], manifest["kind"])
        meta = manifest["metadata"]
        key = (manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"])
        desired = {k: v for k, v in manifest.items() if k != "status"}
        merged = merge_patch(copy.deepcopy(self.objects.get(key, {})), desired)
        self.log.append(Write("apply", manifest["kind"], meta["name"]))
        return copy.deepcopy(self._store(merged))

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        self.writes += 1
        self._call("delete", api_version, kind)
        self.log.append(Write("delete", kind, name))
        self.objects.pop((api_version, kind, namespace, name), None)  # absent: fine, as for KubeApi

    async def patch_merge(
        self, api_version: str, kind: str, namespace: str, name: str, patch: Manifest, subresource: str = ""
    ) -> Manifest:
        self.writes += 1
        self._call("patch_merge", api_version, kind)
        live = copy.deepcopy(self._existing(api_version, kind, namespace, name))
        if subresource == "scale":
            replicas = patch.get("spec", {}).get("replicas")
            updated = merge_patch(live, {"spec": {"replicas": replicas}}) if replicas is not None else live
        elif subresource == "status":
            updated = merge_patch(live, {"status": patch.get("status")})
        elif subresource == "":
            updated = merge_patch(live, {k: v for k, v in patch.items() if k != "status"})
        else:
            raise ValueError(f"FakeKube has no subresource {subresource!r}")
        self.log.append(Write("patch_merge", kind, name))
        stored = self._store(updated)
        if subresource == "scale":
            return self._scale(stored)
        return copy.deepcopy(stored)

    async def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: Manifest
    ) -> Manifest:
        self._call("patch_status", api_version, kind)
        live = copy.deepcopy(self._existing(api_version, kind, namespace, name))
        self.log.append(Write("patch_status", kind, name))
        return copy.deepcopy(self._store(merge_patch(live, {"status": status})))

    async def create_event(self, namespace: str, event: Manifest) -> None:
        self._call("create_event", "v1", "Event")
        stored = copy.deepcopy(event)
        meta = stored.setdefault("metadata", {})
        meta.setdefault("name", f"{meta.get('generateName', 'event.')}{next(self._uids)}")
        meta["namespace"] = namespace
        self.events.append(stored)
        self.log.append(Write("create_event", "Event", meta["name"]))

    # -- internals ----------------------------------------------------------------------------

    def _call(self, method: str, api_version: str, kind: str) -> None:
        """Refuse kinds the real client does not know, and raise an injected fault if one is due."""
        resource_path(api_version, kind, None)  # ValueError for an unknown kind, like KubeApi
        pending = self._faults.get(method)
        if pending:
            raise pending.pop(0)

    def _existing(self, api_version: str, kind: str, namespace: str, name: str) -> Manifest:
        found = self.objects.get((api_version, kind, namespace, name))
        if found is None:
            raise KubeError(404, f"{kind} {namespace}/{name} not found", "NotFound")
        return found

    def _store(self, manifest: Manifest) -> Manifest:
        """Store ``manifest`` (owned by the caller), setting the server-managed metadata."""
        meta = manifest["metadata"]
        key = (manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"])
        previous = self.objects.get(key)
        if previous is None:
            meta["uid"] = meta.get("uid") or f"uid-{next(self._uids)}"
            meta["generation"] = 1
        else:
            old_meta = previous["metadata"]
            meta["uid"] = old_meta["uid"]
            changed = previous.get("spec") != manifest.get("spec")
            meta["generation"] = old_meta["generation"] + (1 if changed else 0)
        meta["resourceVersion"] = str(next(self._versions))
        self.objects[key] = manifest
        return manifest

    @staticmethod
    def _scale(stored: Manifest) -> Manifest:
        meta = stored["metadata"]
        return {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
            "spec": {"replicas": stored.get("spec", {}).get("replicas", 0)},
            "status": {"replicas": stored.get("status", {}).get("replicas", 0)},
        }
