"""The set of served models: loading (in the background), lookup by name and version, unloading.

A model version is LOADING from the moment it is known until its file is fetched, loaded and warmed
up; requests to it meanwhile get 503. A reload builds the new versions while the old ones keep
serving, then swaps them in one step and stops the old ones.

The heap is settled (:func:`modelplane.serving.heap.settle_heap`) once the models present at start
are loaded, and after every later load and unload: torch and the loaded models are some 200,000
long-lived objects, and left in the collector's generations they make every full collection, one
every second or two under load, stop the event loop for 100-160 ms. Settling walks the whole heap
once (100-150 ms), so start-up does it once, not once per model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from modelplane.serving.heap import settle_heap
from modelplane.serving.runtime import repository
from modelplane.serving.runtime.artifacts import ArtifactError, fetch
from modelplane.serving.runtime.batcher import Batcher
from modelplane.serving.runtime.config import ConfigError, ModelSpec
from modelplane.serving.runtime.errors import InferenceError, bad_request, not_found, unavailable
from modelplane.serving.runtime.loader import LoadError, find_model_file, load_module
from modelplane.serving.runtime.metrics import RuntimeMetrics
from modelplane.serving.runtime.runner import ModelError, TorchRunner, pick_device
from modelplane.serving.runtime.statistics import ModelStatistics

log = logging.getLogger("modelplane.runtime")

LOADING, READY, UNAVAILABLE = "LOADING", "READY", "UNAVAILABLE"


@dataclass(eq=False)
class ServedModel:
    spec: ModelSpec
    version: int
    state: str = LOADING
    reason: str = ""
    runner: TorchRunner | None = None
    batcher: Batcher | None = None
    executor: ThreadPoolExecutor | None = None
    stats: ModelStatistics = field(default_factory=ModelStatistics)

    async def infer(self, arrays: list[Any], batch_size: int) -> list[Any]:
        if self.state != READY or self.batcher is None:
            raise unavailable(
                f"model {self.spec.name!r} version {self.version} is not ready ({self.state.lower()})"
            )
        return await self.batcher.submit(arrays, batch_size)

    async def stop(self) -> None:
        if self.batcher is not None:
            await self.batcher.stop()
        if self.executor is not None:
            self.executor.shutdown(wait=False)


@dataclass
class ModelEntry:
    """One model name: its versions (possibly none yet) and why it failed, if it did."""

    versions: dict[int, ServedModel] = field(default_factory=dict)
    state: str = LOADING
    reason: str = ""


class ModelManager:
    def __init__(self, root: Path, cache_dir: Path, metrics: RuntimeMetrics) -> None:
        self.root = root
        self.cache_dir = cache_dir
        self.metrics = metrics
        self._entries: dict[str, ModelEntry] = {}
        self._loader = ThreadPoolExecutor(max_workers=2, thread_name_prefix="model-loader")
        self._locks: dict[str, asyncio.Lock] = {}
        self._startup: set[str] = set()

    # -- lookups ---------------------------------------------------------------------------------

    def resolve(self, name: str, version: str | None) -> ServedModel:
        """The model version a request names; 404 if unknown, 503 if it is not ready."""
        entry = self._entries.get(name)
        if entry is None:
            raise not_found(f"unknown model {name!r}")
        if version:
            if not version.isdigit() or int(version) not in entry.versions:
                raise not_found(f"unknown version {version!r} of model {name!r}")
            return entry.versions[int(version)]
        ready = [m for v, m in sorted(entry.versions.items()) if m.state == READY]
        if ready:
            return ready[-1]
        if entry.versions:
            return entry.versions[max(entry.versions)]
        if entry.state == LOADING:
            raise unavailable(f"model {name!r} is loading")
        raise unavailable(f"model {name!r} is unavailable: {entry.reason}")

    def ready(self) -> bool:
        """Every model that the repository held at start (and that is not unloaded) is ready."""
        for name in self._startup:
            entry = self._entries.get(name)
            if entry is None:
                continue
            if entry.state != READY:
                return False
        return True

    def index(self) -> list[dict[str, str]]:
        """The repository index: every model on disk or loaded, with version and state."""
        rows: list[dict[str, str]] = []
        names = set(self._entries)
        with contextlib.suppress(OSError):
            names.update(repository.list_models(self.root))
        for name in sorted(names):
            entry = self._entries.get(name)
            if entry is None:
                rows.append({"name": name, "state": "UNAVAILABLE", "reason": "unloaded"})
            elif not entry.versions:
                rows.append({"name": name, "state": entry.state, "reason": entry.reason})
            for version, model in sorted((entry.versions if entry else {}).items()):
                rows.append(
                    {"name": name, "version": str(version), "state": model.state, "reason": model.reason}
                )
        return rows

    # -- lifecycle -------------------------------------------------------------------------------

    async def load_all(self) -> None:
        names = repository.list_models(self.root)
        self._startup = set(names)
        for name in names:
            self._entries.setdefault(name, ModelEntry())
        await asyncio.gather(*(self._load_logged(name) for name in names))
        settle_heap()

    async def _load_logged(self, name: str) -> None:
        try:
            await self._load(name)
        except InferenceError as exc:
            log.error("model %s failed to load: %s", name, exc.message)

    async def load(self, name: str) -> None:
        """Load (or reload) a model from the repository; raises 400/404 with the reason on failure."""
        await self._load(name)
        settle_heap()

    async def _load(self, name: str) -> None:
        try:
            repository.model_dir(self.root, name)
        except KeyError:
            raise not_found(f"no model {name!r} in the model repository") from None
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            entry = self._entries.setdefault(name, ModelEntry())
            if not entry.versions:
                entry.state, entry.reason = LOADING, ""
            try:
                spec = repository.read_spec(self.root, name)
                versions = repository.select_versions(spec, repository.available_versions(self.root / name))
            except ConfigError as exc:
                entry.state, entry.reason = UNAVAILABLE, str(exc)
                raise bad_request(str(exc)) from None
            fresh = [ServedModel(spec, v) for v in versions]
            if not entry.versions:  # first load: make the versions visible (as LOADING) right away
                entry.versions = {m.version: m for m in fresh}
            loop = asyncio.get_running_loop()
            results = await asyncio.gather(
                *(loop.run_in_executor(self._loader, self._build, m) for m in fresh), return_exceptions=True
            )
            failures = [
                f"version {m.version}: {r}" for m, r in zip(fresh, results, strict=True) if r is not None
            ]
            if failures:
                for model in fresh:
                    await model.stop()
                if entry.versions and all(m in fresh for m in entry.versions.values()):
                    for model in fresh:
                        model.state, model.reason = UNAVAILABLE, "; ".join(failures)
                    entry.state, entry.reason = UNAVAILABLE, "; ".join(failures)
                raise bad_request(f"model {name!r} failed to load: {'; '.join(failures)}")
            for model in fresh:
                self._start(model)
            old = [m for m in entry.versions.values() if m not in fresh]
            entry.versions = {m.version: m for m in fresh}
            entry.state, entry.reason = READY, ""
            self._entries[name] = entry
            for model in old:
                await model.stop()
            log.info("model %s ready (versions %s)", name, versions)

    async def unload(self, name: str) -> None:
        entry = self._entries.get(name)
        if entry is None:
            raise not_found(f"model {name!r} is not loaded")
        async with self._locks.setdefault(name, asyncio.Lock()):
            self._entries.pop(name, None)
            self._startup.discard(name)
            for model in entry.versions.values():
                model.state = UNAVAILABLE
                await model.stop()
            settle_heap()

    async def close(self) -> None:
        for entry in list(self._entries.values()):
            for model in entry.versions.values():
                await model.stop()
        self._loader.shutdown(wait=False)

    # -- building one version (runs in the loader thread) -----------------------------------------

    def _build(self, model: ServedModel) -> str | None:
        """Fetch, load and warm up; returns None on success, else the reason (never raises)."""
        spec = model.spec
        try:
            if spec.artifact_uri:
                path = fetch(
                    spec.artifact_uri,
                    spec.artifact_sha256,
                    self.cache_dir,
                    filename=spec.default_model_filename or "model.pt",
                )
            else:
                path = find_model_file(
                    self.root / spec.name / str(model.version), spec.default_model_filename
                )
            device = pick_device(spec.device_kind)
            runner = TorchRunner(load_module(path, spec, device), spec, device)
            if spec.warmup:
                runner.warm_up()
        except (ArtifactError, LoadError, ModelError, OSError) as exc:
            return str(exc)
        model.runner = runner
        return None

    def _start(self, model: ServedModel) -> None:
        assert model.runner is not None
        spec, name = model.spec, model.spec.name
        # torch's intra-op thread count is per OS thread: set it in the workers too, or each worker
        # starts a full OpenMP team that spins between small batches.
        model.executor = ThreadPoolExecutor(
            max_workers=spec.instance_count,
            thread_name_prefix=f"infer-{name}",
            initializer=torch.set_num_threads,
            initargs=(spec.intra_op_threads or torch.get_num_threads(),),
        )
        delay = None if spec.max_queue_delay_us is None else spec.max_queue_delay_us / 1e6
        model.batcher = Batcher(
            model.runner.run,
            model.executor,
            max_batch_size=spec.max_batch_size,
            max_delay_s=delay,
            workers=spec.instance_count,
            on_batch=lambda size: self.metrics.observe_batch(name, size),
            on_dequeue=lambda seconds: self._dequeued(model, seconds),
            on_executed=model.stats.executed,
            inline_below_s=spec.inline_below_us / 1e6,
            adaptive=spec.batch_wait == "adaptive",
        )
        model.batcher.start()
        model.state = READY

    def _dequeued(self, model: ServedModel, seconds: float) -> None:
        self.metrics.observe_queue(model.spec.name, seconds)
        model.stats.queued(seconds)

    def statistics(self, name: str, version: str | None) -> list[tuple[str, int, ModelStatistics]]:
        """The statistics of every loaded version (``name`` empty), of a model's, or of one version.

        404 for an unknown model or version, as Triton answers.
        """
        if not name:
            names = sorted(self._entries)
        elif name in self._entries:
            names = [name]
        else:
            raise not_found(f"unknown model {name!r}")
        found = [
            (n, v, model.stats)
            for n in names
            for v, model in sorted(self._entries[n].versions.items())
            if not version or str(v) == version
        ]
        if version and not found:
            raise not_found(f"unknown version {version!r} of model {name!r}")
        return found

    def versions_of(self, name: str) -> list[int]:
        entry = self._entries.get(name)
        return sorted(entry.versions) if entry else []
