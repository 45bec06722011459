"""The dashboard and the auditor console: server-rendered pages over the read API.

Pages render from the same query layer as `/v1/...` (screens.py), sign people in with a
session cookie instead of a bearer key (session.py), and stay out of the OpenAPI document.
The registry's log (verification, checkpoints) is at hand only where the write side runs
(embedded mode): that app hands the console an `AuditDesk`; elsewhere the console says where
they are served.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlencode
from uuid import UUID

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from contracts.submissions_v1 import DealFormat, FirmKind, Sector
from services.demo.history import DEMO_EVENT_ID_PREFIX
from services.projections.pages import screens
from services.projections.pages.display import Grid, grouped
from services.projections.pages.session import Session, SessionKeeper, csrf_matches, shared_secret
from services.projections.pages.time_travel import TimeTravel, time_travel
from services.projections.query_api.moments import MOMENT_PATTERN, moment
from services.projections.query_api.viewers import viewer_of
from services.projections.read_model.queries import ReadModelQueries
from services.projections.read_model.tables import DealStatus
from services.shared.api_keys import CAN_AUDIT, ApiKeyStore
from services.shared.auth_throttle import client_address, throttle_of
from services.shared.errors import ApiError
from services.shared.http_basics import HttpMetrics

HERE = Path(__file__).parent
STATIC_PATH = "/static/pages"
# Mounted beside the pages in both modes (install_stream_api).
STREAM_ROUTE = "/v1/stream"
# What a live page polls for the log position where the event stream is not to be had.
POLL_ROUTE = "/pages/latest.json"
DEMO_RECHECK_SECONDS = 60.0
NO_STORE = {"Cache-Control": "no-store"}
# Pages load only their own files: scripts from /static (chart data comes as JSON islands,
# which do not run), no inline script or style attribute, no other host.
PAGE_POLICY = {"Content-Security-Policy": "default-src 'self'; script-src 'self'; "
               "style-src 'self'; img-src 'self' data:; connect-src 'self'; "
               "object-src 'none'; base-uri 'none'; form-action 'self'; "
               "frame-ancestors 'none'"}
MAX_FORM_BYTES = 16_384
# An export download is built in memory; larger ranges are the CLI's (dealreg audit export).
MAX_EXPORT_EVENTS = 100_000
# Query parameters the time-travel form replaces rather than carries along.
NOT_KEPT = frozenset({"as_of", "recorded_as_of", "clock", "moment", "download", "page"})


class AuditDesk(Protocol):
    """What the console needs of the registry's log, where this app has it."""

    def verify(self) -> dict[str, Any]:
        """Verify every hash chain and checkpoint: the report `GET /v1/audit/verify` gives."""

    def checkpoint_list(self, limit: int) -> list[dict[str, Any]]:
        """Recorded checkpoints, oldest first, as `GET /v1/audit/checkpoints` lists them."""

    def checkpoint_now(self) -> None:
        """Record a checkpoint at the log's head (`POST /v1/audit/checkpoints`)."""

    def latest_checkpointed_position(self) -> int | None:
        """The last log position the newest checkpoint covers (None before any)."""

    def export(self, first: int, last: int, proofs: bool) -> str:
        """The offline-checkable NDJSON export of positions first..last (`dealreg audit
        export`); raises ValueError, saying why, where the range cannot be exported."""

    def stored_hashes(self, positions: Iterable[int]) -> dict[int, str | None]:
        """By position, the hash recomputed from the stored event (None: no such event)."""


class PageContext:
    """What every page's template needs besides its own content."""

    def __init__(self, app: FastAPI, queries: ReadModelQueries, keeper: SessionKeeper,
                 templates: Jinja2Templates, audit: AuditDesk | None) -> None:
        self.app = app
        self.audit = audit
        self.queries = queries
        self._illustrative = False
        self._illustrative_checked = -DEMO_RECHECK_SECONDS
        self.keeper = keeper
        self.templates = templates

    def illustrative(self) -> bool:
        """Whether the registry holds the demo's events (`dealreg demo`), which every page
        then labels as illustrative. Once true it stays so; false is asked again after
        DEMO_RECHECK_SECONDS (the look-up scans the recorded events when there are none)."""
        now = time.monotonic()
        if not self._illustrative and now - self._illustrative_checked > DEMO_RECHECK_SECONDS:
            self._illustrative_checked = now
            self._illustrative = self.queries.has_event_id_prefix(DEMO_EVENT_ID_PREFIX)
        return self._illustrative

    def render(self, request: Request, template: str, session: Session | None,
               travel: TimeTravel | None, status: int = 200, **content: Any) -> Response:
        """The page, or with `?download=NAME` its table NAME as CSV."""
        grids: dict[str, Grid] = content.get("grids", {})
        wanted = request.query_params.get("download")
        if wanted is not None:
            if wanted not in grids:
                return HTMLResponse("no such table", status_code=404, headers=NO_STORE)
            page = request.url.path.strip("/").replace("/", "-") or "overview"
            return Response(grids[wanted].csv(), media_type="text/csv; charset=utf-8",
                            headers={**NO_STORE, "Content-Disposition":
                                     f'attachment; filename="{page}-{wanted}.csv"'})
        context = {
            "illustrative": self.illustrative(),
            "session": session, "travel": travel, "path": request.url.path,
            "static": STATIC_PATH, "stream": STREAM_ROUTE, "poll": POLL_ROUTE,
            "can_audit": session is not None
            and session.principal.role in CAN_AUDIT,
            "download": lambda name: _with_param(request, "download", name),
            "keep": [(k, v) for k, v in request.query_params.multi_items()
                     if k not in NOT_KEPT],
            **content,
        }
        return self.templates.TemplateResponse(request, template, context, status_code=status,
                                               headers={**NO_STORE, **PAGE_POLICY})


