"""The audit API's answers as models: what the OpenAPI document publishes and every answer is
validated against. The JSON is built by `VerificationReport.as_dict` and
`Checkpoint.as_dict`; these models describe it without changing it."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from services.shared.openapi_contract import Count, LogPosition

Digest = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256, hex")]


class VerificationFailure(BaseModel):
    position: LogPosition
    aggregate_id: str
    version: int = Field(description="The aggregate version of the failing event")
    kind: Literal["undecodable", "hash_chain_broken", "version_gap", "checkpoint_mismatch"]
    detail: str


class VerificationAnswer(BaseModel):
    ok: bool = Field(description="Every hash chain and checkpoint root recomputes")
    head_position: LogPosition
    events_checked: Count
    aggregates: Count
    checkpoints_checked: Count
    first_failure: VerificationFailure | None
    failures: list[VerificationFailure] = Field(description="The first failures, in log order")
    more_failures: bool = Field(description="There were more failures than listed")


class CheckpointAnswer(BaseModel):
    id: int = Field(ge=1)
    last_position: LogPosition = Field(description="The last log position covered")
    event_count: Count
    root: Digest = Field(description="Merkle root over the events from position 1")
    created_at: str = Field(json_schema_extra={"format": "date-time"})
    reason: Literal["interval", "on_demand"]


class CheckpointsPage(BaseModel):
    checkpoints: list[CheckpointAnswer] = Field(description="Oldest first")
    limit: int
    offset: int
    total: Count
