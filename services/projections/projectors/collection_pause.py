"""Python's cyclic garbage collector held off while a batch is translated and applied.

A batch holds many thousand young containers alive at once (stored events, envelopes,
payloads, rows), and the collector, triggered every few hundred allocations, walks them
again and again: in a rebuild that was about 40% of the CPU per event. Nearly all of a
batch's garbage is freed by reference counting as it goes; the few cycles it leaves are
collected once the batch is done, when collection resumes.

The collector is the process's, so the pause is shared: it ends when the last batch under
way (of any thread) ends, and never turns on a collector that was off before.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_batches = 0
_was_enabled = False


@contextmanager
def collection_paused() -> Iterator[None]:
    global _batches, _was_enabled
    with _lock:
        if _batches == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _batches += 1
    try:
        yield
    finally:
        with _lock:
            _batches -= 1
            if _batches == 0 and _was_enabled:
                gc.enable()
