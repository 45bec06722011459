"""The read API: pledge totals, deals, firms and meetings from the read model.

Every answer carries `position`, the registry log position the read model reflected when
the request was answered (the data is at least that fresh), also as header X-Log-Position.
A client that just wrote at position N sends `min_position=N` to read its own write.

Deals and pledge totals can also be asked for in the past, on one of two clocks (see
`PastClock`); such an answer names its clock and bound, and its `position` is the log
position it reflects.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from prometheus_client import Gauge
from starlette.concurrency import run_in_threadpool

from contracts.moments import DATE
from contracts.submissions_v1 import CODE_PATTERN, ONE_LINE, DealFormat, FirmKind, Sector
from services.projections.query_api.freshness import PositionWaiters
from services.projections.query_api.moments import (
    MAX_MOMENT_LENGTH,
    MOMENT_PATTERN,
    POSITION_OR_MOMENT_PATTERN,
    moment,
)
from services.projections.query_api.responses import (
    COUNTRY_PATTERN,
    CountryTotalsAnswer,
    DealAnswer,
    DealEventsPage,
    DealsPage,
    FirmsPage,
    FirmTotalsAnswer,
    InstrumentTotalsAnswer,
    MeetingsPage,
    OverTimeAnswer,
    RecordedEventsPage,
    SectorTotalsAnswer,
)
from services.projections.query_api.viewers import viewer_of
from services.projections.read_model.deal_history import PastBound
from services.projections.read_model.progress import AppliedPosition
from services.projections.read_model.queries import Interval, Page, ReadModelQueries, buckets
from services.projections.read_model.tables import DealStatus, TotalsDimension
from services.projections.read_model.visibility import event_for, meeting_for
from services.shared.api_keys import ApiKeyStore
from services.shared.errors import ApiError, error_responses
from services.shared.http_basics import HttpMetrics
from services.shared.key_auth import Auditor, Reader
from services.shared.openapi_contract import INT64, MAX_POSITION, Offset

POSITION_HEADER = "X-Log-Position"
MAX_POLL_SECONDS = 0.05
MAX_LIMIT = 500
# Buckets per over-time answer (a leap year of days), and groups per page of one.
MAX_BUCKETS = 366
MAX_OVER_TIME_GROUPS = 100
DATE_PATTERN = rf"^{DATE}$"


def read_queries_of(request: Request) -> ReadModelQueries:
    return request.app.state.read_queries


Queries = Annotated[ReadModelQueries, Depends(read_queries_of)]


async def visible_position(
    request: Request,
    queries: Queries,
    min_position: Annotated[
        int | None,
        Query(ge=0, le=MAX_POSITION, json_schema_extra=INT64,
              description="Wait (a few seconds at most) until the read model reflects at least "
                          "this log position; 409 not_yet_visible if it does not"),
    ] = None,
) -> int:
    """The read model's position, after waiting (bounded) for it to reach `min_position`."""
    return await wait_for_position(request, queries, min_position or 0, "min_position")


async def wait_for_position(request: Request, queries: Queries, wanted: int, field: str) -> int:
    """The read model's position once it is at least `wanted`; 409 after a bounded wait.

    The wait ends when this process's projector commits `wanted` (`PositionWaiters`), and
    the database is asked every MAX_POLL_SECONDS besides, for a read model that another
    process's projector feeds."""
    current = await run_in_threadpool(queries.position)
    if current >= wanted:
        return current
    waiters: PositionWaiters = request.app.state.position_waiters
    loop = asyncio.get_running_loop()
    deadline = loop.time() + request.app.state.settings.freshness_wait_seconds
    while (left := deadline - loop.time()) > 0:
        await waiters.wait(wanted, min(left, MAX_POLL_SECONDS))
        current = await run_in_threadpool(queries.position)
        if current >= wanted:
            return current
    raise ApiError(
        409, "not_yet_visible",
        f"the read model is at position {current}, not yet at {wanted}; retry shortly",
        field=field, rule="visible", position=current, **{field: wanted},
    )


Position = Annotated[int, Depends(visible_position)]


@dataclass(frozen=True)
class PastClock:
    """Which past a read asks for, and how its answer states it.

    Business time (`as_of`): what was true then, by the events' occurred-at, as known now; a
    correction recorded later changes it. Recorded time (`recorded_as_of`): what the registry
    knew then, the log up to a position; nothing recorded later changes it.
    """

    bound: PastBound
    stated: dict[str, Any]


