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
    kind: Literal["undecodable", "hash_chain_broken", "version_gap", "checkpoint_mismatch",
                  "signature_invalid"]
    detail: str


class LeafFormatRange(BaseModel):
    from_: int = Field(alias="from", ge=1)
    to: int = Field(ge=1)
    format: int = Field(ge=1, le=2)
    meaning: str


class VerificationAnswer(BaseModel):
    ok: bool = Field(description="Every hash chain and checkpoint root recomputes")
    head_position: LogPosition
    events_checked: Count
    aggregates: Count
    checkpoints_checked: Count
    signed_heads: Count
    unsigned_heads: Count = Field(description="Checkpoints recorded before heads were signed")
    signatures_checked: bool
    covered_position: int = Field(ge=0, description="The last position a tree head covers")
    leaf_formats: list[LeafFormatRange] = Field(
        description="Which leaf format each range of positions uses")
    first_failure: VerificationFailure | None
    failures: list[VerificationFailure] = Field(description="The first failures, in log order")
    more_failures: bool = Field(description="There were more failures than listed")


class CheckpointAnswer(BaseModel):
    id: int = Field(ge=1)
    last_position: LogPosition = Field(description="The last log position covered")
    event_count: Count
    root: Digest = Field(description="Merkle root over the events from position 1")
    created_at: str = Field(json_schema_extra={"format": "date-time"})
    reason: Literal["continuous", "on_demand", "interval"] = Field(
        description="continuous: kept by the follower (extended in place for up to "
        "DEALREG_CHECKPOINT_INTERVAL_SECONDS); on_demand: taken by an auditor; interval: "
        "recorded before heads were continuous")
    signed: bool = Field(description="False for checkpoints recorded before heads were signed")
    leaf_format: int = Field(ge=1, le=2)


class CheckpointsPage(BaseModel):
    checkpoints: list[CheckpointAnswer] = Field(description="Oldest first")
    limit: int
    offset: int
    total: Count


class PublicKeyAnswer(BaseModel):
    algorithm: Literal["ed25519"]
    key_id: Digest = Field(description="SHA-256 of the raw 32-byte public key")
    public_key_pem: str = Field(description="SubjectPublicKeyInfo, PEM")


class TreeHeadAnswer(BaseModel):
    tree_size: Count = Field(description="Leaves in the tree: events from position 1")
    timestamp: int = Field(ge=0, description="When it was signed, milliseconds since 1970 UTC")
    root_hash: Digest = Field(description="RFC 9162 Merkle tree hash")
    last_position: int = Field(ge=0, description="Log position of the last leaf (not signed)")
    key_id: Digest
    signature: str = Field(description="Ed25519 over the RFC 6962 TreeHeadSignature "
                           "structure (version, type, timestamp, tree_size, root), base64")
    signature_algorithm: Literal["ed25519"]


class InclusionProofAnswer(BaseModel):
    position: LogPosition
    leaf_index: Count
    tree_size: Count
    leaf_hash: Digest
    root_hash: Digest = Field(description="The root the proof leads to")
    audit_path: list[Digest] = Field(description="RFC 9162 inclusion proof, bottom-up")


class ConsistencyProofAnswer(BaseModel):
    first: Count
    second: Count
    first_root_hash: Digest
    second_root_hash: Digest
    consistency_path: list[Digest] = Field(description="RFC 9162 consistency proof")
