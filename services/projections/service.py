"""Distributed mode, read side: the Kafka consumer feeding the read model, and the read API
over it (the same answers as the embedded mode). Several instances split the partitions."""

from __future__ import annotations

import time
from collections.abc import Iterator

from fastapi import FastAPI
from prometheus_client import Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from services.projections.consumer.kafka_consumer import (
    ConsumerConfig,
    ConsumerStats,
    ProjectionConsumer,
    partition_faults,
)
from services.projections.pages.site import install_pages
from services.projections.projectors.read_model_projector import ReadModelProjector
from services.projections.query_api.parked_routes import install_parked_api
from services.projections.query_api.routes import install_read_api
from services.projections.query_api.stream_routes import install_stream_api
from services.projections.read_model.queries import ReadModelQueries
from services.projections.read_model.tables import create_read_schema
from services.projections.rebuild.rebuild import (
    ReadModelVersionRefused,
    live_version,
    version_refusal,
)
from services.shared.api_keys import ApiKeyStore
from services.shared.broker_health import BrokerWatch
from services.shared.database import check_reachable, create_sql_engine
from services.shared.http_basics import HttpMetrics
from services.shared.key_admin_routes import install_key_admin_api
from services.shared.service_app import create_service_app, running_in_background
from services.shared.settings import Settings

DESCRIPTION = """Deal Registry read API, fed from Kafka. Dashboards read `/v1/pledges/*`,
`/v1/deals`, `/v1/firms` and `/v1/meetings` with a reader key; every answer says the log
`position` it reflects, and `min_position` waits for a write to become visible."""


class ConsumerLag(Collector):  # type: ignore[misc]
    """Per-partition lag, read from the consumer's latest view at scrape time."""

    def __init__(self, stats: ConsumerStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "dealreg_consumer_lag", "Messages not yet consumed, per partition", labels=["partition"]
        )
        for partition, lag in sorted(self.stats.lag.items()):
            family.add_metric([str(partition)], lag)
        yield family


def consumer_config(settings: Settings) -> ConsumerConfig:
    """How the projections read the topic, from the DEALREG_KAFKA_* settings."""
    return ConsumerConfig(
        bootstrap=settings.kafka_bootstrap,
        topic=settings.kafka_topic,
        dead_letter_topic=settings.dead_letter_topic(),
        group_id=settings.kafka_group_id,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
    )


def create_projection_app(settings: Settings) -> FastAPI:
    read_engine = create_sql_engine(settings.read_model_url())
    check_reachable(read_engine, "the read-model database")
    # A read model of another version is never projected into as it is: several instances
    # share it, so it is rebuilt once, by the operator, beside the live one.
    refusal = version_refusal(live_version(read_engine))
    if refusal is not None:
        read_engine.dispose()
        raise ReadModelVersionRefused(f"the projections do not start: {refusal}")
    create_read_schema(read_engine)
    key_engine = create_sql_engine(settings.registry_tables_url())
    check_reachable(key_engine, "the registry database (API keys)")
    key_store = ApiKeyStore(key_engine)
    key_store.create_schema()
    projector = ReadModelProjector(read_engine)
    consumer = ProjectionConsumer(projector, consumer_config(settings))
    broker = BrokerWatch(settings.kafka_bootstrap)
    lifespan = running_in_background(broker.watching(consumer.run), "consumer",
                                     read_engine.dispose, key_engine.dispose)

    def broker_reachable() -> None:
        broker.check()
        if not consumer.stats.connected:
            raise ConnectionError(f"{settings.kafka_bootstrap}: {consumer.stats.last_error}")

    def partitions_moving() -> None:
        faults = partition_faults(consumer.stats, time.monotonic())
        if faults:
            raise RuntimeError("; ".join(faults))

    metrics = HttpMetrics()
    app = create_service_app(
        "Deal Registry: projections", DESCRIPTION, settings, metrics,
        {"read_model": projector.position, "broker": broker_reachable,
         "partitions": partitions_moving}, lifespan,
        report={"parked_events": projector.parked.count},
    )
    Gauge("dealreg_events_applied", "Events applied by this process",
          registry=metrics.registry).set_function(lambda: consumer.stats.applied)
    Gauge("dealreg_events_dead_lettered", "Parked events copied to the dead-letter topic",
          registry=metrics.registry).set_function(lambda: consumer.stats.dead_lettered)
    Gauge("dealreg_consumer_rewinds", "Partitions this process read again from their start "
          "(the topic was recreated, or the relay published the log again)",
          registry=metrics.registry).set_function(lambda: consumer.stats.rewinds)
    Gauge("dealreg_consumer_gap_partitions", "Partitions whose records stopped following on "
          "(records missing before them: skipped, unapplied)",
          registry=metrics.registry).set_function(lambda: len(consumer.stats.gaps))
    metrics.registry.register(ConsumerLag(consumer.stats))

    queries = ReadModelQueries(read_engine)
    install_read_api(app, queries, key_store, metrics, projector.applied)
    install_stream_api(app, queries, key_store, metrics, projector.applied)
    install_pages(app, queries, key_store, metrics)
    # The projections may not import the registry, so a retry here cannot re-read the log:
    # an untranslatable event is retried by `dealreg projections parked retry`, which can.
    install_parked_api(app, projector, metrics)
    install_key_admin_api(app, key_store)
    app.state.consumer = consumer
    return app
