"""`GET /v1/stream`: new log positions and event summaries as server-sent events.

A stream sends, in log order and none skipped, every event the read model has applied after
its start point: the `Last-Event-ID` of a reconnecting client, else `?after=`, else the read
model's position when it connected (only new events). Each `recorded` event's id is its log
position; a `position` event says how far the read model reflects the log, and its id is
the position up to which everything was sent. Positions the read model passed without
recording an event there (a parked event) are thus covered, and a client resuming from any
id it was sent misses nothing. (A parked event applied later, by a retry, lands below
positions already sent: streams do not send it.)

Streams wake on the projector's committed position in shared memory (`AppliedPosition`),
read every WATCH_SECONDS by one watcher for all of them, and on the database's read position
every FALLBACK_SECONDS (a read model another process feeds); only then is the database asked
for events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.responses import StreamingResponse
from prometheus_client import Gauge
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from services.projections.query_api.routes import Queries
from services.projections.query_api.viewers import viewer_of
from services.projections.read_model.progress import AppliedPosition, read_position
from services.projections.read_model.queries import ReadModelQueries, recorded_view
from services.projections.read_model.tables import recorded_events
from services.projections.read_model.visibility import PROVENANCE, Viewer, event_for
from services.shared.api_keys import ApiKeyStore
from services.shared.errors import STATUS_MEANINGS, ApiError, error_response
from services.shared.http_basics import HttpMetrics
from services.shared.key_auth import BrowserReader
from services.shared.openapi_contract import INT64, MAX_POSITION

log = logging.getLogger("dealreg.stream")

WATCH_SECONDS = 0.05
FALLBACK_SECONDS = 0.5
PAGE_SIZE = 500
EVENT_STREAM = "text/event-stream"
# 18 digits: every such id is a position the backends can store (MAX_POSITION has 19).
EVENT_ID_PATTERN = r"^[0-9]{1,18}$"


@dataclass(frozen=True)
class StreamLimits:
    """What one process allows its streams (app.state.stream_limits; a test may replace it).

    A stream ends after `lifetime_seconds`; an EventSource reconnects after `retry_ms` with
    its Last-Event-ID and misses nothing, and long-lived connections get spread again."""

    max_streams: int = 100
    lifetime_seconds: float = 600.0
    keepalive_seconds: float = 15.0
    retry_ms: int = 2000
    busy_retry_seconds: int = 5


def sse_frame(data: str | None = None, event: str | None = None, id: int | None = None,
              retry_ms: int | None = None, comment: str | None = None) -> bytes:
    """One server-sent event as the wire carries it, ended by its blank line.

    A line break in `data` or `comment` becomes a further `data:` or comment line, so no
    text can end the event early or forge a field."""
    lines: list[str] = []
    if comment is not None:
        lines += [f": {line}" for line in comment.splitlines() or [""]]
    if retry_ms is not None:
        lines.append(f"retry: {retry_ms}")
    if id is not None:
        lines.append(f"id: {id}")
    if event is not None:
        if any(c in event for c in "\r\n"):
            raise ValueError("an event name is one line")
        lines.append(f"event: {event}")
    if data is not None:
        lines += [f"data: {line}" for line in data.splitlines() or [""]]
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def recorded_frame(summary: dict[str, Any]) -> bytes:
    return sse_frame(json.dumps(summary, separators=(",", ":")), "recorded", summary["position"])


def position_frame(cursor: int, position: int) -> bytes:
    return sse_frame(json.dumps({"position": position}, separators=(",", ":")), "position", cursor)


@dataclass(frozen=True)
class Batch:
    """Events after a stream's cursor, up to the read position read with them."""

    position: int
    summaries: list[dict[str, Any]]
    more: bool  # a full page: more events up to `position` follow


def events_after(queries: ReadModelQueries, after: int, up_to: int | None = None) -> Batch:
    """The next page of applied events after `after`, oldest first; up to the read model's
    position now, or `up_to` (the position of the previous page, when it was full)."""
    with queries.engine.connect() as conn:
        position = read_position(conn, queries.projector_name) if up_to is None else up_to
        rows = conn.execute(
            select(recorded_events)
            .where(recorded_events.c.position > after, recorded_events.c.position <= position)
            .order_by(recorded_events.c.position).limit(PAGE_SIZE)
        ).all()
    return Batch(position, [recorded_view(row) for row in rows], len(rows) == PAGE_SIZE)


