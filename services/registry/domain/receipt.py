"""The registry's memory of each partner event it accepted, for idempotent ingestion.

A receipt is saved in the same transaction as the events it acknowledges, and its id is
derived from the partner's event id, so a retried request finds it (or fails to create a
duplicate) whatever happened to the first attempt.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate


class IngestionReceipt(Aggregate):
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

    @classmethod
    def issue(
        cls,
        receipt_id: UUID,
        partner_event_id: str,
        principal: str,
        request_fingerprint: str,
        event_type: str,
        aggregate_id: UUID,
        aggregate_version: int,
        event_recorded_at: str,
    ) -> IngestionReceipt:
        return cls._create(
            cls.Issued,
            id=receipt_id,
            partner_event_id=partner_event_id,
            principal=principal,
            request_fingerprint=request_fingerprint,
            event_type=event_type,
            aggregate_id=aggregate_id,
            aggregate_version=aggregate_version,
            event_recorded_at=event_recorded_at,
        )
