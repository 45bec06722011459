"""Version 1 of the recorded events as they leave the registry: envelope and payloads.

Projections, partners and the relay depend on these models only, never on the registry's
domain classes. Field names and meanings here are a public contract: add optional fields,
never rename or repurpose one; anything else is a new schema version.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


class EventType(StrEnum):
    FIRM_REGISTERED = "firm_registered"
    MEETING_HELD = "meeting_held"
    DEAL_PROPOSED = "deal_proposed"
    PLEDGE_MADE = "pledge_made"
    PLEDGE_REVISED = "pledge_revised"
    PLEDGE_WITHDRAWN = "pledge_withdrawn"
    TECH_TRANSFER_SIGNED = "tech_transfer_signed"
    JOINT_VENTURE_FORMED = "joint_venture_formed"
    FACILITY_ANNOUNCED = "facility_announced"
    DEAL_CANCELLED = "deal_cancelled"


class Payload(BaseModel):
    # Tolerant reader: a consumer on an older model ignores optional fields added later.
    model_config = ConfigDict(extra="ignore", frozen=True)


class MoneyRange(Payload):
    low: Decimal
    high: Decimal
    currency: str = Field(min_length=3, max_length=3)


class UsdValue(Payload):
    """USD value of a MoneyRange; `units_per_usd` units of the currency buy one dollar."""

    low: Decimal
    high: Decimal
    units_per_usd: Decimal
    rate_source: str


class FirmRegistered(Payload):
    code: str
    name: str
    country: str
    kind: str


class MeetingHeld(Payload):
    title: str
    location: str
    closed_door: bool
    attendees: list[str]
    government_bodies: list[str]
    sectors: list[str]
    summary: str = ""


class DealProposed(Payload):
    title: str
    format: str
    sector: str
    parties: list[str]
    description: str = ""


class PledgeMade(Payload):
    pledge_id: str
    firm: str
    firm_country: str = Field(description="ISO 3166 alpha-2 country of the pledging firm")
    amount: MoneyRange
    usd: UsdValue


class PledgeRevised(Payload):
    pledge_id: str
    amount: MoneyRange
    usd: UsdValue
    reason: str = ""


class PledgeWithdrawn(Payload):
    pledge_id: str
    reason: str = ""


class TechTransferSigned(Payload):
    technology: str
    licensor: str
    licensee: str


class JointVentureFormed(Payload):
    venture_name: str
    equity: dict[str, Decimal]


class FacilityAnnounced(Payload):
    facility: str
    location: str
    capacity: str = ""
    materials: list[str] = []


class DealCancelled(Payload):
    reason: str


PAYLOAD_MODELS: dict[EventType, type[Payload]] = {
    EventType.FIRM_REGISTERED: FirmRegistered,
    EventType.MEETING_HELD: MeetingHeld,
    EventType.DEAL_PROPOSED: DealProposed,
    EventType.PLEDGE_MADE: PledgeMade,
    EventType.PLEDGE_REVISED: PledgeRevised,
    EventType.PLEDGE_WITHDRAWN: PledgeWithdrawn,
    EventType.TECH_TRANSFER_SIGNED: TechTransferSigned,
    EventType.JOINT_VENTURE_FORMED: JointVentureFormed,
    EventType.FACILITY_ANNOUNCED: FacilityAnnounced,
    EventType.DEAL_CANCELLED: DealCancelled,
}

SCHEMA_VERSION: Literal[1] = 1


# The previous_hash of an aggregate's first event: its chain starts here.
FIRST_PREVIOUS_HASH = "0" * 64


class EventEnvelope(BaseModel):
    """One recorded event with everything a consumer needs to apply and audit it."""

    model_config = ConfigDict(frozen=True)

    event_id: str = Field(description="The partner's id for the event, unique per partner")
    type: EventType
    schema_version: Literal[1] = SCHEMA_VERSION
    aggregate_id: UUID
    aggregate_version: int = Field(ge=1)
    position: int = Field(ge=1, description="Position in the registry's log")
    occurred_at: AwareDatetime = Field(description="Business time, as given by the partner")
    recorded_at: AwareDatetime = Field(description="When the registry recorded the event")
    recorded_by: str = Field(description="Principal (API key name) that recorded the event")
    previous_hash: str = Field(
        description="hash of the aggregate's previous event; 64 zeros (FIRST_PREVIOUS_HASH) "
                    "for its first event"
    )
    hash: str = Field(
        description="SHA-256 (hex) of the canonical JSON of the stored event's topic and fields"
    )
    payload: dict[str, Any]

    def typed_payload(self) -> Payload:
        """The payload parsed by its type's model; raises pydantic.ValidationError if invalid."""
        return PAYLOAD_MODELS[self.type].model_validate(self.payload)
