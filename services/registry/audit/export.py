"""Export for offline audit: NDJSON of events with their hashes and the signed tree head
that covers them, checkable with no database.

Line 1 is the header: the covering signed head (and the public key it was signed with), the
range and the range proof (the roots of the subtrees outside the exported range). Every
other line is one event: position, aggregate, version, topic, class version, its fields as
written, event hash, SHA-256 of its stored bytes, leaf format, leaf index and, with
`proofs`, its own RFC 9162 inclusion proof, so a line whose fields and hash were both
rewritten still fails on its own line number.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from services.registry.adapters.event_store import DealRegistryStore, stored_state_transcoder
from services.registry.audit.checkpoints import CheckpointStore
from services.registry.audit.logged_events import (
    LEAF_FORMAT,
    LEGACY_LEAF_FORMAT,
    decoded_state,
    event_leaf,
    leaf_format_at,
    read_logged_events,
    stored_event_leaf,
)
from services.registry.audit.merkle import (
    inclusion_path,
    range_proof_in,
    root_from_range,
    verify_inclusion,
)
from services.registry.audit.signing import (
    SignedTreeHead,
    key_id,
    load_public_key,
    verify_tree_head,
)
from services.registry.audit.tree_head_key import TreeHeadSigner
from services.registry.domain.recorded import GENESIS_HASH, canonical_value, event_hash

EXPORT_FORMAT = "dealreg-audit-export/2"


class ExportRefused(ValueError):
    """The range cannot be exported as asked; the message says why."""


def export_events(
    store: DealRegistryStore, checkpoints: CheckpointStore, first: int, last: int,
    out: TextIO, proofs: bool = False, signer: TreeHeadSigner | None = None,
) -> int:
    """Write the events with positions first..last and their covering signed head; returns
    the number of events written. Memory holds the range's events, not the tree."""
    if first < 1 or last < first:
        raise ExportRefused(f"--from {first} --to {last} is not a range of log positions")
    checkpoint = checkpoints.latest()
    if checkpoint is None or checkpoint.last_position < last:
        raise ExportRefused(f"no signed tree head covers position {last} yet: ask again in a "
                            "second")
    events = list(read_logged_events(store, after=first - 1, until=last))
    if not events:
        raise ExportRefused(f"no events between positions {first} and {last}")
    start_leaf = checkpoints.leaf_at(events[0].position)
    if start_leaf is None:
        raise ExportRefused(f"position {events[0].position} was never covered, or has been "
                            "removed: run dealreg audit verify")
    start = start_leaf.leaf_index
    end = start + len(events)
    if end > checkpoint.event_count:
        raise ExportRefused("the log holds more events in this range than the tree covered: "
                            "run dealreg audit verify")
    legacy_until = checkpoints.legacy_leaves_until()
    tree = checkpoints.tree()
    size = checkpoint.event_count
    signed = checkpoint.signed_head()
    header: dict[str, Any] = {
        "record": "header", "format": EXPORT_FORMAT, "from": first, "to": last,
        "tree_head": None if signed is None else signed.as_dict(),
        "tree_size": size, "root_hash": checkpoint.root,
        "public_key_pem": None if signer is None else signer.public_key_pem(),
        "first_leaf_index": start,
        "range_proof": [h.hex() for h in range_proof_in(tree, size, start, end)]}
    out.write(json.dumps(header, separators=(",", ":")) + "\n")
    for index, event in enumerate(events, start=start):
        line: dict[str, Any] = {
            "record": "event", "position": event.position, "aggregate_id": event.aggregate_id,
            "version": event.version, "topic": event.topic,
            "class_version": event.class_version, "fields": event.fields,
            "event_hash": event.event_hash, "state_sha256": event.state_digest,
            "state_base64": base64.b64encode(event.state).decode(),
            "leaf_format": leaf_format_at(event.position, legacy_until),
            "leaf_index": index,
        }
        if proofs:
            line["inclusion_proof"] = [h.hex() for h in inclusion_path(tree, index, size)]
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


def verify_export(lines: Iterable[str], public_key: Ed25519PublicKey | None = None
                  ) -> ExportCheck:
    """Check an export on its own: the signed head's signature (with `public_key`, the one
    the auditor keeps; else with the key in the export, which proves less), every event's
    hash, the chains inside the range, each inclusion proof present, and that the events
    rebuild the signed root."""
    try:
        return _verify(enumerate(lines, start=1), public_key)
    except _LineFailed as failed:
        return ExportCheck(False, 0, failed.line, failed.message)


