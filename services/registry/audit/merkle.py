"""Merkle trees over the event log, shaped as in RFC 9162 (Certificate Transparency v2).

Pure functions on bytes: a leaf is SHA-256(0x00 || data), a node SHA-256(0x01 || left ||
right), and a tree of n leaves splits at the largest power of two below n. The distinct
prefixes keep a leaf from passing for a node. Nothing here knows about events or storage.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Protocol

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()
HASH_SIZE = 32


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

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add a leaf hash. Returns the perfect subtrees this completed, smallest first, as
        (level, index, hash): the node over leaves [index * 2**level, (index + 1) * 2**level),
        level 1 being a pair of leaves. A stored tree keeps these to answer proofs."""
        self.subtree_roots.append(leaf)
        self.size += 1
        # Each trailing one bit of the old size is a pair of equal subtrees to merge.
        merges = (self.size & -self.size).bit_length() - 1
        completed: list[tuple[int, int, bytes]] = []
        for level in range(1, merges + 1):
            right = self.subtree_roots.pop()
            self.subtree_roots[-1] = node_hash(self.subtree_roots[-1], right)
            completed.append((level, (self.size >> level) - 1, self.subtree_roots[-1]))
        return completed

    def root(self) -> bytes:
        if not self.subtree_roots:
            return EMPTY_ROOT
        root = self.subtree_roots[-1]
        for left in reversed(self.subtree_roots[:-1]):
            root = node_hash(left, root)
        return root


class SubtreeRoots(Protocol):
    """Whatever can give the root of leaves[low:high] (RFC 9162 MTH), in memory or stored.

    Proof generation asks only for the ranges RFC 9162's recursion produces, so a perfect
    subtree it asks for always starts at a multiple of its size: a stored node."""

    def subtree_root(self, low: int, high: int) -> bytes: ...


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
        """See range_proof_in."""
        if len(self.leaves) < size:
            raise ValueError("fewer leaves than the tree size")
        return range_proof_in(self, size, start, end)


def range_proof_in(tree: SubtreeRoots, size: int, start: int, end: int) -> list[bytes]:
    """The subtree roots a verifier needs, besides leaves[start:end], to rebuild the root of
    the tree over leaves[:size]: those of the subtrees entirely outside the range, in
    depth-first order (root_from_range rebuilds it). Asks `tree` only for subtrees RFC 9162's
    recursion produces."""
    _check_range(size, start, end)
    proof: list[bytes] = []

    def walk(low: int, high: int) -> None:
        if high <= start or low >= end:
            proof.append(tree.subtree_root(low, high))
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


def inclusion_path(tree: SubtreeRoots, index: int, size: int) -> list[bytes]:
    """The RFC 9162 (2.1.3.1) audit path PATH(index, D[size]), bottom-up: the Certificate
    Transparency inclusion proof of leaf `index` in the tree of its first `size` leaves."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size} leaves")
    top_down: list[bytes] = []
    low, high = 0, size
    while high - low > 1:
        middle = low + split_point(high - low)
        if index < middle:
            top_down.append(tree.subtree_root(middle, high))
            high = middle
        else:
            top_down.append(tree.subtree_root(low, middle))
            low = middle
    return top_down[::-1]


def consistency_path(tree: SubtreeRoots, first: int, second: int) -> list[bytes]:
    """The RFC 9162 (2.1.4.1) consistency proof PROOF(first, D[second]): that the tree of the
    first `first` leaves is a prefix of the tree of `second`. Empty when the sizes are equal."""
    if not 0 < first <= second:
        raise ValueError(f"no consistency proof from a tree of {first} to one of {second} leaves")
    top_down: list[bytes] = []
    low, high = 0, second
    # SUBPROOF's flag b: the old tree's root is this whole subtree, so the verifier has it.
    whole_old_tree = True
    while first != high:
        middle = low + split_point(high - low)
        if first <= middle:
            top_down.append(tree.subtree_root(middle, high))
            high = middle
        else:
            top_down.append(tree.subtree_root(low, middle))
            low = middle
            whole_old_tree = False
    if not whole_old_tree:
        top_down.append(tree.subtree_root(low, high))
    return top_down[::-1]


def verify_inclusion(
    index: int, size: int, leaf: bytes, path: Sequence[bytes], root: bytes
) -> bool:
    """Whether `path` proves the leaf hash `leaf` is leaf `index` of the tree of `size` leaves
    with this root (RFC 9162 2.1.3.2). False, never an exception, on malformed input."""
    if not (_is_size(index) and _is_size(size) and index < size):
        return False
    if not (_is_hash(leaf) and _is_hash(root) and _are_hashes(path)):
        return False
    fn, sn = index, size - 1
    r = leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            # On the right edge a node may have no sibling: skip the levels it stays alone.
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, path: Sequence[bytes]
) -> bool:
    """Whether `path` proves the tree of `first` leaves with `first_root` is a prefix of the
    tree of `second` leaves with `second_root` (RFC 9162 2.1.4.2). False, never an exception,
    on malformed input."""
    if not (_is_size(first) and _is_size(second) and 0 < first <= second):
        return False
    if not (_is_hash(first_root) and _is_hash(second_root) and _are_hashes(path)):
        return False
    if first == second:
        return not path and first_root == second_root
    if not path:
        return False
    hashes = list(path)
    if first & (first - 1) == 0:
        # The old tree is a perfect subtree of the new one, so the proof leaves its root out.
        hashes.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = hashes[0]
    for c in hashes[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == first_root and sr == second_root


def _is_size(value: object) -> bool:
    # bool is an int subclass; True is no tree size.
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_hash(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == HASH_SIZE


def _are_hashes(values: object) -> bool:
    # A str or bytes is a sequence too, of characters; no proof is one.
    return (isinstance(values, Sequence) and not isinstance(values, str | bytes)
            and all(_is_hash(value) for value in values))
