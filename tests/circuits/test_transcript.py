"""The Fiat-Shamir transcript: re-derived from its documented definition, deterministic,
sensitive to every input, and bound to the whole application context."""

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import circuits.transcript as transcript_module
from circuits.constants import CURVE_ORDER, RANGE_PROOF_DOMAIN
from circuits.encoding import IDENTITY
from circuits.errors import DecodeError
from circuits.generators import hash_to_g1
from circuits.hashing import keccak256
from circuits.transcript import RangeProofContext, Transcript
from tests.circuits.conftest import CONTEXT
from tests.circuits.reference import ReferenceTranscript

R = CURVE_ORDER
DOMAIN = b"ZKMETER_TEST_V1_"


def run(ops, domain=DOMAIN):
    """Apply ("a", label, data) / ("c", label) ops; return the challenges and final state."""
    t = Transcript(domain)
    out = []
    for op in ops:
        if op[0] == "a":
            t.append_message(op[1], op[2])
        else:
            out.append(t.challenge_scalar(op[1]))
    return out, t.state


BASE_OPS = [("a", b"one", b"first"), ("a", b"two", b"second"), ("c", b"x"),
            ("a", b"three", b""), ("c", b"y")]


def test_matches_independent_reimplementation():
    ref = ReferenceTranscript(DOMAIN)
    challenges = []
    for op in BASE_OPS:
        if op[0] == "a":
            ref.append(op[1], op[2])
        else:
            challenges.append(ref.challenge(op[1]))
    assert run(BASE_OPS) == (challenges, ref.state)


def test_start_state_is_keccak_of_domain():
    assert Transcript(RANGE_PROOF_DOMAIN).state == keccak256(b"ZKMETER_RANGE_V1")


def test_is_deterministic():
    assert run(BASE_OPS) == run(BASE_OPS)


def mutations():
    yield "domain", BASE_OPS, b"ZKMETER_TEST_V2_"
    yield "label", [("a", b"onE", b"first"), *BASE_OPS[1:]], DOMAIN
    yield "data", [("a", b"one", b"firsT"), *BASE_OPS[1:]], DOMAIN
    yield "order", [BASE_OPS[1], BASE_OPS[0], *BASE_OPS[2:]], DOMAIN
    yield "challenge-label", [*BASE_OPS[:2], ("c", b"X"), *BASE_OPS[3:]], DOMAIN
    yield "extra-append", [*BASE_OPS[:2], ("a", b"z", b""), *BASE_OPS[2:]], DOMAIN
    yield "dropped-append", BASE_OPS[1:], DOMAIN
    yield "label-data-boundary", [("a", b"onef", b"irst"), *BASE_OPS[1:]], DOMAIN
    yield "data-shift", [("a", b"one", b"firsts"), ("a", b"two", b"econd"), *BASE_OPS[2:]], DOMAIN
    yield "empty-vs-zero", [("a", b"one", b"first\x00"), *BASE_OPS[1:]], DOMAIN


@pytest.mark.parametrize(("name", "ops", "domain"), list(mutations()),
                         ids=[m[0] for m in mutations()])
def test_any_change_changes_every_challenge(name, ops, domain):
    base_challenges, base_state = run(BASE_OPS)
    challenges, state = run(ops, domain)
    assert state != base_state
    # The first challenge after the change differs; so does every later one.
    assert challenges[-1] != base_challenges[-1]


def test_repeated_challenges_differ():
    t = Transcript(DOMAIN)
    a, b = t.challenge_scalar(b"c"), t.challenge_scalar(b"c")
    assert a != b


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.binary(min_size=1, max_size=20), st.binary(max_size=80)),
                max_size=5),
       st.binary(min_size=1, max_size=20))
def test_property_challenges_are_in_1_to_r(appends, label):
    t = Transcript(DOMAIN)
    for lab, data in appends:
        t.append_message(lab, data)
    c = t.challenge_scalar(label)
    assert 1 <= c < R


