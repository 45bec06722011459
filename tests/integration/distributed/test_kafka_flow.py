"""Distributed mode against a real Kafka-protocol broker and the local PostgreSQL: events
reach the read model in order per deal, with nothing lost and nothing counted twice, however
the relay, the projection instances or the broker fail."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from pydantic import TypeAdapter
from sqlalchemy import select

from contracts.events_v2 import EventEnvelope  # either schema version, as the consumers read them
from contracts.submissions_v1 import Submission
from contracts.untranslatable_v1 import UntranslatableEvent
from contracts.watermark_v1 import WATERMARK_HEADER, Watermark
from services.demo.scenario import expected_totals, scenario
from services.projections.consumer.kafka_consumer import ConsumerConfig, ProjectionConsumer
from services.projections.projectors.parking import ParkedEvent, ParkedEvents
from services.projections.projectors.read_model_projector import ReadModelProjector
from services.projections.read_model.queries import ReadModelQueries
from services.projections.read_model.tables import (
    READ_MODEL_PROJECTOR,
    ParkedState,
    TotalsDimension,
    create_read_schema,
    source_progress,
)
from services.projections.service import create_projection_app
from services.registry.adapters.event_store import DealRegistryStore, open_event_store
from services.registry.application.commands import RecordPartnerEvent
from services.registry.application.handlers import RecordingService
from services.registry.relay.contract_events import envelopes_from
from services.registry.relay.relay import Relay
from services.registry.relay.service import build_relay, create_relay_app
from services.registry.service import create_registry_app
from services.shared.api_keys import ApiKeyStore, Role
from services.shared.database import create_sql_engine
from services.shared.settings import Settings, sqlalchemy_url
from tests.e2e.test_embedded_process import free_port
from tests.integration.connection_killer import ConnectionKiller
from tests.integration.poisoned_log import register_firm, store_untranslatable_deal
from tests.kafka_broker import KafkaTopic, new_topic

pytestmark = pytest.mark.integration
SUBMISSIONS = TypeAdapter(Submission)
T = "2025-07-01T10:00:00+05:30"


def wait_until(check: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or check}")


class Background:
    """Runs `target(stop)` in a thread; `stop()` sets the event and joins."""

    def __init__(self, target: Callable[[threading.Event], None]) -> None:
        self.event = threading.Event()
        self.thread = threading.Thread(target=target, args=(self.event,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.event.set()
        self.thread.join(timeout=20)
        assert not self.thread.is_alive()


class Cluster:
    """The distributed parts in this process: writes, relays, projection consumers."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store: DealRegistryStore = open_event_store(settings)
        self.service = RecordingService(self.store)
        self.read_engine = create_sql_engine(settings.read_model_url())
        create_read_schema(self.read_engine)
        self.queries = ReadModelQueries(self.read_engine)
        self.running: list[Background] = []

    def record(self, body: dict[str, Any], principal: str = "partner-a") -> int:
        submission = SUBMISSIONS.validate_python(body)
        return self.service.record(RecordPartnerEvent(principal, submission)).position

    def record_scenario(self) -> int:
        return max(self.record(body) for body in scenario())

    def relay(self) -> Relay:
        return build_relay(self.settings)

    def start_relay(self, relay: Relay | None = None) -> Background:
        return self._start((relay or self.relay()).run)

    def consumer(self) -> ProjectionConsumer:
        s = self.settings
        return ProjectionConsumer(ReadModelProjector(self.read_engine), ConsumerConfig(
            s.kafka_bootstrap, s.kafka_topic, s.dead_letter_topic(), s.kafka_group_id,
            s.kafka_session_timeout_ms, s.kafka_heartbeat_interval_ms))

    def start_consumer(self, consumer: ProjectionConsumer | None = None) -> Background:
        return self._start((consumer or self.consumer()).run)

    def _start(self, target: Callable[[threading.Event], None]) -> Background:
        background = Background(target)
        self.running.append(background)
        return background

    def wait_visible(self, position: int, timeout: float = 60.0) -> None:
        wait_until(lambda: self.queries.position() >= position, timeout,
                   f"read model at position {position} (now {self.queries.position()})")

    def usd_by_sector(self) -> dict[str, tuple[Decimal, Decimal]]:
        return {item["sector"]: (Decimal(item["usd"]["low"]), Decimal(item["usd"]["high"]))
                for item in self.queries.pledge_totals(TotalsDimension.SECTOR)}

    def close(self) -> None:
        for background in self.running:
            if background.thread.is_alive():
                background.stop()
        self.store.close()
        self.read_engine.dispose()


