"""Writing to the settlement contracts: every action of IZkMeterSettlement has one method.

Providers: deploy, register, bond and unbond, operator transfer. Payers: open an account,
deposit (ETH or an ERC-20), request and complete a withdrawal. Providers again: submit an
account's epoch, answer a data demand, withdraw earnings. Settlers (anyone): commit and reveal
a range challenge or a data demand, resolve a demand, finalize, withdraw credited ETH.

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
import contextlib
import secrets
import time
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
    ETH,
    SETTLEMENT,
    VERIFIER,
    AccountRecord,
    ChainError,
    DemandRecord,
    EpochRecord,
    Params,
    ProviderRecord,
    account_id_of,
    bundle_subject,
    connect,
    load_artifact,
    provider_id_of,
    read_account,
    read_demand,
    read_epoch,
    read_params,
    read_provider,
)

TEST_TOKEN = "ZkMeterTestToken"  # noqa: S105 (a contract name)

#: Protocol parameters ``deploy`` uses unless told otherwise (docs/contracts.md explains each):
#: a challenge window of at least an hour, an hour to answer a data demand, a day's notice
#: before a payer's withdrawal, a week's bond cooldown, 30 days to finalize, a bond of at least
#: 0.5 ETH (ten times a challenge's cost at 70 gwei, so the challenger's 10 % share pays for
#: it) and a 0.01 ETH demand bond (an answer's gas at 100 gwei).
DEFAULT_PARAMS = Params(
    min_challenge_window=3_600,
    response_window=3_600,
    withdrawal_notice=86_400,
    bond_cooldown=7 * 86_400,
    epoch_expiry=30 * 86_400,
    min_bond=5 * 10**17,
    demand_bond=10**16,
)

#: The kinds of a challenge commitment (IZkMeterSettlement.challengeCommitment).
KIND_RANGE, KIND_DEMAND = 1, 2

#: Gas sent with a data demand's answer; a leaf's proof is about 1 KB of calldata.
ANSWER_GAS = 400_000

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

    def to_abi(self) -> tuple[bytes, int, bytes]:
        """The ``IZkMeterSettlement.Leaf`` tuple: the commitment compressed to x with y's
        parity in bit 255 (96 bytes of calldata a leaf)."""
        x = int.from_bytes(self.commitment[:32], "big")
        y = int.from_bytes(self.commitment[32:], "big")
        return (self.tag, x | (y & 1) << 255, self.proof_hash)


@cache
def _error_table() -> dict[bytes, tuple[str, list[str]]]:
    table: dict[bytes, tuple[str, list[str]]] = {}
    for name in (SETTLEMENT, VERIFIER, TEST_TOKEN):
        for item in load_artifact(name).abi:
            if item["type"] != "error":
                continue
            types = [_abi_type(i) for i in item["inputs"]]
            selector = keccak256(f"{item['name']}({','.join(types)})".encode())[:4]
            table[selector] = (item["name"], types)
    for error, types in _BN254_ERRORS.items():  # the library's, whether or not an ABI uses them
        table.setdefault(keccak256(f"{error}({','.join(types)})".encode())[:4], (error, types))
    return table


# contracts/src/BN254.sol's custom errors (a library's errors reach an ABI only where used)
_BN254_ERRORS = {
    "CoordinateNotInField": ["uint256"],
    "PointNotOnCurve": ["uint256", "uint256"],
    "ScalarNotInField": ["uint256"],
    "PrecompileFailed": ["uint256"],
}


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


@dataclass(frozen=True, slots=True)
class AnsweredLeaf:
    """A leaf's data as a data demand's answer put it on-chain."""

    tag: bytes
    commitment: bytes
    proof: bytes
    path: list[bytes]


def bundle_path(bundle: Bundle, index: int) -> list[bytes]:
    """The Merkle path of leaf ``index`` of a bundle."""
    tree = merkle.levels([leaf.hash() for leaf in bundle.leaves])
    return merkle.path(tree, index)


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

    def deploy(self, params: Params = DEFAULT_PARAMS) -> Deployment:
        """Deploy the verifier and a settlement bound to it; binds this client to it."""
        verifier_receipt = self._send(self._contract(VERIFIER).constructor())
        verifier = verifier_receipt.contractAddress
        settlement_receipt = self._send(self._contract(SETTLEMENT).constructor(
            verifier, tuple(params.to_json().values())))
        self.settlement_address = settlement_receipt.contractAddress
        return Deployment(self.chain_id, settlement_receipt.contractAddress, verifier)

    def deploy_test_token(self) -> str:
        """Deploy a ZkMeterTestToken (an open-mint ERC-20 for tests and the demo)."""
        return str(self._send(self._contract(TEST_TOKEN).constructor()).contractAddress)

    # ---------------------------------------------------------------- providers

    def provider_id_for(self, signing_key: bytes, *, operator: str | None = None) -> bytes:
        """The provider id ``registerProvider`` gives ``operator`` (default: this sender)."""
        return provider_id_of(operator or self.account, signing_key)

    def register_provider(self, signing_key: bytes, *, bond: int, unit_price: int,
                          challenge_window: int, sender: str | None = None) -> Any:
        """registerProvider: the sender becomes the operator of
        ``provider_id_for(signing_key)`` and stakes ``bond`` wei."""
        fn = self.settlement.functions.registerProvider(signing_key, unit_price,
                                                        challenge_window)
        return self._send(fn, sender=sender, value=bond)

    def set_unit_price(self, provider_id: bytes, unit_price: int, *,
                       sender: str | None = None) -> Any:
        """setUnitPrice (operator): the price of accounts opened from now on."""
        return self._send(self.settlement.functions.setUnitPrice(provider_id, unit_price),
                          sender=sender)

    def add_bond(self, provider_id: bytes, amount: int, *, sender: str | None = None) -> Any:
        """addBond (operator only)."""
        return self._send(self.settlement.functions.addBond(provider_id), sender=sender,
                          value=amount)

    def request_unbond(self, provider_id: bytes, *, sender: str | None = None) -> Any:
        """requestUnbond (operator): starts the cooldown, stops submissions."""
        return self._send(self.settlement.functions.requestUnbond(provider_id), sender=sender)

    def cancel_unbond(self, provider_id: bytes, *, sender: str | None = None) -> Any:
        """cancelUnbond (operator)."""
        return self._send(self.settlement.functions.cancelUnbond(provider_id), sender=sender)

    def withdraw_bond(self, provider_id: bytes, *, to: str | None = None,
                      sender: str | None = None) -> Any:
        """withdrawBond (operator): the whole bond after the cooldown, nothing pending."""
        return self._send(self.settlement.functions.withdrawBond(
            provider_id, self._address(to or sender)), sender=sender)

    def transfer_operator(self, provider_id: bytes, new_operator: str, *,
                          sender: str | None = None) -> Any:
        """transferOperator (operator): offer the role; the new operator accepts."""
        return self._send(self.settlement.functions.transferOperator(
            provider_id, self._address(new_operator)), sender=sender)

    def accept_operator(self, provider_id: bytes, *, sender: str | None = None) -> Any:
        """acceptOperator (the offered address)."""
        return self._send(self.settlement.functions.acceptOperator(provider_id), sender=sender)

    # ----------------------------------------------------------------- accounts

    def account_id_for(self, provider_id: bytes, *, payer: str | None = None,
                       asset: str = ETH) -> bytes:
        """The id of the account (provider, payer, asset)."""
        return account_id_of(provider_id, payer or self.account, asset)

    def open_account(self, provider_id: bytes, *, asset: str = ETH,
                     sender: str | None = None) -> Any:
        """openAccount: the sender becomes the payer of ``account_id_for(provider_id, payer=
        sender, asset=asset)`` at the provider's posted unit price."""
        return self._send(self.settlement.functions.openAccount(
            provider_id, self._address(asset)), sender=sender)

    def deposit(self, account_id: bytes, amount: int, *, sender: str | None = None) -> Any:
        """deposit (payer): ETH as value, or an ERC-20 pulled after ``approve_token``."""
        asset = self.billing_account(account_id).asset
        value = amount if int(asset, 16) == 0 else 0
        return self._send(self.settlement.functions.deposit(account_id, amount), sender=sender,
                          value=value)

    def request_withdrawal(self, account_id: bytes, amount: int, *,
                           sender: str | None = None) -> Any:
        """requestWithdrawal (payer): 0 cancels; the notice restarts."""
        return self._send(self.settlement.functions.requestWithdrawal(account_id, amount),
                          sender=sender)

    def complete_withdrawal(self, account_id: bytes, *, to: str | None = None,
                            sender: str | None = None) -> Any:
        """completeWithdrawal (payer), after the notice, capped at the unreserved escrow."""
        return self._send(self.settlement.functions.completeWithdrawal(
            account_id, self._address(to or sender)), sender=sender)

    # ------------------------------------------------------------------- epochs

    def submit_epoch(self, account_id: bytes, epoch_id: int, *, total: int,
                     total_blinding: int, leaves: Sequence[LeafInput],
                     sender: str | None = None) -> Any:
        """submitEpoch with explicit leaves (tree order)."""
        fn = self.settlement.functions.submitEpoch(
            account_id, epoch_id, total, total_blinding, [leaf.to_abi() for leaf in leaves])
        return self._send(fn, sender=sender)

    def submit_bundle(self, bundle: Bundle, *, sender: str | None = None) -> Any:
        """submitEpoch for a published bundle, to the account its proofs are bound to."""
        self._check_context(bundle)
        leaves = [LeafInput(leaf.tag, leaf.commitment, keccak256(leaf.proof))
                  for leaf in bundle.leaves]
        return self.submit_epoch(bundle_subject(bundle), bundle.epoch_id, total=bundle.total,
                                 total_blinding=bundle.total_blinding, leaves=leaves,
                                 sender=sender)

    def _check_context(self, bundle: Bundle) -> None:
        if bundle.chain_id != self.chain_id:
            raise ChainError(f"bundle is for chain {bundle.chain_id}, node is {self.chain_id}")
        if self.settlement_address is None or bundle.contract != bytes.fromhex(
            self.settlement_address[2:]
        ):
            raise ChainError("bundle is for another settlement contract")

    def commit_challenge(self, kind: int, account_id: bytes, epoch_id: int, leaf_index: int,
                         salt: bytes, *, sender: str | None = None) -> Any:
        """commitChallenge: record the commitment a later reveal (by ``sender``) needs."""
        commitment = self.settlement.functions.challengeCommitment(
            kind, self._address(sender), account_id, epoch_id, leaf_index, salt).call()
        receipt = self._send(self.settlement.functions.commitChallenge(commitment),
                             sender=sender)
        self._await_block_after(int(receipt.blockNumber))
        return receipt

    def _await_block_after(self, number: int, timeout: float = 120.0) -> None:
        """Wait until the chain's latest block is above ``number``, so a reveal's dry run
        (run on the latest block) sees its commitment as earlier. Dev chains that mine only on
        demand (the embedded chain, anvil) are asked to mine one."""
        tester = getattr(self.w3.provider, "ethereum_tester", None)
        if tester is not None:
            tester.mine_blocks(1)
            return
        deadline = time.monotonic() + timeout
        asked = False
        while int(self.w3.eth.block_number) <= number:
            if time.monotonic() > deadline:
                raise ChainError(f"no block after {number} within {timeout:.0f} s")
            if not asked:
                asked = True
                # a production node refuses evm_mine: then the next block just comes
                with contextlib.suppress(Exception):
                    self.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
                continue
            time.sleep(0.5)

    def challenge(self, account_id: bytes, epoch_id: int, *, leaf_index: int, tag: bytes,
                  commitment: bytes, proof: bytes, path: Sequence[bytes],
                  salt: bytes | None = None, sender: str | None = None) -> Any:
        """Commit, then reveal challengeRangeProof of one leaf (two transactions, the reveal
        in a later block); raises SettlementError(RangeProofValid) if the proof is good.
        With ``salt`` given, only the reveal is sent (the commitment must exist)."""
        if salt is None:
            salt = secrets.token_bytes(32)
            self.commit_challenge(KIND_RANGE, account_id, epoch_id, leaf_index, salt,
                                  sender=sender)
        fn = self.settlement.functions.challengeRangeProof(
            account_id, epoch_id, leaf_index, tag,
            int.from_bytes(commitment[:32], "big"), int.from_bytes(commitment[32:], "big"),
            proof, list(path), salt)
        return self._send(fn, sender=sender, gas=CHALLENGE_GAS)

    def challenge_bundle_leaf(self, bundle: Bundle, index: int, *,
                              sender: str | None = None) -> Any:
        """Challenge leaf ``index`` of a bundle, with its Merkle path."""
        leaf = bundle.leaves[index]
        return self.challenge(bundle_subject(bundle), bundle.epoch_id, leaf_index=index,
                              tag=leaf.tag, commitment=leaf.commitment, proof=leaf.proof,
                              path=bundle_path(bundle, index), sender=sender)

    def demand_data(self, account_id: bytes, epoch_id: int, leaf_index: int, *,
                    salt: bytes | None = None, sender: str | None = None) -> Any:
        """Commit, then reveal demandData with the demand bond (as ``challenge``)."""
        if salt is None:
            salt = secrets.token_bytes(32)
            self.commit_challenge(KIND_DEMAND, account_id, epoch_id, leaf_index, salt,
                                  sender=sender)
        fn = self.settlement.functions.demandData(account_id, epoch_id, leaf_index, salt)
        return self._send(fn, sender=sender, value=self.params().demand_bond)

    def answer_demand(self, account_id: bytes, epoch_id: int, *, leaf_index: int, tag: bytes,
                      commitment: bytes, proof: bytes, path: Sequence[bytes],
                      sender: str | None = None) -> Any:
        """answerDemand with the leaf's data; the demand bond goes to the sender."""
        fn = self.settlement.functions.answerDemand(
            account_id, epoch_id, leaf_index, tag,
            int.from_bytes(commitment[:32], "big"), int.from_bytes(commitment[32:], "big"),
            proof, list(path))
        return self._send(fn, sender=sender, gas=ANSWER_GAS)

    def answer_bundle_leaf(self, bundle: Bundle, index: int, *,
                           sender: str | None = None) -> Any:
        """Answer a demand on leaf ``index`` of a bundle."""
        leaf = bundle.leaves[index]
        return self.answer_demand(bundle_subject(bundle), bundle.epoch_id, leaf_index=index,
                                  tag=leaf.tag, commitment=leaf.commitment, proof=leaf.proof,
                                  path=bundle_path(bundle, index), sender=sender)

    def resolve_demand(self, account_id: bytes, epoch_id: int, leaf_index: int, *,
                       sender: str | None = None) -> Any:
        """resolveDemand: slash an unanswered demand after its deadline (anyone)."""
        return self._send(self.settlement.functions.resolveDemand(
            account_id, epoch_id, leaf_index), sender=sender)

    def answered_leaf(self, account_id: bytes, epoch_id: int,
                      leaf_index: int) -> "AnsweredLeaf | None":
        """The leaf data an answer put on-chain (decoded from the answering transaction's
        calldata, found by its DataAnswered event), or None if none was answered."""
        event = self.settlement.events.DataAnswered
        for log in event.get_logs(from_block=0,
                                  argument_filters={"accountId": account_id,
                                                    "epochId": epoch_id}):
            if log["args"]["leafIndex"] != leaf_index:
                continue
            tx = self.w3.eth.get_transaction(log["transactionHash"])
            fn, args = self.settlement.decode_function_input(tx["input"])
            if fn.fn_name != "answerDemand":
                continue
            commitment = (args["commitmentX"].to_bytes(32, "big")
                          + args["commitmentY"].to_bytes(32, "big"))
            return AnsweredLeaf(bytes(args["tag"]), commitment, bytes(args["proof"]),
                                [bytes(p) for p in args["path"]])
        return None

    def finalize(self, account_id: bytes, epoch_id: int, *, sender: str | None = None) -> Any:
        """finalize: pay (or release) an epoch after its window (anyone)."""
        return self._send(self.settlement.functions.finalize(account_id, epoch_id),
                          sender=sender)

    def withdraw(self, *, sender: str | None = None) -> Any:
        """withdraw the sender's credited ETH (slash shares, demand bonds)."""
        return self._send(self.settlement.functions.withdraw(), sender=sender)

    def withdraw_earnings(self, provider_id: bytes, *, asset: str = ETH, to: str | None = None,
                          sender: str | None = None) -> Any:
        """withdrawEarnings (operator) in one asset."""
        return self._send(self.settlement.functions.withdrawEarnings(
            provider_id, self._address(asset), self._address(to or sender)), sender=sender)

    # -------------------------------------------------------------------- reads

    def params(self) -> Params:
        """The protocol parameters."""
        return read_params(self.w3, self.settlement.address)

    def provider(self, provider_id: bytes) -> ProviderRecord:
        """The provider record."""
        return read_provider(self.w3, self.settlement.address, provider_id)

    def billing_account(self, account_id: bytes) -> AccountRecord:
        """The billing account record."""
        return read_account(self.w3, self.settlement.address, account_id)

    def epoch(self, account_id: bytes, epoch_id: int) -> EpochRecord:
        """The epoch record."""
        return read_epoch(self.w3, self.settlement.address, account_id, epoch_id)

    def demand(self, account_id: bytes, epoch_id: int, leaf_index: int) -> DemandRecord:
        """The data demand on one leaf."""
        return read_demand(self.w3, self.settlement.address, account_id, epoch_id, leaf_index)

    def balance_of(self, account: str) -> int:
        """The withdrawable ETH of ``account``."""
        return int(self.settlement.functions.balanceOf(self._address(account)).call())

    def earnings(self, provider_id: bytes, asset: str = ETH) -> int:
        """The provider's unwithdrawn earnings in ``asset``."""
        return int(self.settlement.functions.earnings(provider_id, self._address(asset)).call())

    def total_burned(self) -> int:
        """Wei burned by slashes."""
        return int(self.settlement.functions.totalBurned().call())

    # -------------------------------------------------------------------- tokens

    def _token(self, token: str) -> Any:
        return self._contract(TEST_TOKEN, token)

    def approve_token(self, token: str, amount: int, *, sender: str | None = None) -> Any:
        """ERC-20 approve of the settlement for ``amount`` (before an ERC-20 deposit)."""
        return self._send(self._token(token).functions.approve(
            self.settlement.address, amount), sender=sender)

    def mint_test_token(self, token: str, to: str, amount: int) -> Any:
        """ZkMeterTestToken.mint (test and demo chains)."""
        return self._send(self._token(token).functions.mint(self._address(to), amount))

    def token_balance(self, token: str, holder: str) -> int:
        """ERC-20 balanceOf."""
        return int(self._token(token).functions.balanceOf(self._address(holder)).call())

    def _address(self, address: str | None) -> str:
        return Web3.to_checksum_address(address or self.account)

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
    "ANSWER_GAS",
    "CHALLENGE_GAS",
    "DEFAULT_PARAMS",
    "ETH",
    "KIND_DEMAND",
    "KIND_RANGE",
    "AnsweredLeaf",
    "ChainClient",
    "Deployment",
    "LeafInput",
    "SettlementError",
    "bundle_path",
    "decode_revert",
]
