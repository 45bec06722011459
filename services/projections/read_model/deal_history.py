"""Past state of deals, folded from their recorded history: no SQL, no stored state.

The fold applies a deal's events in log order with the projector's rules (a pledge counts
while it is active and its deal is not cancelled; an agreement makes a proposed deal agreed;
a cancelled deal stays cancelled), producing the same rows the projector keeps in rm_deals
and rm_pledges. Views of those rows therefore have the live views' shape (`views`).

Two clocks pick the events: a log prefix (what the registry knew at a position) or, within
it, the events that occurred at or before a business time (what was true then, as best known
now). Filtering by business time can leave an event without its referent, e.g. a revision of
a pledge made later: such an event is skipped, because at that time there was nothing to
revise.

Payloads are read in their type's newest schema version (contracts.events_v2): a pledge event
published at v1 is upcast (instrument null, no tranches), so past views give the instrument
and schedule each pledge had at that point.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Protocol
from uuid import UUID

from contracts.events_v1 import (
    DealCancelled,
    DealProposed,
    EventEnvelope,
    EventType,
    FacilityAnnounced,
    JointVentureFormed,
    PledgeWithdrawn,
    TechTransferSigned,
)
from contracts.events_v2 import (
    PAYLOAD_MODELS,
    PledgeMade,
    PledgeRevised,
    Tranche,
    upcast_payload,
)
from services.projections.read_model.indian_money import decimal_text
from services.projections.read_model.tables import (
    INSTRUMENT_NOT_STATED,
    DealStatus,
    PledgeStatus,
    TotalsDimension,
    exact_arithmetic,
)

AMOUNTS = ("low", "high", "usd_low", "usd_high")


@dataclass(frozen=True)
class HistoryEvent:
    """One event of a deal's history, as kept in rm_deal_events or carried by an envelope;
    its payload in its type's newest schema version."""

    position: int
    deal_id: UUID
    version: int
    type: EventType
    occurred_at: datetime
    payload: Mapping[str, Any]

    @classmethod
    def of_envelope(cls, envelope: EventEnvelope) -> HistoryEvent:
        """From an envelope of any schema version (a v1 envelope has no newer one)."""
        return cls(envelope.position, envelope.aggregate_id, envelope.aggregate_version,
                   envelope.type, envelope.occurred_at.astimezone(UTC),
                   upcast_payload(envelope.type, envelope.schema_version, envelope.payload))

    @classmethod
    def of_row(cls, row: Mapping[Any, Any]) -> HistoryEvent:
        """From the columns of rm_deal_events, which keep payloads as `of_envelope` reads
        them; a row projected before event schema v2 holds a v1 payload, which
        `upcast_payload` completes (it adds only what a payload lacks)."""
        event_type = EventType(row["type"])
        return cls(row["position"], row["deal_id"], row["aggregate_version"], event_type,
                   row["occurred_at"].astimezone(UTC),
                   upcast_payload(event_type, 1, row["payload"]))


@dataclass(frozen=True)
class PastBound:
    """Which recorded events a past view applies: those at log positions up to `position`,
    and of those, when `occurred_until` is given, only the ones that occurred by then."""

    position: int
    occurred_until: datetime | None = None

    def admits(self, event: HistoryEvent) -> bool:
        return event.position <= self.position and (
            self.occurred_until is None or event.occurred_at <= self.occurred_until
        )


@dataclass
class DealState:
    """A deal at some point of its history: its rm_deals row and its rm_pledges rows."""

    deal: dict[str, Any]
    pledges: dict[str, dict[str, Any]] = field(default_factory=dict)  # by pledge id, in order made


class PledgeChanges(Protocol):
    """Told of every pledge change, so that a caller can keep totals and write changed rows."""

    def counted(self, pledge: dict[str, Any], sign: int) -> None:
        """The pledge enters (+1) or leaves (-1) the totals, with its amounts at that moment."""

    def changed(self, pledge: dict[str, Any]) -> None:
        """An existing pledge row changed."""


