"""The registry's memory of each partner event it accepted, for idempotent ingestion.

A receipt is saved in the same transaction as the events it acknowledges, and its id is
derived from the partner's event id, so a retried request finds it (or fails to create a
duplicate) whatever happened to the first attempt. Receipts are kept beside the log
(adapters.receipt_table); stores written before kept each as an event of its own
(IngestionReceipt), which is still read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate


@dataclass(frozen=True)
class IssuedReceipt:
    receipt_id: UUID
    partner_event_id: str
    principal: str
    request_fingerprint: str
    event_type: str
    aggregate_id: UUID
    aggregate_version: int
    event_recorded_at: str


class IngestionReceipt(Aggregate):
    """A receipt as stores before receipts were kept beside the log hold it."""

    TOPIC = "dealregistry:IngestionReceipt"

    class Created(Aggregate.Created):
        """Unused; eventsourcing requires every inherited event class to carry a topic."""

        TOPIC = "dealregistry:IngestionReceipt.Created"

    class Issued(Aggregate.Created):
        TOPIC = "dealregistry:IngestionReceiptIssued.v1"
        partner_event_id: str
        principal: str
        request_fingerprint: str
        event_type: str
        aggregate_id: UUID
        aggregate_version: int
        event_recorded_at: str

        def apply(self, aggregate: Any) -> None:
            aggregate.partner_event_id = self.partner_event_id
            aggregate.principal = self.principal
            aggregate.request_fingerprint = self.request_fingerprint
            aggregate.event_type = self.event_type
            aggregate.aggregate_id = self.aggregate_id
            aggregate.aggregate_version = self.aggregate_version
            aggregate.event_recorded_at = self.event_recorded_at

    def __init__(self, **_: Any) -> None:
        # Set by Issued.apply; declared here so every attribute has one home.
        self.partner_event_id = ""
        self.principal = ""
        self.request_fingerprint = ""
        self.event_type = ""
        self.aggregate_id = UUID(int=0)
        self.aggregate_version = 0
        self.event_recorded_at = ""

    def issued(self) -> IssuedReceipt:
        return IssuedReceipt(
            self.id, self.partner_event_id, self.principal, self.request_fingerprint,
            self.event_type, self.aggregate_id, self.aggregate_version, self.event_recorded_at)
