"""Rebuild every read model from the beginning into fresh tables, compare, switch.

1. Fresh, empty tables are made beside the live ones.
2. The feed applies everything the live read model has applied, without holding it up,
   until what is left is small.
3. At one moment of the live side (a snapshot; its projector goes on), the fresh tables
   are caught up to what it had applied, its stamps (what it read of the topic) are carried
   over, and every table's checksum is taken on both sides.
4. Unless this is a dry run: with the live projector held off, what it applied since that
   moment is applied too, and the fresh tables become the live ones, in one transaction.

On a mismatch the switch still happens: the log is the truth, and a live table that differs
from a replay of it is the thing to repair. The report names the differing tables, and the
command exits 1 so that the difference is not missed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine, select, update

from services.projections.projectors.read_model_projector import ReadModelProjector
from services.projections.read_model.tables import (
    READ_MODEL_PROJECTOR,
    create_read_schema,
    source_progress,
)
from services.projections.rebuild.checksums import checksums
from services.projections.rebuild.feeds import Feed, live_target
from services.projections.rebuild.fresh_tables import fresh_tables_for
from services.projections.rebuild.progress_bar import RebuildProgress

# Unheld passes stop once the live side is at most this many entries ahead: the rest is
# applied while the live projector waits, so that wait stays short.
HELD_CATCH_UP_LIMIT = 5000
MAX_UNHELD_PASSES = 10


@dataclass(frozen=True)
class TableComparison:
    table: str
    live: str
    rebuilt: str

    @property
    def equal(self) -> bool:
        return self.live == self.rebuilt


@dataclass
class RebuildReport:
    source: str
    events: int = 0  # envelopes applied to the fresh tables
    entries: int = 0  # log entries or topic records read
    position: int = 0  # the log position the rebuilt tables reflect
    applying_seconds: float = 0.0
    held_seconds: float = 0.0  # how long the live projector waited for the switch
    total_seconds: float = 0.0
    switched: bool = False
    tables: list[TableComparison] = field(default_factory=list)

    @property
    def mismatched(self) -> list[str]:
        return [t.table for t in self.tables if not t.equal]

    @property
    def events_per_second(self) -> float:
        return self.events / self.applying_seconds if self.applying_seconds else 0.0


def _inherit_stamps(live: Connection, fresh: Engine) -> None:
    """Copy the live side's stamps (`contracts.stream_v1`): they record what the live
    consumer saw of the topic's records, and decide what it expects next after the switch."""
    stamps = live.execute(
        select(source_progress.c.source, source_progress.c.partition, source_progress.c.epoch,
               source_progress.c.seq)
        .where(source_progress.c.projector == READ_MODEL_PROJECTOR)
    ).all()
    with fresh.begin() as conn:
        for row in stamps:
            conn.execute(update(source_progress).where(
                source_progress.c.projector == READ_MODEL_PROJECTOR,
                source_progress.c.source == row.source,
                source_progress.c.partition == row.partition,
            ).values(epoch=row.epoch, seq=row.seq))


def rebuild_read_model(live: Engine, feed: Feed, progress: RebuildProgress,
                       dry_run: bool = False) -> RebuildReport:
    """Rebuild the read model on `live` from `feed`; switch to it unless `dry_run`."""
    started = time.perf_counter()
    report = RebuildReport(source=feed.source)
    create_read_schema(live)
    fresh = fresh_tables_for(live)
    try:
        fresh.create()
        projector = ReadModelProjector(fresh.engine)
        for _ in range(MAX_UNHELD_PASSES):
            with live.connect() as conn:
                target = live_target(conn, feed)
            progress.set_total(feed.size(target))
            feed.apply_until(projector, target, progress)
            with live.connect() as conn:
                ahead = feed.size(live_target(conn, feed)) - feed.size(target)
            if ahead <= HELD_CATCH_UP_LIMIT:
                break
        # Compared at one moment of the live side, while its projector goes on: taking
        # checksums of every row is too long to hold it off for.
        with fresh.live_snapshot() as snapshot:
            target = live_target(snapshot, feed)
            progress.set_total(feed.size(target))
            feed.apply_until(projector, target, progress)
            report.applying_seconds = time.perf_counter() - started
            _inherit_stamps(snapshot, fresh.engine)
            live_sums = checksums(snapshot)
            with fresh.engine.connect() as conn:
                rebuilt_sums = checksums(conn)
            report.tables = [TableComparison(name, live_sums[name], rebuilt_sums[name])
                             for name in live_sums]
            report.position = projector.position()
        if not dry_run:
            with fresh.holding_live() as held:
                holding = time.perf_counter()
                # What the live side applied since that moment, then the switch.
                target = live_target(held, feed)
                progress.set_total(feed.size(target))
                feed.apply_until(projector, target, progress)
                _inherit_stamps(held, fresh.engine)
                fresh.switch(held)
                report.switched = True
            report.held_seconds = time.perf_counter() - holding
    finally:
        progress.close()
        fresh.discard()
    report.events = feed.applied
    report.entries = progress.done
    report.total_seconds = time.perf_counter() - started
    return report