class IgnoreChanges:
    def counted(self, pledge: dict[str, Any], sign: int) -> None:
        pass

    def changed(self, pledge: dict[str, Any]) -> None:
        pass


# Each applier changes the states and returns None, or says why the event does not apply.
Applier = Callable[[dict[UUID, DealState], HistoryEvent, Any, PledgeChanges], str | None]


def apply_deal_event(
    states: dict[UUID, DealState], event: HistoryEvent, payload: Any, changes: PledgeChanges
) -> str | None:
    """Apply one deal event (with its typed payload) to the states: the one set of rules for
    the live read model (the projector) and for past views (`fold_deals`). Returns None, or
    why the event does not apply (its deal or pledge is unknown, or it would make one twice)."""
    refusal = APPLIERS[event.type](states, event, payload, changes)
    if refusal is None:
        states[event.deal_id].deal.update(
            version=event.version, updated_at=event.occurred_at, last_position=event.position,
        )
    return refusal


def fold_deals(events: Iterable[HistoryEvent], bound: PastBound | None = None
               ) -> dict[UUID, DealState]:
    """Every deal's state after the events `bound` admits (all if None), applied in log order.

    Non-deal events are ignored; an event whose deal or pledge does not exist at that point
    is skipped."""
    states: dict[UUID, DealState] = {}
    ignore = IgnoreChanges()
    for event in sorted(events, key=lambda e: e.position):
        if event.type not in APPLIERS or (bound is not None and not bound.admits(event)):
            continue
        payload = PAYLOAD_MODELS[event.type].model_validate(dict(event.payload))
        apply_deal_event(states, event, payload, ignore)
    return states


def counted_totals(states: Iterable[DealState], dimension: TotalsDimension
                  ) -> dict[str, list[dict[str, Any]]]:
    """Totals of counted pledges per group key, then per currency, both in sorted order; each
    entry has the columns of rm_pledge_totals. Sums are exact or raise decimal.Inexact."""
    sums: dict[tuple[str, str], dict[str, Any]] = {}
    with exact_arithmetic():
        for state in states:
            for pledge in state.pledges.values():
                if not pledge["counted"]:
                    continue
                key = (_group_key(pledge, dimension), pledge["currency"])
                entry = sums.get(key)
                if entry is None:
                    entry = sums[key] = {"currency": pledge["currency"], "pledge_count": 0,
                                         **{amount: Decimal(0) for amount in AMOUNTS}}
                entry["pledge_count"] += 1
                for amount in AMOUNTS:
                    entry[amount] += pledge[amount]
    groups: dict[str, list[dict[str, Any]]] = {}
    for (group_key, _), entry in sorted(sums.items()):
        groups.setdefault(group_key, []).append(entry)
    return groups


# A totals group: (dimension, group key, currency).
Group = tuple[str, str, str]
# A change of one group's totals: count, then AMOUNTS in order.
Amounts = tuple[int, Decimal, Decimal, Decimal, Decimal]


def business_day(moment: datetime) -> date:
    """The UTC day an event takes effect on for `as_of` (a date means the end of that day)."""
    return moment.astimezone(UTC).date()


def pledge_groups(pledge: Mapping[str, Any]) -> tuple[Group, ...]:
    """The totals groups a counted pledge belongs to, one per dimension (in the order of
    TotalsDimension)."""
    # Spelled out rather than looped over the enum: this runs for every pledge change.
    currency = pledge["currency"]
    instrument = pledge["instrument"]
    return ((_SECTOR, str(pledge["sector"]), currency),
            (_FIRM, str(pledge["firm_code"]), currency),
            (_COUNTRY, str(pledge["firm_country"]), currency),
            (_INSTRUMENT, INSTRUMENT_NOT_STATED if instrument is None else instrument,
             currency))


_SECTOR, _FIRM, _COUNTRY, _INSTRUMENT = (TotalsDimension.SECTOR.value,
                                         TotalsDimension.FIRM.value,
                                         TotalsDimension.COUNTRY.value,
                                         TotalsDimension.INSTRUMENT.value)


