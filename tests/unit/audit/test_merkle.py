"""Merkle math against the RFC 6962/9162 reference vectors, and its properties."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.registry.audit.merkle import (
    EMPTY_ROOT,
    Frontier,
    inclusion_proof,
    leaf_hash,
    node_hash,
    range_proof,
    root_from_inclusion,
    root_from_range,
    root_of,
)
from tests.unit.audit.test_rfc9162_proofs import CT_INCLUSION, CT_INPUTS
from tests.unit.audit.test_rfc9162_proofs import CT_ROOTS as CT_ROOT_HASHES

# The Certificate Transparency test vectors, kept once in test_rfc9162_proofs (their sources
# are named there).
CT_LEAVES = CT_INPUTS
CT_ROOTS = [root.hex() for root in CT_ROOT_HASHES]
CT_PATHS = [vector for vector in CT_INCLUSION if vector[1] in (1, 8)]
LEAVES = [leaf_hash(data) for data in CT_LEAVES]


def test_empty_tree_root_is_sha256_of_nothing() -> None:
    assert root_of([]) == EMPTY_ROOT == hashlib.sha256(b"").digest()


@pytest.mark.parametrize("size", range(1, 9))
def test_roots_match_the_reference_vectors(size: int) -> None:
    assert root_of(LEAVES[:size]).hex() == CT_ROOTS[size - 1]


@pytest.mark.parametrize(("index", "size", "path"), CT_PATHS)
def test_inclusion_proofs_match_the_reference_audit_paths(
    index: int, size: int, path: list[str]
) -> None:
    proof = inclusion_proof(LEAVES, size, index)
    assert sorted(h.hex() for h in proof) == sorted(path)  # the same hashes, depth-first
    assert root_from_inclusion(size, index, LEAVES[index], proof).hex() == CT_ROOTS[size - 1]


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    a, b = LEAVES[0], LEAVES[1]
    assert node_hash(a, b) != hashlib.sha256(a + b).digest()
    assert leaf_hash(a + b) != node_hash(a, b)


leaf_lists = st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=70)


@given(leaf_lists)
def test_frontier_gives_the_same_root_as_the_whole_tree_at_every_size(leaves: list[bytes]) -> None:
    frontier = Frontier()
    for size, leaf in enumerate(leaves, start=1):
        frontier.append(leaf)
        assert frontier.size == size
        assert frontier.root() == root_of(leaves[:size])
    restored = Frontier(frontier.size, frontier.subtree_roots)
    restored.append(b"x" * 32)
    assert restored.root() == root_of([*leaves, b"x" * 32])


@given(leaf_lists, st.data())
def test_changing_any_leaf_changes_the_root(leaves: list[bytes], data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(leaves) - 1))
    changed = list(leaves)
    changed[index] = hashlib.sha256(leaves[index]).digest()
    assert root_of(changed) != root_of(leaves)


@given(leaf_lists, st.data())
def test_reordering_or_dropping_leaves_changes_the_root(
    leaves: list[bytes], data: st.DataObject
) -> None:
    if len(set(leaves)) > 1:
        i = data.draw(st.integers(0, len(leaves) - 1))
        j = data.draw(st.integers(0, len(leaves) - 1).filter(lambda k: leaves[k] != leaves[i]))
        swapped = list(leaves)
        swapped[i], swapped[j] = swapped[j], swapped[i]
        assert root_of(swapped) != root_of(leaves)
    dropped = data.draw(st.integers(0, len(leaves) - 1))
    assert root_of(leaves[:dropped] + leaves[dropped + 1:]) != root_of(leaves)


@given(leaf_lists, st.data())
def test_any_range_rebuilds_the_root_and_a_changed_leaf_does_not(
    leaves: list[bytes], data: st.DataObject
) -> None:
    size = data.draw(st.integers(1, len(leaves)))
    start = data.draw(st.integers(0, size - 1))
    end = data.draw(st.integers(start + 1, size))
    proof = range_proof(leaves, size, start, end)
    part = leaves[start:end]
    assert root_from_range(size, start, part, proof) == root_of(leaves[:size])
    tampered = [hashlib.sha256(part[0]).digest(), *part[1:]]
    assert root_from_range(size, start, tampered, proof) != root_of(leaves[:size])


def test_a_proof_of_the_wrong_length_is_refused() -> None:
    proof = range_proof(LEAVES, 8, 2, 5)
    with pytest.raises(ValueError, match="too short"):
        root_from_range(8, 2, LEAVES[2:5], proof[:-1])
    with pytest.raises(ValueError, match="too long"):
        root_from_range(8, 2, LEAVES[2:5], [*proof, LEAVES[0]])
    with pytest.raises(ValueError, match="not inside"):
        range_proof(LEAVES, 8, 5, 9)