def expected_by_sector() -> dict[str, tuple[Decimal, Decimal]]:
    return {sector: (t["low"], t["high"]) for sector, t in expected_totals()["by_sector"].items()
            if t["pledges"]}


def read_model_state(queries: ReadModelQueries) -> dict[str, Any]:
    """Everything the read API can show, except the position it reflects."""
    deals = queries.deals(limit=500)
    return {
        "sector": queries.pledge_totals(TotalsDimension.SECTOR),
        "firm": queries.pledge_totals(TotalsDimension.FIRM),
        "country": queries.pledge_totals(TotalsDimension.COUNTRY),
        "deals": deals,
        "deal": [queries.deal(uuid.UUID(d["deal_id"])) for d in deals.items],
        "events": [queries.deal_events(uuid.UUID(d["deal_id"]), limit=500)
                   for d in deals.items],
        "firms": queries.firms(limit=500),
        "meetings": queries.meetings(limit=500),
    }


def topic_messages(bootstrap: str, topic: str) -> list[Any]:
    """Every record of the topic up to each partition's end as first seen (the relay's
    heartbeat watermarks keep coming, so waiting for silence would never end)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             group_id=None, auto_offset_reset="earliest")
    try:
        partitions = [TopicPartition(topic, p)
                      for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        messages: list[Any] = []
        ends: dict[TopicPartition, int] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                messages.extend(records)
            for tp in partitions:
                end = consumer.highwater(tp)
                if tp not in ends and end is not None:
                    ends[tp] = end
            if len(ends) == len(partitions) and all(
                    consumer.position(tp) >= end for tp, end in ends.items()):
                return [m for m in messages if m.offset < ends[TopicPartition(topic, m.partition)]]
        raise AssertionError(f"could not read {topic} to its end")
    finally:
        consumer.close()


def is_watermark(message: Any) -> bool:
    return dict(message.headers or []).get(WATERMARK_HEADER) == b"1"


def event_messages(bootstrap: str, topic: str) -> list[Any]:
    """The topic's records but the relay's watermarks."""
    return [m for m in topic_messages(bootstrap, topic) if not is_watermark(m)]


def cluster_settings(tmp_path: Path, database_url: str, topic: KafkaTopic) -> Settings:
    return Settings(
        data_dir=tmp_path, database_url=database_url, kafka_bootstrap=topic.bootstrap,
        kafka_topic=topic.name, kafka_dlq_topic=topic.dlq_name,
        kafka_group_id=f"group-{uuid.uuid4().hex[:8]}", kafka_session_timeout_ms=2000,
        kafka_heartbeat_interval_ms=500, relay_poll_seconds=0.05, relay_max_backoff_seconds=1,
        freshness_wait_seconds=30,
    )


def test_end_to_end_over_http_gives_the_embedded_totals(
    tmp_path: Path, postgres_url: str, kafka_topic: KafkaTopic
) -> None:
    settings = cluster_settings(tmp_path, postgres_url, kafka_topic)
    registry, relay, projections = (create_registry_app(settings), create_relay_app(settings),
                                    create_projection_app(settings))
    keys = ApiKeyStore(create_sql_engine(sqlalchemy_url(postgres_url)))
    writer = {"Authorization": f"Bearer {keys.create('partner', Role.PARTNER)}"}
    reader = {"Authorization": f"Bearer {keys.create('dashboard', Role.READER)}"}
    with TestClient(registry) as write, TestClient(relay), TestClient(projections) as read:
        last = 0
        for body in scenario():
            response = write.post("/v1/events", json=body, headers=writer)
            assert response.status_code == 201, response.text
            last = response.json()["position"]
        totals = read.get("/v1/pledges/by-sector", params={"min_position": last},
                          headers=reader)
        assert totals.status_code == 200, totals.text
        got = {i["sector"]: (Decimal(i["usd"]["low"]), Decimal(i["usd"]["high"]))
               for i in totals.json()["items"]}
        assert got == expected_by_sector()
        assert write.get("/readyz").status_code == 200
        assert read.get("/readyz").status_code == 200
        metrics = read.get("/metrics").text
        assert "dealreg_consumer_lag{partition=" in metrics
        assert "dealreg_events_applied 32.0" in metrics


def test_one_deals_events_arrive_in_version_order(cluster: Cluster) -> None:
    cluster.record_scenario()
    relay = cluster.relay()
    while relay.publish_page():
        pass
    versions: dict[str, list[int]] = defaultdict(list)
    partitions: dict[str, set[int]] = defaultdict(set)
    marks: dict[int, list[Watermark]] = defaultdict(list)
    for message in topic_messages(cluster.settings.kafka_bootstrap, cluster.settings.kafka_topic):
        if is_watermark(message):
            marks[message.partition].append(Watermark.model_validate_json(message.value))
            continue
        envelope = EventEnvelope.model_validate_json(message.value)
        assert message.key == str(envelope.aggregate_id).encode()
        assert dict(message.headers)["position"] == str(envelope.position).encode()
        versions[str(envelope.aggregate_id)].append(envelope.aggregate_version)
        partitions[str(envelope.aggregate_id)].add(message.partition)
    assert all(v == list(range(1, len(v) + 1)) for v in versions.values())
    assert all(len(p) == 1 for p in partitions.values())
    assert len({p for ps in partitions.values() for p in ps}) > 1  # the work is spread
    # After the page, every partition was told that the log is published up to its end;
    # once idle, nothing more.
    head = cluster.store.head_position()
    assert {p: [(m.position, m.partition, m.partitions) for m in ms] for p, ms in marks.items()
            } == {p: [(head, p, 4)] for p in range(4)}


def test_two_projection_instances_share_partitions_and_totals_stay_exact(
    cluster: Cluster,
) -> None:
    first, second = cluster.consumer(), cluster.consumer()
    cluster.start_consumer(first)
    cluster.start_consumer(second)
    cluster.start_relay()
    last = cluster.record_scenario()
    cluster.wait_visible(last)
    wait_until(lambda: set(first.stats.lag) and set(second.stats.lag), what="both assigned")
    assert not set(first.stats.lag) & set(second.stats.lag)
    assert first.stats.applied + second.stats.applied >= 32
    assert cluster.usd_by_sector() == expected_by_sector()


def test_relay_crash_after_publishing_republishes_without_double_counting(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    last = cluster.record_scenario()
    crashing = cluster.relay()

    def crash(*_: object) -> None:
        raise SystemExit("killed after the broker acknowledged, before recording")

    monkeypatch.setattr(crashing.published, "save", crash)
    with pytest.raises(SystemExit):
        crashing.publish_page()
    assert crashing.published.load() == 0
    monkeypatch.undo()

    cluster.start_relay()
    cluster.start_consumer()
    cluster.wait_visible(last)
    messages = event_messages(cluster.settings.kafka_bootstrap, cluster.settings.kafka_topic)
    assert len(messages) == 2 * 32  # every event went out twice
    assert cluster.usd_by_sector() == expected_by_sector()
    assert cluster.queries.deals().total == 5


@pytest.mark.slow
def test_a_standby_relay_takes_over_when_the_leader_dies(cluster: Cluster, tmp_path: Path
                                                        ) -> None:
    settings = cluster.settings
    env = {**os.environ, "DEALREG_DATABASE_URL": str(settings.database_url),
           "DEALREG_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
           "DEALREG_KAFKA_TOPIC": settings.kafka_topic,
           "DEALREG_KAFKA_DLQ_TOPIC": settings.kafka_dlq_topic or "",
           "DEALREG_RELAY_POLL_SECONDS": "0.05", "DEALREG_DATA_DIR": str(tmp_path)}
    port = free_port()
    with (tmp_path / "leader.log").open("ab") as log:
        leader = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "relay", "--host", "127.0.0.1",
             "--port", str(port)], env=env, stdout=log, stderr=log)
    try:
        def leader_leads() -> bool:
            try:
                metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).text
            except httpx.TransportError:
                return False
            return "dealreg_relay_leading 1.0" in metrics

        wait_until(leader_leads, timeout=60, what="the relay process leads")
        standby = cluster.relay()
        cluster.start_relay(standby)
        cluster.start_consumer()
        first = cluster.record(scenario()[0])
        cluster.wait_visible(first)  # published by the leader while the standby waits
        assert not standby.status.leading

        # kill -9: the process gets no chance to release anything; its database session,
        # and with it the advisory lock, ends when the server sees the socket close.
        leader.kill()
        leader.wait(timeout=10)
        wait_until(lambda: standby.status.leading, what="standby takes over")
        last = cluster.record_scenario()
        cluster.wait_visible(last)
        assert cluster.usd_by_sector() == expected_by_sector()
    finally:
        if leader.poll() is None:
            leader.kill()
            leader.wait(timeout=10)


def test_a_projection_killed_mid_stream_equals_a_rebuild_from_scratch(
    cluster: Cluster, tmp_path: Path
) -> None:
    last = cluster.record_scenario()
    relay = cluster.relay()
    while relay.publish_page():
        pass
    consumer = cluster.consumer()
    running = cluster.start_consumer(consumer)
    wait_until(lambda: consumer.stats.applied > 0, what="some events applied")
    running.stop()  # mid-stream: whatever it had not committed is redelivered
    cluster.start_consumer()
    cluster.wait_visible(last)

    rebuilt_engine = create_sql_engine(f"sqlite:///{tmp_path / 'rebuilt.db'}")
    create_read_schema(rebuilt_engine)
    ReadModelProjector(rebuilt_engine).apply(
        envelopes_from(list(cluster.store.read_log(0, 10_000)), cluster.store.mapper))
    assert read_model_state(cluster.queries) == read_model_state(ReadModelQueries(rebuilt_engine))


def poison_envelope(aggregate_id: uuid.UUID, version: int, position: int, type_: str,
                    payload: dict[str, Any]) -> EventEnvelope:
    return EventEnvelope(
        event_id=f"poison-{position}", type=type_, aggregate_id=aggregate_id,
        aggregate_version=version, position=position, occurred_at="2025-01-01T00:00:00Z",
        recorded_at="2025-01-01T00:00:00Z", recorded_by="x", previous_hash="0" * 64,
        hash="1" * 64, payload=payload,
    )


def parked_in(cluster: Cluster) -> list[ParkedEvent]:
    return list(ParkedEvents(cluster.read_engine, READ_MODEL_PROJECTOR).page(limit=500).items)


def test_poison_is_parked_its_deal_waits_and_its_partition_goes_on(cluster: Cluster) -> None:
    settings = cluster.settings
    poisoned, after = uuid.uuid4(), uuid.uuid4()
    # Far above the scenario's positions, so that they never meet its events'.
    fails = poison_envelope(poisoned, 1, 10_001, "pledge_withdrawn", {"pledge_id": "p-unknown"})
    behind = poison_envelope(poisoned, 2, 10_002, "deal_cancelled", {"reason": "no deal"})
    other = poison_envelope(after, 1, 10_003, "firm_registered", {
        "code": "after-poison", "name": "After Poison", "country": "JP", "kind": "automaker"})
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    # One partition, in this order: garbage, a failing event, a later event of its deal, and
    # a later event of another aggregate, which must not wait.
    for key, value in ((b"poison", b"{not json"), (str(poisoned).encode(), fails),
                       (str(poisoned).encode(), behind), (str(after).encode(), other)):
        raw = value if isinstance(value, bytes) else value.model_dump_json().encode()
        producer.send(settings.kafka_topic, key=key, value=raw, partition=0).get(timeout=10)
    producer.close()

    consumer = cluster.consumer()
    cluster.start_consumer(consumer)
    cluster.start_relay()
    cluster.record_scenario()
    wait_until(lambda: "after-poison" in [f["code"] for f in cluster.queries.firms(
        limit=500).items], 60, "the event after the poison applied")
    # Not by position: the poison's made-up positions are above the scenario's.
    wait_until(lambda: cluster.usd_by_sector() == expected_by_sector(), 60, "scenario applied")
    # And they never count as the read model's position: they are not the relay's records.
    head = cluster.store.head_position()
    cluster.wait_visible(head)
    with cluster.read_engine.connect() as conn:
        complete = conn.execute(select(source_progress.c.partition, source_progress.c.position)
                                .order_by(source_progress.c.partition)).all()
    assert [tuple(row) for row in complete] == [(p, head) for p in range(4)]
    assert cluster.queries.deals().total == 5

    parked = parked_in(cluster)
    assert [(p.aggregate_id, p.aggregate_version, p.state, p.partition, p.offset)
            for p in parked] == [
        (None, None, ParkedState.FAILED, 0, 0),
        (poisoned, 1, ParkedState.FAILED, 0, 1),
        (poisoned, 2, ParkedState.WAITING, 0, 2),
    ]
    assert parked[0].reason.startswith("invalid envelope") and parked[0].raw == "{not json"
    assert parked[1].reason.startswith("ProjectionError") and "never proposed" in parked[1].reason
    assert parked[1].envelope() == fails and parked[2].envelope() == behind
    assert cluster.queries.deal(poisoned) is None  # the cancellation waits, not applied
    assert consumer.stats.parked == 3

    # The failed ones are copied to the dead-letter topic for operators who watch it.
    wait_until(lambda: consumer.stats.dead_lettered == 2, 30, "dead letters sent")
    dead = topic_messages(settings.kafka_bootstrap, settings.dead_letter_topic())
    assert [m.value for m in dead] == [b"{not json", fails.model_dump_json().encode()]
    reasons = [dict(m.headers)["dlq_reason"].decode() for m in dead]
    assert reasons == [parked[0].reason, parked[1].reason]


def test_the_relay_passes_an_untranslatable_event_on_for_the_consumer_to_park(
    cluster: Cluster,
) -> None:
    register_firm(cluster.store, "old-firm")
    lost = uuid.uuid4()
    cancellation = store_untranslatable_deal(cluster.store, lost, "old-firm")
    relay, consumer = cluster.relay(), cluster.consumer()
    cluster.start_relay(relay)
    cluster.start_consumer(consumer)
    last = cluster.record_scenario()

    wait_until(lambda: relay.status.published_position == cluster.store.head_position(), 60,
               "relay past the untranslatable event")
    cluster.wait_visible(last)
    assert relay.status.untranslatable_events == 1
    assert cluster.usd_by_sector() == expected_by_sector()
    wait_until(lambda: len(parked_in(cluster)) == 2, 30, "both events of the deal parked")
    failed, waiting = parked_in(cluster)
    assert (failed.aggregate_id, failed.aggregate_version, failed.state) == (
        lost, 1, ParkedState.FAILED)
    assert "no attribute 'title'" in failed.reason and failed.position == cancellation - 1
    assert (waiting.aggregate_id, waiting.aggregate_version, waiting.state) == (
        lost, 2, ParkedState.WAITING)
    assert cluster.queries.deal(lost) is None
    records = [m for m in topic_messages(cluster.settings.kafka_bootstrap,
                                         cluster.settings.kafka_topic)
               if m.key == str(lost).encode()]
    assert dict(records[0].headers)["untranslatable"] == b"1"
    assert UntranslatableEvent.model_validate_json(records[0].value).aggregate_version == 1


def test_a_lost_database_connection_is_retried_not_parked(
    cluster: Cluster, postgres_url: str
) -> None:
    # An outage of the read model's database: every attempt to write a pledge loses its
    # connection until it ends. Were that taken for the events' fault, they would be parked.
    killer = ConnectionKiller(cluster.read_engine, postgres_url, "rm_pledges (")
    consumer = cluster.consumer()
    cluster.start_consumer(consumer)
    cluster.start_relay()
    try:
        last = cluster.record_scenario()
        killer.wait_for_kills(4)
        assert "OperationalError" in consumer.stats.database_error
        killer.end()
        cluster.wait_visible(last)
    finally:
        killer.remove()
    assert parked_in(cluster) == [] and consumer.stats.parked == 0
    assert cluster.usd_by_sector() == expected_by_sector()
    assert consumer.stats.connected  # the broker was never to blame


def test_writes_succeed_while_the_broker_is_paused_and_all_arrive_once(
    tmp_path: Path, postgres_url: str, private_kafka_broker: Any
) -> None:
    topic = new_topic(private_kafka_broker.bootstrap, "paused")
    cluster = Cluster(cluster_settings(tmp_path, postgres_url, topic))
    try:
        relay = cluster.relay()
        cluster.start_relay(relay)
        cluster.start_consumer()
        bodies = scenario()
        first = max(cluster.record(body) for body in bodies[:12])
        cluster.wait_visible(first)

        private_kafka_broker.pause()
        try:
            paused_writes = [cluster.record(body) for body in bodies[12:]]  # none may fail
            # The relay is stuck behind the stopped broker: the writes are in the log only.
            wait_until(lambda: relay.lag() > 0, what="the relay falls behind")
            assert relay.status.published_position < max(paused_writes)
            assert cluster.queries.position() < max(paused_writes)
        finally:
            private_kafka_broker.resume()
        cluster.wait_visible(max(paused_writes), timeout=90)
        assert cluster.usd_by_sector() == expected_by_sector()
        assert cluster.queries.deals().total == 5
        by_sector = cluster.queries.pledge_totals(TotalsDimension.SECTOR)
        assert sum(item["pledge_count"] for item in by_sector) == 8
    finally:
        cluster.close()
