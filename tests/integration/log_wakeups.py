"""What the wake-up tests share: a writer that is not the follower's process, and a look at
the listener's backend in PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Callable
from collections.abc import Set as AbstractSet

import psycopg
from pydantic import TypeAdapter

from contracts.submissions_v1 import Submission
from services.registry.adapters.event_store import open_event_store
from services.registry.application.commands import RecordPartnerEvent
from services.registry.application.handlers import RecordingService
from services.shared.settings import Settings

SUBMISSIONS = TypeAdapter(Submission)
T = "2025-07-01T10:00:00+05:30"
# The follower's safety-net poll in these tests: far longer than any wake-up may take.
SLOW_POLL_SECONDS = 30.0
PROMPT_SECONDS = 2.0


class IndependentWriter:
    """A second event store and recording service on the same database, as another
    `dealreg registry` process would have: nothing it does can set the follower's events."""

    def __init__(self, settings: Settings) -> None:
        self.store = open_event_store(settings)
        self.service = RecordingService(self.store)
        self.count = 0

    def register_firm(self) -> int:
        self.count += 1
        body = {"event_id": f"wake-{self.count}", "type": "firm_registered", "occurred_at": T,
                "payload": {"code": f"wake-{self.count}", "name": "Wake", "country": "JP",
                            "kind": "manufacturer"}}
        receipt = self.service.record(RecordPartnerEvent("partner-b",
                                                         SUBMISSIONS.validate_python(body)))
        return receipt.position

    def close(self) -> None:
        self.service.committer.close()
        self.store.close()


def seconds_until(check: Callable[[], bool], timeout: float) -> float:
    """How long `check` took to become true; fails after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(0.01)
    raise AssertionError(f"not within {timeout} s")


def listener_pids(database_url: str) -> set[int]:
    """Backends of this database whose last statement was a LISTEN."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND query LIKE 'LISTEN %%' AND pid <> pg_backend_pid()").fetchall()
    return {int(row[0]) for row in rows}


def wait_for_listener(database_url: str, other_than: AbstractSet[int] = frozenset()) -> int:
    """The pid of a listening backend, once there is one not in `other_than`."""
    pids: set[int] = set()

    def found() -> bool:
        pids.update(listener_pids(database_url) - other_than)
        return bool(pids)

    seconds_until(found, 15.0)
    return min(pids)


def terminate_backend(database_url: str, pid: int) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
