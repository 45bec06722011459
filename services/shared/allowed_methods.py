"""The `Allow` header of a 405: every method the app serves at the request's path.

Starlette answers 405 from the first route whose path matched, so a path served by two routes
(GET and POST /v1/audit/checkpoints) would name only one route's methods."""

from __future__ import annotations

from fastapi import Request
from starlette.routing import Match

METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def allowed_methods(request: Request) -> str:
    """The methods some route fully matches at this request's path, comma-separated."""
    routes = request.app.router.routes
    return ", ".join(
        method for method in METHODS
        if any(route.matches({**request.scope, "method": method})[0] is Match.FULL
               for route in routes)
    )
