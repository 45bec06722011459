"""How far the read model has read each ordered source of events, and what that means for
readers.

A source is the registry's log itself (embedded mode) or one partition of the Kafka topic.
Each source partition's row holds the log position up to which that partition is complete:
every event at or below it that the partition will ever carry has been handled (applied or
parked). For the log that is the position read. For a topic partition it is the highest of
the last relay watermark consumed there (`contracts.watermark_v1`: the broker had every
event up to it before the watermark was sent, so they all sit at lower offsets) and the
position of the last relay record handled there (one relay publishes in log order, and a new
leader republishes everything after the last acknowledged position, in order).

The read model reflects the lowest of these over every partition of the source. A partition
the read model has not read yet has a row at position 0 (and no offset) as soon as the
partition count is known, so it holds the position down instead of being overlooked.

A topic partition's row also keeps the stamp of the last relay record handled there
(`contracts.stream_v1`), from which the consumer knows the next record follows it. Offsets
and stamps only move forward (a late batch of an instance that lost the partition cannot
undo a later one), except when a partition is read again from an earlier offset (`rewound`:
the topic was recreated); positions never move back, since they stay true: every event up to
them was handled, and a recreated topic carries the same events again.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, bindparam, func, insert, select, update

from contracts.stream_v1 import FIRST_EPOCH, StreamStamp
from services.projections.read_model.tables import READ_MODEL_PROJECTOR, source_progress
from services.shared.database import dialect_insert

if TYPE_CHECKING:
    from services.projections.projectors.parking import SourceEntry

LOG_SOURCE = "log"
NOT_READ = -1  # the offset of a partition's row before anything of it was read


class AppliedPosition:
    """The position the read model reflected after its projector's last commit, in shared
    memory: a reader waiting for its own write polls this every millisecond instead of the
    database. Shared with a projector in another process by passing it to that process."""

    def __init__(self) -> None:
        self._cell: Any = multiprocessing.get_context("spawn").RawValue("q", 0)

    def set(self, position: int) -> None:
        self._cell.value = position

    @property
    def value(self) -> int:
        return int(self._cell.value)


@dataclass(frozen=True)
class SourceProgress:
    source: str
    partition: int
    offset: int  # last consumed offset (Kafka) or log position (the log); -1: none yet
    position: int  # log position up to which this source partition is complete
    stamp: StreamStamp | None = None  # of the last relay record handled, if any
    # Read again from an earlier offset: `offset` and `stamp` are recorded as given.
    rewound: bool = False

    @classmethod
    def unread(cls, source: str, partition: int) -> SourceProgress:
        """A partition known to exist and not read yet: it holds the read position at 0."""
        return cls(source, partition, NOT_READ, 0)

    @classmethod
    def rewind(cls, source: str, partition: int, stamp: StreamStamp | None) -> SourceProgress:
        """A partition to be read again from its start, expecting what follows `stamp`."""
        return cls(source, partition, NOT_READ, 0, stamp, rewound=True)

    @property
    def read(self) -> bool:
        return self.offset != NOT_READ

    @classmethod
    def of_log(cls, position: int) -> SourceProgress:
        return cls(LOG_SOURCE, 0, position, position)


def read_position(conn: Connection, projector: str) -> int:
    """The log position the read model reflects: the lowest complete position over every
    known source partition, 0 before any."""
    lowest = conn.execute(_LOWEST_POSITION, {"projector": projector}).scalar()
    return int(lowest or 0)


# Built once: every batch asks (building the statement cost more than running it).
_LOWEST_POSITION = select(func.min(source_progress.c.position)) \
    .where(source_progress.c.projector == bindparam("projector"))


def stored_offsets(engine: Engine, projector: str, source: str) -> dict[int, int]:
    """Last consumed offset per partition of a source, to resume from after (re)assignment."""
    with engine.connect() as conn:
        return offsets_by_source(conn, projector).get(source, {})


def offsets_by_source(conn: Connection, projector: str = READ_MODEL_PROJECTOR
                      ) -> dict[str, dict[int, int]]:
    """Last consumed offset per partition, for every source the projector has read
    (partitions known but not read yet are left out)."""
    rows = conn.execute(
        select(source_progress.c.source, source_progress.c.partition, source_progress.c.offset)
        .where(source_progress.c.projector == projector,
               source_progress.c.offset != NOT_READ)
    ).all()
    found: dict[str, dict[int, int]] = {}
    for row in rows:
        found.setdefault(str(row.source), {})[int(row.partition)] = int(row.offset)
    return found


def stored_stamps(engine: Engine, projector: str, source: str) -> dict[int, StreamStamp]:
    """The stamp of the last relay record handled, per partition of a source that has one."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(source_progress.c.partition, source_progress.c.epoch, source_progress.c.seq)
            .where(source_progress.c.projector == projector, source_progress.c.source == source,
                   source_progress.c.epoch >= FIRST_EPOCH)
        ).all()
    return {int(row.partition): StreamStamp(int(row.epoch), int(row.seq)) for row in rows}


