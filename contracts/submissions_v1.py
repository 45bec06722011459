"""Version 1 of what partner systems POST to the registry: one event per request.

The `type` field selects the payload model. Shapes are checked here; business rules
(a low amount above the high one, a pledge on a cancelled deal) are the registry's to judge.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    WithJsonSchema,
)
from pydantic.json_schema import JsonDict
from pydantic_core import PydanticCustomError

from contracts.moments import DATETIME_WITH_OFFSET_PATTERN, EARLIEST_DATE, LATEST_DATE

# The limits below are the registry's promise of what it can keep: every value inside them is
# stored, converted to UTC, projected and read back by every read-model backend (SQLite and
# PostgreSQL), so a request is refused at the door rather than an event failing downstream.


# No control characters (C0, DEL, C1) anywhere; multi-line fields admit tab, LF and CR.
ONE_LINE = r"^[^\u0000-\u001f\u007f-\u009f]*$"
MULTI_LINE = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]*$"

# Exact decimals as JSON strings: ASCII digits, an optional point, no sign, exponent, spaces
# or separators. A JSON number would pass through a binary float in most clients.
AMOUNT_PATTERN = r"^(0|[1-9][0-9]{0,17})(\.[0-9]{1,6})?$"
PERCENT_PATTERN = r"^(0|[1-9][0-9]{0,2})(\.[0-9]{1,4})?$"

CODE_PATTERN = r"^[a-z0-9][a-z0-9-]{1,62}[a-z0-9]$"
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:\-]*$"
MAX_VERSION = 2**31 - 1


class Sector(StrEnum):
    ELECTRIC_VEHICLES = "electric_vehicles"
    BATTERY_MANUFACTURING = "battery_manufacturing"
    RECYCLING = "recycling"
    MINERAL_PROCESSING = "mineral_processing"
    JOINT_VENTURES_TECH_TRANSFER = "joint_ventures_tech_transfer"


class DealFormat(StrEnum):
    JOINT_VENTURE = "joint_venture"
    TECHNOLOGY_TRANSFER = "technology_transfer"
    PROCESSING_FACILITY = "processing_facility"
    EQUITY_INVESTMENT = "equity_investment"


class FirmKind(StrEnum):
    MANUFACTURER = "manufacturer"
    AUTOMAKER = "automaker"
    BATTERY_MAKER = "battery_maker"
    RECYCLER = "recycler"
    MINERAL_PROCESSOR = "mineral_processor"
    PRIVATE_EQUITY = "private_equity"
    TRADING_HOUSE = "trading_house"
    GOVERNMENT_BODY = "government_body"
    OTHER = "other"


def _decimal_text(pattern: str, what: str) -> Any:
    syntax = re.compile(pattern)

    def parse(value: Any) -> Any:
        if not isinstance(value, str):
            raise PydanticCustomError(
                "decimal_string",
                "send {what} as a JSON string such as \"1250.50\", not a number",
                {"what": what},
            )
        if not syntax.fullmatch(value):
            raise PydanticCustomError(
                "decimal_syntax", "{what} must match {pattern}", {"what": what, "pattern": pattern}
            )
        return Decimal(value)

    return parse


def dated_text(pattern: str, rule: str, shape: str) -> Any:
    """The check of a date or date-time field: only text matching `pattern` (one of
    contracts.moments' patterns, whose dates run from EARLIEST_DATE to LATEST_DATE), else
    the error `rule` describing `shape`. Every dated field of a submission uses it."""
    syntax = re.compile(pattern)

    def check(value: Any) -> Any:
        # Only the published pattern: pydantic alone would also take Unix numbers, round
        # nanoseconds, and take year 1 with an offset that no conversion to UTC survives.
        if not isinstance(value, str) or not syntax.fullmatch(value):
            raise PydanticCustomError(
                rule, "must be an RFC 3339 {shape}, dated {earliest} to {latest}",
                {"shape": shape, "earliest": EARLIEST_DATE, "latest": LATEST_DATE},
            )
        return value

    return check


_datetime_text = dated_text(
    DATETIME_WITH_OFFSET_PATTERN, "datetime_format",
    "date-time with seconds (at most microseconds) and an offset, such as "
    "2026-03-01T10:30:00+05:30")


def _plain_text(pattern: str, allowed: str) -> Any:
    syntax = re.compile(pattern)

    def check(value: str) -> str:
        if not syntax.fullmatch(value):
            found = next(c for c in value if not syntax.fullmatch(c))
            raise PydanticCustomError(
                "control_character",
                "must not contain control characters{allowed}; found {character} at index {index}",
                {"allowed": allowed, "character": f"U+{ord(found):04X}",
                 "index": value.index(found)},
            )
        return value

    return check


# The patterns are documented for clients; the checks name the rule and the character.
ONE_LINE_CHECK = AfterValidator(_plain_text(ONE_LINE, ""))
MULTI_LINE_CHECK = AfterValidator(
    _plain_text(MULTI_LINE, " other than tab, line feed and carriage return"))
ONE_LINE_SCHEMA = {"pattern": ONE_LINE}
MULTI_LINE_SCHEMA = {"pattern": MULTI_LINE}

# One line of text, no control characters.
Text = Annotated[str, Field(min_length=1, max_length=200, json_schema_extra=ONE_LINE_SCHEMA),
                 ONE_LINE_CHECK]
ShortText = Annotated[str, Field(min_length=1, max_length=100,
                                 json_schema_extra=ONE_LINE_SCHEMA), ONE_LINE_CHECK]
OptionalText = Annotated[str, Field(max_length=200, json_schema_extra=ONE_LINE_SCHEMA),
                         ONE_LINE_CHECK]
# Text that may hold tabs and line breaks, and no other control characters.
LongText = Annotated[str, Field(max_length=4000, json_schema_extra=MULTI_LINE_SCHEMA),
                     MULTI_LINE_CHECK]
Reason = Annotated[str, Field(min_length=1, max_length=2000,
                              json_schema_extra=MULTI_LINE_SCHEMA), MULTI_LINE_CHECK]

Code = Annotated[str, Field(min_length=3, max_length=64, pattern=CODE_PATTERN,
                            examples=["tata-motors"])]
Identifier = Annotated[str, Field(min_length=1, max_length=100, pattern=ID_PATTERN)]
Amount = Annotated[
    Decimal,
    BeforeValidator(_decimal_text(AMOUNT_PATTERN, "an amount")),
    WithJsonSchema({"type": "string", "pattern": AMOUNT_PATTERN, "maxLength": 25,
                    "examples": ["72500000000.987654"],
                    "description": "Exact decimal: up to 18 digits, a point, up to 6 digits"}),
]
Percent = Annotated[
    Decimal,
    BeforeValidator(_decimal_text(PERCENT_PATTERN, "a percentage")),
    WithJsonSchema({"type": "string", "pattern": PERCENT_PATTERN, "maxLength": 8,
                    "examples": ["51", "49.5"],
                    "description": "Exact decimal percent: up to 3 digits, up to 4 after a point"}),
]
OccurredAt = Annotated[
    datetime,
    BeforeValidator(_datetime_text),
    WithJsonSchema({"type": "string", "format": "date-time",
                    "pattern": DATETIME_WITH_OFFSET_PATTERN,
                    "examples": ["2026-03-01T10:30:00+05:30"],
                    "description": f"RFC 3339 (seconds and offset required, at most "
                                   f"microseconds), dated {EARLIEST_DATE} to {LATEST_DATE}"}),
]


def _integral(value: Any) -> Any:
    # JSON Schema counts 1.0 as an integer; the parser reads it as a Decimal. Booleans and
    # strings stay refused (StrictInt), and so do fractions.
    if isinstance(value, Decimal) and value.is_finite() and value.adjusted() < 19 \
            and value == value.to_integral_value():
        return int(value)
    return value


Version = Annotated[StrictInt, Field(ge=0, le=MAX_VERSION), BeforeValidator(_integral)]


def schema_version_number(value: Any) -> Any:
    """A submission's schema_version as its Literal compares it: 1.0 is 1 (as JSON Schema
    says), a boolean is no version (Python alone would take true for 1)."""
    if isinstance(value, bool):
        raise PydanticCustomError("literal_error", "schema_version must be a number, not a "
                                  "boolean")
    return _integral(value)


SCHEMA_VERSION_CHECK = BeforeValidator(schema_version_number)
# pydantic states a dict's key pattern only as patternProperties, which admit other keys too.
FIRM_CODE_KEYS: JsonDict = {"additionalProperties": False, "propertyNames": {
    "pattern": CODE_PATTERN, "minLength": 3, "maxLength": 64}}
# Repeats are refused by the registry's rules; the schema says so to clients.
UNIQUE: JsonDict = {"uniqueItems": True}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AmountIn(Strict):
    low: Amount
    high: Amount
    currency: str = Field(pattern=r"^[A-Z]{3}$", examples=["USD", "INR", "JPY"],
                          description="ISO 4217 code")


class RateIn(Strict):
    """Optional conversion given by the partner; without it the registry's reference rate
    applies. `units_per_usd` is how many units of the pledge currency buy one dollar."""

    units_per_usd: Amount
    rate_source: Text


class FirmRegisteredIn(Strict):
    code: Code
    name: Text
    country: str = Field(pattern=r"^[A-Z]{2}$", examples=["JP", "IN"],
                         description="ISO 3166 alpha-2 code")
    kind: FirmKind


class MeetingHeldIn(Strict):
    meeting_id: UUID | None = None
    title: Text
    location: Text
    closed_door: StrictBool = False
    attendees: list[Code] = Field(min_length=1, max_length=500, json_schema_extra=UNIQUE)
    government_bodies: list[Text] = Field(default=[], max_length=100)
    sectors: list[Sector] = Field(default=[], max_length=10)
    summary: LongText = ""


class DealProposedIn(Strict):
    deal_id: UUID | None = None
    title: Text
    format: DealFormat
    sector: Sector
    parties: list[Code] = Field(min_length=1, max_length=100, json_schema_extra=UNIQUE)
    description: LongText = ""


class DealEventIn(Strict):
    deal_id: UUID


class PledgeMadeIn(DealEventIn):
    pledge_id: Identifier | None = None
    firm: Code
    amount: AmountIn
    rate: RateIn | None = None


class PledgeRevisedIn(DealEventIn):
    pledge_id: Identifier
    amount: AmountIn
    rate: RateIn | None = None
    reason: LongText = ""


class PledgeWithdrawnIn(DealEventIn):
    pledge_id: Identifier
    reason: LongText = ""


class TechTransferSignedIn(DealEventIn):
    technology: Text
    licensor: Code
    licensee: Code


class JointVentureFormedIn(DealEventIn):
    venture_name: Text
    equity: dict[Code, Percent] = Field(
        min_length=2, max_length=100, json_schema_extra=FIRM_CODE_KEYS,
        description="Percent of the venture each party owns; adds up to 100",
    )


class FacilityAnnouncedIn(DealEventIn):
    facility: Text
    location: Text
    capacity: OptionalText = ""
    materials: list[ShortText] = Field(default=[], max_length=50)


class DealCancelledIn(DealEventIn):
    reason: Reason


class SubmissionBase(Strict):
    # Left out of the fingerprint (excluded from dumps): a v1 submission means the same with
    # or without it, and retries of events recorded before the field existed still replay.
    schema_version: Annotated[Literal[1], SCHEMA_VERSION_CHECK] = Field(
        default=1, exclude=True,
        description="1, or left out: this version. Pledge submissions in v1 are deprecated "
                    "(answered with a Deprecation header); send schema_version 2",
    )
    event_id: str = Field(
        min_length=1,
        max_length=128,
        pattern=ID_PATTERN,
        description="The partner's unique id for this event; a retry must reuse it",
    )
    occurred_at: OccurredAt = Field(description="When it happened in the world")
    expected_version: Version | None = Field(
        default=None,
        description="The aggregate version the partner last saw; a stale one gets 409",
    )


class FirmRegisteredSubmission(SubmissionBase):
    type: Literal["firm_registered"]
    payload: FirmRegisteredIn


class MeetingHeldSubmission(SubmissionBase):
    type: Literal["meeting_held"]
    payload: MeetingHeldIn


class DealProposedSubmission(SubmissionBase):
    type: Literal["deal_proposed"]
    payload: DealProposedIn


class PledgeMadeSubmission(SubmissionBase):
    type: Literal["pledge_made"]
    payload: PledgeMadeIn


class PledgeRevisedSubmission(SubmissionBase):
    type: Literal["pledge_revised"]
    payload: PledgeRevisedIn


class PledgeWithdrawnSubmission(SubmissionBase):
    type: Literal["pledge_withdrawn"]
    payload: PledgeWithdrawnIn


class TechTransferSignedSubmission(SubmissionBase):
    type: Literal["tech_transfer_signed"]
    payload: TechTransferSignedIn


class JointVentureFormedSubmission(SubmissionBase):
    type: Literal["joint_venture_formed"]
    payload: JointVentureFormedIn


class FacilityAnnouncedSubmission(SubmissionBase):
    type: Literal["facility_announced"]
    payload: FacilityAnnouncedIn


class DealCancelledSubmission(SubmissionBase):
    type: Literal["deal_cancelled"]
    payload: DealCancelledIn


Submission = Annotated[
    FirmRegisteredSubmission
    | MeetingHeldSubmission
    | DealProposedSubmission
    | PledgeMadeSubmission
    | PledgeRevisedSubmission
    | PledgeWithdrawnSubmission
    | TechTransferSignedSubmission
    | JointVentureFormedSubmission
    | FacilityAnnouncedSubmission
    | DealCancelledSubmission,
    Field(discriminator="type"),
]


class Receipt(BaseModel):
    """What the registry answers for an accepted event, and again for a retry of it."""

    event_id: str
    type: str
    aggregate_id: UUID
    aggregate_version: int = Field(ge=1)
    position: int = Field(ge=1, description="Position of the event in the registry's log")
    recorded_at: str
    recorded_by: str
    replayed: bool = Field(
        default=False, description="True when this answers a retry of an accepted event"
    )
    tree_size: int | None = Field(
        default=None, ge=1,
        description="the size of the first signed tree head that covers this event: any tree "
                    "head at least this large includes it; see GET /v1/audit/proof/inclusion",
    )
