"""Deterministic per-epoch secrets, derived from the provider's master secret.

Everything an epoch close computes is a function of the master secret, the epoch context and
the snapshot of totals, so a close that crashed can be redone and yields byte-identical
output. Derivations (keccak256 is a PRF when keyed by prefix; it has no length extension):

    ctx       = u256 chain_id ‖ contract(20) ‖ provider_id(32) ‖ u64 epoch_id
    user tag  = keccak256("ZKMETER_TAG_V1__" ‖ secret ‖ ctx ‖ u32 len(user) ‖ user)
    pad tag   = keccak256("ZKMETER_PADTAG_1" ‖ secret ‖ ctx ‖ u32 index)
    blinding  = wide(keccak256("ZKMETER_BLIND_V2" ‖ secret ‖ ctx ‖ tag ‖ u64 value ‖ i)) mod r,
                i = 0, 1
    proof rng = wide(keccak256("ZKMETER_PRNG_V2_" ‖ seed ‖ u32 counter ‖ i)) mod r, where
                seed = keccak256("ZKMETER_PRNG_V2_" ‖ secret ‖ ctx ‖ tag ‖ u64 value ‖ blinding
                                 ‖ u32 n ‖ u32 m ‖ V_0 ‖ ... ‖ V_(m-1))

``wide(...)`` joins two 32-byte outputs (i = 0, 1) into 512 bits before reducing mod r, so the
result is uniform up to 2^-250. Tags of different epochs are unlinkable without the secret;
blindings are never reused across epochs, contracts or chains.

The blinding depends on the value (v2): if one context were ever closed twice with other
totals (a database restored from a backup restarting epoch ids under the same key and
contract), the two commitments of a leaf would differ by (v' - v) G + (r' - r) H with r' - r
uniform, not by the (v' - v) G that would give the difference of usage away. The proof
randomness depends on the whole statement (the context, n, m and every commitment V) and on
the witness, like RFC 6979's nonces on the message: no two different statements or witnesses
ever share a nonce.
"""

from collections.abc import Iterator, Sequence

from nacl.signing import SigningKey

from circuits.constants import CURVE_ORDER
from circuits.encoding import u32, u64, u256
from circuits.hashing import keccak256
from circuits.transcript import RangeProofContext

TAG_DOMAIN = b"ZKMETER_TAG_V1__"
PAD_TAG_DOMAIN = b"ZKMETER_PADTAG_1"
BLIND_DOMAIN = b"ZKMETER_BLIND_V2"
PROOF_RNG_DOMAIN = b"ZKMETER_PRNG_V2_"
MIN_SECRET_BYTES = 32
MASTER_SECRET_LABEL = b"ZKMETER_MASTER_1"


def master_secret(signing_key: SigningKey) -> bytes:
    """The epoch master secret, derived from the provider's Ed25519 seed (domain-separated,
    so the one root secret the operator keeps yields independent keys)."""
    return keccak256(MASTER_SECRET_LABEL, bytes(signing_key))


def _check_secret(secret: bytes) -> None:
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"the master secret must be at least {MIN_SECRET_BYTES} bytes")


def context_bytes(ctx: RangeProofContext) -> bytes:
    """The epoch context as bytes (module docstring)."""
    return u256(ctx.chain_id) + ctx.contract + ctx.provider_id + u64(ctx.epoch_id)


def _wide(*parts: bytes) -> int:
    """A scalar in [1, r) from 512 bits of keccak output."""
    value = int.from_bytes(keccak256(*parts, b"\x00") + keccak256(*parts, b"\x01"), "big")
    return value % (CURVE_ORDER - 1) + 1


def user_tag(secret: bytes, ctx: RangeProofContext, user_id: str) -> bytes:
    """The user's pseudonymous leaf tag for this epoch."""
    _check_secret(secret)
    user = user_id.encode()
    return keccak256(TAG_DOMAIN, secret, context_bytes(ctx), u32(len(user)), user)


def padding_tag(secret: bytes, ctx: RangeProofContext, index: int) -> bytes:
    """The tag of padding leaf number ``index``; indistinguishable from a user's tag."""
    _check_secret(secret)
    return keccak256(PAD_TAG_DOMAIN, secret, context_bytes(ctx), u32(index))


def blinding(secret: bytes, ctx: RangeProofContext, tag: bytes, value: int) -> int:
    """The Pedersen blinding factor of a leaf committing to ``value``, in [1, r)."""
    _check_secret(secret)
    return _wide(BLIND_DOMAIN, secret, context_bytes(ctx), tag, u64(value))


def proof_seed(secret: bytes, ctx: RangeProofContext, tag: bytes, value: int, blind: int, *,
               n: int, commitments: Sequence[bytes]) -> bytes:
    """The seed of a leaf's proof randomness (sent to proof workers instead of the secret),
    bound to the whole statement: context, n, m = len(commitments) and every commitment."""
    _check_secret(secret)
    if not commitments or any(len(c) != 64 for c in commitments):
        raise ValueError("the statement's commitments are 64-byte points")
    return keccak256(PROOF_RNG_DOMAIN, secret, context_bytes(ctx), tag, u64(value),
                     blind.to_bytes(32, "big"), u32(n), u32(len(commitments)), *commitments)


def proof_rng(seed: bytes) -> Iterator[int]:
    """The stream of proof scalars in [1, r) for one leaf."""
    counter = 0
    while True:
        yield _wide(PROOF_RNG_DOMAIN, seed, u32(counter))
        counter += 1
