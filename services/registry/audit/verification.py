"""Verification: walk the log and recompute everything a tamperer would have to forge,
reporting the first event that fails. Memory stays bounded whatever the log's size.

Two passes, each holding a page of events and little else:
- in log order, hashing stored bytes without decoding them: each event's recomputed leaf
  equals the leaf a signed head covered at that position (an edit, deletion, truncation or
  swap anywhere the tree covers, named exactly; the follower keeps the tree within a second
  of the log's head), and each head's root and signature hold over the events as they are
  now (an edit of the stored leaves or heads);
- in aggregate order (the events table's key): each event decodes, each aggregate's versions
  run 1, 2, 3... in log order, and each event's previous_hash equals the recomputed hash of
  the version before it (an edit or deletion inside an aggregate).
Every hash is recomputed from the state as it was written, never through an upcaster.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from services.registry.adapters.event_store import DealRegistryStore
from services.registry.audit.checkpoints import Checkpoint, CheckpointStore, StoredLeaf
from services.registry.audit.logged_events import (
    LEAF_FORMAT,
    LEGACY_LEAF_FORMAT,
    LoggedEvent,
    leaf_format_at,
    read_logged_events,
    read_logged_events_by_aggregate,
)
from services.registry.audit.merkle import Frontier
from services.registry.audit.signing import verify_tree_head
from services.registry.domain.recorded import GENESIS_HASH

FailureKind = Literal["undecodable", "hash_chain_broken", "version_gap", "checkpoint_mismatch",
                      "signature_invalid"]
MAX_FAILURES = 100
# (pass, events checked in it, events in the log when verification began)
Progress = Callable[[str, int, int], None]
LEAF_FORMAT_MEANING = {
    LEGACY_LEAF_FORMAT: "position, aggregate, version and event hash (heads taken before "
                        "leaves bound the stored bytes)",
    LEAF_FORMAT: "position, aggregate, version, topic and SHA-256 of the stored bytes",
}


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
    signed_heads: int = 0
    unsigned_heads: int = 0
    signatures_checked: bool = False
    covered_position: int = 0  # the last position a checkpoint covers
    leaf_formats: list[dict[str, Any]] = field(default_factory=list)
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
                "signed_heads": self.signed_heads, "unsigned_heads": self.unsigned_heads,
                "signatures_checked": self.signatures_checked,
                "covered_position": self.covered_position,
                "leaf_formats": self.leaf_formats,
                "first_failure": None if self.ok else asdict(self.failures[0]),
                "failures": [asdict(f) for f in self.failures],
                "more_failures": self.more_failures}


class _Findings:
    def __init__(self, report: VerificationReport) -> None:
        self.report = report

    def fail(self, position: int, aggregate_id: str, version: int, kind: FailureKind,
             detail: str) -> None:
        if len(self.report.failures) >= MAX_FAILURES:
            self.report.more_failures = True
            return
        self.report.failures.append(Failure(position, aggregate_id, version, kind, detail))


class _LogOrderWalk:
    """Pass 1: the tree so far, and the next stored leaf and head to compare against."""

    def __init__(self, findings: _Findings, heads: Iterator[Checkpoint],
                 stored: Iterator[StoredLeaf], legacy_until: int,
                 public_key: Ed25519PublicKey | None) -> None:
        self.findings = findings
        self.report = findings.report
        self.tree = Frontier()
        self.heads = heads
        self.next_head: Checkpoint | None = next(heads, None)
        self.stored = stored
        self.next_leaf: StoredLeaf | None = next(stored, None)
        self.legacy_until = legacy_until
        self.public_key = public_key
        self.first_leaf_mismatch: int | None = None

    def event(self, event: LoggedEvent) -> None:
        self.close_heads_before(event.position)
        leaf = event.leaf(leaf_format_at(event.position, self.legacy_until))
        self.compare_stored_leaf(event, leaf)
        self.tree.append(leaf)
        self.report.events_checked += 1

    def compare_stored_leaf(self, event: LoggedEvent, leaf: bytes) -> None:
        while self.next_leaf is not None and self.next_leaf.position < event.position:
            self.missing(self.next_leaf)
            self.next_leaf = next(self.stored, None)
        if self.next_leaf is None or self.next_leaf.position != event.position:
            return
        expected = self.next_leaf
        self.next_leaf = next(self.stored, None)
        if expected.leaf == leaf.hex():
            return
        if (expected.aggregate_id, expected.version) != (event.aggregate_id, event.version):
            detail = (f"the signed tree covered {expected.aggregate_id} version "
                      f"{expected.version} here; the log now holds another event")
        else:
            detail = "the event's stored bytes differ from what the signed tree covered"
        self.leaf_mismatch(event.position, event.aggregate_id, event.version, detail)

    def missing(self, leaf: StoredLeaf) -> None:
        self.leaf_mismatch(leaf.position, leaf.aggregate_id, leaf.version,
                           "an event the signed tree covered is missing from the log")

    def leaf_mismatch(self, position: int, aggregate_id: str, version: int, detail: str) -> None:
        if self.first_leaf_mismatch is None:
            self.first_leaf_mismatch = position
        self.findings.fail(position, aggregate_id, version, "checkpoint_mismatch", detail)

    def close_heads_before(self, position: int | None) -> None:
        """Compare every head ending before `position` (None: all that remain)."""
        while self.next_head is not None and (
            position is None or self.next_head.last_position < position
        ):
            head = self.next_head
            self.next_head = next(self.heads, None)
            self.check_head(head)

    def check_head(self, head: Checkpoint) -> None:
        self.report.checkpoints_checked += 1
        self.report.covered_position = max(self.report.covered_position, head.last_position)
        signed = head.signed_head()
        if signed is None:
            self.report.unsigned_heads += 1
        else:
            self.report.signed_heads += 1
            if self.public_key is not None and not verify_tree_head(signed, self.public_key):
                self.findings.fail(head.last_position, "", 0, "signature_invalid",
                                   f"checkpoint {head.id} ({head.event_count} events) is not "
                                   "signed by the registry's key: its head was altered or "
                                   "forged")
        root = self.tree.root().hex()
        if root == head.root and self.tree.size == head.event_count:
            return
        if self.first_leaf_mismatch is not None:
            return  # already reported, at the first event that differs
        self.findings.fail(
            head.last_position, "", 0, "checkpoint_mismatch",
            f"checkpoint {head.id} ({head.event_count} events to position "
            f"{head.last_position}) has root {head.root}; the log gives {root} over "
            f"{self.tree.size} events, though every event matches its stored leaf: the "
            "checkpoint or its leaves were altered")

    def finish(self) -> None:
        self.close_heads_before(None)
        while self.next_leaf is not None:
            self.missing(self.next_leaf)
            self.next_leaf = next(self.stored, None)


class _ChainWalk:
    """Pass 2: one aggregate at a time, in version order."""

    def __init__(self, findings: _Findings) -> None:
        self.findings = findings
        self.current: str | None = None
        self.before: LoggedEvent | None = None

    def event(self, event: LoggedEvent) -> None:
        if event.aggregate_id != self.current:
            self.current = event.aggregate_id
            self.before = None
            self.findings.report.aggregates += 1
        before = self.before
        if event.problem is not None:
            self.findings.fail(event.position, event.aggregate_id, event.version,
                               "undecodable", f"the stored event {event.problem}")
        expected_version = 1 if before is None else before.version + 1
        if event.version != expected_version:
            self.findings.fail(event.position, event.aggregate_id, event.version,
                               "version_gap", f"expected version {expected_version} of this "
                               f"aggregate, found {event.version}")
        elif before is not None and event.position <= before.position:
            self.findings.fail(event.position, event.aggregate_id, event.version,
                               "version_gap", f"version {event.version} sits before version "
                               f"{before.version} (position {before.position}) in the log")
        elif event.previous_hash is not None and event.problem is None:
            expected_hash = GENESIS_HASH if before is None else before.event_hash
            if event.previous_hash != expected_hash:
                where = "" if before is None else f" (at position {before.position})"
                self.findings.fail(
                    event.position, event.aggregate_id, event.version, "hash_chain_broken",
                    f"previous_hash does not match the recomputed hash of version "
                    f"{event.version - 1}{where}: this event or that one was altered")
        self.before = event


def _leaf_formats(legacy_until: int, head: int) -> list[dict[str, Any]]:
    ranges = []
    if legacy_until:
        ranges.append({"from": 1, "to": legacy_until, "format": LEGACY_LEAF_FORMAT,
                       "meaning": LEAF_FORMAT_MEANING[LEGACY_LEAF_FORMAT]})
    if head > legacy_until:
        ranges.append({"from": legacy_until + 1, "to": head, "format": LEAF_FORMAT,
                       "meaning": LEAF_FORMAT_MEANING[LEAF_FORMAT]})
    return ranges


def verify_log(
    store: DealRegistryStore, checkpoints: CheckpointStore, progress: Progress | None = None,
    progress_every: int = 50_000, public_key: Ed25519PublicKey | None = None,
) -> VerificationReport:
    """Recompute every chain and every signed head over the log as it is stored now. With
    `public_key`, every signed head's signature is checked too."""
    report = VerificationReport(signatures_checked=public_key is not None)
    findings = _Findings(report)
    head = store.head_position()
    legacy_until = checkpoints.legacy_leaves_until()
    walk = _LogOrderWalk(findings, checkpoints.iter_checkpoints(), checkpoints.stored_leaves(),
                         legacy_until, public_key)
    # Only legacy leaves need the decoded event; format 2 hashes the stored bytes.
    for event in read_logged_events(store, decode=lambda position: position <= legacy_until):
        walk.event(event)
        if progress is not None and report.events_checked % progress_every == 0:
            progress("log order", report.events_checked, head)
    walk.finish()
    chains = _ChainWalk(findings)
    for checked, event in enumerate(read_logged_events_by_aggregate(store), start=1):
        chains.event(event)
        if progress is not None and checked % progress_every == 0:
            progress("hash chains", checked, head)
    report.head_position = max(head, store.head_position())
    report.leaf_formats = _leaf_formats(legacy_until, report.head_position)
    report.failures.sort(key=lambda f: f.position)
    return report
