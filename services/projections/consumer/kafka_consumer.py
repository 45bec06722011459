"""Distributed mode, read side: a Kafka consumer group that feeds the read model.

Each poll's events and each partition's offset commit to the read model's database in one
transaction; on (re)assignment a partition resumes after the offset stored there, so
redelivery, rebalances and crashes neither skip nor double-count. An event that cannot be
applied goes to the dead-letter topic with its reason and does not hold up its partition.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from pydantic import ValidationError

from contracts.events_v1 import EventEnvelope
from services.projections.projectors.read_model_projector import (
    ProjectionError,
    ReadModelProjector,
)
from services.projections.read_model.progress import SourceProgress

log = logging.getLogger("dealreg.projections.consumer")

POLL_TIMEOUT_MS = 200
MAX_POLL_RECORDS = 1000
# What an event that cannot be applied raises; anything else (a database outage) is retried.
UNAPPLICABLE = (ValidationError, ProjectionError, ValueError, KeyError)


@dataclass
class ConsumerStats:
    applied: int = 0
    dead_lettered: int = 0
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
                    self.handle(batch, consumer.highwater)
                self._record_lag(consumer)
        finally:
            consumer.close()

    def handle(
        self,
        batch: dict[TopicPartition, list[ConsumerRecord]],
        highwater: Callable[[TopicPartition], int | None],
    ) -> None:
        """Apply one poll's records; progress for each partition commits with its events."""
        envelopes: list[EventEnvelope] = []
        progress: list[SourceProgress] = []
        unreadable: list[tuple[ConsumerRecord, str]] = []
        for tp, records in batch.items():
            positions = [0]
            for record in records:
                try:
                    envelope = EventEnvelope.model_validate_json(record.value)
                except ValidationError as exc:
                    unreadable.append((record, f"invalid envelope: {_first_error(exc)}"))
                    continue
                envelopes.append(envelope)
                positions.append(envelope.position)
            end = highwater(tp)
            last = records[-1].offset
            progress.append(SourceProgress(tp.topic, tp.partition, last, max(positions),
                                           caught_up=end is not None and last + 1 >= end))
        for record, reason in unreadable:
            self._dead_letter(record, reason)
        try:
            self.projector.apply(envelopes, progress)
            self.stats.applied += len(envelopes)
        except UNAPPLICABLE:
            self._apply_one_by_one(batch, progress)

    def _apply_one_by_one(
        self,
        batch: dict[TopicPartition, list[ConsumerRecord]],
        progress: list[SourceProgress],
    ) -> None:
        """Find the events that cannot be applied, dead-letter them, apply the rest."""
        for tp, records in batch.items():
            for record in records:
                envelope = _parsed(record)
                if envelope is None:
                    continue  # unreadable: dead-lettered already
                step = SourceProgress(tp.topic, tp.partition, record.offset, envelope.position,
                                      caught_up=False)
                try:
                    self.projector.apply([envelope], [step])
                    self.stats.applied += 1
                except UNAPPLICABLE as exc:
                    self._dead_letter(record, f"cannot apply: {type(exc).__name__}: {exc}")
                    self.projector.apply([], [step])
        self.projector.apply([], progress)

    def _dead_letter(self, record: ConsumerRecord, reason: str) -> None:
        log.error("dead-lettering offset %s of partition %s: %s", record.offset,
                  record.partition, reason)
        if self._dead_letters is None:
            self._dead_letters = KafkaProducer(
                bootstrap_servers=self.config.bootstrap.split(","), acks="all",
                enable_idempotence=True,
            )
        headers = [*(record.headers or []), ("dlq_reason", reason[:1000].encode())]
        self._dead_letters.send(self.config.dead_letter_topic, key=record.key,
                                value=record.value, headers=headers).get(timeout=30)
        self.stats.dead_lettered += 1

    def _record_lag(self, consumer: KafkaConsumer) -> None:
        lag = {}
        for tp in consumer.assignment():  # only what this instance holds now
            end = consumer.highwater(tp)
            position = consumer.position(tp) if end is not None else None
            if end is not None and position is not None:
                lag[tp.partition] = max(0, end - position)
        self.stats.lag = lag


def _parsed(record: ConsumerRecord) -> EventEnvelope | None:
    try:
        return EventEnvelope.model_validate_json(record.value)
    except ValidationError:
        return None


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "value"
    return f"{where}: {first.get('msg', '')}"
