"""Whose fault a failure to apply an event is: the database's for now, or the event's.

A transient failure (the connection was lost, the server is shutting down, a lock or a
serialization conflict) goes away by itself: the projector's caller retries the same batch
with backoff, and since progress commits with the effects, nothing counts twice. Any other
failure is taken to be the data's (a value a backend refuses, a reference to something never
seen, a bug in a handler): the event is isolated and parked, and the read model goes on.
"""

from __future__ import annotations

import sqlite3

import psycopg
from pydantic import ValidationError
from sqlalchemy import exc as sa

REASON_LIMIT = 2000

# SQLAlchemy's wrappers and the drivers' own classes (pool errors and a driver error raised
# outside a statement reach us unwrapped).
TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    sa.OperationalError,
    sa.InterfaceError,
    sa.DisconnectionError,
    sa.TimeoutError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
    sqlite3.OperationalError,
    ConnectionError,
)


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception, the driver error it wraps and what caused it, without repeats."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 10:
        seen.append(current)
        orig = getattr(current, "orig", None)
        # Not __context__: an error raised while another was being handled is not its cause.
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return seen


def is_transient(exc: BaseException) -> bool:
    """True when retrying later can succeed: the database, not the event, is at fault."""
    for link in _chain(exc):
        if isinstance(link, sa.DBAPIError) and link.connection_invalidated:
            return True
        if isinstance(link, TRANSIENT_TYPES):
            return True
    return False


def describe(exc: BaseException) -> str:
    """One line naming the innermost failure, e.g. `OverflowError: date value out of range`,
    without the SQL statement and parameters a wrapper adds (they may hold the bad value)."""
    innermost = _chain(exc)[-1] if isinstance(exc, sa.StatementError) else exc
    if isinstance(innermost, ValidationError) and innermost.errors():
        first = innermost.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ())) or "value"
        return printable(f"ValidationError: {where}: {first.get('msg', '')}")[:REASON_LIMIT]
    text = str(innermost).strip().splitlines()
    message = text[0] if text else ""
    return printable(f"{type(innermost).__name__}: {message}" if message
                     else type(innermost).__name__)[:REASON_LIMIT]


def printable(text: str) -> str:
    """`text` with NUL written as \\x00: PostgreSQL text columns refuse NUL itself."""
    return text.replace("\x00", "\\x00")
