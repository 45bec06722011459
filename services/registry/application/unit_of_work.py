"""The aggregates one request, or one batch of requests, has loaded or created.

Within a batch, later events must see earlier ones (a firm registered, then a deal naming
it, then a pledge on that deal), so every decision reads through the unit of work, which
keeps what it loaded and what was decided, and falls back to the store for the rest.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from services.registry.adapters.event_store import DealRegistryStore
from services.registry.application.recent_aggregates import RecentAggregates
from services.registry.domain.firm import Firm
from services.registry.domain.identities import firm_id

A = TypeVar("A")


class UnitOfWork:
    def __init__(self, store: DealRegistryStore, recent: RecentAggregates | None = None) -> None:
        self.store = store
        # Aggregates earlier recording passes committed, used as they are (not copied).
        self.recent = recent
        self._aggregates: dict[UUID, Any] = {}
        self._absent: set[UUID] = set()
        self._absent_receipts: set[UUID] = set()

    def get(self, aggregate_id: UUID, kind: type[A]) -> A | None:
        """The aggregate with this id if it is a `kind`, else None."""
        if aggregate_id not in self._aggregates:
            kept = self.recent.get(aggregate_id) if self.recent is not None else None
            try:
                self._aggregates[aggregate_id] = (
                    kept if kept is not None else self.store.repository.get(aggregate_id))
            except AggregateNotFoundError:
                return None
        aggregate = self._aggregates[aggregate_id]
        return aggregate if isinstance(aggregate, kind) else None

    def firm(self, code: str) -> Firm | None:
        """A registered firm, read without locking or copying: a firm never changes after its
        registration, so the cached one is current. Every deal and pledge checks its firms,
        and a locked fast-forward would make all of them queue on a popular firm."""
        aggregate_id = firm_id(code)
        if aggregate_id not in self._aggregates:
            try:
                self._aggregates[aggregate_id] = self.store.repository.get(
                    aggregate_id, fastforward_skipping=True, deepcopy_from_cache=False
                )
            except AggregateNotFoundError:
                return None
        firm = self._aggregates[aggregate_id]
        return firm if isinstance(firm, Firm) else None

    def exists(self, aggregate_id: UUID) -> bool:
        """Whether the aggregate is stored or was decided in this unit: an indexed lookup of
        its first event, never a load."""
        if aggregate_id in self._aggregates:
            return True
        if self.recent is not None and self.recent.get(aggregate_id) is not None:
            return True
        if aggregate_id in self._absent:
            return False
        return aggregate_id in self.store.stored_aggregates([aggregate_id])

    def look_up(self, aggregate_ids: Collection[UUID]) -> None:
        """Find out in one query which of these aggregates are stored, so that `exists` need
        not ask again for each (a batch checks the receipt of every item)."""
        stored = self.store.stored_aggregates(aggregate_ids)
        self._absent.update(i for i in aggregate_ids if i not in stored)

    def look_up_receipts(self, receipt_ids: Collection[UUID]) -> None:
        """Find out in one query which of these receipts are stored (a pass checks the
        receipt of every command)."""
        stored = self.store.stored_receipts(receipt_ids)
        self._absent_receipts.update(i for i in receipt_ids if i not in stored)

    def receipt_may_exist(self, receipt_id: UUID) -> bool:
        """False for a receipt looked up and found absent; True for any other, whose
        receipt is then read."""
        return receipt_id not in self._absent_receipts

    def track(self, aggregate: Any) -> None:
        self._aggregates[aggregate.id] = aggregate
        self._absent.discard(aggregate.id)

    def forget(self, aggregate_id: UUID) -> None:
        """Drop an aggregate whose latest decision was refused after it was made."""
        self._aggregates.pop(aggregate_id, None)
        if self.recent is not None:
            self.recent.drop([aggregate_id])

    def loaded(self, aggregate_id: UUID) -> Any:
        return self._aggregates[aggregate_id]

    def loaded_ids(self) -> list[UUID]:
        return list(self._aggregates)
