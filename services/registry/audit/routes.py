"""The audit API: verify the log, list and take checkpoints. Auditor or admin keys only.

Installing it also starts the interval checkpointer for the app's lifetime, when
DEALREG_CHECKPOINT_INTERVAL_SECONDS is above zero.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from services.registry.adapters.event_store import DealRegistryStore
from services.registry.audit.checkpoints import (
    CheckpointStore,
    audit_database_url,
    take_checkpoint,
)
from services.registry.audit.responses import (
    CheckpointAnswer,
    CheckpointsPage,
    VerificationAnswer,
)
from services.registry.audit.verification import verify_log
from services.shared.database import create_sql_engine
from services.shared.errors import error_responses
from services.shared.key_auth import Auditor
from services.shared.openapi_contract import Offset
from services.shared.settings import Settings

log = logging.getLogger("dealreg.audit")

# 403: the key's role is neither auditor nor admin.
AUDIT_ERRORS = error_responses(401, 403, 503)
AUDIT_LIST_ERRORS = error_responses(401, 403, 422, 503)


def _audit_of(request: Request) -> tuple[DealRegistryStore, CheckpointStore]:
    return request.app.state.audit_event_store, request.app.state.audit_checkpoints


def checkpointing_loop(
    store: DealRegistryStore, checkpoints: CheckpointStore, interval: float,
    stop: threading.Event,
) -> None:
    """Take an interval checkpoint every `interval` seconds while the head moves."""
    while not stop.wait(interval):
        try:
            taken = take_checkpoint(store, checkpoints, "interval")
        except Exception:  # noqa: BLE001 - the next interval tries again
            log.exception("interval checkpoint failed")
            continue
        if taken is not None:
            log.info("checkpoint %d: %d events to position %d, root %s", taken.id,
                     taken.event_count, taken.last_position, taken.root)


def install_audit_api(app: FastAPI, store: DealRegistryStore) -> None:
    """Mount the audit routes beside the write API, on the same event store."""
    settings: Settings = app.state.settings
    engine: Engine = create_sql_engine(audit_database_url(settings))
    checkpoints = CheckpointStore(engine)
    checkpoints.create_schema()
    app.state.audit_event_store = store
    app.state.audit_checkpoints = checkpoints

    @asynccontextmanager
    async def checkpointing(_: Any) -> AsyncIterator[None]:
        stop = threading.Event()
        interval = settings.checkpoint_interval_seconds
        thread = threading.Thread(target=checkpointing_loop, name="audit-checkpoints",
                                  args=(store, checkpoints, interval, stop), daemon=True)
        if interval > 0:
            thread.start()
        try:
            yield
        finally:
            stop.set()
            if thread.is_alive():
                thread.join(timeout=15)
            engine.dispose()

    router = APIRouter(prefix="/v1/audit", tags=["audit"], lifespan=checkpointing)

    @router.get("/verify", response_model=VerificationAnswer, responses=AUDIT_ERRORS,
                summary="Verify the event log")
    async def verify(request: Request, _auditor: Auditor) -> dict[str, Any]:
        """Recompute every aggregate's hash chain and every checkpoint's Merkle root over the
        stored events; `ok` is false and `first_failure` names the position, aggregate and
        version of the first event that fails. Reads the whole log: slow on a large one."""
        event_store, checkpoint_store = _audit_of(request)
        report = await run_in_threadpool(verify_log, event_store, checkpoint_store)
        return report.as_dict()

    @router.get("/checkpoints", response_model=CheckpointsPage, responses=AUDIT_LIST_ERRORS,
                summary="List checkpoints")
    async def list_checkpoints(
        request: Request, _auditor: Auditor,
        limit: Annotated[int, Query(ge=1, le=500, description="Checkpoints per page")] = 100,
        offset: Offset = 0,
    ) -> dict[str, Any]:
        """Recorded checkpoints, oldest first: last position, event count, Merkle root, time
        and reason; `total` counts them all."""
        _, checkpoint_store = _audit_of(request)
        recorded, total = await run_in_threadpool(checkpoint_store.page, limit, offset)
        return {"checkpoints": [c.as_dict() for c in recorded], "limit": limit,
                "offset": offset, "total": total}

    @router.post("/checkpoints", status_code=201, response_model=CheckpointAnswer,
                 responses=AUDIT_ERRORS, summary="Take a checkpoint now")
    async def create_checkpoint(request: Request, _auditor: Auditor) -> dict[str, Any]:
        """Record a Merkle root over the log from position 1 to its current head."""
        event_store, checkpoint_store = _audit_of(request)
        taken = await run_in_threadpool(take_checkpoint, event_store, checkpoint_store,
                                        "on_demand")
        assert taken is not None  # on-demand checkpoints are never skipped
        return taken.as_dict()

    app.include_router(router)
