"""Read-only access to the settlement contracts: artifacts, epoch records, deployed code.

The verifier trusts nobody, so it needs only three things from a chain:

* the compiled artifacts (ABI + bytecode) committed in ``contracts/artifacts/`` (loaded by
  path: ``$ZKMETER_CONTRACT_ARTIFACTS`` if set, else ``<repo>/contracts/artifacts``);
* a check that the code deployed at an address is exactly the artifact's runtime code (the
  immutable slots, whose positions the artifact lists, are compared after masking and then
  checked separately by the caller, e.g. the settlement's verifier address);
* the on-chain records of providers and epochs (:func:`read_provider`, :func:`read_epoch`),
  to compare with a published bundle (:func:`check_bundle_against_chain`).

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
class ProviderRecord:
    """``IZkMeterSettlement.Provider``: a registered provider."""

    provider_id: bytes
    operator: str
    last_epoch_id: int
    challenge_window: int
    has_epoch: bool
    bond: int
    unit_price: int
    escrow: int
    earnings: int

    @property
    def registered(self) -> bool:
        """Whether anyone registered this provider id."""
        return int(self.operator, 16) != 0


@dataclass(frozen=True, slots=True)
class EpochRecord:
    """``IZkMeterSettlement.Epoch``: what the contract stored for one epoch."""

    provider_id: bytes
    epoch_id: int
    merkle_root: bytes
    total: int
    ready_at: int
    depth: int
    status: EpochStatus

    @property
    def leaf_count(self) -> int:
        """The number of leaves (2^depth)."""
        return 1 << self.depth

    def to_json(self) -> dict[str, Any]:
        """Stable JSON form."""
        return {
            "provider_id": "0x" + self.provider_id.hex(),
            "epoch_id": self.epoch_id,
            "merkle_root": "0x" + self.merkle_root.hex(),
            "total": self.total,
            "ready_at": self.ready_at,
            "leaf_count": self.leaf_count,
            "status": self.status.name.lower(),
        }


def artifacts_dir() -> Path:
    """Where the committed artifacts are read from."""
    override = os.environ.get(ARTIFACTS_ENV)
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[1] / "contracts" / "artifacts"


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


def read_provider(w3: Web3, address: str, provider_id: bytes) -> ProviderRecord:
    """The provider record (all zero if never registered)."""
    raw = settlement(w3, address).functions.getProvider(provider_id).call()
    return ProviderRecord(provider_id, *raw)


def read_epoch(w3: Web3, address: str, provider_id: bytes, epoch_id: int) -> EpochRecord:
    """The epoch record (status NONE if never submitted)."""
    root, total, ready_at, depth, status = (
        settlement(w3, address).functions.getEpoch(provider_id, epoch_id).call()
    )
    return EpochRecord(provider_id, epoch_id, bytes(root), total, ready_at, depth,
                       EpochStatus(status))


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
        Check("chain_status", record.status is not EpochStatus.REJECTED,
              f"epoch is {record.status.name.lower()}"),
    ]
    return checks


__all__ = [
    "Artifact",
    "ChainError",
    "EpochRecord",
    "EpochStatus",
    "ProviderRecord",
    "artifacts_dir",
    "check_bundle_against_chain",
    "check_deployment",
    "code_matches",
    "connect",
    "load_artifact",
    "read_epoch",
    "read_provider",
    "settlement",
]
