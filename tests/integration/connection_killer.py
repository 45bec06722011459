"""Kills PostgreSQL connections for real in the middle of a transaction, to see code that uses
them recover from a lost database connection."""

from __future__ import annotations

import threading
import time
from typing import Any

from sqlalchemy import Engine, event

from tests.integration.log_wakeups import terminate_backend


class ConnectionKiller:
    """Terminates the backend of each connection of `engine` that is about to run a statement
    containing `marker` (pg_terminate_backend, from another connection): the first `times`
    such statements, or every one until `end()` (an outage)."""

    def __init__(self, engine: Engine, database_url: str, marker: str,
                 times: int | None = None) -> None:
        self.engine, self.database_url, self.marker = engine, database_url, marker
        self.times = times
        self.kills = 0
        self._ended = threading.Event()
        event.listen(engine, "before_cursor_execute", self._before)

    def _before(self, conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if self._ended.is_set() or self.marker not in statement:
            return
        self.kills += 1
        if self.times is not None and self.kills >= self.times:
            self._ended.set()
        terminate_backend(self.database_url, conn.connection.dbapi_connection.info.backend_pid)

    def wait_for_kills(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.kills < count:
            assert time.monotonic() < deadline, f"only {self.kills} kills within {timeout}s"
            time.sleep(0.02)

    def end(self) -> None:
        """The database is back: statements run again."""
        self._ended.set()

    def remove(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._before)