def exclusive(**given: object) -> None:
    """422 naming the second of mutually exclusive query parameters, if two are given."""
    named = [name for name, value in given.items() if value is not None]
    if len(named) > 1:
        raise ApiError(
            422, "invalid_request",
            f"{named[1]}: give at most one of {', '.join(given)}",
            field=named[1], rule="mutually_exclusive", given=named,
        )


AsOf = Annotated[str | None, Query(
    pattern=MOMENT_PATTERN, max_length=MAX_MOMENT_LENGTH,
    description="Business time: a date from 1900 to 2199 (the end of that day, UTC), e.g. "
                "2025-06-30, or a datetime (UTC if it has no offset), e.g. "
                "2025-06-30T18:00:00+05:30; the state from the events that occurred by then, as "
                "known now. At most one of as_of, recorded_as_of and version",
)]
RecordedAsOf = Annotated[str | None, Query(
    pattern=POSITION_OR_MOMENT_PATTERN, max_length=MAX_MOMENT_LENGTH,
    description="Recorded time: a log position (at most 18 digits), e.g. 40, or a date or "
                "datetime meaning the last position recorded by then, e.g. 2025-06-30T12:00:00Z; "
                "the state the registry knew at that point",
)]
Version = Annotated[int | None, Query(
    ge=1, le=2**31 - 1, description="The deal as it was after its first `version` events",
)]


async def past_clock(
    request: Request, queries: Queries, position: Position,
    as_of: AsOf = None, recorded_as_of: RecordedAsOf = None,
) -> PastClock | None:
    """The past asked for, or None for the current state; a recorded position not yet
    projected is waited for as `min_position` is."""
    exclusive(as_of=as_of, recorded_as_of=recorded_as_of)
    if as_of is not None:
        until = moment(as_of, "as_of")
        return PastClock(PastBound(position, until),
                         {"clock": "business", "as_of": until.isoformat()})
    if recorded_as_of is None:
        return None
    if recorded_as_of.isdigit():  # the pattern admits ASCII digits only
        wanted = int(recorded_as_of)
        await wait_for_position(request, queries, wanted, "recorded_as_of")
        return PastClock(PastBound(wanted), {"clock": "recorded", "recorded_as_of": wanted})
    by = moment(recorded_as_of, "recorded_as_of")
    resolved = await run_in_threadpool(queries.position_recorded_by, by, position)
    return PastClock(PastBound(resolved),
                     {"clock": "recorded", "recorded_as_of": by.isoformat()})


async def deal_past_clock(
    request: Request, queries: Queries, deal_id: UUID, position: Position,
    version: Version = None, as_of: AsOf = None, recorded_as_of: RecordedAsOf = None,
) -> PastClock | None:
    """As `past_clock`, or the deal after its first `version` events."""
    exclusive(version=version, as_of=as_of, recorded_as_of=recorded_as_of)
    if version is None:
        return await past_clock(request, queries, position, as_of, recorded_as_of)
    at = await run_in_threadpool(version_position, queries, deal_id, version)
    return PastClock(PastBound(at), {"clock": "version", "version": version})


Past = Annotated[PastClock | None, Depends(past_clock)]
DealPast = Annotated[PastClock | None, Depends(deal_past_clock)]


@dataclass(frozen=True)
class Pagination:
    limit: int
    offset: int


def pagination(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page")] = 50,
    offset: Offset = 0,
) -> Pagination:
    return Pagination(limit, offset)


Paging = Annotated[Pagination, Depends(pagination)]
FirmCodeFilter = Annotated[str | None, Query(
    pattern=CODE_PATTERN, max_length=64, description="A firm code")]
CountryFilter = Annotated[str | None, Query(
    pattern=COUNTRY_PATTERN, max_length=2, description="ISO 3166-1 alpha-2, upper case")]
# No control characters: none is ever stored, and PostgreSQL text cannot even hold NUL.
PrincipalFilter = Annotated[str | None, Query(
    pattern=ONE_LINE, max_length=100, description="The name of the key that recorded")]
# What each read can answer besides 200 (the key check comes first, then the wait for
# `min_position`, then the query). Every role may read; only the audit list refuses one (403).
READ_ERRORS = error_responses(401, 409, 422, 503)
DEAL_READ_ERRORS = error_responses(401, 404, 409, 422, 503)
AUDIT_READ_ERRORS = error_responses(401, 403, 409, 422, 503)
POSITION_HEADER_DOC = {POSITION_HEADER: {
    "description": "The log position the answer reflects",
    "schema": {"type": "integer", "format": "int64", "minimum": 0},
}}


