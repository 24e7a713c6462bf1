// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// @title zkmeter settlement v2: billing accounts, availability challenges, bonds at stake
/// @notice Actors and money (docs/contracts.md states every property and its test):
///         - A **provider** registers with a bond (ETH), a unit price and a challenge window.
///           Its id is `keccak256(abi.encode(operator, signingKey))`, so nobody can take
///           another operator's id. The bond locked by its pending epochs always covers their
///           payments; a slash takes the whole bond and freezes it until it re-bonds.
///         - A **payer** opens a billing account `(provider, payer, asset)` at the provider's
///           posted unit price and funds its escrow in ETH or one ERC-20. An epoch settles one
///           account and reserves its payment from that account's escrow at submission, so one
///           payer's deposit never pays for another's users. Unreserved escrow comes back after
///           a notice at least as long as the challenge window.
///         - Each epoch the provider submits one Pedersen commitment per leaf of the account
///           (tag, compressed commitment, proof hash), the total V and the aggregate blinding R;
///           the contract checks `V*G + R*H == sum C_i` and stores the leaves' Merkle root.
///         - **Anyone** can, inside the window: challenge a leaf's range proof (commit, then
///           reveal), or demand a leaf's data with a small bond; the provider (or anyone who
///           has the data) answers on-chain within the response window, which reopens the
///           window for range challenges of the answer; an unanswered demand slashes.
///         - A slash rejects every pending epoch of the provider, releases their reservations,
///           burns half of the bond and pays 40 % to the cheated payer and 10 % to the
///           challenger. After the window `finalize` pays `V * unitPrice` into the provider's
///           earnings (pull), in epoch order per account; an epoch not finalized within
///           `epochExpiry` after its window is released unpaid.
///         The range proofs' transcripts bind the chain id, this contract, the **account id**
///         (in the 32-byte slot circuits/PROTOCOL.md calls the subject) and the epoch id.
interface IZkMeterSettlement {
    /// @notice The life of an epoch: None -> Pending -> Finalized | Rejected | Expired.
    ///         A Pending epoch of an older provider generation (a slash happened since) reads
    ///         as Rejected in `getEpoch` and is released by `finalize`.
    enum EpochStatus {
        None,
        Pending,
        Finalized,
        Rejected,
        Expired
    }

    /// @notice The life of a data-availability demand on one leaf.
    enum DemandStatus {
        None,
        Open,
        Answered,
        Resolved,
        Refunded
    }

    /// @notice Why an epoch was rejected or released.
    enum Reason {
        BadRangeProof,
        Unavailable,
        ProviderSlashed,
        Expired
    }

    /// @notice Protocol parameters, fixed at deployment.
    /// @param minChallengeWindow Shortest challenge window a provider may choose (seconds).
    /// @param responseWindow Seconds the provider has to answer a data demand.
    /// @param withdrawalNotice Shortest notice before a payer's withdrawal (seconds); the
    ///        notice of an account is the larger of this and its provider's window.
    /// @param bondCooldown Seconds between `requestUnbond` and `withdrawBond`.
    /// @param epochExpiry Seconds after its window closes that an epoch can still be paid.
    /// @param minBond Least bond (wei) a provider must hold to submit: it should exceed what a
    ///        challenger spends on a challenge at the gas prices one expects.
    /// @param demandBond Bond (wei) of a data demand: it pays the answerer's gas.
    struct Params {
        uint64 minChallengeWindow;
        uint64 responseWindow;
        uint64 withdrawalNotice;
        uint64 bondCooldown;
        uint64 epochExpiry;
        uint128 minBond;
        uint128 demandBond;
    }

    /// @notice One leaf as submitted (96 bytes of calldata).
    /// @param tag The leaf's 32-byte pseudonymous tag; tags strictly increase.
    /// @param xSigned The commitment's x coordinate (< p) with bit 255 set iff y is odd.
    /// @param proofHash keccak256 of the leaf's encoded range proof.
    /// @dev The Merkle leaf is `keccak256(tag || x || y || proofHash)` (circuits/merkle.py).
    struct Leaf {
        bytes32 tag;
        uint256 xSigned;
        bytes32 proofHash;
    }

