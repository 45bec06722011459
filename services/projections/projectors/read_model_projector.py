"""Applies recorded events to the read model, exactly once in effect.

Each batch is applied in one database transaction that also records the log position it
reached, so a crash loses the whole batch or nothing, and a redelivered event (position at
or below the recorded one) is skipped. Works on SQLite and PostgreSQL.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal, Inexact, localcontext
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, Engine, Row, bindparam, delete, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from contracts.events_v1 import (
    DealCancelled,
    DealProposed,
    EventEnvelope,
    EventType,
    FacilityAnnounced,
    FirmRegistered,
    JointVentureFormed,
    MeetingHeld,
    PledgeMade,
    PledgeRevised,
    PledgeWithdrawn,
    TechTransferSigned,
)
from services.projections.read_model.progress import (
    SourceProgress,
    merged,
    read_position,
    stored_offsets,
)
from services.projections.read_model.tables import (
    EXACT_PRECISION,
    READ_MODEL_PROJECTOR,
    DealStatus,
    PledgeStatus,
    TotalsDimension,
    applied_versions,
    deal_events,
    deal_parties,
    deals,
    firms,
    meetings,
    pledge_totals,
    pledges,
    projector_lock,
    source_progress,
)

DEAL_EVENTS = frozenset({
    EventType.DEAL_PROPOSED,
    EventType.PLEDGE_MADE,
    EventType.PLEDGE_REVISED,
    EventType.PLEDGE_WITHDRAWN,
    EventType.TECH_TRANSFER_SIGNED,
    EventType.JOINT_VENTURE_FORMED,
    EventType.FACILITY_ANNOUNCED,
    EventType.DEAL_CANCELLED,
})


class ProjectionError(Exception):
    """An event refers to something the read model has never seen: the feed is broken."""


@dataclass(frozen=True)
class Contribution:
    """What one counted pledge adds to the totals of its sector, firm and country."""

    sector: str
    firm_code: str
    country: str
    currency: str
    low: Decimal
    high: Decimal
    usd_low: Decimal
    usd_high: Decimal

    @classmethod
    def of(cls, pledge: Row[Any]) -> Contribution:
        return cls(
            pledge.sector, pledge.firm_code, pledge.firm_country, pledge.currency,
            pledge.low, pledge.high, pledge.usd_low, pledge.usd_high,
        )

    def groups(self) -> tuple[tuple[TotalsDimension, str], ...]:
        return (
            (TotalsDimension.SECTOR, self.sector),
            (TotalsDimension.FIRM, self.firm_code),
            (TotalsDimension.COUNTRY, self.country),
        )


def _insert(conn: Connection, table: Any) -> Any:
    return (pg_insert if conn.dialect.name == "postgresql" else sqlite_insert)(table)


AMOUNT_COLUMNS = ("low", "high", "usd_low", "usd_high")


@dataclass
class TotalsDelta:
    """How one batch changes one group's totals."""

    count: int = 0
    low: Decimal = Decimal(0)
    high: Decimal = Decimal(0)
    usd_low: Decimal = Decimal(0)
    usd_high: Decimal = Decimal(0)


def signed(amount: Decimal, sign: int) -> Decimal:
    # copy_negate never rounds; multiplying by -1 would round to the context's 28 digits.
    return amount if sign > 0 else amount.copy_negate()


Handler = Callable[[Connection, EventEnvelope, Any], None]