def merged(progress: Sequence[SourceProgress]) -> list[SourceProgress]:
    """One entry per source partition: the furthest offset, stamp and position; a rewind
    among them decides offset and stamp."""
    by_key: dict[tuple[str, int], SourceProgress] = {}
    for item in progress:
        key = (item.source, item.partition)
        before = by_key.get(key)
        if before is None:
            by_key[key] = item
        elif item.rewound:
            by_key[key] = replace(item, position=max(item.position, before.position))
        elif before.rewound:
            by_key[key] = replace(before, position=max(item.position, before.position))
        else:
            by_key[key] = SourceProgress(
                item.source, item.partition, max(item.offset, before.offset),
                max(item.position, before.position), _later(before.stamp, item.stamp))
    return list(by_key.values())


def _later(a: StreamStamp | None, b: StreamStamp | None) -> StreamStamp | None:
    return a if b is None else b if a is None else max(a, b)


def progress_up_to(entries: Sequence[SourceEntry]) -> list[SourceProgress]:
    """How far each source partition is read once these entries (a prefix of a batch) are
    handled: their offsets and stamps; the position stays where it was until the rest is
    handled."""
    furthest: dict[tuple[str, int], SourceProgress] = {}
    for entry in entries:
        key = (entry.source, entry.partition)
        before = furthest.get(key)
        offset = max(entry.offset, before.offset if before else entry.offset)
        # The offset only: how far the partition is complete is the whole batch's to say
        # (an entry's own position is not proof of that: it may not be the relay's).
        # On the log, an offset is a position read in full.
        position = offset if entry.source == LOG_SOURCE else 0
        furthest[key] = SourceProgress(entry.source, entry.partition, offset, position,
                                       _later(before.stamp if before else None, entry.stamp))
    return list(furthest.values())


def record_progress(conn: Connection, projector: str, item: SourceProgress) -> None:
    """Record how far `projector` has read one source partition, within the batch's
    transaction."""
    key = (
        source_progress.c.projector == projector,
        source_progress.c.source == item.source,
        source_progress.c.partition == item.partition,
    )
    stamp = item.stamp or StreamStamp(0, -1)
    if not item.read and not item.rewound:
        # A partition made known, not read yet: a row at position 0, unless it has one.
        conn.execute(dialect_insert(conn, source_progress).values(
            projector=projector, source=item.source, partition=item.partition,
            offset=item.offset, position=0, epoch=stamp.epoch, seq=stamp.seq,
        ).on_conflict_do_nothing())
        return
    row = conn.execute(select(source_progress).where(*key)).first()
    if row is None:
        conn.execute(insert(source_progress), dict(
            projector=projector, source=item.source, partition=item.partition,
            offset=item.offset, position=item.position, epoch=stamp.epoch, seq=stamp.seq,
        ))
        return
    position = max(row.position, item.position)
    stored = StreamStamp(row.epoch, row.seq)
    if item.rewound:
        offset = item.offset
    elif item.stamp is None or item.stamp.epoch == stored.epoch:
        offset, stamp = max(row.offset, item.offset), max(stamp, stored)
    elif item.stamp.epoch > stored.epoch:
        offset = item.offset  # the first records of a new epoch
    else:
        offset, stamp = row.offset, stored  # an older epoch's late batch
    conn.execute(update(source_progress).where(*key), dict(
        offset=offset, position=position, epoch=stamp.epoch, seq=stamp.seq))
