"""The log of refusals: every refused authentication and every refused write, one JSON line
each saying who (principal or client address), what (method, path, event type) and why
(status, code, field, rule), and counted in `dealreg_refusals_total` by code and rule."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from prometheus_client import Counter
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.shared.auth_throttle import client_address

log = logging.getLogger("dealreg.refusals")

# Statuses an authentication is refused with (unknown key, wrong role, throttled).
AUTH_STATUSES = frozenset({401, 403, 429})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# An error body is a few hundred bytes; more is not one, and is not held in memory.
MAX_ERROR_BODY = 8192
# Event types come from the client: a long one is cut, not logged whole.
MAX_LOGGED_TYPE = 100


def is_write(scope: Scope) -> bool:
    """A write: any unsafe method on the API (POST /v1/events, batches, checkpoints...)."""
    return scope["method"] not in SAFE_METHODS and scope["path"].startswith("/v1/")


class RefusalLog:
    def __init__(self, counter: Counter) -> None:
        self.counter = counter

    def record(self, scope: Scope, error: Mapping[str, Any], **what: Any) -> None:
        """Log and count one refusal; `error` is the `error` object of the answer's body,
        `what` adds to method and path (index and event type of a batch item)."""
        code, rule = str(error.get("code")), str(error.get("rule"))
        self.counter.labels(code, rule).inc()
        principal = scope.get("state", {}).get("principal")
        who = {"principal": getattr(principal, "name", None),
               "role": str(principal.role) if principal is not None else None,
               "client": client_address(HTTPConnection(scope))}
        event_type = what.pop("event_type", None) or scope.get("state", {}).get("event_type")
        refused = {"method": scope["method"], "path": scope["path"], **what}
        if isinstance(event_type, str):
            refused["event_type"] = event_type[:MAX_LOGGED_TYPE]
        why = {name: error.get(name) for name in ("status", "code", "field", "rule")}
        status = int(error.get("status") or 0)
        level = logging.WARNING if status in AUTH_STATUSES else logging.INFO
        log.log(level, "refused %s %s: %s %s", scope["method"], scope["path"], status, rule,
                extra={"fields": {"who": who, "what": refused, "why": why}})


class RefusalObserver:
    """Records the whole-request refusals (pure ASGI, outside the size limits so that their
    413 and 431 are seen too): any 4xx of a write, and refused authentications anywhere.
    Batch items refused inside a 200 are recorded by the batch route."""

    def __init__(self, app: ASGIApp, refusals: RefusalLog) -> None:
        self.app = app
        self.refusals = refusals

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        watched: list[bytes] | None = None

        async def observed_send(message: Message) -> None:
            nonlocal watched
            if message["type"] == "http.response.start":
                status = message["status"]
                if 400 <= status < 500 and (status in AUTH_STATUSES or is_write(scope)):
                    watched = []
            elif message["type"] == "http.response.body" and watched is not None:
                watched.append(message.get("body", b""))
                if sum(map(len, watched)) > MAX_ERROR_BODY:
                    watched = None
                elif not message.get("more_body", False):
                    self._record(scope, b"".join(watched))
                    watched = None
            await send(message)

        await self.app(scope, receive, observed_send)

    def _record(self, scope: Scope, body: bytes) -> None:
        try:
            error = json.loads(body)["error"]
        except (ValueError, KeyError, TypeError):
            return  # not the error format: a page's own answer (the sign-in form's 401)
        if not isinstance(error, dict):
            return
        if error.get("status") in AUTH_STATUSES and error.get("field") != "Authorization" \
                and not is_write(scope):
            return  # a read refused for another reason than its key (a 403 of a page)
        self.refusals.record(scope, error)
