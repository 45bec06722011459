"""RFC 9162 audit paths and consistency proofs against Certificate Transparency's vectors,
and the verifiers against random trees and every kind of tampering."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.registry.audit.merkle import (
    EMPTY_ROOT,
    Frontier,
    MerkleTree,
    SubtreeRoots,
    consistency_path,
    inclusion_path,
    leaf_hash,
    node_hash,
    root_of,
    split_point,
    verify_consistency,
    verify_inclusion,
)

# The vectors of transparency-dev/merkle proof/verify_test.go (commit 02194e9a), the same as
# google/certificate-transparency src/merkletree/MerkleTreeTest.cc plus its 6 -> 7 proof.
CT_INPUTS = [bytes.fromhex(h) for h in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
)]
CT_ROOTS = [bytes.fromhex(h) for h in (
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
)]
# (leaf index, tree size, audit path bottom-up). The sources number leaves from 1; here from 0.
CT_INCLUSION = [
    (0, 1, []),
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]
# (first size, second size, consistency proof)
CT_CONSISTENCY = [
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (6, 7, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]
CT_TREE = MerkleTree([leaf_hash(data) for data in CT_INPUTS])
# transparency-dev's stand-in for an unrelated hash.
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")

# Enough leaves for a tree twice the largest random size, for the wrong-size probes.
POOL = [leaf_hash(i.to_bytes(4, "big")) for i in range(602)]
POOL_TREE = MerkleTree(POOL)


def hashes(hex_list: Sequence[str]) -> list[bytes]:
    return [bytes.fromhex(h) for h in hex_list]


def root(size: int) -> bytes:
    return POOL_TREE.subtree_root(0, size)


def flip(value: bytes, at: int, mask: int) -> bytes:
    return value[:at] + bytes([value[at] ^ mask]) + value[at + 1:]


def other_than(data: st.DataObject, value: int, low: int, high: int) -> int:
    """A number in [low, high] besides `value`, drawn without a filter's rejections."""
    drawn = data.draw(st.integers(low, high - 1))
    return drawn + 1 if drawn >= value else drawn


# --- The reference vectors ---------------------------------------------------------------


@pytest.mark.parametrize("size", range(1, 9))
def test_roots_match_the_reference(size: int) -> None:
    assert CT_TREE.subtree_root(0, size) == CT_ROOTS[size - 1]


@pytest.mark.parametrize(("index", "size", "path"), CT_INCLUSION)
def test_inclusion_paths_match_the_reference_byte_for_byte(
    index: int, size: int, path: list[str]
) -> None:
    assert inclusion_path(CT_TREE, index, size) == hashes(path)
    assert verify_inclusion(index, size, CT_TREE.leaves[index], hashes(path), CT_ROOTS[size - 1])


@pytest.mark.parametrize(("first", "second", "proof"), CT_CONSISTENCY)
def test_consistency_proofs_match_the_reference_byte_for_byte(
    first: int, second: int, proof: list[str]
) -> None:
    assert consistency_path(CT_TREE, first, second) == hashes(proof)
    assert verify_consistency(first, second, CT_ROOTS[first - 1], CT_ROOTS[second - 1],
                              hashes(proof))


