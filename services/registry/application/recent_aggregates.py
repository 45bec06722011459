"""Aggregates as this process's last recording passes left them, kept between passes.

A pass that decides on a deal would otherwise load it again: a query for its new events and
a deep copy of the cached state, most of a pledge's cost. Kept here, the aggregate is the
state its last committed event made, used as is; what makes that safe:

- Another writer (a thread recording outside the passes, another replica): before each pass,
  `refresh` reads which aggregates the log's events since the last pass belong to, and drops
  every aggregate with an event this process's passes did not write. The store commits
  positions in order, so nothing can later appear below a position already read.
- A pass that fails to commit drops everything it touched (the decisions mutated them).
- A decision on stale state never commits anyway: its version is taken, the save fails.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Any
from uuid import UUID

from services.registry.adapters.event_store import DealRegistryStore


class RecentAggregates:
    def __init__(self, store: DealRegistryStore, max_size: int = 10_000) -> None:
        self.store = store
        self.max_size = max_size
        self._kept: OrderedDict[UUID, Any] = OrderedDict()
        self._read_up_to: int | None = None  # the log position `refresh` has read to
        self._written: set[int] = set()  # positions the passes wrote since then
        self.dropped_for_other_writers = 0

    def refresh(self) -> None:
        """Drop what another writer has changed since the last refresh."""
        if self._read_up_to is None:
            self._read_up_to = self.store.head_position()
            self._kept.clear()
            return
        for position, aggregate_id in self.store.originators_after(self._read_up_to):
            if position not in self._written and self._kept.pop(aggregate_id, None) is not None:
                self.dropped_for_other_writers += 1
            self._read_up_to = position
        self._written.clear()

    def get(self, aggregate_id: UUID) -> Any | None:
        aggregate = self._kept.get(aggregate_id)
        if aggregate is not None:
            self._kept.move_to_end(aggregate_id)
        return aggregate

    def keep(self, aggregates: Iterable[Any], positions: Iterable[int]) -> None:
        """After a commit: the aggregates it changed, and the positions it wrote."""
        for aggregate in aggregates:
            self._kept[aggregate.id] = aggregate
            self._kept.move_to_end(aggregate.id)
        while len(self._kept) > self.max_size:
            self._kept.popitem(last=False)
        self._written.update(positions)

    def drop(self, aggregate_ids: Iterable[UUID]) -> None:
        for aggregate_id in aggregate_ids:
            self._kept.pop(aggregate_id, None)
