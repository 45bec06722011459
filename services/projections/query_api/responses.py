"""The read API's answers as models: what the OpenAPI document publishes and every answer is
validated against.

The JSON itself is built by `read_model.views` and `queries`; these models describe it
without changing it. Routes answer with `response_model_exclude_unset`, so a key the views
leave out (`crore` of a non-rupee amount, `past` of a current answer) stays out rather than
coming back as null. Amounts are exact decimal strings, times ISO 8601 strings with offset.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from contracts.events_v1 import EventType
from contracts.events_v2 import Instrument
from contracts.submissions_v1 import CODE_PATTERN, DealFormat, FirmKind, Sector
from services.projections.read_model.tables import DealStatus, PledgeStatus
from services.shared.openapi_contract import Count, LogPosition

COUNTRY_PATTERN = r"^[A-Z]{2}$"
CURRENCY_PATTERN = r"^[A-Z]{3}$"
DECIMAL_PATTERN = r"^-?[0-9]+(\.[0-9]+)?$"

Version = Annotated[int, Field(ge=1, le=2**31 - 1)]
DecimalText = Annotated[str, Field(
    pattern=DECIMAL_PATTERN, examples=["3500", "0.25"],
    description="An exact decimal in plain notation, never a float",
)]
Timestamp = Annotated[str, Field(
    json_schema_extra={"format": "date-time"}, examples=["2025-05-20T04:30:00+00:00"],
    description="ISO 8601 with its UTC offset",
)]
FirmCode = Annotated[str, Field(pattern=CODE_PATTERN, examples=["tata-motors"])]
Country = Annotated[str, Field(pattern=COUNTRY_PATTERN, description="ISO 3166-1 alpha-2",
                               examples=["IN"])]
Hash = Annotated[str, Field(description="SHA-256 over the event and the hash before it, hex")]
PositionField = Annotated[LogPosition, Field(
    description="The log position this answer reflects (also header X-Log-Position)",
)]


# -- The past a read asked for -------------------------------------------------------------

class BusinessPast(BaseModel):
    """What was true then, by the events' occurred-at, as known now."""

    clock: Literal["business"]
    as_of: Timestamp = Field(description="The business time asked for, in UTC")


class RecordedPast(BaseModel):
    """What the registry knew then: the log up to a position."""

    clock: Literal["recorded"]
    recorded_as_of: LogPosition | Timestamp = Field(
        description="The log position asked for, or the recorded time (UTC) asked for")


class VersionPast(BaseModel):
    """A deal after its first `version` events."""

    clock: Literal["version"]
    version: Version


Past = Annotated[BusinessPast | RecordedPast | VersionPast, Field(
    discriminator="clock", description="Present when the answer is of the past: which one",
)]


# -- Money ---------------------------------------------------------------------------------

class CroreRange(BaseModel):
    low: DecimalText
    high: DecimalText


class MoneyRange(BaseModel):
    """A range in its own currency; rupee ranges also in crore and as Indians write them."""

    currency: str = Field(pattern=CURRENCY_PATTERN, description="ISO 4217")
    low: DecimalText
    high: DecimalText
    crore: CroreRange | None = Field(default=None, description="INR only: in crore")
    display: str | None = Field(default=None, examples=["₹860–3,500 crore"],
                                description="INR only: for people, rounded to 0.01 of the unit")


class UsdRange(BaseModel):
    low: DecimalText
    high: DecimalText


class UsdConversion(UsdRange):
    units_per_usd: DecimalText = Field(description="Units of the pledge currency per dollar")
    rate_source: str


# -- Pledge totals -------------------------------------------------------------------------

class GroupTotals(BaseModel):
    pledge_count: Count = Field(description="Active pledges of deals not cancelled")
    usd: UsdRange
    by_currency: list[MoneyRange] = Field(description="Per original currency, by code")


class SectorTotals(GroupTotals):
    sector: Sector


class CountryTotals(GroupTotals):
    country: Country = Field(description="The pledging firms' country")


# An instrument's value, or `not_stated` for the pledges that state none (made before event
# schema v2, or submitted in v1): read_model.tables.INSTRUMENT_NOT_STATED.
InstrumentGroup = Literal["equity", "debt", "grant", "in_kind_technology", "not_stated"]


