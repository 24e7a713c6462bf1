"""The public epoch bundle: layout, canonical bytes, JSON form, and every check on it.

A bundle is what the provider publishes when it closes an epoch, one per billing account
with usage (docs/epoch.md):

    version, chain id, contract, provider id, the account (operator, payer, asset), epoch id,
    window, rate-card hash, bit size n, leaves (tag, commitment, range proof) in tag order,
    total V, aggregate blinding R, Merkle root, and the provider's Ed25519 signature over the
    canonical bytes.

Canonical bytes (the signed message; never JSON text), version 2:

    "ZKMETER_BUNDLE_1" ‖ u8 2 ‖ u256 chain_id ‖ contract(20) ‖ provider_id(32)
    ‖ operator(20) ‖ payer(20) ‖ asset(20) ‖ account_id(32)
    ‖ u64 epoch_id ‖ u64 window_start ‖ u64 window_end ‖ rate_card_hash(32) ‖ u8 n
    ‖ u32 leaf_count ‖ per leaf: tag(32) ‖ C(64) ‖ keccak256(proof)(32)
    ‖ u256 V ‖ R(32) ‖ merkle_root(32)

``provider_id`` is the provider's Ed25519 public key (it verifies the signature); the account
id is derived from it and the account block (verifier/account.py) and is the subject of every
range proof (the transcript's provider slot), which is what the contract verifies a
challenged proof under. Version 1 (bundles of epochs closed before billing accounts) has no
account block and binds its proofs to the provider id; it still parses and verifies, but no
settlement contract of this version accepts it.

Signing keccak256(proof) instead of the proof keeps the message small and binds the same
bytes (keccak256 is collision resistant); the Merkle leaves hash the proofs the same way.
"""

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from circuits import merkle
from circuits.encoding import bytes_to_point, bytes_to_scalar, u32, u64, u256
from circuits.errors import CircuitsError
from circuits.hashing import keccak256
from circuits.pedersen import commit, sum_commitments
from circuits.rangeproof import Statement, batch_verify, check_parameters, proof_size
from circuits.transcript import RangeProofContext
from verifier.account import AccountBlock, AccountFormatError
from verifier.hexfields import from_hex, to_hex

BUNDLE_DOMAIN = b"ZKMETER_BUNDLE_1"
BUNDLE_VERSION = 2  # with an account block; version 1 (no account) still parses
LEGACY_BUNDLE_VERSION = 1
# What the settlement contract accepts (contracts/): BulletproofVerifier.sol checks proofs
# for n = 32, m = 1 only, and ZkMeterSettlement stores the epoch total V as a uint96. A bundle
# of another bit size could never survive an on-chain challenge of an honest leaf, so the
# prover refuses to make one and `zkmeter-verify bundle` fails it.
SETTLEMENT_BIT_SIZE = 32
SETTLEMENT_TOTAL_BITS = 96


class BundleFormatError(ValueError):
    """The bundle is not well-formed: bad JSON, missing or malformed fields, bad encodings."""


@dataclass(frozen=True, slots=True)
class Leaf:
    """One published leaf: a pseudonymous tag, a commitment and its range proof."""

    tag: bytes
    commitment: bytes
    proof: bytes

    def hash(self) -> bytes:
        """The Merkle leaf hash (circuits/merkle.py)."""
        return merkle.leaf_hash(self.tag, self.commitment, self.proof)


