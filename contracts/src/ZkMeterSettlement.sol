// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {BN254} from "./BN254.sol";
import {BulletproofGenerators as Gens} from "./BulletproofGenerators.sol";
import {IBulletproofVerifier} from "./IBulletproofVerifier.sol";
import {IZkMeterSettlement} from "./IZkMeterSettlement.sol";

/// @title ZkMeterSettlement
/// @notice See {IZkMeterSettlement}. Every state-changing function runs in the order
///         checks -> verify (view) -> effects -> events -> interactions; the only outgoing
///         value transfers are the pull payments, behind a reentrancy lock.
contract ZkMeterSettlement is IZkMeterSettlement {
    /// @notice At most 2^16 leaves an epoch (depth <= 16).
    uint256 public constant MAX_LEAVES = 1 << 16;

    IBulletproofVerifier private immutable VERIFIER;

    mapping(bytes32 providerId => Provider) private _providers;
    mapping(bytes32 providerId => mapping(uint64 epochId => Epoch)) private _epochs;
    mapping(address account => uint256) private _balances;

    /// @dev Reentrancy lock of the pull payments: 1 open, 2 held (never 0, so taking it
    ///      costs a warm nonzero-to-nonzero write).
    uint256 private _lock = 1;

    /// @param verifier_ The BulletproofVerifier deployment.
    constructor(IBulletproofVerifier verifier_) {
        VERIFIER = verifier_;
    }

    modifier nonReentrant() {
        if (_lock != 1) revert Reentrancy();
        _lock = 2;
        _;
        _lock = 1;
    }

    // ------------------------------------------------------------------ providers

    /// @inheritdoc IZkMeterSettlement
    function registerProvider(bytes32 providerId, uint256 unitPrice, uint256 challengeWindow)
        external
        payable
    {
        if (providerId == bytes32(0)) revert InvalidParameter(4, 0);
        if (msg.value == 0 || msg.value > type(uint128).max) revert InvalidParameter(1, msg.value);
        if (unitPrice == 0 || unitPrice > type(uint128).max) revert InvalidParameter(2, unitPrice);
        if (challengeWindow == 0 || challengeWindow > type(uint24).max) {
            revert InvalidParameter(3, challengeWindow);
        }
        Provider storage p = _providers[providerId];
        if (p.operator != address(0)) revert ProviderAlreadyRegistered(providerId);

        p.operator = msg.sender;
        p.challengeWindow = uint24(challengeWindow);
        p.bond = uint128(msg.value);
        p.unitPrice = uint128(unitPrice);
        emit ProviderRegistered(providerId, msg.sender, msg.value, unitPrice, challengeWindow);
    }

    /// @inheritdoc IZkMeterSettlement
    function addBond(bytes32 providerId) external payable {
        Provider storage p = _operatorOf(providerId);
        uint256 bond = uint256(p.bond) + msg.value;
        if (msg.value == 0 || bond > type(uint128).max) revert InvalidAmount(msg.value);

        p.bond = uint128(bond);
        emit BondAdded(providerId, msg.value, bond);
    }

    /// @inheritdoc IZkMeterSettlement
    function deposit(bytes32 providerId) external payable {
        Provider storage p = _providers[providerId];
        if (p.operator == address(0)) revert UnknownProvider(providerId);
        uint256 escrow = uint256(p.escrow) + msg.value;
        if (msg.value == 0 || escrow > type(uint128).max) revert InvalidAmount(msg.value);

        p.escrow = uint128(escrow);
        emit Deposited(providerId, msg.sender, msg.value);
    }

    // --------------------------------------------------------------------- epochs

    /// @inheritdoc IZkMeterSettlement
    function submitEpoch(
        bytes32 providerId,
        uint64 epochId,
        uint256 total,
        uint256 totalBlinding,
        Leaf[] calldata leaves
    ) external {
        Provider storage p = _operatorOf(providerId);
        if (p.bond == 0) revert NoBond(providerId);
        if (p.hasEpoch && epochId <= p.lastEpochId) {
            revert EpochIdNotIncreasing(providerId, epochId, p.lastEpochId);
        }
        uint256 count = leaves.length;
        if (count == 0 || count > MAX_LEAVES || count & (count - 1) != 0) {
            revert InvalidLeafCount(count);
        }
        if (total > type(uint96).max) revert TotalOutOfRange(total);
        BN254.validateScalar(totalBlinding);

        (uint256 sumX, uint256 sumY, bytes32 root) = _sumAndRoot(leaves);
        if (!_opens(total, totalBlinding, sumX, sumY)) revert TotalMismatch(providerId, epochId, total);

        uint256 readyAt = block.timestamp + p.challengeWindow;
        p.lastEpochId = epochId;
        p.hasEpoch = true;
        Epoch storage e = _epochs[providerId][epochId];
        e.merkleRoot = root;
        e.total = uint96(total);
        e.readyAt = uint64(readyAt);
        e.depth = uint8(_log2(count));
        e.status = EpochStatus.Pending;
        emit EpochSubmitted(providerId, epochId, root, total, count, readyAt);
    }

    /// @inheritdoc IZkMeterSettlement
    function challengeRangeProof(
        bytes32 providerId,
        uint64 epochId,
        uint256 leafIndex,
        bytes32 tag,
        uint256 commitmentX,
        uint256 commitmentY,
        bytes calldata proof,
        bytes32[] calldata path
    ) external {
        Epoch storage e = _pendingEpoch(providerId, epochId);
        if (block.timestamp >= e.readyAt) revert ChallengeWindowClosed(providerId, epochId, e.readyAt);
        bytes32 leaf = keccak256(abi.encodePacked(tag, commitmentX, commitmentY, keccak256(proof)));
        _checkInclusion(e, providerId, epochId, leafIndex, leaf, path);
        if (_proofValid(providerId, epochId, commitmentX, commitmentY, proof)) {
            revert RangeProofValid(providerId, epochId, leafIndex);
        }

        e.status = EpochStatus.Rejected;
        Provider storage p = _providers[providerId];
        uint256 slashed = p.bond;
        p.bond = 0;
        _balances[msg.sender] += slashed;
        emit EpochRejected(providerId, epochId, msg.sender, leafIndex, slashed);
    }

    /// @inheritdoc IZkMeterSettlement
    function finalize(bytes32 providerId, uint64 epochId) external {
        Epoch storage e = _pendingEpoch(providerId, epochId);
        uint256 readyAt = e.readyAt;
        if (block.timestamp < readyAt) revert EpochNotFinalizable(providerId, epochId, readyAt);
        Provider storage p = _providers[providerId];
        uint256 payment = uint256(e.total) * p.unitPrice;
        uint256 escrow = p.escrow;
        if (payment > escrow) revert InsufficientEscrow(providerId, payment, escrow);

        e.status = EpochStatus.Finalized;
        p.escrow = uint128(escrow - payment);
        p.earnings += uint128(payment);
        emit EpochFinalized(providerId, epochId, payment);
    }

    // ------------------------------------------------------------------- payments

    /// @inheritdoc IZkMeterSettlement
    function withdraw() external nonReentrant {
        uint256 amount = _balances[msg.sender];
        if (amount == 0) revert NothingToWithdraw(msg.sender);

        _balances[msg.sender] = 0;
        emit Withdrawn(msg.sender, amount);
        _send(msg.sender, amount);
    }

    /// @inheritdoc IZkMeterSettlement
    function withdrawEarnings(bytes32 providerId) external nonReentrant {
        Provider storage p = _operatorOf(providerId);
        uint256 amount = p.earnings;
        if (amount == 0) revert NothingToWithdraw(msg.sender);

        p.earnings = 0;
        emit EarningsWithdrawn(providerId, msg.sender, amount);
        _send(msg.sender, amount);
    }

    // ---------------------------------------------------------------------- views

    /// @inheritdoc IZkMeterSettlement
    function verifier() external view returns (address) {
        return address(VERIFIER);
    }

    /// @inheritdoc IZkMeterSettlement
    function getProvider(bytes32 providerId) external view returns (Provider memory) {
        return _providers[providerId];
    }

    /// @inheritdoc IZkMeterSettlement
    function getEpoch(bytes32 providerId, uint64 epochId) external view returns (Epoch memory) {
        return _epochs[providerId][epochId];
    }

    /// @inheritdoc IZkMeterSettlement
    function balanceOf(address account) external view returns (uint256) {
        return _balances[account];
    }

    // ------------------------------------------------------------------ internals

    /// @dev The provider record, after checking that the caller is its operator.
    function _operatorOf(bytes32 providerId) private view returns (Provider storage p) {
        p = _providers[providerId];
        address operator = p.operator;
        if (operator == address(0)) revert UnknownProvider(providerId);
        if (operator != msg.sender) revert NotOperator(providerId, msg.sender);
    }

    /// @dev The epoch record, after checking that it exists and is pending.
    function _pendingEpoch(bytes32 providerId, uint64 epochId) private view returns (Epoch storage e) {
        e = _epochs[providerId][epochId];
        EpochStatus status = e.status;
        if (status == EpochStatus.None) revert EpochNotFound(providerId, epochId);
        if (status != EpochStatus.Pending) revert EpochNotPending(providerId, epochId, status);
    }

    /// @dev total*G + totalBlinding*H == (sumX, sumY).
    function _opens(uint256 total, uint256 totalBlinding, uint256 sumX, uint256 sumY)
        private
        view
        returns (bool)
    {
        (uint256 ex, uint256 ey) = BN254.mul(BN254.G_X, BN254.G_Y, total);
        (uint256 hx, uint256 hy) = BN254.mul(Gens.H_X, Gens.H_Y, totalBlinding);
        (ex, ey) = BN254.add(ex, ey, hx, hy);
        return ex == sumX && ey == sumY;
    }

    /// @dev Reverts unless `leaf` at `leafIndex` with `path` hashes up to the epoch's root.
    function _checkInclusion(
        Epoch storage e,
        bytes32 providerId,
        uint64 epochId,
        uint256 leafIndex,
        bytes32 leaf,
        bytes32[] calldata path
    ) private view {
        uint256 depth = e.depth;
        if (leafIndex >> depth != 0) revert LeafIndexOutOfRange(leafIndex, 1 << depth);
        if (path.length != depth || _root(leaf, leafIndex, path) != e.merkleRoot) {
            revert InvalidMerkleProof(providerId, epochId, leafIndex);
        }
    }

    /// @dev The verifier's answer for this chain, this contract, the provider and the epoch.
    ///      A revert inside the verifier (out of gas) reverts the challenge: it is never read
    ///      as an invalid proof.
    function _proofValid(
        bytes32 providerId,
        uint64 epochId,
        uint256 commitmentX,
        uint256 commitmentY,
        bytes calldata proof
    ) private view returns (bool) {
        return VERIFIER.verify(
            block.chainid, address(this), providerId, epochId, commitmentX, commitmentY, proof
        );
    }

    /// @dev Checks every commitment (coordinates < p, on the curve, not the identity), sums
    ///      them with ECADD, and computes the Merkle root of circuits/merkle.py:
    ///      leaf = keccak256(tag || x || y || proofHash) (the Leaf's 128 calldata bytes),
    ///      node = keccak256(left || right), hashed in place level by level.
    function _sumAndRoot(Leaf[] calldata leaves)
        private
        view
        returns (uint256 sumX, uint256 sumY, bytes32 root)
    {
        uint256 count = leaves.length;
        uint256 bad = type(uint256).max;
        bool ok = true;
        assembly ("memory-safe") {
            let buf := mload(0x40)
            let scratch := add(buf, shl(5, count)) // 0x80 bytes: acc || term
            mstore(0x40, add(scratch, 0x80))
            mstore(scratch, 0)
            mstore(add(scratch, 0x20), 0)
            let p := 21888242871839275222246405745257275088696311157297823662689037894645226208583
            for { let i := 0 } lt(i, count) { i := add(i, 1) } {
                let src := add(leaves.offset, shl(7, i))
                let x := calldataload(add(src, 0x20))
                let y := calldataload(add(src, 0x40))
                if iszero(
                    and(
                        and(lt(x, p), lt(y, p)),
                        eq(mulmod(y, y, p), addmod(mulmod(x, mulmod(x, x, p), p), 3, p))
                    )
                ) {
                    bad := i
                    break
                }
                mstore(add(scratch, 0x40), x)
                mstore(add(scratch, 0x60), y)
                ok := and(ok, staticcall(gas(), 0x06, scratch, 0x80, scratch, 0x40))
                calldatacopy(add(scratch, 0x40), src, 0x80)
                mstore(add(buf, shl(5, i)), keccak256(add(scratch, 0x40), 0x80))
            }
            sumX := mload(scratch)
            sumY := mload(add(scratch, 0x20))
            for { let width := count } gt(width, 1) { width := shr(1, width) } {
                for { let i := 0 } lt(i, shr(1, width)) { i := add(i, 1) } {
                    mstore(add(buf, shl(5, i)), keccak256(add(buf, shl(6, i)), 0x40))
                }
            }
            root := mload(buf)
        }
        if (bad != type(uint256).max) BN254.validatePoint(leaves[bad].x, leaves[bad].y);
        if (!ok) revert BN254.PrecompileFailed(0x06);
    }

    /// @dev The root reached from `node` at `index` with the sibling hashes `path` (leaf up;
    ///      bit d of the index set means the running hash is the right child at depth d).
    function _root(bytes32 node, uint256 index, bytes32[] calldata path) private pure returns (bytes32) {
        for (uint256 d = 0; d < path.length; ++d) {
            bytes32 sibling = path[d];
            node = (index >> d) & 1 == 1
                ? keccak256(abi.encodePacked(sibling, node))
                : keccak256(abi.encodePacked(node, sibling));
        }
        return node;
    }

    /// @dev log2 of a power of two.
    function _log2(uint256 x) private pure returns (uint256 n) {
        while (x > 1) {
            x >>= 1;
            ++n;
        }
    }

    /// @dev Sends `amount` wei to `to`, reverting on failure.
    function _send(address to, uint256 amount) private {
        (bool ok,) = to.call{value: amount}("");
        if (!ok) revert TransferFailed(to, amount);
    }
}