class InstrumentTotals(GroupTotals):
    instrument: InstrumentGroup = Field(description="How the pledges are paid; `not_stated` "
                                        "for pledges that do not say")


class FirmRef(BaseModel):
    code: FirmCode
    name: str | None = Field(description="Null while the firm's registration is not projected")
    country: Country | None = Field(description="Null while the firm's registration is not "
                                    "projected")


class FirmTotals(GroupTotals):
    firm: FirmRef


class TotalsAnswer(BaseModel):
    position: PositionField
    past: Past | None = None


class SectorTotalsAnswer(TotalsAnswer):
    items: list[SectorTotals]


class FirmTotalsAnswer(TotalsAnswer):
    items: list[FirmTotals]


class CountryTotalsAnswer(TotalsAnswer):
    items: list[CountryTotals]


class InstrumentTotalsAnswer(TotalsAnswer):
    items: list[InstrumentTotals]


# -- Pledges over time ---------------------------------------------------------------------

class Bucket(GroupTotals):
    """A group's totals at the end of one bucket (cumulative, as `as_of` its last day)."""

    starts: str = Field(json_schema_extra={"format": "date"}, description="Its first day, UTC")
    ends: str = Field(json_schema_extra={"format": "date"}, description="Its last day, UTC")


class GroupOverTime(BaseModel):
    """One group and its buckets, oldest first; exactly one of sector, firm, country and
    instrument."""

    sector: Sector | None = None
    firm: FirmRef | None = None
    country: Country | None = Field(default=None, description="The pledging firms' country")
    instrument: InstrumentGroup | None = Field(default=None, description="How the pledges "
                                               "are paid; `not_stated` for those that do not say")
    buckets: list[Bucket]


class OverTimeAnswer(BaseModel):
    dimension: Literal["sector", "firm", "country", "instrument"]
    interval: Literal["day", "month", "quarter"]
    from_: str = Field(alias="from", json_schema_extra={"format": "date"},
                       description="The first bucket's first day")
    to: str = Field(json_schema_extra={"format": "date"},
                    description="The last bucket's last day")
    next_from: str | None = Field(json_schema_extra={"format": "date"}, description=(
        "When the window holds more than 366 buckets, the first day of the next one: ask "
        "again with it as `from`; null when this answer reaches `to`"))
    items: list[GroupOverTime] = Field(description="Groups with a counted pledge at the end of "
                                       "some bucket, by key")
    limit: int = Field(ge=1, le=100)
    offset: Count
    total: Count = Field(description="Groups across all pages")
    position: PositionField


# -- Deals ---------------------------------------------------------------------------------

class DealSummary(BaseModel):
    deal_id: str = Field(json_schema_extra={"format": "uuid"})
    title: str
    format: DealFormat
    sector: Sector
    status: DealStatus
    parties: list[FirmCode]
    version: Version = Field(description="Events the deal has had")
    proposed_at: Timestamp
    updated_at: Timestamp
    last_position: LogPosition = Field(description="Log position of the deal's latest event")


class PledgedFirm(BaseModel):
    code: FirmCode
    name: str | None = Field(description="Null while the firm's registration is not projected")
    country: Country


class Tranche(BaseModel):
    due_date: str = Field(json_schema_extra={"format": "date"}, examples=["2027-03-31"],
                          description="When it is due")
    amount: DecimalText = Field(description="In the pledge's currency")


class Pledge(BaseModel):
    pledge_id: str
    firm: PledgedFirm
    status: PledgeStatus
    counted: bool = Field(description="In the totals: active, and its deal not cancelled")
    amount: MoneyRange
    usd: UsdConversion
    instrument: Instrument | None = Field(description="How the pledge is paid; null: not "
                                          "stated (made before event schema v2, or in v1)")
    tranches: list[Tranche] = Field(description="Its schedule, due dates ascending, amounts in "
                                    "its currency; empty: none stated")
    made_at: Timestamp
    revisions: Count
    revised_at: Timestamp | None
    revision_reason: str | None
    withdrawn_at: Timestamp | None
    withdrawal_reason: str | None


