"""Checkpoints: signed tree heads over the event log from its first position to N, with the
leaves they cover and the interior nodes proofs need, in tables of their own beside the
events.

The tree is extended continuously (`extend_tree`, run by the write service's follower within
a second of every commit): the newest "continuous" checkpoint row is extended in place until
it is `keep_seconds` old, then a new row starts, so the history keeps one signed head per
interval and the newest head is never more than a moment behind the log. The leaves are kept
so that verification can name the first event that differs from what a head covered; nodes
of 16 leaves and more are kept so that a proof reads a few dozen rows, not the whole tree.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    func,
    insert,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from services.registry.adapters.event_store import DealRegistryStore
from services.registry.audit.logged_events import (
    LEAF_FORMAT,
    LEGACY_LEAF_FORMAT,
    read_logged_events,
)
from services.registry.audit.merkle import Frontier, node_hash, root_of, split_point
from services.registry.audit.signing import SignedTreeHead
from services.registry.audit.tree_head_key import TreeHeadSigner
from services.shared.settings import Settings, sqlalchemy_url

log = logging.getLogger("dealreg.audit")

# interval: taken by the interval checkpointer before heads were continuous (still read).
Reason = Literal["continuous", "on_demand", "interval"]
# Perfect subtrees of 2**NODE_LEVEL_FROM leaves and more are stored; smaller ones are
# recomputed from at most that many leaves.
NODE_LEVEL_FROM = 4

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
    # Added with signed heads; NULL in rows recorded before (unsigned, leaf format 1).
    Column("timestamp_ms", BigInteger, nullable=True),
    Column("key_id", String(64), nullable=True),
    Column("signature", Text, nullable=True),
    Column("leaf_format", Integer, nullable=True),
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
node_table = Table(
    "dealreg_audit_nodes",
    audit_tables,
    # The root of the perfect subtree over leaves [index * 2**level, (index + 1) * 2**level).
    Column("level", Integer, primary_key=True, autoincrement=False),
    Column("node_index", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", String(64), nullable=False),
)
# Columns added to tables that existing stores already have: (table, column, SQL type).
ADDED_COLUMNS = (
    ("dealreg_audit_checkpoints", "timestamp_ms", "BIGINT"),
    ("dealreg_audit_checkpoints", "key_id", "VARCHAR(64)"),
    ("dealreg_audit_checkpoints", "signature", "TEXT"),
    ("dealreg_audit_checkpoints", "leaf_format", "INTEGER"),
)
# Built once: the tree-head follower runs these many times a second under load, and building
# a SQLAlchemy statement costs more than executing it.
NEWEST_CHECKPOINT = select(checkpoint_table).order_by(
    checkpoint_table.c.event_count.desc(), checkpoint_table.c.id.desc()).limit(1)
EXTEND_CHECKPOINT = update(checkpoint_table).where(checkpoint_table.c.id == bindparam("row_id"))
ADD_CHECKPOINT = insert(checkpoint_table)
ADD_LEAVES = insert(leaf_table)
ADD_NODES = insert(node_table)


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
    timestamp_ms: int | None = None
    key_id: str | None = None
    signature: str | None = None
    leaf_format: int = LEGACY_LEAF_FORMAT

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "last_position": self.last_position,
                "event_count": self.event_count, "root": self.root,
                "created_at": self.created_at.isoformat(), "reason": self.reason,
                "signed": self.signature is not None, "leaf_format": self.leaf_format}

    def tree(self) -> Frontier:
        return Frontier(self.event_count, [bytes.fromhex(h) for h in self.frontier])

    def signed_head(self) -> SignedTreeHead | None:
        if self.signature is None or self.key_id is None or self.timestamp_ms is None:
            return None
        return SignedTreeHead(tree_size=self.event_count, timestamp_ms=self.timestamp_ms,
                              root_hash=self.root, last_position=self.last_position,
                              key_id=self.key_id, signature=self.signature)


@dataclass(frozen=True)
class StoredLeaf:
    position: int
    leaf_index: int
    aggregate_id: str
    version: int
    leaf: str


class CheckpointStore:
    """Records checkpoints, the leaves they cover and the tree's nodes; reads them back."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create_schema(self) -> None:
        """Idempotent, and migrates a store made before signed heads (adds their columns);
        a process racing another to create the tables finds them made."""
        try:
            audit_tables.create_all(self.engine)
        except (IntegrityError, ProgrammingError, OperationalError):
            audit_tables.create_all(self.engine)
        for table, column, sql_type in ADDED_COLUMNS:
            present = {c["name"] for c in inspect(self.engine).get_columns(table)}
            if column in present:
                continue
            try:
                with self.engine.begin() as conn:
                    conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}"))
            except (ProgrammingError, OperationalError):
                # Another process added it first.
                if column not in {c["name"] for c in inspect(self.engine).get_columns(table)}:
                    raise
            log.info("audit tables migrated: %s.%s added", table, column)
        self.backfill_nodes()

    def backfill_nodes(self, page_size: int = 5000) -> int:
        """Store the nodes of leaves recorded before nodes were (a store whose checkpoints
        predate signed heads), so proofs over them read a few rows too. Returns how many."""
        # Looked at on every start: two one-row reads, not counts of the tables.
        with self.engine.connect() as conn:
            any_leaf = conn.execute(select(leaf_table.c.position).limit(1)).first()
            any_node = conn.execute(select(node_table.c.level).limit(1)).first()
        if any_leaf is None or any_node is not None:
            return 0
        tree = Frontier()
        written = 0
        while page := self.leaves_by_index(tree.size, tree.size + page_size):
            batch = [{"level": level, "node_index": index, "hash": digest.hex()}
                     for leaf in page for level, index, digest in tree.append(leaf)
                     if level >= NODE_LEVEL_FROM]
            if batch:
                try:
                    with self.engine.begin() as conn:
                        conn.execute(insert(node_table), batch)
                except IntegrityError:
                    log.info("another process is backfilling the tree's nodes")
                    return written
                written += len(batch)
        log.info("audit tables migrated: %d tree nodes stored for %d earlier leaves", written,
                 tree.size)
        return written

    def iter_checkpoints(self, page_size: int = 1000) -> Iterator[Checkpoint]:
        """Every checkpoint, oldest first, a page at a time."""
        offset = 0
        while True:
            recorded, _ = self.page(page_size, offset, count=False)
            yield from recorded
            if len(recorded) < page_size:
                return
            offset += page_size

    def checkpoints(self) -> list[Checkpoint]:
        """Every checkpoint, oldest first."""
        return list(self.iter_checkpoints())

    def page(self, limit: int, offset: int, count: bool = True) -> tuple[list[Checkpoint], int]:
        """One page of the checkpoints, oldest first, and how many there are in all."""
        with self.engine.connect() as conn:
            total = 0
            if count:
                total = conn.execute(select(func.count()).select_from(checkpoint_table)
                                     ).scalar_one()
            rows = conn.execute(select(checkpoint_table).order_by(
                checkpoint_table.c.event_count, checkpoint_table.c.id,
            ).limit(limit).offset(offset)).all()
        return [_checkpoint(row) for row in rows], int(total)

    def latest(self, conn: Connection | None = None) -> Checkpoint | None:
        if conn is not None:
            row = conn.execute(NEWEST_CHECKPOINT).first()
        else:
            with self.engine.connect() as own:
                row = own.execute(NEWEST_CHECKPOINT).first()
        return None if row is None else _checkpoint(row)

    def covering(self, position: int) -> Checkpoint | None:
        """The earliest checkpoint whose tree includes `position`."""
        with self.engine.connect() as conn:
            row = conn.execute(select(checkpoint_table).where(
                checkpoint_table.c.last_position >= position
            ).order_by(checkpoint_table.c.event_count, checkpoint_table.c.id).limit(1)).first()
        return None if row is None else _checkpoint(row)

    def of_size(self, size: int) -> Checkpoint | None:
        """The newest checkpoint whose tree has exactly `size` leaves."""
        with self.engine.connect() as conn:
            row = conn.execute(select(checkpoint_table).where(
                checkpoint_table.c.event_count == size
            ).order_by(checkpoint_table.c.id.desc()).limit(1)).first()
        return None if row is None else _checkpoint(row)

    def legacy_leaves_until(self) -> int:
        """The last position whose leaf has the legacy format 1 (0: none has)."""
        with self.engine.connect() as conn:
            value = conn.execute(select(func.max(checkpoint_table.c.last_position)).where(
                or_(checkpoint_table.c.leaf_format.is_(None),
                    checkpoint_table.c.leaf_format == LEGACY_LEAF_FORMAT))).scalar()
        return int(value or 0)

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

    def leaf_at(self, position: int) -> StoredLeaf | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(leaf_table).where(leaf_table.c.position == position)
                               ).first()
        return None if row is None else StoredLeaf(row.position, row.leaf_index,
                                                   row.aggregate_id, row.version, row.leaf)

    def leaf_indexes(self, positions: Collection[int]) -> dict[int, int]:
        """The leaf index of each of `positions` the tree covers, in one query."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(leaf_table.c.position, leaf_table.c.leaf_index).where(
                leaf_table.c.position.in_(list(positions)))).all()
        return {row.position: row.leaf_index for row in rows}

    def leaves_by_index(self, start: int, end: int) -> list[bytes]:
        """Leaf hashes with leaf_index in [start, end), in tree order."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(leaf_table.c.leaf).where(
                leaf_table.c.leaf_index >= start, leaf_table.c.leaf_index < end
            ).order_by(leaf_table.c.leaf_index)).all()
        return [bytes.fromhex(row.leaf) for row in rows]

    def tree(self) -> StoredTree:
        return StoredTree(self)

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(checkpoint_table))
                       .scalar_one())


