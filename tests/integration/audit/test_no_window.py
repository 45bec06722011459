"""No window: once the follower has covered the last write (observed, never slept for), any
edit, deletion or truncation of the log's tail fails verification at its position, on SQLite
and on PostgreSQL. Before signed heads were continuous, the tail stayed uncovered for up to
DEALREG_CHECKPOINT_INTERVAL_SECONDS, and exactly these edits passed."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from services.registry.audit.logged_events import LoggedEvent
from services.registry.audit.tree_head_follower import TreeHeadFollower
from services.shared.settings import Settings
from tests.integration.audit.test_tamper_evidence import Audited
from tests.unit.registry.support import DEAL_ID, firm_body, pledge_body, record

pytestmark = pytest.mark.integration


def covered(follower: TreeHeadFollower, head: int) -> None:
    """Wait until the signed tree head covers position `head` (observable state)."""
    deadline = time.monotonic() + 30
    while follower.status()["covered_position"] < head:
        assert time.monotonic() < deadline, follower.status()
        time.sleep(0.01)


class NoWindowContract:
    @pytest.fixture
    def settings(self) -> Settings:
        raise NotImplementedError

    @pytest.fixture
    def followed(self, settings: Settings) -> Iterator[tuple[Audited, TreeHeadFollower]]:
        audited = Audited(settings)
        follower = TreeHeadFollower(audited.store, audited.checkpoints, audited.signer,
                                    poll_seconds=0.05)
        follower.start()
        try:
            audited.populate(pledges=2)
            # The newest events: a pledge (its deal's newest version), then a firm, whose
            # only event is also the newest of its aggregate.
            record(audited.service, pledge_body("tail-pledge", "pl-tail"))
            record(audited.service, firm_body("lohum", "IN", "recycler"))
            follower.wake()
            covered(follower, audited.store.head_position())
            yield audited, follower
        finally:
            follower.stop()
            audited.close()

    def test_the_covered_log_verifies_clean(
            self, followed: tuple[Audited, TreeHeadFollower]) -> None:
        audited, follower = followed
        report = audited.verify()
        assert report.ok, report.failures
        assert report.covered_position == audited.store.head_position()
        assert follower.status()["uncovered_seconds"] == 0

    @pytest.mark.parametrize("tamper", ["edit newest", "edit newest of a chain", "delete newest",
                                        "truncate tail"])
    def test_tampering_with_the_tail_fails_at_its_position(
            self, followed: tuple[Audited, TreeHeadFollower], tamper: str) -> None:
        audited, _ = followed
        events = audited.events()
        actions: dict[str, Callable[[], int]] = {
            "edit newest": lambda: _flip(audited, events[-1].position),
            "edit newest of a chain": lambda: _flip(audited, _newest_deal_event(events)),
            "delete newest": lambda: _delete(audited, [events[-1].position]),
            "truncate tail": lambda: _delete(audited, [e.position for e in events[-3:]]),
        }
        position = actions[tamper]()
        report = audited.verify()
        first = report.first_failure
        assert first is not None, f"{tamper} passed verification"
        assert (first.position, first.kind) == (position, "checkpoint_mismatch")


def _newest_deal_event(events: list[LoggedEvent]) -> int:
    deal = [e for e in events if e.aggregate_id == str(DEAL_ID)]
    assert deal[-1].version > 1
    return deal[-1].position


def _flip(audited: Audited, position: int) -> int:
    audited.flip_a_payload_byte(position)
    return position


def _delete(audited: Audited, positions: list[int]) -> int:
    for position in positions:
        audited.delete(position)
    return positions[0]


class TestOnSQLite(NoWindowContract):
    @pytest.fixture
    def settings(self, tmp_path: Path) -> Settings:
        return Settings(data_dir=tmp_path / "data", database_url=None)


class TestOnPostgreSQL(NoWindowContract):
    @pytest.fixture
    def settings(self, postgres_url: str, tmp_path: Path) -> Settings:
        return Settings(data_dir=tmp_path / "data", database_url=postgres_url)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_followers_of_two_replicas_and_an_auditor_extend_one_tree(
        backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Each follower remembers the checkpoint it wrote last and extends from it without
    reading; when another replica's follower or an auditor's on-demand head has moved on,
    its write finds out and starts again from the newest. The tree stays one tree."""
    url = request.getfixturevalue("postgres_url") if backend == "postgres" else None
    first = Audited(Settings(data_dir=tmp_path, database_url=url))
    second = Audited(Settings(data_dir=tmp_path, database_url=url))
    followers = [TreeHeadFollower(a.store, a.checkpoints, a.signer) for a in (first, second)]
    try:
        first.populate(pledges=1)
        for n in range(6):
            record(first.service, pledge_body(f"more-{n}", f"pl-more-{n}"))
            follower = followers[n % 2]
            follower.extend_once()  # the other's last write is newer than what it knows
            assert follower.known_head == (first.store.count_events(0, 10**9),
                                           first.store.head_position())
            if n == 3:
                first.checkpoint()  # an auditor's head: a row of its own
        report = first.verify()
        assert report.ok, report
        heads = first.checkpoints.latest()
        assert heads is not None and heads.last_position == first.store.head_position()
    finally:
        first.close()
        second.close()
