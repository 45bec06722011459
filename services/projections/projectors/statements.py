"""The projector's SQL statements, built once, and a cheaper way to send many rows.

A batch sends about twenty statements; building each SQLAlchemy construct again per batch,
and SQLAlchemy's per-row parameter handling, cost more than the database's work for a small
batch. Statements here are built once per table; `execute_many` compiles one once per
dialect, schema map and column set, and hands the driver the rows converted by the very
bind processors SQLAlchemy would apply, so what is stored is the same to the byte.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Table,
    Uuid,
    bindparam,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.sql.compiler import SQLCompiler

from services.projections.read_model.tables import UtcDateTime


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


# Values whose bind processing is pure and whose type's equal values convert equally: their
# processed form is kept per dialect and type, so a time or id that a batch writes into
# several rows (an event's time in its history row, its record, its pledge, its deal) is
# converted once. Bounded: a long rebuild never holds more than this many of each.
MEMO_LIMIT = 50_000
_MEMO_TYPES: tuple[type, ...] = (UtcDateTime, Uuid)
_memos: dict[tuple[str, type], dict[Any, Any]] = {}


def _remembering(process: Any, memo: dict[Any, Any]) -> Any:
    def converted(value: Any) -> Any:
        if len(memo) >= MEMO_LIMIT:
            memo.clear()
        found = memo[value] = process(value)
        return found

    return converted


RowsConverter = Callable[[Sequence[dict[str, Any]]], list[Any]]


class _Compiled:
    """A statement compiled for one dialect and schema map, with the driver's SQL and the
    bind processor of each positional parameter."""

    def __init__(self, statement: Any, compiled: SQLCompiler, dialect: Any) -> None:
        self.statement = statement  # kept alive, so its id is never another's
        self.sql = compiled.string
        self.dialect_name = dialect.name
        self.processors: dict[str, Any] = dict(compiled._bind_processors)
        self.types = {name: bind.type for name, bind in compiled.binds.items()}
        self.names = tuple(compiled.positiontup or [])  # a positional driver's order
        self._converters: dict[tuple[str, ...], RowsConverter] = {}

    def values_of(self, rows: Sequence[dict[str, Any]], names: Sequence[str] | None = None
                  ) -> list[Any]:
        """Each row's values in the order of `names` (default: the statement's parameters),
        processed as SQLAlchemy would bind them."""
        names = self.names if names is None else tuple(names)
        convert = self._converters.get(names)
        if convert is None:
            convert = self._converters[names] = self._converter(names)
        return convert(rows)

    def _converter(self, names: tuple[str, ...]) -> RowsConverter:
        """One function that turns rows into value tuples with no loop per column: a batch
        sends tens of thousands of rows, and a loop over columns in each cost more than the
        database's work on them."""
        scope: dict[str, Any] = {}
        values = []
        for at, name in enumerate(names):
            process = self.processors.get(name)
            value = f"row[{name!r}]"
            if process is None:
                values.append(value)
                continue
            scope[f"process_{at}"] = process
            type_ = self.types.get(name)
            if isinstance(type_, _MEMO_TYPES):
                memo = _memos.setdefault((self.dialect_name, type(type_)), {})
                scope[f"memo_{at}"] = memo
                scope[f"process_{at}"] = _remembering(process, memo)
                values.append(f"(memo_{at}[v] if (v := {value}) in memo_{at} "
                              f"else process_{at}(v))")
            else:
                values.append(f"process_{at}({value})")
        source = (f"def convert(rows):\n"
                  f"    return [({', '.join(values)}{',' if len(values) == 1 else ''}) "
                  f"for row in rows]\n")
        exec(source, scope)  # noqa: S102 - names and processors only, from the statement
        converter: RowsConverter = scope["convert"]
        return converter


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
        found = _compiled[cache_key] = _Compiled(statement, compiled, conn.dialect)
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
    converted = compiled.values_of(rows)
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
    translate = conn.get_execution_options().get("schema_translate_map") or {}
    schema = translate.get(table.schema, table.schema)
    quote = conn.dialect.identifier_preparer.quote
    target = f"{quote(schema)}.{quote(table.name)}" if schema else quote(table.name)
    sql = f"COPY {target} ({', '.join(quote(name) for name in names)}) FROM STDIN"
    driver: Any = conn.connection.driver_connection
    with driver.cursor() as cursor, announced(conn, cursor, sql, rows), \
            cursor.copy(sql) as copy:
        for values in compiled.values_of(rows, names):
            copy.write_row(values)
