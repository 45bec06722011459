"""A broker that comes back empty loses nothing: the relay finds the topic younger than its
records, says so, and publishes the log again in a new epoch; the projections read their
partitions again and apply nothing twice. Records behind a gap in the relay's numbering are
never applied, and `dealreg relay republish` recovers what the relay cannot see itself."""

from __future__ import annotations

import io
import logging
import threading
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from kafka import KafkaProducer
from pydantic import TypeAdapter
from sqlalchemy import select, text

from contracts.events_v2 import EventEnvelope  # either schema version, as the consumers read them
from contracts.stream_v1 import StreamStamp
from contracts.submissions_v1 import Submission
from services.cli import main
from services.demo.scenario import scenario
from services.projections.consumer.kafka_consumer import ProjectionConsumer
from services.projections.read_model.tables import TotalsDimension, recorded_events
from services.projections.rebuild.feeds import KafkaFeed
from services.projections.rebuild.progress_bar import RebuildProgress
from services.projections.rebuild.rebuild import rebuild_read_model
from services.projections.service import consumer_config, create_projection_app
from services.registry.application.commands import RecordPartnerEvent
from services.registry.relay.contract_events import envelopes_from
from services.registry.relay.kafka_publisher import message_headers, partition_of
from services.registry.relay.published_position import PublishedPosition, RelayStream
from services.registry.relay.relay import Relay
from services.registry.relay.service import create_relay_app
from services.shared.database import create_sql_engine
from services.shared.settings import sqlalchemy_url
from tests.integration.distributed.test_health_sees_faults import readiness
from tests.integration.distributed.test_kafka_flow import (
    Cluster,
    cluster_settings,
    expected_by_sector,
    wait_until,
)
from tests.kafka_broker import TansuBroker, create_topic, new_topic

pytestmark = pytest.mark.integration
T = "2025-07-01T10:00:00+05:30"
WRITERS = 4
DEALS_PER_WRITER = 5
PLEDGE_LOW, PLEDGE_HIGH = Decimal("1000000"), Decimal("2500000")
SUBMISSIONS = TypeAdapter(Submission)
FIRMS_TO_REPUBLISH = 80  # at one event per page, long enough to be seen re-publishing


def restart_empty(broker: Any, topic: Any) -> None:
    """kill -9 the broker and start it again on its port, empty (tansu keeps topics in
    memory, as a recreated topic is empty); the topics are created again, as an operator
    would with `dealreg topics create`."""
    if not isinstance(broker, TansuBroker):
        pytest.skip("a broker that restarts empty needs tansu's in-memory storage")
    port = broker.kill()
    broker.start(port=port)
    create_topic(broker.bootstrap, topic.name, partitions=4)
    create_topic(broker.bootstrap, topic.dlq_name, partitions=1)


