"""A verifier that is handed anything but the honest statement rejects it: flipped bytes,
other commitments, other contexts, other parameters, malformed encodings. Every rejection is
a CircuitsError of the documented kind, and nothing else ever verifies."""

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from circuits.backend import get_backend
from circuits.constants import CURVE_ORDER, FIELD_MODULUS, RANGE_PROOF_DOMAIN
from circuits.encoding import bytes_to_point, point_to_bytes
from circuits.errors import CircuitsError, DecodeError, ParameterError, VerificationError
from circuits.generators import hash_to_g1
from circuits.pedersen import commit
from circuits.rangeproof import RangeProof, proof_size, prove, verify
from circuits.transcript import Transcript
from tests.circuits.conftest import (
    CONTEXT,
    KeccakRng,
    check_proof,
    make_proof,
    other_context,
)

R, P = CURVE_ORDER, FIELD_MODULUS


def be32(value: int) -> bytes:
    return value.to_bytes(32, "big")


def rejected(proof, commitments, n, backend, ctx=CONTEXT):
    """The exception verification raised (an AssertionError-worthy None if it verified)."""
    try:
        check_proof(proof, commitments, n, backend=backend, ctx=ctx)
    except CircuitsError as exc:
        return exc
    return None


def layout(n: int, m: int) -> dict[str, tuple[int, int]]:
    """Byte ranges (start, length) of every field of an encoded proof (PROTOCOL.md §5)."""
    fields = {"version": (0, 1)}
    pos = 1
    for name in ("A", "S", "T1", "T2"):
        fields[name] = (pos, 64)
        pos += 64
    for name in ("t_x", "t_x_blinding", "e_blinding"):
        fields[name] = (pos, 32)
        pos += 32
    for j in range((n * m).bit_length() - 1):
        fields[f"L{j}"] = (pos, 64)
        fields[f"R{j}"] = (pos + 64, 64)
        pos += 128
    fields["a"] = (pos, 32)
    fields["b"] = (pos + 32, 32)
    assert pos + 64 == proof_size(n, m)
    return fields


def replace_field(proof: bytes, n: int, m: int, name: str, data: bytes) -> bytes:
    start, length = layout(n, m)[name]
    assert len(data) == length
    return proof[:start] + data + proof[start + length:]


def test_layout_matches_the_decoder(proof32):
    proof, _ = proof32
    decoded = RangeProof.from_bytes(proof, n=32, m=1)
    fields = layout(32, 1)
    start, _ = fields["A"]
    assert proof[start:start + 64] == point_to_bytes(decoded.A)
    start, _ = fields["t_x"]
    assert proof[start:start + 32] == be32(decoded.t_x)
    start, _ = fields["L4"]
    assert proof[start:start + 64] == point_to_bytes(decoded.L[4])
    start, _ = fields["b"]
    assert proof[start:] == be32(decoded.b)


# --- every byte flipped -----------------------------------------------------------------


@pytest.mark.parametrize("mask", [0x01, 0x80], ids=["xor01", "xor80"])
@pytest.mark.parametrize("which", ["proof32", "proof8x2"])
def test_every_byte_of_a_proof_flipped_is_rejected(request, mcl, which, mask):
    proof, commitments = request.getfixturevalue(which)
    n = 32 if which == "proof32" else 8
    check_proof(proof, commitments, n, backend=mcl)  # the untouched proof verifies
    accepted, wrong_kind = [], []
    kinds = {DecodeError: 0, VerificationError: 0}
    for position in range(len(proof)):
        tampered = bytearray(proof)
        tampered[position] ^= mask
        exc = rejected(bytes(tampered), commitments, n, mcl)
        if exc is None:
            accepted.append(position)
        elif type(exc) not in kinds:
            wrong_kind.append((position, type(exc).__name__))
        else:
            kinds[type(exc)] += 1
    assert accepted == []
    assert wrong_kind == []
    # Both layers are exercised: points fail to decode, most scalar flips fail to verify.
    assert kinds[DecodeError] > 0
    assert kinds[VerificationError] > 0