def read_route(errors: dict[int | str, dict[str, Any]], model: type[Any]) -> dict[str, Any]:
    """The OpenAPI side of a read route: its answer's model, header and refusals.

    `response_model_exclude_unset` keeps the views' JSON as it is: keys they leave out
    (`crore` of a dollar amount, `past` of a current answer) are not added as nulls."""
    return {
        "response_model": model, "response_model_exclude_unset": True,
        "responses": {200: {"headers": POSITION_HEADER_DOC}, **errors},
    }


def totals_body(items: list[dict[str, Any]], position: int, response: Response) -> dict[str, Any]:
    response.headers[POSITION_HEADER] = str(position)
    return {"items": items, "position": position}


def page_body(page: Page, paging: Pagination, position: int, response: Response) -> dict[str, Any]:
    response.headers[POSITION_HEADER] = str(position)
    return {
        "items": page.items, "limit": paging.limit, "offset": paging.offset,
        "total": page.total, "position": position,
    }


def unknown_deal(deal_id: UUID) -> ApiError:
    return ApiError(404, "not_found", f"no deal {deal_id}", field="deal_id", rule="known_deal")


def version_position(queries: ReadModelQueries, deal_id: UUID, version: int) -> int:
    """The log position of a deal's version; 404 if the deal is unknown or not that far yet."""
    found = queries.position_of_version(deal_id, version)
    if found is not None:
        return found
    latest = queries.latest_version(deal_id)
    if latest is None:
        raise unknown_deal(deal_id)
    raise ApiError(404, "not_found",
                   f"deal {deal_id} has no version {version}; its latest is {latest}",
                   field="version", rule="known_version", latest_version=latest)


def totals(queries: ReadModelQueries, dimension: TotalsDimension, position: int,
           past: PastClock | None, response: Response) -> dict[str, Any]:
    if past is None:
        return totals_body(queries.pledge_totals(dimension), position, response)
    # The ledger or the deals' history, as `pledge_totals_past` decides for every reader.
    items = queries.pledge_totals_past(dimension, past.bound, position)
    return {**totals_body(items, past.bound.position, response), "past": past.stated}


def over_time_window(since: str, until: str, interval: Interval
                     ) -> tuple[list[tuple[date, date]], date | None]:
    """The buckets of an over-time answer: from the one holding `since` to the one holding
    `until`, at most MAX_BUCKETS of them (none if `until` is before `since`), and the first
    day of the next bucket when the window holds more (the next page's `from`), else None."""
    first, last = date.fromisoformat(since), date.fromisoformat(until)
    if last < first:
        return [], None
    # A day bucket is the shortest: no more than MAX_BUCKETS + 1 of any fit in this span.
    horizon = min(last, first + timedelta(days=(MAX_BUCKETS + 1) * 92))
    spans = buckets(first, horizon, interval)
    if len(spans) <= MAX_BUCKETS:
        return spans, None
    return spans[:MAX_BUCKETS], spans[MAX_BUCKETS][0]


