"""The relay as a process: the publishing loop in a thread, health and metrics over HTTP."""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import Gauge

from services.registry.adapters.event_store import open_event_store
from services.registry.relay.kafka_publisher import KafkaPublisher
from services.registry.relay.leadership import FileLeadership, Leadership, PostgresLeadership
from services.registry.relay.published_position import PublishedPosition
from services.registry.relay.relay import Relay
from services.shared.api_keys import ApiKeyStore
from services.shared.broker_health import BrokerWatch
from services.shared.database import check_reachable, create_sql_engine
from services.shared.http_basics import HttpMetrics
from services.shared.service_app import create_service_app, running_in_background
from services.shared.settings import Settings

DESCRIPTION = "Deal Registry relay: publishes the event log to Kafka, in order, at least once."


def build_relay(settings: Settings) -> Relay:
    engine = create_sql_engine(settings.registry_tables_url())
    check_reachable(engine, "the registry database")
    published = PublishedPosition(engine, settings.kafka_topic)
    published.create_schema()
    leadership: Leadership
    if settings.database_url is not None:
        leadership = PostgresLeadership(settings.database_url, f"relay:{settings.kafka_topic}")
    else:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        leadership = FileLeadership(settings.data_dir / f"relay.{settings.kafka_topic}.lock")
    return Relay(
        open_event_store(settings),
        published,
        leadership,
        lambda: KafkaPublisher(settings.kafka_bootstrap, settings.kafka_topic),
        page_size=settings.relay_page_size,
        poll_seconds=settings.relay_poll_seconds,
        max_backoff_seconds=settings.relay_max_backoff_seconds,
        heartbeat_seconds=settings.relay_heartbeat_seconds,
    )


def create_relay_app(settings: Settings) -> FastAPI:
    relay = build_relay(settings)
    broker = BrokerWatch(settings.kafka_bootstrap)
    # The relay checks keys only for DEALREG_METRICS=key and the causes /readyz shows admins.
    key_store = ApiKeyStore(create_sql_engine(settings.registry_tables_url()))
    key_store.create_schema()
    lifespan = running_in_background(broker.watching(relay.run), "relay", relay.store.close,
                                     key_store.engine.dispose)

    def broker_reachable() -> None:
        if not relay.status.leading:
            return  # a standby publishes nothing, so it needs no broker to be ready
        broker.check()
        if not relay.status.broker_ok:
            raise ConnectionError(f"{settings.kafka_bootstrap}: {relay.status.last_error}")

    def topic_whole() -> None:
        fault = relay.status.topic_fault()
        if fault:
            raise RuntimeError(fault)

    metrics = HttpMetrics()
    app = create_service_app(
        "Deal Registry: relay", DESCRIPTION, settings, metrics,
        {"event_store": relay.store.head_position, "broker": broker_reachable,
         "topic": topic_whole}, lifespan,
    )
    gauges = {
        "dealreg_relay_lag": ("Log head minus published position", relay.lag),
        "dealreg_relay_published_position": ("Last log position the broker acknowledged",
                                             lambda: relay.status.published_position),
        "dealreg_relay_published_events": ("Events published by this process",
                                           lambda: relay.status.published_events),
        "dealreg_relay_untranslatable_events": (
            "Stored events this process published as untranslatable (consumers park them)",
            lambda: relay.status.untranslatable_events),
        "dealreg_relay_leading": ("1 while this relay leads", lambda: relay.status.leading),
        "dealreg_relay_watermark_position": (
            "Last log position announced to every partition by a watermark",
            lambda: relay.status.watermark_position),
        "dealreg_relay_epoch": ("The epoch this relay last published in (contracts.stream_v1)",
                                lambda: relay.status.epoch),
        "dealreg_relay_topic_losses": (
            "Times this process found the topic younger than its records and re-published",
            lambda: relay.status.topic_losses),
    }
    for name, (doc, read) in gauges.items():
        Gauge(name, doc, registry=metrics.registry).set_function(read)
    app.state.relay = relay
    app.state.api_keys = key_store
    return app
