"""Generated artefacts of the contracts: JSON Schema files and the AsyncAPI document.

The pydantic models in `events_v1` and `submissions_v1` are the source of truth; the files
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

from contracts.events_v1 import PAYLOAD_MODELS, SCHEMA_VERSION, EventEnvelope, EventType
from contracts.stream_v1 import EPOCH_HEADER, SEQ_HEADER
from contracts.submissions_v1 import Receipt, Submission
from contracts.untranslatable_v1 import UNTRANSLATABLE_HEADER, UntranslatableEvent
from contracts.watermark_v1 import WATERMARK_HEADER, Watermark

CONTRACTS_DIR = Path(__file__).resolve().parent
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

TOPIC = "dealregistry.events.v1"
DLQ_TOPIC = f"{TOPIC}.dlq"
VERSION_DIR = f"schemas/v{SCHEMA_VERSION}"
ENVELOPE_FILE = f"{VERSION_DIR}/envelope.json"
SUBMISSION_FILE = f"{VERSION_DIR}/submission.json"
RECEIPT_FILE = f"{VERSION_DIR}/receipt.json"
UNTRANSLATABLE_FILE = f"{VERSION_DIR}/untranslatable_event.json"
WATERMARK_FILE = f"{VERSION_DIR}/watermark.json"
ASYNCAPI_FILE = "asyncapi.yaml"

REGENERATE = "python -m contracts.schema_export"


def payload_file(event_type: EventType) -> str:
    """Path, relative to `contracts/`, of the payload schema of one event type."""
    return f"{VERSION_DIR}/payloads/{event_type.value}.json"


def _with_dialect(schema: dict[str, Any]) -> dict[str, Any]:
    return {"$schema": JSON_SCHEMA_DIALECT, **schema}


def payload_schema(event_type: EventType) -> dict[str, Any]:
    return _with_dialect(PAYLOAD_MODELS[event_type].model_json_schema())


def envelope_schema() -> dict[str, Any]:
    return _with_dialect(EventEnvelope.model_json_schema())


def submission_schema() -> dict[str, Any]:
    schema = TypeAdapter(Submission).json_schema()
    return _with_dialect(
        {
            "title": "Submission",
            "description": "One event a partner POSTs to the registry; `type` selects the "
            "payload.",
            **schema,
        }
    )


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


def _event_headers(event_type: EventType | None) -> dict[str, Any]:
    """Schema of the headers the relay puts on every event message."""
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
                "const": str(SCHEMA_VERSION),
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


def _event_message(event_type: EventType) -> dict[str, Any]:
    model = PAYLOAD_MODELS[event_type]
    doc = (model.__doc__ or "").strip().splitlines()
    summary = doc[0] if doc else event_type.value.replace("_", " ").capitalize() + "."
    return {
        "name": event_type.value,
        "title": model.__name__,
        "summary": summary,
        "contentType": "application/json",
        "headers": _event_headers(event_type),
        "payload": {
            "allOf": [
                {"$ref": ENVELOPE_FILE},
                {
                    "type": "object",
                    "properties": {
                        "type": {"const": event_type.value},
                        "payload": {"$ref": payload_file(event_type)},
                    },
                },
            ]
        },
        "bindings": _kafka_message_binding(),
    }


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
    types = list(EventType)
    names = [*(t.value for t in types), "untranslatable_event", "watermark"]
    event_message_refs = {name: {"$ref": f"#/components/messages/{name}"} for name in names}
    channel_message_refs = [{"$ref": f"#/channels/events/messages/{name}"} for name in names]
    dlq_ref = [{"$ref": "#/channels/deadLetters/messages/dead_letter"}]
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Deal Registry events",
            "version": f"{SCHEMA_VERSION}.0.0",
            "description": "Events recorded by the Deal Registry, published by its relay "
            "after they are stored. Delivery is at least once: consumers deduplicate on "
            "`position` (unique in the log). Within v1 only optional fields are added; "
            "anything else is a new topic and schema version. Generated by "
            f"`{REGENERATE}` from the pydantic models in `contracts/`.",
        },
        "defaultContentType": "application/json",
        "channels": {
            "events": {
                "address": TOPIC,
                "title": "Recorded events, v1",
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
                **{t.value: _event_message(t) for t in types},
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
    files[ENVELOPE_FILE] = render_json(envelope_schema())
    files[SUBMISSION_FILE] = render_json(submission_schema())
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
