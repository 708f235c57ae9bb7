"""Scraping the routers' metrics pages for the autoscaler, about once a second.

The arithmetic (averages over the scrape interval, sums over routers) lives in
:mod:`modelplane.autoscaling.load`; this is the I/O around it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import httpx

from modelplane.autoscaling.load import ConcurrencyAverager, ModelLoad, Scrape, parse_router_page

log = logging.getLogger("modelplane.autoscaler")


@dataclass
class LoadCache:
    """The latest per-model load, refreshed by :meth:`run`; ``fresh`` tells whether scrapes succeed."""

    urls: list[str]
    interval_s: float = 1.0
    loads: dict[str, ModelLoad] = field(default_factory=dict)
    updated: float = 0.0
    errors: int = 0
    averager: ConcurrencyAverager = field(default_factory=ConcurrencyAverager)

    def fresh(self, now: float, max_age_s: float = 10.0) -> bool:
        return now - self.updated <= max_age_s

    async def scrape_once(self, client: httpx.AsyncClient) -> None:
        results = await asyncio.gather(*(self._get(client, url) for url in self.urls), return_exceptions=True)
        pages: dict[str, Scrape] = {}
        for url, result in zip(self.urls, results, strict=True):
            if isinstance(result, BaseException):
                self.errors += 1
                log.warning("cannot scrape router metrics at %s: %s", url, result)
                continue
            pages[url] = result
        if pages or not self.urls:
            self.loads = self.averager.update(pages)
            self.updated = time.monotonic()

    @staticmethod
    async def _get(client: httpx.AsyncClient, url: str) -> Scrape:
        response = await client.get(url)
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}")
        return Scrape(parse_router_page(response.text), time.monotonic())

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
            while True:
                await self.scrape_once(client)
                await asyncio.sleep(self.interval_s)
