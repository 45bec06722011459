"""Distributed mode, read side: a Kafka consumer group that feeds the read model.

Each poll's events and each partition's offset commit to the read model's database in one
transaction; on (re)assignment a partition resumes after the offset stored there, so
redelivery, rebalances and crashes neither skip nor double-count. A record that cannot be
applied is parked in the read model's database with its reason (and copied to the
dead-letter topic); its aggregate's later events wait behind it, the rest of its partition
goes on. A lost database connection is retried with backoff, the poll kept.

The relay's watermark records (`contracts.watermark_v1`) are not applied: they say up to
which log position their partition is complete, and how many partitions the topic has; the
read model's position is the lowest over all of them (`read_model.progress`). After each
database commit the offsets are also committed to the consumer group, for Kafka's own lag
tools; the database stays the source of truth (assignment seeks to its offsets).

Every relay record's stamp is checked against the last one taken in its partition
(`stream_order`): records sent again are taken (and applied at most once), records of an
epoch the relay abandoned are skipped, and records behind a gap are neither applied nor
allowed to raise the position. A partition is read again from its start when the relay's
new epoch began behind the reader, or when the stored offset lies past the partition's end
(the topic was recreated): loudly, in the log, the metrics and readiness.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar
from uuid import UUID

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import OffsetOutOfRangeError
from kafka.structs import OffsetAndMetadata
from pydantic import ValidationError

from contracts.events_v2 import EventEnvelope  # either schema version (v1 ones are on the topic)
from contracts.stream_v1 import StreamStamp
from contracts.untranslatable_v1 import UntranslatableEvent
from contracts.watermark_v1 import WATERMARK_HEADER, Watermark
from services.projections.consumer.stream_order import Verdict, after_taking, judge, start_of
from services.projections.projectors.failures import is_transient
from services.projections.projectors.parking import SourceEntry, Unreadable
from services.projections.projectors.read_model_projector import ReadModelProjector
from services.projections.read_model.progress import SourceProgress, stored_stamps
from services.projections.read_model.tables import ParkedState

log = logging.getLogger("dealreg.projections.consumer")

POLL_TIMEOUT_MS = 200
MAX_POLL_RECORDS = 1000
FIRST_BACKOFF_SECONDS = 0.1
MAX_BACKOFF_SECONDS = 5.0


T = TypeVar("T")

UNKNOWN_LAG = -1  # shown for a partition whose end (high-water mark) was never seen


@dataclass
class ConsumerStats:
    applied: int = 0
    parked: int = 0  # parked by this process (the table holds every parked event)
    dead_lettered: int = 0
    database_error: str = ""  # set while the read model's database does not answer
    # Records not yet consumed, per assigned partition: the high-water mark minus the
    # position; when the position points past the end (a topic recreated), every record
    # the partition holds; UNKNOWN_LAG while its end was never seen. Never 0 while behind.
    lag: dict[int, int] = field(default_factory=dict)
    # Per assigned partition whose position points past its end: by how many offsets.
    past_end: dict[int, int] = field(default_factory=dict)
    connected: bool = False
    last_error: str = ""
    # time.monotonic() of the last sign the broker serves this consumer: a poll that
    # returned records, or a heartbeat answered by the group coordinator. None: never.
    broker_seen_at: float | None = None
    # time.monotonic(), per partition, of its last progress: a batch committed, or the
    # partition seen with nothing left to read. Behind and old means stuck.
    progressed_at: dict[int, float] = field(default_factory=dict)
    watermark_position: dict[int, int] = field(default_factory=dict)  # last consumed, each
    partitions: int = 0  # of the topic, from its metadata or the relay's watermarks
    committed_to_group: int = 0  # offset commits the group coordinator accepted
    group_commit_error: str = ""  # the last offset commit the coordinator refused
    # Per partition whose records stopped following on (a seq gap): what was found.
    gaps: dict[int, str] = field(default_factory=dict)
    rewinds: int = 0  # partitions this process started reading again from their start
    # Per partition read again from its start, until it has caught up: why.
    rereading: dict[int, str] = field(default_factory=dict)


# A partition behind for this long without progress is stuck, not busy.
STALL_SECONDS = 10.0


def partition_faults(stats: ConsumerStats, now: float, stall_seconds: float = STALL_SECONDS
                     ) -> list[str]:
    """What is wrong with the partitions this instance holds, one line each: a stored offset
    past the partition's end (its topic lost or recreated), records missing before those
    read (a seq gap), a partition being read again after its topic was recreated, or a
    partition behind (or of unknown lag) that has not progressed for `stall_seconds`."""
    faults = [f"partition {p}: the stored offset is {ahead} past its end (topic lost or "
              "recreated?)" for p, ahead in sorted(stats.past_end.items()) if ahead > 0]
    faults.extend(f"partition {p}: {gap}" for p, gap in sorted(stats.gaps.items()))
    faults.extend(f"partition {p}: reading it again from its start: {why}"
                  for p, why in sorted(stats.rereading.items()))
    for partition, lag in sorted(stats.lag.items()):
        since = stats.progressed_at.get(partition)
        if lag != 0 and since is not None and now - since > stall_seconds:
            behind = "of unknown lag" if lag == UNKNOWN_LAG else f"{lag} records behind"
            faults.append(f"partition {partition}: {behind}, no progress for "
                          f"{now - since:.0f}s")
    return faults


@dataclass(frozen=True)
class ConsumerConfig:
    bootstrap: str
    topic: str
    dead_letter_topic: str
    group_id: str
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    fetch_max_wait_ms: int = 20


@dataclass(frozen=True)
class Handled:
    """What `ProjectionConsumer.handle` did with a poll."""

    offsets: dict[TopicPartition, int] = field(default_factory=dict)  # last handled, each
    rewound: set[TopicPartition] = field(default_factory=set)  # to read again from the start


def _gap(record: ConsumerRecord, last: StreamStamp | None, stamp: StreamStamp) -> str:
    after = "nothing" if last is None else f"seq {last.seq} of epoch {last.epoch}"
    return (f"records are missing before offset {record.offset} (seq {stamp.seq} of epoch "
            f"{stamp.epoch} after {after}): the topic lost them; they are skipped, unapplied, "
            "until the relay publishes the log again (it does when it finds the topic "
            "lost; `dealreg relay republish` makes it)")


class ResumeFromDatabase(ConsumerRebalanceListener):  # type: ignore[misc]
    """Positions newly assigned partitions after the offsets the read model recorded."""

    def __init__(self, consumer: KafkaConsumer, offsets: Callable[[], dict[int, int]],
                 assigned: Callable[[], None]) -> None:
        self.consumer = consumer
        self.offsets = offsets
        self.assigned = assigned

    def on_partitions_revoked(self, revoked: Any) -> None:
        pass  # progress lives in the read model's database, committed with each batch

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.assigned()
        stored = self.offsets()
        for tp in assigned:
            if tp.partition in stored:
                self.consumer.seek(tp, stored[tp.partition] + 1)
            else:
                self.consumer.seek_to_beginning(tp)
        log.info("assigned partitions %s", sorted(tp.partition for tp in assigned))


class ProjectionConsumer:
    def __init__(self, projector: ReadModelProjector, config: ConsumerConfig) -> None:
        self.projector = projector
        self.config = config
        self.stats = ConsumerStats()
        self._dead_letters: KafkaProducer | None = None
        self._known_partitions = 0  # partitions this process has given a progress row
        # The stamp of the last relay record taken, per partition, as committed; read from
        # the database when a partition is (re)assigned.
        self._stamps: dict[int, StreamStamp | None] = {}

    def run(self, stop: threading.Event) -> None:
        """Consume until `stop` is set, reconnecting with backoff while the broker is away."""
        backoff = 0.5
        while not stop.is_set():
            try:
                self._consume(stop)
                backoff = 0.5
            except Exception as exc:  # noqa: BLE001 - broker or database trouble: retry later
                self.stats.connected = False
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("consumer failed, retrying in %.1fs: %s", backoff,
                            self.stats.last_error)
                stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
        if self._dead_letters is not None:
            self._dead_letters.close(timeout=5)

    def _consume(self, stop: threading.Event) -> None:
        consumer = KafkaConsumer(
            bootstrap_servers=self.config.bootstrap.split(","),
            group_id=self.config.group_id,
            enable_auto_commit=False,
            # The broker's latest-offset lookup is not relied upon anywhere (see design.md).
            # An offset out of range raises (`_rewind` reads the partition again, loudly):
            # a silent reset would hide a recreated topic. Assignment always seeks first.
            auto_offset_reset="none",
            max_poll_records=MAX_POLL_RECORDS,
            session_timeout_ms=self.config.session_timeout_ms,
            heartbeat_interval_ms=self.config.heartbeat_interval_ms,
            fetch_max_wait_ms=self.config.fetch_max_wait_ms,
        )
        try:
            consumer.subscribe(
                [self.config.topic],
                listener=ResumeFromDatabase(
                    consumer, lambda: self.projector.resume_offsets(self.config.topic),
                    self._stamps.clear,
                ),
            )
            self.stats.connected = True
            self.stats.partitions = max(
                self.stats.partitions, len(consumer.partitions_for_topic(self.config.topic) or ()))
            while not stop.is_set():
                try:
                    batch = consumer.poll(timeout_ms=POLL_TIMEOUT_MS)
                except OffsetOutOfRangeError as exc:
                    self._rewind(consumer, set(exc.args[0]) if exc.args else set(),
                                 "its stored offset lies past its end (the topic was "
                                 "recreated?)", stop)
                    continue
                if batch:
                    self.stats.broker_seen_at = time.monotonic()
                    handled = self._retrying(
                        partial(self.handle, batch, consumer.highwater), stop)
                    for tp in handled.rewound:
                        consumer.seek_to_beginning(tp)
                    self._commit_to_group(consumer, handled.offsets)
                self._record_contact(consumer)
                past_end = self._record_lag(consumer)
                if past_end:
                    self._rewind(consumer, past_end, "its stored offset lies past its end "
                                 "(the topic was recreated?)", stop)
        finally:
            consumer.close()

    def _rewind(self, consumer: KafkaConsumer, partitions: set[TopicPartition], why: str,
                stop: threading.Event) -> None:
        """Read `partitions` again from their start, still expecting what follows the last
        stamp taken there: what the recreated topic holds is checked like anything else."""
        partitions = {tp for tp in partitions if tp in consumer.assignment()}
        if not partitions:
            return
        self._retrying(lambda: self.projector.project([], [
            SourceProgress.rewind(tp.topic, tp.partition, self._last_stamp(tp))
            for tp in partitions]), stop)
        for tp in partitions:
            consumer.seek_to_beginning(tp)
            self._reading_again(tp.partition, why)

    def _reading_again(self, partition: int, why: str) -> None:
        self.stats.rewinds += 1
        self.stats.rereading[partition] = why
        self.stats.gaps.pop(partition, None)
        self.stats.past_end.pop(partition, None)
        log.error("partition %s of %s: reading it again from its start: %s", partition,
                  self.config.topic, why, extra={"fields": {"partition": partition,
                                                            "topic": self.config.topic}})

    def _last_stamp(self, tp: TopicPartition) -> StreamStamp | None:
        if tp.partition not in self._stamps:
            stored = stored_stamps(self.projector.engine, self.projector.name, tp.topic)
            self._stamps[tp.partition] = stored.get(tp.partition)
        return self._stamps[tp.partition]

    def handle(
        self,
        batch: dict[TopicPartition, list[ConsumerRecord]],
        highwater: Callable[[TopicPartition], int | None],
    ) -> Handled:
        """Apply one poll's records; progress for each partition commits with its events.

        What cannot be applied is parked in the read model's database (and also sent to the
        dead-letter topic for operators who watch it); transient database failures raise,
        and `_retrying` tries the same poll again. Watermarks are not applied: they raise
        their partition's complete position. A record raises it only when it is the relay's
        (its `position` header matches its body) and follows on (`stream_order`); anything
        else never does."""
        entries: list[SourceEntry] = []
        progress: list[SourceProgress] = []
        records: dict[tuple[int, int], ConsumerRecord] = {}
        last_offsets: dict[TopicPartition, int] = {}
        rewound: dict[TopicPartition, str] = {}
        gaps: dict[int, str] = {}
        stamps: dict[int, StreamStamp | None] = {}
        watermarks: dict[int, int] = {}
        partitions = self.stats.partitions
        for tp, polled in batch.items():
            if not polled:
                continue
            complete = 0
            last = self._last_stamp(tp)
            for record in polled:
                stamp = StreamStamp.of_headers(record.headers)
                if stamp is not None:
                    verdict = judge(last, stamp)
                    if verdict is Verdict.REWIND:
                        rewound[tp] = (f"the relay's epoch {stamp.epoch} began before offset "
                                       f"{record.offset} (seq {stamp.seq} there)")
                        last = start_of(stamp.epoch)
                        break
                    if verdict is Verdict.GAP:
                        gaps.setdefault(tp.partition, _gap(record, last, stamp))
                        continue
                    if verdict is Verdict.STALE:
                        continue
                    last = after_taking(last, stamp)
                    gaps.pop(tp.partition, None)  # records follow on again
                mark = watermark_of(tp, record)
                if mark is not None:
                    complete = max(complete, mark.position)
                    watermarks[tp.partition] = max(watermarks.get(tp.partition, 0),
                                                   mark.position)
                    partitions = max(partitions, mark.partitions)
                    continue
                entry = entry_of(tp, record, stamp)
                entries.append(entry)
                records[(tp.partition, record.offset)] = record
                if entry.position is not None and from_relay(record, entry.position):
                    complete = max(complete, entry.position)
            stamps[tp.partition] = last
            if tp in rewound:
                progress.append(SourceProgress.rewind(tp.topic, tp.partition, last))
                continue
            last_offsets[tp] = polled[-1].offset
            progress.append(SourceProgress(tp.topic, tp.partition, polled[-1].offset,
                                           complete, last))
        if not progress:
            return Handled()
        topic = next(iter(batch)).topic
        if partitions > self._known_partitions:
            # Every partition gets a row (at 0 until read), so one not read yet holds the
            # read position down instead of being overlooked.
            progress.extend(SourceProgress.unread(topic, p) for p in range(partitions))
        projected = self.projector.project(entries, progress)
        self._stamps.update(stamps)
        self._known_partitions = max(self._known_partitions, partitions)
        self.stats.partitions = self._known_partitions
        self.stats.watermark_position.update(
            {p: max(w, self.stats.watermark_position.get(p, 0)) for p, w in watermarks.items()})
        self.stats.applied += projected.applied
        self.stats.parked += len(projected.parked)
        self._note_order(stamps, gaps, rewound)
        now = time.monotonic()
        for tp in last_offsets:
            self.stats.progressed_at[tp.partition] = now
        for parked in projected.parked:
            record = records.get((parked.partition, parked.offset))
            if record is not None and parked.state is ParkedState.FAILED:
                self._dead_letter(record, parked.reason)
        return Handled(last_offsets, set(rewound))

    def _note_order(self, stamps: dict[int, StreamStamp | None], gaps: dict[int, str],
                    rewound: dict[TopicPartition, str]) -> None:
        """Say what the stamps showed: a gap once when found, until records follow on."""
        for partition, gap in gaps.items():
            if partition not in self.stats.gaps:
                log.error("partition %s of %s: %s", partition, self.config.topic, gap,
                          extra={"fields": {"partition": partition,
                                            "topic": self.config.topic}})
                self.stats.gaps[partition] = gap
        for partition in set(stamps) - set(gaps):
            if partition in self.stats.gaps:
                log.warning("partition %s of %s: records follow on again", partition,
                            self.config.topic)
                self.stats.gaps.pop(partition)
        for tp, why in rewound.items():
            self._reading_again(tp.partition, why)

    def _retrying(self, attempt: Callable[[], T], stop: threading.Event) -> T:
        """`attempt`, again with backoff while the read model's database is unavailable: a
        poll's effects and offsets commit together, so a retry never counts twice."""
        backoff = FIRST_BACKOFF_SECONDS
        while True:
            try:
                done = attempt()
                self.stats.database_error = ""
                return done
            except Exception as exc:
                if not is_transient(exc) or stop.is_set():
                    raise
                self.stats.database_error = f"{type(exc).__name__}: {exc}"[:500]
                log.warning("read-model database unavailable, retrying in %.1fs: %s", backoff,
                            self.stats.database_error)
                stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    def _dead_letter(self, record: ConsumerRecord, reason: str) -> None:
        """Copy a parked record to the dead-letter topic, with its reason. Best effort: the
        read model's table is what list and retry use."""
        try:
            if self._dead_letters is None:
                self._dead_letters = KafkaProducer(
                    bootstrap_servers=self.config.bootstrap.split(","), acks="all",
                    enable_idempotence=True,
                )
            headers = [*(record.headers or []), ("dlq_reason", reason[:1000].encode())]
            self._dead_letters.send(self.config.dead_letter_topic, key=record.key,
                                    value=record.value, headers=headers).get(timeout=30)
            self.stats.dead_lettered += 1
        except Exception as exc:  # noqa: BLE001 - parked already; the topic is a copy
            log.warning("could not copy offset %s of partition %s to the dead-letter topic: "
                        "%s", record.offset, record.partition, exc)

    def _commit_to_group(self, consumer: KafkaConsumer, handled: dict[TopicPartition, int]
                         ) -> None:
        """Tell the consumer group how far the database has committed, for Kafka's own lag
        tools. Best effort and asynchronous: the database is the source of truth, so a
        refused commit (a rebalance, the coordinator away) is only logged."""
        if not handled:
            return
        offsets = {tp: OffsetAndMetadata(last + 1, "", -1) for tp, last in handled.items()}

        def done(_: Any, result: Any) -> None:
            if isinstance(result, Exception):
                self.stats.group_commit_error = f"{type(result).__name__}: {result}"[:500]
                log.warning("could not commit offsets to the consumer group: %s",
                            self.stats.group_commit_error)
            else:
                self.stats.committed_to_group += 1

        try:
            consumer.commit_async(offsets, callback=done)
        except Exception as exc:  # noqa: BLE001 - never fails the batch, which is committed
            self.stats.group_commit_error = f"{type(exc).__name__}: {exc}"[:500]
            log.warning("could not commit offsets to the consumer group: %s",
                        self.stats.group_commit_error)

    def _record_contact(self, consumer: KafkaConsumer) -> None:
        """The last time the group coordinator answered a heartbeat, if later than what is
        known: kafka-python's poll returns nothing alike for an idle topic and a dead broker,
        but heartbeats go on only while the broker answers. (`last_receive` is the client's
        monotonic clock; not a documented attribute, hence the guard.)"""
        heartbeat = getattr(getattr(consumer, "_coordinator", None), "heartbeat", None)
        received = getattr(heartbeat, "last_receive", None)
        if isinstance(received, float) and received != float("-inf"):
            seen = self.stats.broker_seen_at
            self.stats.broker_seen_at = received if seen is None else max(seen, received)

    def _record_lag(self, consumer: KafkaConsumer) -> set[TopicPartition]:
        """Lag per partition held; returns those whose position lies past their end."""
        lag: dict[int, int] = {}
        past_end: dict[int, int] = {}
        beyond: set[TopicPartition] = set()
        now = time.monotonic()
        for tp in consumer.assignment():  # only what this instance holds now
            end = consumer.highwater(tp)  # from the last fetch; None until the first
            position = consumer.position(tp) if end is not None else None
            lag[tp.partition] = partition_lag(end, position)
            if end is not None and position is not None and position > end:
                past_end[tp.partition] = position - end
                beyond.add(tp)
            if lag[tp.partition] == 0:
                self.stats.progressed_at[tp.partition] = now  # nothing left: not stuck
            if lag[tp.partition] == 0:
                self.stats.rereading.pop(tp.partition, None)  # caught up again
        self.stats.lag = lag
        self.stats.past_end = past_end
        return beyond


