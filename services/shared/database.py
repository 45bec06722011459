"""The one way to open a SQLAlchemy engine, with SQLite tuned for a reader beside a writer,
and the one way an existing table gains new columns."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, Table, create_engine, event, inspect, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url


class DependencyUnavailable(Exception):
    """A database or broker the service needs does not answer; the message names it."""


def create_sql_engine(url: str) -> Engine:
    if make_url(url).get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        # pysqlite opens a transaction only at the first write: a transaction that must read
        # consistently writes first (the projector claims its lock row), and read-then-write
        # code is never handed a stale snapshot that SQLite would refuse to upgrade.
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


def dialect_insert(conn: Connection, table: Table) -> Any:
    """INSERT for `conn`'s dialect, with its ON CONFLICT clauses (PostgreSQL or SQLite)."""
    return (pg_insert if conn.dialect.name == "postgresql" else sqlite_insert)(table)


def redacted(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def check_reachable(engine: Engine, what: str) -> None:
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any driver error means the same to the operator
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DependencyUnavailable(
            f"{what} at {redacted(str(engine.url))} is unreachable: {reason}"
        ) from exc


def upgrade_columns(engine: Engine, table: Table, retired: tuple[str, ...] = ()) -> None:
    """Bring an existing table's columns in line with `table`: add the columns it lacks
    (each new column has a server default, so existing rows get a value, or is nullable,
    so existing rows hold NULL) and drop the `retired` ones still there. `create_all`
    makes missing tables but never alters one."""
    existing = {column["name"] for column in inspect(engine).get_columns(table.name)}
    with engine.begin() as conn:
        for column in table.columns:
            if column.name in existing:
                continue
            kind = column.type.compile(dialect=conn.dialect)
            if column.server_default is None:
                if not column.nullable:
                    raise ValueError(f"cannot add {table.name}.{column.name}: it has no "
                                     "default and is not nullable")
                conn.exec_driver_sql(
                    f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {kind}')
                continue
            default = column.server_default.arg  # type: ignore[attr-defined]
            conn.exec_driver_sql(
                f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {kind} '
                f"NOT NULL DEFAULT {default}")
        for name in retired:
            if name in existing:
                conn.exec_driver_sql(f'ALTER TABLE "{table.name}" DROP COLUMN "{name}"')