def _signed_root(number: int, header: dict[str, Any],
                 public_key: Ed25519PublicKey | None) -> tuple[int, str, str]:
    """The tree size and root the header's signed head vouches for, and what vouched."""
    try:
        head = SignedTreeHead.from_dict(header["tree_head"])
    except (KeyError, TypeError, ValueError) as exc:
        raise _LineFailed(number, f"the header has no well-formed signed tree head: {exc}"
                          ) from None
    vouched = "the key you gave"
    if public_key is None:
        try:
            public_key = load_public_key(str(header["public_key_pem"]))
        except (KeyError, ValueError) as exc:
            raise _LineFailed(number, f"no public key to check the head with ({exc}): pass "
                              "--public-key") from None
        vouched = (f"the key in the export (id {key_id(public_key)}): compare it with the "
                   "one you keep, or pass --public-key")
    if not verify_tree_head(head, public_key):
        raise _LineFailed(number, "the tree head's signature does not verify with "
                          f"{vouched.split(':')[0]}: the header was altered or signed by "
                          "another key")
    return head.tree_size, head.root_hash, vouched


def _verify(numbered: Iterator[tuple[int, str]],
            public_key: Ed25519PublicKey | None) -> ExportCheck:
    number, header = _parse(*next(numbered, (1, "")))
    if header.get("record") != "header" or header.get("format") != EXPORT_FORMAT:
        raise _LineFailed(number, f"the first line is not a {EXPORT_FORMAT} header")
    size, root, vouched = _signed_root(number, header, public_key)
    try:
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
        if not previous_position < position <= last:
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
        raise _LineFailed(1, f"the events rebuild root {rebuilt}, not the signed {root}: "
                          "the header or an event's hash was altered")
    return ExportCheck(True, len(leaves), message=f"signed head checked with {vouched}")


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
    class_version = line.get("class_version", 1)
    if not isinstance(class_version, int):
        raise _LineFailed(number, "class_version is not a number")
    state_digest = _check_stored_state(number, line, fields, class_version)
    recomputed = event_hash(topic, fields, class_version)
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
    if line.get("leaf_format") == LEGACY_LEAF_FORMAT:
        leaf = event_leaf(position, aggregate_id, version, claimed)
    elif line.get("leaf_format") == LEAF_FORMAT:
        leaf = stored_event_leaf(position, aggregate_id, version, topic, state_digest)
    else:
        raise _LineFailed(number, "the event has no known leaf_format")
    if "inclusion_proof" in line:
        try:
            path = [bytes.fromhex(h) for h in line["inclusion_proof"]]
        except (TypeError, ValueError):
            raise _LineFailed(number, "the inclusion proof is not a list of hex hashes"
                              ) from None
        if not verify_inclusion(leaf_index, size, leaf, path, bytes.fromhex(root)):
            raise _LineFailed(number, "the inclusion proof does not lead to the signed root")
    return leaf


def _check_stored_state(number: int, line: dict[str, Any], fields: dict[str, Any],
                        class_version: int) -> str:
    """The digest of the line's stored bytes, once they decode to the fields it shows: the
    leaf binds the bytes, the chain the fields, and this binds the two."""
    try:
        state = base64.b64decode(str(line["state_base64"]), validate=True)
    except (KeyError, binascii.Error):
        raise _LineFailed(number, "the event lacks its stored bytes (state_base64)") from None
    digest = hashlib.sha256(state).hexdigest()
    if line.get("state_sha256") not in (None, digest):
        raise _LineFailed(number, "state_sha256 is not the digest of the stored bytes")
    try:
        decoded, stored_version = decoded_state(stored_state_transcoder(), state,
                                                fields.get("originator_id"),
                                                fields.get("originator_version", 0))
    except Exception as exc:  # noqa: BLE001 - any decoding failure is this line's finding
        raise _LineFailed(number, f"the stored bytes do not decode: {exc}"[:300]) from None
    if stored_version != class_version or canonical_value(decoded) != fields:
        raise _LineFailed(number, "the event's fields are not what its stored bytes hold")
    return digest


def _parse(number: int, text: str) -> tuple[int, dict[str, Any]]:
    try:
        value = json.loads(text)
    except ValueError:
        raise _LineFailed(number, "not JSON") from None
    if not isinstance(value, dict):
        raise _LineFailed(number, "not a JSON object")
    return number, value
