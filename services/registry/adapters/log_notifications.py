"""Wake-ups when any process appends to the registry's log (PostgreSQL LISTEN/NOTIFY).

The eventsourcing library's PostgreSQL recorder sends `NOTIFY <events table>` in every
transaction that inserts events, so PostgreSQL delivers one notification per committed
write, whichever process or machine made it. A follower of the log (the relay, the embedded
projection feed) listens on that channel and catches up at once instead of polling; its slow
poll stays as the safety net for a notification lost while the listener was reconnecting.
SQLite has no such channel: there the writing process wakes its followers itself.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import psycopg
from eventsourcing.postgres import PostgresApplicationRecorder
from psycopg import sql

from services.registry.adapters.event_store import DealRegistryStore

log = logging.getLogger("dealreg.log_notifications")

# How often the listening thread looks at its stop flag while no notification arrives.
STOP_CHECK_SECONDS = 0.25
FIRST_RETRY_SECONDS = 0.1
MAX_RETRY_SECONDS = 5.0
# Give up on an unanswering server after 5 s, and notice a dead one (no FIN, e.g. a cut
# network) within about half a minute, so the listener retries instead of hanging.
CONNECTION_OPTIONS: dict[str, Any] = {"connect_timeout": 5, "keepalives": 1,
                                      "keepalives_idle": 10, "keepalives_interval": 5,
                                      "keepalives_count": 3}


class LogNotifications:
    """Calls `on_append()` whenever a write to the log commits, from a thread of its own.

    It holds one autocommit connection that LISTENs on the log's channel. If the connection
    breaks (PostgreSQL restarted, backend terminated), it reconnects with a growing backoff
    and calls `on_append()` each time it starts listening, since writes committed before
    that notified nobody.
    """

    def __init__(
        self,
        connection_kwargs: dict[str, Any],
        channel: str,
        on_append: Callable[[], None],
        max_retry_seconds: float = MAX_RETRY_SECONDS,
    ) -> None:
        self.connection_kwargs = connection_kwargs
        self.channel = channel
        self.on_append = on_append
        self.max_retry_seconds = max_retry_seconds
        # How many times it has started listening: 1, plus one per reconnection.
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="log-notifications",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=STOP_CHECK_SECONDS * 4 + 5)

    def _run(self) -> None:
        retry = FIRST_RETRY_SECONDS
        while not self._stop.is_set():
            try:
                with psycopg.connect(autocommit=True,
                                     **{**CONNECTION_OPTIONS, **self.connection_kwargs}) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                    self.connections += 1
                    retry = FIRST_RETRY_SECONDS
                    # Writes committed before LISTEN took effect notified nobody.
                    self.on_append()
                    while not self._stop.is_set():
                        if any(True for _ in conn.notifies(timeout=STOP_CHECK_SECONDS,
                                                           stop_after=1)):
                            self.on_append()
            except psycopg.Error as exc:
                log.warning("listening for log appends failed, retrying in %.1fs: %s",
                            retry, exc)
                self._stop.wait(retry)
                retry = min(retry * 2, self.max_retry_seconds)


def listen_for_appends(
    store: DealRegistryStore, on_append: Callable[[], None]
) -> LogNotifications | None:
    """A started listener for the store's log, or None where the store cannot notify
    (SQLite)."""
    recorder = store.recorder
    if not isinstance(recorder, PostgresApplicationRecorder):
        return None
    # The same server, database and role as the store's own connections.
    pool_kwargs = recorder.datastore.pool.kwargs
    pool_kwargs = pool_kwargs() if callable(pool_kwargs) else pool_kwargs or {}
    kwargs = {k: v for k, v in pool_kwargs.items() if k != "row_factory"}
    listener = LogNotifications(kwargs, recorder.channel_name, on_append)
    listener.start()
    return listener