@pytest.mark.parametrize("mask", [0x01, 0x80], ids=["xor01", "xor80"])
def test_every_byte_of_a_commitment_flipped_is_rejected(mcl, proof8x2, mask):
    proof, commitments = proof8x2
    for index in range(2):
        for position in range(64):
            tampered = bytearray(commitments[index])
            tampered[position] ^= mask
            altered = list(commitments)
            altered[index] = bytes(tampered)
            with pytest.raises((DecodeError, VerificationError)):
                check_proof(proof, altered, 8, backend=mcl)


# --- the wrong statement ----------------------------------------------------------------


def test_proof_against_another_commitment_to_the_same_value(mcl, proof32):
    proof, _ = proof32
    with pytest.raises(VerificationError):
        check_proof(proof, [commit(1_234_567_891, 424242, backend=mcl)], 32, backend=mcl)


def test_proof_against_a_commitment_to_another_value(mcl, proof32):
    proof, _ = proof32
    _, other = make_proof([1_234_567_890], 32, backend=mcl, seed=b"proof32")  # same blinding
    with pytest.raises(VerificationError):
        check_proof(proof, other, 32, backend=mcl)


def test_proof_against_another_proofs_commitment(mcl, proof32):
    proof, _ = proof32
    _, other = make_proof([5], 32, backend=mcl, seed=b"another")
    with pytest.raises(VerificationError):
        check_proof(proof, other, 32, backend=mcl)


def test_proof_against_the_negated_commitment(mcl, proof32):
    proof, (commitment,) = proof32
    point = bytes_to_point(commitment)
    negated = point_to_bytes(type(point)(point.x, P - point.y))
    with pytest.raises(VerificationError):
        check_proof(proof, [negated], 32, backend=mcl)


def test_proof_against_commitment_shifted_by_g(mcl, proof32):
    """V + G commits to v + 1 with the same blinding: a different statement."""
    proof, (commitment,) = proof32
    shifted = mcl.add(mcl.from_affine(bytes_to_point(commitment)), mcl.from_affine(
        bytes_to_point(be32(1) + be32(2))))
    with pytest.raises(VerificationError):
        check_proof(proof, [point_to_bytes(mcl.to_affine(shifted))], 32, backend=mcl)


def test_aggregated_proof_with_commitments_swapped(mcl, proof8x2):
    proof, commitments = proof8x2
    with pytest.raises(VerificationError):
        check_proof(proof, commitments[::-1], 8, backend=mcl)


def test_aggregated_proof_with_a_commitment_repeated(mcl, proof8x2):
    proof, commitments = proof8x2
    with pytest.raises(VerificationError):
        check_proof(proof, [commitments[0], commitments[0]], 8, backend=mcl)


@pytest.mark.parametrize("keep", [0, 1])
def test_aggregated_proof_with_a_commitment_dropped(mcl, proof8x2, keep):
    proof, commitments = proof8x2
    with pytest.raises((DecodeError, ParameterError)):
        check_proof(proof, [commitments[keep]], 8, backend=mcl)


def test_aggregated_proof_with_a_commitment_added(mcl, proof8x2):
    proof, commitments = proof8x2
    extra = commit(3, 4, backend=mcl)
    with pytest.raises((DecodeError, ParameterError)):
        check_proof(proof, [*commitments, extra], 8, backend=mcl)
    with pytest.raises((DecodeError, ParameterError)):
        check_proof(proof, [*commitments, extra, extra], 8, backend=mcl)


def test_single_proof_with_a_commitment_added(mcl, proof32):
    proof, commitments = proof32
    with pytest.raises((DecodeError, ParameterError)):
        check_proof(proof, [*commitments, commit(3, 4, backend=mcl)], 32, backend=mcl)


def test_proof_with_no_commitments(mcl, proof32):
    proof, _ = proof32
    with pytest.raises(ParameterError):
        check_proof(proof, [], 32, backend=mcl)


