"""Where a rebuild writes, and how the live read model is held still and switched over.

PostgreSQL: the fresh tables are the read model's own Table objects in a schema of their
own (`schema_translate_map`), moved in by `ALTER TABLE ... SET SCHEMA` in the transaction
that moves the live ones out. DDL is transactional there, so a reader sees the old tables or
the new ones, never a mix.

SQLite: the fresh tables are in a file beside the live one; at the switch that file is
attached to the live database's connection and, in the one write transaction that holds the
live projector off, each live table's rows are replaced by the rebuilt ones. A live table of
another shape than the rebuilt one (another version's: its columns or indexes differ) is
dropped and made again from the rebuilt one's schema, with its indexes, in that same
transaction (SQLite's DDL is transactional). Readers in WAL mode keep the snapshot they
started with until that transaction commits: they see the old model or the new one.

While held, the live projector cannot apply a batch of any partition: the hold takes the
projector's lock that each batch takes first (`read_model_projector.hold_projector`): on
PostgreSQL its advisory lock, exclusively, which waits for the batches under way and keeps
new ones waiting; on SQLite the database's write lock.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, event

from services.projections.projectors.read_model_projector import hold_projector
from services.projections.read_model.tables import READ_MODEL_PROJECTOR, create_read_schema
from services.projections.rebuild.checksums import REBUILT_TABLES
from services.shared.database import create_sql_engine

REBUILD_SCHEMA = "dealreg_rebuild"
RETIRED_SCHEMA = "dealreg_retired"


class FreshTables(ABC):
    """Empty read-model tables beside the live ones; `engine` writes to them."""

    engine: Engine

    def __init__(self, live: Engine) -> None:
        self.live = live

    @abstractmethod
    def create(self) -> None:
        """Make the fresh tables, empty, replacing any left by an interrupted rebuild."""

    @abstractmethod
    def live_snapshot(self) -> AbstractContextManager[Connection]:
        """A read-only transaction on the live database that sees one moment of it while
        the live projector goes on (PostgreSQL REPEATABLE READ; SQLite WAL read)."""

    @abstractmethod
    def holding_live(self) -> AbstractContextManager[Connection]:
        """A transaction on the live database in which no live batch can be applied;
        it commits when the block ends normally."""

    @abstractmethod
    def switch(self, live: Connection) -> None:
        """Within `holding_live`: make the fresh tables the live ones."""

    @abstractmethod
    def discard(self) -> None:
        """Remove what is left of the fresh tables and of the retired live ones."""


def fresh_tables_for(live: Engine) -> FreshTables:
    if live.dialect.name == "postgresql":
        return PostgresFreshTables(live)
    if live.dialect.name == "sqlite":
        return SqliteFreshTables(live)
    raise ValueError(f"cannot rebuild a read model on {live.dialect.name}")


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class PostgresFreshTables(FreshTables):
    def create(self) -> None:
        with self.live.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {REBUILD_SCHEMA} CASCADE")
            conn.exec_driver_sql(f"CREATE SCHEMA {REBUILD_SCHEMA}")
        self.engine = self.live.execution_options(schema_translate_map={None: REBUILD_SCHEMA})
        create_read_schema(self.engine)

    @contextmanager
    def live_snapshot(self) -> Iterator[Connection]:
        with self.live.connect() as conn:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn

    @contextmanager
    def holding_live(self) -> Iterator[Connection]:
        with self.live.begin() as conn:
            hold_projector(conn, READ_MODEL_PROJECTOR)
            yield conn

    def switch(self, live: Connection) -> None:
        schema = _quoted(str(live.exec_driver_sql("SELECT current_schema()").scalar_one()))
        live.exec_driver_sql(f"DROP SCHEMA IF EXISTS {RETIRED_SCHEMA} CASCADE")
        live.exec_driver_sql(f"CREATE SCHEMA {RETIRED_SCHEMA}")
        for table in REBUILT_TABLES:
            name = _quoted(table.name)
            live.exec_driver_sql(f"ALTER TABLE {schema}.{name} SET SCHEMA {RETIRED_SCHEMA}")
            live.exec_driver_sql(f"ALTER TABLE {REBUILD_SCHEMA}.{name} SET SCHEMA {schema}")

    def discard(self) -> None:
        # After the switch's commit: readers still on the retired tables finish first.
        with self.live.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {RETIRED_SCHEMA} CASCADE")
            conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {REBUILD_SCHEMA} CASCADE")


class SqliteFreshTables(FreshTables):
    def __init__(self, live: Engine) -> None:
        super().__init__(live)
        database = live.url.database
        if not database or database == ":memory:":
            raise ValueError("a rebuild on SQLite needs the read model in a file")
        live_path = Path(database)
        self.path = live_path.with_name(f"{live_path.stem}.rebuild{live_path.suffix}")

    def _remove_files(self) -> None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def create(self) -> None:
        self._remove_files()
        self.engine = create_sql_engine(f"sqlite:///{self.path}")

        @event.listens_for(self.engine, "connect")
        def _no_sync(dbapi_connection: Any, _: Any) -> None:
            # A rebuild that stops for any reason starts again from an empty file, so its
            # commits need not survive a power cut; the switch's writes go to the live file,
            # under the live file's settings.
            dbapi_connection.execute("PRAGMA synchronous=OFF")

        create_read_schema(self.engine)

    @contextmanager
    def live_snapshot(self) -> Iterator[Connection]:
        with self.live.connect() as conn:
            # pysqlite would start no transaction before a write: this one holds the WAL
            # snapshot its first read takes, across every read of the block.
            conn.exec_driver_sql("BEGIN")
            try:
                yield conn
            finally:
                conn.rollback()

    @contextmanager
    def holding_live(self) -> Iterator[Connection]:
        with self.live.connect() as conn:
            # ATTACH is refused inside a transaction, so it comes before the lock.
            conn.exec_driver_sql(f"ATTACH DATABASE ? AS {REBUILD_SCHEMA}", (str(self.path),))
            try:
                # A write to the live file takes its write lock (and only that file's: the
                # rebuild keeps writing the attached one from its own connection).
                hold_projector(conn, READ_MODEL_PROJECTOR)
                yield conn
                conn.commit()
            finally:
                conn.rollback()
                conn.exec_driver_sql(f"DETACH DATABASE {REBUILD_SCHEMA}")

    def switch(self, live: Connection) -> None:
        for table in REBUILT_TABLES:
            name = _quoted(table.name)
            columns = ", ".join(_quoted(column.name) for column in table.columns)
            rebuilt = _schema_of(live, REBUILD_SCHEMA, table.name)
            if _schema_of(live, "main", table.name) != rebuilt:
                # Rows cannot be put into a table of another shape: the table is made
                # again as the rebuilt one is (dropping it drops its indexes too).
                live.exec_driver_sql(f"DROP TABLE IF EXISTS main.{name}")
                for statement in rebuilt:
                    # Unqualified, so made in main (an index goes with its table's schema).
                    live.exec_driver_sql(statement)
            else:
                live.exec_driver_sql(f"DELETE FROM main.{name}")
            live.exec_driver_sql(f"INSERT INTO main.{name} ({columns}) "
                                 f"SELECT {columns} FROM {REBUILD_SCHEMA}.{name}")

    def discard(self) -> None:
        if getattr(self, "engine", None) is not None:
            self.engine.dispose()
        self._remove_files()


def _schema_of(conn: Connection, schema: str, table: str) -> list[str]:
    """The statements that make `table` in `schema` of a SQLite connection: its CREATE
    TABLE, then the CREATE INDEX of each of its indexes by name (those of a primary key or a
    unique constraint are the table's own, with no statement); none if there is no table."""
    rows = conn.exec_driver_sql(
        f"SELECT type, sql FROM {schema}.sqlite_master WHERE tbl_name = ? AND sql IS NOT NULL "
        "ORDER BY type = 'index', name", (table,)).all()
    return [sql for kind, sql in rows if kind in ("table", "index")]
