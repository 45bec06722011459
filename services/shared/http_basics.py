"""What every service's HTTP side shares: header and body limits, security headers, request
logs, refusal logs and metrics."""

from __future__ import annotations

import json
import logging
import time

from fastapi import Depends, FastAPI, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.shared.api_keys import CAN_AUDIT
from services.shared.errors import UNEXPECTED_STATUS, error_body
from services.shared.key_auth import key_store_of, require_role
from services.shared.refusals import RefusalLog, RefusalObserver
from services.shared.settings import Settings

log = logging.getLogger("dealreg.http")


# Headers of more than this (names and values) are refused with 431, below the HTTP server's
# own limit (services.shared.http_server), so the refusal is ours: JSON, counted and logged.
MAX_HEADER_BYTES = 16 * 1024
MAX_HEADER_COUNT = 100
# "Bearer " and a key are 54 bytes; nothing longer can be one, so it is not even looked at.
MAX_AUTHORIZATION_BYTES = 256


class RequestSizeLimits:
    """Refuses more than MAX_HEADER_COUNT headers, more than MAX_HEADER_BYTES of them, an
    Authorization header over MAX_AUTHORIZATION_BYTES (431) and bodies over `max_bytes` (413)
    before any route parses them."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        if len(headers) > MAX_HEADER_COUNT:
            await _refuse(send, 431, "headers_too_large",
                          f"more than {MAX_HEADER_COUNT} request headers", "headers",
                          "max_count")
            return
        if sum(len(name) + len(value) for name, value in headers) > MAX_HEADER_BYTES:
            await _refuse(send, 431, "headers_too_large",
                          f"request headers exceed {MAX_HEADER_BYTES} bytes", "headers")
            return
        if any(name == b"authorization" and len(value) > MAX_AUTHORIZATION_BYTES
               for name, value in headers):
            await _refuse(send, 431, "headers_too_large",
                          f"the Authorization header exceeds {MAX_AUTHORIZATION_BYTES} bytes",
                          "Authorization")
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


async def _refuse(send: Send, status: int, code: str, message: str, field: str,
                  rule: str = "max_bytes") -> None:
    payload = json.dumps(error_body(status, code, message, field=field, rule=rule)).encode()
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
        self.refusals = Counter(
            "dealreg_refusals", "Refused authentications and writes (requests and batch "
            "items), by error code and rule", ["code", "rule"], registry=self.registry,
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


class SecurityHeaders:
    """Adds to every answer what browsers need to treat it safely: no MIME sniffing, no
    referrer, no framing, and no caching unless the answer chose its own Cache-Control
    (static files under /static may be cached)."""

    ALWAYS = ((b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
              (b"x-frame-options", b"DENY"))

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cacheable = scope["path"].startswith("/static")

        async def secured_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in self.ALWAYS if h[0] not in present)
                if b"cache-control" not in present and not cacheable:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, secured_send)


def install_http_basics(app: FastAPI, settings: Settings, metrics: HttpMetrics) -> None:
    app.state.refusals = RefusalLog(metrics.refusals)
    # Added in this order, so outermost first: security headers and the request log see every
    # answer; the refusal log sees the size limits' 413 and 431.
    app.add_middleware(RequestSizeLimits, max_bytes=settings.max_body_bytes)
    app.add_middleware(RefusalObserver, refusals=app.state.refusals)
    app.add_middleware(RequestObserver, metrics=metrics)
    app.add_middleware(SecurityHeaders)
    install_metrics_endpoint(app, settings, metrics)


def install_metrics_endpoint(app: FastAPI, settings: Settings, metrics: HttpMetrics) -> None:
    """/metrics as `settings.metrics` says: open, for auditor and admin keys, or absent."""
    if settings.metrics == "off":
        return
    if settings.metrics == "public":
        app.add_api_route("/metrics", metrics.render, include_in_schema=False)
        return
    # Every service keeps its key store at app.state.api_keys (key_store_of).
    app.add_api_route("/metrics", metrics.render, include_in_schema=False,
                      dependencies=[Depends(require_role(key_store_of, CAN_AUDIT))])
