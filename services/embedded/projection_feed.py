"""Embedded mode: the read models follow the registry's log directly, with no broker between.

The log is read in pages, translated to contract envelopes, and applied with the position in
one transaction, so a restart resumes exactly where the read model's position says.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from typing import Any, Protocol

from services.projections.projectors.read_model_projector import ReadModelProjector
from services.projections.read_model.progress import LOG_SOURCE, AppliedPosition, SourceProgress
from services.registry.adapters.event_store import DealRegistryStore, open_event_store
from services.registry.adapters.log_notifications import listen_for_appends
from services.registry.relay.contract_events import envelopes_from
from services.shared.database import create_sql_engine
from services.shared.log_setup import configure_logging
from services.shared.settings import Settings

log = logging.getLogger("dealreg.projection_feed")

COALESCE_SECONDS = 0.002
STARTUP_TIMEOUT_SECONDS = 60


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
        # This feed is the read model's only writer in its process, so after one look at the
        # stored progress it knows where it is.
        self._read_to: int | None = None

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

    def follow(self, wake: Signal, stop: Signal) -> None:
        """Catch up whenever `wake` is set, or every `poll_seconds`, until `stop` is set.

        On PostgreSQL a write by any process sets `wake` (LISTEN/NOTIFY); on SQLite only the
        writing process in this installation does."""
        listener = listen_for_appends(self.store, wake.set)
        try:
            self._follow(wake, stop)
        finally:
            if listener is not None:
                listener.stop()

    def _follow(self, wake: Signal, stop: Signal) -> None:
        while not stop.is_set():
            if wake.is_set():
                # Let concurrent writers land, so one transaction applies all of them.
                stop.wait(COALESCE_SECONDS)
            wake.clear()
            try:
                self.catch_up()
            except Exception:  # noqa: BLE001 - keep following; the next round retries
                log.exception("projection feed failed; retrying")
                stop.wait(1.0)
            wake.wait(self.poll_seconds)


class Signal(Protocol):
    """threading.Event or multiprocessing.Event."""

    def set(self) -> None: ...
    def clear(self) -> None: ...
    def is_set(self) -> bool: ...
    def wait(self, timeout: float | None = None) -> bool: ...


class FeedThread:
    """The feed in a thread of the serving process (tests, small installs)."""

    def __init__(self, feed: EmbeddedProjectionFeed) -> None:
        self.feed = feed
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=feed.follow, args=(self._wake, self._stop), name="projection-feed",
            daemon=True,
        )

    def start(self) -> None:
        self.feed.catch_up()
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)


class FeedProcess:
    """The feed in a process of its own, so projecting never competes with the write path
    for the interpreter lock. Writes wake it through a shared event."""

    def __init__(self, settings: Settings, applied: AppliedPosition) -> None:
        context = multiprocessing.get_context("spawn")  # no fork of a threaded server
        self._wake = context.Event()
        self._stop = context.Event()
        self._ready = context.Event()
        self._process = context.Process(
            target=_follow_in_child,
            args=(settings.model_dump(), applied, self._wake, self._stop, self._ready,
                  os.getpid()),
            name="dealreg-projection-feed", daemon=True,
        )

    def start(self) -> None:
        """Start the process and wait until it follows the log (it imports for a second or
        two; writes made meanwhile would wait that long to become visible)."""
        self._process.start()
        if not self._ready.wait(STARTUP_TIMEOUT_SECONDS):
            self.stop()
            raise RuntimeError("the projection feed process did not start")

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(timeout=5)


class _ParentWatch:
    """A stop signal that also fires when the serving process is gone (killed, not stopped)."""

    def __init__(self, stop: Signal, parent_pid: int) -> None:
        self.stop = stop
        self.parent_pid = parent_pid

    def is_set(self) -> bool:
        return self.stop.is_set() or os.getppid() != self.parent_pid

    def wait(self, timeout: float | None = None) -> bool:
        self.stop.wait(timeout)
        return self.is_set()

    def set(self) -> None:
        self.stop.set()

    def clear(self) -> None:
        self.stop.clear()


def _follow_in_child(
    settings: dict[str, Any], applied: AppliedPosition, wake: Signal, stop: Signal,
    ready: Signal, parent: int,
) -> None:
    config = Settings(**settings)
    configure_logging(config.log_level)
    store = open_event_store(config)
    engine = create_sql_engine(config.read_model_url())
    feed = EmbeddedProjectionFeed(store, ReadModelProjector(engine, applied=applied),
                                  poll_seconds=config.projection_poll_seconds)
    ready.set()
    try:
        feed.follow(wake, _ParentWatch(stop, parent))
    finally:
        store.close()
        engine.dispose()
