"""API keys: stored as SHA-256 digests, each with a role and the firms it speaks for; the
key's name is the principal. Keys expire, are revoked and rotated; every such change is
recorded with who made it (the key administration log).

Keys are 32 random bytes, so a fast digest is enough: there is nothing to brute-force.
How a request presents its key, and which roles an endpoint admits, is
services.shared.key_auth.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from contracts.submissions_v1 import CODE_PATTERN
from services.shared.database import upgrade_columns

log = logging.getLogger("dealreg.keys")

KEY_PREFIX = "drk_"
MAX_REMEMBERED_KEYS = 10_000
# How long an instance trusts what it read about a key: the bound within which a key revoked,
# rotated out or rebound on another instance stops working (or changes firms) here too.
# Expiry is exact: a remembered key's end is checked on every request.
REVOCATION_BOUND_SECONDS = 2.0
# The last use of a key is written at most this often: a write per request would cost more
# than the request's own reads.
LAST_USE_RESOLUTION = timedelta(seconds=60)
# Names become the principal on every recorded event: short, one word, ASCII.
KEY_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,99}$"
MAX_KEY_NAME = 100
MAX_FIRMS_PER_KEY = 100
MAX_KEY_LIFETIME = timedelta(days=3660)  # ten years and the leap days
MAX_GRACE = timedelta(days=30)
DEFAULT_GRACE = timedelta(hours=1)


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

key_tables = MetaData()
# Columns after created_at came with key lifecycles (issue 12): upgrade_columns adds them to
# older stores, where every key so keeps working, bound to no firm and never expiring.
api_keys = Table(
    "dealreg_api_keys",
    key_tables,
    Column("digest", String(64), primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("role", String(20), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("firms", Text, nullable=False, server_default=text("'[]'")),  # a JSON list
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("last_used_at", DateTime(timezone=True), nullable=True),
    Column("rotated_at", DateTime(timezone=True), nullable=True),
    # The key it replaced at its last rotation, which works until previous_valid_until.
    Column("previous_digest", String(64), nullable=True),
    Column("previous_valid_until", DateTime(timezone=True), nullable=True),
)
# A presented key is looked for among current and previous digests in one query.
previous_digest_index = Index("ix_dealreg_api_keys_previous_digest", api_keys.c.previous_digest)

key_events = Table(
    "dealreg_api_key_events",
    key_tables,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("action", String(20), nullable=False),
    Column("key_name", String(100), nullable=False, index=True),
    Column("actor", String(200), nullable=False),
    # What the key was after the change.
    Column("role", String(20), nullable=False),
    Column("firms", Text, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("grace_until", DateTime(timezone=True), nullable=True),
)


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role
    firms: frozenset[str] = frozenset()


class KeyAction(StrEnum):
    CREATED = "created"
    REVOKED = "revoked"
    ROTATED = "rotated"
    FIRMS_BOUND = "firms_bound"


class KeyState(StrEnum):
    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"


@dataclass(frozen=True)
class KeyRecord:
    """What an administrator sees of a key; never the key itself."""

    name: str
    role: Role
    firms: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    rotated_at: datetime | None
    previous_valid_until: datetime | None

    def state(self, now: datetime) -> KeyState:
        if self.revoked_at is not None:
            return KeyState.REVOKED
        if self.expires_at is not None and now >= self.expires_at:
            return KeyState.EXPIRED
        return KeyState.ACTIVE

    def as_dict(self, now: datetime) -> dict[str, Any]:
        return {"name": self.name, "role": self.role.value, "firms": list(self.firms),
                "state": self.state(now).value, "created_at": self.created_at,
                "expires_at": self.expires_at, "last_used_at": self.last_used_at,
                "revoked_at": self.revoked_at, "rotated_at": self.rotated_at,
                "previous_key_valid_until": self.previous_valid_until}


@dataclass(frozen=True)
class KeyEvent:
    """One entry of the key administration log."""

    id: int
    at: datetime
    action: KeyAction
    key_name: str
    actor: str
    role: Role
    firms: tuple[str, ...]
    expires_at: datetime | None
    grace_until: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "at": self.at, "action": self.action.value,
                "key_name": self.key_name, "actor": self.actor, "role": self.role.value,
                "firms": list(self.firms), "expires_at": self.expires_at,
                "grace_until": self.grace_until}


class KeyRefused(Exception):
    """A key administration request the store will not carry out; names field and rule."""

    def __init__(self, field: str, rule: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.rule = rule
        self.message = message


class UnknownKey(KeyRefused):
    """No key has that name."""


class KeyConflict(KeyRefused):
    """The key's state forbids it: its name is taken, it is revoked or expired."""


