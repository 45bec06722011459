"""Publishes contract envelopes to the topic with kafka-python's idempotent producer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kafka import KafkaProducer
from kafka.partitioner.default import murmur2

from contracts.events_v1 import EventEnvelope
from contracts.untranslatable_v1 import UNTRANSLATABLE_HEADER, UntranslatableEvent
from contracts.watermark_v1 import WATERMARK_HEADER, Watermark
from services.registry.relay.published_position import RelayStream

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


def partition_of(key: bytes, partitions: Sequence[int]) -> int:
    """The partition of a key, as Kafka's default partitioner picks it (murmur2), chosen
    here so the relay knows the order of its records in each partition."""
    return partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]


class KafkaPublisher:
    """Sends a batch and returns only when the broker acknowledged all of it (acks=all);
    raises on any failure, so the caller never records a position the broker lacks. Every
    record is stamped with the epoch and its seq in its partition (`contracts.stream_v1`),
    and every acknowledged offset is reported to the `RelayStream`."""

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

    def partitions(self, stream: RelayStream) -> list[int]:
        """The topic's partitions, which must be those `stream` numbered (TopicReshaped)."""
        partitions = sorted(self.producer.partitions_for(self.topic) or ())
        if not partitions:
            raise RuntimeError(f"topic {self.topic} has no partitions")
        stream.check_partitions(self.topic, partitions)
        return partitions

    def publish(self, items: Sequence[EventEnvelope | UntranslatableEvent],
                stream: RelayStream) -> None:
        """Envelopes, and records standing in for events without one, keyed by aggregate."""
        partitions = self.partitions(stream)
        sent = []
        for item in items:
            key = str(item.aggregate_id).encode()
            partition = partition_of(key, partitions)
            headers = message_headers(item) if isinstance(item, EventEnvelope) \
                else untranslatable_headers(item)
            sent.append((partition, self.producer.send(
                self.topic, key=key, partition=partition, value=item.model_dump_json().encode(),
                headers=headers + stream.stamp(partition).headers(),
            )))
        self._acknowledged(sent, stream)

    def publish_watermark(self, position: int, stream: RelayStream) -> int:
        """Tell every partition that everything up to `position` is on the topic; returns the
        partition count. Call only once the broker acknowledged every event up to `position`
        (`publish` returned): each partition then holds those events before this record."""
        partitions = self.partitions(stream)
        sent = [
            (partition, self.producer.send(
                self.topic, partition=partition,
                value=Watermark(position=position, partition=partition,
                                partitions=len(partitions)).model_dump_json().encode(),
                headers=[(WATERMARK_HEADER, b"1"), ("position", str(position).encode()),
                         *stream.stamp(partition).headers()],
            ))
            for partition in partitions
        ]
        self._acknowledged(sent, stream)
        return len(partitions)

    def _acknowledged(self, sent: Sequence[tuple[int, Any]], stream: RelayStream) -> None:
        self.producer.flush(timeout=FLUSH_TIMEOUT_SECONDS)
        for partition, future in sent:
            metadata = future.get(timeout=0)  # raises the send's error, if it failed
            stream.acknowledged(partition, metadata.offset)

    def close(self) -> None:
        self.producer.close(timeout=5)
