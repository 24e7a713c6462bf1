"""Writing to the settlement contracts: deploy, register, deposit, submit, challenge, finalize.

The read side (artifacts, records, code checks) is :mod:`verifier.chain`; this module adds
the transactions. A :class:`ChainClient` wraps one Web3 and one sending account:

* the embedded chain (``ChainClient.connect(None)``: py-evm in process, funded unlocked
  accounts), or a JSON-RPC URL whose node holds unlocked accounts (anvil), or any JSON-RPC URL
  with a private key (transactions are signed locally and sent raw);
* every call is first run with ``eth_call`` so a revert comes back as a
  :class:`SettlementError` carrying the custom error's name and arguments, decoded from the
  ABIs of both contracts; then the transaction is sent and its receipt checked.
"""

import ast
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from eth_abi.abi import decode as abi_decode
from web3 import Web3
from web3.exceptions import ContractLogicError

from circuits import merkle
from circuits.hashing import keccak256
from verifier.bundle import Bundle
from verifier.chain import (
    SETTLEMENT,
    VERIFIER,
    ChainError,
    EpochRecord,
    ProviderRecord,
    connect,
    load_artifact,
    read_epoch,
    read_provider,
)

# Enough for one on-chain range-proof verification (about 0.65M) with a wide margin; sent
# explicitly so nodes do not binary-search the gas of an 81-ECMUL call.
CHALLENGE_GAS = 1_500_000


class SettlementError(ChainError):
    """A call reverted with a custom error of the contracts (``name`` and decoded ``args``)."""

    def __init__(self, name: str, args: tuple[Any, ...], data: bytes) -> None:
        self.name = name
        self.args_ = args
        self.data = data
        shown = ", ".join(f"0x{a.hex()}" if isinstance(a, bytes) else str(a) for a in args)
        super().__init__(f"{name}({shown})")


@dataclass(frozen=True, slots=True)
class Deployment:
    """Where the contracts live."""

    chain_id: int
    settlement: str
    verifier: str

    def to_json(self) -> dict[str, Any]:
        """Stable JSON form."""
        return {"chain_id": self.chain_id, "settlement": self.settlement,
                "verifier": self.verifier}


@dataclass(frozen=True, slots=True)
class LeafInput:
    """One leaf for ``submitEpoch``: tag, 64-byte commitment, keccak256 of the proof."""

    tag: bytes
    commitment: bytes
    proof_hash: bytes

    def to_abi(self) -> tuple[bytes, int, int, bytes]:
        """The ``IZkMeterSettlement.Leaf`` tuple."""
        return (self.tag, int.from_bytes(self.commitment[:32], "big"),
                int.from_bytes(self.commitment[32:], "big"), self.proof_hash)


@cache
def _error_table() -> dict[bytes, tuple[str, list[str]]]:
    table: dict[bytes, tuple[str, list[str]]] = {}
    for name in (SETTLEMENT, VERIFIER):
        for item in load_artifact(name).abi:
            if item["type"] != "error":
                continue
            types = [_abi_type(i) for i in item["inputs"]]
            selector = keccak256(f"{item['name']}({','.join(types)})".encode())[:4]
            table[selector] = (item["name"], types)
    return table


def _abi_type(param: dict[str, Any]) -> str:
    if param["type"].startswith("tuple"):
        inner = ",".join(_abi_type(c) for c in param["components"])
        return f"({inner}){param['type'][5:]}"
    return str(param["type"])


def decode_revert(data: bytes) -> SettlementError | None:
    """The custom error encoded in revert data, if it is one of the contracts' errors."""
    if len(data) < 4:
        return None
    entry = _error_table().get(bytes(data[:4]))
    if entry is None:
        return None
    name, types = entry
    try:
        args = tuple(abi_decode(types, bytes(data[4:])))
    except Exception:  # malformed revert data: report the name alone
        args = ()
    return SettlementError(name, args, bytes(data))


def _revert_data(exc: BaseException | None) -> bytes:
    """The raw revert data behind a failed call: web3 puts it in ``.data`` (hex) for JSON-RPC
    nodes; the embedded chain raises eth-tester's TransactionFailed with the bytes."""
    seen = 0
    while exc is not None and seen < 8:
        data = getattr(exc, "data", None)
        if isinstance(data, dict):
            data = data.get("data")
        if isinstance(data, str) and data.startswith("0x"):
            try:
                return bytes.fromhex(data[2:])
            except ValueError:
                pass
        if isinstance(data, bytes) and data:
            return data
        if exc.args and isinstance(exc.args[0], bytes):
            return exc.args[0]
        if exc.args and isinstance(exc.args[0], str):
            # eth-tester: "execution reverted: b'...'" (the repr of the revert bytes)
            text = exc.args[0].removeprefix("execution reverted: ")
            if text.startswith(("b'", 'b"')):
                try:
                    value = ast.literal_eval(text)
                except (ValueError, SyntaxError):
                    value = None
                if isinstance(value, bytes):
                    return value
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return b""


