"""Read-only access to the settlement contracts: artifacts, epoch records, deployed code.

The verifier trusts nobody, so it needs only three things from a chain:

* the compiled artifacts (ABI + bytecode) committed in ``contracts/artifacts/`` (loaded by
  path: ``$ZKMETER_CONTRACT_ARTIFACTS`` if set, else ``<repo>/contracts/artifacts``, else the
  wheel's copy in ``verifier/contracts``);
* a check that the code deployed at an address is exactly the artifact's runtime code (the
  immutable slots, whose positions the artifact lists, are compared after masking and then
  checked separately by the caller, e.g. the settlement's verifier address);
* the on-chain records of providers, billing accounts, epochs and data demands
  (:func:`read_provider`, :func:`read_account`, :func:`read_epoch`, :func:`read_demand`), to
  compare with a published bundle (:func:`check_bundle_against_chain`), and the ids the
  contract derives (:func:`provider_id_of`, :func:`account_id_of`).

Chains: ``connect(None)`` is the embedded py-evm chain (web3's ``EthereumTesterProvider``, in
process, empty at start: only useful together with the writer in ``prover/chain.py``); any
other value is an HTTP(S) JSON-RPC URL.
"""

import enum
import json
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from web3 import Web3

from circuits.hashing import keccak256
from verifier.bundle import Bundle, Check

ARTIFACTS_ENV = "ZKMETER_CONTRACT_ARTIFACTS"
SETTLEMENT = "ZkMeterSettlement"
VERIFIER = "BulletproofVerifier"


class ChainError(RuntimeError):
    """A chain could not be reached or answered something unusable."""


class EpochStatus(enum.IntEnum):
    """``IZkMeterSettlement.EpochStatus``."""

    NONE = 0
    PENDING = 1
    FINALIZED = 2
    REJECTED = 3
    EXPIRED = 4


class DemandStatus(enum.IntEnum):
    """``IZkMeterSettlement.DemandStatus``."""

    NONE = 0
    OPEN = 1
    ANSWERED = 2
    RESOLVED = 3
    REFUNDED = 4


ETH = "0x" + "00" * 20
"""The asset address of an ETH billing account."""


def provider_id_of(operator: str, signing_key: bytes) -> bytes:
    """``keccak256(abi.encode(operator, signingKey))``: the on-chain provider id."""
    return keccak256(bytes(12) + _address_bytes(operator) + _bytes32(signing_key, "signing key"))


def account_id_of(provider_id: bytes, payer: str, asset: str = ETH) -> bytes:
    """``keccak256(abi.encode(providerId, payer, asset))``: a billing account's id, the
    subject every range proof of the account's epochs is bound to."""
    return keccak256(_bytes32(provider_id, "provider id") + bytes(12) + _address_bytes(payer)
                     + bytes(12) + _address_bytes(asset))


def _address_bytes(address: str) -> bytes:
    text = address.removeprefix("0x")
    if len(text) != 40:
        raise ValueError(f"not a 20-byte address: {address!r}")
    return bytes.fromhex(text)


def _bytes32(value: bytes, what: str) -> bytes:
    if type(value) is not bytes or len(value) != 32:
        raise ValueError(f"{what} must be 32 bytes")
    return value


def bundle_subject(bundle: Bundle) -> bytes:
    """The 32-byte subject a bundle's proofs are bound to and the chain keys its epoch by: the
    billing account id when the bundle names its account, else (version-1 bundles) its
    provider id."""
    return bundle.subject


