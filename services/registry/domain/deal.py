"""A cross-border deal: its format, its parties, the pledges made to it and how it ends."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from uuid import UUID

from services.registry.domain.errors import InvalidValue, StateConflict, UnknownReference
from services.registry.domain.recorded import (
    GENESIS_HASH,
    Provenance,
    RecordedAggregate,
    RecordedEvent,
)
from services.registry.domain.values import (
    NOT_STATED,
    AmountRange,
    DealFormat,
    DealStatus,
    PledgeTerms,
    Sector,
    Tranche,
    UsdConversion,
    parse_enum,
    require_schedule_within,
    require_text,
)

MAX_PARTIES = 100
HUNDRED = Decimal(100)


@dataclass
class Pledge:
    pledge_id: str
    firm: str
    amount: AmountRange
    usd: UsdConversion
    withdrawn: bool = False
    # The terms (event schema v2); a snapshot taken before them restores the defaults.
    instrument: str | None = None
    tranches: tuple[Tranche, ...] = ()

    def __post_init__(self) -> None:
        self.tranches = tuple(self.tranches)  # a snapshot restores a JSON list

    def __deepcopy__(self, memo: dict[int, Any]) -> Pledge:
        # Amounts are frozen values, so a copy may share them: copying a deal with hundreds
        # of pledges for each decision must not copy every Decimal in it.
        return Pledge(self.pledge_id, self.firm, self.amount, self.usd, self.withdrawn,
                      self.instrument, self.tranches)

    @property
    def terms(self) -> PledgeTerms:
        return PledgeTerms(self.instrument, self.tranches)

    def take_terms(self, terms: PledgeTerms) -> None:
        self.instrument = terms.instrument
        self.tranches = terms.tranches


def _amount_fields(amount: AmountRange, usd: UsdConversion) -> dict[str, Any]:
    return {
        "amount_low": amount.low,
        "amount_high": amount.high,
        "currency": amount.currency,
        "usd_low": usd.low,
        "usd_high": usd.high,
        "units_per_usd": usd.units_per_usd,
        "rate_source": usd.source,
    }


class PledgeAmountEvent(RecordedEvent):
    """Fields shared by the events that set a pledge's amount and terms.

    Class version 2 added the terms: `instrument` (an Instrument's value; None: not stated)
    and `tranches` (each {"due_date": ISO date, "amount": Decimal in the pledge's currency},
    dates ascending; possibly none). Each event states the pledge's terms after it. An event
    stored at version 1 is read through `upcast_v1_v2`: no instrument, no tranches, which is
    what the pledge then had, and the hash it was chained with."""

    pledge_id: str
    amount_low: Decimal
    amount_high: Decimal
    currency: str
    usd_low: Decimal
    usd_high: Decimal
    units_per_usd: Decimal
    rate_source: str
    instrument: str | None
    tranches: list[dict[str, Any]]

    @classmethod
    def upcast_v1_v2(cls, state: dict[str, Any]) -> None:
        cls.remember_written_state(state, 1)
        state["instrument"] = None  # v1 did not say
        state["tranches"] = []

    def amount(self) -> AmountRange:
        return AmountRange(self.amount_low, self.amount_high, self.currency)

    def usd(self) -> UsdConversion:
        return UsdConversion(self.usd_low, self.usd_high, self.units_per_usd, self.rate_source)

    def terms(self) -> PledgeTerms:
        return PledgeTerms(self.instrument,
                           tuple(Tranche.of_event_field(t) for t in self.tranches))


class Deal(RecordedAggregate):
    TOPIC = "dealregistry:Deal"

    class Created(RecordedAggregate.Created):
        """Unused; eventsourcing requires every inherited event class to carry a topic."""

        TOPIC = "dealregistry:Deal.Created"

    class Proposed(RecordedAggregate.Created, RecordedEvent):
        TOPIC = "dealregistry:DealProposed.v1"
        title: str
        format: str
        sector: str
        parties: list[str]
        description: str

        def evolve(self, aggregate: Any) -> None:
            aggregate.title = self.title
            aggregate.format = self.format
            aggregate.sector = self.sector
            aggregate.parties = list(self.parties)
            aggregate.description = self.description

    class PledgeMade(PledgeAmountEvent):
        # The stored topic names the class; class_version carries its version.
        TOPIC = "dealregistry:PledgeMade.v1"
        class_version = 2
        firm: str
        # Carried on the event so consumers need no other aggregate's events to place the
        # pledge: the firm's events may sit in another partition and arrive later.
        firm_country: str

        def evolve(self, aggregate: Any) -> None:
            terms = self.terms()
            aggregate.pledges[self.pledge_id] = Pledge(
                self.pledge_id, self.firm, self.amount(), self.usd(),
                instrument=terms.instrument, tranches=terms.tranches,
            )

    class PledgeRevised(PledgeAmountEvent):
        TOPIC = "dealregistry:PledgeRevised.v1"
        class_version = 2
        reason: str

        def evolve(self, aggregate: Any) -> None:
            pledge = aggregate.pledges[self.pledge_id]
            pledge.amount = self.amount()
            pledge.usd = self.usd()
            pledge.take_terms(self.terms())

    class PledgeWithdrawn(RecordedEvent):
        TOPIC = "dealregistry:PledgeWithdrawn.v1"
        pledge_id: str
        reason: str

        def evolve(self, aggregate: Any) -> None:
            aggregate.pledges[self.pledge_id].withdrawn = True

    class TechTransferSigned(RecordedEvent):
        TOPIC = "dealregistry:TechTransferSigned.v1"
        technology: str
        licensor: str
        licensee: str

        def evolve(self, aggregate: Any) -> None:
            aggregate.tech_transfer = {
                "technology": self.technology,
                "licensor": self.licensor,
                "licensee": self.licensee,
            }
            aggregate.status = DealStatus.AGREED.value

    class JointVentureFormed(RecordedEvent):
        TOPIC = "dealregistry:JointVentureFormed.v1"
        venture_name: str
        equity: dict[str, Decimal]

        def evolve(self, aggregate: Any) -> None:
            aggregate.joint_venture = {"venture_name": self.venture_name, "equity": self.equity}
            aggregate.status = DealStatus.AGREED.value

    class FacilityAnnounced(RecordedEvent):
        TOPIC = "dealregistry:FacilityAnnounced.v1"
        facility: str
        location: str
        capacity: str
        materials: list[str]

        def evolve(self, aggregate: Any) -> None:
            aggregate.facility = {
                "facility": self.facility,
                "location": self.location,
                "capacity": self.capacity,
                "materials": list(self.materials),
            }
            aggregate.status = DealStatus.AGREED.value

    class Cancelled(RecordedEvent):
        TOPIC = "dealregistry:DealCancelled.v1"
        reason: str

        def evolve(self, aggregate: Any) -> None:
            aggregate.status = DealStatus.CANCELLED.value
            aggregate.cancellation_reason = self.reason

    def __init__(self, **_: Any) -> None:
        # Set by Proposed.evolve; declared here so every attribute has one home.
        self.title = ""
        self.format = ""
        self.sector = ""
        self.parties: list[str] = []
        self.description = ""
        self.status = DealStatus.PROPOSED.value
        self.pledges: dict[str, Pledge] = {}
        self.tech_transfer: dict[str, str] | None = None
        self.joint_venture: dict[str, Any] | None = None
        self.facility: dict[str, Any] | None = None
        self.cancellation_reason = ""

    @classmethod
    def propose(
        cls,
        deal_id: UUID,
        title: str,
        format: str,
        sector: str,
        parties: list[str],
        description: str,
        provenance: Provenance,
    ) -> Deal:
        """Parties are firm codes the caller has checked are registered."""
        if not parties:
            raise InvalidValue("parties", "min_items", "a deal needs at least one party")
        if len(parties) > MAX_PARTIES:
            raise InvalidValue("parties", "max_items", f"a deal has at most {MAX_PARTIES} parties")
        if len(set(parties)) != len(parties):
            raise InvalidValue("parties", "unique", "parties must not repeat")
        return cls._create(
            cls.Proposed,
            id=deal_id,
            title=require_text(title, "title"),
            format=parse_enum(DealFormat, format, "format").value,
            sector=parse_enum(Sector, sector, "sector").value,
            parties=list(parties),
            description=description.strip()[:4000],
            previous_hash=GENESIS_HASH,
            **provenance.as_event_fields(),
        )

    # Rules that every change after the proposal shares.

    def _require_open(self) -> None:
        if self.status == DealStatus.CANCELLED.value:
            raise StateConflict("deal_id", "deal_not_cancelled", "the deal has been cancelled")

    def _require_party(self, firm: str, field: str) -> None:
        if firm not in self.parties:
            raise InvalidValue(field, "is_party", f"{field} {firm!r} is not a party to this deal")

    def _require_format(self, allowed: set[DealFormat], what: str) -> None:
        if self.format not in allowed:
            names = " or ".join(sorted(f.value for f in allowed))
            raise StateConflict(
                "type", "deal_format", f"{what} needs a {names} deal, this one is {self.format}"
            )

    def _active_pledge(self, pledge_id: str) -> Pledge:
        pledge = self.pledges.get(pledge_id)
        if pledge is None:
            raise UnknownReference("pledge_id", "exists", f"no pledge {pledge_id!r} on this deal")
        if pledge.withdrawn:
            raise StateConflict(
                "pledge_id", "pledge_not_withdrawn", f"pledge {pledge_id!r} has been withdrawn"
            )
        return pledge

    # Commands.

    def make_pledge(
        self,
        pledge_id: str,
        firm: str,
        firm_country: str,
        amount: AmountRange,
        usd: UsdConversion,
        provenance: Provenance,
        terms: PledgeTerms = NOT_STATED,
    ) -> None:
        """`terms` as stated (PledgeTerms.of); the default states none (a v1 submission)."""
        self._require_open()
        pledge_id = require_text(pledge_id, "pledge_id", 100)
        if pledge_id in self.pledges:
            raise StateConflict("pledge_id", "unique", f"pledge {pledge_id!r} already exists")
        self._require_party(firm, "firm")
        require_schedule_within(terms.tranches, amount, "tranches", "sum_le_high")
        self.record(
            self.PledgeMade, provenance, pledge_id=pledge_id, firm=firm,
            firm_country=firm_country, **_amount_fields(amount, usd), **terms.event_fields(),
        )

    def revise_pledge(
        self,
        pledge_id: str,
        amount: AmountRange,
        usd: UsdConversion,
        reason: str,
        provenance: Provenance,
        terms: PledgeTerms | None = None,
    ) -> None:
        """A new amount, and new terms if `terms` are given (a v2 submission states them in
        full); without them (a v1 submission) the pledge keeps its instrument and schedule,
        which must still fit within the new amount. The event states the terms after it."""
        self._require_open()
        pledge = self._active_pledge(pledge_id)
        if terms is None:
            if pledge.amount == amount:
                raise StateConflict("amount", "changed",
                                    "the revision repeats the current amount")
            terms = pledge.terms
            require_schedule_within(terms.tranches, amount, "amount.high", "covers_tranches")
        else:
            if pledge.amount == amount and pledge.terms == terms:
                raise StateConflict("amount", "changed", "the revision repeats the current "
                                    "amount, instrument and tranches")
            require_schedule_within(terms.tranches, amount, "tranches", "sum_le_high")
        self.record(
            self.PledgeRevised, provenance, pledge_id=pledge_id, reason=reason.strip()[:2000],
            **_amount_fields(amount, usd), **terms.event_fields(),
        )

    def withdraw_pledge(self, pledge_id: str, reason: str, provenance: Provenance) -> None:
        self._require_open()
        self._active_pledge(pledge_id)
        self.record(
            self.PledgeWithdrawn, provenance, pledge_id=pledge_id, reason=reason.strip()[:2000]
        )

    def sign_tech_transfer(
        self, technology: str, licensor: str, licensee: str, provenance: Provenance
    ) -> None:
        self._require_open()
        self._require_format(
            {DealFormat.TECHNOLOGY_TRANSFER, DealFormat.JOINT_VENTURE}, "a tech transfer"
        )
        if self.tech_transfer is not None:
            raise StateConflict("type", "once", "the tech transfer has already been signed")
        self._require_party(licensor, "licensor")
        self._require_party(licensee, "licensee")
        if licensor == licensee:
            raise InvalidValue("licensee", "differs", "licensor and licensee must differ")
        self.record(
            self.TechTransferSigned, provenance,
            technology=require_text(technology, "technology"),
            licensor=licensor, licensee=licensee,
        )

    def form_joint_venture(
        self, venture_name: str, equity: dict[str, Decimal], provenance: Provenance
    ) -> None:
        self._require_open()
        self._require_format({DealFormat.JOINT_VENTURE}, "forming a joint venture")
        if self.joint_venture is not None:
            raise StateConflict("type", "once", "the joint venture has already been formed")
        if len(equity) < 2:
            raise InvalidValue("equity", "min_items", "a joint venture has at least two owners")
        for firm, share in equity.items():
            self._require_party(firm, f"equity.{firm}")
            if not share.is_finite() or share <= 0 or share > HUNDRED:
                raise InvalidValue(
                    f"equity.{firm}", "percent", "each share must be > 0 and <= 100"
                )
        if sum(equity.values()) != HUNDRED:
            raise InvalidValue("equity", "sums_to_100", "equity shares must add up to 100")
        self.record(
            self.JointVentureFormed, provenance,
            venture_name=require_text(venture_name, "venture_name"), equity=dict(equity),
        )

    def announce_facility(
        self,
        facility: str,
        location: str,
        capacity: str,
        materials: list[str],
        provenance: Provenance,
    ) -> None:
        self._require_open()
        self._require_format({DealFormat.PROCESSING_FACILITY}, "announcing a facility")
        if self.facility is not None:
            raise StateConflict("type", "once", "the facility has already been announced")
        self.record(
            self.FacilityAnnounced, provenance,
            facility=require_text(facility, "facility"),
            location=require_text(location, "location"),
            capacity=capacity.strip()[:200],
            materials=[require_text(m, "materials", 100) for m in materials],
        )

    def cancel(self, reason: str, provenance: Provenance) -> None:
        self._require_open()
        self.record(self.Cancelled, provenance, reason=require_text(reason, "reason", 2000))

    def active_pledges(self) -> list[Pledge]:
        if self.status == DealStatus.CANCELLED.value:
            return []
        return [p for p in self.pledges.values() if not p.withdrawn]
