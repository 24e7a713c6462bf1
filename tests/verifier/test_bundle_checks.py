"""Every kind of tampering with a bundle fails the right checks, and only those."""

import copy
import json
from dataclasses import replace

import pytest
from nacl.signing import SigningKey

from circuits.constants import CURVE_ORDER
from circuits.pedersen import commit
from prover.epoch.close import EpochInputs, assemble, plan
from prover.epoch.executor import prove_leaf
from tests.verifier.conftest import MASTER_SECRET, PROVIDER_SEED
from verifier.bundle import parse_bundle, sign_bundle, verify_bundle


def dump(data) -> str:
    return json.dumps(data)

ALL = {"structure", "encodings", "signature", "merkle_root", "aggregate", "range_proofs"}


def outcome(data) -> dict[str, bool]:
    return {c.name: c.ok for c in verify_bundle(parse_bundle(dump(data)))}


def failing(data) -> set[str]:
    return {name for name, ok in outcome(data).items() if not ok}


def test_honest_bundle_passes_every_check(small_bundle_json):
    result = outcome(small_bundle_json)
    assert set(result) == ALL
    assert all(result.values())


def test_bundle_is_padded_to_a_power_of_two(small_epoch):
    assert len(small_epoch.bundle.leaves) == 16  # 11 users, at least 16 leaves


def _flip_hex(value: str, pos: int) -> str:
    raw = bytearray.fromhex(value[2:])
    raw[pos] ^= 0x01
    return "0x" + raw.hex()


def test_flipped_proof_byte(small_bundle_json):
    data = copy.deepcopy(small_bundle_json)
    data["leaves"][3]["proof"] = _flip_hex(data["leaves"][3]["proof"], 500)
    checks = {c.name: c for c in verify_bundle(parse_bundle(dump(data)))}
    assert {n for n, c in checks.items() if not c.ok} == {"signature", "merkle_root",
                                                            "range_proofs"}
    assert checks["range_proofs"].failing_leaves == (3,)


def test_replaced_commitment(small_bundle_json):
    data = copy.deepcopy(small_bundle_json)
    data["leaves"][2]["commitment"] = "0x" + commit(123, 456).hex()
    checks = {c.name: c for c in verify_bundle(parse_bundle(dump(data)))}
    assert {n for n, c in checks.items() if not c.ok} == {"signature", "merkle_root",
                                                            "aggregate", "range_proofs"}
    assert checks["range_proofs"].failing_leaves == (2,)


def test_changed_total(small_bundle_json):
    data = copy.deepcopy(small_bundle_json)
    data["total"]["value"] += 1
    assert failing(data) == {"signature", "aggregate"}


def test_changed_aggregate_blinding(small_bundle_json):
    data = copy.deepcopy(small_bundle_json)
    blinding = int(data["total"]["blinding"], 16)
    data["total"]["blinding"] = f"0x{(blinding + 1) % CURVE_ORDER:064x}"
    assert failing(data) == {"signature", "aggregate"}


@pytest.mark.parametrize("field,delta", [("epoch_id", 1), ("chain_id", 1)])
def test_changed_context_invalidates_every_proof(small_bundle_json, field, delta):
    data = copy.deepcopy(small_bundle_json)
    data[field] += delta
    checks = {c.name: c for c in verify_bundle(parse_bundle(dump(data)))}
    assert {n for n, c in checks.items() if not c.ok} == {"signature", "range_proofs"}
    assert checks["range_proofs"].failing_leaves == tuple(range(16))


def test_changed_contract_invalidates_every_proof(small_bundle_json):
    data = copy.deepcopy(small_bundle_json)
    data["contract"] = "0x" + "22" * 20
    assert failing(data) == {"signature", "range_proofs"}


def test_swapped_leaves(small_bundle_json):
    data = copy.deepcopy(small_bundle_json)
    data["leaves"][0], data["leaves"][1] = data["leaves"][1], data["leaves"][0]
    assert failing(data) == {"structure", "signature", "merkle_root"}


