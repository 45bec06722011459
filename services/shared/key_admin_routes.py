"""Key administration over HTTP, admin keys only: list, create, revoke, rotate a key and bind
it to firms; auditors and admins read the key administration log. Mounted on every app that
holds a key store, so each service's admins need no shell on the database host."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, FastAPI, Path, Query, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from contracts.submissions_v1 import CODE_PATTERN, ONE_LINE
from services.shared.api_keys import (
    DEFAULT_GRACE,
    KEY_NAME_PATTERN,
    MAX_FIRMS_PER_KEY,
    MAX_GRACE,
    MAX_KEY_LIFETIME,
    MAX_KEY_NAME,
    ApiKeyStore,
    KeyConflict,
    KeyRefused,
    KeyState,
    Role,
    UnknownKey,
)
from services.shared.errors import ApiError, error_responses
from services.shared.key_auth import Admin, Auditor, key_store_of
from services.shared.openapi_contract import Count, Offset

MAX_KEYS_PAGE = 500
# Every change names the key: reading it, the body and the key's state can each refuse.
CHANGE_ERRORS = error_responses(400, 401, 403, 404, 409, 413, 415, 422, 431, 503)
LIST_ERRORS = error_responses(401, 403, 422, 503)

T = TypeVar("T")

KeyName = Annotated[str, Path(min_length=1, max_length=MAX_KEY_NAME, pattern=KEY_NAME_PATTERN,
                              description="The key's name (its principal)")]
FirmCode = Annotated[str, Field(min_length=3, max_length=64, pattern=CODE_PATTERN)]
FirmCodes = Annotated[list[FirmCode], Field(max_length=MAX_FIRMS_PER_KEY, description=(
    "Codes of the firms a partner key speaks for; repeats count once"))]
LifetimeSeconds = Annotated[int, Field(ge=1, le=int(MAX_KEY_LIFETIME.total_seconds()),
                                       description="The key stops working this long from now")]


class CreateKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=MAX_KEY_NAME, pattern=KEY_NAME_PATTERN,
                      description="The principal recorded on the key's events; unique")
    role: Role
    firms: FirmCodes = []
    expires_in_seconds: LifetimeSeconds | None = None


class RotateKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_seconds: int = Field(
        default=int(DEFAULT_GRACE.total_seconds()), ge=0, le=int(MAX_GRACE.total_seconds()),
        description="How long the old key keeps working beside the new one")
    expires_in_seconds: LifetimeSeconds | None = Field(
        default=None, description="A new expiry; without it the key keeps its own")


class BindFirms(BaseModel):
    model_config = ConfigDict(extra="forbid")

    firms: FirmCodes


class KeyAnswer(BaseModel):
    name: str
    role: Role
    firms: list[str]
    state: KeyState
    created_at: AwareDatetime
    expires_at: AwareDatetime | None
    last_used_at: AwareDatetime | None = Field(
        description="Recorded to within a minute; null if never used since it was recorded")
    revoked_at: AwareDatetime | None
    rotated_at: AwareDatetime | None
    previous_key_valid_until: AwareDatetime | None = Field(
        description="Until when the key replaced at the last rotation still works")


class NewKeyAnswer(KeyAnswer):
    key: str = Field(description="The key itself: shown this once, never stored")


class KeysPage(BaseModel):
    items: list[KeyAnswer]
    limit: int = Field(description="Items per page, as asked")
    offset: int = Field(description="Items skipped, as asked")
    total: Count = Field(description="Items across all pages")


class KeyEventAnswer(BaseModel):
    id: Count
    at: AwareDatetime
    action: str = Field(description="created, revoked, rotated or firms_bound")
    key_name: str
    actor: str = Field(description="Who did it: an admin key's name, or cli:<os user>")
    role: Role
    firms: list[str] = Field(description="The key's firms after the change")
    expires_at: AwareDatetime | None
    grace_until: AwareDatetime | None = Field(
        description="For a rotation: until when the old key works")


class KeyEventsPage(BaseModel):
    items: list[KeyEventAnswer]
    limit: int = Field(description="Items per page, as asked")
    offset: int = Field(description="Items skipped, as asked")
    total: Count = Field(description="Items across all pages")


def refusal(refused: KeyRefused) -> ApiError:
    """The HTTP answer to a change the key store will not make."""
    if isinstance(refused, UnknownKey):
        return ApiError(404, "not_found", refused.message, field=refused.field,
                        rule=refused.rule)
    if isinstance(refused, KeyConflict):
        return ApiError(409, "conflict", refused.message, field=refused.field,
                        rule=refused.rule)
    return ApiError(422, "invalid_request", refused.message, field=refused.field,
                    rule=refused.rule)


async def carried_out(change: Callable[[], T]) -> T:
    try:
        return await run_in_threadpool(change)
    except KeyRefused as refused:
        raise refusal(refused) from refused


def expiry_in(store: ApiKeyStore, seconds: int | None) -> datetime | None:
    return None if seconds is None else store.clock() + timedelta(seconds=seconds)


def key_admin_router() -> APIRouter:
    router = APIRouter(tags=["keys"])

    @router.get("/v1/keys", response_model=KeysPage, responses=LIST_ERRORS,
                summary="List API keys")
    async def list_keys(
        request: Request, _admin: Admin,
        limit: Annotated[int, Query(ge=1, le=MAX_KEYS_PAGE, description="Keys per page")] = 100,
        offset: Offset = 0,
    ) -> dict[str, Any]:
        """Every key by name: role, firms, state, creation, expiry, last use, revocation and
        rotation. Never the key itself. Admin only."""
        store = key_store_of(request)
        records, total = await run_in_threadpool(store.keys, limit, offset)
        now = store.clock()
        return {"items": [r.as_dict(now) for r in records], "limit": limit, "offset": offset,
                "total": total}

    @router.post("/v1/keys", status_code=201, response_model=NewKeyAnswer,
                 responses=CHANGE_ERRORS, summary="Create an API key")
    async def create_key(request: Request, admin: Admin, body: CreateKey) -> dict[str, Any]:
        """Make a key with a role, the firms it speaks for and an optional lifetime; the
        answer holds the key, shown this once. 409 if the name is taken. Admin only."""
        store = key_store_of(request)
        key = await carried_out(lambda: store.create(
            body.name, body.role, body.firms, expiry_in(store, body.expires_in_seconds),
            actor=admin.name))
        record = await run_in_threadpool(store.key, body.name)
        return {**record.as_dict(store.clock()), "key": key}

    @router.post("/v1/keys/{name}/revoke", response_model=KeyAnswer, responses=CHANGE_ERRORS,
                 summary="Revoke an API key")
    async def revoke_key(request: Request, admin: Admin, name: KeyName) -> dict[str, Any]:
        """End the key, and its predecessor if still in its grace period, on every instance
        within seconds. 409 if it is revoked already. Admin only."""
        store = key_store_of(request)
        record = await carried_out(lambda: store.revoke(name, actor=admin.name))
        return record.as_dict(store.clock())

    @router.post("/v1/keys/{name}/rotate", response_model=NewKeyAnswer,
                 responses=CHANGE_ERRORS, summary="Rotate an API key")
    async def rotate_key(request: Request, admin: Admin, name: KeyName,
                         body: RotateKey | None = None) -> dict[str, Any]:
        """Give the key's principal a new key, answered this once; the old key keeps working
        for `grace_seconds` (an hour unless given). An expired key is renewed only with
        `expires_in_seconds`. 409 if revoked. Admin only."""
        store = key_store_of(request)
        asked = body or RotateKey()
        key = await carried_out(lambda: store.rotate(
            name, admin.name, timedelta(seconds=asked.grace_seconds),
            expiry_in(store, asked.expires_in_seconds)))
        record = await run_in_threadpool(store.key, name)
        return {**record.as_dict(store.clock()), "key": key}

    @router.put("/v1/keys/{name}/firms", response_model=KeyAnswer, responses=CHANGE_ERRORS,
                summary="Bind an API key to firms")
    async def bind_firms(request: Request, admin: Admin, name: KeyName,
                         body: BindFirms) -> dict[str, Any]:
        """Make `firms` the whole set of firms the key speaks for (an empty list unbinds
        it); how older keys, made before firms were bound, gain theirs. Admin only."""
        store = key_store_of(request)
        record = await carried_out(lambda: store.bind_firms(name, body.firms, actor=admin.name))
        return record.as_dict(store.clock())

    @router.get("/v1/audit/key-events", response_model=KeyEventsPage, responses=LIST_ERRORS,
                summary="List key administration events", tags=["audit"])
    async def list_key_events(
        request: Request, _auditor: Auditor,
        limit: Annotated[int, Query(ge=1, le=MAX_KEYS_PAGE, description="Events per page")] = 100,
        offset: Offset = 0,
        key_name: Annotated[str | None, Query(min_length=1, max_length=MAX_KEY_NAME,
                                              pattern=ONE_LINE,
                                              description="Only this key's events")] = None,
    ) -> dict[str, Any]:
        """Keys created, revoked, rotated and bound to firms, oldest first, each with who
        did it and when. Auditor or admin."""
        store = key_store_of(request)
        recorded, total = await run_in_threadpool(store.events, limit, offset, key_name)
        return {"items": [e.as_dict() for e in recorded], "limit": limit, "offset": offset,
                "total": total}

    return router


def install_key_admin_api(app: FastAPI, keys: ApiKeyStore) -> None:
    """Mount the key administration routes over `keys` (the app's key store)."""
    app.state.api_keys = keys
    app.include_router(key_admin_router())
