// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// @title zkmeter settlement: pay a provider for an epoch total the commitments prove
/// @notice A provider registers with a bond, a unit price, a challenge window and its Ed25519
///         public key (its provider id, bound into every range proof's transcript). Payers
///         fund its escrow. Each epoch the provider submits one Pedersen commitment per leaf
///         with the leaf's tag and proof hash, the total V and the aggregate blinding R; the
///         contract checks `V*G + R*H == sum C_i` and stores the Merkle root of the leaves
///         (circuits/merkle.py). Inside the challenge window anyone may open one leaf with
///         its range proof: if the proof fails on-chain verification the epoch is rejected
///         and the whole bond goes to the challenger. After the window anyone may finalize:
///         `V * unitPrice` moves from the escrow to the provider's earnings. All payments are
///         pulled (`withdraw`, `withdrawEarnings`).
interface IZkMeterSettlement {
    /// @notice The life of an epoch: None (never submitted) -> Pending -> Finalized | Rejected.
    enum EpochStatus {
        None,
        Pending,
        Finalized,
        Rejected
    }

    /// @notice One leaf as submitted: exactly the preimage of its Merkle leaf hash,
    ///         `keccak256(tag || x || y || proofHash)`, 128 bytes of calldata.
    /// @param tag The leaf's 32-byte pseudonymous tag.
    /// @param x The commitment's x coordinate (< p).
    /// @param y The commitment's y coordinate (< p).
    /// @param proofHash keccak256 of the leaf's encoded range proof.
    struct Leaf {
        bytes32 tag;
        uint256 x;
        uint256 y;
        bytes32 proofHash;
    }

    /// @notice A registered provider (three storage slots).
    /// @param operator The address that registered it: the only submitter, paid its earnings.
    /// @param lastEpochId The last submitted epoch id (valid once `hasEpoch`).
    /// @param challengeWindow Seconds an epoch stays open to challenges.
    /// @param hasEpoch Whether any epoch was submitted yet.
    /// @param bond Wei at stake, paid to whoever proves a range proof of the provider bad.
    /// @param unitPrice Wei per committed unit.
    /// @param escrow Wei deposited by payers and not yet paid out.
    /// @param earnings Wei paid for finalized epochs, not yet withdrawn by the operator.
    struct Provider {
        address operator;
        uint64 lastEpochId;
        uint24 challengeWindow;
        bool hasEpoch;
        uint128 bond;
        uint128 unitPrice;
        uint128 escrow;
        uint128 earnings;
    }

    /// @notice A submitted epoch (two storage slots).
    /// @param merkleRoot Root of the leaves' Merkle tree.
    /// @param total The committed total V, in units.
    /// @param readyAt Timestamp at which the challenge window closes and finalize opens.
    /// @param depth log2 of the number of leaves.
    /// @param status The epoch's status.
    struct Epoch {
        bytes32 merkleRoot;
        uint96 total;
        uint64 readyAt;
        uint8 depth;
        EpochStatus status;
    }

    /// @notice A provider registered.
    event ProviderRegistered(
        bytes32 indexed providerId,
        address indexed operator,
        uint256 bond,
        uint256 unitPrice,
        uint256 challengeWindow
    );
    /// @notice The operator added to its bond.
    event BondAdded(bytes32 indexed providerId, uint256 amount, uint256 bond);
    /// @notice A payer funded a provider's escrow.
    event Deposited(bytes32 indexed providerId, address indexed payer, uint256 amount);
    /// @notice An epoch was submitted; it can be challenged until `readyAt`.
    event EpochSubmitted(
        bytes32 indexed providerId,
        uint64 indexed epochId,
        bytes32 merkleRoot,
        uint256 total,
        uint256 leafCount,
        uint256 readyAt
    );
    /// @notice A challenge showed the range proof of leaf `leafIndex` invalid: the epoch is
    ///         rejected and `slashed` wei of bond are credited to `challenger`.
    event EpochRejected(
        bytes32 indexed providerId,
        uint64 indexed epochId,
        address indexed challenger,
        uint256 leafIndex,
        uint256 slashed
    );
    /// @notice An epoch was finalized and `payment` wei moved from escrow to earnings.
    event EpochFinalized(bytes32 indexed providerId, uint64 indexed epochId, uint256 payment);
    /// @notice `account` withdrew `amount` wei of credited balance.
    event Withdrawn(address indexed account, uint256 amount);
    /// @notice The operator of `providerId` withdrew `amount` wei of earnings.
    event EarningsWithdrawn(bytes32 indexed providerId, address indexed operator, uint256 amount);