class TechTransfer(BaseModel):
    technology: str
    licensor: FirmCode
    licensee: FirmCode
    signed_at: Timestamp


class JointVenture(BaseModel):
    venture_name: str
    equity: dict[str, DecimalText] = Field(description="Percent owned, by firm code")
    formed_at: Timestamp


class Facility(BaseModel):
    facility: str
    location: str
    capacity: str
    materials: list[str]
    announced_at: Timestamp


class Cancellation(BaseModel):
    reason: str
    cancelled_at: Timestamp


class DealAnswer(DealSummary):
    """A deal with its agreements and all its pledges (withdrawn too), in the order made."""

    description: str
    tech_transfers: list[TechTransfer]
    joint_ventures: list[JointVenture]
    facilities: list[Facility]
    cancellation: Cancellation | None
    pledges: list[Pledge]
    position: PositionField
    past: Past | None = None


# -- Lists ---------------------------------------------------------------------------------

class PageAnswer(BaseModel):
    limit: int = Field(description="Items per page, as asked")
    offset: int = Field(description="Items skipped, as asked")
    total: Count = Field(description="Items across all pages")
    position: PositionField


class DealsPage(PageAnswer):
    items: list[DealSummary]


PROVENANCE_NOTE = ("; null, and named in `withheld`, unless you are an auditor, an admin or "
                   "the key that recorded it")
ProvenanceField = Literal["event_id", "recorded_by"]
ClosedDoorField = Literal["title", "attendees", "government_bodies", "summary"]


class DealEvent(BaseModel):
    position: LogPosition
    aggregate_version: Version
    type: EventType
    event_id: str | None = Field(description="The partner's event id" + PROVENANCE_NOTE)
    occurred_at: Timestamp
    recorded_at: Timestamp
    recorded_by: str | None = Field(description="Name of the key that recorded it"
                                    + PROVENANCE_NOTE)
    withheld: list[ProvenanceField] = Field(description="The fields withheld from you")
    payload: dict[str, Any] = Field(description="As recorded: the payload of `type` in its "
                                    "newest schema version (contracts/events_v2: pledge events "
                                    "with instrument and tranches, null and empty for those "
                                    "recorded before v2; amounts as decimal strings)")
    hash: Hash
    previous_hash: Hash


class DealEventsPage(PageAnswer):
    items: list[DealEvent]


class Firm(BaseModel):
    firm_id: str = Field(json_schema_extra={"format": "uuid"})
    code: FirmCode
    name: str
    country: Country
    kind: FirmKind
    registered_at: Timestamp


class FirmsPage(PageAnswer):
    items: list[Firm]


CLOSED_DOOR_NOTE = ("; of a closed-door meeting null, and named in `withheld`, unless you "
                    "are an auditor, an admin or a partner of an attending firm")


class Meeting(BaseModel):
    meeting_id: str = Field(json_schema_extra={"format": "uuid"})
    title: str | None = Field(description="The meeting's title" + CLOSED_DOOR_NOTE)
    location: str
    closed_door: bool
    attendees: list[FirmCode] | None = Field(description="Firm codes" + CLOSED_DOOR_NOTE)
    government_bodies: list[str] | None = Field(description="Officials' bodies present"
                                                + CLOSED_DOOR_NOTE)
    sectors: list[Sector]
    summary: str | None = Field(description="What was said" + CLOSED_DOOR_NOTE)
    occurred_at: Timestamp
    recorded_at: Timestamp
    withheld: list[ClosedDoorField] = Field(description="The fields withheld from you")


class MeetingsPage(PageAnswer):
    items: list[Meeting]


class RecordedEvent(BaseModel):
    position: LogPosition
    event_id: str
    type: EventType
    aggregate_id: str = Field(json_schema_extra={"format": "uuid"})
    aggregate_version: Version
    occurred_at: Timestamp
    recorded_at: Timestamp
    recorded_by: str = Field(description="Name of the key that recorded it")
    hash: Hash


class RecordedEventsPage(PageAnswer):
    items: list[RecordedEvent]