def _with_param(request: Request, name: str, value: str) -> str:
    params = dict(request.query_params)
    params[name] = value
    return f"{request.url.path}?{urlencode(params)}"


def safe_next(target: str | None) -> str:
    """A local path to return to after signing in; anything else is the overview."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


async def form_of(request: Request) -> dict[str, str]:
    """An url-encoded form body (no multipart dependency needed for four fields)."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return {}
    parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[0] for name, values in parsed.items()}


def page_number(request: Request) -> int:
    text = request.query_params.get("page", "1")
    return max(int(text), 1) if text.isdigit() and len(text) < 7 else 1


def install_pages(app: FastAPI, queries: ReadModelQueries, keys: ApiKeyStore,
                  metrics: HttpMetrics, audit: AuditDesk | None = None) -> None:
    """Mount the pages at `/` and their static files at /static/pages; `audit` where the
    registry's log is at hand."""
    keeper = SessionKeeper(keys, shared_secret(keys.engine))
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters["grouped"] = grouped
    pages = PageContext(app, queries, keeper, templates, audit)
    app.state.page_sessions = keeper
    # The live event stream admits a signed-in browser too (an EventSource sends no key).
    app.state.session_principal = keeper.principal_of_request
    app.state.page_verification = None
    app.mount(STATIC_PATH, StaticFiles(directory=str(HERE / "static")), name="pages-static")
    app.include_router(page_router(pages))


