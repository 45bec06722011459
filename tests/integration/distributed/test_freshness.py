"""Read-your-writes in distributed mode: after each POST, a GET with `min_position` = the
receipt's position shows the write, with 1, 2 and 3 projection instances and through the
rebalances between them. And the projections' offsets reach the consumer group, for Kafka's
own lag tools."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient
from kafka import KafkaAdminClient

from services.projections.consumer.kafka_consumer import ProjectionConsumer
from services.projections.read_model.progress import stored_offsets
from services.projections.read_model.tables import READ_MODEL_PROJECTOR
from services.projections.service import create_projection_app
from services.registry.service import create_registry_app
from services.shared.api_keys import ApiKeyStore, Role
from services.shared.database import create_sql_engine
from services.shared.settings import sqlalchemy_url
from tests.integration.distributed.test_kafka_flow import (
    Background,
    Cluster,
    wait_until,
)

pytestmark = pytest.mark.integration
T = "2025-07-01T10:00:00+05:30"
WRITERS = 3
DEALS_PER_WRITER = 3
PAIRS_PER_PHASE = 90  # per phase, over all writers


@dataclass
class Probe:
    """Write→read pairs: each writer POSTs a pledge to one of its deals, then GETs the deal
    with `min_position` = the receipt's position; the answer must show the pledge."""

    write: TestClient
    read: TestClient
    writer: dict[str, str]
    reader: dict[str, str]
    deals: list[list[str]] = field(default_factory=list)
    pairs: int = 0
    stale: list[str] = field(default_factory=list)
    not_visible: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        response = self.write.post("/v1/events", json=body, headers=self.writer)
        assert response.status_code == 201, response.text
        return dict(response.json())

    def set_up(self) -> None:
        self.post({"event_id": "probe-firm", "type": "firm_registered", "occurred_at": T,
                   "payload": {"code": "probe-jp", "name": "Probe", "country": "JP",
                               "kind": "manufacturer"}})
        for w in range(WRITERS):
            self.deals.append([self.post({
                "event_id": f"probe-deal-{w}-{d}", "type": "deal_proposed", "occurred_at": T,
                "payload": {"title": "probe", "format": "equity_investment",
                            "sector": "electric_vehicles", "parties": ["probe-jp"]},
            })["aggregate_id"] for d in range(DEALS_PER_WRITER)])

    def pair(self, writer: int, n: int) -> None:
        deal = self.deals[writer][n % DEALS_PER_WRITER]
        receipt = self.post({
            "event_id": f"probe-{writer}-{n}", "type": "pledge_made", "occurred_at": T,
            "payload": {"deal_id": deal, "pledge_id": f"p-{writer}-{n}", "firm": "probe-jp",
                        "amount": {"low": "1000000", "high": "2000000", "currency": "USD"}}})
        answer = self.read.get(f"/v1/deals/{deal}", headers=self.reader,
                               params={"min_position": receipt["position"]})
        with self.lock:
            self.pairs += 1
            if answer.status_code != 200:
                self.not_visible.append(f"{receipt['position']}: {answer.status_code}")
            elif answer.json()["version"] < receipt["aggregate_version"]:
                body = answer.json()
                self.stale.append(f"receipt at position {receipt['position']} version "
                                  f"{receipt['aggregate_version']}; answer at position "
                                  f"{body['position']} shows version {body['version']}")

    def run(self, phase: int, pairs: int) -> None:
        """`pairs` write→read pairs, the writers running side by side."""
        def writer(w: int) -> None:
            for n in range(pairs // WRITERS):
                self.pair(w, phase * 10_000 + n)

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


@pytest.mark.slow
def test_a_read_with_min_position_shows_the_write_with_1_2_3_instances_and_rebalances(
    cluster: Cluster, postgres_url: str
) -> None:
    settings = cluster.settings
    keys = ApiKeyStore(create_sql_engine(sqlalchemy_url(postgres_url)))
    keys.create_schema()
    writer = {"Authorization": f"Bearer {keys.create('probe-partner', Role.PARTNER)}"}
    reader = {"Authorization": f"Bearer {keys.create('probe-reader', Role.READER)}"}
    cluster.start_relay()
    # The read API's app runs the first projection instance; the others are started beside.
    with TestClient(create_registry_app(settings)) as write, \
            TestClient(create_projection_app(settings)) as read:
        first: ProjectionConsumer = read.app.state.consumer  # type: ignore[attr-defined]
        probe = Probe(write, read, writer, reader)
        probe.set_up()
        probe.run(0, PAIRS_PER_PHASE)  # one instance

        second, third = cluster.consumer(), cluster.consumer()
        running_second: Background = cluster.start_consumer(second)
        probe.run(1, PAIRS_PER_PHASE)  # joining: a rebalance mid-probe, then two instances
        wait_until(lambda: bool(second.stats.lag), what="the second instance assigned")

        cluster.start_consumer(third)
        probe.run(2, PAIRS_PER_PHASE)  # three instances
        wait_until(lambda: bool(third.stats.lag), what="the third instance assigned")

        stopping = threading.Thread(target=running_second.stop)
        stopping.start()  # leaving mid-probe: its partitions move to the others
        probe.run(3, PAIRS_PER_PHASE)
        stopping.join()
        probe.run(4, PAIRS_PER_PHASE // 2)

        assert probe.stale == [], f"{len(probe.stale)} of {probe.pairs} stale: {probe.stale[:5]}"
        assert probe.not_visible == []
        assert probe.pairs >= 4 * PAIRS_PER_PHASE
        assert first.stats.applied + second.stats.applied + third.stats.applied > 0
        # Idle now: every partition caught up to the log's head, so reads are told the head.
        cluster.wait_visible(cluster.store.head_position())


def test_offsets_reach_the_consumer_group_after_the_database(cluster: Cluster) -> None:
    consumer = cluster.consumer()
    cluster.start_relay()
    cluster.start_consumer(consumer)
    cluster.wait_visible(cluster.record_scenario())
    settings = cluster.settings
    stored = stored_offsets(cluster.read_engine, READ_MODEL_PROJECTOR, settings.kafka_topic)
    assert sorted(stored) == [0, 1, 2, 3]  # the watermarks reach every partition

    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        def committed() -> dict[int, int]:
            found = admin.list_group_offsets(settings.kafka_group_id)[settings.kafka_group_id]
            return {tp.partition: meta.offset for tp, meta in found.items()
                    if tp.topic == settings.kafka_topic}

        # The next offset to read, as Kafka's tools expect: one past the last stored.
        wait_until(lambda: committed() == {p: o + 1 for p, o in stored.items()},
                   what=f"group offsets {stored} + 1")
    finally:
        admin.close()
    # The coordinator may hold the offsets before the client's callback has run (next poll).
    wait_until(lambda: consumer.stats.committed_to_group > 0, what="a commit acknowledged")
    assert consumer.stats.group_commit_error == ""
    # What the readiness probe reads: the broker answering, each partition's progress.
    assert consumer.stats.broker_seen_at is not None
    wait_until(lambda: set(consumer.stats.progressed_at) == {0, 1, 2, 3},
               what="progress per partition")
    wait_until(lambda: consumer.stats.lag == {p: 0 for p in range(4)}, what="no lag")
    assert consumer.stats.partitions == 4
