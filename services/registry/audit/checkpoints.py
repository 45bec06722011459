"""Checkpoints: Merkle roots over the event log from its first position to N, with the
leaves they cover, kept in tables of their own beside the events.

The leaves are kept so that verification can name the first event that differs from what
a checkpoint covered, not just say that a root changed. A checkpoint also keeps the
frontier of its tree, so the next one hashes only the events recorded since.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from services.registry.adapters.event_store import DealRegistryStore
from services.registry.audit.logged_events import read_logged_events
from services.registry.audit.merkle import Frontier
from services.shared.settings import Settings, sqlalchemy_url

log = logging.getLogger("dealreg.audit")

Reason = Literal["interval", "on_demand"]

audit_tables = MetaData()
checkpoint_table = Table(
    "dealreg_audit_checkpoints",
    audit_tables,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("last_position", BigInteger, nullable=False),
    Column("event_count", BigInteger, nullable=False),
    Column("root", String(64), nullable=False),
    Column("frontier", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("reason", String(20), nullable=False),
)
leaf_table = Table(
    "dealreg_audit_leaves",
    audit_tables,
    Column("position", BigInteger, primary_key=True, autoincrement=False),
    Column("leaf_index", BigInteger, nullable=False, unique=True),
    Column("aggregate_id", String(36), nullable=False),
    Column("version", Integer, nullable=False),
    Column("leaf", String(64), nullable=False),
)


def audit_database_url(settings: Settings) -> str:
    """The event store's own database: the checkpoints must sit beside what they cover."""
    if settings.database_url is not None:
        return sqlalchemy_url(settings.database_url)
    return f"sqlite:///{settings.data_dir / 'events.db'}"


@dataclass(frozen=True)
class Checkpoint:
    id: int
    last_position: int
    event_count: int
    root: str
    frontier: list[str]
    created_at: datetime
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "last_position": self.last_position,
                "event_count": self.event_count, "root": self.root,
                "created_at": self.created_at.isoformat(), "reason": self.reason}

    def tree(self) -> Frontier:
        return Frontier(self.event_count, [bytes.fromhex(h) for h in self.frontier])


@dataclass(frozen=True)
class StoredLeaf:
    position: int
    leaf_index: int
    aggregate_id: str
    version: int
    leaf: str