def partition_lag(end: int | None, position: int | None) -> int:
    """Records of a partition not yet consumed; never 0 unless provably none is left."""
    if end is None or position is None:
        return UNKNOWN_LAG
    if position > end:
        # Offsets past the end: the topic is younger than the consumer's offsets, and every
        # record it holds lies behind the position (or, empty, nothing is left indeed).
        return end
    return end - position


def watermark_of(tp: TopicPartition, record: ConsumerRecord) -> Watermark | None:
    """The relay's watermark this record is, for this partition; None for any other record
    (a watermark header on a record that is no valid watermark of this partition is taken
    as the record it is, and parked as unreadable)."""
    if _header(record, WATERMARK_HEADER) != b"1":
        return None
    try:
        mark = Watermark.model_validate_json(record.value or b"")
    except ValidationError:
        return None
    return mark if mark.partition == tp.partition else None


def from_relay(record: ConsumerRecord, position: int) -> bool:
    """Whether a record is the relay's, whose position may be trusted: its `position`
    header states the position of its body (garbage, or an envelope someone else sent,
    never advances a partition's position)."""
    return _header(record, "position") == str(position).encode()


def _header(record: ConsumerRecord, name: str) -> bytes | None:
    for key, value in record.headers or ():
        if key == name:
            return bytes(value) if value is not None else None
    return None