def test_a_zero_challenge_is_squeezed_again(monkeypatch):
    """If keccak mod r were 0, the transcript must hash again, not return 0."""
    real = transcript_module.keccak256
    calls = []

    def keccak_hitting_zero(*parts):
        calls.append(parts)
        if len(parts) > 1 and parts[1] == b"\x02" and len(calls) == 2:  # the first challenge hash
            return R.to_bytes(32, "big")  # int(state) mod r == 0
        return real(*parts)

    monkeypatch.setattr(transcript_module, "keccak256", keccak_hitting_zero)
    t = Transcript(DOMAIN)  # call 1
    c = t.challenge_scalar(b"c")  # call 2 -> zero, call 3 -> retry from state = r
    assert c != 0
    assert len(calls) == 3
    expected = real(R.to_bytes(32, "big"), b"\x02", b"\x01c")
    assert c == int.from_bytes(expected, "big") % R
    assert t.state == expected


def test_clone_is_independent():
    t = Transcript(DOMAIN)
    t.append_message(b"a", b"b")
    copy = t.clone()
    assert copy.state == t.state
    copy.append_message(b"c", b"d")
    assert copy.state != t.state
    assert t.challenge_scalar(b"x") != copy.challenge_scalar(b"x")


def test_typed_appends_are_fixed_width_messages():
    point = hash_to_g1(b"tests.transcript", 0)
    a, b = Transcript(DOMAIN), Transcript(DOMAIN)
    a.append_u32(b"n", 5)
    a.append_u64(b"e", 6)
    a.append_scalar(b"s", 7)
    a.append_point(b"P", point)
    b.append_message(b"n", (5).to_bytes(4, "big"))
    b.append_message(b"e", (6).to_bytes(8, "big"))
    b.append_message(b"s", (7).to_bytes(32, "big"))
    b.append_message(b"P", point.x.to_bytes(32, "big") + point.y.to_bytes(32, "big"))
    assert a.state == b.state


def test_append_point_refuses_identity():
    with pytest.raises(DecodeError):
        Transcript(DOMAIN).append_point(b"V", IDENTITY)


@pytest.mark.parametrize("value", [-1, R])
def test_append_scalar_refuses_non_canonical(value):
    with pytest.raises(ValueError):
        Transcript(DOMAIN).append_scalar(b"s", value)


@pytest.mark.parametrize("label", [b"", b"x" * 256])
def test_bad_label_lengths_are_refused(label):
    t = Transcript(DOMAIN)
    with pytest.raises(ValueError):
        t.append_message(label, b"")
    with pytest.raises(ValueError):
        t.challenge_scalar(label)


def test_label_of_255_bytes_is_accepted():
    t = Transcript(DOMAIN)
    t.append_message(b"x" * 255, b"")
    assert 1 <= t.challenge_scalar(b"y" * 255) < R


@pytest.mark.parametrize("domain", [b"", b"ZKMETER_RANGE_V", b"ZKMETER_RANGE_V1_"])
def test_domain_must_be_16_bytes(domain):
    with pytest.raises(ValueError):
        Transcript(domain)


# --- the range-proof context ---------------------------------------------------------------


def test_context_transcript_follows_the_documented_order():
    ref = ReferenceTranscript(b"ZKMETER_RANGE_V1")
    ref.append(b"chain-id", CONTEXT.chain_id.to_bytes(32, "big"))
    ref.append(b"contract", CONTEXT.contract)
    ref.append(b"provider", CONTEXT.provider_id)
    ref.append(b"epoch", CONTEXT.epoch_id.to_bytes(8, "big"))
    assert CONTEXT.transcript().state == ref.state


def test_context_transcripts_are_fresh_each_time():
    t1 = CONTEXT.transcript()
    t1.append_message(b"x", b"y")
    assert CONTEXT.transcript().state != t1.state
    assert CONTEXT.transcript().state == CONTEXT.transcript().state