    /// @notice `providerId` is already registered.
    error ProviderAlreadyRegistered(bytes32 providerId);
    /// @notice No provider is registered under `providerId`.
    error UnknownProvider(bytes32 providerId);
    /// @notice A registration parameter is out of range (`field`: 1 bond, 2 unit price,
    ///         3 challenge window, 4 provider id), `value` the offending value.
    error InvalidParameter(uint256 field, uint256 value);
    /// @notice `caller` is not the operator of `providerId`.
    error NotOperator(bytes32 providerId, address caller);
    /// @notice The provider has no bond left (it was slashed): it must add bond to submit.
    error NoBond(bytes32 providerId);
    /// @notice `epochId` is not above the provider's last epoch id `lastEpochId`.
    error EpochIdNotIncreasing(bytes32 providerId, uint64 epochId, uint64 lastEpochId);
    /// @notice The number of leaves is not a power of two in [1, 2^16].
    error InvalidLeafCount(uint256 count);
    /// @notice The total V is not below 2^96 (a valid epoch's V is below 2^48).
    error TotalOutOfRange(uint256 total);
    /// @notice `V*G + R*H` differs from the sum of the submitted commitments.
    error TotalMismatch(bytes32 providerId, uint64 epochId, uint256 total);
    /// @notice No epoch `epochId` was submitted by `providerId`.
    error EpochNotFound(bytes32 providerId, uint64 epochId);
    /// @notice The epoch is not pending (already finalized or rejected).
    error EpochNotPending(bytes32 providerId, uint64 epochId, EpochStatus status);
    /// @notice The challenge window closed at `readyAt`.
    error ChallengeWindowClosed(bytes32 providerId, uint64 epochId, uint256 readyAt);
    /// @notice The challenge window is still open until `readyAt`.
    error EpochNotFinalizable(bytes32 providerId, uint64 epochId, uint256 readyAt);
    /// @notice `leafIndex` is not below the epoch's `leafCount`.
    error LeafIndexOutOfRange(uint256 leafIndex, uint256 leafCount);
    /// @notice The leaf and path do not hash to the epoch's Merkle root.
    error InvalidMerkleProof(bytes32 providerId, uint64 epochId, uint256 leafIndex);
    /// @notice The challenged range proof is valid: the challenge fails.
    error RangeProofValid(bytes32 providerId, uint64 epochId, uint256 leafIndex);
    /// @notice The escrow holds `available` wei, less than the `required` payment.
    error InsufficientEscrow(bytes32 providerId, uint256 required, uint256 available);
    /// @notice A deposit or bond would overflow its 128-bit balance, or is zero.
    error InvalidAmount(uint256 amount);
    /// @notice `account` has nothing to withdraw.
    error NothingToWithdraw(address account);
    /// @notice Sending `amount` wei to `account` failed.
    error TransferFailed(address account, uint256 amount);
    /// @notice A withdrawal re-entered the contract.
    error Reentrancy();

    /// @notice Registers the caller as the operator of `providerId`, staking `msg.value` as bond.
    /// @param providerId The provider's Ed25519 public key (nonzero); range proofs bind it.
    /// @param unitPrice Wei paid per committed unit (nonzero, < 2^128).
    /// @param challengeWindow Seconds each epoch stays open to challenges (1 .. 2^24 - 1).
    function registerProvider(bytes32 providerId, uint256 unitPrice, uint256 challengeWindow)
        external
        payable;

    /// @notice Adds `msg.value` to the bond of `providerId`; only its operator.
    function addBond(bytes32 providerId) external payable;

    /// @notice Adds `msg.value` to the escrow `providerId` is paid from; anyone.
    function deposit(bytes32 providerId) external payable;

    /// @notice Submits epoch `epochId`: checks `total*G + totalBlinding*H == sum C_i`, stores
    ///         the Merkle root of the leaves and opens the challenge window. Only the operator;
    ///         epoch ids strictly increase.
    /// @param providerId The provider.
    /// @param epochId The epoch id, above the last one.
    /// @param total V, the sum of the committed values (< 2^96).
    /// @param totalBlinding R, the sum of the blindings mod r (< r).
    /// @param leaves The leaves in tree order, a power of two of them (at most 2^16).
    function submitEpoch(
        bytes32 providerId,
        uint64 epochId,
        uint256 total,
        uint256 totalBlinding,
        Leaf[] calldata leaves
    ) external;

    /// @notice Challenges the range proof of one leaf of a pending epoch, inside its window.
    ///         If the proof does not verify on-chain (for this chain, this contract, the
    ///         provider id and the epoch id) the epoch is rejected and the bond is credited to
    ///         the caller; if it verifies, the call reverts with `RangeProofValid`.
    /// @param providerId The provider.
    /// @param epochId The epoch.
    /// @param leafIndex The leaf's index in the tree.
    /// @param tag The leaf's tag.
    /// @param commitmentX The leaf's commitment, x.
    /// @param commitmentY The leaf's commitment, y.
    /// @param proof The leaf's range proof bytes (its keccak256 is in the leaf).
    /// @param path The sibling hashes from the leaf up (circuits/merkle.py).
    function challengeRangeProof(
        bytes32 providerId,
        uint64 epochId,
        uint256 leafIndex,
        bytes32 tag,
        uint256 commitmentX,
        uint256 commitmentY,
        bytes calldata proof,
        bytes32[] calldata path
    ) external;

    /// @notice After the window, moves `total * unitPrice` from the escrow to the provider's
    ///         earnings, once; anyone may call it.
    function finalize(bytes32 providerId, uint64 epochId) external;

    /// @notice Sends the caller its credited balance (slashed bonds it won).
    function withdraw() external;

    /// @notice Sends the operator of `providerId` its earnings; only the operator.
    function withdrawEarnings(bytes32 providerId) external;

    /// @notice The range proof verifier this contract calls.
    function verifier() external view returns (address);

    /// @notice The record of `providerId`.
    function getProvider(bytes32 providerId) external view returns (Provider memory);

    /// @notice The record of epoch `epochId` of `providerId`.
    function getEpoch(bytes32 providerId, uint64 epochId) external view returns (Epoch memory);

    /// @notice The balance `account` can withdraw.
    function balanceOf(address account) external view returns (uint256);
}