def instrument_group(instrument: str | None) -> str:
    """The instrument totals group of a pledge's instrument (None: not stated)."""
    return INSTRUMENT_NOT_STATED if instrument is None else instrument


def tranche_rows(tranches: Sequence[Tranche]) -> list[dict[str, str]]:
    """A schedule as rm_pledges keeps it (JSON): ISO due dates, amounts as decimal text."""
    return [{"due_date": t.due_date.isoformat(), "amount": decimal_text(t.amount)}
            for t in tranches]


def _contributions(states: Iterable[DealState]) -> dict[Group, list[Any]]:
    """What the counted pledges of `states` add to each group: [count, *AMOUNTS]."""
    sums: dict[Group, list[Any]] = {}
    for state in states:
        for pledge in state.pledges.values():
            if not pledge["counted"]:
                continue
            for group in pledge_groups(pledge):
                entry = sums.setdefault(group, [0, *(Decimal(0) for _ in AMOUNTS)])
                entry[0] += 1
                for n, amount in enumerate(AMOUNTS, 1):
                    entry[n] += pledge[amount]
    return sums


TypedEvent = tuple[HistoryEvent, Any]  # an event with its validated payload


def typed(event: HistoryEvent) -> TypedEvent:
    return event, PAYLOAD_MODELS[event.type].model_validate(dict(event.payload))


def _contributions_by_day(events: Sequence[TypedEvent], days: Sequence[date]
                          ) -> list[dict[Group, list[Any]]]:
    """For each of `days` (ascending), the groups' contributions of the deals folded from
    the events of `events` (in log order) that took effect by the end of that day.

    Folds once and goes on applying while the events admitted by the next day all come after
    those applied already in log order (the usual case); folds again from scratch otherwise."""
    ordered = sorted(events, key=lambda typed_event: typed_event[0].position)
    ignore = IgnoreChanges()
    states: dict[UUID, DealState] = {}
    applied: set[int] = set()
    last = 0
    found = []
    for day in days:
        admitted = [(e, p) for e, p in ordered if business_day(e.occurred_at) <= day
                    and e.position not in applied]
        if admitted and admitted[0][0].position < last:
            states, applied, last = {}, set(), 0
            admitted = [(e, p) for e, p in ordered if business_day(e.occurred_at) <= day]
        for e, p in admitted:
            apply_deal_event(states, e, p, ignore)
            applied.add(e.position)
            last = e.position
        found.append(_contributions(states.values()))
    return found


def ledger_changes(before: Sequence[TypedEvent], new: Sequence[TypedEvent]
                   ) -> dict[tuple[date, Group], list[Any]]:
    """How appending `new` to the deal histories `before` changes the pledge ledger: per
    (business day, group), the change of that day's delta, [count, *AMOUNTS].

    The ledger holds, per day D, totals(as_of end of D) - totals(as_of end of D-1), where the
    totals as of D are folded from the events that took effect by D, in log order (as
    `fold_deals` does). An event may take effect before events recorded earlier, and then
    change how they apply (a revision recorded later but dated earlier than the pledge is
    skipped until the pledge is made), so the change is found by folding both histories at
    every day from the earliest new one on where either can change. Exact decimal context
    expected."""
    if not new:
        return {}
    since = min(business_day(e.occurred_at) for e, _ in new)
    after = [*before, *new]
    days = sorted({d for e, _ in after if (d := business_day(e.occurred_at)) >= since})
    return _day_differences(days, _contributions_by_day(before, days),
                            _contributions_by_day(after, days))