@dataclass(frozen=True, slots=True)
class Bundle:
    """A decoded epoch bundle (structure checked; cryptography not yet verified)."""

    chain_id: int
    contract: bytes
    provider_id: bytes
    epoch_id: int
    window_start: int
    window_end: int
    rate_card_hash: bytes
    bit_size: int
    leaves: tuple[Leaf, ...]
    total: int
    total_blinding: int
    merkle_root: bytes
    signature: bytes = field(default=b"")
    account: AccountBlock | None = None
    version: int = field(init=False, default=BUNDLE_VERSION)  # 2 with an account, else 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "version", LEGACY_BUNDLE_VERSION if self.account is None
                           else BUNDLE_VERSION)

    @property
    def account_id(self) -> bytes | None:
        """The billing account's on-chain id (None for a version-1 bundle)."""
        return None if self.account is None else self.account.account_id(self.provider_id)

    @property
    def subject(self) -> bytes:
        """The 32 bytes the proofs are bound to and the chain keys the epoch by: the account
        id (version 2) or the provider id (version 1)."""
        account_id = self.account_id
        return self.provider_id if account_id is None else account_id

    @property
    def context(self) -> RangeProofContext:
        """The range-proof context every leaf's proof is bound to."""
        return RangeProofContext(
            chain_id=self.chain_id, contract=self.contract,
            provider_id=self.subject, epoch_id=self.epoch_id,
        )

    def signed_bytes(self) -> bytes:
        """The canonical bytes the provider signs (module docstring)."""
        parts = [BUNDLE_DOMAIN, bytes([self.version]), u256(self.chain_id), self.contract,
                 self.provider_id]
        if self.account is not None:
            parts += [self.account.operator, self.account.payer, self.account.asset,
                      self.subject]
        parts += [
            u64(self.epoch_id), u64(self.window_start), u64(self.window_end),
            self.rate_card_hash, bytes([self.bit_size]), u32(len(self.leaves)),
        ]
        for leaf in self.leaves:
            parts += [leaf.tag, leaf.commitment, keccak256(leaf.proof)]
        parts += [u256(self.total), u256(self.total_blinding), self.merkle_root]
        return b"".join(parts)

    def to_json(self) -> dict[str, Any]:
        """The published JSON form (hex fields with 0x)."""
        out: dict[str, Any] = {
            "version": self.version,
            "chain_id": self.chain_id,
            "contract": to_hex(self.contract),
            "provider_id": to_hex(self.provider_id),
        }
        if self.account is not None:
            out["account"] = self.account.to_json(self.provider_id)
        return out | {
            "epoch_id": self.epoch_id,
            "window": {"start": self.window_start, "end": self.window_end},
            "rate_card_hash": to_hex(self.rate_card_hash),
            "bit_size": self.bit_size,
            "leaves": [
                {"tag": to_hex(x.tag), "commitment": to_hex(x.commitment),
                 "proof": to_hex(x.proof)}
                for x in self.leaves
            ],
            "total": {"value": self.total, "blinding": f"0x{self.total_blinding:064x}"},
            "merkle_root": to_hex(self.merkle_root),
            "signature": to_hex(self.signature),
        }

    def dumps(self) -> str:
        """The JSON text of the bundle."""
        return json.dumps(self.to_json(), indent=1) + "\n"


def _unhex(value: Any, name: str, length: int | None = None) -> bytes:
    return from_hex(value, name, length, BundleFormatError)


