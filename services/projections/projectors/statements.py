"""The projector's SQL statements, built once, and a cheaper way to send many rows.

A batch sends about twenty statements; building each SQLAlchemy construct again per batch,
and SQLAlchemy's per-row parameter handling, cost more than the database's work for a small
batch. Statements here are built once per table; `execute_many` compiles one once per
dialect, schema map and column set, and hands the driver the rows converted by the very
bind processors SQLAlchemy would apply, so what is stored is the same to the byte.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from typing import Any

from sqlalchemy import Column, Connection, Table, bindparam, delete, insert, select, update
from sqlalchemy.sql.compiler import SQLCompiler


@cache
def insert_into(table: Table) -> Any:
    """INSERT of whole rows into `table`; `execute_many` sends it by COPY on PostgreSQL."""
    statement = insert(table)
    _copied_into[id(statement)] = table
    return statement


# The plain inserts of `insert_into`, by id: kept alive by its cache, so ids stay theirs.
_copied_into: dict[int, Table] = {}


@cache
def update_by_key(table: Table, key: tuple[str, ...], columns: tuple[str, ...]) -> Any:
    """UPDATE of `columns` for the row whose primary key is `key`, for executemany: the key's
    values go by the names `k_<column>` (a bound name may not be a column being set)."""
    return update(table).where(
        *(table.c[name] == bindparam(f"k_{name}") for name in key)
    ).values({name: bindparam(name) for name in columns})


@cache
def delete_by_key(table: Table, key: tuple[str, ...]) -> Any:
    """DELETE of the row whose primary key is `key`, for executemany (values `k_<column>`)."""
    return delete(table).where(*(table.c[name] == bindparam(f"k_{name}") for name in key))


@cache
def rows_in(table: Table, column: Column[Any]) -> Any:
    """Every row of `table` whose `column` is in the list bound as `keys`."""
    return select(table).where(column.in_(bindparam("keys", expanding=True)))


class _Compiled:
    """A statement compiled for one dialect and schema map, with the driver's SQL and the
    bind processor of each positional parameter."""

    def __init__(self, statement: Any, compiled: SQLCompiler) -> None:
        self.statement = statement  # kept alive, so its id is never another's
        self.sql = compiled.string
        self.processors: dict[str, Any] = dict(compiled._bind_processors)
        names = compiled.positiontup or []  # the order of a positional driver's parameters
        self.binds: list[tuple[str, Any]] = [(name, self.processors.get(name))
                                             for name in names]


_compiled: dict[tuple[Any, ...], _Compiled] = {}


def _compile(conn: Connection, statement: Any, column_keys: tuple[str, ...]) -> _Compiled:
    translate = conn.get_execution_options().get("schema_translate_map") or {}
    cache_key = (id(statement), conn.dialect.name, tuple(sorted(translate.items(), key=str)),
                 column_keys)
    found = _compiled.get(cache_key)
    if found is None:
        compiled = statement.compile(
            dialect=conn.dialect, column_keys=list(column_keys),
            schema_translate_map=translate or None, render_schema_translate=bool(translate))
        found = _compiled[cache_key] = _Compiled(statement, compiled)
    return found


def execute_many(conn: Connection, statement: Any, rows: Sequence[dict[str, Any]]) -> None:
    """`conn.execute(statement, rows)` for a statement returning nothing, in `conn`'s
    transaction. On SQLite the driver's executemany gets the converted rows straight; other
    drivers go through SQLAlchemy, which sends multi-row statements there."""
    if not rows:
        return
    if conn.dialect.name == "postgresql" and id(statement) in _copied_into:
        _copy(conn, _copied_into[id(statement)], rows)
        return
    if conn.dialect.name != "sqlite":
        conn.execute(statement, list(rows))
        return
    compiled = _compile(conn, statement, tuple(rows[0]))
    binds = compiled.binds
    converted = [
        tuple([row[name] if process is None else process(row[name])
               for name, process in binds])
        for row in rows
    ]
    driver: Any = conn.connection.driver_connection
    cursor = driver.cursor()
    try:
        with announced(conn, cursor, compiled.sql, converted):
            cursor.executemany(compiled.sql, converted)
    finally:
        cursor.close()


@contextmanager
def announced(conn: Connection, cursor: Any, sql: str, parameters: Any) -> Iterator[None]:
    """Tell `conn`'s cursor-execute listeners (logging, tests that break a connection at a
    given statement) of a statement sent to the driver directly, as SQLAlchemy would; with
    no execution context, which there is none of."""
    conn.dispatch.before_cursor_execute(conn, cursor, sql, parameters, None, True)
    yield
    conn.dispatch.after_cursor_execute(conn, cursor, sql, parameters, None, True)


def _copy(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """The rows into `table` by COPY (PostgreSQL), each value as SQLAlchemy would bind it."""
    names = tuple(rows[0])
    compiled = _compile(conn, insert_into(table), names)
    binds = [(name, compiled.processors.get(name)) for name in names]
    translate = conn.get_execution_options().get("schema_translate_map") or {}
    schema = translate.get(table.schema, table.schema)
    quote = conn.dialect.identifier_preparer.quote
    target = f"{quote(schema)}.{quote(table.name)}" if schema else quote(table.name)
    sql = f"COPY {target} ({', '.join(quote(name) for name in names)}) FROM STDIN"
    driver: Any = conn.connection.driver_connection
    with driver.cursor() as cursor, announced(conn, cursor, sql, rows), \
            cursor.copy(sql) as copy:
        for row in rows:
            copy.write_row([row[name] if process is None else process(row[name])
                            for name, process in binds])