class ReadModelProjector:
    """Keeps the read model's tables in step with the registry's log."""

    def __init__(self, engine: Engine, name: str = READ_MODEL_PROJECTOR) -> None:
        self.engine = engine
        self.name = name
        self._applying = threading.Lock()
        self._totals_delta: dict[tuple[str, str, str], TotalsDelta] = {}
        self._deal_history: list[dict[str, Any]] = []
        self._deal_heads: dict[UUID, dict[str, Any]] = {}
        self._handlers: dict[EventType, Handler] = {
            EventType.FIRM_REGISTERED: self._firm_registered,
            EventType.MEETING_HELD: self._meeting_held,
            EventType.DEAL_PROPOSED: self._deal_proposed,
            EventType.PLEDGE_MADE: self._pledge_made,
            EventType.PLEDGE_REVISED: self._pledge_revised,
            EventType.PLEDGE_WITHDRAWN: self._pledge_withdrawn,
            EventType.TECH_TRANSFER_SIGNED: self._tech_transfer_signed,
            EventType.JOINT_VENTURE_FORMED: self._joint_venture_formed,
            EventType.FACILITY_ANNOUNCED: self._facility_announced,
            EventType.DEAL_CANCELLED: self._deal_cancelled,
        }

    def position(self) -> int:
        """The log position the read model reflects; 0 before any event."""
        with self.engine.connect() as conn:
            return read_position(conn, self.name)

    def resume_offsets(self, source: str) -> dict[int, int]:
        """Last consumed offset per partition of `source` (for the log: the position read)."""
        return stored_offsets(self.engine, self.name, source)

    def apply(
        self, envelopes: Sequence[EventEnvelope], progress: Sequence[SourceProgress] | None = None
    ) -> int:
        """Apply the envelopes not applied before, and record `progress`, in one transaction.

        An event is new when its aggregate version is above the one applied last for that
        aggregate: redelivery and republishing have no second effect, whatever their offsets.
        `progress` says how far each source was read (by default: the log, up to the last
        envelope). Returns the log position the read model now reflects.
        """
        if progress is None:
            progress = [SourceProgress.of_log(max(e.position for e in envelopes))] \
                if envelopes else []
        with self._applying, self.engine.begin() as conn:
            self._lock(conn)
            self._totals_delta.clear()
            self._deal_history, self._deal_heads = [], {}
            before = self._applied_versions(conn, {e.aggregate_id for e in envelopes})
            applied = dict(before)
            for envelope in sorted(envelopes, key=lambda e: e.position):
                if envelope.aggregate_version > applied.get(envelope.aggregate_id, 0):
                    self._apply_one(conn, envelope)
                    applied[envelope.aggregate_id] = envelope.aggregate_version
            self._write_applied_versions(conn, before, applied)
            self._write_deal_history(conn)
            self._write_totals(conn)
            for item in merged(progress):
                self._record_progress(conn, item)
            return read_position(conn, self.name)

    def _lock(self, conn: Connection) -> None:
        # Serialises batches of concurrent projectors on PostgreSQL, so totals are updated by
        # one transaction at a time; SQLite has one writer anyway.
        locked = select(projector_lock.c.name).where(projector_lock.c.name == self.name)
        if conn.execute(locked.with_for_update()).first() is None:
            conn.execute(_insert(conn, projector_lock).values(name=self.name)
                         .on_conflict_do_nothing())
            conn.execute(locked.with_for_update()).one()

    @staticmethod
    def _applied_versions(conn: Connection, aggregate_ids: set[UUID]) -> dict[UUID, int]:
        """The last applied version of each aggregate in a batch: one query per batch."""
        found: dict[UUID, int] = {}
        ids = list(aggregate_ids)
        for start in range(0, len(ids), 500):  # stay below every driver's parameter limit
            rows = conn.execute(
                select(applied_versions.c.aggregate_id, applied_versions.c.version)
                .where(applied_versions.c.aggregate_id.in_(ids[start:start + 500]))
            ).all()
            found.update({row.aggregate_id: row.version for row in rows})
        return found

    @staticmethod
    def _write_applied_versions(
        conn: Connection, before: dict[UUID, int], applied: dict[UUID, int]
    ) -> None:
        new = [{"aggregate_id": a, "version": v} for a, v in applied.items() if a not in before]
        if new:
            conn.execute(insert(applied_versions), new)
        changed = [{"b_id": a, "version": v} for a, v in applied.items()
                   if a in before and v != before[a]]
        if changed:
            conn.execute(
                update(applied_versions)
                .where(applied_versions.c.aggregate_id == bindparam("b_id")),
                changed,
            )

    def _record_progress(self, conn: Connection, item: SourceProgress) -> None:
        key = (
            source_progress.c.projector == self.name,
            source_progress.c.source == item.source,
            source_progress.c.partition == item.partition,
        )
        row = conn.execute(select(source_progress).where(*key)).first()
        if row is None:
            conn.execute(insert(source_progress), dict(
                projector=self.name, source=item.source, partition=item.partition,
                offset=item.offset, position=item.position, caught_up=item.caught_up,
            ))
            return
        # Never move back: a late, smaller batch must not undo a larger one's progress.
        conn.execute(update(source_progress).where(*key), dict(
            offset=max(row.offset, item.offset),
            position=max(row.position, item.position),
            caught_up=item.caught_up if item.offset >= row.offset else row.caught_up,
        ))

    def _apply_one(self, conn: Connection, envelope: EventEnvelope) -> None:
        self._handlers[envelope.type](conn, envelope, envelope.typed_payload())
        if envelope.type in DEAL_EVENTS:
            self._record_deal_event(conn, envelope)

    # Firms and meetings

    def _firm_registered(self, conn: Connection, e: EventEnvelope, p: FirmRegistered) -> None:
        conn.execute(insert(firms), dict(
            firm_id=e.aggregate_id, code=p.code, name=p.name, country=p.country, kind=p.kind,
            registered_at=e.occurred_at, position=e.position,
        ))

    def _meeting_held(self, conn: Connection, e: EventEnvelope, p: MeetingHeld) -> None:
        conn.execute(insert(meetings), dict(
            meeting_id=e.aggregate_id, title=p.title, location=p.location,
            closed_door=p.closed_door, attendees=list(p.attendees),
            government_bodies=list(p.government_bodies), sectors=list(p.sectors),
            summary=p.summary, occurred_at=e.occurred_at, recorded_at=e.recorded_at,
            position=e.position,
        ))

    # Deals

    def _deal_proposed(self, conn: Connection, e: EventEnvelope, p: DealProposed) -> None:
        conn.execute(insert(deals), dict(
            deal_id=e.aggregate_id, title=p.title, format=p.format, sector=p.sector,
            status=DealStatus.PROPOSED.value, parties=list(p.parties), description=p.description,
            version=e.aggregate_version, proposed_at=e.occurred_at, updated_at=e.occurred_at,
            proposed_position=e.position, last_position=e.position,
            tech_transfers=[], joint_ventures=[], facilities=[], cancellation=None,
        ))
        for firm_code in dict.fromkeys(p.parties):  # A party named twice is one party.
            conn.execute(insert(deal_parties), dict(deal_id=e.aggregate_id, firm_code=firm_code))

    def _tech_transfer_signed(
        self, conn: Connection, e: EventEnvelope, p: TechTransferSigned
    ) -> None:
        detail = {**p.model_dump(mode="json"), "signed_at": e.occurred_at.isoformat()}
        self._add_agreement(conn, e.aggregate_id, "tech_transfers", detail)

    def _joint_venture_formed(
        self, conn: Connection, e: EventEnvelope, p: JointVentureFormed
    ) -> None:
        detail = {
            "venture_name": p.venture_name,
            "equity": {firm: str(share) for firm, share in p.equity.items()},
            "formed_at": e.occurred_at.isoformat(),
        }
        self._add_agreement(conn, e.aggregate_id, "joint_ventures", detail)

    def _facility_announced(
        self, conn: Connection, e: EventEnvelope, p: FacilityAnnounced
    ) -> None:
        detail = {**p.model_dump(mode="json"), "announced_at": e.occurred_at.isoformat()}
        self._add_agreement(conn, e.aggregate_id, "facilities", detail)

    def _add_agreement(
        self, conn: Connection, deal_id: UUID, column: str, detail: dict[str, Any]
    ) -> None:
        deal = self._deal(conn, deal_id)
        # A cancelled deal stays cancelled; the registry should not send this, but never revive.
        status = deal.status if deal.status == DealStatus.CANCELLED else DealStatus.AGREED.value
        conn.execute(
            update(deals).where(deals.c.deal_id == deal_id)
            .values({column: [*getattr(deal, column), detail], "status": status})
        )

    def _deal_cancelled(self, conn: Connection, e: EventEnvelope, p: DealCancelled) -> None:
        self._deal(conn, e.aggregate_id)
        counted = conn.execute(
            select(pledges).where(pledges.c.deal_id == e.aggregate_id, pledges.c.counted)
        ).all()
        for pledge in counted:
            self._adjust_totals(conn, Contribution.of(pledge), -1)
        conn.execute(
            update(pledges).where(pledges.c.deal_id == e.aggregate_id).values(counted=False)
        )
        conn.execute(
            update(deals).where(deals.c.deal_id == e.aggregate_id).values(
                status=DealStatus.CANCELLED.value,
                cancellation={"reason": p.reason, "cancelled_at": e.occurred_at.isoformat()},
            )
        )

    def _record_deal_event(self, conn: Connection, e: EventEnvelope) -> None:
        """Note the event in the deal's history and version; both reach their tables once per
        batch (`_write_deal_history`): no handler reads them back within a batch."""
        del conn
        self._deal_history.append({
            "position": e.position, "deal_id": e.aggregate_id,
            "aggregate_version": e.aggregate_version, "type": e.type.value,
            "event_id": e.event_id, "occurred_at": e.occurred_at, "recorded_at": e.recorded_at,
            "recorded_by": e.recorded_by, "payload": e.model_dump(mode="json")["payload"],
            "hash": e.hash, "previous_hash": e.previous_hash,
        })
        self._deal_heads[e.aggregate_id] = {
            "b_deal_id": e.aggregate_id, "version": e.aggregate_version,
            "updated_at": e.occurred_at, "last_position": e.position,
        }

    def _write_deal_history(self, conn: Connection) -> None:
        if self._deal_history:
            conn.execute(insert(deal_events), self._deal_history)
        if self._deal_heads:
            conn.execute(
                update(deals).where(deals.c.deal_id == bindparam("b_deal_id")),
                list(self._deal_heads.values()),
            )
        self._deal_history = []
        self._deal_heads = {}

    # Pledges

    def _pledge_made(self, conn: Connection, e: EventEnvelope, p: PledgeMade) -> None:
        deal = self._deal(conn, e.aggregate_id, deals.c.status, deals.c.sector)
        country = p.firm_country
        counted = deal.status != DealStatus.CANCELLED
        conn.execute(insert(pledges), dict(
            deal_id=e.aggregate_id, pledge_id=p.pledge_id, firm_code=p.firm, firm_country=country,
            sector=deal.sector, currency=p.amount.currency, low=p.amount.low,
            high=p.amount.high, usd_low=p.usd.low, usd_high=p.usd.high,
            units_per_usd=p.usd.units_per_usd, rate_source=p.usd.rate_source,
            status=PledgeStatus.ACTIVE.value, counted=counted, made_at=e.occurred_at,
            revisions=0, position=e.position,
        ))
        if counted:
            self._adjust_totals(conn, Contribution(
                deal.sector, p.firm, country, p.amount.currency,
                p.amount.low, p.amount.high, p.usd.low, p.usd.high,
            ), +1)

    def _pledge_revised(self, conn: Connection, e: EventEnvelope, p: PledgeRevised) -> None:
        before = self._pledge(conn, e.aggregate_id, p.pledge_id, e.position)
        after = Contribution(
            before.sector, before.firm_code, before.firm_country, p.amount.currency,
            p.amount.low, p.amount.high, p.usd.low, p.usd.high,
        )
        if before.counted:
            self._adjust_totals(conn, Contribution.of(before), -1)
            self._adjust_totals(conn, after, +1)
        conn.execute(
            update(pledges)
            .where(pledges.c.deal_id == e.aggregate_id, pledges.c.pledge_id == p.pledge_id)
            .values(
                currency=p.amount.currency, low=p.amount.low, high=p.amount.high,
                usd_low=p.usd.low, usd_high=p.usd.high, units_per_usd=p.usd.units_per_usd,
                rate_source=p.usd.rate_source, revisions=before.revisions + 1,
                revised_at=e.occurred_at, revision_reason=p.reason,
            )
        )

    def _pledge_withdrawn(self, conn: Connection, e: EventEnvelope, p: PledgeWithdrawn) -> None:
        pledge = self._pledge(conn, e.aggregate_id, p.pledge_id, e.position)
        if pledge.counted:
            self._adjust_totals(conn, Contribution.of(pledge), -1)
        conn.execute(
            update(pledges)
            .where(pledges.c.deal_id == e.aggregate_id, pledges.c.pledge_id == p.pledge_id)
            .values(
                status=PledgeStatus.WITHDRAWN.value, counted=False, withdrawn_at=e.occurred_at,
                withdrawal_reason=p.reason,
            )
        )

    def _adjust_totals(self, conn: Connection, pledge: Contribution, sign: int) -> None:
        """Add (sign +1) or remove (sign -1) one pledge from its three groups' totals.

        Changes gather in memory and reach the table once per batch (`_write_totals`): a
        batch touches a few dozen groups, however many pledges it carries."""
        del conn  # written by _write_totals, in the same transaction
        with localcontext() as exact:
            exact.prec = EXACT_PRECISION
            exact.traps[Inexact] = True
            for dimension, key in pledge.groups():
                delta = self._totals_delta.setdefault(
                    (dimension.value, key, pledge.currency), TotalsDelta())
                delta.count += sign
                for column in AMOUNT_COLUMNS:
                    setattr(delta, column,
                            getattr(delta, column) + signed(getattr(pledge, column), sign))

    def _write_totals(self, conn: Connection) -> None:
        for (dimension, key, currency), delta in self._totals_delta.items():
            where = (
                pledge_totals.c.dimension == dimension,
                pledge_totals.c.group_key == key,
                pledge_totals.c.currency == currency,
            )
            row = conn.execute(select(pledge_totals).where(*where)).first()
            if row is None:
                if delta.count != 0:
                    conn.execute(insert(pledge_totals), dict(
                        dimension=dimension, group_key=key, currency=currency,
                        pledge_count=delta.count,
                        **{c: getattr(delta, c) for c in AMOUNT_COLUMNS},
                    ))
                continue
            count = row.pledge_count + delta.count
            if count == 0:
                conn.execute(delete(pledge_totals).where(*where))
                continue
            with localcontext() as exact:
                exact.prec = EXACT_PRECISION
                exact.traps[Inexact] = True
                sums = {c: getattr(row, c) + getattr(delta, c) for c in AMOUNT_COLUMNS}
            conn.execute(update(pledge_totals).where(*where), dict(pledge_count=count, **sums))
        self._totals_delta.clear()

    # Lookups

    def _deal(self, conn: Connection, deal_id: UUID, *columns: Any) -> Row[Any]:
        """The deal's row, or only `columns` of it (cheaper: no JSON lists to decode)."""
        deal = conn.execute(
            select(*(columns or (deals,))).where(deals.c.deal_id == deal_id)
        ).first()
        if deal is None:
            raise ProjectionError(f"event for deal {deal_id} before it was proposed")
        return deal

    def _pledge(self, conn: Connection, deal_id: UUID, pledge_id: str, position: int) -> Row[Any]:
        pledge = conn.execute(
            select(pledges).where(pledges.c.deal_id == deal_id, pledges.c.pledge_id == pledge_id)
        ).first()
        if pledge is None:
            raise ProjectionError(
                f"event at position {position} names unknown pledge {pledge_id} of deal {deal_id}"
            )
        return pledge
