"""API keys: stored as SHA-256 digests, each with a role; the key's name is the principal.

Keys are 32 random bytes, so a fast digest is enough: there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Column, DateTime, Engine, MetaData, String, Table, insert, select
from starlette.concurrency import run_in_threadpool

from services.shared.errors import ApiError

KEY_PREFIX = "drk_"
MAX_REMEMBERED_KEYS = 10_000


class Role(StrEnum):
    PARTNER = "partner"
    READER = "reader"
    AUDITOR = "auditor"
    ADMIN = "admin"


# What each kind of endpoint admits. Partners may read so they can learn aggregate versions.
CAN_WRITE = frozenset({Role.PARTNER, Role.ADMIN})
CAN_READ = frozenset(Role)
CAN_AUDIT = frozenset({Role.AUDITOR, Role.ADMIN})
CAN_ADMINISTER = frozenset({Role.ADMIN})

# Declares the scheme in the OpenAPI document (the Authorize button of /docs); the header is
# read and judged by bearer_key, whose refusals name the rule that was broken.
BEARER = HTTPBearer(
    auto_error=False, scheme_name="ApiKey", bearerFormat="drk_…",
    description="An API key made by `dealreg keys create`, sent as 'Authorization: Bearer KEY'",
)

key_tables = MetaData()
api_keys = Table(
    "dealreg_api_keys",
    key_tables,
    Column("digest", String(64), primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("role", String(20), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class ApiKeyStore:
    """Creates keys and resolves a presented key to its principal.

    Resolved keys are remembered for `cache_seconds`: every request presents a key, and a
    database round trip per request cost about a millisecond. Unknown keys are not
    remembered, so a key created elsewhere works at once."""

    def __init__(self, engine: Engine, cache_seconds: float = 30.0) -> None:
        self.engine = engine
        self.cache_seconds = cache_seconds
        self._resolved: dict[str, tuple[float, Principal]] = {}

    def create_schema(self) -> None:
        key_tables.create_all(self.engine)

    def create(self, name: str, role: Role) -> str:
        """Store a new key and return it; only its digest is kept."""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        with self.engine.begin() as conn:
            conn.execute(
                insert(api_keys).values(
                    digest=digest(key), name=name, role=role.value, created_at=datetime.now(UTC)
                )
            )
        return key

    def name_taken(self, name: str) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(select(api_keys.c.name).where(api_keys.c.name == name)).first() \
                is not None

    def count(self) -> int:
        with self.engine.connect() as conn:
            return len(conn.execute(select(api_keys.c.digest)).all())

    def remembered(self, key: str) -> Principal | None:
        """The key's principal if it was resolved within `cache_seconds`; never blocks."""
        remembered = self._resolved.get(digest(key))
        if remembered is not None and time.monotonic() - remembered[0] < self.cache_seconds:
            return remembered[1]
        return None

    def resolve(self, key: str) -> Principal | None:
        principal = self.remembered(key)
        if principal is not None:
            return principal
        key_digest = digest(key)
        with self.engine.connect() as conn:
            row = conn.execute(
                select(api_keys.c.name, api_keys.c.role).where(api_keys.c.digest == key_digest)
            ).first()
        if row is None:
            return None
        principal = Principal(row.name, Role(row.role))
        if len(self._resolved) > MAX_REMEMBERED_KEYS:
            self._resolved.clear()
        self._resolved[key_digest] = (time.monotonic(), principal)
        return principal


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
    return key.strip()


async def presented_principal(request: Request, store: ApiKeyStore) -> Principal | None:
    """The principal of the request's bearer key, None for an unknown key; raises the 401
    of `bearer_key` when no key is presented as one."""
    key = bearer_key(request)
    # Async, so that a remembered key costs no hop to a worker thread; only a key not seen
    # lately is looked up in the database, off the event loop.
    return store.remembered(key) or await run_in_threadpool(store.resolve, key)


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


Writer = Annotated[Principal, Depends(require_role(key_store_of, CAN_WRITE))]
Reader = Annotated[Principal, Depends(require_role(key_store_of, CAN_READ))]
Auditor = Annotated[Principal, Depends(require_role(key_store_of, CAN_AUDIT))]
# A reader's key, or a browser signed in to the pages (the live event stream).
BrowserReader = Annotated[Principal, Depends(require_role(key_store_of, CAN_READ,
                                                          browser_session=True))]
Admin = Annotated[Principal, Depends(require_role(key_store_of, CAN_ADMINISTER))]
