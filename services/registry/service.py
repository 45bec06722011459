"""Distributed mode, write side: the write API alone. It keeps no state of its own, so
several instances can run side by side on one PostgreSQL event store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.registry.adapters.event_store import open_event_store
from services.registry.api.routes import install_write_api
from services.registry.application.handlers import RecordingService
from services.shared.api_keys import ApiKeyStore
from services.shared.database import check_reachable, create_sql_engine
from services.shared.http_basics import HttpMetrics
from services.shared.key_admin_routes import install_key_admin_api
from services.shared.service_app import create_service_app
from services.shared.settings import Settings

DESCRIPTION = """Deal Registry write API. Partners `POST /v1/events` with a partner key; the
relay streams recorded events to Kafka, where the projection service picks them up."""


def create_registry_app(settings: Settings) -> FastAPI:
    key_engine = create_sql_engine(settings.registry_tables_url())
    check_reachable(key_engine, "the registry database")
    key_store = ApiKeyStore(key_engine)
    key_store.create_schema()
    store = open_event_store(settings)
    recording_service = RecordingService(store)

    @asynccontextmanager
    async def lifespan(running: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            running.state.recording_queue.close()  # answers what it holds, then stops
            recording_service.committer.close()
            store.close()
            key_engine.dispose()

    metrics = HttpMetrics()
    app = create_service_app("Deal Registry: write API", DESCRIPTION, settings, metrics,
                             {"event_store": store.head_position}, lifespan)
    install_write_api(app, recording_service, key_store, metrics)
    install_key_admin_api(app, key_store)
    return app