CONTEXT_CHANGES = {
    "epoch": {"epoch_id": CONTEXT.epoch_id + 1},
    "chain": {"chain_id": 1},
    "contract": {"contract": bytes.fromhex("5fbdb2315678afecb367f032d93f642f64180aa4")},
    "provider": {"provider_id": bytes(32)},
}


@pytest.mark.parametrize("field", list(CONTEXT_CHANGES))
@pytest.mark.parametrize("which", ["proof32", "proof8x2"])
def test_same_proof_under_a_different_context(request, mcl, which, field):
    proof, commitments = request.getfixturevalue(which)
    n = 32 if which == "proof32" else 8
    with pytest.raises(VerificationError):
        check_proof(proof, commitments, n, backend=mcl, ctx=other_context(**CONTEXT_CHANGES[field]))


def test_proof_without_the_context_in_the_transcript(mcl, proof32):
    proof, commitments = proof32
    with pytest.raises(VerificationError):
        verify(Transcript(RANGE_PROOF_DOMAIN), proof, commitments, n=32, backend=mcl)


def test_proof_under_another_domain_tag(mcl, proof32):
    proof, commitments = proof32
    t = Transcript(b"ZKMETER_RANGE_V2")
    t.append_message(b"chain-id", be32(CONTEXT.chain_id))
    t.append_message(b"contract", CONTEXT.contract)
    t.append_message(b"provider", CONTEXT.provider_id)
    t.append_u64(b"epoch", CONTEXT.epoch_id)
    with pytest.raises(VerificationError):
        verify(t, proof, commitments, n=32, backend=mcl)


def test_proof_made_under_a_different_context_is_rejected_here(mcl):
    proof, commitments = make_proof([77], 16, backend=mcl, ctx=other_context(epoch_id=8))
    check_proof(proof, commitments, 16, backend=mcl, ctx=other_context(epoch_id=8))
    with pytest.raises(VerificationError):
        check_proof(proof, commitments, 16, backend=mcl)


@pytest.mark.parametrize("n", [8, 16, 64])
def test_proof_verified_with_a_different_n(mcl, proof32, n):
    proof, commitments = proof32
    with pytest.raises(DecodeError):
        check_proof(proof, commitments, n, backend=mcl)


@pytest.mark.parametrize("n", [7, 0, 128, 33])
def test_proof_verified_with_an_undefined_n(mcl, proof32, n):
    proof, commitments = proof32
    with pytest.raises(ParameterError):
        check_proof(proof, commitments, n, backend=mcl)


def test_aggregated_proof_read_as_a_single_proof_of_twice_the_bits(mcl, proof8x2):
    """(n=8, m=2) and (n=16, m=1) proofs have the same length; n and m are in the transcript."""
    proof, commitments = proof8x2
    assert proof_size(8, 2) == proof_size(16, 1)
    for commitment in commitments:
        with pytest.raises(VerificationError):
            check_proof(proof, [commitment], 16, backend=mcl)


def test_single_proof_read_as_an_aggregated_proof_of_half_the_bits(mcl):
    proof, commitments = make_proof([300], 16, backend=mcl, seed=b"halves")
    with pytest.raises(VerificationError):
        check_proof(proof, [commitments[0], commit(1, 2, backend=mcl)], 8, backend=mcl)


# --- malformed proof encodings ----------------------------------------------------------

SCALAR_FIELDS = ["t_x", "t_x_blinding", "e_blinding", "a", "b"]


@pytest.mark.parametrize("field", SCALAR_FIELDS)
def test_non_canonical_scalar_plus_r_is_rejected(mcl, proof32, field):
    proof, commitments = proof32
    start, _ = layout(32, 1)[field]
    value = int.from_bytes(proof[start:start + 32], "big")
    assert value + R < 1 << 256
    with pytest.raises(DecodeError):
        check_proof(replace_field(proof, 32, 1, field, be32(value + R)), commitments, 32,
                    backend=mcl)


