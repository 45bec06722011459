"""How far the read model has read each ordered source of events, and what that means for
readers.

A source is the registry's log itself (embedded mode) or one partition of the Kafka topic.
Within a source, log positions only grow, because the relay publishes in log order. So every
event at or below a lagging source's position has been applied, and a source that had
nothing left to read holds nothing older than what it applied: the read model reflects the
lowest position among lagging sources, or the highest overall when none lags.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, select

from services.projections.read_model.tables import READ_MODEL_PROJECTOR, source_progress

LOG_SOURCE = "log"


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
    offset: int  # last consumed offset (Kafka) or log position (the log)
    position: int  # highest log position read from this source
    caught_up: bool = True  # nothing was left to read when this batch was taken

    @classmethod
    def of_log(cls, position: int) -> SourceProgress:
        return cls(LOG_SOURCE, 0, position, position)


def read_position(conn: Connection, projector: str) -> int:
    rows = conn.execute(
        select(source_progress.c.position, source_progress.c.caught_up)
        .where(source_progress.c.projector == projector)
    ).all()
    lagging = [row.position for row in rows if not row.caught_up]
    if lagging:
        return int(min(lagging))
    return int(max((row.position for row in rows), default=0))


def stored_offsets(engine: Engine, projector: str, source: str) -> dict[int, int]:
    """Last consumed offset per partition of a source, to resume from after (re)assignment."""
    with engine.connect() as conn:
        return offsets_by_source(conn, projector).get(source, {})


def offsets_by_source(conn: Connection, projector: str = READ_MODEL_PROJECTOR
                      ) -> dict[str, dict[int, int]]:
    """Last consumed offset per partition, for every source the projector has read."""
    rows = conn.execute(
        select(source_progress.c.source, source_progress.c.partition, source_progress.c.offset)
        .where(source_progress.c.projector == projector)
    ).all()
    found: dict[str, dict[int, int]] = {}
    for row in rows:
        found.setdefault(str(row.source), {})[int(row.partition)] = int(row.offset)
    return found


def merged(progress: Sequence[SourceProgress]) -> list[SourceProgress]:
    """One entry per source partition: the furthest offset and position, the latest caught_up."""
    by_key: dict[tuple[str, int], SourceProgress] = {}
    for item in progress:
        key = (item.source, item.partition)
        before = by_key.get(key)
        if before is None or item.offset >= before.offset:
            by_key[key] = SourceProgress(
                item.source, item.partition, item.offset,
                max(item.position, before.position if before else 0), item.caught_up,
            )
    return list(by_key.values())
