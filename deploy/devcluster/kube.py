"""A thin HTTP client for the Kubernetes API (httpx, bearer token), sync and async.

The node agent and the cluster launcher only need a handful of calls; plain HTTP keeps them fast to
start and lets the agent use asyncio without threads.
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml


class ApiError(RuntimeError):
    def __init__(self, status: int, body: str, what: str) -> None:
        super().__init__(f"{what}: HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body


@dataclass(frozen=True)
class Credentials:
    server: str
    token: str
    ca_file: str

    @classmethod
    def from_kubeconfig(cls, path: Path) -> Credentials:
        """Read the admin kubeconfig the launcher writes (token auth, CA file)."""
        config = yaml.safe_load(path.read_text())
        context_name = config["current-context"]
        context = next(c["context"] for c in config["contexts"] if c["name"] == context_name)
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
        user = next(u["user"] for u in config["users"] if u["name"] == context["user"])
        return cls(server=cluster["server"], token=user["token"], ca_file=cluster["certificate-authority"])

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


MERGE_PATCH = "application/merge-patch+json"


def _check(response: httpx.Response, what: str) -> Any:
    if response.status_code >= 400:
        raise ApiError(response.status_code, response.text, what)
    return response.json() if response.content else None


class Api:
    """Synchronous client (launcher, tests)."""

    def __init__(self, creds: Credentials, timeout: float = 10.0) -> None:
        self.creds = creds
        self.client = httpx.Client(
            base_url=creds.server, headers=creds.headers(), verify=creds.ssl_context(), timeout=timeout
        )

    def close(self) -> None:
        self.client.close()

    def get(self, path: str, **params: str) -> Any:
        return _check(self.client.get(path, params=params), f"GET {path}")

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return _check(self.client.post(path, json=body), f"POST {path}")

    def delete(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return _check(self.client.request("DELETE", path, content=json.dumps(body or {})), f"DELETE {path}")

    def patch(self, path: str, body: dict[str, Any]) -> Any:
        return _check(
            self.client.patch(path, content=json.dumps(body), headers={"Content-Type": MERGE_PATCH}),
            f"PATCH {path}",
        )


class AsyncApi:
    """Asynchronous client (node agent)."""

    def __init__(self, creds: Credentials, timeout: float = 10.0) -> None:
        self.creds = creds
        self.client = httpx.AsyncClient(
            base_url=creds.server, headers=creds.headers(), verify=creds.ssl_context(), timeout=timeout
        )

    async def close(self) -> None:
        await self.client.aclose()

    async def get(self, path: str, **params: str) -> Any:
        return _check(await self.client.get(path, params=params), f"GET {path}")

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        return _check(await self.client.post(path, json=body), f"POST {path}")

    async def put(self, path: str, body: dict[str, Any]) -> Any:
        return _check(await self.client.put(path, json=body), f"PUT {path}")

    async def delete(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return _check(
            await self.client.request("DELETE", path, content=json.dumps(body or {})), f"DELETE {path}"
        )

    async def patch(self, path: str, body: dict[str, Any]) -> Any:
        return _check(
            await self.client.patch(path, content=json.dumps(body), headers={"Content-Type": MERGE_PATCH}),
            f"PATCH {path}",
        )
