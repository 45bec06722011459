"""Generated artefacts of the contracts: JSON Schema files and the AsyncAPI document.

The pydantic models in `events_v1`, `events_v2`, `submissions_v1` and `submissions_v2` are
the source of truth (`schemas/v2/` holds what v2 changed: its envelope, the pledge payloads
and its submissions; every other payload is as in `schemas/v1/`); the files
under `contracts/schemas/` and `contracts/asyncapi.yaml` are derived from them and committed,
so partners in any language can read them. Regenerate after changing a model:

    python -m contracts.schema_export          # (re)write the files
    python -m contracts.schema_export --check  # exit 1 and list stale, missing or extra files

Output is deterministic (sorted keys where the brief asks for them, 2-space indent, trailing
newline) so a stale file shows up as a diff.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from contracts import events_v1, events_v2, submissions_v1, submissions_v2
from contracts.events_v1 import EventType
from contracts.stream_v1 import EPOCH_HEADER, SEQ_HEADER
from contracts.submissions_v1 import Receipt
from contracts.untranslatable_v1 import UNTRANSLATABLE_HEADER, UntranslatableEvent
from contracts.watermark_v1 import WATERMARK_HEADER, Watermark

CONTRACTS_DIR = Path(__file__).resolve().parent
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

# One topic for both schema versions: each envelope says its payload's version.
TOPIC = "dealregistry.events.v1"
DLQ_TOPIC = f"{TOPIC}.dlq"
VERSION_DIR = f"schemas/v{events_v1.SCHEMA_VERSION}"
V2_DIR = f"schemas/v{events_v2.SCHEMA_VERSION}"
ENVELOPE_FILE = f"{VERSION_DIR}/envelope.json"
ENVELOPE_V2_FILE = f"{V2_DIR}/envelope.json"
SUBMISSION_FILE = f"{VERSION_DIR}/submission.json"
SUBMISSION_V2_FILE = f"{V2_DIR}/submission.json"
RECEIPT_FILE = f"{VERSION_DIR}/receipt.json"
UNTRANSLATABLE_FILE = f"{VERSION_DIR}/untranslatable_event.json"
WATERMARK_FILE = f"{VERSION_DIR}/watermark.json"
ASYNCAPI_FILE = "asyncapi.yaml"

REGENERATE = "python -m contracts.schema_export"
PAYLOADS = {1: events_v1.PAYLOAD_MODELS, 2: events_v2.PAYLOAD_MODELS}


def payload_file(event_type: EventType, version: int = 1) -> str:
    """Path, relative to `contracts/`, of the payload schema of one event type at a schema
    version: v2's own file for the types v2 changed, else v1's (the same payload)."""
    if version == events_v2.SCHEMA_VERSION and event_type in events_v2.CHANGED_IN_V2:
        return f"{V2_DIR}/payloads/{event_type.value}.json"
    return f"{VERSION_DIR}/payloads/{event_type.value}.json"


def envelope_file(version: int) -> str:
    return ENVELOPE_V2_FILE if version == events_v2.SCHEMA_VERSION else ENVELOPE_FILE


def _with_dialect(schema: dict[str, Any]) -> dict[str, Any]:
    return {"$schema": JSON_SCHEMA_DIALECT, **schema}


def payload_schema(event_type: EventType, version: int = 1) -> dict[str, Any]:
    return _with_dialect(PAYLOADS[version][event_type].model_json_schema())


def envelope_schema(version: int = 1) -> dict[str, Any]:
    model = events_v2.EventEnvelope if version == 2 else events_v1.EventEnvelope
    return _with_dialect(model.model_json_schema())


def submission_schema(version: int = 1) -> dict[str, Any]:
    if version == 2:
        schema = TypeAdapter(submissions_v2.Submission).json_schema()
        description = ("One event a partner POSTs to the registry, in version 2 "
                       "(`schema_version: 2`); `type` selects the payload. pledge_made and "
                       "pledge_revised state the pledge's instrument and tranches; every "
                       "other type is as in v1.")
    else:
        schema = TypeAdapter(submissions_v1.Submission).json_schema()
        description = ("One event a partner POSTs to the registry, in version 1 (no "
                       "schema_version, or 1); `type` selects the payload. v1 pledge_made "
                       "and pledge_revised are deprecated: send version 2 (schemas/v2).")
    return _with_dialect({"title": "Submission", "description": description, **schema})


def receipt_schema() -> dict[str, Any]:
    return _with_dialect(Receipt.model_json_schema())


# --- AsyncAPI -------------------------------------------------------------------------------

_HEADER_NOTE = "Kafka header; the value is the UTF-8 bytes of the string form."


def _stamp_headers() -> dict[str, Any]:
    """The relay's stamp on every record it publishes (`stream_v1`)."""
    return {
        EPOCH_HEADER: {
            "type": "string", "pattern": "^[1-9][0-9]*$",
            "description": "The relay's epoch: it grows when the relay finds the topic lost "
            "and publishes the whole log again; skip records of an older epoch than one read. "
            f"{_HEADER_NOTE}",
        },
        SEQ_HEADER: {
            "type": "string", "pattern": "^(0|[1-9][0-9]*)$",
            "description": "The record's number in its partition within the epoch, from 0. "
            "It may repeat (records sent again), never jump: a jump means records are missing. "
            f"{_HEADER_NOTE}",
        },
    }


