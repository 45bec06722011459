"""RFC 9162 proofs served from the stored tree, and the tree size that covers an event.

The proofs are the Certificate Transparency ones: an inclusion proof (audit path) of one
leaf in a tree of N leaves, and a consistency proof that the tree of N leaves extends the
tree of M. Both are computed from the stored leaves and nodes (`StoredTree`), a few dozen
rows per proof, and only for sizes the newest signed head reaches.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from services.registry.adapters.event_store import DealRegistryStore
from services.registry.audit.checkpoints import CheckpointStore
from services.registry.audit.merkle import consistency_path, inclusion_path


@dataclass
class ProofRefused(ValueError):
    """A proof that cannot be given as asked: which parameter, which rule, and why."""

    field: str
    rule: str
    message: str

    def __str__(self) -> str:
        return self.message


def _signed_size(checkpoints: CheckpointStore) -> int:
    latest = checkpoints.latest()
    return 0 if latest is None else latest.event_count


def _check_size(checkpoints: CheckpointStore, field: str, size: int) -> None:
    signed = _signed_size(checkpoints)
    if size > signed:
        raise ProofRefused(field, "at_most_signed_tree_size",
                           f"{field}={size} is beyond the newest signed tree head "
                           f"({signed} leaves): ask again within a second, or for a smaller "
                           "tree")


def inclusion_proof(checkpoints: CheckpointStore, position: int,
                    tree_size: int | None) -> dict[str, Any]:
    leaf = checkpoints.leaf_at(position)
    if leaf is None:
        raise ProofRefused("position", "covered_position",
                           f"no signed tree head covers position {position} yet, or the log "
                           "holds no event there")
    size = _signed_size(checkpoints) if tree_size is None else tree_size
    if size <= leaf.leaf_index:
        raise ProofRefused("tree_size", "includes_position",
                           f"a tree of {size} leaves does not include position {position}, "
                           f"leaf {leaf.leaf_index}: ask with tree_size >= "
                           f"{leaf.leaf_index + 1}")
    _check_size(checkpoints, "tree_size", size)
    tree = checkpoints.tree()
    path = inclusion_path(tree, leaf.leaf_index, size)
    return {"position": position, "leaf_index": leaf.leaf_index, "tree_size": size,
            "leaf_hash": leaf.leaf, "root_hash": tree.subtree_root(0, size).hex(),
            "audit_path": [h.hex() for h in path]}


def consistency_proof(checkpoints: CheckpointStore, first: int, second: int) -> dict[str, Any]:
    if first > second:
        raise ProofRefused("first", "at_most_second",
                           f"first={first} is larger than second={second}")
    _check_size(checkpoints, "second", second)
    tree = checkpoints.tree()
    path = consistency_path(tree, first, second)
    return {"first": first, "second": second,
            "first_root_hash": tree.subtree_root(0, first).hex(),
            "second_root_hash": tree.subtree_root(0, second).hex(),
            "consistency_path": [h.hex() for h in path]}


def tree_size_covering(store: DealRegistryStore, checkpoints: CheckpointStore,
                       position: int, known_head: tuple[int, int] | None = None) -> int:
    """The size of the smallest tree that includes the event at `position`: its leaf index
    plus one. Exact once the event is committed, since every lower position is then decided
    (the store commits positions in order). `known_head`, a recorded head's (tree size,
    last position) however old, spares reading the newest one."""
    if known_head is not None and known_head[1] < position:
        return known_head[0] + store.count_events(known_head[1], position)
    latest = checkpoints.latest()
    if latest is not None and latest.last_position >= position:
        leaf = checkpoints.leaf_at(position)
        if leaf is None:
            raise LookupError(f"the tree covers position {position} but holds no leaf for it")
        return leaf.leaf_index + 1
    if latest is None:
        return store.count_events(0, position)
    # Read after the head: the follower may extend the tree meanwhile, never shrink it.
    return latest.event_count + store.count_events(latest.last_position, position)


def tree_sizes_covering(store: DealRegistryStore, checkpoints: CheckpointStore,
                        positions: Sequence[int], known_head: tuple[int, int] | None = None
                        ) -> list[int]:
    """`tree_size_covering` of many positions (a pass's or a batch's receipts) in two reads:
    the leaves of those the known head covers (the follower may have got there first, and a
    replay's event is old), and the log's positions after it for the others."""
    if not positions:
        return []
    if known_head is None:
        return [tree_size_covering(store, checkpoints, p) for p in positions]
    size, last = known_head
    covered = [p for p in positions if p <= last]
    leaf_indexes = checkpoints.leaf_indexes(covered) if covered else {}
    beyond = [p for p in positions if p > last]
    held = store.positions_between(last, max(beyond)) if beyond else []
    sizes = []
    for position in positions:
        if position > last:
            sizes.append(size + bisect_right(held, position))
            continue
        index = leaf_indexes.get(position)
        if index is None:
            raise LookupError(f"the tree covers position {position} but holds no leaf for it")
        sizes.append(index + 1)
    return sizes
