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
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, func, select

from services.projections.read_model.tables import READ_MODEL_PROJECTOR, source_progress

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
    caught_up: bool = True  # no longer read: kept for the column, which readers ignore

    @classmethod
    def unread(cls, source: str, partition: int) -> SourceProgress:
        """A partition known to exist and not read yet: it holds the read position at 0."""
        return cls(source, partition, NOT_READ, 0, caught_up=False)

    @property
    def read(self) -> bool:
        return self.offset != NOT_READ

    @classmethod
    def of_log(cls, position: int) -> SourceProgress:
        return cls(LOG_SOURCE, 0, position, position)


def read_position(conn: Connection, projector: str) -> int:
    """The log position the read model reflects: the lowest complete position over every
    known source partition, 0 before any."""
    lowest = conn.execute(
        select(func.min(source_progress.c.position))
        .where(source_progress.c.projector == projector)
    ).scalar()
    return int(lowest or 0)


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


def merged(progress: Sequence[SourceProgress]) -> list[SourceProgress]:
    """One entry per source partition: the furthest offset and position."""
    by_key: dict[tuple[str, int], SourceProgress] = {}
    for item in progress:
        key = (item.source, item.partition)
        before = by_key.get(key)
        if before is None:
            by_key[key] = item
            continue
        by_key[key] = SourceProgress(
            item.source, item.partition, max(item.offset, before.offset),
            max(item.position, before.position),
            item.caught_up if item.offset >= before.offset else before.caught_up,
        )
    return list(by_key.values())
