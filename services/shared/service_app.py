"""The FastAPI shell every service shares: errors, limits, logs, metrics and health probes."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from services.shared.errors import install_error_handlers
from services.shared.http_basics import HttpMetrics, install_http_basics
from services.shared.settings import Settings

Probe = Callable[[], object]
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
) -> FastAPI:
    """`readiness` names each dependency and a call that raises while it is unreachable."""
    app = FastAPI(title=title, version="0.1.0", description=description, lifespan=lifespan)
    app.state.settings = settings
    install_error_handlers(app)
    install_http_basics(app, settings.max_body_bytes, metrics)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    def readyz() -> Any:
        """Every dependency answers; 503 naming the ones that do not."""
        checks: dict[str, str] = {}
        for name, probe in readiness.items():
            try:
                probe()
                checks[name] = "ok"
            except Exception as exc:  # noqa: BLE001 - report, don't crash the probe
                checks[name] = f"unreachable: {type(exc).__name__}: {exc}"[:300]
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse({"status": "ready" if ready else "not_ready", "checks": checks},
                            status_code=200 if ready else 503)

    return app
