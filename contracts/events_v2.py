"""Version 2 of the recorded events as they leave the registry: the pledge's terms.

`pledge_made` and `pledge_revised` gain the pledge's `instrument` (equity, debt, grant or
in-kind technology; null: not stated) and its `tranches` (a schedule of due dates and
amounts in the pledge's currency, possibly empty). Every other payload is as in v1.

The envelope's `schema_version` is the version of its payload's schema: the relay publishes
`pledge_made` and `pledge_revised` at 2 and every other type at 1 (the same payload in both
versions). Envelopes published before the upgrade stay on the topic at 1, so a consumer
reads `schema_version` first; `typed_payload` (or `latest_payload`) reads any of them in its
type's newest shape, a v1 pledge payload upcast with instrument null and no tranches, which
is what those pledges had.

As in v1, field names and meanings are a public contract: within v2, add optional fields,
never rename or repurpose one.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field

from contracts import events_v1
from contracts.events_v1 import EventType, Payload

SCHEMA_VERSION: Literal[2] = 2
SchemaVersion = Literal[1, 2]
SCHEMA_VERSIONS: tuple[SchemaVersion, ...] = (events_v1.SCHEMA_VERSION, SCHEMA_VERSION)
# The event types whose payload changed in v2; the others are published at version 1.
CHANGED_IN_V2 = frozenset({EventType.PLEDGE_MADE, EventType.PLEDGE_REVISED})


class Instrument(StrEnum):
    EQUITY = "equity"
    DEBT = "debt"
    GRANT = "grant"
    IN_KIND_TECHNOLOGY = "in_kind_technology"


class Tranche(Payload):
    """One payment of a pledge's schedule."""

    due_date: date = Field(description="When it is due (ISO 8601 date, 1900-01-01 to "
                           "2199-12-31)")
    amount: Decimal = Field(description="In the pledge's currency; > 0")


# Required in v2 payloads (the relay always states them), null or empty when not stated.
StatedInstrument = Annotated[Instrument | None, Field(
    description="How the pledge is paid; null: not stated (a pledge recorded before v2, or "
                "submitted in v1)")]
Schedule = Annotated[list[Tranche], Field(
    description="The pledge's schedule, due dates strictly ascending, amounts adding up to at "
                "most its high amount; empty: none stated")]


class PledgeMade(events_v1.PledgeMade):
    instrument: StatedInstrument
    tranches: Schedule


class PledgeRevised(events_v1.PledgeRevised):
    """The pledge's amount and terms after the revision: a revision submitted in v1 keeps
    the instrument and tranches the pledge had, and states them here."""

    instrument: StatedInstrument
    tranches: Schedule


PAYLOAD_MODELS: dict[EventType, type[Payload]] = {
    **events_v1.PAYLOAD_MODELS,
    EventType.PLEDGE_MADE: PledgeMade,
    EventType.PLEDGE_REVISED: PledgeRevised,
}


def schema_version_of(event_type: EventType) -> SchemaVersion:
    """The version an event of this type is published at: 2 if its payload changed in v2,
    else 1."""
    return SCHEMA_VERSION if event_type in CHANGED_IN_V2 else events_v1.SCHEMA_VERSION


def upcast_payload(event_type: EventType, schema_version: int, payload: Mapping[str, Any]
                   ) -> dict[str, Any]:
    """A payload of `schema_version` in its type's newest shape (as a dict): a v1 pledge
    payload gains `instrument` null and `tranches` empty. It only adds what the payload
    lacks, so a payload already in the newest shape comes back as it is."""
    if schema_version not in SCHEMA_VERSIONS:
        raise ValueError(f"unknown schema_version {schema_version} (known: "
                         f"{', '.join(map(str, SCHEMA_VERSIONS))})")
    upcast = dict(payload)
    if schema_version < SCHEMA_VERSION and event_type in CHANGED_IN_V2:
        upcast.setdefault("instrument", None)
        upcast.setdefault("tranches", [])
    return upcast


def latest_payload(event_type: EventType, schema_version: int, payload: Mapping[str, Any]
                   ) -> Payload:
    """The payload parsed by its type's newest model, upcast first if older; raises
    pydantic.ValidationError if invalid."""
    return PAYLOAD_MODELS[event_type].model_validate(
        upcast_payload(event_type, schema_version, payload))


class EventEnvelope(events_v1.EventEnvelope):
    """One recorded event with everything a consumer needs to apply and audit it, at schema
    version 1 or 2 (a v1 envelope is a v2 envelope: it is still on the topic)."""

    schema_version: SchemaVersion = Field(  # type: ignore[assignment] # v1 holds only 1
        default=events_v1.SCHEMA_VERSION,
        description="Version of the payload's schema: 2 for pledge_made and pledge_revised "
                    "published since v2, 1 for every other type and for events published "
                    "before it",
    )

    def typed_payload(self) -> Payload:
        """The payload in its type's newest model (a v1 pledge payload upcast: instrument
        null, no tranches); raises pydantic.ValidationError if invalid."""
        return latest_payload(self.type, self.schema_version, self.payload)