    /// @notice A registered provider.
    /// @param operator Submits epochs and withdraws earnings and bond.
    /// @param challengeWindow Seconds an epoch stays open to challenges and demands.
    /// @param generation Increases on every slash; epochs of older generations are void.
    /// @param pendingEpochs Pending epochs of the current generation.
    /// @param pendingOperator The address a transfer was offered to (zero: none).
    /// @param unbondAt When `withdrawBond` opens (zero: no exit requested).
    /// @param bond Wei at stake.
    /// @param lockedBond Part of the bond covering pending payments.
    /// @param unitPrice Price per unit for accounts opened from now on.
    /// @param signingKey The provider's Ed25519 public key (it signs bundles and receipts).
    struct Provider {
        address operator;
        uint24 challengeWindow;
        uint24 generation;
        uint32 pendingEpochs;
        address pendingOperator;
        uint64 unbondAt;
        uint128 bond;
        uint128 lockedBond;
        uint128 unitPrice;
        bytes32 signingKey;
    }

    /// @notice A billing account (provider, payer, asset).
    /// @param providerId The provider paid from it.
    /// @param payer The only depositor and withdrawer.
    /// @param lastEpochId The last submitted epoch id (0: none).
    /// @param asset address(0) for ETH, else the ERC-20.
    /// @param withdrawalAt When the requested withdrawal may complete.
    /// @param unitPrice Smallest asset units per committed unit, fixed at opening.
    /// @param escrow Deposited and not paid out.
    /// @param reserved Part of the escrow reserved by pending epochs.
    /// @param withdrawalAmount Requested withdrawal (0: none).
    struct Account {
        bytes32 providerId;
        address payer;
        uint64 lastEpochId;
        address asset;
        uint64 withdrawalAt;
        uint128 unitPrice;
        uint128 escrow;
        uint128 reserved;
        uint128 withdrawalAmount;
    }

    /// @notice A submitted epoch of one account (two storage slots).
    /// @param merkleRoot Root of the leaves' Merkle tree.
    /// @param total The committed total V, in units.
    /// @param readyAt When challenges and demands close and finalize opens.
    /// @param prevEpochId The account's epoch before it (0: none): it settles first.
    /// @param generation The provider's generation at submission.
    /// @param openDemands Data demands not yet answered or resolved.
    /// @param depth log2 of the number of leaves.
    /// @param status The stored status (see EpochStatus for the generation rule).
    struct Epoch {
        bytes32 merkleRoot;
        uint96 total;
        uint40 readyAt;
        uint64 prevEpochId;
        uint24 generation;
        uint16 openDemands;
        uint8 depth;
        EpochStatus status;
    }

    /// @notice A data-availability demand on one leaf.
    struct Demand {
        address demander;
        uint64 deadline;
        DemandStatus status;
    }