@dataclass(frozen=True, slots=True)
class Artifact:
    """A compiled contract: ABI, creation code, runtime code and immutable slots."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: bytes
    deployed_bytecode: bytes
    immutable_ranges: tuple[tuple[int, int], ...]  # (start, length) in the runtime code
    compiler: str


@dataclass(frozen=True, slots=True)
class Params:
    """``IZkMeterSettlement.Params``: the protocol parameters fixed at deployment."""

    min_challenge_window: int
    response_window: int
    withdrawal_notice: int
    bond_cooldown: int
    epoch_expiry: int
    min_bond: int
    demand_bond: int

    def to_json(self) -> dict[str, Any]:
        """Stable JSON form."""
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(frozen=True, slots=True)
class ProviderRecord:
    """``IZkMeterSettlement.Provider``: a registered provider."""

    provider_id: bytes
    operator: str
    challenge_window: int
    generation: int
    pending_epochs: int
    pending_operator: str
    unbond_at: int
    bond: int
    locked_bond: int
    unit_price: int
    signing_key: bytes

    @property
    def registered(self) -> bool:
        """Whether this provider id was registered."""
        return int(self.operator, 16) != 0

    def to_json(self) -> dict[str, Any]:
        """Stable JSON form."""
        return {
            "provider_id": "0x" + self.provider_id.hex(), "registered": self.registered,
            "operator": self.operator, "signing_key": "0x" + self.signing_key.hex(),
            "challenge_window": self.challenge_window, "generation": self.generation,
            "pending_epochs": self.pending_epochs, "pending_operator": self.pending_operator,
            "unbond_at": self.unbond_at, "bond": self.bond, "locked_bond": self.locked_bond,
            "unit_price": self.unit_price,
        }


@dataclass(frozen=True, slots=True)
class AccountRecord:
    """``IZkMeterSettlement.Account``: a billing account (provider, payer, asset)."""

    account_id: bytes
    provider_id: bytes
    payer: str
    last_epoch_id: int
    asset: str
    withdrawal_at: int
    unit_price: int
    escrow: int
    reserved: int
    withdrawal_amount: int

    @property
    def opened(self) -> bool:
        """Whether the account exists."""
        return int(self.payer, 16) != 0

    @property
    def available(self) -> int:
        """Escrow neither reserved by pending epochs nor asked back: what new usage may
        still be billed against (in the asset's smallest unit)."""
        return max(0, self.escrow - self.reserved - self.withdrawal_amount)

    def to_json(self) -> dict[str, Any]:
        """Stable JSON form."""
        return {
            "account_id": "0x" + self.account_id.hex(), "opened": self.opened,
            "provider_id": "0x" + self.provider_id.hex(), "payer": self.payer,
            "asset": self.asset, "unit_price": self.unit_price, "escrow": self.escrow,
            "reserved": self.reserved, "available": self.available,
            "withdrawal_amount": self.withdrawal_amount, "withdrawal_at": self.withdrawal_at,
            "last_epoch_id": self.last_epoch_id,
        }


@dataclass(frozen=True, slots=True)
class EpochRecord:
    """``IZkMeterSettlement.Epoch``: what the contract stored for one epoch of an account
    (a Pending epoch voided by a slash reads as REJECTED)."""

    account_id: bytes
    epoch_id: int
    merkle_root: bytes
    total: int
    ready_at: int
    prev_epoch_id: int
    generation: int
    open_demands: int
    depth: int
    status: EpochStatus

    @property
    def leaf_count(self) -> int:
        """The number of leaves (2^depth)."""
        return 1 << self.depth

    def to_json(self) -> dict[str, Any]:
        """Stable JSON form."""
        return {
            "account_id": "0x" + self.account_id.hex(),
            "epoch_id": self.epoch_id,
            "merkle_root": "0x" + self.merkle_root.hex(),
            "total": self.total,
            "ready_at": self.ready_at,
            "prev_epoch_id": self.prev_epoch_id,
            "open_demands": self.open_demands,
            "leaf_count": self.leaf_count,
            "status": self.status.name.lower(),
        }


@dataclass(frozen=True, slots=True)
class DemandRecord:
    """``IZkMeterSettlement.Demand``: a data-availability demand on one leaf."""

    demander: str
    deadline: int
    status: DemandStatus


def artifacts_dir() -> Path:
    """Where the artifacts are read from: ``$ZKMETER_CONTRACT_ARTIFACTS`` if set, else the
    source checkout's ``contracts/artifacts``, else the copy an installed wheel carries
    (``verifier/contracts``), so library users of a wheel need no setting."""
    override = os.environ.get(ARTIFACTS_ENV)
    if override:
        return Path(override)
    checkout = Path(__file__).resolve().parents[1] / "contracts" / "artifacts"
    if checkout.is_dir():
        return checkout
    return Path(__file__).resolve().parent / "contracts"


@cache
def load_artifact(name: str) -> Artifact:
    """The committed artifact ``contracts/artifacts/<name>.json``."""
    path = artifacts_dir() / f"{name}.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ChainError(f"cannot read contract artifact {path}: {exc}") from exc
    ranges = tuple(
        (int(ref["start"]), int(ref["length"]))
        for refs in data.get("immutableReferences", {}).values()
        for ref in refs
    )
    return Artifact(
        name=data["contractName"],
        abi=data["abi"],
        bytecode=bytes.fromhex(data["bytecode"].removeprefix("0x")),
        deployed_bytecode=bytes.fromhex(data["deployedBytecode"].removeprefix("0x")),
        immutable_ranges=ranges,
        compiler=data["compiler"]["version"],
    )


def connect(url: str | None = None) -> Web3:
    """A Web3 for ``url`` (HTTP(S) JSON-RPC), or the embedded py-evm chain."""
    if url is None:
        from web3 import EthereumTesterProvider  # eth-tester is only needed for this

        return Web3(EthereumTesterProvider())
    if not url.startswith(("http://", "https://")):
        raise ChainError(f"unsupported RPC URL {url!r}: use http:// or https://")
    return Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 60}))