class InvalidKeyRequest(KeyRefused):
    """A name, firm code, expiry or grace outside its rule."""


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def cli_actor() -> str:
    """Who the key administration log names for a change made with `dealreg keys`."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name in the environment or the password database
        return "cli:unknown"


def valid_firm_codes(firms: Iterable[str], field: str = "firms") -> tuple[str, ...]:
    """The firm codes sorted and without repeats; refuses a code that is not one."""
    codes = sorted(set(firms))
    for code in codes:
        if not re.fullmatch(CODE_PATTERN, code):
            raise InvalidKeyRequest(field, "firm_code", f"{code[:80]!r} is not a firm code "
                                    "(3-64 lower-case letters, digits and inner hyphens)")
    if len(codes) > MAX_FIRMS_PER_KEY:
        raise InvalidKeyRequest(field, "max_items",
                                f"a key speaks for at most {MAX_FIRMS_PER_KEY} firms")
    return tuple(codes)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime | None) -> datetime | None:
    # SQLite hands back what it was given without its offset; we only ever store UTC.
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _firms_of(stored: str | None) -> tuple[str, ...]:
    try:
        firms = json.loads(stored or "[]")
    except ValueError:
        return ()
    return tuple(f for f in firms if isinstance(f, str)) if isinstance(firms, list) else ()


@dataclass(frozen=True)
class _Standing:
    """A presented key that works now: whose it is, until when, and when it was last used."""

    principal: Principal
    stops_at: datetime | None
    last_used_at: datetime | None


class ApiKeyStore:
    """Creates and administers keys, and resolves a presented key to its principal.

    Resolved keys are remembered for `cache_seconds`: every request presents a key, and a
    database round trip per request cost about a millisecond. So a key revoked or rotated
    out through another instance stops working here within `cache_seconds`; one changed
    through this store stops at once, and an expiring key stops at its expiry everywhere.
    Unknown keys are not remembered, so a key created elsewhere works at once."""

    def __init__(self, engine: Engine, cache_seconds: float = REVOCATION_BOUND_SECONDS,
                 clock: Callable[[], datetime] = _utc_now) -> None:
        self.engine = engine
        self.cache_seconds = cache_seconds
        self.clock = clock
        self._resolved: dict[str, tuple[float, _Standing]] = {}

    def create_schema(self) -> None:
        key_tables.create_all(self.engine)
        upgrade_columns(self.engine, api_keys)
        previous_digest_index.create(self.engine, checkfirst=True)

    # -- administration ------------------------------------------------------------------

    def create(self, name: str, role: Role, firms: Iterable[str] = (),
               expires_at: datetime | None = None, actor: str = "system") -> str:
        """Store a new key and return it; only its digest is kept."""
        if len(name) > MAX_KEY_NAME or not re.fullmatch(KEY_NAME_PATTERN, name):
            raise InvalidKeyRequest("name", "key_name", "a key name is 1-100 ASCII letters, "
                                    "digits and . _ : @ -, starting with a letter or digit")
        codes = valid_firm_codes(firms)
        now = self.clock()
        self._check_expiry(expires_at, now)
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(api_keys).values(
                    digest=digest(key), name=name, role=role.value, created_at=now,
                    firms=json.dumps(codes), expires_at=expires_at))
                self._record(conn, KeyAction.CREATED, name, actor, role, codes, expires_at)
        except IntegrityError as exc:
            raise KeyConflict("name", "unique_name",
                              f"a key named {name!r} exists already") from exc
        return key

    def revoke(self, name: str, actor: str) -> KeyRecord:
        """End the key (and its predecessor still in its grace period) for good."""
        with self.engine.begin() as conn:
            record = self._usable(conn, name, expired_ok=True)
            conn.execute(update(api_keys).where(api_keys.c.name == name)
                         .values(revoked_at=self.clock()))
            self._record(conn, KeyAction.REVOKED, name, actor, record.role, record.firms,
                         record.expires_at)
        self._forget_all()
        return self.key(name)

    def rotate(self, name: str, actor: str, grace: timedelta = DEFAULT_GRACE,
               expires_at: datetime | None = None) -> str:
        """Give the key's principal a new key and return it. The old key keeps working for
        `grace`; a predecessor still in its own grace period stops at once. The expiry
        stays unless `expires_at` is given (the one way to renew an expired key)."""
        if not timedelta(0) <= grace <= MAX_GRACE:
            raise InvalidKeyRequest("grace_seconds", "max_grace",
                                    f"the grace period is 0 to {MAX_GRACE.days} days")
        now = self.clock()
        self._check_expiry(expires_at, now)
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        with self.engine.begin() as conn:
            record = self._usable(conn, name, expired_ok=expires_at is not None)
            old_digest = conn.execute(select(api_keys.c.digest)
                                      .where(api_keys.c.name == name)).scalar_one()
            stays_until = now + grace
            changes: dict[str, Any] = {
                "digest": digest(key), "previous_digest": old_digest,
                "previous_valid_until": stays_until, "rotated_at": now}
            if expires_at is not None:
                changes["expires_at"] = expires_at
            changed = conn.execute(update(api_keys).where(
                api_keys.c.name == name, api_keys.c.digest == old_digest).values(**changes))
            if changed.rowcount != 1:
                raise KeyConflict("name", "concurrent_change",
                                  f"key {name!r} changed meanwhile; try again")
            self._record(conn, KeyAction.ROTATED, name, actor, record.role, record.firms,
                         changes.get("expires_at", record.expires_at), stays_until)
        self._forget_all()
        return key

    def bind_firms(self, name: str, firms: Iterable[str], actor: str) -> KeyRecord:
        """Make `firms` the whole set of firms the key speaks for (none unbinds it)."""
        codes = valid_firm_codes(firms)
        with self.engine.begin() as conn:
            record = self._usable(conn, name, expired_ok=True)
            conn.execute(update(api_keys).where(api_keys.c.name == name)
                         .values(firms=json.dumps(codes)))
            self._record(conn, KeyAction.FIRMS_BOUND, name, actor, record.role, codes,
                         record.expires_at)
        self._forget_all()
        return self.key(name)

    # -- what administrators read ------------------------------------------------------

    def key(self, name: str) -> KeyRecord:
        with self.engine.connect() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.name == name)).first()
        if row is None:
            raise UnknownKey("name", "known_key", f"no key named {name!r}")
        return _record_of(row)

    def keys(self, limit: int, offset: int) -> tuple[list[KeyRecord], int]:
        """A page of keys by name, and how many there are."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(api_keys).order_by(api_keys.c.name)
                                .limit(limit).offset(offset)).all()
            total = conn.execute(select(func.count()).select_from(api_keys)).scalar_one()
        return [_record_of(row) for row in rows], int(total)

    def events(self, limit: int, offset: int, key_name: str | None = None
               ) -> tuple[list[KeyEvent], int]:
        """A page of the key administration log, oldest first, and how long it is."""
        query = select(key_events)
        counted = select(func.count()).select_from(key_events)
        if key_name is not None:
            query = query.where(key_events.c.key_name == key_name)
            counted = counted.where(key_events.c.key_name == key_name)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(key_events.c.id).limit(limit).offset(offset)).all()
            total = conn.execute(counted).scalar_one()
        return [KeyEvent(row.id, _aware(row.at) or row.at, KeyAction(row.action), row.key_name,
                         row.actor, Role(row.role), _firms_of(row.firms),
                         _aware(row.expires_at), _aware(row.grace_until)) for row in rows], \
            int(total)

    def name_taken(self, name: str) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(select(api_keys.c.name).where(api_keys.c.name == name)).first() \
                is not None

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(api_keys)).scalar_one())

    # -- presented keys ----------------------------------------------------------------

    def remembered(self, key: str) -> Principal | None:
        """The key's principal if it was resolved within `cache_seconds` and has not expired
        since; never blocks."""
        remembered = self._resolved.get(digest(key))
        if remembered is None or time.monotonic() - remembered[0] >= self.cache_seconds:
            return None
        standing = remembered[1]
        if standing.stops_at is not None and self.clock() >= standing.stops_at:
            return None
        return standing.principal

    def resolve(self, key: str) -> Principal | None:
        principal = self.remembered(key)
        if principal is not None:
            return principal
        key_digest = digest(key)
        standing = self._standing(key_digest)
        if standing is None:
            return None
        self._note_use(standing)
        if len(self._resolved) > MAX_REMEMBERED_KEYS:
            self._resolved.clear()
        self._resolved[key_digest] = (time.monotonic(), standing)
        return standing.principal

    def current_principal(self, key_digest: str) -> Principal | None:
        """The principal of a key digest that works now, read from the database on every
        call (a browser session's key): a revoked key ends its sessions at once."""
        standing = self._standing(key_digest)
        return None if standing is None else standing.principal

    # -- inside ------------------------------------------------------------------------

    def _standing(self, key_digest: str) -> _Standing | None:
        # One query by the primary key or the previous digest's index, as cheap for an
        # unknown key as the primary-key lookup alone was.
        with self.engine.connect() as conn:
            row = conn.execute(
                select(api_keys.c.digest, api_keys.c.name, api_keys.c.role, api_keys.c.firms,
                       api_keys.c.expires_at, api_keys.c.revoked_at, api_keys.c.last_used_at,
                       api_keys.c.previous_valid_until)
                .where(or_(api_keys.c.digest == key_digest,
                           api_keys.c.previous_digest == key_digest))
                .order_by(api_keys.c.name).limit(1)
            ).first()
        if row is None or row.revoked_at is not None:
            return None
        stops_at = _aware(row.expires_at)
        if row.digest != key_digest:  # a rotated-out key, in its grace period or past it
            grace_until = _aware(row.previous_valid_until)
            if grace_until is None:
                return None
            stops_at = grace_until if stops_at is None else min(stops_at, grace_until)
        if stops_at is not None and self.clock() >= stops_at:
            return None
        principal = Principal(row.name, Role(row.role), frozenset(_firms_of(row.firms)))
        return _Standing(principal, stops_at, _aware(row.last_used_at))

    def _note_use(self, standing: _Standing) -> None:
        now = self.clock()
        if standing.last_used_at is not None and now - standing.last_used_at \
                < LAST_USE_RESOLUTION:
            return
        try:
            with self.engine.begin() as conn:
                conn.execute(update(api_keys).where(api_keys.c.name == standing.principal.name)
                             .values(last_used_at=now))
        except SQLAlchemyError:  # a busy database must not refuse a good key: next time
            log.warning("could not record the last use of key %r", standing.principal.name,
                        exc_info=True)

    def _usable(self, conn: Connection, name: str, expired_ok: bool = False) -> KeyRecord:
        """The named key, if it may still be changed: not revoked, and not expired unless
        `expired_ok` (a renewal, a rebinding or a revocation)."""
        row = conn.execute(select(api_keys).where(api_keys.c.name == name)).first()
        if row is None:
            raise UnknownKey("name", "known_key", f"no key named {name!r}")
        record = _record_of(row)
        state = record.state(self.clock())
        if state is KeyState.REVOKED:
            raise KeyConflict("name", "not_revoked", f"key {name!r} is revoked")
        if state is KeyState.EXPIRED and not expired_ok:
            raise KeyConflict("name", "not_expired", f"key {name!r} has expired; rotate it "
                              "with a new expiry to renew it")
        return record

    def _check_expiry(self, expires_at: datetime | None, now: datetime) -> None:
        if expires_at is None:
            return
        if expires_at.tzinfo is None:
            raise InvalidKeyRequest("expires_at", "timezone", "an expiry needs a time zone")
        if expires_at <= now:
            raise InvalidKeyRequest("expires_at", "future", "an expiry must be in the future")
        if expires_at - now > MAX_KEY_LIFETIME:
            raise InvalidKeyRequest("expires_at", "max_lifetime", "a key lives at most "
                                    f"{MAX_KEY_LIFETIME.days} days")

    def _record(self, conn: Connection, action: KeyAction, name: str, actor: str, role: Role,
                firms: tuple[str, ...], expires_at: datetime | None,
                grace_until: datetime | None = None) -> None:
        conn.execute(insert(key_events).values(
            at=self.clock(), action=action.value, key_name=name, actor=actor[:200],
            role=role.value, firms=json.dumps(list(firms)), expires_at=expires_at,
            grace_until=grace_until))

    def _forget_all(self) -> None:
        # Administration is rare: forgetting every key is simpler than finding one's digests.
        self._resolved.clear()


def _record_of(row: Any) -> KeyRecord:
    return KeyRecord(
        name=row.name, role=Role(row.role), firms=_firms_of(row.firms),
        created_at=_aware(row.created_at) or row.created_at,
        expires_at=_aware(row.expires_at), last_used_at=_aware(row.last_used_at),
        revoked_at=_aware(row.revoked_at), rotated_at=_aware(row.rotated_at),
        previous_valid_until=_aware(row.previous_valid_until))
