"""Merkle trees over the event log, shaped as in RFC 9162 (Certificate Transparency v2).

Pure functions on bytes: a leaf is SHA-256(0x00 || data), a node SHA-256(0x01 || left ||
right), and a tree of n leaves splits at the largest power of two below n. The distinct
prefixes keep a leaf from passing for a node. Nothing here knows about events or storage.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def split_point(size: int) -> int:
    """The largest power of two strictly below `size` (size >= 2)."""
    return 1 << ((size - 1).bit_length() - 1)


def root_of(leaves: Sequence[bytes]) -> bytes:
    """The root of the tree over these leaf hashes (RFC 9162 MTH)."""
    frontier = Frontier()
    for leaf in leaves:
        frontier.append(leaf)
    return frontier.root()


class Frontier:
    """The roots of the perfect subtrees that make up a growing tree, largest first.

    This is all a tree needs to keep to take more leaves and give its root, so a new
    checkpoint hashes only the events recorded since the last one."""

    def __init__(self, size: int = 0, subtree_roots: Sequence[bytes] = ()) -> None:
        if len(subtree_roots) != size.bit_count():
            raise ValueError("a frontier has one subtree root per set bit of its size")
        self.size = size
        self.subtree_roots = list(subtree_roots)

    def append(self, leaf: bytes) -> None:
        self.subtree_roots.append(leaf)
        self.size += 1
        # Each trailing one bit of the old size is a pair of equal subtrees to merge.
        merges = (self.size & -self.size).bit_length() - 1
        for _ in range(merges):
            right = self.subtree_roots.pop()
            self.subtree_roots[-1] = node_hash(self.subtree_roots[-1], right)

    def root(self) -> bytes:
        if not self.subtree_roots:
            return EMPTY_ROOT
        root = self.subtree_roots[-1]
        for left in reversed(self.subtree_roots[:-1]):
            root = node_hash(left, root)
        return root


class MerkleTree:
    """A fixed list of leaf hashes whose subtree roots are remembered once computed, so many
    proofs over one tree cost about one pass over it. Small subtrees are recomputed instead
    of remembered, which keeps the memory well below one entry per node."""

    REMEMBER_FROM = 32  # leaves

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self.leaves = leaves
        self._roots: dict[tuple[int, int], bytes] = {}

    def subtree_root(self, low: int, high: int) -> bytes:
        if high - low == 1:
            return self.leaves[low]
        if high - low < self.REMEMBER_FROM:
            return root_of(self.leaves[low:high])
        remembered = self._roots.get((low, high))
        if remembered is None:
            middle = low + split_point(high - low)
            remembered = node_hash(self.subtree_root(low, middle),
                                   self.subtree_root(middle, high))
            self._roots[(low, high)] = remembered
        return remembered

    def range_proof(self, size: int, start: int, end: int) -> list[bytes]:
        """The subtree roots a verifier needs, besides leaves[start:end], to rebuild the root
        of the tree over leaves[:size]: those of the subtrees entirely outside the range, in
        depth-first order. For a single leaf this is its inclusion proof: the RFC 9162 audit
        path's hashes, in depth-first order rather than bottom-up."""
        _check_range(size, start, end)
        if len(self.leaves) < size:
            raise ValueError("fewer leaves than the tree size")
        proof: list[bytes] = []

        def walk(low: int, high: int) -> None:
            if high <= start or low >= end:
                proof.append(self.subtree_root(low, high))
            elif high - low > 1:
                middle = low + split_point(high - low)
                walk(low, middle)
                walk(middle, high)

        walk(0, size)
        return proof


def range_proof(leaves: Sequence[bytes], size: int, start: int, end: int) -> list[bytes]:
    """See MerkleTree.range_proof."""
    return MerkleTree(leaves).range_proof(size, start, end)


def root_from_range(
    size: int, start: int, range_leaves: Sequence[bytes], proof: Sequence[bytes]
) -> bytes:
    """The root of a tree of `size` leaves, rebuilt from a contiguous run of its leaves
    starting at index `start` and the range proof for them. Raises ValueError when the proof
    has the wrong number of hashes."""
    end = start + len(range_leaves)
    _check_range(size, start, end)
    remaining = iter(proof)
    missing = object()

    def take() -> bytes:
        item = next(remaining, missing)
        if item is missing:
            raise ValueError("the proof is too short")
        return item  # type: ignore[return-value]

    def build(low: int, high: int) -> bytes:
        if high <= start or low >= end:
            return take()
        if high - low == 1:
            return range_leaves[low - start]
        middle = low + split_point(high - low)
        return node_hash(build(low, middle), build(middle, high))

    root = build(0, size)
    if next(remaining, missing) is not missing:
        raise ValueError("the proof is too long")
    return root


def inclusion_proof(leaves: Sequence[bytes], size: int, index: int) -> list[bytes]:
    return range_proof(leaves, size, index, index + 1)


def root_from_inclusion(size: int, index: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    return root_from_range(size, index, [leaf], proof)


def _check_range(size: int, start: int, end: int) -> None:
    if not 0 <= start < end <= size:
        raise ValueError(f"the range [{start}, {end}) is not inside a tree of {size} leaves")

