"""Embedded mode in one process: write API, read API and the projection feed between them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.embedded.projection_feed import (
    EmbeddedProjectionFeed,
    FeedProcess,
    FeedThread,
    reread_from_log,
)
from services.projections.pages.site import install_pages
from services.projections.projectors.read_model_projector import ReadModelProjector
from services.projections.query_api.parked_routes import install_parked_api
from services.projections.query_api.routes import install_read_api
from services.projections.query_api.stream_routes import install_stream_api
from services.projections.read_model.queries import ReadModelQueries
from services.projections.read_model.tables import create_read_schema
from services.registry.adapters.event_store import open_event_store
from services.registry.api.routes import install_write_api
from services.registry.application.handlers import RecordingService
from services.registry.audit.desk import RegistryAuditDesk
from services.shared.api_keys import ApiKeyStore
from services.shared.database import create_sql_engine
from services.shared.http_basics import HttpMetrics
from services.shared.key_admin_routes import install_key_admin_api
from services.shared.service_app import create_service_app
from services.shared.settings import Settings

DESCRIPTION = """Event-sourced registry of cross-border clean-tech deals.

Partners `POST /v1/events` with a partner key; dashboards read `/v1/pledges/*`, `/v1/deals`,
`/v1/firms` and `/v1/meetings` with a reader key. Every read says the log `position` it
reflects; pass `min_position` (the `position` of your receipt) to read your own writes.
"""


def create_embedded_app(settings: Settings) -> FastAPI:
    if settings.uses_sqlite_files():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = open_event_store(settings)
    key_store = ApiKeyStore(create_sql_engine(settings.registry_tables_url()))
    key_store.create_schema()
    read_engine = create_sql_engine(settings.read_model_url())
    create_read_schema(read_engine)
    projector = ReadModelProjector(read_engine)
    feed: FeedThread | FeedProcess
    if settings.projection_worker == "process":
        # Catch up before serving, so the first reads are complete; then follow elsewhere.
        EmbeddedProjectionFeed(store, projector).catch_up_at_start()
        feed = FeedProcess(settings, projector.applied)
    else:
        feed = FeedThread(EmbeddedProjectionFeed(
            store, projector, poll_seconds=settings.projection_poll_seconds))
    recording_service = RecordingService(store)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        feed.start()
        try:
            yield
        finally:
            feed.stop()
            recording_service.committer.close()
            store.close()
            read_engine.dispose()
            key_store.engine.dispose()

    metrics = HttpMetrics()
    app = create_service_app(
        "Deal Registry", DESCRIPTION, settings, metrics,
        {"event_store": store.head_position, "read_model": projector.position}, lifespan,
        report={"parked_events": projector.parked.count},
    )
    install_write_api(app, recording_service, key_store, metrics, on_recorded=feed.wake)
    queries = ReadModelQueries(read_engine)
    install_read_api(app, queries, key_store, metrics, projector.applied)
    install_stream_api(app, queries, key_store, metrics, projector.applied)
    install_pages(app, queries, key_store, metrics, RegistryAuditDesk(
        app.state.audit_event_store, app.state.audit_checkpoints))
    install_parked_api(app, projector, metrics, reread_from_log(store))
    install_key_admin_api(app, key_store)
    return app
