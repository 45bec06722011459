"""Who is asking: the request's API key (or a signed-in browser) judged against the key
store (services.shared.api_keys), as FastAPI dependencies: `Writer`, `Reader`, `Auditor`,
`BrowserReader`, `Admin`. Failed authentications are throttled per client address
(services.shared.auth_throttle).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from services.shared.api_keys import (
    CAN_ADMINISTER,
    CAN_AUDIT,
    CAN_READ,
    CAN_WRITE,
    KEY_PREFIX,
    ApiKeyStore,
    Principal,
    Role,
)
from services.shared.auth_throttle import client_address, throttle_of
from services.shared.errors import ApiError

# Declares the scheme in the OpenAPI document (the Authorize button of /docs); the header is
# read and judged by bearer_key, whose refusals name the rule that was broken.
BEARER = HTTPBearer(
    auto_error=False, scheme_name="ApiKey", bearerFormat="drk_…",
    description="An API key made by `dealreg keys create`, sent as 'Authorization: Bearer KEY'",
)


def bearer_key(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if not header:
        raise ApiError(
            401, "unauthenticated", "send an API key as 'Authorization: Bearer KEY'",
            field="Authorization", rule="required",
        )
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(
            401, "unauthenticated", "the Authorization header must be 'Bearer KEY'",
            field="Authorization", rule="bearer",
        )
    key = key.strip()
    if KEY_SHAPE.fullmatch(key) is None:
        raise ApiError(
            401, "unauthenticated", f"not an API key: keys are '{KEY_PREFIX}' and 43 letters, "
            "digits, '-' or '_'", field="Authorization", rule="key_format",
        )
    return key


async def presented_principal(request: Request, store: ApiKeyStore) -> Principal | None:
    """The principal of the request's bearer key, None for an unknown key; raises the 401
    of `bearer_key` when no key is presented as one, and the 429 of an address that failed
    too often (before its key is even read: a throttled address costs no lookup). Only an
    unknown key counts as a failure: a malformed one costs nothing and cannot be a guess."""
    throttle, address = throttle_of(request), client_address(request)
    throttle.refuse_if_throttled(address)
    key = bearer_key(request)
    # Async, so that a remembered key costs no hop to a worker thread; only a key not seen
    # lately is looked up in the database, off the event loop.
    principal = store.remembered(key) or await run_in_threadpool(store.resolve, key)
    if principal is None:
        throttle.failed(address)
    return principal


def require_role(store_of: Callable[[Request], ApiKeyStore], allowed: frozenset[Role],
                 browser_session: bool = False):
    """A FastAPI dependency admitting only keys whose role is in `allowed`. With
    `browser_session`, a request without an Authorization header may instead come from a
    signed-in browser (`app.state.session_principal`, set by the pages): for reads a browser
    makes itself, such as an EventSource, which cannot send headers."""

    async def dependency(
        request: Request,
        _declared: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)],
    ) -> Principal:
        principal = await _browser_principal(request) if browser_session else None
        if principal is None:
            principal = await presented_principal(request, store_of(request))
        if principal is None:
            raise ApiError(401, "unauthenticated", "unknown API key", field="Authorization",
                           rule="known_key")
        # Who, for the log of refused writes (services.shared.refusals).
        request.state.principal = principal
        if principal.role not in allowed:
            roles = ", ".join(sorted(r.value for r in allowed))
            raise ApiError(
                403, "forbidden", f"a {principal.role.value} key cannot do this; needs {roles}",
                field="Authorization", rule="role",
            )
        return principal

    return dependency


async def _browser_principal(request: Request) -> Principal | None:
    of_session = getattr(request.app.state, "session_principal", None)
    if of_session is None or request.headers.get("authorization"):
        return None
    principal: Principal | None = await run_in_threadpool(of_session, request)
    return principal


def key_store_of(request: Request) -> ApiKeyStore:
    return request.app.state.api_keys


# The shape of every key `ApiKeyStore.create` makes (token_urlsafe(32) is 43 characters): a
# key of another shape cannot be known, so it is refused without a lookup.
KEY_SHAPE = re.compile(re.escape(KEY_PREFIX) + r"[A-Za-z0-9_-]{43}")


# Named, so that a direct route (services.shared.direct_route) can call it as FastAPI would.
writer_principal = require_role(key_store_of, CAN_WRITE)
Writer = Annotated[Principal, Depends(writer_principal)]
Reader = Annotated[Principal, Depends(require_role(key_store_of, CAN_READ))]
Auditor = Annotated[Principal, Depends(require_role(key_store_of, CAN_AUDIT))]
# A reader's key, or a browser signed in to the pages (the live event stream).
BrowserReader = Annotated[Principal, Depends(require_role(key_store_of, CAN_READ,
                                                          browser_session=True))]
Admin = Annotated[Principal, Depends(require_role(key_store_of, CAN_ADMINISTER))]
