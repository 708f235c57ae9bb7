"""Keep a server's long-lived heap out of the cyclic garbage collector's way.

A server process holds many objects for its whole life (modules, routes, schemas; in the runtime,
torch and the loaded models: some 200,000). Left in the collector's generations, every full
collection walks all of them, and a full collection comes every second or two under load: in the
runtime that stopped the event loop for 100-160 ms at a time (p99 at c=64 on 2 vCPUs: 100-120 ms,
8-15 ms once frozen). Frozen (``gc.freeze``), they are skipped, and the collections that requests'
garbage triggers walk only the young objects.
"""

from __future__ import annotations

import gc


def settle_heap() -> None:
    """Freeze what is alive now, after collecting what is not.

    Call it when start-up is done and after any change to what lives long (a model loaded or
    unloaded). It unfreezes first, so that what a replaced or unloaded object left in reference
    cycles is reclaimed by the collection rather than kept frozen for the life of the process.
    The collection walks the whole heap: it blocks the calling thread (and the event loop on it)
    for about as long as one full collection, 100-150 ms in the runtime.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()
