"""The golden vectors (circuits/vectors/golden_v1.json) that the Solidity tests will read:
regenerated bit for bit on every backend, and checked from the JSON alone against the
reference implementations."""

import json

import pytest

from circuits.constants import CURVE_ORDER, FIELD_MODULUS
from circuits.errors import VerificationError
from circuits.pedersen import commit
from circuits.rangeproof import verify
from circuits.transcript import RangeProofContext
from circuits.vectors import VECTORS_PATH, build, render
from tests.circuits.reference import (
    ReferenceTranscript,
    naive_verify,
    parse_proof,
    reference_hash_to_g1,
    replay,
)


@pytest.fixture(scope="module")
def golden():
    return json.loads(VECTORS_PATH.read_text())


def unhex(text: str) -> bytes:
    assert text.startswith("0x")
    return bytes.fromhex(text[2:])


def context_of(golden) -> RangeProofContext:
    ctx = golden["context"]
    return RangeProofContext(chain_id=ctx["chain_id"], contract=unhex(ctx["contract"]),
                             provider_id=unhex(ctx["provider_id"]), epoch_id=ctx["epoch_id"])


@pytest.mark.parametrize("backend_name", ["mcl", "pure"])
def test_regenerating_the_vectors_gives_the_committed_file(request, backend_name):
    be = request.getfixturevalue(backend_name)
    assert render(build(be)) == VECTORS_PATH.read_text()


def test_curve_constants(golden):
    assert int(golden["curve"]["p"], 16) == FIELD_MODULUS
    assert int(golden["curve"]["r"], 16) == CURVE_ORDER
    assert golden["hash_to_curve_domain"] == "ZKMETER_H2G1_V1_"
    assert golden["proof_format_version"] == 1


def test_generators_match_the_reference_hash_to_curve(golden):
    gens = golden["generators"]

    def enc(point):
        return "0x" + point.x.to_bytes(32, "big").hex() + point.y.to_bytes(32, "big").hex()

    assert gens["G"] == "0x" + (1).to_bytes(32, "big").hex() + (2).to_bytes(32, "big").hex()
    assert gens["H"] == enc(reference_hash_to_g1(b"pedersen.H", 0))
    assert gens["U"] == enc(reference_hash_to_g1(b"bulletproofs.U", 0))
    assert gens["G_i"] == [enc(reference_hash_to_g1(b"bulletproofs.G", i))
                           for i in range(len(gens["G_i"]))]
    assert gens["H_i"] == [enc(reference_hash_to_g1(b"bulletproofs.H", i))
                           for i in range(len(gens["H_i"]))]
    assert len(gens["G_i"]) >= 64


def test_transcript_states_match_the_reference(golden):
    t = ReferenceTranscript(b"ZKMETER_RANGE_V1")
    start, append, challenge = golden["transcript"]
    assert unhex(start["state"]) == t.state
    t.append(b"label", b"data")
    assert unhex(append["state"]) == t.state
    c = t.challenge(b"c")
    assert unhex(challenge["state"]) == t.state
    assert int(challenge["challenge"], 16) == c


def test_context_state_matches_the_reference(golden):
    ctx = context_of(golden)
    t = ReferenceTranscript(b"ZKMETER_RANGE_V1")
    t.append(b"chain-id", ctx.chain_id.to_bytes(32, "big"))
    t.append(b"contract", ctx.contract)
    t.append(b"provider", ctx.provider_id)
    t.append(b"epoch", ctx.epoch_id.to_bytes(8, "big"))
    assert unhex(golden["context"]["transcript_state"]) == t.state
    assert ctx.transcript().state == t.state


def test_vector_set_covers_edges_and_aggregation(golden):
    shapes = {(case["n"], case["m"]) for case in golden["proofs"]}
    assert {(8, 1), (32, 1), (64, 1)} <= shapes
    assert any(m > 1 for _, m in shapes)
    values = {v for case in golden["proofs"] for v in case["values"]}
    assert {0, 2**32 - 1, 2**64 - 1} <= values


def test_every_golden_proof_verifies_from_the_json_alone(golden, mcl):
    ctx = context_of(golden)
    for case in golden["proofs"]:
        commitments = [unhex(c) for c in case["commitments"]]
        verify(ctx.transcript(), unhex(case["proof"]), commitments, n=case["n"], backend=mcl)


def test_every_golden_commitment_opens_to_its_value(golden, mcl):
    for case in golden["proofs"]:
        for v, gamma, c in zip(case["values"], case["blindings"], case["commitments"],
                               strict=True):
            assert commit(v, int(gamma, 16), backend=mcl) == unhex(c)


def test_every_tampered_golden_proof_is_rejected(golden, mcl):
    ctx = context_of(golden)
    for case in golden["proofs"]:
        commitments = [unhex(c) for c in case["commitments"]]
        with pytest.raises(VerificationError):
            verify(ctx.transcript(), unhex(case["tampered_proof_t_x_plus_1"]), commitments,
                   n=case["n"], backend=mcl)


def test_golden_challenges_match_the_reference_replay(golden):
    ctx = context_of(golden)
    for case in golden["proofs"]:
        n, m = case["n"], case["m"]
        parsed = parse_proof(unhex(case["proof"]), (n * m).bit_length() - 1)
        ch = replay(parsed, [unhex(c) for c in case["commitments"]], n, ctx)
        want = case["challenges"]
        assert (ch.y, ch.z, ch.x, ch.w) == tuple(int(want[k], 16) for k in "yzxw")
        assert ch.us == [int(u, 16) for u in want["u"]]


def test_golden_proofs_pass_the_naive_verifier(golden, mcl):
    ctx = context_of(golden)
    for case in golden["proofs"]:
        if case["n"] * case["m"] > 64:
            continue
        commitments = [unhex(c) for c in case["commitments"]]
        assert naive_verify(mcl, unhex(case["proof"]), commitments, case["n"], ctx)
        assert not naive_verify(mcl, unhex(case["tampered_proof_t_x_plus_1"]), commitments,
                                case["n"], ctx)