SINGLE_FIELD_CHANGES = {
    "chain_id+1": {"chain_id": CONTEXT.chain_id + 1},
    "chain_id=0": {"chain_id": 0},
    "chain_id=2^64": {"chain_id": CONTEXT.chain_id + 2**64},  # beyond a u64
    "chain_id=2^255": {"chain_id": 2**255 + CONTEXT.chain_id},  # high bits of the u256
    "contract-last-byte": {"contract": CONTEXT.contract[:-1] + bytes([CONTEXT.contract[-1] ^ 1])},
    "contract-first-byte": {"contract": bytes([CONTEXT.contract[0] ^ 0x80]) + CONTEXT.contract[1:]},
    "provider-last-byte": {"provider_id": CONTEXT.provider_id[:-1]
                           + bytes([CONTEXT.provider_id[-1] ^ 1])},
    "provider-first-byte": {"provider_id": bytes([CONTEXT.provider_id[0] ^ 1])
                            + CONTEXT.provider_id[1:]},
    "epoch+1": {"epoch_id": CONTEXT.epoch_id + 1},
    "epoch-1": {"epoch_id": CONTEXT.epoch_id - 1},
    "epoch+2^32": {"epoch_id": CONTEXT.epoch_id + 2**32},  # beyond a u32
    "epoch=2^64-1": {"epoch_id": 2**64 - 1},
}


@pytest.mark.parametrize("change", list(SINGLE_FIELD_CHANGES), ids=list(SINGLE_FIELD_CHANGES))
def test_contexts_differing_in_one_field_give_different_states(change):
    other = dataclasses.replace(CONTEXT, **SINGLE_FIELD_CHANGES[change])
    assert other != CONTEXT
    assert other.transcript().state != CONTEXT.transcript().state
    assert (other.transcript().challenge_scalar(b"y")
            != CONTEXT.transcript().challenge_scalar(b"y"))


def test_contexts_with_swapped_fields_differ():
    # chain id and epoch with the same number, contract bytes moved into the provider id.
    a = RangeProofContext(chain_id=5, contract=b"\x01" * 20, provider_id=b"\x02" * 32, epoch_id=6)
    b = RangeProofContext(chain_id=6, contract=b"\x01" * 20, provider_id=b"\x02" * 32, epoch_id=5)
    assert a.transcript().state != b.transcript().state


@pytest.mark.parametrize("fields", [
    {"contract": b"\x11" * 19},
    {"contract": b"\x11" * 21},
    {"contract": b""},
    {"provider_id": b"\x22" * 31},
    {"provider_id": b"\x22" * 33},
    {"chain_id": -1},
    {"chain_id": 2**256},
    {"epoch_id": -1},
    {"epoch_id": 2**64},
], ids=lambda f: "-".join(f"{k}={v if isinstance(v, int) else len(v)}" for k, v in f.items()))
def test_context_rejects_bad_lengths_and_ranges(fields):
    with pytest.raises(ValueError):
        dataclasses.replace(CONTEXT, **fields)


@pytest.mark.parametrize("fields", [
    {"chain_id": 0}, {"chain_id": 2**256 - 1}, {"epoch_id": 0}, {"epoch_id": 2**64 - 1},
])
def test_context_accepts_boundary_values(fields):
    ctx = dataclasses.replace(CONTEXT, **fields)
    assert len(ctx.transcript().state) == 32


@pytest.mark.parametrize("fields", [{"contract": "5fbdb2315678afecb367"},
                                    {"provider_id": "p" * 32}], ids=["contract", "provider"])
def test_context_rejects_non_bytes_addresses(fields):
    with pytest.raises(ValueError):
        dataclasses.replace(CONTEXT, **fields)


def test_context_is_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        CONTEXT.epoch_id = 8  # type: ignore[misc]