class CheckpointStore:
    """Records checkpoints and the leaves they cover; reads them back in log order."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create_schema(self) -> None:
        """Idempotent; a process racing another to create the tables finds them made."""
        try:
            audit_tables.create_all(self.engine)
        except (IntegrityError, ProgrammingError, OperationalError):
            audit_tables.create_all(self.engine)

    def checkpoints(self) -> list[Checkpoint]:
        """Every checkpoint, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(checkpoint_table).order_by(
                checkpoint_table.c.event_count, checkpoint_table.c.id)).all()
        return [_checkpoint(row) for row in rows]

    def page(self, limit: int, offset: int) -> tuple[list[Checkpoint], int]:
        """One page of the checkpoints, oldest first, and how many there are in all."""
        with self.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(checkpoint_table)).scalar_one()
            rows = conn.execute(select(checkpoint_table).order_by(
                checkpoint_table.c.event_count, checkpoint_table.c.id,
            ).limit(limit).offset(offset)).all()
        return [_checkpoint(row) for row in rows], int(total)

    def latest(self) -> Checkpoint | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(checkpoint_table).order_by(
                checkpoint_table.c.event_count.desc(), checkpoint_table.c.id.desc()
            ).limit(1)).first()
        return None if row is None else _checkpoint(row)

    def covering(self, position: int) -> Checkpoint | None:
        """The earliest checkpoint whose tree includes `position`."""
        with self.engine.connect() as conn:
            row = conn.execute(select(checkpoint_table).where(
                checkpoint_table.c.last_position >= position
            ).order_by(checkpoint_table.c.event_count, checkpoint_table.c.id).limit(1)).first()
        return None if row is None else _checkpoint(row)

    def stored_leaves(self, after: int = 0, page_size: int = 5000) -> Iterator[StoredLeaf]:
        """The leaves checkpoints covered, by position, a page at a time."""
        while True:
            with self.engine.connect() as conn:
                rows = conn.execute(select(leaf_table).where(leaf_table.c.position > after)
                                    .order_by(leaf_table.c.position).limit(page_size)).all()
            for row in rows:
                yield StoredLeaf(row.position, row.leaf_index, row.aggregate_id, row.version,
                                 row.leaf)
            if len(rows) < page_size:
                return
            after = rows[-1].position

    def leaves_by_index(self, start: int, end: int) -> list[bytes]:
        """Leaf hashes with leaf_index in [start, end), in tree order."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(leaf_table.c.leaf).where(
                leaf_table.c.leaf_index >= start, leaf_table.c.leaf_index < end
            ).order_by(leaf_table.c.leaf_index)).all()
        return [bytes.fromhex(row.leaf) for row in rows]

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(checkpoint_table))
                       .scalar_one())


def take_checkpoint(
    store: DealRegistryStore, checkpoints: CheckpointStore, reason: Reason,
    events_per_transaction: int = 50_000,
) -> Checkpoint | None:
    """Record a checkpoint at the log's current head and return it. An interval checkpoint
    is skipped (None) when the head has not moved since the last one; an on-demand one never
    is. A long backlog is covered by several checkpoints of `events_per_transaction` events,
    so the writers sharing a SQLite file are never locked out for long."""
    head = store.head_position()
    taken: Checkpoint | None = None
    races = 0
    while True:
        previous = checkpoints.latest()
        tree = Frontier() if previous is None else previous.tree()
        last_position = 0 if previous is None else previous.last_position
        if last_position >= head and (reason == "interval" or taken is not None):
            return taken
        leaves: list[dict[str, Any]] = []
        # Hashing happens before the transaction opens: the lock is held only to write.
        for event in read_logged_events(store, after=last_position, until=head):
            leaf = event.leaf()
            leaves.append({"position": event.position, "leaf_index": tree.size,
                           "aggregate_id": event.aggregate_id, "version": event.version,
                           "leaf": leaf.hex()})
            tree.append(leaf)
            last_position = event.position
            if len(leaves) >= events_per_transaction:
                break
        recorded = _record(checkpoints, previous, leaves, tree, last_position, reason)
        if recorded is None:
            races += 1
            if races > 5:
                raise RuntimeError("could not record a checkpoint: other processes keep "
                                   "recording theirs first")
            continue
        taken = recorded
        if last_position >= head:
            return taken


def _record(
    checkpoints: CheckpointStore, previous: Checkpoint | None, leaves: list[dict[str, Any]],
    tree: Frontier, last_position: int, reason: Reason,
) -> Checkpoint | None:
    """Write the leaves and the checkpoint in one transaction; None if another process
    recorded a checkpoint since `previous` was read."""
    values = {"last_position": last_position, "event_count": tree.size,
              "root": tree.root().hex(),
              "frontier": json.dumps([h.hex() for h in tree.subtree_roots]),
              "created_at": datetime.now(UTC), "reason": reason}
    try:
        with checkpoints.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # Serialises checkpoint writers across processes; released at commit.
                conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('dealreg_audit'))"))
            latest_id = conn.execute(select(func.max(checkpoint_table.c.id))).scalar()
            if latest_id != (None if previous is None else previous.id):
                return None
            if leaves:
                conn.execute(insert(leaf_table), leaves)
            inserted = conn.execute(insert(checkpoint_table).values(**values))
            new_id = inserted.inserted_primary_key[0]  # type: ignore[index]
    except IntegrityError:
        log.info("another process recorded the same leaves first; starting again from its "
                 "checkpoint")
        return None
    return _checkpoint({"id": new_id, **values})


def _checkpoint(row: Any) -> Checkpoint:
    values = row if isinstance(row, dict) else row._mapping
    created_at = values["created_at"]
    if created_at.tzinfo is None:  # SQLite hands back naive datetimes; they were stored in UTC
        created_at = created_at.replace(tzinfo=UTC)
    return Checkpoint(id=int(values["id"]), last_position=int(values["last_position"]),
                      event_count=int(values["event_count"]), root=values["root"],
                      frontier=json.loads(values["frontier"]), created_at=created_at,
                      reason=values["reason"])

