"""The registry's deployment records, written through its REST API (the typed client, off the loop)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx

from modelplane.operator.records import Record, RecordError
from modelplane.registry_client.client import RegistryClient, RegistryClientError


@dataclass(frozen=True)
class RegistryRecords:
    """The registry's deployment records, through its REST API (the operator's token needs the
    write scope on the models it deploys)."""

    base_url: str
    token: str | None
    timeout_s: float = 10.0

    async def report(self, record: Record, namespace: str, deployment: str) -> None:
        await asyncio.to_thread(self._call, "report", record, namespace, deployment)

    async def remove(self, record: Record, namespace: str, deployment: str) -> None:
        await asyncio.to_thread(self._call, "remove", record, namespace, deployment)

    def _call(self, action: str, record: Record, namespace: str, deployment: str) -> None:
        where = f"{record.model} version {record.version} for {namespace}/{deployment}"
        try:
            with RegistryClient(self.base_url, token=self.token, timeout=self.timeout_s) as client:
                if action == "report":
                    client.report_deployment(record.model, record.version, namespace, deployment)
                else:
                    client.remove_deployment(record.model, record.version, namespace, deployment)
        except RegistryClientError as exc:
            if action == "remove" and exc.status == 404:
                return  # already gone (or the version itself was deleted): nothing to clean
            temporary = exc.status in (408, 409, 429) or exc.status >= 500
            raise RecordError(
                f"could not {action} the record of {where}: {exc}", temporary=temporary
            ) from exc
        except httpx.HTTPError as exc:
            raise RecordError(
                f"could not {action} the record of {where}: "
                f"the registry at {self.base_url} is unreachable: {exc}",
                temporary=True,
            ) from exc
