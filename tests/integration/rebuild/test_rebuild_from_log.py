"""`dealreg projections rebuild` from the registry's log, on SQLite files and on PostgreSQL:
the rebuilt tables match the live ones table by table, readers see the same answers after
the switch, a damaged live table is reported and repaired, and a dry run switches nothing."""

from __future__ import annotations

import importlib.util
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter
from sqlalchemy import Engine, inspect, update

from contracts.submissions_v1 import Submission
from services.cli import main
from services.demo.scenario import scenario
from services.embedded.projection_feed import EmbeddedProjectionFeed
from services.projections.projectors.read_model_projector import ReadModelProjector
from services.projections.read_model.queries import ReadModelQueries
from services.projections.read_model.tables import (
    TotalsDimension,
    create_read_schema,
    pledge_totals,
)
from services.projections.rebuild import feeds
from services.projections.rebuild.checksums import checksums
from services.registry.adapters.event_store import DealRegistryStore, open_event_store
from services.registry.application.commands import RecordPartnerEvent
from services.registry.application.handlers import RecordingService
from services.registry.domain.deal import Deal
from services.registry.domain.recorded import Provenance
from services.registry.domain.values import AmountRange, UsdConversion
from services.shared.database import create_sql_engine
from services.shared.settings import Settings

pytestmark = pytest.mark.integration
SUBMISSIONS = TypeAdapter(Submission)
BENCH_EVENTS = 400


