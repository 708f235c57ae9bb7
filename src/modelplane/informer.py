"""A list-then-watch cache of one kind of object, kept current and resumed after every break.

What client-go's informers do, in a page: list once, watch from the list's resourceVersion,
resume from the last version seen when the server ends a watch, and re-list on ``410 Gone`` (the
version is too old) or any error, after a short back-off. ``on_change`` runs after every change,
so consumers recompute from the whole cache (level-triggered) rather than from single events.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from modelplane.kube import KubeApi, KubeError, Manifest

log = logging.getLogger("modelplane.informer")


def object_key(obj: Manifest) -> str:
    meta = obj.get("metadata", {})
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


class Informer:
    """Caches ``kind`` objects cluster-wide (or in one namespace) matching ``label_selector``."""

    def __init__(
        self,
        kube: KubeApi,
        api_version: str,
        kind: str,
        on_change: Callable[[], None],
        label_selector: str | None = None,
        namespace: str | None = None,
        watch_timeout_s: int = 300,
    ) -> None:
        self.kube = kube
        self.api_version = api_version
        self.kind = kind
        self.label_selector = label_selector
        self.namespace = namespace
        self.on_change = on_change
        self.watch_timeout_s = watch_timeout_s
        self.items: dict[str, Manifest] = {}
        self.synced = asyncio.Event()

    async def run(self) -> None:
        """Run forever: list, watch, resume; errors back off and re-list."""
        backoff = 0.5
        while True:
            try:
                version = await self._relist()
                backoff = 0.5
                while True:
                    version = await self._watch_once(version)
            except KubeError as exc:
                log.warning("%s informer: %s; re-listing in %.1fs", self.kind, exc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)

    async def _relist(self) -> str:
        items, version = await self.kube.list_with_version(
            self.api_version, self.kind, self.namespace, self.label_selector
        )
        self.items = {object_key(item): item for item in items}
        self.synced.set()
        self.on_change()
        return version

    async def _watch_once(self, version: str) -> str:
        async for event in self.kube.watch(
            self.api_version, self.kind, self.namespace, version, self.label_selector, self.watch_timeout_s
        ):
            kind, obj = event.get("type"), event.get("object", {})
            if kind == "ERROR":
                raise KubeError(int(obj.get("code", 0)), f"watch error: {obj.get('message', obj)}")
            version = obj.get("metadata", {}).get("resourceVersion", version)
            if kind == "BOOKMARK":
                continue
            if kind == "DELETED":
                self.items.pop(object_key(obj), None)
            else:
                self.items[object_key(obj)] = obj
            self.on_change()
        return version
