"""Readers waiting to see a log position: released as soon as the projector commits it.

One watcher task reads the projector's committed position from shared memory every
millisecond while anyone waits, and releases the readers it reached: a thousand waiting
readers cost one poll, not a thousand.
"""

from __future__ import annotations

import asyncio
import contextlib

from services.projections.read_model.progress import AppliedPosition

WATCH_SECONDS = 0.001


class PositionWaiters:
    def __init__(self, applied: AppliedPosition) -> None:
        self.applied = applied
        self._waiting: list[tuple[int, asyncio.Future[None]]] = []
        self._watcher: asyncio.Task[None] | None = None

    async def wait(self, wanted: int, timeout: float) -> bool:
        """Whether the projector committed `wanted` within `timeout` seconds."""
        if self.applied.value >= wanted:
            return True
        loop = asyncio.get_running_loop()
        reached: asyncio.Future[None] = loop.create_future()
        entry = (wanted, reached)
        self._waiting.append(entry)
        if self._watcher is None or self._watcher.done():
            self._watcher = loop.create_task(self._watch())
        try:
            await asyncio.wait_for(reached, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            with contextlib.suppress(ValueError):
                self._waiting.remove(entry)

    async def _watch(self) -> None:
        while self._waiting:
            await asyncio.sleep(WATCH_SECONDS)
            position = self.applied.value
            for wanted, reached in self._waiting:
                if position >= wanted and not reached.done():
                    reached.set_result(None)
