"""`dealreg audit verify-consistency`: from a signed tree head an auditor kept, check that
the registry's log today extends it — the immudb client's "state I last trusted", the
Certificate Transparency monitor's consistency check.

Two ways, for two kinds of auditor:
- against the store (`against_log`, run where the database is reachable): every leaf is
  recomputed from the stored events; the first `tree_size` of them must give the kept root,
  and the whole log the newest signed head's root. A forged, edited or truncated log fails,
  whatever the tree tables say.
- against the service (`against_service`, over HTTP with any key): the newest signed head
  must be signed by the kept key and the RFC 9162 consistency proof must lead from the kept
  root to its root. Nothing here trusts the service: a proof cannot be forged without
  finding a SHA-256 collision, a head not without the private key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from services.registry.adapters.event_store import DealRegistryStore
from services.registry.audit.checkpoints import CheckpointStore
from services.registry.audit.logged_events import leaf_format_at, read_logged_events
from services.registry.audit.merkle import Frontier, verify_consistency
from services.registry.audit.signing import (
    SignedTreeHead,
    key_id,
    load_public_key,
    verify_tree_head,
)

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ConsistencyCheck:
    ok: bool
    message: str
    kept_size: int
    current_size: int | None = None


def _kept_is_signed(kept: SignedTreeHead, public_key: Ed25519PublicKey) -> ConsistencyCheck | None:
    if kept.key_id != key_id(public_key):
        return ConsistencyCheck(False, f"the kept head names key {kept.key_id}, not the key "
                                f"given ({key_id(public_key)})", kept.tree_size)
    if not verify_tree_head(kept, public_key):
        return ConsistencyCheck(False, "the kept head's signature does not verify: it was "
                                "altered after it was signed", kept.tree_size)
    return None


def against_log(
    store: DealRegistryStore, checkpoints: CheckpointStore, kept: SignedTreeHead,
    public_key: Ed25519PublicKey, progress: Progress | None = None,
    progress_every: int = 50_000,
) -> ConsistencyCheck:
    refused = _kept_is_signed(kept, public_key)
    if refused is not None:
        return refused
    legacy_until = checkpoints.legacy_leaves_until()
    tree = Frontier()
    head = store.head_position()
    for event in read_logged_events(store,
                                    decode=lambda position: position <= legacy_until):
        if tree.size == kept.tree_size:
            if tree.root().hex() != kept.root_hash:
                return _forked(kept, tree)
        tree.append(event.leaf(leaf_format_at(event.position, legacy_until)))
        if progress is not None and tree.size % progress_every == 0:
            progress(tree.size, head)
    if tree.size < kept.tree_size:
        return ConsistencyCheck(False, f"the log holds {tree.size} events; the kept head "
                                f"covered {kept.tree_size}: events were removed",
                                kept.tree_size, tree.size)
    if tree.size == kept.tree_size and tree.root().hex() != kept.root_hash:
        return _forked(kept, tree)
    latest = checkpoints.latest()
    signed = None if latest is None else latest.signed_head()
    if signed is not None and signed.tree_size == tree.size:
        if not verify_tree_head(signed, public_key):
            return ConsistencyCheck(False, "the newest signed head's signature does not "
                                    "verify", kept.tree_size, tree.size)
        if signed.root_hash != tree.root().hex():
            return ConsistencyCheck(False, "the newest signed head's root differs from the "
                                    "log's: run dealreg audit verify", kept.tree_size,
                                    tree.size)
    return ConsistencyCheck(True, f"the log's {tree.size} events extend the kept head of "
                            f"{kept.tree_size}", kept.tree_size, tree.size)


def _forked(kept: SignedTreeHead, tree: Frontier) -> ConsistencyCheck:
    return ConsistencyCheck(False, f"the log's first {kept.tree_size} events give root "
                            f"{tree.root().hex()}, not the kept {kept.root_hash}: history "
                            "was rewritten (run dealreg audit verify to find where)",
                            kept.tree_size)


def against_service(
    base_url: str, api_key: str, kept: SignedTreeHead,
    public_key: Ed25519PublicKey | None = None, client: httpx.Client | None = None,
) -> ConsistencyCheck:
    """With no `public_key`, the service's is used, provided its id is the kept head's."""
    own = client or httpx.Client(base_url=base_url, timeout=30.0)
    try:
        return _against_service(own, api_key, kept, public_key)
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        return ConsistencyCheck(False, f"the service's answer cannot be checked: "
                                f"{type(exc).__name__}: {exc}", kept.tree_size)
    finally:
        if client is None:
            own.close()


def _get(client: httpx.Client, path: str, api_key: str, **params: Any) -> Any:
    answer = client.get(path, params=params, headers={"Authorization": f"Bearer {api_key}"})
    if answer.status_code != 200:
        raise ValueError(f"GET {path} answered {answer.status_code}: {answer.text[:300]}")
    return answer.json()


def _against_service(client: httpx.Client, api_key: str, kept: SignedTreeHead,
                     public_key: Ed25519PublicKey | None) -> ConsistencyCheck:
    if public_key is None:
        public_key = load_public_key(_get(client, "/v1/audit/public-key", api_key)
                                     ["public_key_pem"])
    refused = _kept_is_signed(kept, public_key)
    if refused is not None:
        return refused
    current = SignedTreeHead.from_dict(_get(client, "/v1/audit/tree-head", api_key))
    if not verify_tree_head(current, public_key):
        return ConsistencyCheck(False, "the service's newest head is not signed by the kept "
                                "key", kept.tree_size, current.tree_size)
    if current.tree_size < kept.tree_size:
        return ConsistencyCheck(False, f"the service's newest head covers {current.tree_size} "
                                f"events; the kept head covered {kept.tree_size}: the log "
                                "shrank", kept.tree_size, current.tree_size)
    path: list[bytes] = []
    if 0 < kept.tree_size < current.tree_size:
        proof = _get(client, "/v1/audit/proof/consistency", api_key, first=kept.tree_size,
                     second=current.tree_size)
        path = [bytes.fromhex(h) for h in proof["consistency_path"]]
    consistent = (
        current.root_hash == kept.root_hash if current.tree_size == kept.tree_size
        else kept.tree_size == 0 or verify_consistency(
            kept.tree_size, current.tree_size, bytes.fromhex(kept.root_hash),
            bytes.fromhex(current.root_hash), path))
    if not consistent:
        return ConsistencyCheck(False, "the consistency proof does not lead from the kept "
                                "root to the newest signed root: history was rewritten",
                                kept.tree_size, current.tree_size)
    return ConsistencyCheck(True, f"the signed head of {current.tree_size} events extends the "
                            f"kept head of {kept.tree_size} (RFC 9162 consistency proof)",
                            kept.tree_size, current.tree_size)