class ReadPositionWatch:
    """Whether the read model's position may have moved, for every open stream at once.

    While anyone waits, one task reads the projector's shared position every WATCH_SECONDS
    and the database's every FALLBACK_SECONDS, and counts each change of either in
    `changes`: a stream notes the count before it reads, and waits for it to change."""

    def __init__(self, applied: AppliedPosition, position: Callable[[], int]) -> None:
        self.applied = applied
        self.position = position
        self.changes = 0
        self._seen: tuple[int, int] = (-1, -1)  # the shared and the database's position
        self._waiting = 0
        self._moved: asyncio.Event | None = None
        self._watcher: asyncio.Task[None] | None = None

    async def moved(self, changes: int, timeout: float) -> None:
        """Return once `changes` is no longer the count, or after `timeout` seconds."""
        if self.changes != changes:
            return
        loop = asyncio.get_running_loop()
        if self._watcher is None or self._watcher.done() or self._watcher.get_loop() is not loop:
            self._moved = asyncio.Event()
            self._watcher = loop.create_task(self._watch())
        moved = self._moved
        assert moved is not None
        self._waiting += 1
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(moved.wait(), timeout)
        finally:
            self._waiting -= 1

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        next_fallback = loop.time()
        # Lingers a fallback period after the last waiter left: streams come back to wait.
        while self._waiting > 0 or loop.time() < next_fallback:
            shared, stored = self.applied.value, self._seen[1]
            if loop.time() >= next_fallback:
                with contextlib.suppress(Exception):  # an outage: the streams' reads say so
                    stored = await run_in_threadpool(self.position)
                next_fallback = loop.time() + FALLBACK_SECONDS
            if (shared, stored) != self._seen:
                self._seen = (shared, stored)
                self.changes += 1
                assert self._moved is not None
                self._moved.set()
                self._moved = asyncio.Event()
            await asyncio.sleep(WATCH_SECONDS)


class StreamSlots:
    """How many streams are open in this process, bounded by StreamLimits.max_streams."""

    def __init__(self) -> None:
        self.open = 0

    def take(self, limit: int) -> Callable[[], None] | None:
        """A release function for a new stream's slot, None if all are taken."""
        if self.open >= limit:
            return None
        self.open += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.open -= 1

        return release


class EventStreamResponse(StreamingResponse):
    """A streaming answer that frees its stream's slot however it ends (done, dropped,
    cancelled), even before its body started."""

    media_type = EVENT_STREAM

    def __init__(self, content: AsyncIterator[bytes], release: Callable[[], None]) -> None:
        super().__init__(content, headers={"Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
        self.release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.release()


async def event_stream(request: Request, queries: ReadModelQueries, watch: ReadPositionWatch,
                       limits: StreamLimits, start: int | None, viewer: Viewer
                       ) -> AsyncIterator[bytes]:
    """The frames of one stream: `retry`, the events after `start` (or after the read
    position now), then each event as it is applied (as `viewer` may see it), with
    `position` events and keepalive comments, until the client leaves or the stream's
    lifetime ends."""
    loop = asyncio.get_running_loop()
    ends = loop.time() + limits.lifetime_seconds
    yield sse_frame(retry_ms=limits.retry_ms)
    cursor = start if start is not None else await run_in_threadpool(queries.position)
    told = -1  # the read position last sent in a `position` event
    next_keepalive = loop.time() + limits.keepalive_seconds
    while loop.time() < ends and not await request.is_disconnected():
        changes = watch.changes  # noted first: a move while reading wakes the next wait
        try:
            batch = await run_in_threadpool(events_after, queries, cursor)
            while True:
                for summary in batch.summaries:
                    yield recorded_frame(event_for(viewer, summary))
                    cursor = summary["position"]
                if not batch.more:
                    break
                batch = await run_in_threadpool(events_after, queries, cursor, batch.position)
        except SQLAlchemyError:
            # The read model is unreachable: end the stream; the client reconnects with the
            # id it was sent last once `retry` passed, and misses nothing.
            log.warning("event stream ended at position %d: the read model is unavailable",
                        cursor, exc_info=True)
            return
        # Every event up to the read position is sent: the client may resume from there.
        cursor = max(cursor, batch.position)
        if batch.position != told:
            told = batch.position
            yield position_frame(cursor, told)
            next_keepalive = loop.time() + limits.keepalive_seconds
        while watch.changes == changes:
            now = loop.time()
            if now >= ends or await request.is_disconnected():
                return
            if now >= next_keepalive:
                yield sse_frame(comment="keepalive")
                next_keepalive = now + limits.keepalive_seconds
            await watch.moved(changes, min(1.0, ends - now, next_keepalive - now))


def _json_object(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties),
            "additionalProperties": False}


_POSITION = {"type": "integer", "minimum": 0, "format": "int64"}
_MOMENT = {"type": "string", "format": "date-time"}
# Provenance: null (and named in `withheld`) unless the reader may see it (read_model/visibility).
_WITHHOLDABLE = {"type": ["string", "null"]}
# Each event of the stream as a parsed SSE event (`retry` alone carries no data, so no event).
EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["event", "id", "data"],
    "properties": {
        "event": {"type": "string", "enum": ["recorded", "position"]},
        "id": {"type": "string", "pattern": "^[0-9]+$"},
        "retry": {"type": "integer", "minimum": 0},
        "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": {
            "anyOf": [
                _json_object({
                    "position": _POSITION, "event_id": _WITHHOLDABLE,
                    "type": {"type": "string"},
                    "aggregate_id": {"type": "string", "format": "uuid"},
                    "aggregate_version": {"type": "integer", "minimum": 1},
                    "occurred_at": _MOMENT, "recorded_at": _MOMENT,
                    "recorded_by": _WITHHOLDABLE, "hash": {"type": "string"},
                    "withheld": {"type": "array",
                                 "items": {"type": "string", "enum": list(PROVENANCE)}},
                }),
                _json_object({"position": _POSITION}),
            ],
        }},
    },
}

