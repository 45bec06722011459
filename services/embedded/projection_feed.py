"""Embedded mode: the read models follow the registry's log directly, with no broker between.

The log is read in pages, translated to contract envelopes, and applied with the position in
one transaction, so a restart resumes exactly where the read model's position says.
"""

from __future__ import annotations

import logging
import threading

from services.projections.projectors.read_model_projector import ReadModelProjector
from services.projections.read_model.progress import LOG_SOURCE, SourceProgress
from services.registry.adapters.event_store import DealRegistryStore
from services.registry.relay.contract_events import envelopes_from

log = logging.getLogger("dealreg.projection_feed")

COALESCE_SECONDS = 0.002


class EmbeddedProjectionFeed:
    def __init__(
        self,
        store: DealRegistryStore,
        projector: ReadModelProjector,
        page_size: int = 1000,
        poll_seconds: float = 0.5,
    ) -> None:
        self.store = store
        self.projector = projector
        self.page_size = page_size
        self.poll_seconds = poll_seconds
        self._wake = threading.Event()
        # This feed is the read model's only writer in its process, so after one look at the
        # stored progress it knows where it is.
        self._read_to: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def catch_up(self) -> int:
        """Apply everything in the log past the read model's position; return the new position."""
        if self._read_to is None:
            self._read_to = self.projector.resume_offsets(LOG_SOURCE).get(0, 0)
        while True:
            notifications = list(self.store.read_log(after=self._read_to, limit=self.page_size))
            if not notifications:
                return self._read_to
            envelopes = envelopes_from(notifications, self.store.mapper)
            read_to = notifications[-1].id
            self.projector.apply(envelopes, [SourceProgress.of_log(read_to)])
            self._read_to = read_to

    def wake(self) -> None:
        """Called after a write so the new event becomes readable without waiting for a poll."""
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="projection-feed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._wake.is_set():
                # Let concurrent writers land, so one transaction applies all of them.
                self._stop.wait(COALESCE_SECONDS)
            self._wake.clear()
            try:
                self.catch_up()
            except Exception:  # noqa: BLE001 - keep following; the next round retries
                log.exception("projection feed failed; retrying")
                self._stop.wait(1.0)
            self._wake.wait(self.poll_seconds)