def test_duplicated_leaf(small_bundle_json):
    data = copy.deepcopy(small_bundle_json)
    data["leaves"][5] = copy.deepcopy(data["leaves"][4])
    assert failing(data) == {"structure", "signature", "merkle_root", "aggregate"}


def test_removed_leaf(small_bundle_json):
    data = copy.deepcopy(small_bundle_json)
    del data["leaves"][7]
    assert failing(data) == {"structure", "signature", "merkle_root", "aggregate"}


def test_changed_signature(small_bundle_json):
    data = copy.deepcopy(small_bundle_json)
    data["signature"] = _flip_hex(data["signature"], 10)
    assert failing(data) == {"signature"}


def test_wrong_expected_provider_key(small_bundle_json):
    bundle = parse_bundle(dump(small_bundle_json))
    checks = {c.name: c.ok for c in verify_bundle(bundle, provider_key=b"\x01" * 32)}
    assert checks["signature"] is False


def test_one_bad_proof_among_1024_is_found(large_epoch):
    data = large_epoch.bundle.to_json()
    data["leaves"][777]["proof"] = _flip_hex(data["leaves"][777]["proof"], 300)
    checks = {c.name: c for c in verify_bundle(parse_bundle(dump(data)))}
    assert checks["range_proofs"].failing_leaves == (777,)
    assert checks["aggregate"].ok


def test_large_honest_bundle_verifies(large_epoch):
    assert all(c.ok for c in verify_bundle(large_epoch.bundle))
    assert large_epoch.bundle.total == sum(i * 3 for i in range(1024))


def _resigned(data) -> dict:
    """The bundle JSON re-signed by its provider: only the changed field's own check fails."""
    key = SigningKey(PROVIDER_SEED)
    bundle = sign_bundle(parse_bundle(dump(data)), lambda m: bytes(key.sign(m).signature))
    return bundle.to_json()


def test_total_plus_the_group_order_is_refused_even_when_signed(small_bundle_json):
    """V + r passes the point equation mod r; the contract's uint96 V would be another
    amount. The total must fit uint96 exactly (issue 12)."""
    data = copy.deepcopy(small_bundle_json)
    data["total"]["value"] += CURVE_ORDER
    checks = {c.name: c for c in verify_bundle(parse_bundle(dump(_resigned(data))))}
    assert {n for n, c in checks.items() if not c.ok} == {"aggregate"}
    assert "uint96" in checks["aggregate"].detail


def test_a_total_of_2_to_the_96_is_refused(small_bundle_json):
    data = copy.deepcopy(small_bundle_json)
    data["total"]["value"] = 1 << 96
    assert failing(_resigned(data)) == {"aggregate"}


def test_an_honest_16_bit_bundle_fails_as_unsettleable(small_epoch):
    """A bundle with n != 32 could get an honest provider slashed on-chain (the contract's
    verifier checks n = 32 only): the structure check fails it, the proofs still verify."""
    bundle = small_epoch.bundle
    inputs = EpochInputs(ctx=bundle.context, window_start=bundle.window_start,
                         window_end=bundle.window_end, rate_card_hash=bundle.rate_card_hash,
                         bit_size=32, totals={"a": 5, "b": 60_000})
    planned = plan(inputs, MASTER_SECRET)
    finished = {p.job.tag: prove_leaf(inputs.ctx, 16, p.job) for p in planned}
    closed = assemble(replace(inputs, bit_size=16), planned, finished,
                      signing_key=SigningKey(PROVIDER_SEED), user_keys={})
    checks = {c.name: c for c in verify_bundle(parse_bundle(closed.bundle.dumps()))}
    assert {n for n, c in checks.items() if not c.ok} == {"structure"}
    assert "n = 16 cannot settle" in checks["structure"].detail