def _workload_fill() -> Any:
    """bench/workload.py's `fill`: a realistic mix of firms, deals, pledges, revisions."""
    path = Path(__file__).resolve().parents[3] / "bench" / "workload.py"
    spec = importlib.util.spec_from_file_location("bench_workload", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.fill


fill = _workload_fill()


def add_deal(store: DealRegistryStore, n: int) -> None:
    """One more deal with three pledges, one revised, between two firms of the fill."""
    when = Provenance(datetime(2025, 6, 1, tzinfo=UTC), "partner-b", f"extra-{n}")
    deal = Deal.propose(uuid.uuid4(), f"Extra deal {n}", "joint_venture", "recycling",
                        ["jp-firm-001", "in-firm-002"], "", when)
    for p, (firm, country) in enumerate((("jp-firm-001", "JP"), ("in-firm-002", "IN"),
                                         ("jp-firm-001", "JP"))):
        amount = AmountRange.of(Decimal(n + p + 1), Decimal(4 * (n + p + 1)), "USD")
        deal.make_pledge(f"x{p}", firm, country, amount,
                         UsdConversion.of(amount, Decimal(1), "test"), when)
    amount = AmountRange.of(Decimal("2.5"), Decimal(9), "USD")
    deal.revise_pledge("x0", amount, UsdConversion.of(amount, Decimal(1), "test"), "", when)
    store.save(deal)


class Installation:
    """A registry with a live read model fed from its log, as `dealreg up` runs it."""

    def __init__(self, settings: Settings, env: pytest.MonkeyPatch) -> None:
        self.settings = settings
        for name, value in settings.model_dump(exclude_none=True).items():
            env.setenv(f"DEALREG_{name.upper()}", str(value))
        self.store: DealRegistryStore = open_event_store(settings)
        self.live = create_sql_engine(settings.read_model_url())
        create_read_schema(self.live)
        self.feed = EmbeddedProjectionFeed(self.store, ReadModelProjector(self.live))
        self.queries = ReadModelQueries(self.live)

    def record_scenario(self) -> None:
        service = RecordingService(self.store)
        for body in scenario():
            service.record(RecordPartnerEvent("partner-a", SUBMISSIONS.validate_python(body)))

    def fill(self, events: int) -> None:
        fill(self.store, events)

    def add_deal(self, n: int) -> None:
        add_deal(self.store, n)

    def answers(self) -> dict[str, Any]:
        """Everything readers can ask, including the position the read model reflects."""
        deals = self.queries.deals(limit=1000)
        return {
            "position": self.queries.position(),
            "sector": self.queries.pledge_totals(TotalsDimension.SECTOR),
            "firm": self.queries.pledge_totals(TotalsDimension.FIRM),
            "country": self.queries.pledge_totals(TotalsDimension.COUNTRY),
            "deals": deals,
            "deal": [self.queries.deal(uuid.UUID(d["deal_id"])) for d in deals.items],
            "events": [self.queries.deal_events(uuid.UUID(d["deal_id"]), limit=100)
                       for d in deals.items],
            "firms": self.queries.firms(limit=1000),
            "meetings": self.queries.meetings(limit=1000),
        }

    def live_checksums(self) -> dict[str, str]:
        with self.live.connect() as conn:
            return checksums(conn)

    def close(self) -> None:
        self.store.close()
        self.live.dispose()


def installed(request: pytest.FixtureRequest, tmp_path: Path,
              monkeypatch: pytest.MonkeyPatch, events: int) -> Iterator[Installation]:
    """An installation on the backend the fixture's param names, with the scenario and
    `events` more recorded and projected; closed afterwards."""
    if request.param == "postgres":
        settings = Settings(data_dir=tmp_path,
                            database_url=request.getfixturevalue("postgres_url"))
    else:
        settings = Settings(data_dir=tmp_path)
    running = Installation(settings, monkeypatch)
    running.record_scenario()
    running.fill(events)
    running.feed.catch_up()
    yield running
    running.close()


@pytest.fixture(params=["sqlite", "postgres"])
def installation(request: pytest.FixtureRequest, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> Iterator[Installation]:
    yield from installed(request, tmp_path, monkeypatch, BENCH_EVENTS)


def checksum_lines(output: str) -> dict[str, tuple[str, str, str]]:
    lines = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0].startswith("rm_"):
            lines[parts[0]] = (parts[1], parts[2], parts[3])
    return lines


def test_rebuild_matches_the_live_model_and_readers_see_the_same_answers(
    installation: Installation, capsys: pytest.CaptureFixture[str]
) -> None:
    before = installation.answers()
    sums_before = installation.live_checksums()

    assert main(["projections", "rebuild"]) == 0

    out = capsys.readouterr().out
    printed = checksum_lines(out)
    assert set(printed) == set(sums_before)
    assert all(live == rebuilt == sums_before[name] and verdict == "equal"
               for name, (live, rebuilt, verdict) in printed.items())
    assert "switched to the rebuilt tables" in out
    assert f"to position {before['position']} " in out
    assert installation.answers() == before
    assert installation.live_checksums() == sums_before


def test_a_rebuild_in_many_small_batches_ends_equal_to_the_live_model(
    installation: Installation, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The rebuild gathers pages into large batches; where their bounds fall must not matter
    # (a deal's events split across batches, its ledger days read back from its history).
    monkeypatch.setattr(feeds, "REBUILD_BATCH_ENTRIES", 70)
    sums_before = installation.live_checksums()

    assert main(["projections", "rebuild", "--page-size", "30"]) == 0

    printed = checksum_lines(capsys.readouterr().out)
    assert all(verdict == "equal" for _, _, verdict in printed.values())
    assert installation.live_checksums() == sums_before


def test_a_damaged_live_table_is_reported_and_repaired(
    installation: Installation, capsys: pytest.CaptureFixture[str]
) -> None:
    healthy = installation.answers()
    with installation.live.begin() as conn:
        conn.execute(update(pledge_totals).where(pledge_totals.c.dimension == "sector")
                     .values(usd_low="1.00"))
    assert installation.answers() != healthy

    assert main(["projections", "rebuild"]) == 1

    captured = capsys.readouterr()
    assert "MISMATCH in rm_pledge_totals;" in captured.err
    assert "switched to the rebuilt tables" in captured.err
    assert checksum_lines(captured.out)["rm_pledge_totals"][2] == "DIFFERENT"
    assert checksum_lines(captured.out)["rm_pledges"][2] == "equal"
    assert installation.answers() == healthy


def test_a_dry_run_compares_without_touching_the_live_tables(
    installation: Installation, capsys: pytest.CaptureFixture[str]
) -> None:
    with installation.live.begin() as conn:
        conn.execute(update(pledge_totals).values(pledge_count=0))
    damaged = installation.answers()
    sums = installation.live_checksums()

    assert main(["projections", "rebuild", "--dry-run"]) == 1

    captured = capsys.readouterr()
    assert "MISMATCH in rm_pledge_totals; dry run: nothing switched" in captured.err
    assert installation.answers() == damaged
    assert installation.live_checksums() == sums
    assert_no_rebuild_left(installation.live, installation.settings)


def assert_no_rebuild_left(live: Engine, settings: Settings) -> None:
    if live.dialect.name == "postgresql":
        assert not {"dealreg_rebuild", "dealreg_retired"} & set(inspect(live).get_schema_names())
    else:
        assert not list(settings.data_dir.glob("read.rebuild*"))


def test_writes_and_a_live_feed_during_the_rebuild_end_equal(
    installation: Installation, capsys: pytest.CaptureFixture[str]
) -> None:
    stop = threading.Event()
    failures: list[BaseException] = []

    def write_and_follow() -> None:
        n = 0
        try:
            while not stop.is_set():
                installation.add_deal(n)
                if n % 3 == 0:
                    installation.feed.catch_up()
                n += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            failures.append(exc)

    worker = threading.Thread(target=write_and_follow, daemon=True)
    worker.start()
    try:
        code = main(["projections", "rebuild"])
    finally:
        stop.set()
        worker.join(timeout=60)
    assert not failures, failures
    captured = capsys.readouterr()
    assert code == 0, captured.err
    printed = checksum_lines(captured.out)
    assert all(verdict == "equal" for _, _, verdict in printed.values())
    assert_no_rebuild_left(installation.live, installation.settings)

    # The live feed goes on from where the switched-in tables stand, and a second rebuild
    # agrees with everything it applied afterwards.
    for n in range(1000, 1005):
        installation.add_deal(n)
    installation.feed.catch_up()
    assert installation.queries.position() == installation.store.head_position()
    sums = installation.live_checksums()
    assert main(["projections", "rebuild", "--dry-run"]) == 0
    assert installation.live_checksums() == sums
