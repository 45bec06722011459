"""The read API: pledge totals, deals, firms and meetings from the read model.

Every answer carries `position`, the registry log position the read model reflected when
the request was answered (the data is at least that fresh), also as header X-Log-Position.
A client that just wrote at position N sends `min_position=N` to read its own write.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from prometheus_client import Gauge
from starlette.concurrency import run_in_threadpool

from services.projections.read_model.queries import Page, ReadModelQueries
from services.projections.read_model.tables import DealStatus
from services.shared.api_keys import ApiKeyStore, Reader
from services.shared.errors import ApiError
from services.shared.http_basics import HttpMetrics

POSITION_HEADER = "X-Log-Position"
FIRST_POLL_SECONDS = 0.002
MAX_POLL_SECONDS = 0.05
MAX_LIMIT = 500


def read_queries_of(request: Request) -> ReadModelQueries:
    return request.app.state.read_queries


Queries = Annotated[ReadModelQueries, Depends(read_queries_of)]


async def visible_position(
    request: Request,
    queries: Queries,
    min_position: Annotated[
        int | None,
        Query(ge=0, description="Wait until the read model reflects at least this log position"),
    ] = None,
) -> int:
    """The read model's position, after waiting (bounded) for it to reach `min_position`."""
    current = await run_in_threadpool(queries.position)
    if min_position is None or current >= min_position:
        return current
    loop = asyncio.get_running_loop()
    deadline = loop.time() + request.app.state.settings.freshness_wait_seconds
    pause = FIRST_POLL_SECONDS
    while loop.time() < deadline:
        await asyncio.sleep(pause)
        # Back off: many waiting readers polling fast would take the CPU from the projector
        # they are waiting for.
        pause = min(pause * 2, MAX_POLL_SECONDS)
        current = await run_in_threadpool(queries.position)
        if current >= min_position:
            return current
    raise ApiError(
        409, "not_yet_visible",
        f"the read model is at position {current}, not yet at {min_position}; retry shortly",
        field="min_position", rule="visible", position=current, min_position=min_position,
    )


Position = Annotated[int, Depends(visible_position)]


@dataclass(frozen=True)
class Pagination:
    limit: int
    offset: int


def pagination(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page")] = 50,
    offset: Annotated[int, Query(ge=0, description="Items to skip")] = 0,
) -> Pagination:
    return Pagination(limit, offset)


Paging = Annotated[Pagination, Depends(pagination)]
Filter = Annotated[str | None, Query(max_length=100)]


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


def read_router() -> APIRouter:
    """Routes of the read API; they need app.state.read_queries, .settings and .api_keys."""
    router = APIRouter(prefix="/v1", tags=["read"])

    # Dependencies run in parameter order: the key is checked before any freshness wait.

    @router.get("/pledges/by-sector")
    def pledges_by_sector(
        principal: Reader, position: Position, queries: Queries, response: Response
    ) -> dict[str, Any]:
        """Totals of active pledges per sector, in USD and per original currency."""
        return totals_body(queries.pledges_by_sector(), position, response)

    @router.get("/pledges/by-firm")
    def pledges_by_firm(
        principal: Reader, position: Position, queries: Queries, response: Response
    ) -> dict[str, Any]:
        """Totals of active pledges per pledging firm, in USD and per original currency."""
        return totals_body(queries.pledges_by_firm(), position, response)

    @router.get("/pledges/by-country")
    def pledges_by_country(
        principal: Reader, position: Position, queries: Queries, response: Response
    ) -> dict[str, Any]:
        """Totals of active pledges per pledging firm's country, in USD and per currency."""
        return totals_body(queries.pledges_by_country(), position, response)

    @router.get("/deals")
    def list_deals(
        principal: Reader, position: Position, queries: Queries, paging: Paging,
        response: Response, sector: Filter = None, format: Filter = None,
        status: DealStatus | None = None, party: Filter = None,
    ) -> dict[str, Any]:
        """Deals, newest first, filtered by sector, format, status or party (a firm code)."""
        page = queries.deals(
            sector=sector, format=format, status=status, party=party,
            limit=paging.limit, offset=paging.offset,
        )
        return page_body(page, paging, position, response)

    @router.get("/deals/{deal_id}")
    def get_deal(
        deal_id: UUID, principal: Reader, position: Position, queries: Queries,
        response: Response,
    ) -> dict[str, Any]:
        """A deal's current state with its pledges (withdrawn ones too) and agreements."""
        deal = queries.deal(deal_id)
        if deal is None:
            raise unknown_deal(deal_id)
        response.headers[POSITION_HEADER] = str(position)
        return {**deal, "position": position}

    @router.get("/deals/{deal_id}/events")
    def list_deal_events(
        deal_id: UUID, principal: Reader, position: Position, queries: Queries,
        paging: Paging, response: Response,
    ) -> dict[str, Any]:
        """A deal's recorded events in version order, with their hashes."""
        page = queries.deal_events(deal_id, limit=paging.limit, offset=paging.offset)
        if page is None:
            raise unknown_deal(deal_id)
        return page_body(page, paging, position, response)

    @router.get("/firms")
    def list_firms(
        principal: Reader, position: Position, queries: Queries, paging: Paging,
        response: Response, country: Filter = None, kind: Filter = None,
    ) -> dict[str, Any]:
        """Registered firms by code, filtered by country (ISO alpha-2) or kind."""
        page = queries.firms(
            country=country, kind=kind, limit=paging.limit, offset=paging.offset
        )
        return page_body(page, paging, position, response)

    @router.get("/meetings")
    def list_meetings(
        principal: Reader, position: Position, queries: Queries, paging: Paging,
        response: Response,
    ) -> dict[str, Any]:
        """Meetings held, most recent first."""
        return page_body(
            queries.meetings(limit=paging.limit, offset=paging.offset), paging, position, response
        )

    return router


def install_read_api(
    app: FastAPI, queries: ReadModelQueries, keys: ApiKeyStore, metrics: HttpMetrics
) -> None:
    """Mount the read routes with what they need, and the position they reflect as a metric."""
    Gauge("dealreg_projection_position", "Log position the read models reflect",
          registry=metrics.registry).set_function(queries.position)
    app.state.api_keys = keys
    app.state.read_queries = queries
    app.include_router(read_router())
