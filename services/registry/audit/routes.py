"""The audit API: signed tree heads, RFC 9162 proofs, verification and checkpoints.

Installing it also runs the tree-head follower for the app's lifetime, so every write the
service acknowledges is covered by a signed head within a second (see tree_head_follower).
Verification and checkpoints are for auditor or admin keys; the tree head and proofs for
any key (a partner checks its own receipts); the public key for anyone.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from services.registry.adapters.event_store import DealRegistryStore
from services.registry.audit.checkpoints import (
    CheckpointStore,
    audit_database_url,
    take_checkpoint,
)
from services.registry.audit.proofs import ProofRefused, consistency_proof, inclusion_proof
from services.registry.audit.responses import (
    CheckpointAnswer,
    CheckpointsPage,
    ConsistencyProofAnswer,
    InclusionProofAnswer,
    PublicKeyAnswer,
    TreeHeadAnswer,
    VerificationAnswer,
)
from services.registry.audit.tree_head_follower import TreeHeadFollower
from services.registry.audit.tree_head_key import TreeHeadSigner, tree_head_signer
from services.registry.audit.verification import verify_log
from services.shared.database import create_sql_engine
from services.shared.errors import ApiError, error_responses
from services.shared.key_auth import Auditor, Reader
from services.shared.openapi_contract import Offset
from services.shared.settings import Settings

log = logging.getLogger("dealreg.audit")

# 403: the key's role is neither auditor nor admin.
AUDIT_ERRORS = error_responses(401, 403, 503)
AUDIT_LIST_ERRORS = error_responses(401, 403, 422, 503)
PROOF_ERRORS = error_responses(401, 422, 503)


def _audit_of(request: Request) -> tuple[DealRegistryStore, CheckpointStore]:
    return request.app.state.audit_event_store, request.app.state.audit_checkpoints


def _signer_of(request: Request) -> TreeHeadSigner:
    return request.app.state.tree_head_signer


def _refused(refusal: ProofRefused) -> ApiError:
    return ApiError(422, "invalid_request", refusal.message, field=refusal.field,
                    rule=refusal.rule)


def install_audit_api(app: FastAPI, store: DealRegistryStore) -> None:
    """Mount the audit routes beside the write API, on the same event store."""
    settings: Settings = app.state.settings
    engine: Engine = create_sql_engine(audit_database_url(settings))
    checkpoints = CheckpointStore(engine)
    checkpoints.create_schema()
    signer = tree_head_signer(settings)
    follower = TreeHeadFollower(store, checkpoints, signer,
                                poll_seconds=settings.tree_head_poll_seconds,
                                keep_seconds=settings.checkpoint_interval_seconds)
    app.state.audit_event_store = store
    app.state.audit_checkpoints = checkpoints
    app.state.tree_head_signer = signer
    app.state.tree_head_follower = follower
    app.state.readiness["tree_head"] = follower.check_covered
    app.state.readiness_report["tree_head"] = follower.status

    @asynccontextmanager
    async def following(_: Any) -> AsyncIterator[None]:
        # Covers what was written while no follower ran before the first request is taken.
        await run_in_threadpool(follower.start)
        try:
            yield
        finally:
            await run_in_threadpool(follower.stop)
            engine.dispose()

    router = APIRouter(prefix="/v1/audit", tags=["audit"], lifespan=following)

    @router.get("/public-key", response_model=PublicKeyAnswer,
                responses=error_responses(503), summary="The key that signs tree heads")
    async def public_key(request: Request) -> dict[str, Any]:
        """The Ed25519 public key tree heads are signed with, and its id (SHA-256 of the raw
        key, as in Certificate Transparency). Keep it beside the heads you keep: it is what
        makes a kept head evidence."""
        key = _signer_of(request)
        return {"algorithm": "ed25519", "key_id": key.key_id,
                "public_key_pem": key.public_key_pem()}

    @router.get("/tree-head", response_model=TreeHeadAnswer,
                responses=error_responses(401, 503),
                summary="The latest signed tree head")
    async def tree_head(request: Request, _reader: Reader) -> dict[str, Any]:
        """The newest signed tree head: tree size, root hash (RFC 9162 Merkle tree over every
        event's leaf), timestamp and Ed25519 signature over the RFC 6962 TreeHeadSignature
        structure. It covers every acknowledged write within a second. Keep the JSON: with
        `dealreg audit verify-consistency HEAD.json` it shows later that the log only grew."""
        event_store, checkpoint_store = _audit_of(request)
        latest = await run_in_threadpool(checkpoint_store.latest)
        signed = None if latest is None else latest.signed_head()
        if signed is None:
            taken = await run_in_threadpool(take_checkpoint, event_store, checkpoint_store,
                                            _signer_of(request))
            signed = taken.signed_head()
        assert signed is not None  # every head recorded now is signed
        return signed.as_dict()

    @router.get("/proof/inclusion", response_model=InclusionProofAnswer,
                responses=PROOF_ERRORS, summary="Prove an event is in a signed tree")
    async def inclusion(
        request: Request, _reader: Reader,
        position: Annotated[int, Query(ge=1, le=2**62, description="The event's log position")],
        tree_size: Annotated[int | None, Query(
            ge=1, le=2**62, description="The tree to prove it in; default the newest signed "
            "head's. At least the receipt's tree_size")] = None,
    ) -> dict[str, Any]:
        """The RFC 9162 inclusion proof (audit path, bottom-up) of the event at `position` in
        the tree of `tree_size` leaves. 422 names the parameter when the tree does not
        include the event or is beyond the newest signed head."""
        _, checkpoint_store = _audit_of(request)
        try:
            return await run_in_threadpool(inclusion_proof, checkpoint_store, position,
                                           tree_size)
        except ProofRefused as refusal:
            raise _refused(refusal) from None

    @router.get("/proof/consistency", response_model=ConsistencyProofAnswer,
                responses=PROOF_ERRORS, summary="Prove a signed tree extends an older one")
    async def consistency(
        request: Request, _reader: Reader,
        first: Annotated[int, Query(ge=1, le=2**62, description="The older tree's size")],
        second: Annotated[int, Query(ge=1, le=2**62, description="The newer tree's size")],
    ) -> dict[str, Any]:
        """The RFC 9162 consistency proof that the tree of `second` leaves extends the tree
        of `first` leaves: the log only grew between the two heads."""
        _, checkpoint_store = _audit_of(request)
        try:
            return await run_in_threadpool(consistency_proof, checkpoint_store, first, second)
        except ProofRefused as refusal:
            raise _refused(refusal) from None

    @router.get("/verify", response_model=VerificationAnswer, responses=AUDIT_ERRORS,
                summary="Verify the event log")
    async def verify(request: Request, _auditor: Auditor) -> dict[str, Any]:
        """Recompute every aggregate's hash chain, every stored leaf, and every signed head's
        root and signature over the stored events; `ok` is false and `first_failure` names
        the position, aggregate and version of the first event that fails. Reads the whole
        log: slow on a large one."""
        event_store, checkpoint_store = _audit_of(request)
        report = await run_in_threadpool(verify_log, event_store, checkpoint_store,
                                         public_key=_signer_of(request).public_key)
        return report.as_dict()

    @router.get("/checkpoints", response_model=CheckpointsPage, responses=AUDIT_LIST_ERRORS,
                summary="List checkpoints")
    async def list_checkpoints(
        request: Request, _auditor: Auditor,
        limit: Annotated[int, Query(ge=1, le=500, description="Checkpoints per page")] = 100,
        offset: Offset = 0,
    ) -> dict[str, Any]:
        """Recorded checkpoints (kept tree heads), oldest first: last position, event count,
        Merkle root, time, reason, whether signed; `total` counts them all."""
        _, checkpoint_store = _audit_of(request)
        recorded, total = await run_in_threadpool(checkpoint_store.page, limit, offset)
        return {"checkpoints": [c.as_dict() for c in recorded], "limit": limit,
                "offset": offset, "total": total}

    @router.post("/checkpoints", status_code=201, response_model=CheckpointAnswer,
                 responses=AUDIT_ERRORS, summary="Take a checkpoint now")
    async def create_checkpoint(request: Request, _auditor: Auditor) -> dict[str, Any]:
        """Record a signed tree head over the log from position 1 to its current head, as a
        checkpoint of its own."""
        event_store, checkpoint_store = _audit_of(request)
        taken = await run_in_threadpool(take_checkpoint, event_store, checkpoint_store,
                                        _signer_of(request))
        return taken.as_dict()

    app.include_router(router)