    event ProviderRegistered(
        bytes32 indexed providerId,
        address indexed operator,
        bytes32 signingKey,
        uint256 bond,
        uint256 unitPrice,
        uint256 challengeWindow
    );
    event UnitPriceSet(bytes32 indexed providerId, uint256 unitPrice);
    event BondAdded(bytes32 indexed providerId, uint256 amount, uint256 bond);
    event UnbondRequested(bytes32 indexed providerId, uint256 unbondAt);
    event UnbondCancelled(bytes32 indexed providerId);
    event BondWithdrawn(bytes32 indexed providerId, address indexed to, uint256 amount);
    event OperatorTransferStarted(bytes32 indexed providerId, address indexed newOperator);
    event OperatorTransferred(bytes32 indexed providerId, address indexed previous, address indexed operator);
    event AccountOpened(
        bytes32 indexed accountId,
        bytes32 indexed providerId,
        address indexed payer,
        address asset,
        uint256 unitPrice
    );
    event Deposited(bytes32 indexed accountId, uint256 amount, uint256 escrow);
    event WithdrawalRequested(bytes32 indexed accountId, uint256 amount, uint256 availableAt);
    event WithdrawalCompleted(bytes32 indexed accountId, address indexed to, uint256 amount);
    event EpochSubmitted(
        bytes32 indexed accountId,
        uint64 indexed epochId,
        bytes32 merkleRoot,
        uint256 total,
        uint256 leafCount,
        uint256 readyAt,
        uint256 payment
    );
    event ChallengeCommitted(bytes32 indexed commitment, address indexed committer);
    event DataDemanded(
        bytes32 indexed accountId, uint64 indexed epochId, uint256 leafIndex, address indexed demander, uint256 deadline
    );
    /// @notice The leaf's data is in this transaction's calldata (`answerDemand`).
    event DataAnswered(
        bytes32 indexed accountId, uint64 indexed epochId, uint256 leafIndex, address indexed answerer, uint256 readyAt
    );
    event DemandRefunded(bytes32 indexed accountId, uint64 indexed epochId, uint256 leafIndex, address indexed demander);
    event EpochRejected(
        bytes32 indexed accountId, uint64 indexed epochId, Reason reason, address indexed challenger, uint256 leafIndex
    );
    /// @notice `amount` wei of bond taken: `burned` stay locked here forever, `toPayer` to the
    ///         cheated account's payer, `toChallenger` to the challenger (pull, `withdraw`).
    event ProviderSlashed(
        bytes32 indexed providerId, uint256 amount, uint256 burned, uint256 toPayer, uint256 toChallenger
    );
    /// @notice A pending epoch was released unpaid (its provider was slashed, or it expired).
    event EpochReleased(bytes32 indexed accountId, uint64 indexed epochId, Reason reason);
    event EpochFinalized(bytes32 indexed accountId, uint64 indexed epochId, uint256 payment);
    event Withdrawn(address indexed account, uint256 amount);
    event EarningsWithdrawn(bytes32 indexed providerId, address indexed asset, address indexed to, uint256 amount);

