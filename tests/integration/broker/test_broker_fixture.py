"""The Kafka-protocol broker fixture itself: produce, consume in a group, pause and resume."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaTimeoutError

from tests.kafka_broker import (
    TEST_CONSUMER_SETTINGS,
    ContainerBroker,
    KafkaTopic,
    TansuBroker,
    create_topic,
    topic_partitions,
    unique_topic,
)

pytestmark = pytest.mark.integration

KEYS = [f"deal-{i}" for i in range(5)]


def _producer(bootstrap: str, **overrides: object) -> KafkaProducer:
    settings: dict[str, object] = {
        "bootstrap_servers": bootstrap,
        "enable_idempotence": True,
        "acks": "all",
    }
    settings.update(overrides)
    return KafkaProducer(**settings)


def test_topic_and_dlq_are_created_with_their_partitions(kafka_topic: KafkaTopic) -> None:
    assert topic_partitions(kafka_topic.bootstrap, kafka_topic.name) == 4
    assert topic_partitions(kafka_topic.bootstrap, kafka_topic.dlq_name) == 1


def test_keyed_messages_keep_per_key_order_and_headers(kafka_topic: KafkaTopic) -> None:
    producer = _producer(kafka_topic.bootstrap)
    sent: dict[str, list[int]] = defaultdict(list)
    try:
        futures = []
        for seq in range(20):
            key = KEYS[seq % len(KEYS)]
            sent[key].append(seq)
            futures.append(
                producer.send(
                    kafka_topic.name,
                    key=key.encode(),
                    value=f"{key}:{seq}".encode(),
                    headers=[("seq", str(seq).encode()), ("event-type", b"DealRegistered")],
                )
            )
        producer.flush(timeout=10)
        partitions_used = {f.get(timeout=10).partition for f in futures}
    finally:
        producer.close(timeout=5)
    assert len(partitions_used) > 1, "keys should spread over several partitions"

    consumer = KafkaConsumer(
        kafka_topic.name,
        bootstrap_servers=kafka_topic.bootstrap,
        group_id=f"test-group.{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **TEST_CONSUMER_SETTINGS,
    )
    received: dict[str, list[int]] = defaultdict(list)
    count = 0
    try:
        deadline = time.monotonic() + 15
        while count < 20 and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                for record in records:
                    key = record.key.decode()
                    headers = dict(record.headers)
                    seq = int(headers["seq"])
                    assert headers["event-type"] == b"DealRegistered"
                    assert record.value == f"{key}:{seq}".encode()
                    received[key].append(seq)
                    count += 1
        consumer.commit()
        # The consumer's highwater (from fetch responses) is the reliable end offset on tansu.
        assert sum(consumer.highwater(tp) or 0 for tp in consumer.assignment()) == 20
    finally:
        consumer.close()
    assert count == 20
    assert dict(received) == dict(sent)


def test_send_during_pause_completes_after_resume(
    private_kafka_broker: TansuBroker | ContainerBroker,
) -> None:
    bootstrap = private_kafka_broker.bootstrap
    topic = unique_topic("paused")
    create_topic(bootstrap, topic, partitions=1)
    producer = _producer(bootstrap, request_timeout_ms=15000, linger_ms=0)
    try:
        producer.send(topic, key=b"before", value=b"0").get(timeout=10)

        private_kafka_broker.pause()
        try:
            future = producer.send(topic, key=b"during", value=b"1")
            with pytest.raises(KafkaTimeoutError):
                future.get(timeout=1.5)
            assert not future.is_done
        finally:
            private_kafka_broker.resume()

        metadata = future.get(timeout=10)
        assert metadata.offset == 1
    finally:
        producer.close(timeout=5)
