"""The contracts' custom errors as sentences: what happened and what to do.

One sentence per error of the committed ABIs (ZkMeterSettlement, BulletproofVerifier, the
test token, OpenZeppelin's errors they include, and the BN254 library's), keyed by the
error's name and filled from its arguments by their ABI names. Times (``readyAt``,
``unbondAt``, ``availableAt``, ``deadline``) read as a UTC date and "in N s" / "N s ago"
against the chain's latest block, and when that block is old (a dev node mines only on
transactions) the sentence says so: on such a chain, time moves only when a block is mined.
A test checks that every error in every artifact has a sentence here.

Pure: no web3 import; the caller passes the decoded arguments and the chain's clock.
"""

import datetime
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

EPOCH_STATUS = ("none", "pending", "finalized", "rejected", "expired")
DEMAND_STATUS = ("none", "open", "answered", "resolved", "refunded")
PARAM_FIELDS = ("minChallengeWindow", "responseWindow", "withdrawalNotice", "bondCooldown",
                "epochExpiry", "minBond", "demandBond")
REGISTER_FIELDS = ("bond", "unit price", "challenge window", "signing key")
#: A latest block older than this on the chain means it is not producing blocks by itself.
STALE_BLOCK_SECONDS = 60


@dataclass(frozen=True, slots=True)
class ChainClock:
    """The chain's time: the latest block's timestamp, and the wall clock when it was read."""

    latest_block_time: int
    wall_time: int

    def when(self, timestamp: int) -> str:
        """A timestamp as a date and its distance from the latest block (whose time is
        given too)."""
        delta = timestamp - self.latest_block_time
        rel = f"in {delta} s" if delta > 0 else ("now" if delta == 0 else f"{-delta} s ago")
        return (f"{_date(timestamp)} ({rel}; the chain's latest block is at "
                f"{_date(self.latest_block_time)})")

    def note(self) -> str:
        """A remark when the latest block is old: the chain's clock is stuck until a block."""
        age = self.wall_time - self.latest_block_time
        if age <= STALE_BLOCK_SECONDS:
            return ""
        return (f" The latest block is {age} s old: this node has mined no block since (a dev "
                f"node mines only on transactions), so the chain's time moves only when a "
                f"block is mined.")


def _date(timestamp: int) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).strftime(
        "%Y-%m-%d %H:%M:%S UTC")


def _short(value: Any) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()[:16] + "..."
    return str(value)


def _status(table: Sequence[str], value: Any) -> str:
    return table[value] if isinstance(value, int) and 0 <= value < len(table) else str(value)


Sentence = Callable[[Mapping[str, Any], "ChainClock | None"], str]


def _t(clock: "ChainClock | None", timestamp: Any) -> str:
    if not isinstance(timestamp, int):
        return str(timestamp)
    return _date(timestamp) if clock is None else clock.when(timestamp)


def _e(a: Mapping[str, Any]) -> str:
    return f"epoch {a.get('epochId')} of account {_short(a.get('accountId'))}"