def _day_differences(days: Sequence[date], old: Sequence[dict[Group, list[Any]]],
                     now: Sequence[dict[Group, list[Any]]]
                     ) -> dict[tuple[date, Group], list[Any]]:
    """The ledger's changes from contributions at each of `days` before and after."""
    changes: dict[tuple[date, Group], list[Any]] = {}

    def add(day: date, group: Group, values: Sequence[Any], sign: int) -> None:
        entry = changes.setdefault((day, group), [0, *(Decimal(0) for _ in AMOUNTS)])
        for n, value in enumerate(values):
            entry[n] += sign * value

    for n, day in enumerate(days):
        # The difference at `day` holds until the next day's, where it is taken back.
        for group in old[n].keys() | now[n].keys():
            zero = [0, *(Decimal(0) for _ in AMOUNTS)]
            difference = [a - b for a, b in zip(now[n].get(group, zero),
                                               old[n].get(group, zero), strict=True)]
            if not any(difference):
                continue
            add(day, group, difference, +1)
            if n + 1 < len(days):
                add(days[n + 1], group, difference, -1)
    return {key: values for key, values in changes.items() if any(values)}


def _group_key(pledge: Mapping[str, Any], dimension: TotalsDimension) -> str:
    if dimension is TotalsDimension.INSTRUMENT:
        return instrument_group(pledge["instrument"])
    column = {TotalsDimension.SECTOR: "sector", TotalsDimension.FIRM: "firm_code",
              TotalsDimension.COUNTRY: "firm_country"}[dimension]
    return str(pledge[column])


def _deal_proposed(states: dict[UUID, DealState], e: HistoryEvent, p: DealProposed,
                   changes: PledgeChanges) -> str | None:
    if e.deal_id in states:
        return f"proposes deal {e.deal_id} a second time"
    states[e.deal_id] = DealState(dict(
        deal_id=e.deal_id, title=p.title, format=p.format, sector=p.sector,
        status=DealStatus.PROPOSED.value, parties=list(p.parties), description=p.description,
        version=e.version, proposed_at=e.occurred_at, updated_at=e.occurred_at,
        proposed_position=e.position, last_position=e.position,
        tech_transfers=[], joint_ventures=[], facilities=[], cancellation=None,
    ))
    return None


def _tech_transfer_signed(states: dict[UUID, DealState], e: HistoryEvent,
                          p: TechTransferSigned, changes: PledgeChanges) -> str | None:
    detail = {**p.model_dump(mode="json"), "signed_at": e.occurred_at.isoformat()}
    return _add_agreement(states, e.deal_id, "tech_transfers", detail)


def _joint_venture_formed(states: dict[UUID, DealState], e: HistoryEvent,
                          p: JointVentureFormed, changes: PledgeChanges) -> str | None:
    detail = {
        "venture_name": p.venture_name,
        "equity": {firm: str(share) for firm, share in p.equity.items()},
        "formed_at": e.occurred_at.isoformat(),
    }
    return _add_agreement(states, e.deal_id, "joint_ventures", detail)


def _facility_announced(states: dict[UUID, DealState], e: HistoryEvent,
                        p: FacilityAnnounced, changes: PledgeChanges) -> str | None:
    detail = {**p.model_dump(mode="json"), "announced_at": e.occurred_at.isoformat()}
    return _add_agreement(states, e.deal_id, "facilities", detail)


def _add_agreement(states: dict[UUID, DealState], deal_id: UUID, column: str,
                   detail: dict[str, Any]) -> str | None:
    state = states.get(deal_id)
    if state is None:
        return _unknown_deal(deal_id)
    # A cancelled deal stays cancelled; the registry should not send this, but never revive.
    if state.deal["status"] != DealStatus.CANCELLED:
        state.deal["status"] = DealStatus.AGREED.value
    state.deal[column] = [*state.deal[column], detail]
    return None


def _deal_cancelled(states: dict[UUID, DealState], e: HistoryEvent, p: DealCancelled,
                    changes: PledgeChanges) -> str | None:
    state = states.get(e.deal_id)
    if state is None:
        return _unknown_deal(e.deal_id)
    for pledge in state.pledges.values():
        if pledge["counted"]:
            changes.counted(pledge, -1)
            pledge["counted"] = False
            changes.changed(pledge)
    state.deal["status"] = DealStatus.CANCELLED.value
    state.deal["cancellation"] = {"reason": p.reason, "cancelled_at": e.occurred_at.isoformat()}
    return None


