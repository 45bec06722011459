"""Admin endpoints of the parked events (what the read model could not apply), and their gauge.

`GET /v1/admin/parked` lists them, `POST /v1/admin/parked/retry` re-applies them after a fix;
both need an admin key. Mounted by the embedded app and the projection service alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, FastAPI, Query
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.json_schema import JsonDict
from starlette.concurrency import run_in_threadpool

from services.projections.projectors.parking import ParkedEvent, ParkedEvents, SourceEntry
from services.projections.projectors.read_model_projector import (
    ReadModelProjector,
    RetryOutcome,
)
from services.shared.errors import ApiError, error_responses
from services.shared.http_basics import HttpMetrics
from services.shared.key_auth import Admin
from services.shared.openapi_contract import MAX_POSITION, Offset

MAX_LIMIT = 500
INT64: JsonDict = {"format": "int64"}  # ids and offsets are 64-bit in generated SDKs

Reread = Callable[[ParkedEvent], SourceEntry | None]


class ParkedEventView(BaseModel):
    """One event the read model could not apply."""

    id: int = Field(description="Names the event to `dealreg projections parked retry ID`",
                    json_schema_extra=INT64)
    state: Literal["failed", "waiting"] = Field(
        description="failed: it could not be applied; waiting: it waits behind an earlier "
        "parked event of its aggregate")
    reason: str
    position: int | None = Field(description="Its position in the registry's log, if known",
                                 json_schema_extra=INT64)
    aggregate_id: UUID | None
    aggregate_version: int | None
    event_type: str | None
    event_id: str | None
    source: str = Field(description="'log', or the Kafka topic it was read from")
    partition: int
    offset: int = Field(json_schema_extra=INT64)
    parked_at: datetime
    attempts: int = Field(description="Retries that failed")
    last_attempt_at: datetime | None
    raw: str = Field(description="The envelope's JSON, or the record as it was read")

    @classmethod
    def of(cls, event: ParkedEvent) -> ParkedEventView:
        return cls(
            id=event.id, state=event.state.value, reason=event.reason, position=event.position,
            aggregate_id=event.aggregate_id, aggregate_version=event.aggregate_version,
            event_type=event.event_type, event_id=event.event_id, source=event.source,
            partition=event.partition, offset=event.offset, parked_at=event.parked_at,
            attempts=event.attempts, last_attempt_at=event.last_attempt_at, raw=event.raw,
        )


class ParkedEventsPage(BaseModel):
    items: list[ParkedEventView]
    total: int = Field(description="Parked events in all", json_schema_extra=INT64)
    limit: int
    offset: int


class RetryAggregate(BaseModel):
    """Retry the parked events of the aggregate of parked event `id`."""

    model_config = ConfigDict(extra="forbid")

    id: int = Field(ge=1, le=MAX_POSITION, json_schema_extra=INT64)

    @field_validator("id", mode="before")
    @classmethod
    def _a_json_integer(cls, value: object) -> object:
        # JSON Schema's integer admits 7.0 but not "7" or true, which lax pydantic would take.
        if isinstance(value, str | bool):
            raise ValueError("must be a JSON integer")
        return value


class RetryEverything(BaseModel):
    """Retry every parked event."""

    model_config = ConfigDict(extra="forbid")

    all: Literal[True]

    @field_validator("all", mode="before")
    @classmethod
    def _a_json_true(cls, value: object) -> object:
        if value is not True:  # 1 equals True in Python, not in JSON
            raise ValueError("must be true")
        return value


class RetriedEvent(BaseModel):
    id: int = Field(json_schema_extra=INT64)
    aggregate_id: UUID | None
    aggregate_version: int | None
    applied: bool
    reason: str = Field(description="Why it is still parked; empty once applied")


class RetryReport(BaseModel):
    applied: int
    still_parked: int
    events: list[RetriedEvent]


def retry_report(outcomes: list[RetryOutcome]) -> RetryReport:
    """What a retry did, for the endpoint and the CLI's --json."""
    applied = sum(1 for o in outcomes if o.applied)
    return RetryReport(applied=applied, still_parked=len(outcomes) - applied, events=[
        RetriedEvent(id=o.event.id, aggregate_id=o.event.aggregate_id,
                     aggregate_version=o.event.aggregate_version, applied=o.applied,
                     reason=o.reason)
        for o in outcomes
    ])


class ParkedEventsGauge(Collector):  # type: ignore[misc]
    """`dealreg_events_parked`, counted in the read model's database at scrape time (the
    feed may run in another process); absent while the database does not answer."""

    def __init__(self, parked: ParkedEvents) -> None:
        self.parked = parked

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            count = self.parked.count()
        except Exception:  # noqa: BLE001 - readiness reports the database; metrics go on
            return
        yield GaugeMetricFamily(
            "dealreg_events_parked",
            "Events the read model could not apply, or that wait behind one (see "
            "`dealreg projections parked list`)", value=count)


def parked_router(projector: ReadModelProjector, reread: Reread | None) -> APIRouter:
    router = APIRouter(prefix="/v1/admin", tags=["admin"])

    @router.get("/parked", response_model=ParkedEventsPage,
                responses=error_responses(401, 403, 422, 503))
    async def list_parked(
        _: Admin,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page")] = 50,
        offset: Offset = 0,
    ) -> ParkedEventsPage:
        """Events the read model could not apply, oldest first, with the reason; admin only."""
        page = await run_in_threadpool(projector.parked.page, limit, offset)
        return ParkedEventsPage(items=[ParkedEventView.of(e) for e in page.items],
                                total=page.total, limit=limit, offset=offset)

    @router.post("/parked/retry", response_model=RetryReport,
                 responses=error_responses(400, 401, 403, 404, 413, 415, 422, 431, 503))
    async def retry_parked(_: Admin, body: RetryAggregate | RetryEverything) -> RetryReport:
        """Re-apply parked events after a fix: those of the aggregate of event `id`, or all
        (`{"all": true}`), each aggregate's in version order; applied ones leave the list.
        Admin only."""
        parked_id = body.id if isinstance(body, RetryAggregate) else None
        if parked_id is not None and await run_in_threadpool(
                projector.parked.get, parked_id) is None:
            raise ApiError(404, "not_found", f"no parked event {parked_id}", field="id",
                           rule="known_parked_event")
        outcomes = await run_in_threadpool(projector.retry_parked, parked_id, reread)
        return retry_report(outcomes)

    return router


def install_parked_api(app: FastAPI, projector: ReadModelProjector, metrics: HttpMetrics,
                       reread: Reread | None = None) -> None:
    """Mount the admin endpoints of the parked events and their gauge. `reread` gives a
    parked event's entry afresh from the log, where the service can read the log."""
    metrics.registry.register(ParkedEventsGauge(projector.parked))
    app.include_router(parked_router(projector, reread))