def _event_headers(event_type: EventType | None, version: int | None = None
                   ) -> dict[str, Any]:
    """Schema of the headers the relay puts on every event message (of one type and schema
    version, or of any)."""
    type_schema: dict[str, Any] = {"type": "string", "description": f"Event type. {_HEADER_NOTE}"}
    if event_type is None:
        type_schema["enum"] = [t.value for t in EventType]
    else:
        type_schema["const"] = event_type.value
    return {
        "type": "object",
        "required": ["event_id", "event_type", "schema_version", "position", EPOCH_HEADER,
                     SEQ_HEADER],
        "properties": {
            **_stamp_headers(),
            "event_id": {
                "type": "string",
                "description": f"The partner's id for the event (unique per partner). "
                f"{_HEADER_NOTE}",
            },
            "event_type": type_schema,
            "schema_version": {
                "type": "string",
                **({"enum": [str(v) for v in events_v2.SCHEMA_VERSIONS]} if version is None
                   else {"const": str(version)}),
                "description": f"Schema version of the envelope and payload. {_HEADER_NOTE}",
            },
            "position": {
                "type": "string",
                "pattern": "^[1-9][0-9]*$",
                "description": "Position of the event in the registry's log (decimal). "
                f"{_HEADER_NOTE}",
            },
        },
    }


def _dead_letter_headers() -> dict[str, Any]:
    """The original headers (possibly absent on a malformed message) plus `dlq_reason`."""
    original = _event_headers(None)["properties"]
    return {
        "type": "object",
        "required": ["dlq_reason"],
        "properties": {
            "dlq_reason": {
                "type": "string",
                "description": "Why the consumer could not apply the message (UTF-8 text).",
            },
            **original,
        },
    }


def _message_key() -> dict[str, Any]:
    return {
        "type": "string",
        "format": "uuid",
        "description": "Aggregate id (firm, meeting or deal) as a UUID string, UTF-8 encoded; "
        "all events of one aggregate share a partition and stay in order.",
    }


def _kafka_message_binding() -> dict[str, Any]:
    return {"kafka": {"key": _message_key(), "bindingVersion": "0.5.0"}}


def event_message_name(event_type: EventType, version: int) -> str:
    """The message of a type at the version it is published at is named by the type; one
    at an older version (still on the topic) adds `_v<version>`."""
    current = events_v2.schema_version_of(event_type)
    return event_type.value if version == current else f"{event_type.value}_v{version}"


def _event_messages() -> list[tuple[EventType, int]]:
    """Every (type, schema version) a consumer of the topic reads: each type at the version
    the relay publishes it at, and the types v2 changed also at 1 (published before v2)."""
    found: list[tuple[EventType, int]] = [(t, events_v2.schema_version_of(t)) for t in EventType]
    found += [(t, events_v1.SCHEMA_VERSION) for t in EventType
              if t in events_v2.CHANGED_IN_V2]
    return found


def _event_message(event_type: EventType, version: int) -> dict[str, Any]:
    model = PAYLOADS[version][event_type]
    doc = (model.__doc__ or "").strip().splitlines()
    summary = doc[0] if doc else event_type.value.replace("_", " ").capitalize() + "."
    message: dict[str, Any] = {
        "name": event_message_name(event_type, version),
        "title": model.__name__ if version == 1 else f"{model.__name__} (v{version})",
        "summary": summary,
        "contentType": "application/json",
        "headers": _event_headers(event_type, version),
        "payload": {
            "allOf": [
                {"$ref": envelope_file(version)},
                {
                    "type": "object",
                    "properties": {
                        "type": {"const": event_type.value},
                        "schema_version": {"const": version},
                        "payload": {"$ref": payload_file(event_type, version)},
                    },
                },
            ]
        },
        "bindings": _kafka_message_binding(),
    }
    if version < events_v2.schema_version_of(event_type):
        message["description"] = (
            f"As published before schema version {events_v2.SCHEMA_VERSION}; still on the "
            "topic, so consumers read it too, as the newer version with instrument null and "
            "no tranches (`contracts.events_v2.upcast_payload`).")
    return message


