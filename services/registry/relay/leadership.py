"""Only one relay publishes at a time; the others wait as standbys.

On PostgreSQL the leader holds a session advisory lock: if its process or connection dies
the lock goes with it and a standby takes over. On SQLite (one machine) an exclusive lock on
a file in the data folder does the same.
"""

from __future__ import annotations

import fcntl
import hashlib
import threading
from pathlib import Path
from typing import IO, Protocol

import psycopg


class Leadership(Protocol):
    def try_acquire(self) -> bool:
        """Become leader if nobody is; True when this process now leads."""

    def still_held(self) -> bool:
        """False once leadership was lost (its connection died)."""

    def release(self) -> None: ...


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory lock key for a name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class PostgresLeadership:
    def __init__(self, conninfo: str, name: str) -> None:
        self.conninfo = conninfo
        self.key = lock_key(name)
        self._conn: psycopg.Connection | None = None

    def try_acquire(self) -> bool:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5)
        row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
        return bool(row and row[0])

    def still_held(self) -> bool:
        if self._conn is None or self._conn.closed:
            return False
        try:
            row = self._conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND pid = pg_backend_pid() AND objid = (%s::bigint & 4294967295)::oid",
                (self.key,),
            ).fetchone()
        except psycopg.Error:
            return False
        return bool(row and row[0])

    def release(self) -> None:
        if self._conn is not None and not self._conn.closed:
            self._conn.close()  # closing the session releases its advisory locks
        self._conn = None


class FileLeadership:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None
        self._lock = threading.Lock()

    def try_acquire(self) -> bool:
        with self._lock:
            if self._file is not None:
                return True
            handle = self.path.open("a")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                return False
            self._file = handle
            return True

    def still_held(self) -> bool:
        return self._file is not None

    def release(self) -> None:
        with self._lock:
            if self._file is not None:
                fcntl.flock(self._file, fcntl.LOCK_UN)
                self._file.close()
                self._file = None