def settlement(w3: Web3, address: str) -> Any:
    """A web3 contract object for the settlement at ``address``."""
    return w3.eth.contract(
        address=Web3.to_checksum_address(address), abi=load_artifact(SETTLEMENT).abi
    )


def _mask(code: bytes, ranges: tuple[tuple[int, int], ...]) -> bytes:
    out = bytearray(code)
    for start, length in ranges:
        out[start : start + length] = bytes(length)
    return bytes(out)


def code_matches(w3: Web3, address: str, name: str) -> bool:
    """True iff the runtime code at ``address`` is the artifact's, immutables aside."""
    artifact = load_artifact(name)
    code = bytes(w3.eth.get_code(Web3.to_checksum_address(address)))
    if len(code) != len(artifact.deployed_bytecode):
        return False
    ranges = artifact.immutable_ranges
    return _mask(code, ranges) == _mask(artifact.deployed_bytecode, ranges)


def check_deployment(w3: Web3, address: str) -> Check:
    """The settlement at ``address`` runs the committed code and calls a verifier that runs
    the committed code too."""
    if not code_matches(w3, address, SETTLEMENT):
        return Check("contract_code", False, f"code at {address} is not ZkMeterSettlement")
    verifier_address = settlement(w3, address).functions.verifier().call()
    if not code_matches(w3, verifier_address, VERIFIER):
        return Check(
            "contract_code", False, f"verifier at {verifier_address} is not BulletproofVerifier"
        )
    return Check(
        "contract_code",
        True,
        f"settlement and verifier ({verifier_address}) match the committed artifacts",
    )


def read_params(w3: Web3, address: str) -> Params:
    """The protocol parameters of the settlement at ``address``."""
    return Params(*settlement(w3, address).functions.params().call())


def read_provider(w3: Web3, address: str, provider_id: bytes) -> ProviderRecord:
    """The provider record (all zero if never registered)."""
    (operator, window, generation, pending, pending_operator, unbond_at, bond, locked,
     price, key) = settlement(w3, address).functions.getProvider(provider_id).call()
    return ProviderRecord(provider_id, operator, window, generation, pending, pending_operator,
                          unbond_at, bond, locked, price, bytes(key))


def read_account(w3: Web3, address: str, account_id: bytes) -> AccountRecord:
    """The billing account record (all zero if never opened)."""
    raw = settlement(w3, address).functions.getAccount(account_id).call()
    return AccountRecord(account_id, bytes(raw[0]), *raw[1:])


def read_epoch(w3: Web3, address: str, account_id: bytes, epoch_id: int) -> EpochRecord:
    """The epoch record of an account (status NONE if never submitted)."""
    (root, total, ready_at, prev, generation, demands, depth,
     status) = settlement(w3, address).functions.getEpoch(account_id, epoch_id).call()
    return EpochRecord(account_id, epoch_id, bytes(root), total, ready_at, prev, generation,
                       demands, depth, EpochStatus(status))


def read_demand(w3: Web3, address: str, account_id: bytes, epoch_id: int,
                leaf_index: int) -> DemandRecord:
    """The data demand on one leaf (status NONE if none)."""
    demander, deadline, status = settlement(w3, address).functions.getDemand(
        account_id, epoch_id, leaf_index).call()
    return DemandRecord(demander, deadline, DemandStatus(status))


def check_bundle_against_chain(bundle: Bundle, record: EpochRecord) -> list[Check]:
    """The bundle's Merkle root, total and leaf count against the on-chain record."""
    if record.status is EpochStatus.NONE:
        return [Check("chain_record", False, "no such epoch on chain")]
    checks = [
        Check("chain_root", record.merkle_root == bundle.merkle_root,
              "on-chain Merkle root " + ("matches" if record.merkle_root == bundle.merkle_root
                                         else "differs from the bundle's")),
        Check("chain_total", record.total == bundle.total,
              f"on-chain total {record.total}, bundle total {bundle.total}"),
        Check("chain_leaf_count", record.leaf_count == len(bundle.leaves),
              f"on-chain {record.leaf_count} leaves, bundle {len(bundle.leaves)}"),
        Check("chain_status", record.status not in (EpochStatus.REJECTED, EpochStatus.EXPIRED),
              f"epoch is {record.status.name.lower()}"),
    ]
    return checks


__all__ = [
    "ETH",
    "AccountRecord",
    "Artifact",
    "ChainError",
    "DemandRecord",
    "DemandStatus",
    "EpochRecord",
    "EpochStatus",
    "Params",
    "ProviderRecord",
    "account_id_of",
    "artifacts_dir",
    "bundle_subject",
    "check_bundle_against_chain",
    "check_deployment",
    "code_matches",
    "connect",
    "load_artifact",
    "provider_id_of",
    "read_account",
    "read_demand",
    "read_epoch",
    "read_params",
    "read_provider",
    "settlement",
]
