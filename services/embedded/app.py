"""Embedded mode in one process: write API, read API and the projection feed between them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from services.embedded.projection_feed import (
    EmbeddedProjectionFeed,
    FeedProcess,
    FeedThread,
    ReadModelUpgrade,
    reread_from_log,
)
from services.projections.pages.site import install_pages
from services.projections.projectors.read_model_projector import ReadModelProjector
from services.projections.query_api.parked_routes import install_parked_api
from services.projections.query_api.routes import install_read_api
from services.projections.query_api.stream_routes import install_stream_api
from services.projections.read_model.queries import ReadModelQueries
from services.projections.read_model.tables import READ_MODEL_VERSION, create_read_schema
from services.projections.rebuild.rebuild import (
    ReadModelVersionRefused,
    live_version,
    version_refusal,
)
from services.registry.adapters.event_store import open_event_store
from services.registry.api.routes import install_write_api
from services.registry.application.handlers import RecordingService
from services.registry.audit.desk import RegistryAuditDesk
from services.shared.api_keys import ApiKeyStore
from services.shared.database import create_sql_engine
from services.shared.errors import error_body
from services.shared.http_basics import HttpMetrics
from services.shared.key_admin_routes import install_key_admin_api
from services.shared.service_app import create_service_app
from services.shared.settings import Settings

DESCRIPTION = """Event-sourced registry of cross-border clean-tech deals.

Partners `POST /v1/events` with a partner key; dashboards read `/v1/pledges/*`, `/v1/deals`,
`/v1/firms` and `/v1/meetings` with a reader key. Every read says the log `position` it
reflects; pass `min_position` (the `position` of your receipt) to read your own writes.
"""

# What is served while the read model is rebuilt to the code's version: health, metrics,
# docs, writes, keys, and the registry's own audit of the log. Everything else reads the
# read model, and answers 503 until the switch.
SERVED_WHILE_REBUILDING = (
    "/healthz", "/readyz", "/metrics", "/docs", "/redoc", "/openapi.json",
    "/static-offline-docs", "/v1/events", "/v1/keys", "/v1/audit/verify",
    "/v1/audit/checkpoints", "/v1/audit/key-events",
)
RETRY_WHILE_REBUILDING_SECONDS = 5


def _served_while_rebuilding(path: str) -> bool:
    return any(path == served or path.startswith(served + "/")
               for served in SERVED_WHILE_REBUILDING)


def _install_rebuild_gate(app: FastAPI, upgrade: ReadModelUpgrade) -> None:
    """503, with a message saying why, for what reads the read model until the switch."""

    @app.middleware("http")
    async def rebuilding(request: Request,
                         call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if upgrade.serving_reads or _served_while_rebuilding(request.url.path):
            return await call_next(request)
        message = (f"{upgrade.describe()}; reads are answered again once it is done "
                   "(writes are taken meanwhile)")
        return JSONResponse(
            error_body(503, "read_model_rebuilding", message,
                       from_version=upgrade.from_version, to_version=upgrade.to_version),
            status_code=503,
            headers={"Retry-After": str(RETRY_WHILE_REBUILDING_SECONDS)})


def _rebuild_command(settings: Settings) -> str:
    """`dealreg projections rebuild` as it finds this installation's read model."""
    if settings.read_database_url is None and settings.database_url is None:
        return f"dealreg projections rebuild --data-dir {settings.data_dir}"
    return "dealreg projections rebuild"


def create_embedded_app(settings: Settings) -> FastAPI:
    if settings.uses_sqlite_files():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = open_event_store(settings)
    key_store = ApiKeyStore(create_sql_engine(settings.registry_tables_url()))
    key_store.create_schema()
    read_engine = create_sql_engine(settings.read_model_url())
    stored = live_version(read_engine)
    upgrade: ReadModelUpgrade | None = None
    if stored is not None and stored < READ_MODEL_VERSION:
        # Rebuilt beside the live one while serving; the feed waits for the switch.
        upgrade = ReadModelUpgrade(read_engine, store, stored)
    elif (refusal := version_refusal(stored, _rebuild_command(settings))):
        read_engine.dispose()
        key_store.engine.dispose()
        store.close()
        raise ReadModelVersionRefused(f"the registry does not start: {refusal}")
    create_read_schema(read_engine)
    projector = ReadModelProjector(read_engine)
    feed: FeedThread | FeedProcess
    if settings.projection_worker == "process":
        # Catch up before serving, so the first reads are complete; then follow elsewhere.
        if upgrade is None:
            EmbeddedProjectionFeed(store, projector).catch_up_at_start()
        feed = FeedProcess(settings, projector.applied)
    else:
        feed = FeedThread(EmbeddedProjectionFeed(
            store, projector, poll_seconds=settings.projection_poll_seconds))
    recording_service = RecordingService(store)

    @asynccontextmanager
    async def lifespan(running: FastAPI) -> AsyncIterator[None]:
        if upgrade is None:
            feed.start()
        else:
            upgrade.start(then=feed.start)
        try:
            yield
        finally:
            if upgrade is not None:
                upgrade.stop()
            if upgrade is None or upgrade.following:
                feed.stop()
            running.state.recording_queue.close()  # answers what it holds, then stops
            recording_service.committer.close()
            store.close()
            read_engine.dispose()
            key_store.engine.dispose()

    def read_model_ready() -> int:
        if upgrade is not None and not upgrade.serving_reads:
            raise RuntimeError(upgrade.describe())
        return projector.position()

    def read_model_version() -> dict[str, Any]:
        if upgrade is not None:
            return upgrade.status()
        return {"version": READ_MODEL_VERSION, "state": "current"}

    metrics = HttpMetrics()
    app = create_service_app(
        "Deal Registry", DESCRIPTION, settings, metrics,
        {"event_store": store.head_position, "read_model": read_model_ready}, lifespan,
        report={"parked_events": projector.parked.count,
                "read_model_version": read_model_version},
    )
    if upgrade is not None:
        _install_rebuild_gate(app, upgrade)
    app.state.read_model_upgrade = upgrade
    install_write_api(app, recording_service, key_store, metrics, on_recorded=feed.wake)
    queries = ReadModelQueries(read_engine)
    install_read_api(app, queries, key_store, metrics, projector.applied)
    install_stream_api(app, queries, key_store, metrics, projector.applied)
    install_pages(app, queries, key_store, metrics, RegistryAuditDesk(
        app.state.audit_event_store, app.state.audit_checkpoints, app.state.tree_head_signer))
    install_parked_api(app, projector, metrics, reread_from_log(store))
    install_key_admin_api(app, key_store)
    return app