    /// @notice A constructor parameter is out of range (`field` numbers Params' fields from 1).
    error InvalidParams(uint256 field);
    /// @notice The operator already registered a provider with this signing key.
    error ProviderAlreadyRegistered(bytes32 providerId);
    /// @notice No provider is registered under `providerId`.
    error UnknownProvider(bytes32 providerId);
    /// @notice A registration parameter is out of range (`field`: 1 bond, 2 unit price,
    ///         3 challenge window, 4 signing key), `value` the offending value.
    error InvalidParameter(uint256 field, uint256 value);
    /// @notice `caller` is not the operator of `providerId`.
    error NotOperator(bytes32 providerId, address caller);
    /// @notice `caller` is not the pending operator of `providerId`.
    error NotPendingOperator(bytes32 providerId, address caller);
    /// @notice The provider asked to unbond: it cannot submit until it cancels.
    error ProviderExiting(bytes32 providerId, uint256 unbondAt);
    /// @notice No exit was requested, or the cooldown runs until `unbondAt`.
    error UnbondNotReady(bytes32 providerId, uint256 unbondAt);
    /// @notice The provider still has `pendingEpochs` pending epochs.
    error EpochsPending(bytes32 providerId, uint256 pendingEpochs);
    /// @notice The bond `bond` minus the locked `locked` does not cover `required` (or the
    ///         bond is below the protocol minimum, e.g. after a slash).
    error InsufficientBond(bytes32 providerId, uint256 required, uint256 bond, uint256 locked);
    /// @notice The account (provider, payer, asset) is already open.
    error AccountExists(bytes32 accountId);
    /// @notice No account `accountId` was opened.
    error UnknownAccount(bytes32 accountId);
    /// @notice `caller` is not the payer of `accountId`.
    error NotPayer(bytes32 accountId, address caller);
    /// @notice The asset is not a contract (ERC-20 accounts only).
    error InvalidAsset(address asset);
    /// @notice The token moved `received` instead of `amount` (fee-on-transfer), or its balance
    ///         here dropped below what the contract holds (rebasing): it is not supported.
    error UnsupportedToken(address asset, uint256 amount, uint256 received);
    /// @notice An amount is zero, does not match msg.value, or overflows a 128-bit balance.
    error InvalidAmount(uint256 amount);
    /// @notice No withdrawal was requested, or its notice runs until `availableAt`.
    error WithdrawalNotReady(bytes32 accountId, uint256 availableAt);
    /// @notice Unreserved escrow is `available`, less than the `required` payment.
    error InsufficientEscrow(bytes32 accountId, uint256 required, uint256 available);
    /// @notice `epochId` is not above the account's last epoch id.
    error EpochIdNotIncreasing(bytes32 accountId, uint64 epochId, uint64 lastEpochId);
    /// @notice The number of leaves is not a power of two in [1, MAX_LEAVES].
    error InvalidLeafCount(uint256 count);
    /// @notice The total exceeds leafCount * (2^32 - 1).
    error TotalOutOfRange(uint256 total, uint256 max);
    /// @notice Leaf `index`'s tag is not above the previous leaf's.
    error TagsNotIncreasing(uint256 index);
    /// @notice Leaf `index`'s compressed commitment is not a point of the curve.
    error InvalidCommitment(uint256 index);
    /// @notice `V*G + R*H` differs from the sum of the submitted commitments.
    error TotalMismatch(bytes32 accountId, uint64 epochId, uint256 total);
    /// @notice No epoch `epochId` was submitted for `accountId`.
    error EpochNotFound(bytes32 accountId, uint64 epochId);
    /// @notice The epoch is not pending (finalized, rejected, expired, or voided by a slash).
    error EpochNotPending(bytes32 accountId, uint64 epochId, EpochStatus status);
    /// @notice Challenges and demands closed at `readyAt`.
    error ChallengeWindowClosed(bytes32 accountId, uint64 epochId, uint256 readyAt);
    /// @notice The challenge window is open until `readyAt`.
    error EpochNotFinalizable(bytes32 accountId, uint64 epochId, uint256 readyAt);
    /// @notice The account's previous epoch `prevEpochId` must settle first.
    error PreviousEpochPending(bytes32 accountId, uint64 epochId, uint64 prevEpochId);
    /// @notice `openDemands` data demands on the epoch are still open.
    error DemandsOpen(bytes32 accountId, uint64 epochId, uint256 openDemands);
    /// @notice `leafIndex` is not below the epoch's `leafCount`.
    error LeafIndexOutOfRange(uint256 leafIndex, uint256 leafCount);
    /// @notice The leaf and path do not hash to the epoch's Merkle root.
    error InvalidMerkleProof(bytes32 accountId, uint64 epochId, uint256 leafIndex);
    /// @notice The challenged range proof is valid: the challenge fails.
    error RangeProofValid(bytes32 accountId, uint64 epochId, uint256 leafIndex);
    /// @notice No commitment by the caller for this challenge exists from an earlier block.
    error NoChallengeCommitment(bytes32 commitment);
    /// @notice The demand is not in the status this call needs.
    error DemandNotOpen(bytes32 accountId, uint64 epochId, uint256 leafIndex, DemandStatus status);
    /// @notice A demand on this leaf exists already (`status`).
    error DemandExists(bytes32 accountId, uint64 epochId, uint256 leafIndex, DemandStatus status);
    /// @notice The response window of the demand closed at `deadline`.
    error DemandExpired(bytes32 accountId, uint64 epochId, uint256 leafIndex, uint256 deadline);
    /// @notice The response window of the demand is open until `deadline`.
    error DemandNotExpired(bytes32 accountId, uint64 epochId, uint256 leafIndex, uint256 deadline);
    /// @notice `account` has nothing to withdraw.
    error NothingToWithdraw(address account);
    /// @notice Sending `amount` wei to `to` failed.
    error TransferFailed(address to, uint256 amount);

