"""What a rebuild reads from the beginning: the registry's log, or the Kafka topic.

Each feed applies events to the fresh tables exactly as the live feed of the same kind does
(the same pages of the log, the same per-partition progress of the topic), but never past a
target: the offsets the live read model has recorded. So the rebuilt tables end with the
same events applied, and the same progress recorded, as the live ones.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from sqlalchemy import Connection

from services.projections.consumer.kafka_consumer import (
    MAX_POLL_RECORDS,
    POLL_TIMEOUT_MS,
    ConsumerConfig,
    ProjectionConsumer,
)
from services.projections.projectors.collection_pause import collection_paused
from services.projections.projectors.parking import SourceEntry
from services.projections.projectors.read_model_projector import ReadModelProjector
from services.projections.read_model.progress import (
    LOG_SOURCE,
    SourceProgress,
    offsets_by_source,
)
from services.projections.rebuild.progress_bar import RebuildProgress

log = logging.getLogger("dealreg.projections.rebuild")

# Offsets per partition of a source (the log is one partition, its offsets are positions).
Target = dict[int, int]

# A Kafka partition that yields nothing for this long while short of its target has lost
# events (retention) or is unreachable: stop rather than wait forever.
STALLED_SECONDS = 60.0

# Log entries a rebuild applies per transaction of the fresh tables.
REBUILD_BATCH_ENTRIES = 20_000


class RebuildFailed(Exception):
    """The rebuild cannot reach what the live read model has applied; nothing was switched."""


class Feed(Protocol):
    source: str
    applied: int  # envelopes applied so far

    def size(self, target: Target) -> int:
        """How many log entries or records lie up to `target`, for the progress bar."""
        ...

    def apply_until(self, projector: ReadModelProjector, target: Target,
                    progress: RebuildProgress) -> None:
        """Apply everything up to `target` not applied yet; never anything past it."""
        ...

    def close(self) -> None: ...


def live_target(conn: Connection, feed: Feed) -> Target:
    """What the live read model has applied from the feed's source; refuses a read model
    fed from another source, whose progress the rebuild could not reproduce."""
    progress = offsets_by_source(conn)
    others = sorted(set(progress) - {feed.source})
    if others:
        raise RebuildFailed(
            f"the live read model is fed from {', '.join(others)}, not {feed.source}: "
            "rebuild from the source that feeds it (--source)")
    return progress.get(feed.source, {})


# (after, until, limit) -> the envelopes of up to `limit` log entries after `after` and at
# or below `until`, and the position of the last entry read (None: nothing there). Given by
# the caller, which may know the registry: the projections service does not.
# (after, until, limit) -> the page's entries (envelopes, or what could not be translated) and
# the last position read, None at the end of the log.
LogPageReader = Callable[[int, int, int], tuple[Sequence[SourceEntry], int | None]]


class LogFeed:
    """The registry's log, in pages, as the embedded projection feed reads it.

    Pages are applied together up to `batch_entries`, in one transaction of the fresh tables:
    a batch's fixed costs (its look-ups, the totals and ledger rows it adds to, above all
    the ledger tree's nodes, shared by neighbouring days) are then paid per many thousand
    events. What is applied and parked, and the progress recorded, are the same whatever
    the grouping: only the fresh tables see the batches, and they are switched in whole."""

    source = LOG_SOURCE

    def __init__(self, read_page: LogPageReader, close: Callable[[], None],
                 page_size: int = 2000, batch_entries: int | None = None) -> None:
        self.read_page = read_page
        self._close = close
        self.page_size = page_size
        self.batch_entries = max(batch_entries or REBUILD_BATCH_ENTRIES, page_size)
        self.applied = 0
        self._read_to = 0

    def size(self, target: Target) -> int:
        return target.get(0, 0)

    def apply_until(self, projector: ReadModelProjector, target: Target,
                    progress: RebuildProgress) -> None:
        until = target.get(0, 0)
        while self._read_to < until:
            with collection_paused():  # the batch's translation too, not only its projection
                read_to = self._apply_batch(projector, until)
            progress.advance(read_to - self._read_to)
            self._read_to = read_to

    def _apply_batch(self, projector: ReadModelProjector, until: int) -> int:
        """Read pages up to `batch_entries` and apply them; the position read to."""
        batch: list[SourceEntry] = []
        read_to = self._read_to
        while read_to < until and len(batch) < self.batch_entries:
            entries, last = self.read_page(read_to, until, self.page_size)
            if last is None:
                break
            batch.extend(entries)
            read_to = last
        if read_to == self._read_to:
            raise RebuildFailed(
                f"the log ends at position {self._read_to}, before the live read model's "
                f"{until}: is this the registry that feeds it?")
        # As the live feed does: what it could not apply, the rebuild parks too.
        projector.project(batch, [SourceProgress.of_log(read_to)])
        self.applied += len(batch)
        return read_to

    def close(self) -> None:
        self._close()


class _Replay(ProjectionConsumer):
    """The live consumer's batch handling, minus copying to the dead-letter topic: an event
    the live consumer parked is parked here too (in the fresh tables, which a rebuild does
    not compare or switch: the live table of parked events stays as it is)."""

    skipped = 0

    def _dead_letter(self, record: ConsumerRecord, reason: str) -> None:
        log.warning("parked offset %s of partition %s, as the live consumer did: %s",
                    record.offset, record.partition, reason)
        self.skipped += 1


class KafkaFeed:
    """Every partition of the topic from its beginning, assigned by hand (no group, so the
    live consumers' assignment is untouched). The topic must still hold every event."""

    def __init__(self, config: ConsumerConfig) -> None:
        self.config = config
        self.source = config.topic
        self.applied = 0
        self._consumer: KafkaConsumer | None = None
        self._done: dict[int, int] = {}  # last applied offset per partition

    def size(self, target: Target) -> int:
        return sum(offset + 1 for offset in target.values())

    def _assigned(self) -> KafkaConsumer:
        if self._consumer is None:
            consumer = KafkaConsumer(
                bootstrap_servers=self.config.bootstrap.split(","), group_id=None,
                enable_auto_commit=False, auto_offset_reset="earliest",
                max_poll_records=MAX_POLL_RECORDS, fetch_max_wait_ms=self.config.fetch_max_wait_ms,
            )
            partitions = consumer.partitions_for_topic(self.config.topic)
            if not partitions:
                consumer.close()
                raise RebuildFailed(f"topic {self.config.topic} has no partitions")
            assigned = [TopicPartition(self.config.topic, p) for p in sorted(partitions)]
            consumer.assign(assigned)
            consumer.seek_to_beginning(*assigned)
            self._consumer = consumer
        return self._consumer

    def apply_until(self, projector: ReadModelProjector, target: Target,
                    progress: RebuildProgress) -> None:
        consumer = self._assigned()
        replay = _Replay(projector, self.config)
        stalled_since = time.monotonic()
        while True:
            short = {tp for tp in consumer.assignment()
                     if self._done.get(tp.partition, -1) < target.get(tp.partition, -1)}
            if not short:
                return
            consumer.pause(*(consumer.assignment() - short))
            consumer.resume(*short)
            batch = consumer.poll(timeout_ms=POLL_TIMEOUT_MS)
            wanted: dict[TopicPartition, list[ConsumerRecord]] = {}
            for tp, records in batch.items():
                until = target.get(tp.partition, -1)
                kept = [record for record in records if record.offset <= until]
                if len(kept) < len(records):
                    consumer.seek(tp, until + 1)  # read again when the target moves on
                if kept:
                    wanted[tp] = kept
            if not wanted:
                if time.monotonic() - stalled_since > STALLED_SECONDS:
                    raise RebuildFailed(
                        f"partitions {sorted(tp.partition for tp in short)} of "
                        f"{self.config.topic} yield nothing below the live read model's "
                        "offsets: does the topic still hold every event?")
                continue
            stalled_since = time.monotonic()
            before = replay.stats.applied
            handled = replay.handle(wanted, consumer.highwater)
            if handled.rewound:
                raise RebuildFailed(
                    f"partitions {sorted(tp.partition for tp in handled.rewound)} of "
                    f"{self.config.topic} hold an epoch of the relay that begins past their "
                    "start: the topic lost records again; run `dealreg relay republish` "
                    "and rebuild once the relay is ready")
            self.applied += replay.stats.applied - before
            for tp, records in wanted.items():
                self._done[tp.partition] = records[-1].offset
                progress.advance(len(records))

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
