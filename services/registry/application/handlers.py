"""Turns a partner's submission into a decision of one aggregate and records it.

Each request: find the receipt of its event id (a retry gets the original answer), load the
aggregate through a unit of work, check that the key speaks for the firms the event needs
(application.authority), let the aggregate decide, then save its new event together with a
fresh receipt in one transaction (through the group committer). A concurrent writer makes
the save fail on the aggregate's version; without an expected version we simply decide again
on the newer state. A batch decides all its items through one unit of work and saves them
together.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import date
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from contracts.submissions_v1 import (
    AmountIn,
    DealCancelledSubmission,
    DealProposedSubmission,
    FacilityAnnouncedSubmission,
    FirmRegisteredSubmission,
    JointVentureFormedSubmission,
    MeetingHeldSubmission,
    PledgeMadeSubmission,
    PledgeRevisedSubmission,
    PledgeWithdrawnSubmission,
    RateIn,
    Receipt,
    TechTransferSignedSubmission,
)
from services.registry.adapters.event_store import DealRegistryStore
from services.registry.application.authority import EVERY_FIRM, Authority
from services.registry.application.commands import AnySubmission, RecordPartnerEvent
from services.registry.application.errors import (
    AlreadyExists,
    IdempotencyConflict,
    NotAuthorized,
    NotFound,
    VersionConflict,
)
from services.registry.application.group_commit import GroupCommitter
from services.registry.application.idempotency import earlier_fingerprints, fingerprint
from services.registry.application.rates import DEFAULT_RATES, ReferenceRates
from services.registry.application.recent_aggregates import RecentAggregates
from services.registry.application.unit_of_work import UnitOfWork
from services.registry.domain.deal import Deal
from services.registry.domain.errors import DomainError, InvalidValue, UnknownReference
from services.registry.domain.firm import Firm
from services.registry.domain.identities import derived_id, firm_id
from services.registry.domain.meeting import Meeting
from services.registry.domain.receipt import IssuedReceipt
from services.registry.domain.recorded import Provenance, RecordedAggregate
from services.registry.domain.values import AmountRange, PledgeTerms, UsdConversion

# Each contended round lets at least one writer through, so this many writers on one
# aggregate all succeed; the jittered pause keeps the losers from colliding again at once.
SAVE_ATTEMPTS = 32
BACKOFF_SECONDS = 0.002


REFUSALS = (
    DomainError, AlreadyExists, NotFound, VersionConflict, IdempotencyConflict, NotAuthorized
)


@dataclass(frozen=True)
class Decision:
    """A decided event and its receipt, not yet saved."""

    receipt: IssuedReceipt
    events: list[Any]

    @property
    def aggregate_id(self) -> UUID:
        return self.receipt.aggregate_id

    @property
    def aggregate_version(self) -> int:
        return self.receipt.aggregate_version

    @property
    def creates(self) -> bool:
        return self.aggregate_version == 1

    def receipt_at(self, position: int) -> Receipt:
        r = self.receipt
        return Receipt(
            event_id=r.partner_event_id, type=r.event_type, aggregate_id=r.aggregate_id,
            aggregate_version=r.aggregate_version, position=position,
            recorded_at=r.event_recorded_at, recorded_by=r.principal,
        )


class AggregateTurns:
    """Striped locks by aggregate id: holding a turn, a thread is the only one in this
    process deciding and saving for that aggregate (or for the few others sharing its
    stripe). Never more than one turn is held at a time, so turns cannot deadlock."""

    STRIPES = 256

    def __init__(self) -> None:
        self._locks = [threading.Lock() for _ in range(self.STRIPES)]

    def turn(self, aggregate_id: UUID | None) -> AbstractContextManager[Any]:
        if aggregate_id is None:
            return nullcontext()
        return self._locks[aggregate_id.int % self.STRIPES]


def _deal_of(command: RecordPartnerEvent) -> UUID | None:
    """The existing deal a command changes, if it changes one (a proposal makes a new one)."""
    deal_id = getattr(command.submission.payload, "deal_id", None)
    if command.submission.type == "deal_proposed" or not isinstance(deal_id, UUID):
        return None
    return deal_id


# The aggregates a creating submission makes, by type: (kind of derived id, payload field).
_CREATES = {"meeting_held": ("meeting", "meeting_id"), "deal_proposed": ("deal", "deal_id")}


def _created_id(command: RecordPartnerEvent) -> UUID | None:
    """The id of the aggregate the command would create, if it creates one."""
    submission = command.submission
    if submission.type == "firm_registered":
        return firm_id(submission.payload.code)
    if submission.type not in _CREATES:
        return None
    kind, field = _CREATES[submission.type]
    return _new_id(kind, getattr(submission.payload, field), command.principal,
                   submission.event_id)


def _new_id(kind: str, given: UUID | None, principal: str, event_id: str) -> UUID:
    """A new aggregate's id: the partner's own, else derived from who sent which event."""
    return given or derived_id(kind, principal, event_id)


class RecordingService:
    """Records partner events: idempotent on the event id, optimistic on the version."""

    def __init__(
        self,
        store: DealRegistryStore,
        rates: ReferenceRates = DEFAULT_RATES,
        committer: GroupCommitter | None = None,
    ) -> None:
        self.store = store
        self.rates = rates
        self.committer = committer or GroupCommitter(store)
        self.deal_turns = AggregateTurns()
        self.recent = RecentAggregates(store)
        self._one_pass = threading.Lock()
        # Saves refused because another writer got to the aggregate first (then retried).
        self.version_conflicts = 0
        # By type: a v2 submission (contracts.submissions_v2) extends its v1 model.
        self._deciders: dict[
            str, Callable[[Any, Provenance, UnitOfWork, Authority], RecordedAggregate]
        ] = {
            "firm_registered": self._register_firm,
            "meeting_held": self._hold_meeting,
            "deal_proposed": self._propose_deal,
            "pledge_made": self._make_pledge,
            "pledge_revised": self._revise_pledge,
            "pledge_withdrawn": self._withdraw_pledge,
            "tech_transfer_signed": self._sign_tech_transfer,
            "joint_venture_formed": self._form_joint_venture,
            "facility_announced": self._announce_facility,
            "deal_cancelled": self._cancel_deal,
        }

    def record(self, command: RecordPartnerEvent) -> Receipt:
        """Record one partner event, or answer a retry of it with its original receipt.

        Requests on one deal are decided one at a time in this process (`deal_turns`): two
        deciding on the same version would make one fail at commit, which fails its whole
        group-commit batch into one-by-one saves and sends it round again after a backoff,
        so a popular deal cost twice the CPU per event. Other processes' writes still meet
        the optimistic check below."""
        with self.deal_turns.turn(_deal_of(command)):
            return self._record(command)

    def _record(self, command: RecordPartnerEvent) -> Receipt:
        for _ in range(SAVE_ATTEMPTS):
            uow = UnitOfWork(self.store)
            try:
                decision = self._decide(uow, command)
            except REFUSALS:
                # A refusal can be stale: an identical request in flight may have recorded this
                # very event since we looked for its receipt ("pledge ... already exists").
                replay = self._replay_if_recorded(command)
                if replay is not None:
                    return replay
                raise
            if isinstance(decision, Receipt):
                return decision
            try:
                recordings = self.committer.save_events(decision.events, [decision.receipt])
            except IntegrityError:
                replay = self._replay_if_recorded(command)
                if replay is not None:
                    return replay
                if decision.creates:
                    raise AlreadyExists("payload", f"{decision.receipt.event_type} target "
                                        f"{decision.aggregate_id}") from None
                self.version_conflicts += 1
                time.sleep(random.uniform(0, BACKOFF_SECONDS))
                continue
            self.store.snapshot_if_due(uow.loaded(decision.aggregate_id),
                                       decision.aggregate_version)
            return decision.receipt_at(recordings[-1].notification.id)
        raise VersionConflict(str(decision.aggregate_id), command.submission.expected_version,
                              decision.aggregate_version - 1)

    def record_many(
        self, principal: str, submissions: Sequence[AnySubmission],
        authority: Authority = EVERY_FIRM,
    ) -> list[Receipt | Exception]:
        """Record one principal's batch: `record_commands` of its submissions."""
        return self.record_commands(
            [RecordPartnerEvent(principal, s, authority) for s in submissions])

    def record_commands(self, commands: Sequence[RecordPartnerEvent]) -> list[Receipt | Exception]:
        """Record commands in order, each seeing those before it, in one transaction.

        Each gets what `record` would have answered it: the same event twice (same principal
        and event id) is recorded once and the second answered as its replay. If another
        writer got in the way of the transaction, the commands are recorded one by one.

        Passes run one at a time: they share the aggregates earlier passes committed
        (`recent`), which they change in place."""
        with self._one_pass:
            return self._record_pass(commands)

    def _record_pass(self, commands: Sequence[RecordPartnerEvent]) -> list[Receipt | Exception]:
        self.recent.refresh()
        uow = UnitOfWork(self.store, self.recent)
        try:
            outcomes = self._decide_all(uow, commands)
            decisions = [o for o in outcomes if isinstance(o, Decision)]
            recordings = self.committer.save_events([e for d in decisions for e in d.events],
                                                    [d.receipt for d in decisions])
        except IntegrityError:
            self.recent.drop(uow.loaded_ids())  # decided on, in place, and not committed
            return [self._record_refusing(command) for command in commands]
        except BaseException:
            self.recent.drop(uow.loaded_ids())
            raise
        first_new_versions: dict[UUID, int] = {}
        for decision in decisions:
            first_new_versions.setdefault(decision.aggregate_id, decision.aggregate_version)
        self.recent.keep([uow.loaded(i) for i in first_new_versions],
                         [r.notification.id for r in recordings])
        for aggregate_id, first_new_version in first_new_versions.items():
            self.store.snapshot_if_due(uow.loaded(aggregate_id), first_new_version)
        receipts: dict[int, Receipt] = {}
        end = 0
        for index, outcome in enumerate(outcomes):
            if isinstance(outcome, Decision):
                end += len(outcome.events)
                receipts[index] = outcome.receipt_at(recordings[end - 1].notification.id)
        return [
            receipts[index] if isinstance(outcome, Decision)
            else receipts[outcome].model_copy(update={"replayed": True})
            if isinstance(outcome, int) else outcome
            for index, outcome in enumerate(outcomes)
        ]

    def _decide_all(self, uow: UnitOfWork, commands: Sequence[RecordPartnerEvent]
                    ) -> list[Receipt | Exception | Decision | int]:
        """Each command's decision, original receipt, or refusal; the index of the first of
        the same event twice."""
        # Which receipts and which aggregates the commands would create exist already: one
        # query for the pass instead of one per command.
        uow.look_up_receipts({c.receipt_id for c in commands})
        uow.look_up({i for i in map(_created_id, commands) if i is not None})
        outcomes: list[Receipt | Exception | Decision | int] = []
        decided_at: dict[UUID, int] = {}
        for command in commands:
            submission = command.submission
            rid = command.receipt_id
            if rid in decided_at:
                first = outcomes[decided_at[rid]]
                assert isinstance(first, Decision)
                same = first.receipt.request_fingerprint == fingerprint(submission)
                outcomes.append(decided_at[rid] if same
                                else IdempotencyConflict(submission.event_id))
                continue
            try:
                decision = self._decide(uow, command)
            except REFUSALS as exc:
                try:  # stale, if an identical request in flight recorded it meanwhile
                    outcomes.append(self._replay_if_recorded(command) or exc)
                except IdempotencyConflict as conflict:
                    outcomes.append(conflict)
                continue
            if isinstance(decision, Decision):
                decided_at[rid] = len(outcomes)
            outcomes.append(decision)
        return outcomes

    def _record_refusing(self, command: RecordPartnerEvent) -> Receipt | Exception:
        try:
            return self.record(command)
        except REFUSALS as exc:
            return exc

    def _decide(self, uow: UnitOfWork, command: RecordPartnerEvent) -> Receipt | Decision:
        """The original receipt of a retry, or the new event with its receipt, unsaved."""
        submission = command.submission
        print_ = fingerprint(submission)
        rid = command.receipt_id
        earlier = self.store.issued_receipt(rid) if uow.receipt_may_exist(rid) else None
        if earlier is not None:
            return self._replay(earlier, submission)
        provenance = Provenance(
            occurred_at=submission.occurred_at,
            recorded_by=command.principal,
            partner_event_id=submission.event_id,
        )
        # A retry was answered above, before this: the receipt of an event a key recorded is
        # its own, even if the key's firms have changed since.
        aggregate = self._deciders[submission.type](
            submission, provenance, uow, command.authority)
        (event,) = aggregate.pending_events
        version_before = aggregate.version - 1
        expected = submission.expected_version
        if expected is not None and expected != version_before:
            # The aggregate has taken the event in memory: nobody in this unit may use it.
            aggregate.collect_events()
            uow.forget(aggregate.id)
            raise VersionConflict(str(aggregate.id), expected, version_before)
        uow.track(aggregate)
        # Only the aggregate's event goes in the log; its receipt is written beside it, in
        # the same transaction (adapters.receipt_table).
        return Decision(
            IssuedReceipt(rid, submission.event_id, command.principal, print_, submission.type,
                          aggregate.id, aggregate.version, event.timestamp.isoformat()),
            list(aggregate.collect_events()))

    # Idempotency and concurrency.

    def _replay_if_recorded(self, command: RecordPartnerEvent) -> Receipt | None:
        """The original receipt if this event has been recorded by now, else None."""
        earlier = self.store.issued_receipt(command.receipt_id)
        return None if earlier is None else self._replay(earlier, command.submission)

    def _replay(self, receipt: IssuedReceipt, submission: AnySubmission) -> Receipt:
        recorded = receipt.request_fingerprint
        if recorded != fingerprint(submission) and recorded not in earlier_fingerprints(submission):
            raise IdempotencyConflict(receipt.partner_event_id)
        position = self.store.log_position_of(receipt.aggregate_id, receipt.aggregate_version)
        assert position is not None, "a receipt is saved with its event"
        return Receipt(
            event_id=receipt.partner_event_id,
            type=receipt.event_type,
            aggregate_id=receipt.aggregate_id,
            aggregate_version=receipt.aggregate_version,
            position=position,
            recorded_at=receipt.event_recorded_at,
            recorded_by=receipt.principal,
            replayed=True,
        )

    # Loading.

    def _new_aggregate_id(
        self, uow: UnitOfWork, given: UUID | None, kind: str, provenance: Provenance
    ) -> UUID:
        # Ids the registry derives are version 5; a partner's own must be random (version 4),
        # so no partner can take the id a firm or a derived deal will need later.
        if given is not None and given.version != 4:
            raise InvalidValue(
                f"payload.{kind}_id", "uuid4", f"{kind}_id must be a random (version 4) UUID"
            )
        aggregate_id = _new_id(kind, given, provenance.recorded_by, provenance.partner_event_id)
        if uow.exists(aggregate_id):
            raise AlreadyExists(f"payload.{kind}_id", f"{kind} {aggregate_id}")
        return aggregate_id

    @staticmethod
    def _deal(uow: UnitOfWork, deal_id: UUID) -> Deal:
        deal = uow.get(deal_id, Deal)
        if deal is None:
            raise NotFound("payload.deal_id", f"deal {deal_id}")
        return deal

    @staticmethod
    def _require_firms(uow: UnitOfWork, codes: list[str], field: str) -> None:
        for index, code in enumerate(codes):
            if uow.firm(code) is None:
                raise UnknownReference(
                    f"{field}[{index}]", "registered_firm", f"firm {code!r} is not registered"
                )

    def _conversion(self, amount: AmountRange, rate: RateIn | None) -> UsdConversion:
        if rate is None:
            units_per_usd, source = self.rates.lookup(amount.currency)
        else:
            units_per_usd, source = rate.units_per_usd, rate.rate_source
        return UsdConversion.of(amount, units_per_usd, source)

    @staticmethod
    def _amount(amount: AmountIn) -> AmountRange:
        return AmountRange.of(amount.low, amount.high, amount.currency, "payload.amount")

    @staticmethod
    def _terms(payload: Any, amount: AmountRange) -> PledgeTerms | None:
        """The terms a v2 pledge payload states, checked against its amount; None for a v1
        payload, which states none."""
        instrument = getattr(payload, "instrument", None)
        if instrument is None:
            return None
        return PledgeTerms.of(
            instrument.value,
            [(date.fromisoformat(t.due_date), t.amount) for t in payload.tranches],
            amount, "payload.",
        )

    # One decision per submission type.

    def _register_firm(
        self, s: FirmRegisteredSubmission, p: Provenance, uow: UnitOfWork, a: Authority
    ) -> RecordedAggregate:
        a.require_firm(s.payload.code, "payload.code", f"register firm {s.payload.code!r}")
        if uow.exists(firm_id(s.payload.code)):
            raise AlreadyExists("payload.code", f"firm {s.payload.code!r}")
        return Firm.register(s.payload.code, s.payload.name, s.payload.country, s.payload.kind, p)

    def _hold_meeting(
        self, s: MeetingHeldSubmission, p: Provenance, uow: UnitOfWork, a: Authority
    ) -> RecordedAggregate:
        a.require_one_of(s.payload.attendees, "payload.attendees", "attended_meeting",
                         f"record a meeting of {', '.join(s.payload.attendees)}")
        self._require_firms(uow, s.payload.attendees, "payload.attendees")
        return Meeting.hold(
            self._new_aggregate_id(uow, s.payload.meeting_id, "meeting", p),
            s.payload.title, s.payload.location, s.payload.closed_door, s.payload.attendees,
            s.payload.government_bodies, [str(sector) for sector in s.payload.sectors],
            s.payload.summary, p,
        )

    def _propose_deal(
        self, s: DealProposedSubmission, p: Provenance, uow: UnitOfWork, a: Authority
    ) -> RecordedAggregate:
        a.require_one_of(s.payload.parties, "payload.parties", "party_to_deal",
                         f"propose a deal between {', '.join(s.payload.parties)}")
        self._require_firms(uow, s.payload.parties, "payload.parties")
        return Deal.propose(
            self._new_aggregate_id(uow, s.payload.deal_id, "deal", p),
            s.payload.title, s.payload.format, s.payload.sector, s.payload.parties,
            s.payload.description, p,
        )

    def _make_pledge(
        self, s: PledgeMadeSubmission, p: Provenance, uow: UnitOfWork, a: Authority
    ) -> RecordedAggregate:
        a.require_firm(s.payload.firm, "payload.firm", f"pledge for firm {s.payload.firm!r}")
        deal = self._deal(uow, s.payload.deal_id)
        amount = self._amount(s.payload.amount)
        pledge_id = s.payload.pledge_id or str(derived_id("pledge", p.recorded_by, s.event_id))
        usd = self._conversion(amount, s.payload.rate)
        terms = self._terms(s.payload, amount)
        firm = uow.firm(s.payload.firm)
        if firm is None:
            raise UnknownReference(
                "payload.firm", "registered_firm", f"firm {s.payload.firm!r} is not registered"
            )
        if terms is None:
            deal.make_pledge(pledge_id, s.payload.firm, firm.country, amount, usd, p)
        else:
            deal.make_pledge(pledge_id, s.payload.firm, firm.country, amount, usd, p, terms)
        return deal

    def _revise_pledge(
        self, s: PledgeRevisedSubmission, p: Provenance, uow: UnitOfWork, a: Authority
    ) -> RecordedAggregate:
        deal = self._deal(uow, s.payload.deal_id)
        a.require_own_pledge(deal, s.payload.pledge_id, "revise pledge")
        amount = self._amount(s.payload.amount)
        deal.revise_pledge(
            s.payload.pledge_id, amount, self._conversion(amount, s.payload.rate),
            s.payload.reason, p, self._terms(s.payload, amount),
        )
        return deal

    def _withdraw_pledge(
        self, s: PledgeWithdrawnSubmission, p: Provenance, uow: UnitOfWork, a: Authority
    ) -> RecordedAggregate:
        deal = self._deal(uow, s.payload.deal_id)
        a.require_own_pledge(deal, s.payload.pledge_id, "withdraw pledge")
        deal.withdraw_pledge(s.payload.pledge_id, s.payload.reason, p)
        return deal

    def _sign_tech_transfer(
        self, s: TechTransferSignedSubmission, p: Provenance, uow: UnitOfWork, a: Authority
    ) -> RecordedAggregate:
        deal = self._deal(uow, s.payload.deal_id)
        a.require_one_of(
            [s.payload.licensor, s.payload.licensee], "payload.licensor", "party_to_agreement",
            f"sign a tech transfer from {s.payload.licensor!r} to {s.payload.licensee!r}",
        )
        deal.sign_tech_transfer(s.payload.technology, s.payload.licensor, s.payload.licensee, p)
        return deal

    def _form_joint_venture(
        self, s: JointVentureFormedSubmission, p: Provenance, uow: UnitOfWork, a: Authority
    ) -> RecordedAggregate:
        deal = self._deal(uow, s.payload.deal_id)
        a.require_one_of(s.payload.equity, "payload.equity", "party_to_agreement",
                         f"form a joint venture of {', '.join(s.payload.equity)}")
        deal.form_joint_venture(s.payload.venture_name, dict(s.payload.equity), p)
        return deal

    def _announce_facility(
        self, s: FacilityAnnouncedSubmission, p: Provenance, uow: UnitOfWork, a: Authority
    ) -> RecordedAggregate:
        deal = self._deal(uow, s.payload.deal_id)
        a.require_party(deal, "announce a facility of deal")
        deal.announce_facility(
            s.payload.facility, s.payload.location, s.payload.capacity, s.payload.materials, p
        )
        return deal

    def _cancel_deal(
        self, s: DealCancelledSubmission, p: Provenance, uow: UnitOfWork, a: Authority
    ) -> RecordedAggregate:
        deal = self._deal(uow, s.payload.deal_id)
        a.require_party(deal, "cancel deal")
        deal.cancel(s.payload.reason, p)
        return deal
