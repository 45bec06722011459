"""The FastAPI shell every service shares: errors, limits, logs, metrics and health probes."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool

from services.shared.api_keys import Role
from services.shared.errors import install_error_handlers
from services.shared.http_basics import HttpMetrics, install_http_basics
from services.shared.key_auth import presented_principal
from services.shared.settings import Settings

log = logging.getLogger("dealreg.health")

Probe = Callable[[], object]
# Swagger UI keeps the key across reloads, so "Try it out" works after one Authorize.
SWAGGER_UI = {"persistAuthorization": True, "displayRequestDuration": True}
Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def running_in_background(
    loop: Callable[[threading.Event], None], name: str, *closers: Callable[[], object]
) -> Lifespan:
    """A lifespan that runs `loop(stop)` in a thread while the app serves; at shutdown it
    sets `stop`, waits for the thread, then calls the closers."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        thread = threading.Thread(target=loop, args=(stop,), name=name, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=15)
            for close in closers:
                close()

    return lifespan


def create_service_app(
    title: str,
    description: str,
    settings: Settings,
    metrics: HttpMetrics,
    readiness: dict[str, Probe],
    lifespan: Lifespan | None = None,
    report: dict[str, Probe] | None = None,
) -> FastAPI:
    """`readiness` names each dependency and a call that raises while it is unreachable.
    `report` names facts that `/readyz` adds to its body without changing its status (e.g.
    `parked_events`: how many events the read model could not apply); a fact that cannot
    be read is reported as null."""
    app: FastAPI
    if settings.docs == "on":
        # /docs from the package's own copy of Swagger UI: FastAPI's default loads it from a
        # CDN, which a registry inside a closed network cannot reach.
        app = FastAPIOffline(title=title, version="0.1.0", description=description,
                             lifespan=lifespan, swagger_ui_parameters=SWAGGER_UI)
    else:
        app = FastAPI(title=title, version="0.1.0", description=description,
                      lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    # Parts installed later add their probes and facts here (the audit API its tree head).
    report = dict(report or {})
    app.state.readiness = readiness
    app.state.readiness_report = report
    install_error_handlers(app)
    install_http_basics(app, settings, metrics)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    last_failures: dict[str, str] = {}

    @app.get("/readyz", tags=["health"])
    async def readyz(request: Request) -> Any:
        """Every dependency answers: 200, or 503 naming the ones that do not. The causes
        (addresses, errors) are logged, and shown to an admin key only."""
        checks: dict[str, str] = {}
        failures: dict[str, str] = {}
        for name, probe in readiness.items():
            try:
                await run_in_threadpool(probe)
                checks[name] = "ok"
            except Exception as exc:  # noqa: BLE001 - report, don't crash the probe
                checks[name] = "unreachable"
                failures[name] = f"{type(exc).__name__}: {exc}"[:300]
        _log_changes(last_failures, failures)
        ready = not failures
        body: dict[str, Any] = {"status": "ready" if ready else "not_ready", "checks": checks}
        for name, fact in report.items():
            try:
                body[name] = await run_in_threadpool(fact)
            except Exception:  # noqa: BLE001 - a fact is information, never a failure
                body[name] = None
        if failures and await _is_admin(request):
            body["details"] = failures
        return JSONResponse(body, status_code=200 if ready else 503)

    return app


def _log_changes(last: dict[str, str], now: dict[str, str]) -> None:
    """One warning when a dependency fails or its cause changes, one line when it is back."""
    for name, cause in now.items():
        if last.get(name) != cause:
            log.warning("not ready: %s: %s", name, cause)
    for name in set(last) - set(now):
        log.warning("ready again: %s", name)
    last.clear()
    last.update(now)


async def _is_admin(request: Request) -> bool:
    """Whether the request carries an admin key of this app's key store (if it has one)."""
    keys = getattr(request.app.state, "api_keys", None)
    if keys is None:
        return False
    try:
        principal = await presented_principal(request, keys)
    except Exception:  # noqa: BLE001 - no key, or the key store is the dependency that is down
        return False
    return principal is not None and principal.role is Role.ADMIN
