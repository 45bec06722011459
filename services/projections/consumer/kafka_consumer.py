"""Distributed mode, read side: a Kafka consumer group that feeds the read model.

Each poll's events and each partition's offset commit to the read model's database in one
transaction; on (re)assignment a partition resumes after the offset stored there, so
redelivery, rebalances and crashes neither skip nor double-count. A record that cannot be
applied is parked in the read model's database with its reason (and copied to the
dead-letter topic); its aggregate's later events wait behind it, the rest of its partition
goes on. A lost database connection is retried with backoff, the poll kept.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from pydantic import ValidationError

from contracts.events_v1 import EventEnvelope
from contracts.untranslatable_v1 import UntranslatableEvent
from services.projections.projectors.failures import is_transient
from services.projections.projectors.parking import SourceEntry, Unreadable
from services.projections.projectors.read_model_projector import ReadModelProjector
from services.projections.read_model.progress import SourceProgress
from services.projections.read_model.tables import ParkedState

log = logging.getLogger("dealreg.projections.consumer")

POLL_TIMEOUT_MS = 200
MAX_POLL_RECORDS = 1000
FIRST_BACKOFF_SECONDS = 0.1
MAX_BACKOFF_SECONDS = 5.0


@dataclass
class ConsumerStats:
    applied: int = 0
    parked: int = 0  # parked by this process (the table holds every parked event)
    dead_lettered: int = 0
    database_error: str = ""  # set while the read model's database does not answer
    lag: dict[int, int] = field(default_factory=dict)
    connected: bool = False
    last_error: str = ""


@dataclass(frozen=True)
class ConsumerConfig:
    bootstrap: str
    topic: str
    dead_letter_topic: str
    group_id: str
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    fetch_max_wait_ms: int = 20


class ResumeFromDatabase(ConsumerRebalanceListener):  # type: ignore[misc]
    """Positions newly assigned partitions after the offsets the read model recorded."""

    def __init__(self, consumer: KafkaConsumer, offsets: Callable[[], dict[int, int]]) -> None:
        self.consumer = consumer
        self.offsets = offsets

    def on_partitions_revoked(self, revoked: Any) -> None:
        pass  # progress lives in the read model's database, committed with each batch

    def on_partitions_assigned(self, assigned: Any) -> None:
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
            auto_offset_reset="earliest",
            max_poll_records=MAX_POLL_RECORDS,
            session_timeout_ms=self.config.session_timeout_ms,
            heartbeat_interval_ms=self.config.heartbeat_interval_ms,
            fetch_max_wait_ms=self.config.fetch_max_wait_ms,
        )
        try:
            consumer.subscribe(
                [self.config.topic],
                listener=ResumeFromDatabase(
                    consumer, lambda: self.projector.resume_offsets(self.config.topic)
                ),
            )
            self.stats.connected = True
            while not stop.is_set():
                batch = consumer.poll(timeout_ms=POLL_TIMEOUT_MS)
                if batch:
                    self._handle_retrying(consumer, batch, stop)
                self._record_lag(consumer)
        finally:
            consumer.close()

    def handle(
        self,
        batch: dict[TopicPartition, list[ConsumerRecord]],
        highwater: Callable[[TopicPartition], int | None],
    ) -> None:
        """Apply one poll's records; progress for each partition commits with its events.

        What cannot be applied is parked in the read model's database (and also sent to the
        dead-letter topic for operators who watch it); transient database failures raise,
        and `_handle_retrying` tries the same poll again."""
        entries: list[SourceEntry] = []
        progress: list[SourceProgress] = []
        records: dict[tuple[int, int], ConsumerRecord] = {}
        for tp, polled in batch.items():
            positions = [0]
            for record in polled:
                entry = entry_of(tp, record)
                entries.append(entry)
                records[(tp.partition, record.offset)] = record
                if entry.position is not None:
                    positions.append(entry.position)
            end = highwater(tp)
            last = polled[-1].offset
            progress.append(SourceProgress(tp.topic, tp.partition, last, max(positions),
                                           caught_up=end is not None and last + 1 >= end))
        projected = self.projector.project(entries, progress)
        self.stats.applied += projected.applied
        self.stats.parked += len(projected.parked)
        for parked in projected.parked:
            record = records.get((parked.partition, parked.offset))
            if record is not None and parked.state is ParkedState.FAILED:
                self._dead_letter(record, parked.reason)

    def _handle_retrying(
        self, consumer: KafkaConsumer,
        batch: dict[TopicPartition, list[ConsumerRecord]], stop: threading.Event,
    ) -> None:
        """`handle`, again with backoff while the read model's database is unavailable: the
        poll's effects and offsets commit together, so a retry never counts twice."""
        backoff = FIRST_BACKOFF_SECONDS
        while True:
            try:
                self.handle(batch, consumer.highwater)
                self.stats.database_error = ""
                return
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

    def _record_lag(self, consumer: KafkaConsumer) -> None:
        lag = {}
        for tp in consumer.assignment():  # only what this instance holds now
            end = consumer.highwater(tp)
            position = consumer.position(tp) if end is not None else None
            if end is not None and position is not None:
                lag[tp.partition] = max(0, end - position)
        self.stats.lag = lag


def entry_of(tp: TopicPartition, record: ConsumerRecord) -> SourceEntry:
    """A record as the projector takes it: its envelope, or what is known of it when it is
    none (a relay's untranslatable record names its aggregate; of another record, the key
    is the aggregate when it is an id, as the relay keys every record)."""
    value = record.value or b""
    try:
        return SourceEntry(tp.topic, tp.partition, record.offset,
                           EventEnvelope.model_validate_json(value))
    except ValidationError as exc:
        invalid = exc
    raw = value.decode("utf-8", "replace")
    try:
        stand_in = UntranslatableEvent.model_validate_json(value)
    except ValidationError:
        return SourceEntry(tp.topic, tp.partition, record.offset, unreadable=Unreadable(
            reason=f"invalid envelope: {_first_error(invalid)}", raw=raw,
            aggregate_id=_aggregate_of_key(record.key),
        ))
    return SourceEntry(tp.topic, tp.partition, record.offset, unreadable=Unreadable(
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