def _int(value: Any, name: str, bits: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << bits:
        raise BundleFormatError(f"{name}: expected an integer in [0, 2^{bits})")
    return value


def parse_bundle(text: str | bytes) -> Bundle:
    """Parse and structurally validate a bundle's JSON; raises BundleFormatError."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleFormatError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BundleFormatError("bundle must be a JSON object")
    try:
        return _from_json(data)
    except KeyError as exc:
        raise BundleFormatError(f"missing field {exc}") from None
    except (TypeError, AttributeError) as exc:
        raise BundleFormatError(f"malformed field: {exc}") from None


def _from_json(data: dict[str, Any]) -> Bundle:
    version = _int(data["version"], "version", 8)
    if version not in (LEGACY_BUNDLE_VERSION, BUNDLE_VERSION):
        raise BundleFormatError(f"unsupported bundle version {version}")
    provider_id = _unhex(data["provider_id"], "provider_id", 32)
    account = None
    if version == BUNDLE_VERSION:
        account = _account(data["account"], provider_id)
    elif "account" in data:
        raise BundleFormatError("a version-1 bundle has no account")
    bit_size = _int(data["bit_size"], "bit_size", 8)
    leaves_json = data["leaves"]
    if not isinstance(leaves_json, list) or not leaves_json:
        raise BundleFormatError("leaves: expected a non-empty list")
    try:
        check_parameters(bit_size, 1)
        size = proof_size(bit_size, 1)
    except CircuitsError as exc:
        raise BundleFormatError(f"bit_size: {exc}") from None
    leaves = []
    for i, item in enumerate(leaves_json):
        leaves.append(Leaf(
            tag=_unhex(item["tag"], f"leaves[{i}].tag", 32),
            commitment=_unhex(item["commitment"], f"leaves[{i}].commitment", 64),
            proof=_unhex(item["proof"], f"leaves[{i}].proof", size),
        ))
    total = data["total"]
    blinding = int.from_bytes(_unhex(total["blinding"], "total.blinding", 32), "big")
    window = data["window"]
    return Bundle(
        chain_id=_int(data["chain_id"], "chain_id", 256),
        contract=_unhex(data["contract"], "contract", 20),
        provider_id=provider_id,
        account=account,
        epoch_id=_int(data["epoch_id"], "epoch_id", 64),
        window_start=_int(window["start"], "window.start", 64),
        window_end=_int(window["end"], "window.end", 64),
        rate_card_hash=_unhex(data["rate_card_hash"], "rate_card_hash", 32),
        bit_size=bit_size,
        leaves=tuple(leaves),
        total=_int(total["value"], "total.value", 256),
        total_blinding=blinding,
        merkle_root=_unhex(data["merkle_root"], "merkle_root", 32),
        signature=_unhex(data["signature"], "signature", 64),
    )


def _account(data: Any, provider_id: bytes) -> AccountBlock:
    """The account block, with its derived ids (if given) checked against the recomputed."""
    try:
        block = AccountBlock.from_json(data)
        for name, derived in (("provider_id", block.provider_id(provider_id)),
                              ("account_id", block.account_id(provider_id))):
            if name in data and _unhex(data[name], f"account.{name}", 32) != derived:
                raise BundleFormatError(f"account.{name} is not the id derived from the "
                                        "operator, payer, asset and the provider key")
    except AccountFormatError as exc:
        raise BundleFormatError(str(exc)) from None
    return block


@dataclass(frozen=True, slots=True)
class Check:
    """The outcome of one named check. A check that could not run (its input was not given)
    is ``skipped``: never ok (``ok`` is False), and reported as "not checked", not as a
    failure."""

    name: str
    ok: bool
    detail: str
    failing_leaves: tuple[int, ...] = ()
    skipped: bool = False

    @classmethod
    def not_checked(cls, name: str, detail: str) -> "Check":
        """A check that did not run, and why."""
        return cls(name, False, detail, skipped=True)

    @property
    def status(self) -> str:
        """``ok``, ``failed`` or ``not_checked``."""
        return "not_checked" if self.skipped else "ok" if self.ok else "failed"

    def to_json(self) -> dict[str, Any]:
        """Stable JSON form for --json output (``ok`` is null for a check that did not run)."""
        out: dict[str, Any] = {"name": self.name, "ok": None if self.skipped else self.ok,
                               "status": self.status, "detail": self.detail}
        if self.failing_leaves:
            out["failing_leaves"] = list(self.failing_leaves)
        return out


def check_signature(bundle: Bundle, provider_key: bytes | None = None) -> Check:
    """The Ed25519 signature over the canonical bytes, by the bundle's provider id (or by
    ``provider_key`` if given, which must then equal the provider id)."""
    key = provider_key or bundle.provider_id
    if provider_key is not None and provider_key != bundle.provider_id:
        return Check("signature", False, "bundle's provider id is not the expected provider key")
    try:
        VerifyKey(key).verify(bundle.signed_bytes(), bundle.signature)
    except (BadSignatureError, ValueError):
        return Check("signature", False, "Ed25519 signature does not verify")
    if provider_key is None:
        return Check("signature", True, "Ed25519 signature verifies under the key inside the "
                                        "bundle (not pinned to a provider key given apart)")
    return Check("signature", True, "Ed25519 signature by the expected provider key verifies")


def check_structure(bundle: Bundle) -> Check:
    """Leaf count a power of two, tags unique and in ascending order, window ordered."""
    count = len(bundle.leaves)
    problems = []
    if count & (count - 1):
        problems.append(f"leaf count {count} is not a power of two")
    tags = [leaf.tag for leaf in bundle.leaves]
    bad = tuple(i for i in range(1, count) if tags[i] <= tags[i - 1])
    if bad:
        problems.append("tags are not strictly ascending (duplicated or reordered leaves)")
    if bundle.window_end <= bundle.window_start:
        problems.append("window end is not after its start")
    if bundle.bit_size != SETTLEMENT_BIT_SIZE:
        problems.append(f"bit size n = {bundle.bit_size} cannot settle: the on-chain verifier "
                        f"checks n = {SETTLEMENT_BIT_SIZE} only")
    if problems:
        return Check("structure", False, "; ".join(problems), bad)
    return Check("structure", True, f"{count} leaves, tags unique and ordered, "
                                    f"n = {bundle.bit_size}")


def check_encodings(bundle: Bundle) -> Check:
    """Every commitment decodes (on the curve, not the identity); R is a canonical scalar."""
    bad = []
    for i, leaf in enumerate(bundle.leaves):
        try:
            bytes_to_point(leaf.commitment)
        except CircuitsError:
            bad.append(i)
    problems = [f"{len(bad)} commitments do not decode"] if bad else []
    try:
        bytes_to_scalar(u256(bundle.total_blinding))
    except CircuitsError:
        problems.append("aggregate blinding R is not < r")
    if problems:
        return Check("encodings", False, "; ".join(problems), tuple(bad))
    return Check("encodings", True, "all commitments and scalars decode strictly")


def check_merkle_root(bundle: Bundle) -> Check:
    """The Merkle root over the leaves equals the published root."""
    try:
        got = merkle.root([leaf.hash() for leaf in bundle.leaves])
    except ValueError as exc:
        return Check("merkle_root", False, str(exc))
    if got != bundle.merkle_root:
        return Check("merkle_root", False, "recomputed root differs from the published root")
    return Check("merkle_root", True, "recomputed Merkle root matches")


def check_aggregate(bundle: Bundle) -> Check:
    """V*G + R*H equals the sum of the commitments, with V exactly the contract's uint96 (never
    reduced mod r: V + k*r would pass the point equation and be paid as another amount)."""
    if not 0 <= bundle.total < 1 << SETTLEMENT_TOTAL_BITS:
        return Check("aggregate", False, f"total V = {bundle.total} does not fit the "
                                         f"contract's uint{SETTLEMENT_TOTAL_BITS}")
    try:
        total = sum_commitments([leaf.commitment for leaf in bundle.leaves])
        expected = commit(bundle.total, bundle.total_blinding)
    except CircuitsError as exc:
        return Check("aggregate", False, f"cannot compute: {exc}")
    if total != expected:
        return Check("aggregate", False, "V*G + R*H differs from the sum of the commitments")
    return Check("aggregate", True, f"V*G + R*H equals the sum of the commitments (V = "
                                    f"{bundle.total})")


def failing_proofs(
    ctx: RangeProofContext,
    n: int,
    leaves: Sequence[tuple[bytes, bytes]],
    progress: Callable[[int], None] | None = None,
    chunk: int = 256,
) -> list[int]:
    """Indices of the (proof, commitment) pairs whose range proof fails in ``ctx``: batch-
    verified in chunks, a failing chunk bisected down to the bad leaves, so one bad proof
    among many costs about 2*log2(chunk) more batches. A malformed proof counts as failing."""
    statements = [Statement(ctx.transcript(), proof, [commitment], n)
                  for proof, commitment in leaves]
    bad: list[int] = []

    def bisect(lo: int, hi: int) -> None:
        try:
            batch_verify(statements[lo:hi])
        except CircuitsError:
            if hi - lo == 1:
                bad.append(lo)
            else:
                mid = (lo + hi) // 2
                bisect(lo, mid)
                bisect(mid, hi)

    count = len(statements)
    for start in range(0, count, chunk):
        bisect(start, min(start + chunk, count))
        if progress is not None:
            progress(min(chunk, count - start))
    return sorted(bad)


def check_range_proofs(
    bundle: Bundle, progress: Callable[[int], None] | None = None, chunk: int = 256
) -> Check:
    """Every range proof, batch-verified in chunks (:func:`failing_proofs`)."""
    n = bundle.bit_size
    count = len(bundle.leaves)
    bad = failing_proofs(bundle.context, n,
                         [(leaf.proof, leaf.commitment) for leaf in bundle.leaves],
                         progress, chunk)
    if bad:
        return Check("range_proofs", False, f"{len(bad)} of {count} range proofs fail",
                     tuple(bad))
    return Check("range_proofs", True, f"all {count} range proofs verify (n = {n})")


def verify_bundle(
    bundle: Bundle,
    *,
    provider_key: bytes | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[Check]:
    """Run every check on its own, so one failure never hides another."""
    return [
        check_structure(bundle),
        check_encodings(bundle),
        check_signature(bundle, provider_key),
        check_merkle_root(bundle),
        check_aggregate(bundle),
        check_range_proofs(bundle, progress),
    ]


def sign_bundle(bundle: Bundle, sign: Callable[[bytes], bytes]) -> Bundle:
    """A copy of ``bundle`` with the signature ``sign(canonical bytes)``."""
    return replace(bundle, signature=sign(bundle.signed_bytes()))


def leaves_in_tag_order(leaves: Sequence[Leaf]) -> tuple[Leaf, ...]:
    """Leaves sorted by tag, the published order."""
    return tuple(sorted(leaves, key=lambda leaf: leaf.tag))
