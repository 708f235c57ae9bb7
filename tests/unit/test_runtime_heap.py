"""The runtime keeps its long-lived heap out of the collector's way, without keeping garbage.

Under load, full collections over torch's and the models' objects stopped the event loop for
100-160 ms every second or two (the runtime's p99 at c=64); after a load or unload the manager
freezes what is alive, and unfreezes first so that what an unloaded model left behind is freed.
Each settle walks the whole heap (100-150 ms on the event loop), so start-up settles once for all
the models it loads, not once per model.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelplane.serving.heap import settle_heap
from modelplane.serving.runtime import models
from modelplane.serving.runtime.metrics import RuntimeMetrics
from modelplane.serving.runtime.models import ModelManager
from modelplane.testing.runtime import make_mlp, mlp_config, write_model


class Node:
    """Something an unloaded model may leave in a reference cycle."""

    me: Node | None = None


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """The test process's heap as the next test expects it: nothing frozen."""
    yield
    gc.unfreeze()


@pytest.mark.usefixtures("unfrozen")
async def test_load_freezes_the_heap_and_unload_frees_what_was_frozen(tmp_path: Path) -> None:
    write_model(tmp_path / "models", "mlp", make_mlp(0), mlp_config("mlp"))
    manager = ModelManager(tmp_path / "models", tmp_path / "cache", RuntimeMetrics())
    try:
        gc.unfreeze()
        await manager.load("mlp")
        assert manager.resolve("mlp", None).state == "READY"
        assert gc.get_freeze_count() > 1000  # torch, the model and everything else alive

        node = Node()
        node.me = node
        ref = weakref.ref(node)
        await manager.load("mlp")  # a reload: the node, alive now, is frozen with the rest
        del node
        gc.collect()
        assert ref() is not None  # frozen: the collector does not look at it

        await manager.unload("mlp")
        assert ref() is None  # the unload's settle unfroze, collected it, and froze the rest again
        assert gc.get_freeze_count() > 1000
    finally:
        await manager.close()


@pytest.mark.usefixtures("unfrozen")
async def test_start_up_settles_the_heap_once_for_all_models(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for index, name in enumerate(("first", "second", "third")):
        write_model(tmp_path / "models", name, make_mlp(index), mlp_config(name))
    calls: list[None] = []

    def counted() -> None:
        calls.append(None)
        settle_heap()

    monkeypatch.setattr(models, "settle_heap", counted)
    manager = ModelManager(tmp_path / "models", tmp_path / "cache", RuntimeMetrics())
    try:
        gc.unfreeze()
        await manager.load_all()
        assert all(manager.resolve(name, None).state == "READY" for name in ("first", "second", "third"))
        assert len(calls) == 1
        assert gc.get_freeze_count() > 1000
    finally:
        await manager.close()
