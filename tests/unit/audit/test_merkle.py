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

# The Certificate Transparency test vectors (certificate-transparency-go, testonly/constants.go).
CT_LEAVES = [bytes.fromhex(h) for h in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
)]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# (leaf index, tree size, audit path bottom-up as RFC 9162 lists it)
CT_PATHS = [
    (0, 1, []),
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]
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