def read_router() -> APIRouter:
    """Routes of the read API; they need app.state.read_queries, .settings and .api_keys."""
    router = APIRouter(prefix="/v1", tags=["read"])

    # Dependencies run in parameter order: the key is checked before any freshness wait.

    @router.get("/pledges/by-sector", **read_route(READ_ERRORS, SectorTotalsAnswer))
    def pledges_by_sector(
        principal: Reader, position: Position, queries: Queries, past: Past,
        response: Response,
    ) -> dict[str, Any]:
        """Totals of active pledges per sector, in USD and per original currency; now, or as
        of a business time (`as_of`) or recorded position or time (`recorded_as_of`)."""
        return totals(queries, TotalsDimension.SECTOR, position, past, response)

    @router.get("/pledges/by-firm", **read_route(READ_ERRORS, FirmTotalsAnswer))
    def pledges_by_firm(
        principal: Reader, position: Position, queries: Queries, past: Past,
        response: Response,
    ) -> dict[str, Any]:
        """Totals of active pledges per pledging firm, in USD and per original currency; now,
        or as of a business time (`as_of`) or recorded position or time (`recorded_as_of`)."""
        return totals(queries, TotalsDimension.FIRM, position, past, response)

    @router.get("/pledges/by-country", **read_route(READ_ERRORS, CountryTotalsAnswer))
    def pledges_by_country(
        principal: Reader, position: Position, queries: Queries, past: Past,
        response: Response,
    ) -> dict[str, Any]:
        """Totals of active pledges per pledging firm's country, in USD and per currency; now,
        or as of a business time (`as_of`) or recorded position or time (`recorded_as_of`)."""
        return totals(queries, TotalsDimension.COUNTRY, position, past, response)

    @router.get("/pledges/by-instrument", **read_route(READ_ERRORS, InstrumentTotalsAnswer))
    def pledges_by_instrument(
        principal: Reader, position: Position, queries: Queries, past: Past,
        response: Response,
    ) -> dict[str, Any]:
        """Totals of active pledges per instrument (equity, debt, grant, in-kind technology;
        `not_stated` for pledges that do not say), in USD and per original currency; now, or
        as of a business time (`as_of`) or recorded position or time (`recorded_as_of`)."""
        return totals(queries, TotalsDimension.INSTRUMENT, position, past, response)

    @router.get("/pledges/over-time", **read_route(READ_ERRORS, OverTimeAnswer))
    def pledges_over_time(
        principal: Reader, position: Position, queries: Queries, response: Response,
        dimension: Annotated[TotalsDimension, Query(
            description="Group by sector, pledging firm, the firm's country or instrument")],
        since: Annotated[str, Query(
            alias="from", pattern=DATE_PATTERN, max_length=10, examples=["2025-01-01"],
            description="A date (UTC): the first bucket is the one holding it")],
        until: Annotated[str, Query(
            alias="to", pattern=DATE_PATTERN, max_length=10, examples=["2025-12-31"],
            description="A date (UTC): the last bucket is the one holding it, or the "
                        f"{MAX_BUCKETS}th from `from` (then `next_from` says where to go on); "
                        "before `from`: no buckets")],
        interval: Annotated[Interval, Query(
            description="Buckets: calendar days, months or quarters, UTC")] = Interval.MONTH,
        limit: Annotated[int, Query(ge=1, le=MAX_OVER_TIME_GROUPS,
                                    description="Groups per page")] = 20,
        offset: Offset = 0,
    ) -> dict[str, Any]:
        """Pledge totals per group at the end of each day, month or quarter of a window, by
        business time (as `as_of` of that day): cumulative since the first pledge, with
        count, USD low/high and per original currency. Groups by key, paged."""
        if not queries.ledger_complete():
            raise ApiError(503, "ledger_incomplete", "the pledge ledger was added to a read "
                           "model that held events before it: run `dealreg projections "
                           "rebuild` to fill it")
        spans, next_from = over_time_window(since, until, interval)
        items, total = queries.pledges_over_time(dimension, spans, position, limit, offset) \
            if spans else ([], 0)
        response.headers[POSITION_HEADER] = str(position)
        return {
            "dimension": dimension.value, "interval": interval.value,
            "from": spans[0][0].isoformat() if spans else since,
            "to": spans[-1][1].isoformat() if spans else until,
            "next_from": None if next_from is None else next_from.isoformat(),
            "items": items, "limit": limit, "offset": offset, "total": total,
            "position": position,
        }

    @router.get("/deals", **read_route(READ_ERRORS, DealsPage))
    def list_deals(
        principal: Reader, position: Position, queries: Queries, paging: Paging,
        response: Response, sector: Sector | None = None, format: DealFormat | None = None,
        status: DealStatus | None = None, party: FirmCodeFilter = None,
    ) -> dict[str, Any]:
        """Deals, newest first, filtered by sector, format, status or party (a firm code)."""
        page = queries.deals(
            sector=sector, format=format, status=status, party=party,
            limit=paging.limit, offset=paging.offset,
        )
        return page_body(page, paging, position, response)

    @router.get("/deals/{deal_id}", **read_route(DEAL_READ_ERRORS, DealAnswer))
    def get_deal(
        deal_id: UUID, principal: Reader, position: Position, queries: Queries, past: DealPast,
        response: Response,
    ) -> dict[str, Any]:
        """A deal with its pledges (withdrawn ones too) and agreements: now, after its first
        `version` events, or as of a business time (`as_of`) or recorded position or time
        (`recorded_as_of`)."""
        if past is None:
            deal = queries.deal(deal_id)
            if deal is None:
                raise unknown_deal(deal_id)
            response.headers[POSITION_HEADER] = str(position)
            return {**deal, "position": position}
        deal = queries.deal_as_of(deal_id, past.bound)
        if deal is None:
            if queries.latest_version(deal_id) is None:
                raise unknown_deal(deal_id)
            raise ApiError(404, "not_found", f"deal {deal_id} had not been proposed by then",
                           field="deal_id", rule="existed_then", past=past.stated)
        response.headers[POSITION_HEADER] = str(past.bound.position)
        return {**deal, "past": past.stated, "position": past.bound.position}

    @router.get("/deals/{deal_id}/events", **read_route(DEAL_READ_ERRORS, DealEventsPage))
    def list_deal_events(
        deal_id: UUID, principal: Reader, position: Position, queries: Queries,
        paging: Paging, response: Response,
    ) -> dict[str, Any]:
        """A deal's recorded events in version order, with their hashes."""
        page = queries.deal_events(deal_id, limit=paging.limit, offset=paging.offset)
        if page is None:
            raise unknown_deal(deal_id)
        viewer = viewer_of(principal)
        shown = Page([event_for(viewer, event) for event in page.items], page.total)
        return page_body(shown, paging, position, response)

    @router.get("/firms", **read_route(READ_ERRORS, FirmsPage))
    def list_firms(
        principal: Reader, position: Position, queries: Queries, paging: Paging,
        response: Response, country: CountryFilter = None, kind: FirmKind | None = None,
    ) -> dict[str, Any]:
        """Registered firms by code, filtered by country (ISO alpha-2) or kind."""
        page = queries.firms(
            country=country, kind=kind, limit=paging.limit, offset=paging.offset
        )
        return page_body(page, paging, position, response)

    @router.get("/audit/events", tags=["audit"],
                **read_route(AUDIT_READ_ERRORS, RecordedEventsPage))
    def list_recorded_events(
        principal: Auditor, position: Position, queries: Queries, paging: Paging,
        response: Response, recorded_by: PrincipalFilter = None,
        since: Annotated[str | None, Query(
            alias="from", pattern=MOMENT_PATTERN, max_length=MAX_MOMENT_LENGTH,
            examples=["2025-06-01"],
            description="Recorded at or after: a date (its start, UTC) or an ISO 8601 datetime",
        )] = None,
        until: Annotated[str | None, Query(
            alias="to", pattern=MOMENT_PATTERN, max_length=MAX_MOMENT_LENGTH,
            examples=["2025-06-30T23:59:59Z"],
            description="Recorded at or before: a date (its end, UTC) or an ISO 8601 datetime",
        )] = None,
    ) -> dict[str, Any]:
        """Who recorded what (auditor role): events oldest first, by principal and recorded
        time, each with its log position, aggregate version and hash."""
        page = queries.recorded(
            recorded_by=recorded_by,
            since=None if since is None else moment(since, "from", day_starts=True),
            until=None if until is None else moment(until, "to"),
            limit=paging.limit, offset=paging.offset,
        )
        return page_body(page, paging, position, response)

    @router.get("/meetings", **read_route(READ_ERRORS, MeetingsPage))
    def list_meetings(
        principal: Reader, position: Position, queries: Queries, paging: Paging,
        response: Response,
    ) -> dict[str, Any]:
        """Meetings held, most recent first; a closed-door meeting's details only to those
        who may see them (see `withheld`)."""
        page = queries.meetings(limit=paging.limit, offset=paging.offset)
        viewer = viewer_of(principal)
        shown = Page([meeting_for(viewer, meeting) for meeting in page.items], page.total)
        return page_body(shown, paging, position, response)

    return router


def install_read_api(
    app: FastAPI, queries: ReadModelQueries, keys: ApiKeyStore, metrics: HttpMetrics,
    applied: AppliedPosition,
) -> None:
    """Mount the read routes with what they need, and the position they reflect as a metric.
    `applied` is the position shared by the projector that feeds `queries`' tables."""
    Gauge("dealreg_projection_position", "Log position the read models reflect",
          registry=metrics.registry).set_function(queries.position)
    app.state.api_keys = keys
    app.state.read_queries = queries
    app.state.position_waiters = PositionWaiters(applied)
    app.include_router(read_router())