def page_router(pages: PageContext) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    queries, keeper = pages.queries, pages.keeper

    def signed_in(request: Request) -> Session | RedirectResponse:
        session = keeper.session_of(request)
        if session is not None:
            return session
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        response = RedirectResponse(f"/sign-in?{urlencode({'next': target})}", status_code=303)
        keeper.end(response)  # a cookie that no longer resolves is cleared
        return response

    def travel_of(request: Request) -> TimeTravel:
        return time_travel(queries, dict(request.query_params))

    # -- signing in and out --------------------------------------------------------------

    @router.get("/sign-in")
    def sign_in_form(request: Request) -> Response:
        return sign_in_page(request, safe_next(request.query_params.get("next")), None, 200)

    def sign_in_page(request: Request, target: str, problem: str | None, status: int
                     ) -> Response:
        token = keeper.sign_in_token(request)
        response = pages.render(request, "sign_in.html", None, None, status=status,
                                next=target, problem=problem, token=token)
        keeper.bind_sign_in_token(response, token)
        return response

    @router.post("/sign-in")
    async def sign_in(request: Request) -> Response:
        form = await form_of(request)
        target = safe_next(form.get("next"))
        if not keeper.sign_in_token_matches(request, form.get("csrf", "")):
            return sign_in_page(request, target, "The form expired; paste the key again.",
                                403)
        # The form tries keys as the Authorization header does: the same throttle.
        throttle, address = throttle_of(request), client_address(request)
        wait = throttle.seconds_refused(address)
        if wait > 0:
            page = sign_in_page(request, target, "Too many keys that were not known came "
                                f"from here; try again in {math.ceil(wait)} s.", 429)
            page.headers["Retry-After"] = str(math.ceil(wait))
            return page
        response = RedirectResponse(target, status_code=303)
        principal = await run_in_threadpool(keeper.start, form.get("key", ""), response)
        if principal is None:
            throttle.failed(address)
            return sign_in_page(request, target, "That key is not known.", 401)
        return response

    @router.post("/sign-out")
    async def sign_out(request: Request) -> Response:
        session = await run_in_threadpool(keeper.session_of, request)
        form = await form_of(request)
        if session is not None and not csrf_matches(session, form.get("csrf")):
            return HTMLResponse("This sign-out form did not come from this site.",
                                status_code=403, headers=NO_STORE)
        response = RedirectResponse("/sign-in", status_code=303)
        keeper.end(response)
        return response

    # -- the dashboard -------------------------------------------------------------------

    @router.get("/")
    def overview(request: Request) -> Response:
        session = signed_in(request)
        if isinstance(session, Response):
            return session
        travel = travel_of(request)
        viewer = viewer_of(session.principal)
        return pages.render(request, "overview.html", session, travel,
                            **screens.overview(queries, travel, viewer))

    @router.get(POLL_ROUTE)
    def latest(request: Request) -> Response:
        """The log position live pages poll without the stream: a move makes them refetch."""
        if keeper.session_of(request) is None:
            return JSONResponse({"signed_in": False}, status_code=401, headers=NO_STORE)
        return JSONResponse({"position": queries.position()}, headers=NO_STORE)

    @router.get("/deals")
    def deals(request: Request) -> Response:
        session = signed_in(request)
        if isinstance(session, Response):
            return session
        travel = travel_of(request)
        filters = {name: request.query_params.get(name) or None
                   for name in screens.DEAL_FILTERS}
        return pages.render(request, "deals.html", session, travel, filters=filters,
                            choices=deal_choices(),
                            **screens.deal_list(queries, travel, filters, page_number(request)))

    @router.get("/deals/{deal_id}")
    def deal(request: Request, deal_id: str) -> Response:
        session = signed_in(request)
        if isinstance(session, Response):
            return session
        travel = travel_of(request)
        try:
            wanted = UUID(deal_id)
        except ValueError:
            wanted = None
        content = None if wanted is None else screens.deal_page(
            queries, travel, viewer_of(session.principal), wanted, page_number(request),
            None if pages.audit is None else pages.audit.stored_hashes)
        if content is None:
            return pages.render(request, "missing.html", session, travel, status=404,
                                what=f"No deal {deal_id}.")
        return pages.render(request, "deal.html", session, travel, **content)

    @router.get("/firms")
    def firms(request: Request) -> Response:
        session = signed_in(request)
        if isinstance(session, Response):
            return session
        travel = travel_of(request)
        country = (request.query_params.get("country") or "").upper()[:2] or None
        kind = request.query_params.get("kind") or None
        return pages.render(request, "firms.html", session, travel, country=country, kind=kind,
                            kinds=firm_kinds(),
                            **screens.firm_list(queries, travel, country, kind,
                                                page_number(request)))

    @router.get("/firms/{code}")
    def firm(request: Request, code: str) -> Response:
        session = signed_in(request)
        if isinstance(session, Response):
            return session
        travel = travel_of(request)
        content = screens.firm_page(queries, travel, code)
        if content is None:
            return pages.render(request, "missing.html", session, travel, status=404,
                                what=f"No firm {code}.")
        return pages.render(request, "firm.html", session, travel, **content)

    @router.get("/meetings")
    def meetings(request: Request) -> Response:
        session = signed_in(request)
        if isinstance(session, Response):
            return session
        travel = travel_of(request)
        return pages.render(request, "meetings.html", session, travel,
                            **screens.meeting_list(queries, travel, viewer_of(session.principal),
                                                   page_number(request)))

    # -- the audit console ---------------------------------------------------------------

    @router.get("/audit")
    async def audit(request: Request) -> Response:
        session = await run_in_threadpool(signed_in, request)
        if isinstance(session, Response):
            return session
        travel = await run_in_threadpool(travel_of, request)
        if session.principal.role not in CAN_AUDIT:
            return pages.render(request, "forbidden.html", session, travel, status=403)
        params = request.query_params
        recorded_by = params.get("recorded_by") or None
        since, until, problem = _recorded_window(params.get("from"), params.get("to"))
        page = page_number(request)
        grid, total = await run_in_threadpool(
            screens.recorded_grid, queries, recorded_by, since, until, screens.PAGE_SIZE,
            (page - 1) * screens.PAGE_SIZE)
        if params.get("download") == "recorded":
            grid, total = await run_in_threadpool(
                screens.recorded_grid, queries, recorded_by, since, until, 100_000, 0)
        checkpoints = await _checkpoints(pages.audit)
        grids = {"recorded": grid}
        if checkpoints is not None:
            grids["checkpoints"] = checkpoints
        return pages.render(
            request, "audit.html", session, travel, grids=grids, total=total, page=page,
            pages=max((total + screens.PAGE_SIZE - 1) // screens.PAGE_SIZE, 1),
            filters={"recorded_by": recorded_by or "", "from": params.get("from") or "",
                     "to": params.get("to") or ""}, problem=problem,
            verification=pages.app.state.page_verification,
            registry_here=pages.audit is not None,
            export_to=None if pages.audit is None
            else await run_in_threadpool(pages.audit.latest_checkpointed_position))

    @router.get("/audit/export")
    async def export(request: Request) -> Response:
        session = await run_in_threadpool(signed_in, request)
        if isinstance(session, Response):
            return session
        if session.principal.role not in CAN_AUDIT:
            travel = await run_in_threadpool(travel_of, request)
            return pages.render(request, "forbidden.html", session, travel, status=403)
        if pages.audit is None:
            return HTMLResponse("The export is served by the registry service "
                                "(dealreg audit export).", status_code=404, headers=NO_STORE)
        params = request.query_params
        first, last = params.get("from", ""), params.get("to", "")
        if not (first.isdigit() and last.isdigit() and len(first) <= 12 and len(last) <= 12):
            return _export_refused("from and to: log positions, whole numbers",
                                   rule="position")
        if int(last) - int(first) >= MAX_EXPORT_EVENTS:
            return _export_refused(f"at most {MAX_EXPORT_EVENTS:,} positions per download; "
                                   "dealreg audit export writes any range", field="to",
                                   rule="max_range")
        try:
            body = await run_in_threadpool(pages.audit.export, int(first), int(last),
                                           params.get("proofs") == "1")
        except ValueError as refused:
            return _export_refused(str(refused))
        return Response(body, media_type="application/x-ndjson; charset=utf-8", headers={
            **NO_STORE, "Content-Disposition":
            f'attachment; filename="dealreg-export-{int(first)}-{int(last)}.ndjson"'})

    async def console_form(request: Request) -> tuple[Session, AuditDesk] | Response:
        """The signed-in auditor posting one of the console's forms, or the refusal."""
        session = await run_in_threadpool(keeper.session_of, request)
        form = await form_of(request)
        if session is None:
            return RedirectResponse("/sign-in?next=/audit", status_code=303)
        if not csrf_matches(session, form.get("csrf")):
            return HTMLResponse("This form did not come from this site.", status_code=403,
                                headers=NO_STORE)
        if session.principal.role not in CAN_AUDIT:
            return HTMLResponse("Auditor or admin keys only.", status_code=403, headers=NO_STORE)
        if pages.audit is None:
            return HTMLResponse("The registry's log is served by the registry service.",
                                status_code=404, headers=NO_STORE)
        return session, pages.audit

    @router.post("/audit/checkpoint")
    async def checkpoint(request: Request) -> Response:
        allowed = await console_form(request)
        if isinstance(allowed, Response):
            return allowed
        await run_in_threadpool(allowed[1].checkpoint_now)
        return RedirectResponse("/audit#h-export", status_code=303)

    @router.post("/audit/verify")
    async def verify(request: Request) -> Response:
        allowed = await console_form(request)
        if isinstance(allowed, Response):
            return allowed
        session, desk = allowed
        report = await run_in_threadpool(desk.verify)
        pages.app.state.page_verification = {
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "by": session.principal.name, "report": report}
        return RedirectResponse("/audit", status_code=303)

    return router


def _recorded_window(since: str | None, until: str | None
                     ) -> tuple[datetime | None, datetime | None, str | None]:
    bounds: list[datetime | None] = []
    for text, field, starts in ((since, "from", True), (until, "to", False)):
        if not text:
            bounds.append(None)
            continue
        if not re.fullmatch(MOMENT_PATTERN, text):
            return None, None, f"{field}: expected a date or an ISO 8601 datetime"
        try:
            bounds.append(moment(text, field, day_starts=starts))
        except ApiError as refused:
            return None, None, refused.message
    return bounds[0], bounds[1], None


def _export_refused(why: str, field: str = "from", rule: str = "exportable_range"
                    ) -> Response:
    refused = ApiError(422, "export_refused", f"cannot export: {why}", field=field, rule=rule)
    return JSONResponse(refused.body(), status_code=422, headers=NO_STORE)


async def _checkpoints(audit: AuditDesk | None) -> Grid | None:
    """The registry's checkpoints, newest first, where its log is at hand."""
    if audit is None:
        return None
    answer = {"checkpoints": await run_in_threadpool(audit.checkpoint_list, 500)}
    grid = Grid("checkpoints", "Kept tree heads, newest first",
                ("id", "last position", "events", "Merkle root", "recorded at", "reason",
                 "signed"), numeric=frozenset({0, 1, 2}))
    for c in reversed(answer["checkpoints"]):
        grid.rows.append([c["id"], c["last_position"], c["event_count"], c["root"],
                          c["created_at"], c["reason"], "yes" if c["signed"] else "no"])
    return grid


def deal_choices() -> dict[str, list[str]]:
    return {"sector": [s.value for s in Sector], "format": [f.value for f in DealFormat],
            "status": [s.value for s in DealStatus]}


def firm_kinds() -> list[str]:
    return [k.value for k in FirmKind]
