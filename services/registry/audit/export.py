"""Export for offline audit: NDJSON of events with their hashes and the checkpoint that
covers them, checkable with no database.

Line 1 is the header: the covering checkpoint, the range and the range proof (the roots of
the subtrees outside the exported range). Every other line is one event: position,
aggregate, version, topic, canonical fields, event hash, leaf index and, with `proofs`, its
own inclusion proof, so a line whose fields and hash were both rewritten still fails on
its own line number.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from services.registry.adapters.event_store import DealRegistryStore
from services.registry.audit.checkpoints import CheckpointStore
from services.registry.audit.logged_events import event_leaf, read_logged_events
from services.registry.audit.merkle import MerkleTree, root_from_inclusion, root_from_range
from services.registry.domain.recorded import GENESIS_HASH, event_hash

EXPORT_FORMAT = "dealreg-audit-export/1"


class ExportRefused(ValueError):
    """The range cannot be exported as asked; the message says why."""


def export_events(
    store: DealRegistryStore, checkpoints: CheckpointStore, first: int, last: int,
    out: TextIO, proofs: bool = False,
) -> int:
    """Write the events with positions first..last and their covering checkpoint; returns
    the number of events written."""
    if first < 1 or last < first:
        raise ExportRefused(f"--from {first} --to {last} is not a range of log positions")
    checkpoint = checkpoints.covering(last)
    if checkpoint is None:
        raise ExportRefused(f"no checkpoint covers position {last} yet: take one first "
                            "(dealreg audit checkpoint)")
    events = list(read_logged_events(store, after=first - 1, until=last))
    if not events:
        raise ExportRefused(f"no events between positions {first} and {last}")
    start_leaf = next(checkpoints.stored_leaves(after=events[0].position - 1, page_size=1))
    if start_leaf.position != events[0].position:
        raise ExportRefused(f"position {events[0].position} was never checkpointed, or has "
                            "been removed: run dealreg audit verify")
    start = start_leaf.leaf_index
    end = start + len(events)
    if end > checkpoint.event_count:
        raise ExportRefused("the log holds more events in this range than the checkpoint "
                            "covered: run dealreg audit verify")
    tree = MerkleTree(checkpoints.leaves_by_index(0, checkpoint.event_count))
    header = {"record": "header", "format": EXPORT_FORMAT, "from": first, "to": last,
              "checkpoint": checkpoint.as_dict(), "first_leaf_index": start,
              "range_proof": [h.hex() for h in tree.range_proof(checkpoint.event_count,
                                                                start, end)]}
    out.write(json.dumps(header, separators=(",", ":")) + "\n")
    for index, event in enumerate(events, start=start):
        line: dict[str, Any] = {
            "record": "event", "position": event.position, "aggregate_id": event.aggregate_id,
            "version": event.version, "topic": event.topic, "fields": event.fields,
            "event_hash": event.event_hash, "leaf_index": index,
        }
        if proofs:
            line["inclusion_proof"] = [
                h.hex() for h in tree.range_proof(checkpoint.event_count, index, index + 1)]
        out.write(json.dumps(line, separators=(",", ":"), ensure_ascii=False) + "\n")
    return len(events)


@dataclass(frozen=True)
class ExportCheck:
    ok: bool
    events: int
    line: int | None = None  # the first failing line, counted from 1
    message: str = ""


class _LineFailed(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


def verify_export(lines: Iterable[str]) -> ExportCheck:
    """Check an export on its own: every event's hash, the chains inside the range, each
    inclusion proof present, and that the events rebuild the checkpoint's root."""
    try:
        return _verify(enumerate(lines, start=1))
    except _LineFailed as failed:
        return ExportCheck(False, 0, failed.line, failed.message)


def _verify(numbered: Iterator[tuple[int, str]]) -> ExportCheck:
    number, header = _parse(*next(numbered, (1, "")))
    if header.get("record") != "header" or header.get("format") != EXPORT_FORMAT:
        raise _LineFailed(number, f"the first line is not a {EXPORT_FORMAT} header")
    try:
        checkpoint = header["checkpoint"]
        size, root = int(checkpoint["event_count"]), str(checkpoint["root"])
        start, proof = int(header["first_leaf_index"]), [bytes.fromhex(h) for h in
                                                           header["range_proof"]]
        first, last = int(header["from"]), int(header["to"])
    except (KeyError, TypeError, ValueError) as exc:
        raise _LineFailed(number, f"the header lacks or garbles {exc}") from None
    leaves: list[bytes] = []
    chains: dict[str, tuple[int, str]] = {}
    previous_position = first - 1
    for number, text in numbered:
        if not text.strip():
            continue
        _, line = _parse(number, text)
        leaves.append(_check_event(number, line, start + len(leaves), size, root, chains))
        position = line["position"]
        if not previous_position < position <= min(last, int(checkpoint["last_position"])):
            raise _LineFailed(number, f"position {position} is out of order or outside "
                              f"{first}..{last}")
        previous_position = position
    if not leaves:
        raise _LineFailed(number + 1, "the export holds no events")
    try:
        rebuilt = root_from_range(size, start, leaves, proof).hex()
    except ValueError as exc:
        raise _LineFailed(1, f"the range proof does not fit the events: {exc}") from None
    if rebuilt != root:
        raise _LineFailed(1, f"the events rebuild root {rebuilt}, not the checkpoint's {root}: "
                          "the header or an event's hash was altered")
    return ExportCheck(True, len(leaves))


def _check_event(number: int, line: dict[str, Any], leaf_index: int, size: int, root: str,
                 chains: dict[str, tuple[int, str]]) -> bytes:
    try:
        position, aggregate_id, version = line["position"], line["aggregate_id"], line["version"]
        topic, fields, claimed = line["topic"], line["fields"], line["event_hash"]
    except KeyError as exc:
        raise _LineFailed(number, f"the event lacks {exc}") from None
    if line.get("record") != "event" or line.get("leaf_index") != leaf_index:
        raise _LineFailed(number, f"expected the event at leaf index {leaf_index}")
    if (fields.get("originator_id"), fields.get("originator_version")) != (aggregate_id,
                                                                             version):
        raise _LineFailed(number, "aggregate_id or version differs from the event's fields")
    recomputed = event_hash(topic, fields)
    if recomputed != claimed:
        raise _LineFailed(number, f"the event's fields hash to {recomputed}, not {claimed}")
    before = chains.get(aggregate_id)
    if before is not None and version != before[0] + 1:
        raise _LineFailed(number, f"version {version} follows version {before[0]}")
    previous_hash = fields.get("previous_hash")
    if previous_hash is not None:
        expected = before[1] if before is not None else (GENESIS_HASH if version == 1 else None)
        if expected is not None and previous_hash != expected:
            raise _LineFailed(number, "previous_hash does not match the hash of the version "
                              "before it")
    chains[aggregate_id] = (version, claimed)
    leaf = event_leaf(position, aggregate_id, version, claimed)
    if "inclusion_proof" in line:
        try:
            proven = root_from_inclusion(size, leaf_index, leaf, [
                bytes.fromhex(h) for h in line["inclusion_proof"]]).hex()
        except ValueError as exc:
            raise _LineFailed(number, f"the inclusion proof is malformed: {exc}") from None
        if proven != root:
            raise _LineFailed(number, "the inclusion proof does not lead to the checkpoint root")
    return leaf


def _parse(number: int, text: str) -> tuple[int, dict[str, Any]]:
    try:
        value = json.loads(text)
    except ValueError:
        raise _LineFailed(number, "not JSON") from None
    if not isinstance(value, dict):
        raise _LineFailed(number, "not a JSON object")
    return number, value