def untranslatable_schema() -> dict[str, Any]:
    return _with_dialect(UntranslatableEvent.model_json_schema())


def _untranslatable_message() -> dict[str, Any]:
    return {
        "name": "untranslatable_event",
        "title": "UntranslatableEvent",
        "summary": "Stands in for a stored event the relay could not translate.",
        "description": "Published in the event's place, keyed by its aggregate id, with the "
        f"header `{UNTRANSLATABLE_HEADER}: 1`, so the relay never stalls and the aggregate's "
        "order is kept. Consumers park it against the aggregate (its later events wait) "
        "until it is retried from the registry's log after a fix.",
        "contentType": "application/json",
        "headers": {"type": "object", "properties": {
            UNTRANSLATABLE_HEADER: {"type": "string", "const": "1"}, **_stamp_headers()},
            "required": [UNTRANSLATABLE_HEADER, EPOCH_HEADER, SEQ_HEADER]},
        "payload": {"$ref": UNTRANSLATABLE_FILE},
        "bindings": _kafka_message_binding(),
    }


def watermark_schema() -> dict[str, Any]:
    return _with_dialect(Watermark.model_json_schema())


def _watermark_message() -> dict[str, Any]:
    return {
        "name": "watermark",
        "title": "Watermark",
        "summary": "Every event up to a log position is on the topic.",
        "description": "Sent by the relay to every partition, without a key, with the header "
        f"`{WATERMARK_HEADER}: 1`, after the broker acknowledged a page of the log up to "
        "`position`, and repeated while the relay is idle (a heartbeat). Not an event: "
        "consumers must not apply it. A partition read up to a watermark holds no unread "
        "event at or below its `position`.",
        "contentType": "application/json",
        "headers": {"type": "object", "properties": {
            WATERMARK_HEADER: {"type": "string", "const": "1"}, **_stamp_headers()},
            "required": [WATERMARK_HEADER, EPOCH_HEADER, SEQ_HEADER]},
        "payload": {"$ref": WATERMARK_FILE},
        "bindings": _kafka_message_binding(),
    }


def _dead_letter_message() -> dict[str, Any]:
    return {
        "name": "dead_letter",
        "title": "Dead letter",
        "summary": "A message a consumer could not apply, copied byte for byte.",
        "description": "Key and value are those of the original message, unchanged; the "
        "value is usually an event envelope but may be malformed, which is why it is here. "
        "The original headers are kept and `dlq_reason` is added.",
        "contentType": "application/json",
        "headers": _dead_letter_headers(),
        "payload": {
            "description": f"The original message value from `{TOPIC}`, unchanged "
            f"(normally an envelope as in `{ENVELOPE_FILE}`)."
        },
        "bindings": _kafka_message_binding(),
    }


def asyncapi_document() -> dict[str, Any]:
    """The AsyncAPI 3.0 description of the event topic and its dead-letter topic."""
    events = _event_messages()
    names = [*(event_message_name(t, v) for t, v in events), "untranslatable_event",
             "watermark"]
    event_message_refs = {name: {"$ref": f"#/components/messages/{name}"} for name in names}
    channel_message_refs = [{"$ref": f"#/channels/events/messages/{name}"} for name in names]
    dlq_ref = [{"$ref": "#/channels/deadLetters/messages/dead_letter"}]
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Deal Registry events",
            "version": f"{events_v2.SCHEMA_VERSION}.0.0",
            "description": "Events recorded by the Deal Registry, published by its relay "
            "after they are stored. Delivery is at least once: consumers deduplicate on "
            "`position` (unique in the log). Each envelope's `schema_version` (also a "
            "header) is its payload's: pledge_made and pledge_revised at 2 since v2 (with "
            "the pledge's instrument and tranches), at 1 before it; every other type at 1. "
            "Within a version only optional fields are added. Generated by "
            f"`{REGENERATE}` from the pydantic models in `contracts/`.",
        },
        "defaultContentType": "application/json",
        "channels": {
            "events": {
                "address": TOPIC,
                "title": "Recorded events, schema versions 1 and 2",
                "description": "Message key = aggregate id; value = the event envelope as "
                "JSON; headers event_id, event_type, schema_version, position.",
                "messages": event_message_refs,
                "bindings": {"kafka": {"topic": TOPIC, "bindingVersion": "0.5.0"}},
            },
            "deadLetters": {
                "address": DLQ_TOPIC,
                "title": "Dead letters of the v1 events",
                "description": "Where a consumer puts a message it cannot apply.",
                "messages": {"dead_letter": {"$ref": "#/components/messages/dead_letter"}},
                "bindings": {"kafka": {"topic": DLQ_TOPIC, "bindingVersion": "0.5.0"}},
            },
        },
        "operations": {
            "publishEvents": {
                "action": "send",
                "title": "Relay publishes recorded events",
                "description": "Idempotent producer, acks=all, in log order per aggregate.",
                "channel": {"$ref": "#/channels/events"},
                "messages": channel_message_refs,
            },
            "consumeEvents": {
                "action": "receive",
                "title": "Projections and partners consume recorded events",
                "channel": {"$ref": "#/channels/events"},
                "messages": channel_message_refs,
            },
            "publishDeadLetter": {
                "action": "send",
                "title": "A consumer parks a message it cannot apply",
                "channel": {"$ref": "#/channels/deadLetters"},
                "messages": dlq_ref,
            },
            "consumeDeadLetters": {
                "action": "receive",
                "title": "Operators inspect and replay dead letters",
                "channel": {"$ref": "#/channels/deadLetters"},
                "messages": dlq_ref,
            },
        },
        "components": {
            "messages": {
                **{event_message_name(t, v): _event_message(t, v) for t, v in events},
                "untranslatable_event": _untranslatable_message(),
                "watermark": _watermark_message(),
                "dead_letter": _dead_letter_message(),
            },
        },
    }