    // ------------------------------------------------------------------ providers

    /// @notice Registers the caller as the operator of `keccak256(abi.encode(caller,
    ///         signingKey))` with `msg.value` wei of bond (at least `minBond`).
    /// @param signingKey The provider's Ed25519 public key (nonzero).
    /// @param unitPrice Price per unit for accounts opened while it is posted (nonzero, < 2^128).
    /// @param challengeWindow Seconds each epoch stays open (minChallengeWindow .. 2^24 - 1).
    /// @return providerId The new provider id.
    function registerProvider(bytes32 signingKey, uint256 unitPrice, uint256 challengeWindow)
        external
        payable
        returns (bytes32 providerId);

    /// @notice Posts a new unit price for accounts opened from now on; operator only.
    function setUnitPrice(bytes32 providerId, uint256 unitPrice) external;

    /// @notice Adds `msg.value` to the bond; operator only (re-bonding after a slash too).
    function addBond(bytes32 providerId) external payable;

    /// @notice Starts the bond cooldown and stops new submissions; operator only.
    function requestUnbond(bytes32 providerId) external;

    /// @notice Cancels a requested exit; operator only.
    function cancelUnbond(bytes32 providerId) external;

    /// @notice After the cooldown, with no pending epoch, sends the whole bond to `to`.
    function withdrawBond(bytes32 providerId, address to) external;

    /// @notice Offers the operator role to `newOperator` (zero cancels); operator only.
    function transferOperator(bytes32 providerId, address newOperator) external;

    /// @notice Takes the operator role offered to the caller.
    function acceptOperator(bytes32 providerId) external;

    // ------------------------------------------------------------------- accounts

    /// @notice Opens the caller's billing account with `providerId` in `asset` (address(0):
    ///         ETH) at the provider's posted unit price.
    /// @return accountId `keccak256(abi.encode(providerId, caller, asset))`.
    function openAccount(bytes32 providerId, address asset) external returns (bytes32 accountId);

    /// @notice Adds `amount` to the account's escrow; payer only. ETH: `msg.value == amount`;
    ///         ERC-20: pulled with `transferFrom` (approve first), exactly `amount` must arrive.
    function deposit(bytes32 accountId, uint256 amount) external payable;

    /// @notice Asks to withdraw `amount` of escrow after the notice (replaces an earlier
    ///         request and restarts the notice; 0 cancels); payer only.
    function requestWithdrawal(bytes32 accountId, uint256 amount) external;

    /// @notice After the notice, sends the requested amount, capped at the unreserved escrow,
    ///         to `to`; payer only.
    function completeWithdrawal(bytes32 accountId, address to) external;

    // --------------------------------------------------------------------- epochs

    /// @notice Submits epoch `epochId` of `accountId`: checks `total*G + totalBlinding*H ==
    ///         sum C_i`, stores the leaves' Merkle root, reserves `total * unitPrice` of escrow
    ///         and locks as much bond. Only the provider's operator.
    /// @param accountId The billing account.
    /// @param epochId Above the account's last epoch id.
    /// @param total V, the sum of the committed values (<= leafCount * (2^32 - 1)).
    /// @param totalBlinding R, the sum of the blindings mod r (< r).
    /// @param leaves The leaves in tree order, a power of two of them (at most MAX_LEAVES).
    function submitEpoch(
        bytes32 accountId,
        uint64 epochId,
        uint256 total,
        uint256 totalBlinding,
        Leaf[] calldata leaves
    ) external;

    /// @notice Records the caller's commitment to a later challenge or demand:
    ///         `challengeCommitment(kind, caller, accountId, epochId, leafIndex, salt)`.
    function commitChallenge(bytes32 commitment) external;

