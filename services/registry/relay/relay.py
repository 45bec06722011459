"""Follows the registry's log and publishes it to Kafka, in order and without loss.

One relay leads; others wait as standbys. The leader reads the log from its published
position in pages, publishes each page (key = aggregate id, so one deal's events share a
partition and stay in order), and records the new position only once the broker has
acknowledged the whole page; then it sends a watermark to every partition ("everything up to
this position is on the topic"), from which the projections know how far each partition is
complete, even one that received none of the page's events. While the broker is
unreachable, partners keep writing to the log; the relay backs off, reconnects and catches up.

Every record carries the epoch and its seq in its partition (`contracts.stream_v1`). When the
broker acknowledges an offset at or below one it acknowledged before, the topic has lost
what the relay published (a broker that restarted empty, a topic recreated): the relay says
so (log, metric, readiness) and publishes the whole log again in a new epoch, from which the
projections read their partitions again. While idle, it repeats its last watermark every
`heartbeat_seconds`, so a topic lost while nothing is written is seen within seconds too.
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
from services.registry.relay.published_position import (
    PublishedPosition,
    RelayStream,
    TopicLoss,
    TopicReshaped,
)

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
    epoch: int = 0  # the epoch this relay last published in
    topic_losses: int = 0  # topics found younger than the relay's records, by this process
    # Set when a topic loss was found: what happened, and the log head to re-publish up to.
    lost_topic: str = ""
    republish_until: int = 0
    reshaped: str = ""  # set while the topic's partitions are not those numbered

    def topic_fault(self) -> str:
        """Why the topic does not hold the whole log as the relay numbered it, or ''."""
        if self.reshaped:
            return self.reshaped
        if not self.lost_topic or self.published_position >= self.republish_until:
            return ""
        return (f"{self.lost_topic}; re-publishing the log: position "
                f"{self.published_position} of {self.republish_until}")


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
        heartbeat_seconds: float = 2.0,
    ) -> None:
        self.store = store
        self.published = published
        self.leadership = leadership
        self.connect = connect
        self.page_size = page_size
        self.poll_seconds = poll_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.status = RelayStatus(published_position=published.load())
        self._publisher: KafkaPublisher | None = None
        self._appended = threading.Event()
        # Announced by this relay since it last connected; a new leader announces once even
        # if idle, since it cannot know whether the last leader's announcement went out.
        self._watermarked = -1
        self._watermarked_at = 0.0

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
        stream = self.published.load_stream()
        self.status.epoch = stream.epoch
        notifications = list(self.store.read_log(after=position, limit=self.page_size))
        if not notifications:
            self.status.published_position = position
            self._announce(position, stream)
            return 0
        # An event that cannot be translated goes out as a record the consumers park, in its
        # place and keyed by its aggregate: waiting for a fix here would stall every deal.
        items = [item.as_record() if isinstance(item, Untranslatable) else item
                 for item in translated(notifications, self.store.mapper)]
        if items:
            self._connected().publish(items, stream)
            if self._found_lost(stream):
                return len(notifications)
        if not self.published.save(notifications[-1].id, stream):
            log.info("another epoch began while publishing; starting over from its position")
            return len(notifications)
        self.status.published_position = notifications[-1].id
        self.status.published_events += len(items)
        self.status.untranslatable_events += sum(
            1 for item in items if not isinstance(item, EventEnvelope))
        self._announce(notifications[-1].id, stream)
        return len(notifications)

    def _announce(self, position: int, stream: RelayStream) -> None:
        """Send a watermark for `position`, which the broker has acknowledged, unless this
        relay announced it less than `heartbeat_seconds` ago: one record per partition per
        page, and while idle one per heartbeat, whose offsets show a topic lost meanwhile.
        A failure raises; the next call (the next loop, even an idle one) tries again."""
        if position <= self._watermarked \
                and time.monotonic() - self._watermarked_at < self.heartbeat_seconds:
            return
        self._connected().publish_watermark(position, stream)
        if self._found_lost(stream) or not self.published.save(None, stream):
            return
        self._watermarked = position
        self._watermarked_at = time.monotonic()
        self.status.watermark_position = position

    def _found_lost(self, stream: RelayStream) -> bool:
        """If the broker's acknowledgements show the topic younger than the relay's records,
        begin a new epoch (the whole log is published again) and say so; True then."""
        loss = stream.younger_topic()
        if loss is None:
            return False
        self._begin_epoch_after(loss, stream)
        return True

    def _begin_epoch_after(self, loss: TopicLoss, stream: RelayStream) -> None:
        head = self.store.head_position()
        epoch = self.published.start_epoch(acked=stream.seen_high)
        self.status.topic_losses += 1
        self.status.lost_topic = (f"topic {self.published.topic} lost records the relay had "
                                  f"published ({loss.describe()})")
        self.status.republish_until = head
        self.status.published_position = 0
        self.status.epoch = epoch
        self._watermarked = -1
        log.error("%s: the broker restarted empty or the topic was recreated; publishing the "
                  "whole log again (positions 1 to %d) in epoch %d", self.status.lost_topic,
                  head, epoch, extra={"fields": {
                      "partition": loss.partition, "offset": loss.offset,
                      "acknowledged_before": loss.before, "epoch": epoch,
                      "republish_until": head}})

    def _connected(self) -> KafkaPublisher:
        if self._publisher is None:
            self._publisher = self.connect()
        return self._publisher

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
                self._connected()
                self.status.broker_ok = True
                covered = self.publish_page()
                self.status.reshaped = ""
            except TopicReshaped as exc:
                if not self.status.reshaped:
                    log.error("%s", exc)
                self.status.reshaped = str(exc)
                stop.wait(self.max_backoff_seconds)
                continue
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
