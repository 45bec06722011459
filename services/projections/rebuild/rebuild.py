"""Rebuild every read model from the beginning into fresh tables, compare, switch.

1. Fresh, empty tables are made beside the live ones.
2. The feed applies everything the live read model has applied, without holding it up,
   until what is left is small.
3. At one moment of the live side (a snapshot; its projector goes on), the fresh tables
   are caught up to what it had applied, its stamps (what it read of the topic) are carried
   over, and every table's checksum is taken on both sides.
4. Unless this is a dry run: with the live projector held off, what it applied since that
   moment is applied too, and the fresh tables become the live ones, in one transaction,
   which also records their version (`READ_MODEL_VERSION`) as the live read model's.

On a mismatch the switch still happens: the log is the truth, and a live table that differs
from a replay of it is the thing to repair. The report names the differing tables, and the
command exits 1 so that the difference is not missed.

The fresh tables are always of the code's version; the live ones may be of an older one
(`rm_read_model_version`). A live table whose columns are not the code's has no checksum to
compare (its rows have another shape): it is reported as changed shape, not as a mismatch,
and switched like the others. A live read model of a newer version is not rebuilt unless
asked for knowingly (`downgrade`): a version is never gone back to silently.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine, inspect, select, text, update

from services.projections.projectors.read_model_projector import (
    ReadModelProjector,
    advisory_key,
)
from services.projections.read_model.tables import (
    READ_MODEL_PROJECTOR,
    READ_MODEL_VERSION,
    create_read_schema,
    record_read_model_version,
    source_progress,
    stored_read_model_version,
)
from services.projections.rebuild.checksums import REBUILT_TABLES, changed_shape, checksums
from services.projections.rebuild.feeds import Feed, RebuildFailed, live_target
from services.projections.rebuild.fresh_tables import fresh_tables_for
from services.projections.rebuild.progress_bar import RebuildProgress
from services.shared.database import DependencyUnavailable

# Unheld passes stop once the live side is at most this many entries ahead: the rest is
# applied while the live projector waits, so that wait stays short.
HELD_CATCH_UP_LIMIT = 5000
MAX_UNHELD_PASSES = 10


@dataclass(frozen=True)
class TableComparison:
    table: str
    live: str  # "" when the live table changed shape
    rebuilt: str
    # The live table's columns are another version's: its rows are not compared.
    shape_changed: bool = False

    @property
    def equal(self) -> bool:
        return self.live == self.rebuilt and not self.shape_changed

    @property
    def verdict(self) -> str:
        if self.shape_changed:
            return "changed shape"
        return "equal" if self.equal else "DIFFERENT"


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
    version: int = READ_MODEL_VERSION  # the version of the rebuilt tables
    live_version: int = READ_MODEL_VERSION  # the version of the live ones, before

    @property
    def upgrade(self) -> bool:
        return self.live_version != self.version

    @property
    def mismatched(self) -> list[str]:
        """Tables whose rows differ from a replay of the log by the same version's rules: not
        those that changed shape, which cannot be compared, and none in an upgrade, whose
        new rules may rightly give other rows."""
        if self.upgrade:
            return []
        return [t.table for t in self.tables if not t.equal and not t.shape_changed]

    @property
    def changed_by_upgrade(self) -> list[str]:
        if not self.upgrade:
            return []
        return [t.table for t in self.tables if not t.equal and not t.shape_changed]

    @property
    def reshaped(self) -> list[str]:
        return [t.table for t in self.tables if t.shape_changed]

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


class ReadModelVersionRefused(DependencyUnavailable):
    """The read model is of another version than this code's, and this service does not
    rebuild it by itself: it does not start (`dealreg` says why and exits 2)."""


def version_refusal(stored: int | None, command: str = "dealreg projections rebuild"
                    ) -> str | None:
    """Why a read model of version `stored` (None: none yet) cannot be used by this code as
    it is, naming what to do; None if it can."""
    if stored is None or stored == READ_MODEL_VERSION:
        return None
    if stored < READ_MODEL_VERSION:
        return (f"the read model is version {stored}, and this code builds version "
                f"{READ_MODEL_VERSION}: run `{command} --version {READ_MODEL_VERSION}`, "
                f"which builds version {READ_MODEL_VERSION} beside the live one and switches "
                "to it")
    return (f"the read model is version {stored}, newer than version {READ_MODEL_VERSION}, "
            "which this code builds: run the newer code, or go back to version "
            f"{READ_MODEL_VERSION} knowingly with `{command} --version {READ_MODEL_VERSION}`")


def live_version(live: Engine) -> int | None:
    """The version of the read model on `live`; None if it has none yet."""
    with live.connect() as conn:
        return stored_read_model_version(conn)


@contextmanager
def one_rebuild_at_a_time(live: Engine) -> Iterator[None]:
    """On PostgreSQL, a session advisory lock for the rebuild's whole length: a second
    rebuild of the same database (another `dealreg up` upgrading, an operator's command)
    would drop the fresh tables under the first. It is refused, and may try again later."""
    if live.dialect.name != "postgresql":
        yield
        return
    with live.connect() as conn:
        key = {"key": advisory_key("dealreg.read_model.rebuild")}
        taken = conn.execute(text("SELECT pg_try_advisory_lock(CAST(:key AS BIGINT))"),
                             key).scalar()
        conn.commit()  # the lock is the session's: no transaction stays open meanwhile
        if not taken:
            raise RebuildFailed("another rebuild of this read model is under way: let it "
                                "finish, then try again")
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(CAST(:key AS BIGINT))"), key)
            conn.commit()


def rebuild_read_model(live: Engine, feed: Feed, progress: RebuildProgress,
                       dry_run: bool = False, downgrade: bool = False) -> RebuildReport:
    """Rebuild the read model on `live` from `feed`, in the code's version; switch to it
    unless `dry_run`. A live read model of a newer version is refused unless `downgrade`."""
    try:
        with one_rebuild_at_a_time(live):
            return _rebuild(live, feed, progress, dry_run, downgrade)
    finally:
        progress.close()


def _rebuild(live: Engine, feed: Feed, progress: RebuildProgress, dry_run: bool,
             downgrade: bool) -> RebuildReport:
    started = time.perf_counter()
    report = RebuildReport(source=feed.source)
    stored = live_version(live)
    if stored is not None and stored > READ_MODEL_VERSION and not downgrade:
        raise RebuildFailed(version_refusal(stored))
    report.live_version = READ_MODEL_VERSION if stored is None else stored
    existed = set(inspect(live).get_table_names())
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
            reshaped = changed_shape(snapshot)
            if report.live_version != report.version:
                # Tables new in this version, made empty on the live side just now.
                reshaped |= {t.name for t in REBUILT_TABLES if t.name not in existed}
            live_sums = checksums(snapshot, [t for t in REBUILT_TABLES
                                             if t.name not in reshaped])
            with fresh.engine.connect() as conn:
                rebuilt_sums = checksums(conn)
            report.tables = [TableComparison(t.name, live_sums.get(t.name, ""),
                                             rebuilt_sums[t.name], t.name in reshaped)
                             for t in REBUILT_TABLES]
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
                record_read_model_version(held, report.version)
                report.switched = True
            report.held_seconds = time.perf_counter() - holding
    finally:
        progress.close()
        fresh.discard()
    report.events = feed.applied
    report.entries = progress.done
    report.total_seconds = time.perf_counter() - started
    return report