@pytest.mark.parametrize("field", SCALAR_FIELDS)
@pytest.mark.parametrize("value", [R, R + 1, (1 << 256) - 1], ids=["r", "r+1", "max"])
def test_scalar_at_or_above_r_is_rejected(mcl, proof32, field, value):
    proof, commitments = proof32
    with pytest.raises(DecodeError):
        check_proof(replace_field(proof, 32, 1, field, be32(value)), commitments, 32,
                    backend=mcl)


@pytest.mark.parametrize("field", SCALAR_FIELDS)
@pytest.mark.parametrize("delta", [1, R - 1], ids=["plus1", "minus1"])
def test_canonical_but_wrong_scalar_fails_verification(mcl, proof32, field, delta):
    proof, commitments = proof32
    start, _ = layout(32, 1)[field]
    value = (int.from_bytes(proof[start:start + 32], "big") + delta) % R
    with pytest.raises(VerificationError):
        check_proof(replace_field(proof, 32, 1, field, be32(value)), commitments, 32,
                    backend=mcl)


POINT_FIELDS_32 = ["A", "S", "T1", "T2", *(f"{s}{j}" for j in range(5) for s in "LR")]


@pytest.mark.parametrize("field", POINT_FIELDS_32)
@pytest.mark.parametrize(("x", "y"), [(0, 0), (1, 3), (1, 2 + P), (P, 2)],
                         ids=["identity", "off-curve", "y-plus-p", "x-is-p"])
def test_malformed_point_in_proof_is_rejected(mcl, proof32, field, x, y):
    proof, commitments = proof32
    with pytest.raises(DecodeError):
        check_proof(replace_field(proof, 32, 1, field, be32(x) + be32(y)), commitments, 32,
                    backend=mcl)


@pytest.mark.parametrize("field", POINT_FIELDS_32)
def test_point_in_proof_with_coordinate_plus_p_is_rejected(mcl, proof32, field):
    proof, commitments = proof32
    start, _ = layout(32, 1)[field]
    x = int.from_bytes(proof[start:start + 32], "big")
    y = int.from_bytes(proof[start + 32:start + 64], "big")
    for data in (be32(x + P) + be32(y), be32(x) + be32(y + P)):
        with pytest.raises(DecodeError):
            check_proof(replace_field(proof, 32, 1, field, data), commitments, 32, backend=mcl)


@pytest.mark.parametrize("field", POINT_FIELDS_32)
def test_valid_but_wrong_point_in_proof_fails_verification(mcl, proof32, field):
    proof, commitments = proof32
    start, _ = layout(32, 1)[field]
    x = int.from_bytes(proof[start:start + 32], "big")
    y = int.from_bytes(proof[start + 32:start + 64], "big")
    for data in (be32(x) + be32(P - y), be32(1) + be32(2)):  # -point, and G
        with pytest.raises(VerificationError):
            check_proof(replace_field(proof, 32, 1, field, data), commitments, 32, backend=mcl)


def test_fields_swapped_between_two_honest_proofs_fail(mcl, proof32):
    """Splicing two valid proofs of the same commitment yields no valid proof."""
    proof, commitments = proof32
    # A second proof of the same commitment: the blinding make_proof drew first, other
    # prover randomness.
    blinding = KeccakRng(b"proof32")()
    other, other_commitments = prove(CONTEXT.transcript(), values=[1_234_567_891],
                                     blindings=[blinding], n=32, backend=mcl,
                                     rng=KeccakRng(b"other randomness"))
    assert other_commitments == commitments
    check_proof(other, commitments, 32, backend=mcl)
    for field in ("A", "T1", "t_x", "L0", "R4", "a"):
        start, length = layout(32, 1)[field]
        spliced = proof[:start] + other[start:start + length] + proof[start + length:]
        with pytest.raises(VerificationError):
            check_proof(spliced, commitments, 32, backend=mcl)
    # Everything up to w from one proof, the inner-product argument from the other.
    cut = layout(32, 1)["L0"][0]
    with pytest.raises(VerificationError):
        check_proof(proof[:cut] + other[cut:], commitments, 32, backend=mcl)


