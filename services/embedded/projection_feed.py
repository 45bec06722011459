"""Embedded mode: the read models follow the registry's log directly, with no broker between.

The log is read in pages, translated to contract envelopes, and applied with the position in
one transaction, so a restart resumes exactly where the read model's position says. A stored
event that cannot be translated or applied is parked (see `projectors.parking`) and the feed
goes on; a lost database connection is retried with backoff.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import threading
from collections.abc import Callable
from typing import Any, Protocol, TextIO

from eventsourcing.persistence import Notification

from contracts.events_v1 import EventEnvelope
from services.projections.projectors.collection_pause import collection_paused
from services.projections.projectors.failures import is_transient
from services.projections.projectors.parking import ParkedEvent, SourceEntry, Unreadable
from services.projections.projectors.read_model_projector import ReadModelProjector
from services.projections.read_model.progress import LOG_SOURCE, AppliedPosition, SourceProgress
from services.projections.read_model.tables import READ_MODEL_VERSION
from services.projections.rebuild.feeds import LogFeed, RebuildFailed
from services.projections.rebuild.progress_bar import RebuildProgress
from services.projections.rebuild.rebuild import (
    live_version,
    rebuild_read_model,
    version_refusal,
)
from services.registry.adapters.event_store import DealRegistryStore, open_event_store
from services.registry.adapters.log_notifications import listen_for_appends
from services.registry.relay.contract_events import Untranslatable, translated
from services.shared.database import create_sql_engine
from services.shared.log_setup import configure_logging
from services.shared.settings import Settings

log = logging.getLogger("dealreg.projection_feed")

COALESCE_SECONDS = 0.002
STARTUP_TIMEOUT_SECONDS = 60
FIRST_BACKOFF_SECONDS = 0.1
MAX_BACKOFF_SECONDS = 5.0


def log_entries(notifications: list[Notification], store: DealRegistryStore
                ) -> list[SourceEntry]:
    """The log's entries as the projector takes them: envelopes, or what could not be
    translated (parked against its aggregate, so the aggregate's later events wait). Hashes
    are the chain's where the page holds the event's successor (`translated`)."""
    entries = []
    for item in translated(notifications, store.mapper, chained_hashes=True):
        if isinstance(item, EventEnvelope):
            entries.append(SourceEntry.of_log(item))
            continue
        entries.append(SourceEntry(LOG_SOURCE, 0, item.position, unreadable=unreadable(item)))
    return entries


def unreadable(item: Untranslatable) -> Unreadable:
    return Unreadable(
        reason=item.reason, raw=item.stored_state, position=item.position,
        aggregate_id=item.aggregate_id, aggregate_version=item.aggregate_version,
        event_type=item.stored_type,
    )


def reread_from_log(store: DealRegistryStore) -> Callable[[ParkedEvent], SourceEntry | None]:
    """For retrying a parked event: its stored event read and translated again, e.g. after
    a fix of the translation; None if the log has no event at its position."""

    def reread(event: ParkedEvent) -> SourceEntry | None:
        if event.position is None:
            return None
        found = [n for n in store.read_log(after=event.position - 1, limit=1)
                 if n.id == event.position]
        entries = log_entries(found, store)
        if not entries:
            return None
        entry = entries[0]
        return SourceEntry(event.source, event.partition, event.offset, entry.envelope,
                           entry.unreadable)

    return reread


def log_rebuild_feed(store: DealRegistryStore, stop: threading.Event | None = None,
                     page_size: int = 2000, close: Callable[[], None] = lambda: None
                     ) -> LogFeed:
    """What a rebuild reads from the registry's log: its pages, as this feed reads them.
    Once `stop` is set the next page raises, which ends the rebuild with nothing switched."""

    def read_page(after: int, until: int, limit: int) -> tuple[list[SourceEntry], int | None]:
        if stop is not None and stop.is_set():
            raise RebuildFailed("stopped: the service is shutting down")
        page = [n for n in store.read_log(after=after, limit=limit) if n.id <= until]
        return log_entries(page, store), (page[-1].id if page else None)

    return LogFeed(read_page, close, page_size=page_size)


class ReadModelUpgrade:
    """`dealreg up` over a read model of an older version than the code's: rebuilds the
    code's version from the log beside the live one, in a thread, then switches to it and
    only then lets the feed follow the log (never projecting into the old tables).

    Meanwhile the service takes writes (they are in the log, and applied after the switch);
    reads answer 503 (`serving_reads`), and /readyz says the read model is rebuilding. A
    failed rebuild is logged and tried again; nothing was switched."""

    FIRST_RETRY_SECONDS = 1.0
    MAX_RETRY_SECONDS = 60.0

    def __init__(self, engine: Any, store: DealRegistryStore, from_version: int,
                 stream: TextIO | None = None, page_size: int = 2000) -> None:
        self.engine = engine
        self.store = store
        self.from_version = from_version
        self.to_version = READ_MODEL_VERSION
        self.stream = stream or sys.stderr
        self.page_size = page_size
        self.progress: RebuildProgress | None = None
        self.failure: str | None = None
        self.following = False  # `then` has been called: the feed follows the log
        self._switched = threading.Event()
        self._reads = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def serving_reads(self) -> bool:
        return self._reads.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Until reads are served again (the switch is done and the feed caught up)."""
        return self._reads.wait(timeout)

    def start(self, then: Callable[[], None]) -> None:
        """Rebuild in a thread; once switched, call `then` (start the feed) and serve reads."""
        self._thread = threading.Thread(target=self._run, args=(then,),
                                        name="read-model-rebuild", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self, then: Callable[[], None]) -> None:
        retry = self.FIRST_RETRY_SECONDS
        while not self._stop.is_set():
            try:
                stored = live_version(self.engine)
            except Exception:  # noqa: BLE001 - the rebuild's own attempt reports it
                stored = self.from_version
            if stored == self.to_version:
                # Another instance on this database rebuilt it meanwhile.
                log.warning("the read model is version %s now", stored)
                self._switched.set()
                break
            if stored is not None and stored > self.to_version:
                self.failure = version_refusal(stored)
                log.error("not rebuilding the read model, nor serving reads: %s", self.failure)
                return
            log.warning("the read model is version %s, this code builds version %s: "
                        "rebuilding it from the log beside the live one (reads answer 503 "
                        "until the switch; progress on stderr)", self.from_version,
                        self.to_version)
            self.progress = RebuildProgress(self.stream)
            try:
                report = rebuild_read_model(
                    self.engine, log_rebuild_feed(self.store, self._stop, self.page_size),
                    self.progress)
            except Exception as exc:  # noqa: BLE001 - logged, tried again
                if self._stop.is_set():
                    return
                self.failure = f"{type(exc).__name__}: {exc}"[:300]
                log.exception("rebuilding the read model to version %s failed, nothing was "
                              "switched; trying again in %.0f s", self.to_version, retry)
                self._stop.wait(retry)
                retry = min(retry * 2, self.MAX_RETRY_SECONDS)
                continue
            self.failure = None
            self._switched.set()
            log.warning(
                "switched to the rebuilt read model, version %s: %s events to position %s "
                "in %.1f s%s%s", self.to_version, report.events, report.position,
                report.total_seconds,
                f"; changed shape: {', '.join(report.reshaped)}" if report.reshaped else "",
                f"; rows differing from version {self.from_version}: "
                f"{', '.join(report.mismatched)}" if report.mismatched else "")
            break
        if self._stop.is_set():
            return
        try:
            then()
            self.following = True
        except Exception:  # noqa: BLE001 - the rebuilt model is served as far as it goes
            log.exception("the projection feed did not start after the rebuild")
        self._reads.set()

    def status(self) -> dict[str, Any]:
        """For /readyz: the read model's version and, until the switch, the rebuild's."""
        if self._switched.is_set():
            return {"version": self.to_version, "state": "current"}
        progress = self.progress
        return {"version": self.from_version, "state": "rebuilding",
                "rebuilding_to": self.to_version,
                "done": progress.done if progress else 0,
                "total": progress.total if progress else 0,
                "last_failure": self.failure}

    def describe(self) -> str:
        progress = self.progress
        done = f": {progress.done:,} of {progress.total:,} log entries" \
            if progress and progress.total else ""
        failed = f" (last attempt failed: {self.failure})" if self.failure else ""
        return (f"rebuilding the read model from version {self.from_version} to version "
                f"{self.to_version}{done}{failed}")


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
            with collection_paused():  # the page's translation too (`collection_pause`)
                notifications = list(self.store.read_log(after=self._read_to,
                                                         limit=self.page_size))
                if not notifications:
                    return self._read_to
                read_to = notifications[-1].id
                self.projector.project(log_entries(notifications, self.store),
                                       [SourceProgress.of_log(read_to)])
            self._read_to = read_to

    def catch_up_at_start(self) -> None:
        """Catch up before serving, so the first reads are complete; a failure here (a
        database that does not answer yet) is logged and left to the follower's retries, so
        the service starts whatever the state of the log."""
        try:
            self.catch_up()
        except Exception as exc:  # noqa: BLE001 - see above
            log.warning("catching up at start failed, the feed retries: %s: %s",
                        type(exc).__name__, exc)

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
        backoff = FIRST_BACKOFF_SECONDS
        while not stop.is_set():
            if wake.is_set():
                # Let concurrent writers land, so one transaction applies all of them.
                stop.wait(COALESCE_SECONDS)
            wake.clear()
            try:
                self.catch_up()
                backoff = FIRST_BACKOFF_SECONDS
            except Exception as exc:  # noqa: BLE001 - keep following; the next round retries
                # Data the projector cannot apply is parked, not raised: what arrives here is
                # the database or the log being unavailable, which passes.
                if is_transient(exc):
                    log.warning("projection feed: database unavailable, retrying in %.1fs: "
                                "%s: %s", backoff, type(exc).__name__, exc)
                else:
                    log.exception("projection feed failed; retrying in %.1fs", backoff)
                self._read_to = None  # look at the stored progress again
                stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                continue
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
        self.feed.catch_up_at_start()
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
