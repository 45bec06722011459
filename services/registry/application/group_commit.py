"""Group commit: concurrent requests' events are saved together, in one transaction.

Requests hand their aggregates to one committer thread. While it commits a batch, new
requests queue; the next batch takes everything queued, so no request waits for a timer and
a busy store commits many requests per transaction. Each request still gets its own result:
if a batch fails (one request's version or receipt conflicts), its requests are saved one
by one, so one failure never fails a neighbour.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from eventsourcing.application import Application
from eventsourcing.persistence import Recording

log = logging.getLogger("dealreg.group_commit")


@dataclass
class _Request:
    # Events, not aggregates: a failed save must leave them intact for the retry alone.
    events: list[Any]
    # What is written with the events, in their transaction (adapters.receipt_table).
    receipts: list[Any]
    result: Future[list[Recording[Any]]] = field(default_factory=Future)


class GroupCommitter:
    def __init__(self, store: Application[Any], max_batch: int = 500) -> None:
        self.store = store
        self.max_batch = max_batch
        self.batches = 0
        self.saved_requests = 0
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
        self._thread.start()

    def save(self, *objs: Any) -> list[Recording[Any]]:
        """Save the aggregates' pending events; returns their recordings, in order.
        Raises what saving them alone would raise (IntegrityError on a conflict)."""
        return self.save_events([event for obj in objs for event in obj.collect_events()])

    def save_events(self, events: list[Any], receipts: list[Any] | None = None
                    ) -> list[Recording[Any]]:
        """Save these events, and the receipts with them, in one transaction, in this order;
        returns the events' recordings."""
        request = _Request(events, receipts or [])
        self._queue.put(request)
        return request.result.result()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._commit(batch)
                    return
                batch.append(more)
            self._commit(batch)

    def _commit(self, batch: list[_Request]) -> None:
        self.batches += 1
        self.saved_requests += len(batch)
        if len(batch) > 1:
            try:
                recordings = self.store.save(
                    *(event for r in batch for event in r.events),
                    receipts=[receipt for r in batch for receipt in r.receipts])
            except Exception:  # noqa: BLE001 - find which request failed by saving alone
                log.debug("batch of %d failed; saving one by one", len(batch), exc_info=True)
            else:
                start = 0
                for request in batch:
                    request.result.set_result(recordings[start:start + len(request.events)])
                    start += len(request.events)
                return
        for request in batch:
            try:
                request.result.set_result(
                    self.store.save(*request.events, receipts=request.receipts))
            except Exception as exc:  # noqa: BLE001 - handed to the waiting request
                request.result.set_exception(exc)
