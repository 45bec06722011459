"""The registry's audit work for a caller in the same process (the embedded dashboard's
console): the same reports as `GET /v1/audit/verify` and `GET /v1/audit/checkpoints`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.registry.adapters.event_store import DealRegistryStore
from services.registry.audit.checkpoints import CheckpointStore
from services.registry.audit.verification import verify_log


@dataclass(frozen=True)
class RegistryAuditDesk:
    store: DealRegistryStore
    checkpoints: CheckpointStore

    def verify(self) -> dict[str, Any]:
        return verify_log(self.store, self.checkpoints).as_dict()

    def checkpoint_list(self, limit: int) -> list[dict[str, Any]]:
        recorded, _ = self.checkpoints.page(limit, 0)
        return [checkpoint.as_dict() for checkpoint in recorded]