# --- Rendering and files --------------------------------------------------------------------


def render_json(document: dict[str, Any], sort_keys: bool = True) -> str:
    return json.dumps(document, indent=2, sort_keys=sort_keys, ensure_ascii=False) + "\n"


def render_asyncapi(document: dict[str, Any]) -> str:
    """YAML without a YAML library: JSON is valid YAML (1.2), after a comment header.
    Keys keep the order they are built in (readable: `asyncapi`, `info` first)."""
    header = (
        "# AsyncAPI 3.0 description of the Deal Registry event topics.\n"
        f"# GENERATED by `{REGENERATE}` -- do not edit by hand.\n"
        "# (JSON syntax, which is valid YAML.)\n"
    )
    return header + render_json(document, sort_keys=False)


def generated_files() -> dict[str, str]:
    """Every generated file: path relative to `contracts/` -> its exact text."""
    files = {payload_file(t): render_json(payload_schema(t)) for t in EventType}
    files.update({payload_file(t, 2): render_json(payload_schema(t, 2))
                  for t in events_v2.CHANGED_IN_V2})
    files[ENVELOPE_FILE] = render_json(envelope_schema())
    files[ENVELOPE_V2_FILE] = render_json(envelope_schema(2))
    files[SUBMISSION_FILE] = render_json(submission_schema())
    files[SUBMISSION_V2_FILE] = render_json(submission_schema(2))
    files[RECEIPT_FILE] = render_json(receipt_schema())
    files[UNTRANSLATABLE_FILE] = render_json(untranslatable_schema())
    files[WATERMARK_FILE] = render_json(watermark_schema())
    files[ASYNCAPI_FILE] = render_asyncapi(asyncapi_document())
    return dict(sorted(files.items()))


def _extra_files(root: Path, expected: dict[str, str]) -> list[str]:
    schemas = root / "schemas"
    if not schemas.is_dir():
        return []
    found = (p.relative_to(root).as_posix() for p in schemas.rglob("*.json"))
    return sorted(path for path in found if path not in expected)


def stale_files(root: Path = CONTRACTS_DIR) -> list[str]:
    """Generated files that are missing, differ from the models, or are no longer generated."""
    expected = generated_files()
    problems = []
    for path, text in expected.items():
        target = root / path
        if not target.is_file():
            problems.append(f"missing: {path}")
        elif target.read_text(encoding="utf-8") != text:
            problems.append(f"stale: {path}")
    problems.extend(f"unexpected: {path}" for path in _extra_files(root, expected))
    return problems


def write_files(root: Path = CONTRACTS_DIR) -> list[str]:
    """(Re)write every generated file and remove schema files no longer generated.
    Returns the paths that changed."""
    expected = generated_files()
    changed = []
    for path, text in expected.items():
        target = root / path
        if target.is_file() and target.read_text(encoding="utf-8") == text:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("w", encoding="utf-8", newline="\n") as out:
            out.write(text)
        changed.append(path)
    for path in _extra_files(root, expected):
        (root / path).unlink()
        changed.append(path)
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m contracts.schema_export",
        description="Write the JSON Schema files and the AsyncAPI document of the contracts.",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 listing files that are stale, missing or unexpected",
    )
    parser.add_argument(
        "--root", type=Path, default=CONTRACTS_DIR, help="contracts folder (default: this one)"
    )
    args = parser.parse_args(argv)
    if args.check:
        problems = stale_files(args.root)
        for problem in problems:
            print(problem)
        if problems:
            print(f"contracts: generated files are out of date; run `{REGENERATE}`",
                  file=sys.stderr)
            return 1
        print("contracts: generated files are up to date")
        return 0
    for path in write_files(args.root):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
