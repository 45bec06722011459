"""Turns a partner's submission into a decision of one aggregate and records it.

Each request: find the receipt of its event id (a retry gets the original answer), load the
aggregate, let it decide, then save its new event together with a fresh receipt in one
transaction. A concurrent writer makes the save fail on the aggregate's version; without an
expected version we simply decide again on the newer state.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
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
from services.registry.application.commands import AnySubmission, RecordPartnerEvent
from services.registry.application.errors import (
    AlreadyExists,
    IdempotencyConflict,
    NotFound,
    VersionConflict,
)
from services.registry.application.group_commit import GroupCommitter
from services.registry.application.rates import DEFAULT_RATES, ReferenceRates
from services.registry.domain.deal import Deal
from services.registry.domain.errors import InvalidValue, UnknownReference
from services.registry.domain.firm import Firm
from services.registry.domain.identities import derived_id, firm_id, receipt_id
from services.registry.domain.meeting import Meeting
from services.registry.domain.receipt import IngestionReceipt
from services.registry.domain.recorded import Provenance, RecordedAggregate
from services.registry.domain.values import AmountRange, UsdConversion

# Each contended round lets at least one writer through, so this many writers on one
# aggregate all succeed; the jittered pause keeps the losers from colliding again at once.
SAVE_ATTEMPTS = 32
BACKOFF_SECONDS = 0.002


def fingerprint(submission: AnySubmission) -> str:
    body = json.dumps(submission.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


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
        self._deciders: dict[type, Callable[[Any, Provenance], RecordedAggregate]] = {
            FirmRegisteredSubmission: self._register_firm,
            MeetingHeldSubmission: self._hold_meeting,
            DealProposedSubmission: self._propose_deal,
            PledgeMadeSubmission: self._make_pledge,
            PledgeRevisedSubmission: self._revise_pledge,
            PledgeWithdrawnSubmission: self._withdraw_pledge,
            TechTransferSignedSubmission: self._sign_tech_transfer,
            JointVentureFormedSubmission: self._form_joint_venture,
            FacilityAnnouncedSubmission: self._announce_facility,
            DealCancelledSubmission: self._cancel_deal,
        }

    def record(self, command: RecordPartnerEvent) -> Receipt:
        submission = command.submission
        print_ = fingerprint(submission)
        rid = receipt_id(command.principal, submission.event_id)
        provenance = Provenance(
            occurred_at=submission.occurred_at,
            recorded_by=command.principal,
            partner_event_id=submission.event_id,
        )
        decide = self._deciders[type(submission)]
        for _ in range(SAVE_ATTEMPTS):
            earlier = self._receipt(rid)
            if earlier is not None:
                return self._replay(earlier, print_)
            aggregate = decide(submission, provenance)
            self._check_expected_version(aggregate, submission.expected_version)
            (event,) = aggregate.pending_events
            receipt = IngestionReceipt.issue(
                rid, submission.event_id, command.principal, print_, submission.type,
                aggregate.id, aggregate.version, event.timestamp.isoformat(),
            )
            try:
                # The receipt goes first, so the last position of every write is its event:
                # a reader caught up with the events is caught up with the log's head.
                recordings = self.committer.save(receipt, aggregate)
            except IntegrityError:
                if event.originator_version == 1 and self._receipt(rid) is None:
                    raise AlreadyExists("payload", f"{submission.type} target {aggregate.id}") \
                        from None
                time.sleep(random.uniform(0, BACKOFF_SECONDS))
                continue
            return Receipt(
                event_id=submission.event_id,
                type=submission.type,
                aggregate_id=aggregate.id,
                aggregate_version=aggregate.version,
                position=recordings[-1].notification.id,
                recorded_at=event.timestamp.isoformat(),
                recorded_by=command.principal,
            )
        raise VersionConflict(str(aggregate.id), submission.expected_version, aggregate.version)

    # Idempotency and concurrency.

    def _receipt(self, rid: UUID) -> IngestionReceipt | None:
        try:
            return self.store.repository.get(rid)  # type: ignore[no-any-return]
        except AggregateNotFoundError:
            return None

    def _replay(self, receipt: IngestionReceipt, print_: str) -> Receipt:
        if receipt.request_fingerprint != print_:
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

    @staticmethod
    def _check_expected_version(aggregate: RecordedAggregate, expected: int | None) -> None:
        version_before = aggregate.version - 1
        if expected is not None and expected != version_before:
            raise VersionConflict(str(aggregate.id), expected, version_before)

    # Loading.

    def _new_aggregate_id(self, given: UUID | None, kind: str, provenance: Provenance) -> UUID:
        # Ids the registry derives are version 5; a partner's own must be random (version 4),
        # so no partner can take the id a firm or a derived deal will need later.
        if given is not None and given.version != 4:
            raise InvalidValue(
                f"payload.{kind}_id", "uuid4", f"{kind}_id must be a random (version 4) UUID"
            )
        aggregate_id = given or derived_id(
            kind, provenance.recorded_by, provenance.partner_event_id
        )
        if self._exists(aggregate_id):
            raise AlreadyExists(f"payload.{kind}_id", f"{kind} {aggregate_id}")
        return aggregate_id

    def _exists(self, aggregate_id: UUID) -> bool:
        return bool(self.store.recorder.select_events(aggregate_id, limit=1))

    def _load(self, aggregate_id: UUID, kind: type[RecordedAggregate]) -> RecordedAggregate | None:
        try:
            aggregate = self.store.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None
        return aggregate if isinstance(aggregate, kind) else None

    def _firm(self, code: str) -> Firm | None:
        """A registered firm, read without locking or copying: a firm never changes after its
        registration, so the cached one is current. Every deal and pledge checks its firms,
        and a locked fast-forward would make all of them queue on a popular firm."""
        try:
            firm = self.store.repository.get(
                firm_id(code), fastforward_skipping=True, deepcopy_from_cache=False
            )
        except AggregateNotFoundError:
            return None
        return firm if isinstance(firm, Firm) else None

    def _deal(self, deal_id: UUID) -> Deal:
        deal = self._load(deal_id, Deal)
        if deal is None:
            raise NotFound("payload.deal_id", f"deal {deal_id}")
        return deal  # type: ignore[return-value]

    def _require_firms(self, codes: list[str], field: str) -> None:
        for index, code in enumerate(codes):
            if self._firm(code) is None:
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

    # One decision per submission type.

    def _register_firm(self, s: FirmRegisteredSubmission, p: Provenance) -> RecordedAggregate:
        if self._exists(firm_id(s.payload.code)):
            raise AlreadyExists("payload.code", f"firm {s.payload.code!r}")
        return Firm.register(s.payload.code, s.payload.name, s.payload.country, s.payload.kind, p)

    def _hold_meeting(self, s: MeetingHeldSubmission, p: Provenance) -> RecordedAggregate:
        self._require_firms(s.payload.attendees, "payload.attendees")
        return Meeting.hold(
            self._new_aggregate_id(s.payload.meeting_id, "meeting", p),
            s.payload.title, s.payload.location, s.payload.closed_door, s.payload.attendees,
            s.payload.government_bodies, s.payload.sectors, s.payload.summary, p,
        )

    def _propose_deal(self, s: DealProposedSubmission, p: Provenance) -> RecordedAggregate:
        self._require_firms(s.payload.parties, "payload.parties")
        return Deal.propose(
            self._new_aggregate_id(s.payload.deal_id, "deal", p),
            s.payload.title, s.payload.format, s.payload.sector, s.payload.parties,
            s.payload.description, p,
        )

    def _make_pledge(self, s: PledgeMadeSubmission, p: Provenance) -> RecordedAggregate:
        deal = self._deal(s.payload.deal_id)
        amount = self._amount(s.payload.amount)
        pledge_id = s.payload.pledge_id or str(derived_id("pledge", p.recorded_by, s.event_id))
        usd = self._conversion(amount, s.payload.rate)
        firm = self._firm(s.payload.firm)
        if firm is None:
            raise UnknownReference(
                "payload.firm", "registered_firm", f"firm {s.payload.firm!r} is not registered"
            )
        deal.make_pledge(pledge_id, s.payload.firm, firm.country, amount, usd, p)
        return deal

    def _revise_pledge(self, s: PledgeRevisedSubmission, p: Provenance) -> RecordedAggregate:
        deal = self._deal(s.payload.deal_id)
        amount = self._amount(s.payload.amount)
        deal.revise_pledge(
            s.payload.pledge_id, amount, self._conversion(amount, s.payload.rate),
            s.payload.reason, p,
        )
        return deal

    def _withdraw_pledge(self, s: PledgeWithdrawnSubmission, p: Provenance) -> RecordedAggregate:
        deal = self._deal(s.payload.deal_id)
        deal.withdraw_pledge(s.payload.pledge_id, s.payload.reason, p)
        return deal

    def _sign_tech_transfer(
        self, s: TechTransferSignedSubmission, p: Provenance
    ) -> RecordedAggregate:
        deal = self._deal(s.payload.deal_id)
        deal.sign_tech_transfer(s.payload.technology, s.payload.licensor, s.payload.licensee, p)
        return deal

    def _form_joint_venture(
        self, s: JointVentureFormedSubmission, p: Provenance
    ) -> RecordedAggregate:
        deal = self._deal(s.payload.deal_id)
        deal.form_joint_venture(s.payload.venture_name, dict(s.payload.equity), p)
        return deal

    def _announce_facility(
        self, s: FacilityAnnouncedSubmission, p: Provenance
    ) -> RecordedAggregate:
        deal = self._deal(s.payload.deal_id)
        deal.announce_facility(
            s.payload.facility, s.payload.location, s.payload.capacity, s.payload.materials, p
        )
        return deal

    def _cancel_deal(self, s: DealCancelledSubmission, p: Provenance) -> RecordedAggregate:
        deal = self._deal(s.payload.deal_id)
        deal.cancel(s.payload.reason, p)
        return deal