SENTENCES: dict[str, Sentence] = {
    # --- deployment and providers
    "InvalidParams": lambda a, c: (
        f"A deployment parameter is out of range: "
        f"{_status(('?', *PARAM_FIELDS), a.get('field'))}. Pick values above the protocol "
        f"floors (docs/contracts.md)."),
    "ProviderAlreadyRegistered": lambda a, c: (
        f"This operator already registered provider {_short(a.get('providerId'))} with this "
        f"signing key: use it (chain status), or add bond with chain add-bond."),
    "UnknownProvider": lambda a, c: (
        f"No provider {_short(a.get('providerId'))} is registered on this contract: check "
        f"--provider-id and --contract, or register it first (chain register)."),
    "InvalidParameter": lambda a, c: (
        f"The {_status(('?', *REGISTER_FIELDS), a.get('field'))} {a.get('value')} is out of "
        f"range: the bond must reach the contract's minimum bond, the unit price be above 0, "
        f"the window at least the minimum challenge window (chain status shows the "
        f"parameters)."),
    "NotOperator": lambda a, c: (
        f"{a.get('caller')} is not the operator of provider {_short(a.get('providerId'))}: "
        f"send from the operator's account (--from, or $ZKMETER_CHAIN_PRIVATE_KEY)."),
    "NotPendingOperator": lambda a, c: (
        f"{a.get('caller')} was not offered the operator role of provider "
        f"{_short(a.get('providerId'))}: the current operator must run chain "
        f"transfer-operator to it first."),
    "ProviderExiting": lambda a, c: (
        f"Provider {_short(a.get('providerId'))} asked to unbond (cooldown until "
        f"{_t(c, a.get('unbondAt'))}): it submits nothing until it runs chain cancel-unbond."),
    "UnbondNotReady": lambda a, c: (
        f"The bond of provider {_short(a.get('providerId'))} cannot be withdrawn yet: "
        + ("no unbond was requested (run chain unbond first)." if not a.get("unbondAt") else
           f"the cooldown ends {_t(c, a.get('unbondAt'))}.")),
    "EpochsPending": lambda a, c: (
        f"Provider {_short(a.get('providerId'))} still has {a.get('pendingEpochs')} pending "
        f"epoch(s): finalize them (or let them expire) before withdrawing the bond."),
    "InsufficientBond": lambda a, c: (
        f"The bond does not cover this: {a.get('required')} wei needed, bond {a.get('bond')} "
        f"wei of which {a.get('locked')} wei is locked by pending epochs. Add bond (chain "
        f"add-bond) or wait for pending epochs to finalize."),
    # --- accounts
    "AccountExists": lambda a, c: (
        f"Account {_short(a.get('accountId'))} (this provider, payer and asset) is already "
        f"open: deposit into it (chain deposit)."),
    "UnknownAccount": lambda a, c: (
        f"No billing account {_short(a.get('accountId'))} was opened: the payer opens it "
        f"with chain open-account (check --account-id)."),
    "NotPayer": lambda a, c: (
        f"{a.get('caller')} is not the payer of account {_short(a.get('accountId'))}: send "
        f"from the payer's account."),
    "InvalidAsset": lambda a, c: (
        f"The asset {a.get('asset')} is not a token contract: use the zero address for ETH "
        f"or an ERC-20's address."),
    "UnsupportedToken": lambda a, c: (
        f"The token {a.get('asset')} moved {a.get('received')} instead of {a.get('amount')}: "
        f"fee-on-transfer and rebasing tokens are refused; use another asset."),
    "InvalidAmount": lambda a, c: (
        f"The amount {a.get('amount')} is not allowed: it must be above 0, equal the ETH sent "
        f"for an ETH account, and fit 128 bits."),
    "WithdrawalNotReady": lambda a, c: (
        f"The withdrawal from account {_short(a.get('accountId'))} is not ready: "
        + ("none was requested (chain request-withdrawal first)." if not a.get("availableAt")
           else f"its notice ends {_t(c, a.get('availableAt'))}.")),
    "InsufficientEscrow": lambda a, c: (
        f"Account {_short(a.get('accountId'))} has {a.get('available')} unreserved, "
        f"unrequested escrow, less than the {a.get('required')} this epoch costs: the payer "
        f"must deposit more (chain deposit)."),
    # --- submission
    "EpochIdNotIncreasing": lambda a, c: (
        f"Epoch {a.get('epochId')} is not above the account's last epoch "
        f"{a.get('lastEpochId')}: it was submitted already, or a later one was."),
    "InvalidLeafCount": lambda a, c: (
        f"{a.get('count')} leaves: a submission needs a power of two between 1 and the "
        f"contract's MAX_LEAVES."),
    "TotalOutOfRange": lambda a, c: (
        f"The total {a.get('total')} exceeds what the leaves can hold ({a.get('max')})."),
    "TagsNotIncreasing": lambda a, c: (
        f"Leaf {a.get('index')}'s tag is not above the previous leaf's: tags must strictly "
        f"increase (duplicated or reordered leaves)."),
    "InvalidCommitment": lambda a, c: (
        f"Leaf {a.get('index')}'s commitment is not a point of the curve."),
    "TotalMismatch": lambda a, c: (
        f"The total {a.get('total')} and blinding of {_e(a)} do not match the sum of the "
        f"commitments: the bundle is inconsistent (zkmeter-verify bundle shows which check "
        f"fails)."),
    # --- epochs
    "EpochNotFound": lambda a, c: f"No {_e(a)} was submitted: check --account-id and --epoch.",
    "EpochNotPending": lambda a, c: (
        f"{_e(a).capitalize()} is {_status(EPOCH_STATUS, a.get('status'))}, not pending: "
        f"there is nothing left to do on it."),
    "ChallengeWindowClosed": lambda a, c: (
        f"The challenge window of {_e(a)} closed {_t(c, a.get('readyAt'))}: it can only be "
        f"finalized now."),
    "EpochNotFinalizable": lambda a, c: (
        f"{_e(a).capitalize()} cannot be finalized yet: its challenge window ends "
        f"{_t(c, a.get('readyAt'))}." + (c.note() if c else "")),
    "PreviousEpochPending": lambda a, c: (
        f"The account's earlier epoch {a.get('prevEpochId')} must settle before epoch "
        f"{a.get('epochId')}: finalize it first (epochs of an account settle in order)."),
    "DemandsOpen": lambda a, c: (
        f"{a.get('openDemands')} data demand(s) on {_e(a)} are still open: they must be "
        f"answered or resolved (chain answer / chain resolve) before it can be finalized."),
    "LeafIndexOutOfRange": lambda a, c: (
        f"Leaf {a.get('leafIndex')} does not exist: the epoch has {a.get('leafCount')} leaves."),
    "InvalidMerkleProof": lambda a, c: (
        f"Leaf {a.get('leafIndex')} with its path does not hash to the Merkle root of {_e(a)}: "
        f"this is not the bundle that was submitted (a withheld or different leaf: demand its "
        f"data with chain demand)."),
    "RangeProofValid": lambda a, c: (
        f"The range proof of leaf {a.get('leafIndex')} of {_e(a)} is valid: the challenge "
        f"fails and nothing changed."),
    "NoChallengeCommitment": lambda a, c: (
        "No commitment for this challenge by this sender exists from an earlier block: commit "
        "first (the chain commands do this for you), and reveal in a later block with the "
        "same salt." + (c.note() if c else "")),
    "DemandNotOpen": lambda a, c: (
        f"The data demand on leaf {a.get('leafIndex')} of {_e(a)} is "
        f"{_status(DEMAND_STATUS, a.get('status'))}, not open."),
    "DemandExists": lambda a, c: (
        f"A data demand on leaf {a.get('leafIndex')} of {_e(a)} exists already "
        f"({_status(DEMAND_STATUS, a.get('status'))})."),
    "DemandExpired": lambda a, c: (
        f"The response window of the demand on leaf {a.get('leafIndex')} of {_e(a)} closed "
        f"{_t(c, a.get('deadline'))}: it can only be resolved now (chain resolve)."),
    "DemandNotExpired": lambda a, c: (
        f"The demand on leaf {a.get('leafIndex')} of {_e(a)} can still be answered until "
        f"{_t(c, a.get('deadline'))}: resolve it after that." + (c.note() if c else "")),
    # --- payments
    "NothingToWithdraw": lambda a, c: f"{a.get('account')} has nothing to withdraw.",
    "TransferFailed": lambda a, c: (
        f"Sending {a.get('amount')} wei to {a.get('to')} failed: withdraw to an address that "
        f"accepts ETH (--to)."),
    "ReentrancyGuardReentrantCall": lambda a, c: (
        "A call re-entered the contract during a transfer and was refused."),
    "SafeERC20FailedOperation": lambda a, c: (
        f"The token {a.get('token')} refused the transfer (no allowance or balance?): approve "
        f"the settlement for the amount first."),
    # --- the verifier and BN254
    "MalformedProof": lambda a, c: (
        "The range proof is malformed (wrong length or an encoding outside the field)."),
    "PrecompileFailed": lambda a, c: (
        f"The EVM precompile {a.get('precompile')} failed (too little gas, or an input off "
        f"the curve): retry with more gas."),
    "ScalarNotInField": lambda a, c: f"The scalar {a.get('scalar')} is not below the group order.",
    "CoordinateNotInField": lambda a, c: "A coordinate is not below the field modulus.",
    "PointNotOnCurve": lambda a, c: "A point is not on the curve (BN254 G1).",
    # --- OpenZeppelin ERC-20 (the test token)
    "ERC20InsufficientAllowance": lambda a, c: (
        f"The allowance of {a.get('spender')} is {a.get('allowance')}, below the "
        f"{a.get('needed')} needed: approve the settlement for the amount first."),
    "ERC20InsufficientBalance": lambda a, c: (
        f"{a.get('sender')} holds {a.get('balance')} tokens, below the {a.get('needed')} "
        f"needed."),
    "ERC20InvalidApprover": lambda a, c: f"{a.get('approver')} cannot approve.",
    "ERC20InvalidReceiver": lambda a, c: f"{a.get('receiver')} cannot receive tokens.",
    "ERC20InvalidSender": lambda a, c: f"{a.get('sender')} cannot send tokens.",
    "ERC20InvalidSpender": lambda a, c: f"{a.get('spender')} cannot be approved.",
}


def explain(name: str, args: Sequence[Any], names: Sequence[str],
            clock: ChainClock | None = None) -> str:
    """The sentence for custom error ``name`` with its decoded ``args`` (ABI input ``names``
    in order); an error without a sentence (a contract newer than this module) still reads
    with its name and arguments."""
    values = dict(zip(names, args, strict=False))
    sentence = SENTENCES.get(name)
    if sentence is None:
        shown = ", ".join(f"{k}={_short(v)}" for k, v in values.items())
        return f"The contract refused with {name}({shown})."
    return sentence(values, clock)


__all__ = ["SENTENCES", "ChainClock", "explain"]