class Load:
    """Writers pledging to their deals until stopped; every acknowledged receipt is kept."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.positions: list[int] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        cluster.record({"event_id": "load-firm", "type": "firm_registered", "occurred_at": T,
                        "payload": {"code": "load-jp", "name": "Load", "country": "JP",
                                    "kind": "manufacturer"}})
        self.deals = [[self._record({
            "event_id": f"load-deal-{w}-{d}", "type": "deal_proposed", "occurred_at": T,
            "payload": {"title": "load", "format": "equity_investment",
                        "sector": "battery_manufacturing", "parties": ["load-jp"]},
        }).aggregate_id for d in range(DEALS_PER_WRITER)] for w in range(WRITERS)]
        self.threads = [threading.Thread(target=self._write, args=(w,), daemon=True)
                        for w in range(WRITERS)]

    def _record(self, body: dict[str, Any]) -> Any:
        receipt = self.cluster.service.record(RecordPartnerEvent(
            "partner-a", SUBMISSIONS.validate_python(body)))
        with self.lock:
            self.positions.append(receipt.position)
        return receipt

    def _write(self, writer: int) -> None:
        n = 0
        while not self.stop.is_set():
            deal = self.deals[writer][n % DEALS_PER_WRITER]
            self._record({
                "event_id": f"load-{writer}-{n}", "type": "pledge_made", "occurred_at": T,
                "payload": {"deal_id": str(deal), "pledge_id": f"p-{writer}-{n}",
                            "firm": "load-jp", "amount": {"low": str(PLEDGE_LOW),
                                                         "high": str(PLEDGE_HIGH),
                                                         "currency": "USD"}}})
            n += 1

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def written(self) -> int:
        with self.lock:
            return len(self.positions)

    def finish(self) -> list[int]:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)
        with self.lock:
            return sorted(self.positions)


@pytest.mark.slow
def test_a_broker_restarted_empty_mid_load_loses_nothing_and_counts_nothing_twice(
    tmp_path: Path, postgres_url: str, private_kafka_broker: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="dealreg")
    topic = new_topic(private_kafka_broker.bootstrap, "loss")
    cluster = Cluster(cluster_settings(tmp_path, postgres_url, topic))
    try:
        relay: Relay = cluster.relay()
        cluster.start_relay(relay)
        consumers: list[ProjectionConsumer] = [cluster.consumer() for _ in range(2)]
        for consumer in consumers:
            cluster.start_consumer(consumer)
        load = Load(cluster)
        load.start()
        wait_until(lambda: cluster.queries.position() > 200, 60, "the read model under load")

        restart_empty(private_kafka_broker, topic)
        written = load.written()
        wait_until(lambda: load.written() > written + 100, 60, "more writes after the restart")
        acknowledged = load.finish()

        cluster.wait_visible(acknowledged[-1], timeout=120)
        with cluster.read_engine.connect() as conn:
            projected = Counter(conn.execute(select(recorded_events.c.position)).scalars())
        missing = [p for p in acknowledged if p not in projected]
        assert missing == [], f"{len(missing)} acknowledged events never reached the read model"
        assert max(projected.values()) == 1
        pledges = len(acknowledged) - WRITERS * DEALS_PER_WRITER
        by_sector = {t["sector"]: t for t in cluster.queries.pledge_totals(TotalsDimension.SECTOR)}
        assert by_sector["battery_manufacturing"]["pledge_count"] == pledges
        assert Decimal(by_sector["battery_manufacturing"]["usd"]["low"]) == pledges * PLEDGE_LOW

        report = rebuild_read_model(cluster.read_engine, KafkaFeed(consumer_config(
            cluster.settings)), RebuildProgress(io.StringIO()), dry_run=True)
        assert report.mismatched == []

        # Said, not silent: the relay's log line, and the projections read partitions again.
        assert any(r.name == "dealreg.relay" and "lost records" in r.getMessage()
                   for r in caplog.records)
        assert sum(consumer.stats.rewinds for consumer in consumers) >= 1
        assert relay.status.topic_losses == 1 and relay.status.epoch == 2
    finally:
        cluster.close()


@pytest.mark.slow
def test_readiness_and_metrics_name_a_lost_topic_until_it_is_whole_again(
    tmp_path: Path, postgres_url: str, private_kafka_broker: Any
) -> None:
    topic = new_topic(private_kafka_broker.bootstrap, "lossready")
    # One event per page: re-publishing takes long enough to be seen from outside.
    settings = cluster_settings(tmp_path, postgres_url, topic).model_copy(
        update={"relay_page_size": 1})
    cluster = Cluster(settings)
    try:
        last = cluster.record_scenario()
        firms = sum(1 for body in scenario() if body["type"] == "firm_registered")
        for n in range(FIRMS_TO_REPUBLISH):
            last = cluster.record({"event_id": f"firm-{n}", "type": "firm_registered",
                                   "occurred_at": T, "payload": {
                                       "code": f"firm-{n}", "name": f"Firm {n}",
                                       "country": "IN", "kind": "recycler"}})
        with TestClient(create_relay_app(settings)) as relay, \
                TestClient(create_projection_app(settings)) as projections:
            cluster.wait_visible(last, timeout=120)
            wait_until(lambda: readiness(relay)[0] == 200, what="the relay is ready")
            wait_until(lambda: readiness(projections)[0] == 200, what="projections are ready")

            restart_empty(private_kafka_broker, topic)  # while idle: the heartbeat sees it
            seen: list[dict[str, Any]] = []

            def relay_names_the_topic() -> bool:
                status, body = readiness(relay)
                if status == 503 and body["checks"].get("topic") != "ok":
                    seen.append(body)
                return bool(seen)

            wait_until(relay_names_the_topic, 60, "the relay's readiness names the topic")
            assert "127.0.0.1" not in str(seen[0])
            metrics = relay.get("/metrics").text
            assert "dealreg_relay_topic_losses 1.0" in metrics
            assert "dealreg_relay_epoch 2.0" in metrics
            wait_until(lambda: readiness(relay)[0] == 200, 120, "the relay whole again")
            wait_until(lambda: readiness(projections)[0] == 200, 120, "projections caught up")
            consumer: ProjectionConsumer = projections.app.state.consumer  # type: ignore[attr-defined]
            assert consumer.stats.rewinds >= 1
            cluster.wait_visible(last)
            assert cluster.queries.firms(limit=500).total == firms + FIRMS_TO_REPUBLISH
    finally:
        cluster.close()


def test_records_behind_a_gap_wait_unapplied_until_the_log_is_published_again(
    tmp_path: Path, postgres_url: str, kafka_topic: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = cluster_settings(tmp_path, postgres_url, kafka_topic)
    cluster = Cluster(settings)
    try:
        last = cluster.record_scenario()
        relay = cluster.start_relay()
        consumer = cluster.consumer()
        cluster.start_consumer(consumer)
        cluster.wait_visible(last)
        relay.stop()  # the relay must not publish what follows itself
        firms = cluster.queries.firms(limit=500).total

        # A record that follows a gap in partition p's numbering: as if the topic had lost
        # the records before it. It is a real event of the log (a new firm), so applying it
        # would show; it must neither be applied nor raise the read position.
        firm = cluster.record({"event_id": "gap-firm", "type": "firm_registered",
                               "occurred_at": T, "payload": {"code": "gap-jp", "name": "Gap",
                                                             "country": "JP",
                                                             "kind": "manufacturer"}})
        envelope = envelope_at(cluster, firm)
        key = str(envelope.aggregate_id).encode()
        producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
        partition = partition_of(key, sorted(producer.partitions_for(settings.kafka_topic)))
        producer.send(settings.kafka_topic, key=key, partition=partition,
                      value=envelope.model_dump_json().encode(),
                      headers=message_headers(envelope) + StreamStamp(1, 10_000).headers()
                      ).get(timeout=30)
        producer.close()
        wait_until(lambda: partition in consumer.stats.gaps, what="the gap to be seen")
        assert cluster.queries.firms(limit=500).total == firms
        assert cluster.queries.position() < firm

        # The documented recovery: a new epoch, the log published again.
        monkeypatch.setenv("DEALREG_DATABASE_URL", str(settings.database_url))
        monkeypatch.setenv("DEALREG_KAFKA_TOPIC", settings.kafka_topic)
        assert main(["relay", "republish"]) == 0
        cluster.start_relay()
        cluster.wait_visible(firm)
        assert cluster.queries.firms(limit=500).total == firms + 1
        wait_until(lambda: partition not in consumer.stats.gaps, what="the gap to be closed")
        assert cluster.usd_by_sector() == expected_by_sector()  # nothing counted twice
    finally:
        cluster.close()


def envelope_at(cluster: Cluster, position: int) -> EventEnvelope:
    notifications = list(cluster.store.read_log(after=position - 1, limit=1))
    return envelopes_from(notifications, cluster.store.mapper)[0]


def test_the_relay_keeps_its_numbering_and_a_new_epoch_drops_a_stale_save(
    postgres_url: str,
) -> None:
    engine = create_sql_engine(sqlalchemy_url(postgres_url))
    try:
        with engine.begin() as conn:  # as a relay made before epochs left it
            conn.execute(text("CREATE TABLE dealreg_relay_position (topic VARCHAR(255) "
                              "PRIMARY KEY, position BIGINT NOT NULL)"))
            conn.execute(text("INSERT INTO dealreg_relay_position VALUES ('events', 640)"))
        published = PublishedPosition(engine, "events")
        published.create_schema()
        stream = published.load_stream()
        assert (published.load(), stream.epoch) == (640, 1)
        stream.stamp(0)
        stream.acknowledged(0, 17)
        assert published.save(700, stream)
        assert published.load_stream().next_seq == {0: 1}
        assert published.load_stream().acked == {0: 17}

        assert published.start_epoch() == 2  # `dealreg relay republish`
        assert (published.load(), published.load_stream().next_seq) == (0, {0: 0})
        # A page the leader published in epoch 1 meanwhile must not move epoch 2's position.
        assert not published.save(720, stream)
        assert published.load() == 0
    finally:
        engine.dispose()


def test_a_topic_recreated_with_other_partitions_is_refused_not_published_to(
    tmp_path: Path, postgres_url: str, kafka_broker: Any
) -> None:
    # As if the broker had come back empty and auto-created the topic with its own count:
    # the relay numbered 4 partitions, the topic now has 2.
    topic = new_topic(kafka_broker.bootstrap, "reshaped")
    settings = cluster_settings(tmp_path, postgres_url, topic).model_copy(
        update={"kafka_topic": topic.name + ".two"})
    create_topic(kafka_broker.bootstrap, settings.kafka_topic, partitions=2)
    cluster = Cluster(settings)
    try:
        cluster.record_scenario()
        published = PublishedPosition(create_sql_engine(str(settings.registry_tables_url())),
                                      settings.kafka_topic)
        published.create_schema()
        assert published.save(0, RelayStream(partitions=4, next_seq={p: 3 for p in range(4)}))
        with TestClient(create_relay_app(settings)) as relay:
            app_relay: Relay = relay.app.state.relay  # type: ignore[attr-defined]
            wait_until(lambda: bool(app_relay.status.reshaped), what="the relay to refuse")
            status, body = readiness(relay)
            assert status == 503 and body["checks"]["topic"] != "ok", body
            assert "recreate it with 4 partitions" in app_relay.status.reshaped
            assert app_relay.status.published_events == 0 and published.load() == 0
    finally:
        cluster.close()
