"""A firm or government body that takes part in deals and meetings."""

from __future__ import annotations

from typing import Any

from services.registry.domain.identities import firm_id
from services.registry.domain.recorded import (
    GENESIS_HASH,
    Provenance,
    RecordedAggregate,
    RecordedEvent,
)
from services.registry.domain.values import (
    FirmKind,
    parse_enum,
    require_country,
    require_firm_code,
    require_text,
)


class Firm(RecordedAggregate):
    TOPIC = "dealregistry:Firm"

    class Created(RecordedAggregate.Created):
        """Unused; eventsourcing requires every inherited event class to carry a topic."""

        TOPIC = "dealregistry:Firm.Created"

    class Registered(RecordedAggregate.Created, RecordedEvent):
        TOPIC = "dealregistry:FirmRegistered.v1"
        code: str
        name: str
        country: str
        kind: str

        def evolve(self, aggregate: Any) -> None:
            aggregate.code = self.code
            aggregate.name = self.name
            aggregate.country = self.country
            aggregate.kind = self.kind

    def __init__(self, **_: Any) -> None:
        self.code = ""
        self.name = ""
        self.country = ""
        self.kind = ""

    @classmethod
    def register(
        cls, code: str, name: str, country: str, kind: str, provenance: Provenance
    ) -> Firm:
        code = require_firm_code(code, "code")
        return cls._create(
            cls.Registered,
            id=firm_id(code),
            code=code,
            name=require_text(name, "name"),
            country=require_country(country, "country"),
            kind=parse_enum(FirmKind, kind, "kind").value,
            previous_hash=GENESIS_HASH,
            **provenance.as_event_fields(),
        )