def entry_of(tp: TopicPartition, record: ConsumerRecord, stamp: StreamStamp | None = None
             ) -> SourceEntry:
    """A record as the projector takes it: its envelope, or what is known of it when it is
    none (a relay's untranslatable record names its aggregate; of another record, the key
    is the aggregate when it is an id, as the relay keys every record)."""
    value = record.value or b""
    try:
        return SourceEntry(tp.topic, tp.partition, record.offset,
                           EventEnvelope.model_validate_json(value), stamp=stamp)
    except ValidationError as exc:
        invalid = exc
    raw = value.decode("utf-8", "replace")
    try:
        stand_in = UntranslatableEvent.model_validate_json(value)
    except ValidationError:
        return SourceEntry(tp.topic, tp.partition, record.offset, stamp=stamp,
                           unreadable=Unreadable(
                               reason=f"invalid envelope: {_first_error(invalid)}", raw=raw,
                               aggregate_id=_aggregate_of_key(record.key)))
    return SourceEntry(tp.topic, tp.partition, record.offset, stamp=stamp, unreadable=Unreadable(
        reason=f"the relay could not translate it: {stand_in.reason}", raw=raw,
        position=stand_in.position, aggregate_id=stand_in.aggregate_id,
        aggregate_version=stand_in.aggregate_version, event_type=stand_in.stored_type,
    ))


def _aggregate_of_key(key: bytes | None) -> UUID | None:
    try:
        return UUID(key.decode("ascii")) if key else None
    except (UnicodeDecodeError, ValueError):
        return None


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "value"
    return f"{where}: {first.get('msg', '')}"