@pytest.mark.parametrize("cut", [1, 32, 64, 500, 1056], ids=lambda c: f"minus{c}")
def test_truncated_proof_is_rejected(mcl, proof32, cut):
    proof, commitments = proof32
    with pytest.raises(DecodeError):
        check_proof(proof[:-cut], commitments, 32, backend=mcl)


def test_empty_proof_is_rejected(mcl, proof32):
    with pytest.raises(DecodeError):
        check_proof(b"", proof32[1], 32, backend=mcl)


@pytest.mark.parametrize("extra", [b"\x00", b"\x01", bytes(32), bytes(64), None],
                         ids=["zero", "one", "32zeros", "64zeros", "doubled"])
def test_extended_proof_is_rejected(mcl, proof32, extra):
    proof, commitments = proof32
    extended = proof + (proof if extra is None else extra)
    with pytest.raises(DecodeError):
        check_proof(extended, commitments, 32, backend=mcl)


def test_proof_with_a_prefix_byte_is_rejected(mcl, proof32):
    proof, commitments = proof32
    with pytest.raises(DecodeError):
        check_proof(b"\x01" + proof, commitments, 32, backend=mcl)


@pytest.mark.parametrize("version", [0, 2, 0x81, 0xFF])
def test_wrong_version_byte_is_rejected(mcl, proof32, version):
    proof, commitments = proof32
    with pytest.raises(DecodeError):
        check_proof(bytes([version]) + proof[1:], commitments, 32, backend=mcl)


@pytest.mark.parametrize("bad", [None, "00" * 1057, 12, [0] * 1057])
def test_non_bytes_proof_is_rejected(mcl, proof32, bad):
    with pytest.raises(DecodeError):
        check_proof(bad, proof32[1], 32, backend=mcl)


@pytest.mark.parametrize(("name", "data"), [
    ("identity", bytes(64)),
    ("off-curve", be32(1) + be32(3)),
    ("x-is-p", be32(P) + be32(2)),
    ("y-plus-p", be32(1) + be32(2 + P)),
    ("short", bytes(63)),
    ("long", be32(1) + be32(2) + b"\x00"),
    ("empty", b""),
], ids=lambda x: x if isinstance(x, str) else "")
def test_malformed_commitment_is_rejected(mcl, proof8x2, name, data):
    proof, commitments = proof8x2
    for index in range(2):
        altered = list(commitments)
        altered[index] = data
        with pytest.raises(DecodeError):
            check_proof(proof, altered, 8, backend=mcl)


def test_non_bytes_commitment_is_rejected(mcl, proof32):
    proof, (commitment,) = proof32
    with pytest.raises(DecodeError):
        check_proof(proof, [commitment.hex()], 32, backend=mcl)


def test_decoder_rejects_non_canonical_fields_directly(proof32):
    """RangeProof.from_bytes is the trust boundary on its own, not only through verify."""
    proof, _ = proof32
    decoded = RangeProof.from_bytes(proof, n=32, m=1)
    assert dataclasses.replace(decoded).to_bytes() == proof
    with pytest.raises(DecodeError):
        RangeProof.from_bytes(replace_field(proof, 32, 1, "a", be32(R)), n=32, m=1)
    with pytest.raises(DecodeError):
        RangeProof.from_bytes(replace_field(proof, 32, 1, "S", bytes(64)), n=32, m=1)
    with pytest.raises(DecodeError):
        RangeProof.from_bytes(proof, n=32, m=2)


def test_tampered_proofs_are_rejected_on_the_python_backend_too(pure, proof8x2):
    proof, commitments = proof8x2
    check_proof(proof, commitments, 8, backend=pure)
    for field in ("A", "t_x", "L3", "b"):
        start, _ = layout(8, 2)[field]
        tampered = bytearray(proof)
        tampered[start + 20] ^= 0x04
        with pytest.raises((DecodeError, VerificationError)):
            check_proof(bytes(tampered), commitments, 8, backend=pure)
    with pytest.raises(VerificationError):
        check_proof(proof, commitments[::-1], 8, backend=pure)
    with pytest.raises(VerificationError):
        check_proof(proof, commitments, 8, backend=pure, ctx=other_context(epoch_id=99))