STREAM_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-sent events: `retry`, then `recorded` events (id: the log "
                       "position; data: the event's summary as JSON) and `position` events "
                       "(id and data.position: how far the read model reflects the log), with "
                       "`: keepalive` comments, until the stream's lifetime ends",
        "content": {EVENT_STREAM: {"schema": EVENT_SCHEMA}},
    },
    # Refusals are JSON, as everywhere; declared by hand, since FastAPI would give a `model`
    # the route's own media type.
    **{status: {"description": STATUS_MEANINGS[status] + extra,
                "content": {"application/json": {"schema": {
                    "$ref": "#/components/schemas/ErrorBody"}}}}
       for status, extra in ((401, ""), (422, ""), (503, "; or this process serves as many "
                                                         "streams as it may (Retry-After)"))},
}


LAST_EVENT_ID = "Last-Event-ID"
# Declared by hand: as an optional FastAPI header it would be documented as nullable, and
# "null" is no id a client was sent.
LAST_EVENT_ID_DOC = {
    "name": LAST_EVENT_ID, "in": "header", "required": False,
    "schema": {"type": "string", "pattern": EVENT_ID_PATTERN, "maxLength": 18},
    "description": "The id of the last event received (an EventSource sends it when it "
                   "reconnects): the stream resumes right after it; it wins over `after`",
}


def resume_point(request: Request) -> int | None:
    """The position a reconnecting client's Last-Event-ID names, None if it sent none."""
    given = request.headers.get(LAST_EVENT_ID)
    if given is None:
        return None
    if re.fullmatch(EVENT_ID_PATTERN, given) is None:
        raise ApiError(422, "invalid_request",
                       f"{LAST_EVENT_ID}: must be a log position this stream sent as an id "
                       "(1 to 18 digits)", field=LAST_EVENT_ID, rule="event_id")
    return int(given)


Resume = Annotated[int | None, Depends(resume_point)]


def stream_router() -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["read"])

    @router.get("/stream", status_code=200, response_class=EventStreamResponse,
                responses=STREAM_ANSWERS, openapi_extra={"parameters": [LAST_EVENT_ID_DOC]})
    async def stream(
        request: Request, principal: BrowserReader, queries: Queries, resume: Resume,
        after: Annotated[int | None, Query(
            ge=0, le=MAX_POSITION, json_schema_extra=INT64,
            description="Send the events after this log position (ignored if Last-Event-ID "
                        "is given); by default only events applied from now on",
        )] = None,
    ) -> Response:
        """Live: every event the read model applies, in log order, and its position, as
        server-sent events; resume with Last-Event-ID after a drop, missing nothing."""
        limits: StreamLimits = request.app.state.stream_limits
        release = request.app.state.stream_slots.take(limits.max_streams)
        if release is None:
            return error_response(
                503, "too_many_streams",
                f"this process serves {limits.max_streams} streams at most; retry shortly",
                headers={"Retry-After": str(limits.busy_retry_seconds)},
                rule="max_streams")
        start = resume if resume is not None else after
        frames = event_stream(request, queries, request.app.state.position_watch, limits,
                              start, viewer_of(principal))
        return EventStreamResponse(frames, release)

    return router


def install_stream_api(app: FastAPI, queries: ReadModelQueries, keys: ApiKeyStore,
                       metrics: HttpMetrics, applied: AppliedPosition) -> None:
    """Mount the event stream over the read model `queries` reads, woken by `applied`, the
    position the projector that feeds it shares; after install_read_api (its key store)."""
    app.state.api_keys = keys
    app.state.read_queries = queries
    app.state.stream_limits = StreamLimits()
    app.state.stream_slots = StreamSlots()
    app.state.position_watch = ReadPositionWatch(applied, queries.position)
    Gauge("dealreg_open_streams", "Event streams open in this process",
          registry=metrics.registry).set_function(lambda: app.state.stream_slots.open)
    app.include_router(stream_router())