def _is_revert(exc: Exception) -> bool:
    if isinstance(exc, ContractLogicError):
        return True
    return type(exc).__name__ == "TransactionFailed"  # eth-tester, embedded chain only


class ChainClient:
    """One chain, one sending account, the zkmeter contracts."""

    def __init__(self, w3: Web3, *, account: str | None = None,
                 private_key: str | None = None, settlement: str | None = None) -> None:
        self.w3 = w3
        self._key = private_key
        if private_key is not None:
            self.account = Web3.to_checksum_address(
                w3.eth.account.from_key(private_key).address)
        elif account is not None:
            self.account = Web3.to_checksum_address(account)
        else:
            accounts = w3.eth.accounts
            if not accounts:
                raise ChainError("the node has no unlocked account: pass a private key")
            self.account = accounts[0]
        self.settlement_address = (
            Web3.to_checksum_address(settlement) if settlement is not None else None
        )

    @classmethod
    def connect(cls, url: str | None = None, **kwargs: Any) -> "ChainClient":
        """A client for ``url`` (JSON-RPC) or the embedded py-evm chain."""
        return cls(connect(url), **kwargs)

    # ------------------------------------------------------------------ plumbing

    @property
    def chain_id(self) -> int:
        """The chain's id."""
        return int(self.w3.eth.chain_id)

    def _contract(self, name: str, address: str | None = None) -> Any:
        artifact = load_artifact(name)
        if address is None:
            return self.w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
        return self.w3.eth.contract(address=Web3.to_checksum_address(address), abi=artifact.abi)

    @property
    def settlement(self) -> Any:
        """The bound settlement contract."""
        if self.settlement_address is None:
            raise ChainError("no settlement address: deploy or pass settlement=")
        return self._contract(SETTLEMENT, self.settlement_address)

    def _send(self, fn: Any, *, sender: str | None = None, value: int = 0,
              gas: int | None = None) -> Any:
        """Dry-run (decoding a revert), then send and wait; returns the receipt."""
        frm = Web3.to_checksum_address(sender) if sender else self.account
        tx: dict[str, Any] = {"from": frm, "value": value}
        try:
            if hasattr(fn, "call"):  # constructors have no eth_call form
                fn.call(tx)
            if gas is None:
                gas = int(fn.estimate_gas(tx) * 1.2) + 20_000
        except Exception as exc:
            if not _is_revert(exc):
                raise
            decoded = decode_revert(_revert_data(exc))
            if decoded is not None:
                raise decoded from exc
            raise ChainError(f"call reverted: {exc}") from exc
        tx["gas"] = gas
        if self._key is not None and frm == self.account:
            built = fn.build_transaction(
                {**tx, "nonce": self.w3.eth.get_transaction_count(frm, "pending")})
            signed = self.w3.eth.account.sign_transaction(built, self._key)
            tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
        else:
            tx_hash = fn.transact(tx)
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=120)
        if receipt["status"] != 1:
            raise ChainError(f"transaction {tx_hash.hex()} failed (gas used {receipt['gasUsed']})")
        return receipt

    # -------------------------------------------------------------------- deploy

    def deploy(self) -> Deployment:
        """Deploy the verifier and a settlement bound to it; binds this client to it."""
        verifier_receipt = self._send(self._contract(VERIFIER).constructor())
        verifier = verifier_receipt.contractAddress
        settlement_receipt = self._send(self._contract(SETTLEMENT).constructor(verifier))
        self.settlement_address = settlement_receipt.contractAddress
        return Deployment(self.chain_id, settlement_receipt.contractAddress, verifier)

    # ---------------------------------------------------------------- providers

    def register_provider(self, provider_id: bytes, *, bond: int, unit_price: int,
                          challenge_window: int, sender: str | None = None) -> Any:
        """registerProvider: the sender becomes the operator and stakes ``bond`` wei."""
        fn = self.settlement.functions.registerProvider(provider_id, unit_price,
                                                        challenge_window)
        return self._send(fn, sender=sender, value=bond)

    def add_bond(self, provider_id: bytes, amount: int, *, sender: str | None = None) -> Any:
        """addBond (operator only)."""
        return self._send(self.settlement.functions.addBond(provider_id), sender=sender,
                          value=amount)

    def deposit(self, provider_id: bytes, amount: int, *, sender: str | None = None) -> Any:
        """deposit: fund the provider's escrow."""
        return self._send(self.settlement.functions.deposit(provider_id), sender=sender,
                          value=amount)

    # ------------------------------------------------------------------- epochs

    def submit_epoch(self, provider_id: bytes, epoch_id: int, *, total: int,
                     total_blinding: int, leaves: Sequence[LeafInput],
                     sender: str | None = None) -> Any:
        """submitEpoch with explicit leaves (tree order)."""
        fn = self.settlement.functions.submitEpoch(
            provider_id, epoch_id, total, total_blinding, [leaf.to_abi() for leaf in leaves])
        return self._send(fn, sender=sender)

    def submit_bundle(self, bundle: Bundle, *, sender: str | None = None) -> Any:
        """submitEpoch for a published bundle (its leaves in bundle order)."""
        self._check_context(bundle)
        leaves = [LeafInput(leaf.tag, leaf.commitment, keccak256(leaf.proof))
                  for leaf in bundle.leaves]
        return self.submit_epoch(bundle.provider_id, bundle.epoch_id, total=bundle.total,
                                 total_blinding=bundle.total_blinding, leaves=leaves,
                                 sender=sender)

    def _check_context(self, bundle: Bundle) -> None:
        if bundle.chain_id != self.chain_id:
            raise ChainError(f"bundle is for chain {bundle.chain_id}, node is {self.chain_id}")
        if self.settlement_address is None or bundle.contract != bytes.fromhex(
            self.settlement_address[2:]
        ):
            raise ChainError("bundle is for another settlement contract")

    def challenge(self, provider_id: bytes, epoch_id: int, *, leaf_index: int, tag: bytes,
                  commitment: bytes, proof: bytes, path: Sequence[bytes],
                  sender: str | None = None) -> Any:
        """challengeRangeProof of one leaf; raises SettlementError(RangeProofValid) if the
        proof is good."""
        fn = self.settlement.functions.challengeRangeProof(
            provider_id, epoch_id, leaf_index, tag,
            int.from_bytes(commitment[:32], "big"), int.from_bytes(commitment[32:], "big"),
            proof, list(path))
        return self._send(fn, sender=sender, gas=CHALLENGE_GAS)

    def challenge_bundle_leaf(self, bundle: Bundle, index: int, *,
                              sender: str | None = None) -> Any:
        """Challenge leaf ``index`` of a bundle, with its Merkle path."""
        tree = merkle.levels([leaf.hash() for leaf in bundle.leaves])
        leaf = bundle.leaves[index]
        return self.challenge(bundle.provider_id, bundle.epoch_id, leaf_index=index,
                              tag=leaf.tag, commitment=leaf.commitment, proof=leaf.proof,
                              path=merkle.path(tree, index), sender=sender)

    def finalize(self, provider_id: bytes, epoch_id: int, *, sender: str | None = None) -> Any:
        """finalize: pay the provider after the window (anyone)."""
        return self._send(self.settlement.functions.finalize(provider_id, epoch_id),
                          sender=sender)

    def withdraw(self, *, sender: str | None = None) -> Any:
        """withdraw the sender's credited balance."""
        return self._send(self.settlement.functions.withdraw(), sender=sender)

    def withdraw_earnings(self, provider_id: bytes, *, sender: str | None = None) -> Any:
        """withdrawEarnings (operator only)."""
        return self._send(self.settlement.functions.withdrawEarnings(provider_id),
                          sender=sender)

    # -------------------------------------------------------------------- reads

    def provider(self, provider_id: bytes) -> ProviderRecord:
        """The provider record."""
        return read_provider(self.w3, self.settlement.address, provider_id)

    def epoch(self, provider_id: bytes, epoch_id: int) -> EpochRecord:
        """The epoch record."""
        return read_epoch(self.w3, self.settlement.address, provider_id, epoch_id)

    def balance_of(self, account: str) -> int:
        """The withdrawable balance of ``account``."""
        return int(self.settlement.functions.balanceOf(
            Web3.to_checksum_address(account)).call())

    # ------------------------------------------------------------ dev chains only

    def advance_time(self, seconds: int) -> int:
        """Move the chain's clock forward (embedded chain or anvil) and mine a block; returns
        the new latest block timestamp."""
        tester = getattr(self.w3.provider, "ethereum_tester", None)
        if tester is not None:
            now = int(self.w3.eth.get_block("latest")["timestamp"])
            tester.time_travel(now + seconds)
        else:
            self.w3.provider.make_request("evm_increaseTime", [seconds])  # type: ignore[arg-type]
            self.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
        return int(self.w3.eth.get_block("latest")["timestamp"])


__all__ = [
    "CHALLENGE_GAS",
    "ChainClient",
    "Deployment",
    "LeafInput",
    "SettlementError",
    "decode_revert",
]
