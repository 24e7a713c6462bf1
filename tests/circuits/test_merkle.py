"""The epoch Merkle tree against a naive recursive reference, and its paths under tampering."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from circuits.hashing import keccak256
from circuits.merkle import leaf_hash, levels, path, root, verify_path

TAG = keccak256(b"tests.merkle.tag")


def reference_root(hashes: list[bytes]) -> bytes:
    if len(hashes) == 1:
        return hashes[0]
    half = len(hashes) // 2
    return keccak256(reference_root(hashes[:half]) + reference_root(hashes[half:]))


def leaves(count: int) -> list[bytes]:
    return [keccak256(b"leaf", i.to_bytes(4, "big")) for i in range(count)]


def test_leaf_hash_layout():
    commitment = bytes(range(64))
    proof = b"proof bytes"
    assert leaf_hash(TAG, commitment, proof) == keccak256(TAG + commitment + keccak256(proof))


@pytest.mark.parametrize(("tag", "commitment"), [(bytes(31), bytes(64)), (bytes(33), bytes(64)),
                                                 (bytes(32), bytes(63)), (bytes(32), bytes(65))])
def test_leaf_hash_refuses_wrong_lengths(tag, commitment):
    with pytest.raises(ValueError):
        leaf_hash(tag, commitment, b"")


def test_leaf_hash_binds_every_input():
    base = leaf_hash(TAG, bytes(64), b"p")
    assert leaf_hash(keccak256(b"other"), bytes(64), b"p") != base
    assert leaf_hash(TAG, b"\x01" + bytes(63), b"p") != base
    assert leaf_hash(TAG, bytes(64), b"q") != base


@pytest.mark.parametrize("count", [1, 2, 4, 8, 64])
def test_root_matches_reference(count):
    hashes = leaves(count)
    assert root(hashes) == reference_root(hashes)
    tree = levels(hashes)
    assert tree[0] == hashes
    assert [len(level) for level in tree] == [count >> d for d in range(len(tree))]


@pytest.mark.parametrize("count", [0, 3, 5, 6, 7, 100])
def test_width_must_be_a_power_of_two(count):
    with pytest.raises(ValueError):
        root(leaves(count))


@pytest.mark.parametrize("count", [1, 2, 8, 32])
def test_every_path_verifies(count):
    hashes = leaves(count)
    tree = levels(hashes)
    top = root(hashes)
    for index in range(count):
        siblings = path(tree, index)
        assert len(siblings) == count.bit_length() - 1
        assert verify_path(hashes[index], index, siblings, top)


def test_tampered_paths_fail():
    hashes = leaves(16)
    tree = levels(hashes)
    top = root(hashes)
    siblings = path(tree, 5)
    assert not verify_path(hashes[4], 5, siblings, top)  # another leaf
    assert not verify_path(hashes[5], 4, siblings, top)  # another index
    assert not verify_path(hashes[5], 5 + 16, siblings, top)  # index beyond the tree
    assert not verify_path(hashes[5], -1, siblings, top)
    assert not verify_path(hashes[5], 5, siblings[:-1], top)  # path too short
    assert not verify_path(hashes[5], 5, [*siblings, bytes(32)], top)  # too long
    assert not verify_path(hashes[5], 5, siblings[::-1], top)
    assert not verify_path(hashes[5], 5, siblings, keccak256(b"other root"))
    for depth in range(len(siblings)):
        bad = list(siblings)
        bad[depth] = bytes([bad[depth][0] ^ 1]) + bad[depth][1:]
        assert not verify_path(hashes[5], 5, bad, top)


@pytest.mark.parametrize("index", [-1, 8])
def test_path_index_out_of_range(index):
    with pytest.raises(ValueError):
        path(levels(leaves(8)), index)


@settings(max_examples=30, deadline=None)
@given(depth=st.integers(min_value=0, max_value=6), data=st.data())
def test_property_paths_verify_and_pin_the_index(depth, data):
    count = 1 << depth
    hashes = leaves(count)
    tree = levels(hashes)
    index = data.draw(st.integers(min_value=0, max_value=count - 1))
    other = data.draw(st.integers(min_value=0, max_value=count - 1))
    siblings = path(tree, index)
    assert verify_path(hashes[index], index, siblings, root(hashes))
    if other != index:
        assert not verify_path(hashes[index], other, siblings, root(hashes))
