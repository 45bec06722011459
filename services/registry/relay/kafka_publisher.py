"""Publishes contract envelopes to the topic with kafka-python's idempotent producer."""

from __future__ import annotations

from collections.abc import Sequence

from kafka import KafkaProducer

from contracts.events_v1 import EventEnvelope
from contracts.untranslatable_v1 import UNTRANSLATABLE_HEADER, UntranslatableEvent
from contracts.watermark_v1 import WATERMARK_HEADER, Watermark

FLUSH_TIMEOUT_SECONDS = 60


def message_headers(envelope: EventEnvelope) -> list[tuple[str, bytes]]:
    return [
        ("event_id", envelope.event_id.encode()),
        ("event_type", envelope.type.value.encode()),
        ("schema_version", str(envelope.schema_version).encode()),
        ("position", str(envelope.position).encode()),
    ]


def untranslatable_headers(record: UntranslatableEvent) -> list[tuple[str, bytes]]:
    return [(UNTRANSLATABLE_HEADER, b"1"), ("position", str(record.position).encode())]


class KafkaPublisher:
    """Sends a batch and returns only when the broker acknowledged all of it (acks=all);
    raises on any failure, so the caller never records a position the broker lacks."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.producer = KafkaProducer(
            bootstrap_servers=bootstrap.split(","),
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
            request_timeout_ms=10_000,
            delivery_timeout_ms=45_000,
            max_block_ms=10_000,
        )

    def publish(self, items: Sequence[EventEnvelope | UntranslatableEvent]) -> None:
        """Envelopes, and records standing in for events without one, keyed by aggregate."""
        futures = [
            self.producer.send(
                self.topic,
                key=str(item.aggregate_id).encode(),
                value=item.model_dump_json().encode(),
                headers=message_headers(item) if isinstance(item, EventEnvelope)
                else untranslatable_headers(item),
            )
            for item in items
        ]
        self.producer.flush(timeout=FLUSH_TIMEOUT_SECONDS)
        for future in futures:
            future.get(timeout=0)  # raises the send's error, if it failed

    def publish_watermark(self, position: int) -> int:
        """Tell every partition that everything up to `position` is on the topic; returns the
        partition count. Call only once the broker acknowledged every event up to `position`
        (`publish` returned): each partition then holds those events before this record."""
        partitions = sorted(self.producer.partitions_for(self.topic) or ())
        if not partitions:
            raise RuntimeError(f"topic {self.topic} has no partitions")
        futures = [
            self.producer.send(
                self.topic, partition=partition,
                value=Watermark(position=position, partition=partition,
                                partitions=len(partitions)).model_dump_json().encode(),
                headers=[(WATERMARK_HEADER, b"1"), ("position", str(position).encode())],
            )
            for partition in partitions
        ]
        self.producer.flush(timeout=FLUSH_TIMEOUT_SECONDS)
        for future in futures:
            future.get(timeout=0)
        return len(partitions)

    def close(self) -> None:
        self.producer.close(timeout=5)
