"""The registry's audit work for a caller in the same process (the embedded dashboard's
console): the same reports as `GET /v1/audit/verify` and `GET /v1/audit/checkpoints`, the
export `dealreg audit export` writes, and the stored hashes of chosen events."""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from services.registry.adapters.event_store import DealRegistryStore
from services.registry.audit.checkpoints import CheckpointStore, take_checkpoint
from services.registry.audit.export import export_events
from services.registry.audit.logged_events import logged_event
from services.registry.audit.tree_head_key import TreeHeadSigner
from services.registry.audit.verification import verify_log


@dataclass(frozen=True)
class RegistryAuditDesk:
    store: DealRegistryStore
    checkpoints: CheckpointStore
    signer: TreeHeadSigner

    def verify(self) -> dict[str, Any]:
        return verify_log(self.store, self.checkpoints,
                          public_key=self.signer.public_key).as_dict()

    def checkpoint_list(self, limit: int) -> list[dict[str, Any]]:
        recorded, _ = self.checkpoints.page(limit, 0)
        return [checkpoint.as_dict() for checkpoint in recorded]

    def checkpoint_now(self) -> None:
        """Record a checkpoint at the log's head, as `POST /v1/audit/checkpoints` does."""
        take_checkpoint(self.store, self.checkpoints, self.signer)

    def latest_checkpointed_position(self) -> int | None:
        latest = self.checkpoints.latest()
        return None if latest is None else latest.last_position

    def export(self, first: int, last: int, proofs: bool) -> str:
        """The NDJSON export of positions first..last; raises ExportRefused (its message
        says why) where the range cannot be exported."""
        out = io.StringIO()
        export_events(self.store, self.checkpoints, first, last, out, proofs=proofs,
                      signer=self.signer)
        return out.getvalue()

    def stored_hashes(self, positions: Iterable[int]) -> dict[int, str | None]:
        """By position, the hash recomputed from the event stored there now (None where the
        log holds no event at that position)."""
        hashes: dict[int, str | None] = {}
        for position in positions:
            page = self.store.read_log(position - 1, 1)
            found = page[0] if page and page[0].id == position else None
            hashes[position] = None if found is None else logged_event(self.store, found).event_hash
        return hashes
