"""A route answered straight from the middleware chain, for the one request partners send
most (`POST /v1/events`).

FastAPI's routing, dependency solving and exception middleware cost more per request than
the route's own work there. The route stays declared in FastAPI (its OpenAPI entry, and the
answer for other methods on its path); the direct route calls the same endpoint with what
its dependencies would have passed, and turns an exception into the answer the app's own
exception handlers give. It sits inside every middleware of the app, so size limits,
request logs, refusal logs, metrics and security headers see it as they see any route.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

Handle = Callable[[Request], Awaitable[Response]]


class _DirectRoute:
    def __init__(self, app: ASGIApp, method: str, path: str, route: APIRoute,
                 handle: Handle, handlers: dict[Any, Callable[..., Any]]) -> None:
        self.app = app
        self.method = method
        self.path = path
        self.route = route
        self.handle = handle
        self.handlers = handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path \
                or scope["method"] != self.method:
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route  # what the request log and metrics name it by
        request = Request(scope, receive, send)
        try:
            response = await self.handle(request)
        except Exception as exc:  # noqa: BLE001 - answered as the app's handlers answer it
            answer = self._handler_of(exc)(request, exc)
            response = await answer if inspect.isawaitable(answer) else answer
        await response(scope, receive, send)

    def _handler_of(self, exc: Exception) -> Callable[..., Any]:
        for kind in type(exc).__mro__:
            if kind in self.handlers:
                return self.handlers[kind]
        raise exc


def install_direct_route(app: FastAPI, route: APIRoute, method: str, handle: Handle) -> None:
    """Answer `method` on `route`'s path with `handle`, inside the app's middlewares and
    before its router. `route` is the app's own declaration of it (its OpenAPI entry); the
    app must have an exception handler for `Exception`, so that every exception has an
    answer."""
    if method not in (route.methods or set()):
        raise ValueError(f"{route.path} does not declare {method}")
    path = route.path
    handlers = app.exception_handlers
    if Exception not in handlers:
        raise ValueError("a direct route needs the app's handler for Exception")
    # Innermost of the app's middlewares: they are applied in list order, outermost first.
    app.user_middleware.append(Middleware(_DirectRoute, method=method, path=path,
                                          route=route, handle=handle, handlers=handlers))
