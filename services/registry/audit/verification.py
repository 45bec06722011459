"""Verification: walk the whole log in order and recompute everything a tamperer would
have to forge, reporting the first event that fails.

Three independent checks, each catching what the others cannot:
- hash chains: each event's previous_hash equals the recomputed hash of the version before
  it, and versions run 1, 2, 3... in log order (an edit or deletion inside an aggregate);
- stored leaves: each event's recomputed leaf equals the leaf a checkpoint covered at that
  position (an edit, deletion or swap anywhere up to the last checkpoint, named exactly);
- checkpoint roots: the root over the current events up to a checkpoint's position equals
  the recorded root (an edit of the stored leaves or of the checkpoint itself).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from services.registry.adapters.event_store import DealRegistryStore
from services.registry.audit.checkpoints import Checkpoint, CheckpointStore, StoredLeaf
from services.registry.audit.logged_events import LoggedEvent, read_logged_events
from services.registry.audit.merkle import Frontier
from services.registry.domain.recorded import GENESIS_HASH

FailureKind = Literal["undecodable", "hash_chain_broken", "version_gap", "checkpoint_mismatch"]
MAX_FAILURES = 100
Progress = Callable[[int, int], None]  # (events checked, head position)


@dataclass(frozen=True)
class Failure:
    position: int
    aggregate_id: str
    version: int
    kind: FailureKind
    detail: str


@dataclass
class VerificationReport:
    head_position: int = 0
    events_checked: int = 0
    aggregates: int = 0
    checkpoints_checked: int = 0
    failures: list[Failure] = field(default_factory=list)
    more_failures: bool = False

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def first_failure(self) -> Failure | None:
        return self.failures[0] if self.failures else None

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "head_position": self.head_position,
                "events_checked": self.events_checked, "aggregates": self.aggregates,
                "checkpoints_checked": self.checkpoints_checked,
                "first_failure": None if self.ok else asdict(self.failures[0]),
                "failures": [asdict(f) for f in self.failures],
                "more_failures": self.more_failures}


class _Walk:
    """State carried along the log: each aggregate's newest version and hash, the tree so
    far, and the next stored leaf and checkpoint to compare against."""

    def __init__(self, checkpoints: list[Checkpoint], stored: Iterator[StoredLeaf]) -> None:
        self.report = VerificationReport()
        self.chains: dict[str, tuple[int, str, int]] = {}  # id -> (version, hash, position)
        self.tree = Frontier()
        self.pending_checkpoints = list(checkpoints)
        self.stored = stored
        self.next_leaf: StoredLeaf | None = next(stored, None)
        self.first_leaf_mismatch: int | None = None

    def fail(self, position: int, aggregate_id: str, version: int, kind: FailureKind,
             detail: str) -> None:
        if len(self.report.failures) >= MAX_FAILURES:
            self.report.more_failures = True
            return
        self.report.failures.append(Failure(position, aggregate_id, version, kind, detail))

    def event(self, event: LoggedEvent) -> None:
        leaf = event.leaf()
        self.close_checkpoints_before(event.position)
        self.compare_stored_leaf(event, leaf)
        self.check_chain(event)
        self.tree.append(leaf)
        self.report.events_checked += 1

    def compare_stored_leaf(self, event: LoggedEvent, leaf: bytes) -> None:
        while self.next_leaf is not None and self.next_leaf.position < event.position:
            missing = self.next_leaf
            self.leaf_mismatch(missing.position, missing.aggregate_id, missing.version,
                               "a checkpointed event is missing from the log")
            self.next_leaf = next(self.stored, None)
        if self.next_leaf is None or self.next_leaf.position != event.position:
            return
        expected = self.next_leaf
        self.next_leaf = next(self.stored, None)
        if expected.leaf == leaf.hex():
            return
        if (expected.aggregate_id, expected.version) != (event.aggregate_id, event.version):
            detail = (f"the checkpoint covered {expected.aggregate_id} version "
                      f"{expected.version} here; the log now holds another event")
        else:
            detail = "the event's content differs from what the checkpoint covered"
        self.leaf_mismatch(event.position, event.aggregate_id, event.version, detail)

    def leaf_mismatch(self, position: int, aggregate_id: str, version: int, detail: str) -> None:
        if self.first_leaf_mismatch is None:
            self.first_leaf_mismatch = position
        self.fail(position, aggregate_id, version, "checkpoint_mismatch", detail)

    def check_chain(self, event: LoggedEvent) -> None:
        if event.problem is not None:
            self.fail(event.position, event.aggregate_id, event.version, "undecodable",
                      f"the stored event {event.problem}")
        before = self.chains.get(event.aggregate_id)
        expected_version = 1 if before is None else before[0] + 1
        if event.version != expected_version:
            self.fail(event.position, event.aggregate_id, event.version, "version_gap",
                      f"expected version {expected_version} of this aggregate, found "
                      f"{event.version}")
        elif event.previous_hash is not None and event.problem is None:
            expected_hash = GENESIS_HASH if before is None else before[1]
            if event.previous_hash != expected_hash:
                where = "" if before is None else f" (at position {before[2]})"
                self.fail(event.position, event.aggregate_id, event.version,
                          "hash_chain_broken",
                          f"previous_hash does not match the recomputed hash of version "
                          f"{event.version - 1}{where}: this event or that one was altered")
        if before is None or event.version > before[0]:
            self.chains[event.aggregate_id] = (event.version, event.event_hash, event.position)

    def close_checkpoints_before(self, position: int | None) -> None:
        """Compare every checkpoint ending before `position` (None: all that remain)."""
        while self.pending_checkpoints and (
            position is None or self.pending_checkpoints[0].last_position < position
        ):
            checkpoint = self.pending_checkpoints.pop(0)
            self.report.checkpoints_checked += 1
            root = self.tree.root().hex()
            if root == checkpoint.root and self.tree.size == checkpoint.event_count:
                continue
            if self.first_leaf_mismatch is not None:
                continue  # already reported, at the first event that differs
            self.fail(checkpoint.last_position, "", 0, "checkpoint_mismatch",
                      f"checkpoint {checkpoint.id} ({checkpoint.event_count} events to "
                      f"position {checkpoint.last_position}) has root {checkpoint.root}; "
                      f"the log gives {root} over {self.tree.size} events, though every "
                      "event matches its stored leaf: the checkpoint or its leaves were "
                      "altered")

    def finish(self, head: int) -> VerificationReport:
        self.close_checkpoints_before(None)
        while self.next_leaf is not None:
            missing = self.next_leaf
            self.leaf_mismatch(missing.position, missing.aggregate_id, missing.version,
                               "a checkpointed event is missing from the log")
            self.next_leaf = next(self.stored, None)
        self.report.head_position = head
        self.report.aggregates = len(self.chains)
        self.report.failures.sort(key=lambda f: f.position)
        return self.report


def verify_log(
    store: DealRegistryStore, checkpoints: CheckpointStore, progress: Progress | None = None,
    progress_every: int = 50_000,
) -> VerificationReport:
    """Recompute every chain and every checkpoint over the log as it is stored now."""
    recorded = checkpoints.checkpoints()
    head = store.head_position()
    walk = _Walk(recorded, checkpoints.stored_leaves())
    for event in read_logged_events(store):
        walk.event(event)
        if progress is not None and walk.report.events_checked % progress_every == 0:
            progress(walk.report.events_checked, head)
    return walk.finish(max(head, store.head_position()))
