"""Follows the registry's log and publishes it to Kafka, in order and without loss.

One relay leads; others wait as standbys. The leader reads the log from its published
position in pages, publishes each page (key = aggregate id, so one deal's events share a
partition and stay in order), and records the new position only once the broker has
acknowledged the whole page; then it sends a watermark to every partition ("everything up to
this position is on the topic"), from which the projections know how far each partition is
complete, even one that received none of the page's events. While the broker is
unreachable, partners keep writing to the log; the relay backs off, reconnects and catches up.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from contracts.events_v1 import EventEnvelope
from services.registry.adapters.event_store import DealRegistryStore
from services.registry.adapters.log_notifications import STOP_CHECK_SECONDS, listen_for_appends
from services.registry.relay.contract_events import Untranslatable, translated
from services.registry.relay.kafka_publisher import KafkaPublisher
from services.registry.relay.leadership import Leadership
from services.registry.relay.published_position import PublishedPosition

log = logging.getLogger("dealreg.relay")

STANDBY_POLL_SECONDS = 1.0


@dataclass
class RelayStatus:
    """What the relay's health and metrics endpoints report."""

    leading: bool = False
    broker_ok: bool = False
    published_events: int = 0
    # Stored events published as `UntranslatableEvent` records, for consumers to park.
    untranslatable_events: int = 0
    last_error: str = ""
    published_position: int = 0
    # The last position announced to every partition by a watermark (contracts.watermark_v1).
    watermark_position: int = 0


class Relay:
    def __init__(
        self,
        store: DealRegistryStore,
        published: PublishedPosition,
        leadership: Leadership,
        connect: Callable[[], KafkaPublisher],
        page_size: int = 1000,
        poll_seconds: float = 0.1,
        max_backoff_seconds: float = 10.0,
    ) -> None:
        self.store = store
        self.published = published
        self.leadership = leadership
        self.connect = connect
        self.page_size = page_size
        self.poll_seconds = poll_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.status = RelayStatus(published_position=published.load())
        self._publisher: KafkaPublisher | None = None
        self._appended = threading.Event()
        # Announced by this relay since it last connected; a new leader announces once even
        # if idle, since it cannot know whether the last leader's announcement went out.
        self._watermarked = -1

    def lag(self) -> int:
        return max(0, self.store.head_position() - self.status.published_position)

    def wake(self) -> None:
        """Something was appended to the log: publish it now rather than at the next poll."""
        self._appended.set()

    def run(self, stop: threading.Event) -> None:
        """Lead when possible, publish while leading, until `stop` is set. On PostgreSQL,
        every write to the log, by any process, wakes the caught-up leader (LISTEN/NOTIFY);
        `poll_seconds` is then only the safety net."""
        listener = listen_for_appends(self.store, self.wake)
        try:
            while not stop.is_set():
                if not self._acquire(stop):
                    return
                self._lead(stop)
        finally:
            if listener is not None:
                listener.stop()
            self._disconnect()
            self.leadership.release()
            self.status.leading = False

    def publish_page(self) -> int:
        """Publish the next page of the log; return how many log entries it covered."""
        position = self.published.load()
        notifications = list(self.store.read_log(after=position, limit=self.page_size))
        if not notifications:
            self.status.published_position = position
            self._announce(position)
            return 0
        # An event that cannot be translated goes out as a record the consumers park, in its
        # place and keyed by its aggregate: waiting for a fix here would stall every deal.
        items = [item.as_record() if isinstance(item, Untranslatable) else item
                 for item in translated(notifications, self.store.mapper)]
        if items:
            if self._publisher is None:
                self._publisher = self.connect()
            self._publisher.publish(items)
        self.published.save(notifications[-1].id)
        self.status.published_position = notifications[-1].id
        self.status.published_events += len(items)
        self.status.untranslatable_events += sum(
            1 for item in items if not isinstance(item, EventEnvelope))
        self._announce(notifications[-1].id)
        return len(notifications)

    def _announce(self, position: int) -> None:
        """Send a watermark for `position`, which the broker has acknowledged, unless this
        relay announced it already: one record per partition per page, none while idle. A
        failure raises; the next call (the next loop, even an idle one) tries again."""
        if position <= self._watermarked:
            return
        if self._publisher is None:
            self._publisher = self.connect()
        self._publisher.publish_watermark(position)
        self._watermarked = position
        self.status.watermark_position = position

    def _acquire(self, stop: threading.Event) -> bool:
        announced = False
        while not stop.is_set():
            try:
                if self.leadership.try_acquire():
                    log.info("relay is the leader")
                    self.status.leading = True
                    return True
            except Exception as exc:  # noqa: BLE001 - the database may be down; keep trying
                self.status.last_error = f"leadership: {exc}"
            if not announced:
                log.info("another relay leads; waiting as standby")
                announced = True
            stop.wait(STANDBY_POLL_SECONDS)
        return False

    def _lead(self, stop: threading.Event) -> None:
        backoff = self.poll_seconds
        while not stop.is_set():
            if not self.leadership.still_held():
                log.warning("relay lost leadership; returning to standby")
                self.status.leading = False
                self._disconnect()
                self.leadership.release()
                return
            try:
                if self._publisher is None:
                    self._publisher = self.connect()
                self.status.broker_ok = True
                covered = self.publish_page()
            except Exception as exc:  # noqa: BLE001 - broker or database trouble: retry later
                self.status.broker_ok = False
                self.status.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("publishing failed, retrying in %.1fs: %s", backoff,
                            self.status.last_error)
                self._disconnect()
                stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff_seconds)
                continue
            backoff = self.poll_seconds
            if covered < self.page_size:
                self._wait_for_appends(stop)

    def _wait_for_appends(self, stop: threading.Event) -> None:
        """Until the log grows, `poll_seconds` pass or `stop` is set. The stop flag is looked
        at every STOP_CHECK_SECONDS, so a long safety-net poll never delays shutdown."""
        deadline = time.monotonic() + self.poll_seconds
        while not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._appended.wait(min(remaining, STOP_CHECK_SECONDS)):
                break
        self._appended.clear()

    def _disconnect(self) -> None:
        if self._publisher is not None:
            try:
                self._publisher.close()
            except Exception:  # noqa: BLE001 - closing a broken producer may fail too
                log.debug("closing the producer failed", exc_info=True)
            self._publisher = None
        self._watermarked = -1