def inclusion_probes(
    index: int, size: int, leaf: bytes, path: list[bytes], root: bytes
) -> list[tuple[str, tuple[int, int, bytes, list[bytes], bytes]]]:
    """transparency-dev's corruptInclusionProof: each a way to get a proof wrong."""
    probes = [
        ("index - 1", (index - 1, size, leaf, path, root)),
        ("index + 1", (index + 1, size, leaf, path, root)),
        ("index ^ 2", (index ^ 2, size, leaf, path, root)),
        ("size * 2", (index, size * 2, leaf, path, root)),
        ("size // 2", (index, size // 2, leaf, path, root)),
        ("wrong leaf", (index, size, b"WrongLeaf", path, root)),
        ("other leaf", (index, size, SOME_HASH, path, root)),
        ("empty root", (index, size, leaf, path, EMPTY_ROOT)),
        ("random root", (index, size, leaf, path, SOME_HASH)),
        ("trailing garbage", (index, size, leaf, [*path, b""], root)),
        ("trailing root", (index, size, leaf, [*path, root], root)),
        ("preceding garbage", (index, size, leaf, [b"", *path], root)),
        ("preceding root", (index, size, leaf, [root, *path], root)),
    ]
    for i in range(len(path)):
        changed = list(path)
        changed[i] = flip(changed[i], 0, 8)
        probes.append((f"proof[{i}] bit 3", (index, size, leaf, changed, root)))
    if path:
        probes.append(("removed component", (index, size, leaf, path[:-1], root)))
    if len(path) > 1:
        probes.append(("inserted component",
                       (index, size, leaf, [path[0], SOME_HASH, *path[1:]], root)))
    return probes


def consistency_probes(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: list[bytes]
) -> list[tuple[str, tuple[int, int, bytes, bytes, list[bytes]]]]:
    """transparency-dev's corruptConsistencyProof."""
    probes = [
        ("first - 1", (first - 1, second, first_root, second_root, proof)),
        ("first + 1", (first + 1, second, first_root, second_root, proof)),
        ("first ^ 2", (first ^ 2, second, first_root, second_root, proof)),
        ("second * 2", (first, second * 2, first_root, second_root, proof)),
        ("second // 2", (first, second // 2, first_root, second_root, proof)),
        ("wrong first root", (first, second, b"WrongRoot", second_root, proof)),
        ("wrong second root", (first, second, first_root, b"WrongRoot", proof)),
        ("other first root", (first, second, SOME_HASH, second_root, proof)),
        ("other second root", (first, second, first_root, SOME_HASH, proof)),
        ("swapped roots", (first, second, second_root, first_root, proof)),
        ("empty proof", (first, second, first_root, second_root, [])),
        ("trailing garbage", (first, second, first_root, second_root, [*proof, b""])),
        ("trailing first root", (first, second, first_root, second_root, [*proof, first_root])),
        ("trailing second root",
         (first, second, first_root, second_root, [*proof, second_root])),
        ("preceding garbage", (first, second, first_root, second_root, [b"", *proof])),
        ("preceding first root", (first, second, first_root, second_root, [first_root, *proof])),
        ("preceding second root",
         (first, second, first_root, second_root, [second_root, *proof])),
        ("preceding proof[0]", (first, second, first_root, second_root, [proof[0], *proof])),
        ("truncated proof", (first, second, first_root, second_root, proof[:-1])),
    ]
    for i in range(len(proof)):
        changed = list(proof)
        changed[i] = flip(changed[i], 0, 16)
        probes.append((f"proof[{i}] bit 4", (first, second, first_root, second_root, changed)))
    return probes


@pytest.mark.parametrize(("index", "size", "path"), CT_INCLUSION)
def test_the_inclusion_verifier_refuses_every_corruption_of_the_reference_paths(
    index: int, size: int, path: list[str]
) -> None:
    probes = inclusion_probes(index, size, CT_TREE.leaves[index], hashes(path), CT_ROOTS[size - 1])
    accepted = [name for name, args in probes if verify_inclusion(*args)]
    assert accepted == []


@pytest.mark.parametrize(("first", "second", "proof"),
                         [vector for vector in CT_CONSISTENCY if vector[2]])
def test_the_consistency_verifier_refuses_every_corruption_of_the_reference_proofs(
    first: int, second: int, proof: list[str]
) -> None:
    probes = consistency_probes(first, second, CT_ROOTS[first - 1], CT_ROOTS[second - 1],
                                hashes(proof))
    accepted = [name for name, args in probes if verify_consistency(*args)]
    assert accepted == []


# --- Malformed input: False, never an exception --------------------------------------------

LEAF0, ROOT1, ROOT8 = CT_TREE.leaves[0], CT_ROOTS[0], CT_ROOTS[7]
PATH_0_8 = hashes(CT_INCLUSION[1][2])


@pytest.mark.parametrize("args", [
    (0, 0, LEAF0, [], ROOT1),  # an empty tree has no leaf
    (1, 1, LEAF0, [], ROOT1),  # index == size
    (2, 1, LEAF0, [], ROOT1),
    (-1, 8, LEAF0, PATH_0_8, ROOT8),
    (0, -8, LEAF0, PATH_0_8, ROOT8),
    (True, 8, LEAF0, PATH_0_8, ROOT8),
    (0.0, 8, LEAF0, PATH_0_8, ROOT8),
    ("0", 8, LEAF0, PATH_0_8, ROOT8),
    (0, 8, LEAF0.hex(), PATH_0_8, ROOT8),
    (0, 8, LEAF0, PATH_0_8, ROOT8.hex()),
    (0, 8, LEAF0 + b"\x00", PATH_0_8, ROOT8),
    (0, 8, LEAF0, PATH_0_8, ROOT8[:-1]),
    (0, 8, LEAF0, [h.hex() for h in PATH_0_8], ROOT8),
    (0, 8, LEAF0, [PATH_0_8[0][:-1], *PATH_0_8[1:]], ROOT8),
    (0, 8, LEAF0, b"".join(PATH_0_8), ROOT8),
    (0, 8, LEAF0, None, ROOT8),
    (0, 8, LEAF0, [None, *PATH_0_8[1:]], ROOT8),
    (0, 1, LEAF0, [], LEAF0[:-1]),
])
def test_malformed_inclusion_input_is_refused_without_raising(args: tuple[object, ...]) -> None:
    assert verify_inclusion(*args) is False  # type: ignore[arg-type]


PROOF_6_8 = hashes(CT_CONSISTENCY[2][2])


@pytest.mark.parametrize("args", [
    (0, 0, EMPTY_ROOT, EMPTY_ROOT, []),  # no proof starts from the empty tree
    (0, 8, EMPTY_ROOT, ROOT8, []),
    (0, 8, EMPTY_ROOT, ROOT8, PATH_0_8),
    (2, 1, CT_ROOTS[1], ROOT1, []),  # first > second
    (8, 6, ROOT8, CT_ROOTS[5], PROOF_6_8),
    (1, 2, ROOT1, CT_ROOTS[1], []),  # a real step needs a proof
    (1, 1, ROOT1, CT_ROOTS[1], []),  # equal sizes, different roots
    (1, 1, ROOT1, ROOT1, [ROOT1]),  # equal sizes, a proof that should be empty
    (8, 8, ROOT8, ROOT8, [SOME_HASH]),
    (-6, 8, CT_ROOTS[5], ROOT8, PROOF_6_8),
    (6, True, CT_ROOTS[5], ROOT8, PROOF_6_8),
    (6.0, 8, CT_ROOTS[5], ROOT8, PROOF_6_8),
    (6, 8, CT_ROOTS[5].hex(), ROOT8, PROOF_6_8),
    (6, 8, CT_ROOTS[5], ROOT8[1:], PROOF_6_8),
    (6, 8, CT_ROOTS[5], ROOT8, [PROOF_6_8[0] + b"\x00", *PROOF_6_8[1:]]),
    (6, 8, CT_ROOTS[5], ROOT8, b"".join(PROOF_6_8)),
    (6, 8, CT_ROOTS[5], ROOT8, None),
    (6, 8, CT_ROOTS[5], ROOT8, [*PROOF_6_8[:-1], 7]),
    (1, 1, ROOT1[:-1], ROOT1[:-1], []),
])
def test_malformed_consistency_input_is_refused_without_raising(args: tuple[object, ...]) -> None:
    assert verify_consistency(*args) is False  # type: ignore[arg-type]


def test_equal_sizes_need_an_empty_proof_and_equal_roots() -> None:
    assert verify_consistency(5, 5, CT_ROOTS[4], CT_ROOTS[4], [])
    assert consistency_path(CT_TREE, 5, 5) == []


@pytest.mark.parametrize(("first", "second"), [(0, 0), (0, 3), (4, 3), (-1, 2)])
def test_no_consistency_proof_is_made_for_impossible_sizes(first: int, second: int) -> None:
    with pytest.raises(ValueError):
        consistency_path(CT_TREE, first, second)


@pytest.mark.parametrize(("index", "size"), [(0, 0), (3, 3), (-1, 3)])
def test_no_inclusion_path_is_made_for_a_leaf_outside_the_tree(index: int, size: int) -> None:
    with pytest.raises(ValueError):
        inclusion_path(CT_TREE, index, size)


# --- Random trees ----------------------------------------------------------------------------

sizes = st.integers(1, 300)


@st.composite
def inclusion_cases(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(sizes)
    return draw(st.integers(0, size - 1)), size


@st.composite
def consistency_cases(draw: st.DrawFn) -> tuple[int, int]:
    second = draw(sizes)
    return draw(st.integers(1, second)), second


@settings(max_examples=300, deadline=None)
@given(inclusion_cases(), st.data())
def test_random_inclusion_paths_verify_and_any_change_breaks_them(
    case: tuple[int, int], data: st.DataObject
) -> None:
    index, size = case
    tree = MerkleTree(POOL[:size])
    path = inclusion_path(tree, index, size)
    leaf, good_root = POOL[index], root(size)
    assert verify_inclusion(index, size, leaf, path, good_root)

    assert not verify_inclusion(index, size, flip(leaf, data.draw(st.integers(0, 31)),
                                                  data.draw(st.integers(1, 255))), path, good_root)
    assert not verify_inclusion(index, size, leaf, path, flip(
        good_root, data.draw(st.integers(0, 31)), data.draw(st.integers(1, 255))))
    extra = data.draw(st.sampled_from([SOME_HASH, leaf, good_root, *path]))
    at = data.draw(st.integers(0, len(path)))
    assert not verify_inclusion(index, size, leaf, [*path[:at], extra, *path[at:]], good_root)
    if path:
        i = data.draw(st.integers(0, len(path) - 1))
        flipped = [*path[:i], flip(path[i], data.draw(st.integers(0, 31)),
                                   data.draw(st.integers(1, 255))), *path[i + 1:]]
        assert not verify_inclusion(index, size, leaf, flipped, good_root)
        assert not verify_inclusion(index, size, leaf, path[:i] + path[i + 1:], good_root)
    # A tree head binds a root to its size, so a wrong size comes with that size's root.
    other_size = other_than(data, size, index + 1, 2 * size + 1)
    assert not verify_inclusion(index, other_size, leaf, path, root(other_size))
    if size > 1:
        other_index = other_than(data, index, 0, size - 1)
        assert not verify_inclusion(other_index, size, leaf, path, good_root)
        assert not verify_inclusion(other_index, size, POOL[other_index], path, good_root)


@settings(max_examples=300, deadline=None)
@given(consistency_cases(), st.data())
def test_random_consistency_proofs_verify_and_any_change_breaks_them(
    case: tuple[int, int], data: st.DataObject
) -> None:
    first, second = case
    tree = MerkleTree(POOL[:second])
    proof = consistency_path(tree, first, second)
    first_root, second_root = root(first), root(second)
    assert verify_consistency(first, second, first_root, second_root, proof)
    assert (proof == []) == (first == second)

    mask, at_byte = data.draw(st.integers(1, 255)), data.draw(st.integers(0, 31))
    assert not verify_consistency(first, second, flip(first_root, at_byte, mask), second_root,
                                  proof)
    assert not verify_consistency(first, second, first_root, flip(second_root, at_byte, mask),
                                  proof)
    extra = data.draw(st.sampled_from([SOME_HASH, first_root, second_root, *proof]))
    at = data.draw(st.integers(0, len(proof)))
    assert not verify_consistency(first, second, first_root, second_root,
                                  [*proof[:at], extra, *proof[at:]])
    if proof:
        i = data.draw(st.integers(0, len(proof) - 1))
        flipped = [*proof[:i], flip(proof[i], at_byte, mask), *proof[i + 1:]]
        assert not verify_consistency(first, second, first_root, second_root, flipped)
        assert not verify_consistency(first, second, first_root, second_root,
                                      proof[:i] + proof[i + 1:])
    if second > 1:
        other_first = other_than(data, first, 1, second)
        assert not verify_consistency(other_first, second, root(other_first), second_root,
                                      proof)
    other_second = other_than(data, second, first, 2 * second + 1)
    assert not verify_consistency(first, other_second, first_root, root(other_second), proof)


@settings(max_examples=100, deadline=None)
@given(consistency_cases())
def test_inclusion_and_consistency_agree_with_the_rfc_recursion(case: tuple[int, int]) -> None:
    """The RFC's recursive definitions, transcribed, against the iterative generators."""
    first, second = case
    tree = MerkleTree(POOL[:second])

    def path(m: int, low: int, high: int) -> list[bytes]:
        if high - low == 1:
            return []
        k = split_point(high - low)
        if m < low + k:
            return [*path(m, low, low + k), root_of(POOL[low + k:high])]
        return [*path(m, low + k, high), root_of(POOL[low:low + k])]

    def subproof(m: int, low: int, high: int, b: bool) -> list[bytes]:
        if m == high:
            return [] if b else [root_of(POOL[low:high])]
        k = split_point(high - low)
        if m <= low + k:
            return [*subproof(m, low, low + k, b), root_of(POOL[low + k:high])]
        return [*subproof(m, low + k, high, False), root_of(POOL[low:low + k])]

    assert inclusion_path(tree, first - 1, second) == path(first - 1, 0, second)
    assert consistency_path(tree, first, second) == subproof(first, 0, second, True)


class RecordingTree:
    """Answers from a MerkleTree and remembers every range asked for."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self.tree = MerkleTree(leaves)
        self.asked: list[tuple[int, int]] = []

    def subtree_root(self, low: int, high: int) -> bytes:
        self.asked.append((low, high))
        return self.tree.subtree_root(low, high)


class StoredNodesTree:
    """A tree that has only the leaves and the nodes a Frontier reported, as a database
    would: a perfect subtree must be one of them, any other range is built from them."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self.size = len(leaves)
        self.nodes: dict[tuple[int, int], bytes] = {}
        frontier = Frontier()
        for index, leaf in enumerate(leaves):
            self.nodes[(0, index)] = leaf
            for level, node_index, node in frontier.append(leaf):
                self.nodes[(level, node_index)] = node

    def subtree_root(self, low: int, high: int) -> bytes:
        assert 0 <= low < high <= self.size
        width = high - low
        if width & (width - 1) == 0:
            assert low % width == 0, f"a perfect subtree [{low}, {high}) off its boundary"
            return self.nodes[(width.bit_length() - 1, low // width)]
        middle = low + split_point(width)
        return node_hash(self.subtree_root(low, middle), self.subtree_root(middle, high))


@settings(max_examples=150, deadline=None)
@given(consistency_cases())
def test_proofs_ask_only_for_ranges_a_stored_tree_has(case: tuple[int, int]) -> None:
    first, second = case
    recording = RecordingTree(POOL[:second])
    stored: SubtreeRoots = StoredNodesTree(POOL[:second])
    for index in {0, first - 1, second - 1}:
        assert inclusion_path(stored, index, second) == inclusion_path(recording, index, second)
    assert consistency_path(stored, first, second) == consistency_path(recording, first, second)
    for low, high in recording.asked:
        width = high - low
        assert 0 <= low < high <= second
        assert width & (width - 1) or low % width == 0


@settings(max_examples=100, deadline=None)
@given(sizes)
def test_the_frontier_reports_every_perfect_subtree_once_with_its_root(size: int) -> None:
    frontier = Frontier()
    reported: list[tuple[int, int, bytes]] = []
    for leaf in POOL[:size]:
        reported.extend(frontier.append(leaf))
    keys = [(level, index) for level, index, _ in reported]
    expected = [(level, index) for level in range(1, size.bit_length())
                for index in range(size >> level)]
    assert sorted(keys) == sorted(expected)
    for level, index, node in reported:
        assert node == POOL_TREE.subtree_root(index << level, (index + 1) << level)
    assert frontier.root() == root(size)


def test_the_frontier_reports_merges_smallest_first() -> None:
    frontier = Frontier()
    for leaf in CT_TREE.leaves[:7]:
        frontier.append(leaf)
    completed = frontier.append(CT_TREE.leaves[7])
    assert [(level, index) for level, index, _ in completed] == [(1, 3), (2, 1), (3, 0)]
    assert completed[-1][2] == CT_ROOTS[7]
    # A restored frontier goes on reporting from where it was.
    restored = Frontier(3, [CT_TREE.subtree_root(0, 2), CT_TREE.leaves[2]])
    assert restored.append(CT_TREE.leaves[3]) == [
        (1, 1, CT_TREE.subtree_root(2, 4)), (2, 0, CT_ROOTS[3])]


def test_a_one_leaf_tree_needs_no_path() -> None:
    assert inclusion_path(CT_TREE, 0, 1) == []
    assert verify_inclusion(0, 1, LEAF0, (), ROOT1)  # any sequence, a tuple too
    assert LEAF0 == ROOT1 == hashlib.sha256(b"\x00" + CT_INPUTS[0]).digest()