def _pledge_made(states: dict[UUID, DealState], e: HistoryEvent, p: PledgeMade,
                 changes: PledgeChanges) -> str | None:
    state = states.get(e.deal_id)
    if state is None:
        return _unknown_deal(e.deal_id)
    if p.pledge_id in state.pledges:
        return f"makes pledge {p.pledge_id} of deal {e.deal_id} a second time"
    pledge = state.pledges[p.pledge_id] = dict(
        deal_id=e.deal_id, pledge_id=p.pledge_id, firm_code=p.firm,
        firm_country=p.firm_country, sector=state.deal["sector"], currency=p.amount.currency,
        low=p.amount.low, high=p.amount.high, usd_low=p.usd.low, usd_high=p.usd.high,
        units_per_usd=p.usd.units_per_usd, rate_source=p.usd.rate_source,
        instrument=None if p.instrument is None else p.instrument.value,
        tranches=tranche_rows(p.tranches),
        status=PledgeStatus.ACTIVE.value,
        counted=state.deal["status"] != DealStatus.CANCELLED,
        made_at=e.occurred_at, revisions=0, revised_at=None, revision_reason=None,
        withdrawn_at=None, withdrawal_reason=None, position=e.position,
    )
    if pledge["counted"]:
        changes.counted(pledge, +1)
    return None


def _pledge_revised(states: dict[UUID, DealState], e: HistoryEvent, p: PledgeRevised,
                    changes: PledgeChanges) -> str | None:
    pledge = _pledge(states, e.deal_id, p.pledge_id)
    if isinstance(pledge, str):
        return pledge
    if pledge["counted"]:
        changes.counted(pledge, -1)
    pledge.update(
        currency=p.amount.currency, low=p.amount.low, high=p.amount.high,
        usd_low=p.usd.low, usd_high=p.usd.high, units_per_usd=p.usd.units_per_usd,
        rate_source=p.usd.rate_source,
        # A revision states the terms after it (one submitted in v1 repeats those it kept).
        instrument=None if p.instrument is None else p.instrument.value,
        tranches=tranche_rows(p.tranches), revisions=pledge["revisions"] + 1,
        revised_at=e.occurred_at, revision_reason=p.reason,
    )
    if pledge["counted"]:
        changes.counted(pledge, +1)
    changes.changed(pledge)
    return None


def _pledge_withdrawn(states: dict[UUID, DealState], e: HistoryEvent, p: PledgeWithdrawn,
                      changes: PledgeChanges) -> str | None:
    pledge = _pledge(states, e.deal_id, p.pledge_id)
    if isinstance(pledge, str):
        return pledge
    if pledge["counted"]:
        changes.counted(pledge, -1)
    pledge.update(status=PledgeStatus.WITHDRAWN.value, counted=False,
                  withdrawn_at=e.occurred_at, withdrawal_reason=p.reason)
    changes.changed(pledge)
    return None


def _pledge(states: dict[UUID, DealState], deal_id: UUID, pledge_id: str
            ) -> dict[str, Any] | str:
    """The pledge's row, or why there is none."""
    state = states.get(deal_id)
    if state is None:
        return _unknown_deal(deal_id)
    pledge = state.pledges.get(pledge_id)
    return f"names unknown pledge {pledge_id} of deal {deal_id}" if pledge is None else pledge


def _unknown_deal(deal_id: UUID) -> str:
    return f"names deal {deal_id}, which was never proposed"


APPLIERS: dict[EventType, Applier] = {
    EventType.DEAL_PROPOSED: _deal_proposed,
    EventType.PLEDGE_MADE: _pledge_made,
    EventType.PLEDGE_REVISED: _pledge_revised,
    EventType.PLEDGE_WITHDRAWN: _pledge_withdrawn,
    EventType.TECH_TRANSFER_SIGNED: _tech_transfer_signed,
    EventType.JOINT_VENTURE_FORMED: _joint_venture_formed,
    EventType.FACILITY_ANNOUNCED: _facility_announced,
    EventType.DEAL_CANCELLED: _deal_cancelled,
}
