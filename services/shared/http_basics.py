"""What every service's HTTP side shares: a body size limit, request logs, metrics."""

from __future__ import annotations

import json
import logging
import time

from fastapi import FastAPI, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.shared.errors import UNEXPECTED_STATUS, error_body

log = logging.getLogger("dealreg.http")


# Headers of more than this (names and values) are refused with 431, below the HTTP server's
# own limit, so the refusal is ours: JSON, counted and logged.
MAX_HEADER_BYTES = 16 * 1024


class RequestSizeLimits:
    """Refuses headers over MAX_HEADER_BYTES (431) and bodies over `max_bytes` (413) before
    any route parses them."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if sum(len(name) + len(value) for name, value in scope["headers"]) > MAX_HEADER_BYTES:
            await _refuse(send, 431, "headers_too_large",
                          f"request headers exceed {MAX_HEADER_BYTES} bytes", "headers")
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        await _refuse(send, 413, "payload_too_large",
                      f"request body exceeds {self.max_bytes} bytes", "body")


async def _refuse(send: Send, status: int, code: str, message: str, field: str) -> None:
    payload = json.dumps(error_body(status, code, message, field=field, rule="max_bytes")).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


class HttpMetrics:
    """Per-app Prometheus registry, so two apps in one test process never collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "dealreg_http_requests", "HTTP requests", ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "dealreg_http_request_seconds", "HTTP request latency", ["route"],
            registry=self.registry,
        )

    def render(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


class RequestObserver:
    """Counts, times and logs every request (pure ASGI: no per-request task or copy)."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        # An exception leaving the app is answered outside this layer (the error handlers'
        # catch-all, at Starlette's outermost middleware): count what the client gets there.
        status = UNEXPECTED_STATUS

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(route).observe(elapsed)
            if log.isEnabledFor(logging.INFO):
                log.info("%s %s %s", method, scope["path"], status, extra={"fields": {
                    "method": method, "path": scope["path"], "status": status,
                    "ms": round(elapsed * 1000, 2)}})


def install_http_basics(app: FastAPI, max_body_bytes: int, metrics: HttpMetrics) -> None:
    # Added last, so outermost: a refused oversized body is still counted and logged.
    app.add_middleware(RequestSizeLimits, max_bytes=max_body_bytes)
    app.add_middleware(RequestObserver, metrics=metrics)

    @app.get("/metrics", include_in_schema=False)
    def metrics_endpoint() -> Response:
        return metrics.render()