def test_verifier_transcript_with_an_extra_message_rejects(mcl, proof32):
    proof, commitments = proof32
    t = CONTEXT.transcript()
    t.append_message(b"extra", b"")
    with pytest.raises(VerificationError):
        verify(t, proof, commitments, n=32, backend=mcl)


def test_verify_does_not_consume_the_callers_transcript(mcl, proof32):
    """verify works on a clone (issue 12): the caller's transcript is unchanged, so a second
    call gives the same answer, and a transcript the caller advanced still rejects."""
    proof, commitments = proof32
    t = CONTEXT.transcript()
    verify(t, proof, commitments, n=32, backend=mcl)
    verify(t, proof, commitments, n=32, backend=mcl)
    t.append_message(b"advanced", b"")
    with pytest.raises(VerificationError):
        verify(t, proof, commitments, n=32, backend=mcl)


@settings(max_examples=300, deadline=None)
@given(position=st.integers(min_value=0, max_value=proof_size(8, 2) - 1),
       mask=st.integers(min_value=1, max_value=255))
def test_property_any_single_byte_change_is_rejected(position, mask):
    mcl = get_backend("mcl")
    proof, commitments = make_proof([17, 200], 8, backend=mcl, seed=b"proof8x2")
    tampered = bytearray(proof)
    tampered[position] ^= mask
    with pytest.raises((DecodeError, VerificationError)):
        check_proof(bytes(tampered), commitments, 8, backend=mcl)


@settings(max_examples=100, deadline=None)
@given(field=st.sampled_from(SCALAR_FIELDS), data=st.binary(min_size=32, max_size=32))
def test_property_any_replaced_scalar_is_rejected(field, data):
    mcl = get_backend("mcl")
    proof, commitments = make_proof([17, 200], 8, backend=mcl, seed=b"proof8x2")
    start, _ = layout(8, 2)[field]
    if proof[start:start + 32] == data:
        return
    with pytest.raises((DecodeError, VerificationError)):
        check_proof(replace_field(proof, 8, 2, field, data), commitments, 8, backend=mcl)


@settings(max_examples=100, deadline=None)
@given(field=st.sampled_from(["A", "S", "T1", "T2", "L0", "R0", "L3", "R3"]),
       label=st.binary(min_size=1, max_size=8))
def test_property_any_replaced_curve_point_is_rejected(field, label):
    """Valid curve points (from the hash to curve), so the verification equation decides."""
    mcl = get_backend("mcl")
    proof, commitments = make_proof([17, 200], 8, backend=mcl, seed=b"proof8x2")
    point = point_to_bytes(hash_to_g1(b"tests.tamper." + label, 0))
    with pytest.raises(VerificationError):
        check_proof(replace_field(proof, 8, 2, field, point), commitments, 8, backend=mcl)


def test_verification_failures_are_opaque(mcl, proof32):
    """The t equation failing and the inner-product equation failing look the same."""
    proof, commitments = proof32
    messages = set()
    for field in ("t_x", "a"):
        start, _ = layout(32, 1)[field]
        value = (int.from_bytes(proof[start:start + 32], "big") + 1) % R
        with pytest.raises(VerificationError) as info:
            check_proof(replace_field(proof, 32, 1, field, be32(value)), commitments, 32,
                        backend=mcl)
        messages.add((str(info.value), info.value.args))
    with pytest.raises(VerificationError) as info:
        check_proof(proof, commitments, 32, backend=mcl, ctx=other_context(epoch_id=0))
    messages.add((str(info.value), info.value.args))
    assert len(messages) == 1


def test_alternative_encodings_of_a_commitment_are_rejected(mcl, proof32):
    proof, (commitment,) = proof32
    x = int.from_bytes(commitment[:32], "big")
    y = int.from_bytes(commitment[32:], "big")
    for data in ((x + P).to_bytes(32, "big") + commitment[32:],
                 commitment[:32] + (y + P).to_bytes(32, "big")):
        with pytest.raises(DecodeError):
            check_proof(proof, [data], 32, backend=mcl)
