"""Table checksums depend on the rows only: not on insertion order, the backend's
representation of times and decimals, or the order of JSON keys."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from uuid import UUID

from sqlalchemy import create_engine, insert

from services.projections.read_model.tables import create_read_schema, pledge_totals
from services.projections.rebuild.checksums import (
    REBUILT_TABLES,
    canonical,
    checksums,
    table_checksum,
)
from services.projections.rebuild.progress_bar import RebuildProgress

TOTALS = [
    {"dimension": "sector", "group_key": "recycling", "currency": "USD", "pledge_count": 2,
     "low": Decimal("1.50"), "high": Decimal(6), "usd_low": Decimal("1.50"),
     "usd_high": Decimal(6)},
    {"dimension": "firm", "group_key": "lohum", "currency": "INR", "pledge_count": 1,
     "low": Decimal(860), "high": Decimal(3500), "usd_low": Decimal(10),
     "usd_high": Decimal("40.6976")},
]


def _totals_checksum(path: Path, rows: list[dict[str, object]]) -> str:
    engine = create_engine(f"sqlite:///{path}")
    create_read_schema(engine)
    with engine.begin() as conn:
        conn.execute(insert(pledge_totals), rows)
        found = table_checksum(conn, pledge_totals)
    engine.dispose()
    return found


def test_insertion_order_does_not_matter_but_every_value_does(tmp_path: Path) -> None:
    forward = _totals_checksum(tmp_path / "a.db", TOTALS)
    backward = _totals_checksum(tmp_path / "b.db", TOTALS[::-1])
    changed = _totals_checksum(tmp_path / "c.db", [TOTALS[0], {**TOTALS[1], "pledge_count": 2}])
    assert forward == backward
    assert changed != forward


def test_values_are_canonical_across_representations() -> None:
    ist = timezone(timedelta(hours=5, minutes=30))
    assert canonical(datetime(2025, 7, 1, 15, 30, tzinfo=ist)) == \
        canonical(datetime(2025, 7, 1, 10, 0)) == "2025-07-01T10:00:00+00:00"
    assert canonical(datetime(2025, 7, 1, 10, 0, tzinfo=UTC)) == "2025-07-01T10:00:00+00:00"
    assert canonical(Decimal("1.50")) == "1.50"  # exact text: 1.50 and 1.5 are stored apart
    assert canonical(UUID(int=1)) == "00000000-0000-0000-0000-000000000001"
    assert canonical({"b": [Decimal(1)], "a": None}) == {"b": ["1"], "a": None}


def test_every_table_but_the_lock_is_checksummed(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'read.db'}")
    create_read_schema(engine)
    with engine.connect() as conn:
        sums = checksums(conn)
    engine.dispose()
    assert set(sums) == {table.name for table in REBUILT_TABLES}
    assert "rm_projector_lock" not in sums and "rm_pledges" in sums


def test_progress_off_a_terminal_is_a_line_every_interval() -> None:
    stream = io.StringIO()
    progress = RebuildProgress(stream, line_interval=0.0)
    progress.set_total(1000)
    progress.advance(250)
    progress.close()
    line = stream.getvalue().splitlines()[-1]
    assert line.startswith("rebuild: 250/1,000 events (25%), ")
    assert "events/s" in line and "s remaining" in line
    quiet = io.StringIO()
    slow = RebuildProgress(quiet, line_interval=3600)
    slow.set_total(10)
    slow.advance(5)
    assert quiet.getvalue() == ""


def test_projections_without_a_subcommand_still_runs_the_service() -> None:
    from services.cli import build_parser, cmd_projections, cmd_projections_rebuild

    parser = build_parser()
    assert parser.parse_args(["projections", "--port", "9000"]).run is cmd_projections
    rebuild = parser.parse_args(["projections", "rebuild", "--dry-run", "--source", "log"])
    assert rebuild.run is cmd_projections_rebuild and rebuild.dry_run
