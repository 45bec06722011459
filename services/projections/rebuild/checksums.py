"""A checksum per read-model table, equal for equal contents on SQLite and PostgreSQL.

Rows are read through the same Table objects the projector writes with, so decimals, times
and JSON come back as Python values; each value is written in one canonical text form and
the rows are hashed in primary-key order. Two tables with the same checksum hold the same
rows, whichever backend, driver or insertion order produced them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Connection,
    Integer,
    String,
    Table,
    Uuid,
    inspect,
    select,
)

from services.projections.read_model.tables import (
    DecimalText,
    UtcDateTime,
    projector_lock,
    read_model,
)

# Every table a rebuild replaces. The lock row is not data: it stays where it is, so a live
# projector waiting on it is never caught holding a table the switch moves.
REBUILT_TABLES: tuple[Table, ...] = tuple(
    table for table in read_model.sorted_tables if table is not projector_lock
)


def canonical(value: Any) -> Any:
    """A JSON-ready form of a column value that does not depend on the backend."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return aware.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    raise TypeError(f"no canonical form for {type(value).__name__}")


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _canonical_of(column: Column[Any]) -> Callable[[Any], Any]:
    """`canonical`, specialised to the column's type: the checksum of a large table is
    taken while the live projector waits, and most of its time is spent here."""
    if isinstance(column.type, DecimalText | Uuid):
        return _text_or_none
    if isinstance(column.type, UtcDateTime):
        return _iso_or_none  # read back in UTC already
    if isinstance(column.type, String | Integer | BigInteger | Boolean | JSON):
        return _same  # JSON holds JSON's own types, and the encoder sorts its keys
    return canonical


def _iso_or_none(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _same(value: Any) -> Any:
    return value


def table_checksum(conn: Connection, table: Table) -> str:
    """SHA-256 over the table's canonical rows, in primary-key order."""
    columns = list(table.columns)
    converters = [_canonical_of(column) for column in columns]
    key_at = [columns.index(column) for column in table.primary_key.columns]
    encode = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode
    rows = []
    for row in conn.execute(select(table)):
        values = [convert(value) for convert, value in zip(converters, row, strict=True)]
        # Sorted here, not by ORDER BY, so collations of the backend play no part.
        rows.append((tuple(values[i] for i in key_at), encode(values)))
    rows.sort()
    digest = hashlib.sha256()
    digest.update(json.dumps([column.name for column in columns]).encode())
    for _, line in rows:
        digest.update(line.encode())
        digest.update(b"\n")
    return digest.hexdigest()


def checksums(conn: Connection, tables: Iterable[Table] = REBUILT_TABLES) -> dict[str, str]:
    return {table.name: table_checksum(conn, table) for table in tables}


def changed_shape(conn: Connection, tables: Iterable[Table] = REBUILT_TABLES) -> set[str]:
    """The tables whose columns in `conn`'s database are not the code's (built by another
    version of the read model, or missing): their rows cannot be read through the code's
    Table objects, so they have no checksum to compare."""
    found = inspect(conn)
    present = set(found.get_table_names())
    return {table.name for table in tables
            if table.name not in present
            or {column["name"] for column in found.get_columns(table.name)}
            != {column.name for column in table.columns}}