class StoredTree:
    """The tree's subtree roots read from the stored nodes and leaves (merkle.SubtreeRoots):
    a proof reads O(log n) rows, each perfect subtree at most 2**NODE_LEVEL_FROM leaves."""

    def __init__(self, checkpoints: CheckpointStore) -> None:
        self.checkpoints = checkpoints
        self._known: dict[tuple[int, int], bytes] = {}

    def subtree_root(self, low: int, high: int) -> bytes:
        known = self._known.get((low, high))
        if known is not None:
            return known
        size = high - low
        if size & (size - 1) == 0 and low % size == 0:
            level = size.bit_length() - 1
            root = self._perfect(level, low // size, low, high)
        else:
            middle = low + split_point(size)
            root = node_hash(self.subtree_root(low, middle), self.subtree_root(middle, high))
        self._known[(low, high)] = root
        return root

    def _perfect(self, level: int, index: int, low: int, high: int) -> bytes:
        if level >= NODE_LEVEL_FROM:
            with self.checkpoints.engine.connect() as conn:
                stored = conn.execute(select(node_table.c.hash).where(
                    node_table.c.level == level, node_table.c.node_index == index)).scalar()
            if stored is None:
                raise LookupError(f"no stored node covers leaves {low}..{high - 1}")
            return bytes.fromhex(stored)
        leaves = self.checkpoints.leaves_by_index(low, high)
        if len(leaves) != high - low:
            raise LookupError(f"leaves {low}..{high - 1} are not all stored")
        return root_of(leaves)


def extend_tree(
    store: DealRegistryStore, checkpoints: CheckpointStore, signer: TreeHeadSigner,
    reason: Reason = "continuous", keep_seconds: float = 300.0,
    events_per_transaction: int = 5000, last_known: Checkpoint | None = None,
) -> Checkpoint | None:
    """Extend the tree to the log's head and sign its head; returns the
    checkpoint row written last, or None when there was nothing to do.

    "continuous" extends the newest continuous row while it is younger than `keep_seconds`
    and starts a new row after; "on_demand" always records a new row, even over an
    unchanged log. A long backlog is covered `events_per_transaction` events at a time, so
    the writers sharing a SQLite file are never locked out for long.

    `last_known`, the newest checkpoint as the caller last wrote or read it, spares reading
    it first; if another process has moved on since, the write finds out and starts again
    from the newest. The first try hashes outside any lock; a writer that lost a race plans
    its next extension while holding the tree writers' lock, so followers extending in a
    tight loop can delay it but never starve it."""
    head = store.head_position()
    written: Checkpoint | None = None
    contended = False
    busy = 0
    while True:
        try:
            if contended:
                with checkpoints.engine.begin() as conn:
                    _hold_tree_writers(conn)
                    extension = _plan(store, checkpoints.latest(conn), head, reason,
                                      written, events_per_transaction)
                    recorded = None if extension is None else _write(
                        conn, signer, extension, reason, keep_seconds)
                if extension is None:
                    return written
            else:
                previous = last_known if last_known is not None else checkpoints.latest()
                last_known = None
                extension = _plan(store, previous, head, reason, written,
                                  events_per_transaction)
                if extension is None:
                    return written
                with checkpoints.engine.begin() as conn:
                    _hold_tree_writers(conn)
                    recorded = (_write(conn, signer, extension, reason, keep_seconds)
                                if _unchanged(checkpoints.latest(conn), previous) else None)
        except IntegrityError:
            log.info("another process extended the tree first; starting again from its head")
            recorded = None
        except OperationalError as exc:
            # SQLite: another writer's transaction held the file past the busy timeout;
            # anything else is a fault.
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            busy += 1
            if busy > 20:
                raise
            log.info("the store is busy with another writer; starting again")
            recorded = None
        if recorded is None:
            contended = True
            continue
        written = recorded
        if recorded.last_position >= head:
            return written


def take_checkpoint(
    store: DealRegistryStore, checkpoints: CheckpointStore, signer: TreeHeadSigner,
    reason: Reason = "on_demand",
) -> Checkpoint:
    """Record a signed head at the log's current head now, as a row of its own."""
    taken = extend_tree(store, checkpoints, signer, reason)
    assert taken is not None  # an on-demand head is recorded even over an unchanged log
    return taken


@dataclass
class _Extension:
    """What one transaction adds to the tree: the leaves and nodes after `previous`."""

    previous: Checkpoint | None
    tree: Frontier
    leaves: list[dict[str, Any]]
    nodes: list[dict[str, Any]]
    last_position: int


def _plan(
    store: DealRegistryStore, previous: Checkpoint | None, head: int, reason: Reason,
    written: Checkpoint | None, events_per_transaction: int,
) -> _Extension | None:
    """The next extension from `previous` towards `head`; None when there is nothing to
    record (the tree covers `head`, and a continuous head or this call's own on-demand row
    already says so)."""
    tree = Frontier() if previous is None else previous.tree()
    last_position = 0 if previous is None else previous.last_position
    if last_position >= head and (reason == "continuous" or written is not None):
        return None
    leaves: list[dict[str, Any]] = []
    nodes: list[dict[str, Any]] = []
    for event in read_logged_events(store, after=last_position, until=head, decode=False):
        leaf = event.leaf(LEAF_FORMAT)
        leaves.append({"position": event.position, "leaf_index": tree.size,
                       "aggregate_id": event.aggregate_id, "version": event.version,
                       "leaf": leaf.hex()})
        for level, index, digest in tree.append(leaf):
            if level >= NODE_LEVEL_FROM:
                nodes.append({"level": level, "node_index": index, "hash": digest.hex()})
        last_position = event.position
        if len(leaves) >= events_per_transaction:
            break
    if not leaves and reason == "continuous":
        return None
    return _Extension(previous, tree, leaves, nodes, last_position)


def _hold_tree_writers(conn: Connection) -> None:
    """Take the lock that serialises tree writers across processes, released at commit:
    PostgreSQL's advisory lock; on SQLite the file's write lock (BEGIN IMMEDIATE waits out
    the busy timeout for it)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('dealreg_audit'))"))
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _unchanged(latest: Checkpoint | None, previous: Checkpoint | None) -> bool:
    if latest is None or previous is None:
        return latest is previous
    return (latest.id, latest.event_count) == (previous.id, previous.event_count)


def _write(
    conn: Connection, signer: TreeHeadSigner, extension: _Extension, reason: Reason,
    keep_seconds: float,
) -> Checkpoint:
    """Write the extension's leaves, nodes and signed head on `conn`, which holds the tree
    writers' lock and has seen that the newest checkpoint is still `extension.previous`."""
    previous, tree = extension.previous, extension.tree
    now = datetime.now(UTC)
    head = signer.sign(tree.size, int(time.time() * 1000), tree.root(),
                       extension.last_position)
    values: dict[str, Any] = {
        "last_position": extension.last_position, "event_count": tree.size,
        "root": head.root_hash, "frontier": json.dumps([h.hex() for h in tree.subtree_roots]),
        "timestamp_ms": head.timestamp_ms, "key_id": head.key_id,
        "signature": head.signature, "leaf_format": LEAF_FORMAT}
    extend_in_place = (
        reason == "continuous" and previous is not None and previous.reason == "continuous"
        and previous.signature is not None
        and (now - previous.created_at).total_seconds() < keep_seconds)
    if extension.leaves:
        conn.execute(ADD_LEAVES, extension.leaves)
    if extension.nodes:
        conn.execute(ADD_NODES, extension.nodes)
    if extend_in_place:
        assert previous is not None
        conn.execute(EXTEND_CHECKPOINT, {"row_id": previous.id, **values})
        row = {"id": previous.id, "created_at": previous.created_at,
               "reason": previous.reason, **values}
    else:
        row = {"created_at": now, "reason": reason, **values}
        inserted = conn.execute(ADD_CHECKPOINT, row)
        row["id"] = inserted.inserted_primary_key[0]  # type: ignore[index]
    return _checkpoint(row)


def _checkpoint(row: Any) -> Checkpoint:
    values = row if isinstance(row, dict) else row._mapping
    created_at = values["created_at"]
    if created_at.tzinfo is None:  # SQLite hands back naive datetimes; they were stored in UTC
        created_at = created_at.replace(tzinfo=UTC)
    return Checkpoint(id=int(values["id"]), last_position=int(values["last_position"]),
                      event_count=int(values["event_count"]), root=values["root"],
                      frontier=json.loads(values["frontier"]), created_at=created_at,
                      reason=values["reason"], timestamp_ms=values.get("timestamp_ms"),
                      key_id=values.get("key_id"), signature=values.get("signature"),
                      leaf_format=int(values.get("leaf_format") or LEGACY_LEAF_FORMAT))
