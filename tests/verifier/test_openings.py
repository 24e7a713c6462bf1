"""Sealed openings: only the user opens its own, and the opening matches its leaf."""

import dataclasses

import pytest
from nacl.public import PrivateKey

from verifier.opening import Opening, OpeningError, check_opening, sealed_size, unseal


def test_every_user_opens_its_own_leaf(small_epoch, user_keys):
    bundle = small_epoch.bundle
    for user, key in user_keys.items():
        expected = small_epoch.openings[user]
        opening = unseal(small_epoch.sealed[expected.tag], bytes(key))
        assert opening == expected
        assert opening.value == 1_000 * int(user.split("-")[1]) + 7
        assert all(ok for _, ok, _ in check_opening(opening, bundle))


def test_sealed_openings_have_one_length(small_epoch):
    lengths = {len(s) for s in small_epoch.sealed.values()}
    assert lengths == {sealed_size(4)}
    assert len(small_epoch.sealed) == len(small_epoch.bundle.leaves)


def test_another_key_cannot_open(small_epoch, user_keys):
    tag = small_epoch.openings["user-1"].tag
    with pytest.raises(OpeningError):
        unseal(small_epoch.sealed[tag], bytes(user_keys["user-2"]))
    with pytest.raises(OpeningError):
        unseal(small_epoch.sealed[tag], bytes(PrivateKey.generate()))


def test_padding_openings_open_for_nobody(small_epoch, user_keys):
    user_tags = {o.tag for o in small_epoch.openings.values()}
    padding = [t for t in small_epoch.sealed if t not in user_tags]
    assert len(padding) == 5
    for key in user_keys.values():
        with pytest.raises(OpeningError):
            unseal(small_epoch.sealed[padding[0]], bytes(key))


@pytest.mark.parametrize("change,failed", [
    ({"value": 1}, {"commitment"}),
    ({"blinding": 5}, {"commitment"}),
    ({"epoch_id": 6}, {"epoch"}),
    ({"leaf_index": 0}, {"leaf", "merkle_path", "commitment"}),
])
def test_altered_opening_fails_the_right_check(small_epoch, change, failed):
    opening = small_epoch.openings["user-3"]
    if opening.leaf_index == 0 and "leaf_index" in change:
        change = {"leaf_index": 1}
    altered = dataclasses.replace(opening, **change)
    results = {name: ok for name, ok, _ in check_opening(altered, small_epoch.bundle)}
    assert {name for name, ok in results.items() if not ok} == failed


def test_bad_path_fails_merkle(small_epoch):
    opening = small_epoch.openings["user-4"]
    altered = dataclasses.replace(opening, path=(b"\x00" * 32, *opening.path[1:]))
    results = {name: ok for name, ok, _ in check_opening(altered, small_epoch.bundle)}
    assert results["merkle_path"] is False


def test_opening_bytes_round_trip_and_strict_decoding(small_epoch):
    opening = small_epoch.openings["user-5"]
    assert Opening.from_bytes(opening.to_bytes()) == opening
    with pytest.raises(OpeningError):
        Opening.from_bytes(opening.to_bytes()[:-1])
    with pytest.raises(OpeningError):
        Opening.from_bytes(b"X" + opening.to_bytes()[1:])