    /// @notice Reveals a committed range challenge of one leaf of a pending epoch, inside its
    ///         window. If the proof does not verify on-chain the provider is slashed and the
    ///         caller gets the challenger's share; if it verifies, reverts `RangeProofValid`.
    function challengeRangeProof(
        bytes32 accountId,
        uint64 epochId,
        uint256 leafIndex,
        bytes32 tag,
        uint256 commitmentX,
        uint256 commitmentY,
        bytes calldata proof,
        bytes32[] calldata path,
        bytes32 salt
    ) external;

    /// @notice Reveals a committed demand for leaf `leafIndex`'s data, with `demandBond` wei.
    function demandData(bytes32 accountId, uint64 epochId, uint256 leafIndex, bytes32 salt) external payable;

    /// @notice Answers an open demand with the leaf's data (checked against the root); the
    ///         demand bond goes to the caller and the window reopens for challenges.
    function answerDemand(
        bytes32 accountId,
        uint64 epochId,
        uint256 leafIndex,
        bytes32 tag,
        uint256 commitmentX,
        uint256 commitmentY,
        bytes calldata proof,
        bytes32[] calldata path
    ) external;

    /// @notice Settles an open demand: unanswered after its deadline, the provider is slashed
    ///         (the demander gets its bond back and the challenger's share); on an epoch that
    ///         is no longer pending, the bond is refunded. Anyone may call it.
    function resolveDemand(bytes32 accountId, uint64 epochId, uint256 leafIndex) external;

    /// @notice Settles a pending epoch; anyone may call it. Voided by a slash: released.
    ///         Past `readyAt + epochExpiry`: released (Expired). Otherwise, after the window,
    ///         with no open demand and the previous epoch settled: pays `total * unitPrice`.
    function finalize(bytes32 accountId, uint64 epochId) external;

    // ------------------------------------------------------------------- payments

    /// @notice Sends the caller its credited ETH (slash shares, demand bonds).
    function withdraw() external;

    /// @notice Sends the provider's earnings in `asset` to `to`; operator only.
    function withdrawEarnings(bytes32 providerId, address asset, address to) external;

    // ---------------------------------------------------------------------- views

    /// @notice At most this many leaves per submission.
    function MAX_LEAVES() external view returns (uint256);

    /// @notice The range proof verifier this contract calls.
    function verifier() external view returns (address);

    /// @notice The protocol parameters.
    function params() external view returns (Params memory);

    function getProvider(bytes32 providerId) external view returns (Provider memory);

    function getAccount(bytes32 accountId) external view returns (Account memory);

    /// @notice The epoch record, with a voided Pending epoch reported as Rejected.
    function getEpoch(bytes32 accountId, uint64 epochId) external view returns (Epoch memory);

    function getDemand(bytes32 accountId, uint64 epochId, uint256 leafIndex) external view returns (Demand memory);

    /// @notice The ETH `account` can withdraw.
    function balanceOf(address account) external view returns (uint256);

    /// @notice The provider's unwithdrawn earnings in `asset`.
    function earnings(bytes32 providerId, address asset) external view returns (uint256);

    /// @notice Wei burned by slashes (locked in this contract forever).
    function totalBurned() external view returns (uint256);

    /// @notice The block of a challenge commitment (0: none).
    function commitmentBlock(bytes32 commitment) external view returns (uint256);

    function providerIdOf(address operator, bytes32 signingKey) external pure returns (bytes32);

    function accountIdOf(bytes32 providerId, address payer, address asset) external pure returns (bytes32);

    /// @notice The commitment a challenger records first: kind 1 range challenge, 2 demand.
    function challengeCommitment(
        uint8 kind,
        address challenger,
        bytes32 accountId,
        uint64 epochId,
        uint256 leafIndex,
        bytes32 salt
    ) external pure returns (bytes32);
}
