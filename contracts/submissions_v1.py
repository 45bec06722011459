"""Version 1 of what partner systems POST to the registry: one event per request.

The `type` field selects the payload model. Shapes are checked here; business rules
(a low amount above the high one, a pledge on a cancelled deal) are the registry's to judge.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

Code = Annotated[str, Field(min_length=3, max_length=64, examples=["tata-motors"])]
Text = Annotated[str, Field(max_length=200)]
LongText = Annotated[str, Field(max_length=4000)]
Amount = Annotated[Decimal, Field(max_digits=24, decimal_places=6, allow_inf_nan=False)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AmountIn(Strict):
    low: Amount
    high: Amount
    currency: str = Field(min_length=3, max_length=3, examples=["USD", "INR", "JPY"])


class RateIn(Strict):
    """Optional conversion given by the partner; without it the registry's reference rate
    applies. `units_per_usd` is how many units of the pledge currency buy one dollar."""

    units_per_usd: Amount
    rate_source: Text


class FirmRegisteredIn(Strict):
    code: Code
    name: Text
    country: str = Field(min_length=2, max_length=2, examples=["JP", "IN"])
    kind: str = Field(max_length=40, examples=["automaker", "private_equity"])


class MeetingHeldIn(Strict):
    meeting_id: UUID | None = None
    title: Text
    location: Text
    closed_door: bool = False
    attendees: list[Code] = Field(max_length=500)
    government_bodies: list[Text] = Field(default=[], max_length=100)
    sectors: list[str] = Field(default=[], max_length=10)
    summary: LongText = ""


class DealProposedIn(Strict):
    deal_id: UUID | None = None
    title: Text
    format: str = Field(max_length=40, examples=["joint_venture"])
    sector: str = Field(max_length=40, examples=["recycling"])
    parties: list[Code] = Field(max_length=100)
    description: LongText = ""


class DealEventIn(Strict):
    deal_id: UUID


class PledgeMadeIn(DealEventIn):
    pledge_id: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    firm: Code
    amount: AmountIn
    rate: RateIn | None = None


class PledgeRevisedIn(DealEventIn):
    pledge_id: Annotated[str, Field(min_length=1, max_length=100)]
    amount: AmountIn
    rate: RateIn | None = None
    reason: LongText = ""


class PledgeWithdrawnIn(DealEventIn):
    pledge_id: Annotated[str, Field(min_length=1, max_length=100)]
    reason: LongText = ""


class TechTransferSignedIn(DealEventIn):
    technology: Text
    licensor: Code
    licensee: Code


class JointVentureFormedIn(DealEventIn):
    venture_name: Text
    equity: dict[Code, Annotated[Decimal, Field(max_digits=9, decimal_places=4)]] = Field(
        max_length=100, description="Percent of the venture each party owns; adds up to 100"
    )


class FacilityAnnouncedIn(DealEventIn):
    facility: Text
    location: Text
    capacity: Text = ""
    materials: list[Annotated[str, Field(max_length=100)]] = Field(default=[], max_length=50)


class DealCancelledIn(DealEventIn):
    reason: LongText


class SubmissionBase(Strict):
    event_id: str = Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:\-]*$",
        description="The partner's unique id for this event; a retry must reuse it",
    )
    occurred_at: AwareDatetime = Field(description="When it happened in the world")
    expected_version: int | None = Field(
        default=None,
        ge=0,
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
