"""A checksum per read-model table, equal for equal contents on SQLite and PostgreSQL.

Rows are read through the same Table objects the projector writes with, so decimals, times
and JSON come back as Python values; each value is written in one canonical text form and
the rows are hashed in primary-key order. Two tables with the same checksum hold the same
rows, whichever backend, driver or insertion order produced them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, Table, select

from services.projections.read_model.tables import projector_lock, read_model

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


def table_checksum(conn: Connection, table: Table) -> str:
    """SHA-256 over the table's canonical rows, in primary-key order."""
    key_columns = [column.name for column in table.primary_key.columns]
    columns = [column.name for column in table.columns]
    rows = []
    for row in conn.execute(select(table)).mappings():
        values = [canonical(row[name]) for name in columns]
        # Sorted here, not by ORDER BY, so collations of the backend play no part.
        rows.append((json.dumps([canonical(row[name]) for name in key_columns]),
                     json.dumps(values, sort_keys=True, separators=(",", ":"))))
    rows.sort()
    digest = hashlib.sha256()
    digest.update(json.dumps(columns).encode())
    for _, line in rows:
        digest.update(line.encode())
        digest.update(b"\n")
    return digest.hexdigest()


def checksums(conn: Connection, tables: Iterable[Table] = REBUILT_TABLES) -> dict[str, str]:
    return {table.name: table_checksum(conn, table) for table in tables}
