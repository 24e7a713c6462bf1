// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";

import {BN254} from "./BN254.sol";
import {BulletproofGenerators as Gens} from "./BulletproofGenerators.sol";
import {IBulletproofVerifier} from "./IBulletproofVerifier.sol";
import {IZkMeterSettlement} from "./IZkMeterSettlement.sol";

/// @title ZkMeterSettlement
/// @notice See {IZkMeterSettlement}. Every state-changing function runs in the order
///         checks -> verify (view) -> effects -> events -> interactions; every transfer out
///         and every token pull sits behind OpenZeppelin's ReentrancyGuard.
contract ZkMeterSettlement is IZkMeterSettlement, ReentrancyGuard {
    using SafeERC20 for IERC20;

    /// @inheritdoc IZkMeterSettlement
    /// @dev 1,024 leaves of 96 bytes are 98 KB of calldata, under a public mempool's 128 KiB
    ///      per transaction, and about 5.4M gas, under EIP-7825's 2^24 per transaction.
    uint256 public constant MAX_LEAVES = 1 << 10;

    /// @notice The range proofs' bit size (BulletproofVerifier handles n = 32, m = 1 only).
    uint256 public constant BIT_SIZE = 32;

    /// @notice Shares of a slashed bond, in basis points: burned, to the payer, to the
    ///         challenger (the rest).
    uint256 public constant BURN_BPS = 5_000;
    uint256 public constant PAYER_BPS = 4_000;

    /// @dev The BN254 base field modulus p, (p + 1) / 4 (p = 3 mod 4, so a square root of a
    ///      is a^((p+1)/4)), and the mask of a compressed x (bit 255 carries y's parity).
    uint256 private constant P = 21888242871839275222246405745257275088696311157297823662689037894645226208583;
    uint256 private constant SQRT_EXPONENT = 0xc19139cb84c680a6e14116da060561765e05aa45a1c72a34f082305b61f3f52;
    uint256 private constant X_MASK = (1 << 255) - 1;

    uint8 private constant KIND_RANGE = 1;
    uint8 private constant KIND_DEMAND = 2;

    IBulletproofVerifier private immutable VERIFIER;
    uint64 private immutable MIN_CHALLENGE_WINDOW;
    uint64 private immutable RESPONSE_WINDOW;
    uint64 private immutable WITHDRAWAL_NOTICE;
    uint64 private immutable BOND_COOLDOWN;
    uint64 private immutable EPOCH_EXPIRY;
    uint128 private immutable MIN_BOND;
    uint128 private immutable DEMAND_BOND;

    mapping(bytes32 providerId => Provider) private _providers;
    mapping(bytes32 accountId => Account) private _accounts;
    mapping(bytes32 accountId => mapping(uint64 epochId => Epoch)) private _epochs;
    mapping(bytes32 demandKey => Demand) private _demands;
    mapping(bytes32 commitment => uint256 blockNumber) private _commitments;
    mapping(address account => uint256) private _balances;
    mapping(bytes32 providerId => mapping(address asset => uint256)) private _earnings;
    /// @dev ERC-20 units held for all accounts and earnings, per token (the rebasing check).
    mapping(address asset => uint256) private _held;
    uint256 private _burned;

    /// @param verifier_ The BulletproofVerifier deployment.
    /// @param p The protocol parameters (see {Params}).
    constructor(IBulletproofVerifier verifier_, Params memory p) {
        if (p.minChallengeWindow == 0 || p.minChallengeWindow >= type(uint24).max) revert InvalidParams(1);
        if (p.responseWindow == 0) revert InvalidParams(2);
        if (p.withdrawalNotice < p.minChallengeWindow) revert InvalidParams(3);
        if (p.bondCooldown < p.minChallengeWindow) revert InvalidParams(4);
        if (p.epochExpiry < p.responseWindow) revert InvalidParams(5);
        if (p.minBond == 0) revert InvalidParams(6);
        if (p.demandBond == 0) revert InvalidParams(7);
        VERIFIER = verifier_;
        MIN_CHALLENGE_WINDOW = p.minChallengeWindow;
        RESPONSE_WINDOW = p.responseWindow;
        WITHDRAWAL_NOTICE = p.withdrawalNotice;
        BOND_COOLDOWN = p.bondCooldown;
        EPOCH_EXPIRY = p.epochExpiry;
        MIN_BOND = p.minBond;
        DEMAND_BOND = p.demandBond;
    }

    // ------------------------------------------------------------------ providers

    /// @inheritdoc IZkMeterSettlement
    function registerProvider(bytes32 signingKey, uint256 unitPrice, uint256 challengeWindow)
        external
        payable
        returns (bytes32 providerId)
    {
        if (signingKey == bytes32(0)) revert InvalidParameter(4, 0);
        if (msg.value < MIN_BOND || msg.value > type(uint128).max) revert InvalidParameter(1, msg.value);
        if (unitPrice == 0 || unitPrice > type(uint128).max) revert InvalidParameter(2, unitPrice);
        if (challengeWindow < MIN_CHALLENGE_WINDOW || challengeWindow > type(uint24).max) {
            revert InvalidParameter(3, challengeWindow);
        }
        providerId = providerIdOf(msg.sender, signingKey);
        Provider storage p = _providers[providerId];
        if (p.operator != address(0)) revert ProviderAlreadyRegistered(providerId);

        p.operator = msg.sender;
        p.challengeWindow = uint24(challengeWindow);
        p.bond = uint128(msg.value);
        p.unitPrice = uint128(unitPrice);
        p.signingKey = signingKey;
        emit ProviderRegistered(providerId, msg.sender, signingKey, msg.value, unitPrice, challengeWindow);
    }

    /// @inheritdoc IZkMeterSettlement
    function setUnitPrice(bytes32 providerId, uint256 unitPrice) external {
        Provider storage p = _operatorOf(providerId);
        if (unitPrice == 0 || unitPrice > type(uint128).max) revert InvalidParameter(2, unitPrice);
        p.unitPrice = uint128(unitPrice);
        emit UnitPriceSet(providerId, unitPrice);
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
    function requestUnbond(bytes32 providerId) external {
        Provider storage p = _operatorOf(providerId);
        uint256 unbondAt = block.timestamp + BOND_COOLDOWN;
        p.unbondAt = uint64(unbondAt);
        emit UnbondRequested(providerId, unbondAt);
    }

    /// @inheritdoc IZkMeterSettlement
    function cancelUnbond(bytes32 providerId) external {
        Provider storage p = _operatorOf(providerId);
        if (p.unbondAt == 0) revert UnbondNotReady(providerId, 0);
        p.unbondAt = 0;
        emit UnbondCancelled(providerId);
    }

    /// @inheritdoc IZkMeterSettlement
    function withdrawBond(bytes32 providerId, address to) external nonReentrant {
        Provider storage p = _operatorOf(providerId);
        uint256 unbondAt = p.unbondAt;
        if (unbondAt == 0 || block.timestamp < unbondAt) revert UnbondNotReady(providerId, unbondAt);
        if (p.pendingEpochs != 0) revert EpochsPending(providerId, p.pendingEpochs);
        uint256 amount = p.bond;
        if (amount == 0) revert NothingToWithdraw(msg.sender);

        p.bond = 0;
        p.unbondAt = 0;
        emit BondWithdrawn(providerId, to, amount);
        _sendEth(to, amount);
    }

    /// @inheritdoc IZkMeterSettlement
    function transferOperator(bytes32 providerId, address newOperator) external {
        Provider storage p = _operatorOf(providerId);
        p.pendingOperator = newOperator;
        emit OperatorTransferStarted(providerId, newOperator);
    }

    /// @inheritdoc IZkMeterSettlement
    function acceptOperator(bytes32 providerId) external {
        Provider storage p = _providers[providerId];
        if (p.operator == address(0)) revert UnknownProvider(providerId);
        if (p.pendingOperator != msg.sender || msg.sender == address(0)) {
            revert NotPendingOperator(providerId, msg.sender);
        }
        address previous = p.operator;
        p.operator = msg.sender;
        p.pendingOperator = address(0);
        emit OperatorTransferred(providerId, previous, msg.sender);
    }

    // ------------------------------------------------------------------- accounts

    /// @inheritdoc IZkMeterSettlement
    function openAccount(bytes32 providerId, address asset) external returns (bytes32 accountId) {
        Provider storage p = _providers[providerId];
        if (p.operator == address(0)) revert UnknownProvider(providerId);
        if (asset != address(0) && asset.code.length == 0) revert InvalidAsset(asset);
        accountId = accountIdOf(providerId, msg.sender, asset);
        Account storage a = _accounts[accountId];
        if (a.payer != address(0)) revert AccountExists(accountId);

        a.providerId = providerId;
        a.payer = msg.sender;
        a.asset = asset;
        a.unitPrice = p.unitPrice;
        emit AccountOpened(accountId, providerId, msg.sender, asset, p.unitPrice);
    }

    /// @inheritdoc IZkMeterSettlement
    function deposit(bytes32 accountId, uint256 amount) external payable nonReentrant {
        Account storage a = _payerOf(accountId);
        uint256 escrow = uint256(a.escrow) + amount;
        if (amount == 0 || escrow > type(uint128).max) revert InvalidAmount(amount);
        address asset = a.asset;
        if (asset == address(0)) {
            if (msg.value != amount) revert InvalidAmount(msg.value);
        } else {
            if (msg.value != 0) revert InvalidAmount(msg.value);
            _pullToken(asset, amount);
        }
        a.escrow = uint128(escrow);
        emit Deposited(accountId, amount, escrow);
    }

    /// @inheritdoc IZkMeterSettlement
    function requestWithdrawal(bytes32 accountId, uint256 amount) external {
        Account storage a = _payerOf(accountId);
        if (amount > a.escrow) revert InvalidAmount(amount);
        uint256 notice = WITHDRAWAL_NOTICE;
        uint256 window = _providers[a.providerId].challengeWindow;
        uint256 availableAt = block.timestamp + (window > notice ? window : notice);
        a.withdrawalAmount = uint128(amount);
        a.withdrawalAt = amount == 0 ? 0 : uint64(availableAt);
        emit WithdrawalRequested(accountId, amount, amount == 0 ? 0 : availableAt);
    }

    /// @inheritdoc IZkMeterSettlement
    function completeWithdrawal(bytes32 accountId, address to) external nonReentrant {
        Account storage a = _payerOf(accountId);
        uint256 requested = a.withdrawalAmount;
        uint256 availableAt = a.withdrawalAt;
        if (requested == 0 || block.timestamp < availableAt) revert WithdrawalNotReady(accountId, availableAt);
        uint256 free = a.escrow - a.reserved;
        uint256 amount = requested < free ? requested : free;
        if (amount == 0) revert InsufficientEscrow(accountId, requested, 0);

        a.escrow -= uint128(amount);
        a.withdrawalAmount = 0;
        a.withdrawalAt = 0;
        emit WithdrawalCompleted(accountId, to, amount);
        _transferOut(a.asset, to, amount);
    }

    // --------------------------------------------------------------------- epochs

    /// @inheritdoc IZkMeterSettlement
    function submitEpoch(
        bytes32 accountId,
        uint64 epochId,
        uint256 total,
        uint256 totalBlinding,
        Leaf[] calldata leaves
    ) external {
        uint256 payment = _checkSubmission(accountId, epochId, total, leaves.length);
        BN254.validateScalar(totalBlinding);
        (uint256 sumX, uint256 sumY, bytes32 root) = _sumAndRoot(leaves);
        if (!_opens(total, totalBlinding, sumX, sumY)) revert TotalMismatch(accountId, epochId, total);
        _recordEpoch(accountId, epochId, total, payment, root, leaves.length);
    }

    /// @inheritdoc IZkMeterSettlement
    function commitChallenge(bytes32 commitment) external {
        if (_commitments[commitment] == 0) {
            _commitments[commitment] = block.number;
            emit ChallengeCommitted(commitment, msg.sender);
        }
    }

    /// @inheritdoc IZkMeterSettlement
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
    ) external {
        Epoch storage e = _openEpoch(accountId, epochId);
        _checkInclusion(e, accountId, epochId, leafIndex, _leafHash(tag, commitmentX, commitmentY, proof), path);
        if (VERIFIER.verify(block.chainid, address(this), accountId, epochId, commitmentX, commitmentY, proof)) {
            revert RangeProofValid(accountId, epochId, leafIndex);
        }
        _useCommitment(KIND_RANGE, accountId, epochId, leafIndex, salt);
        _slash(accountId, epochId, e, Reason.BadRangeProof, leafIndex, msg.sender);
    }

    /// @inheritdoc IZkMeterSettlement
    function demandData(bytes32 accountId, uint64 epochId, uint256 leafIndex, bytes32 salt) external payable {
        Epoch storage e = _openEpoch(accountId, epochId);
        if (msg.value != DEMAND_BOND) revert InvalidAmount(msg.value);
        uint256 count = 1 << e.depth;
        if (leafIndex >= count) revert LeafIndexOutOfRange(leafIndex, count);
        Demand storage d = _demands[_demandKey(accountId, epochId, leafIndex)];
        if (d.status != DemandStatus.None) revert DemandExists(accountId, epochId, leafIndex, d.status);
        _useCommitment(KIND_DEMAND, accountId, epochId, leafIndex, salt);

        uint256 deadline = block.timestamp + RESPONSE_WINDOW;
        d.demander = msg.sender;
        d.deadline = uint64(deadline);
        d.status = DemandStatus.Open;
        e.openDemands += 1;
        emit DataDemanded(accountId, epochId, leafIndex, msg.sender, deadline);
    }

    /// @inheritdoc IZkMeterSettlement
    function answerDemand(
        bytes32 accountId,
        uint64 epochId,
        uint256 leafIndex,
        bytes32 tag,
        uint256 commitmentX,
        uint256 commitmentY,
        bytes calldata proof,
        bytes32[] calldata path
    ) external {
        _answer(accountId, epochId, leafIndex, _leafHash(tag, commitmentX, commitmentY, proof), path);
    }

    /// @dev answerDemand once the leaf is hashed.
    function _answer(bytes32 accountId, uint64 epochId, uint256 leafIndex, bytes32 leaf, bytes32[] calldata path)
        private
    {
        Demand storage d = _openDemand(accountId, epochId, leafIndex);
        uint256 deadline = d.deadline;
        if (block.timestamp >= deadline) revert DemandExpired(accountId, epochId, leafIndex, deadline);
        Epoch storage e = _pendingEpoch(accountId, epochId);
        _checkInclusion(e, accountId, epochId, leafIndex, leaf, path);

        uint256 reopen = block.timestamp + _providers[_accounts[accountId].providerId].challengeWindow;
        uint256 readyAt = e.readyAt > reopen ? e.readyAt : reopen;
        d.status = DemandStatus.Answered;
        e.openDemands -= 1;
        e.readyAt = uint40(readyAt);
        _balances[msg.sender] += DEMAND_BOND;
        emit DataAnswered(accountId, epochId, leafIndex, msg.sender, readyAt);
    }

    /// @inheritdoc IZkMeterSettlement
    function resolveDemand(bytes32 accountId, uint64 epochId, uint256 leafIndex) external {
        Demand storage d = _openDemand(accountId, epochId, leafIndex);
        Epoch storage e = _epochs[accountId][epochId];
        address demander = d.demander;
        if (_statusOf(e, accountId) != EpochStatus.Pending) {
            d.status = DemandStatus.Refunded;
            _balances[demander] += DEMAND_BOND;
            emit DemandRefunded(accountId, epochId, leafIndex, demander);
            return;
        }
        if (block.timestamp < d.deadline) revert DemandNotExpired(accountId, epochId, leafIndex, d.deadline);

        d.status = DemandStatus.Resolved;
        e.openDemands -= 1;
        _balances[demander] += DEMAND_BOND;
        _slash(accountId, epochId, e, Reason.Unavailable, leafIndex, demander);
    }

    /// @inheritdoc IZkMeterSettlement
    function finalize(bytes32 accountId, uint64 epochId) external {
        Epoch storage e = _epochs[accountId][epochId];
        EpochStatus status = e.status;
        if (status == EpochStatus.None) revert EpochNotFound(accountId, epochId);
        if (status != EpochStatus.Pending) revert EpochNotPending(accountId, epochId, status);
        Account storage a = _accounts[accountId];
        Provider storage p = _providers[a.providerId];
        uint256 payment = uint256(e.total) * a.unitPrice;

        if (e.generation != p.generation) {
            // voided by a slash of the provider: only the reservation is left to release
            e.status = EpochStatus.Rejected;
            a.reserved -= uint128(payment);
            emit EpochReleased(accountId, epochId, Reason.ProviderSlashed);
            return;
        }
        if (e.openDemands != 0) revert DemandsOpen(accountId, epochId, e.openDemands);
        uint256 readyAt = e.readyAt;
        if (block.timestamp < readyAt) revert EpochNotFinalizable(accountId, epochId, readyAt);

        a.reserved -= uint128(payment);
        p.lockedBond -= uint128(payment);
        p.pendingEpochs -= 1;
        if (block.timestamp >= readyAt + EPOCH_EXPIRY) {
            e.status = EpochStatus.Expired;
            emit EpochReleased(accountId, epochId, Reason.Expired);
            return;
        }
        uint64 prev = e.prevEpochId;
        if (prev != 0 && _epochs[accountId][prev].status == EpochStatus.Pending) {
            revert PreviousEpochPending(accountId, epochId, prev);
        }
        e.status = EpochStatus.Finalized;
        a.escrow -= uint128(payment);
        _earnings[a.providerId][a.asset] += payment;
        emit EpochFinalized(accountId, epochId, payment);
    }

    // ------------------------------------------------------------------- payments

    /// @inheritdoc IZkMeterSettlement
    function withdraw() external nonReentrant {
        uint256 amount = _balances[msg.sender];
        if (amount == 0) revert NothingToWithdraw(msg.sender);
        _balances[msg.sender] = 0;
        emit Withdrawn(msg.sender, amount);
        _sendEth(msg.sender, amount);
    }

    /// @inheritdoc IZkMeterSettlement
    function withdrawEarnings(bytes32 providerId, address asset, address to) external nonReentrant {
        _operatorOf(providerId);
        uint256 amount = _earnings[providerId][asset];
        if (amount == 0) revert NothingToWithdraw(msg.sender);
        _earnings[providerId][asset] = 0;
        emit EarningsWithdrawn(providerId, asset, to, amount);
        _transferOut(asset, to, amount);
    }

    // ---------------------------------------------------------------------- views

    /// @inheritdoc IZkMeterSettlement
    function verifier() external view returns (address) {
        return address(VERIFIER);
    }

    /// @inheritdoc IZkMeterSettlement
    function params() external view returns (Params memory) {
        return Params(
            MIN_CHALLENGE_WINDOW, RESPONSE_WINDOW, WITHDRAWAL_NOTICE, BOND_COOLDOWN, EPOCH_EXPIRY, MIN_BOND, DEMAND_BOND
        );
    }

    /// @inheritdoc IZkMeterSettlement
    function getProvider(bytes32 providerId) external view returns (Provider memory) {
        return _providers[providerId];
    }

    /// @inheritdoc IZkMeterSettlement
    function getAccount(bytes32 accountId) external view returns (Account memory) {
        return _accounts[accountId];
    }

    /// @inheritdoc IZkMeterSettlement
    function getEpoch(bytes32 accountId, uint64 epochId) external view returns (Epoch memory e) {
        Epoch storage s = _epochs[accountId][epochId];
        e = s;
        e.status = _statusOf(s, accountId);
    }

    /// @inheritdoc IZkMeterSettlement
    function getDemand(bytes32 accountId, uint64 epochId, uint256 leafIndex) external view returns (Demand memory) {
        return _demands[_demandKey(accountId, epochId, leafIndex)];
    }

    /// @inheritdoc IZkMeterSettlement
    function balanceOf(address account) external view returns (uint256) {
        return _balances[account];
    }

    /// @inheritdoc IZkMeterSettlement
    function earnings(bytes32 providerId, address asset) external view returns (uint256) {
        return _earnings[providerId][asset];
    }

    /// @inheritdoc IZkMeterSettlement
    function totalBurned() external view returns (uint256) {
        return _burned;
    }

    /// @inheritdoc IZkMeterSettlement
    function commitmentBlock(bytes32 commitment) external view returns (uint256) {
        return _commitments[commitment];
    }

    /// @inheritdoc IZkMeterSettlement
    function providerIdOf(address operator, bytes32 signingKey) public pure returns (bytes32) {
        return keccak256(abi.encode(operator, signingKey));
    }

    /// @inheritdoc IZkMeterSettlement
    function accountIdOf(bytes32 providerId, address payer, address asset) public pure returns (bytes32) {
        return keccak256(abi.encode(providerId, payer, asset));
    }

    /// @inheritdoc IZkMeterSettlement
    function challengeCommitment(
        uint8 kind,
        address challenger,
        bytes32 accountId,
        uint64 epochId,
        uint256 leafIndex,
        bytes32 salt
    ) public pure returns (bytes32) {
        return keccak256(abi.encode(kind, challenger, accountId, epochId, leafIndex, salt));
    }

    // ------------------------------------------------------------------ internals

    /// @dev The checks of submitEpoch before the commitments: operator, not exiting, epoch id,
    ///      leaf count, total bound, unreserved escrow and unlocked bond; returns the payment.
    function _checkSubmission(bytes32 accountId, uint64 epochId, uint256 total, uint256 count)
        private
        view
        returns (uint256 payment)
    {
        Account storage a = _accounts[accountId];
        if (a.payer == address(0)) revert UnknownAccount(accountId);
        bytes32 providerId = a.providerId;
        Provider storage p = _operatorOf(providerId);
        if (p.unbondAt != 0) revert ProviderExiting(providerId, p.unbondAt);
        if (epochId <= a.lastEpochId) revert EpochIdNotIncreasing(accountId, epochId, a.lastEpochId);
        if (count == 0 || count > MAX_LEAVES || count & (count - 1) != 0) revert InvalidLeafCount(count);
        uint256 maxTotal = count * ((1 << BIT_SIZE) - 1);
        if (total > maxTotal) revert TotalOutOfRange(total, maxTotal);
        payment = total * a.unitPrice;
        uint256 free = a.escrow - a.reserved;
        if (payment > free) revert InsufficientEscrow(accountId, payment, free);
        uint256 bond = p.bond;
        uint256 locked = p.lockedBond;
        if (bond < MIN_BOND || bond - locked < payment) revert InsufficientBond(providerId, payment, bond, locked);
    }

    /// @dev The effects of submitEpoch: the epoch record, the reservation and the bond lock.
    function _recordEpoch(
        bytes32 accountId,
        uint64 epochId,
        uint256 total,
        uint256 payment,
        bytes32 root,
        uint256 count
    ) private {
        Account storage a = _accounts[accountId];
        Provider storage p = _providers[a.providerId];
        uint256 readyAt = block.timestamp + p.challengeWindow;
        Epoch storage e = _epochs[accountId][epochId];
        e.merkleRoot = root;
        e.total = uint96(total);
        e.readyAt = uint40(readyAt);
        e.prevEpochId = a.lastEpochId;
        e.generation = p.generation;
        e.depth = uint8(_log2(count));
        e.status = EpochStatus.Pending;
        a.lastEpochId = epochId;
        a.reserved += uint128(payment);
        p.lockedBond += uint128(payment);
        p.pendingEpochs += 1;
        emit EpochSubmitted(accountId, epochId, root, total, count, readyAt, payment);
    }

    /// @dev The provider record, after checking that the caller is its operator.
    function _operatorOf(bytes32 providerId) private view returns (Provider storage p) {
        p = _providers[providerId];
        address operator = p.operator;
        if (operator == address(0)) revert UnknownProvider(providerId);
        if (operator != msg.sender) revert NotOperator(providerId, msg.sender);
    }

    /// @dev The account record, after checking that the caller is its payer.
    function _payerOf(bytes32 accountId) private view returns (Account storage a) {
        a = _accounts[accountId];
        address payer = a.payer;
        if (payer == address(0)) revert UnknownAccount(accountId);
        if (payer != msg.sender) revert NotPayer(accountId, msg.sender);
    }

    /// @dev The stored status, with a Pending epoch of an older provider generation as Rejected.
    function _statusOf(Epoch storage e, bytes32 accountId) private view returns (EpochStatus status) {
        status = e.status;
        if (status == EpochStatus.Pending && e.generation != _providers[_accounts[accountId].providerId].generation) {
            status = EpochStatus.Rejected;
        }
    }

    /// @dev The epoch, after checking that it exists and is pending (current generation).
    function _pendingEpoch(bytes32 accountId, uint64 epochId) private view returns (Epoch storage e) {
        e = _epochs[accountId][epochId];
        EpochStatus status = _statusOf(e, accountId);
        if (status == EpochStatus.None) revert EpochNotFound(accountId, epochId);
        if (status != EpochStatus.Pending) revert EpochNotPending(accountId, epochId, status);
    }

    /// @dev A pending epoch whose window is still open.
    function _openEpoch(bytes32 accountId, uint64 epochId) private view returns (Epoch storage e) {
        e = _pendingEpoch(accountId, epochId);
        if (block.timestamp >= e.readyAt) revert ChallengeWindowClosed(accountId, epochId, e.readyAt);
    }

    /// @dev An open demand.
    function _openDemand(bytes32 accountId, uint64 epochId, uint256 leafIndex) private view returns (Demand storage d) {
        d = _demands[_demandKey(accountId, epochId, leafIndex)];
        if (d.status != DemandStatus.Open) revert DemandNotOpen(accountId, epochId, leafIndex, d.status);
    }

    function _demandKey(bytes32 accountId, uint64 epochId, uint256 leafIndex) private pure returns (bytes32) {
        return keccak256(abi.encode(accountId, epochId, leafIndex));
    }

    /// @dev Consumes the caller's commitment to this challenge, made in an earlier block, so a
    ///      copied transaction fails: its sender has no commitment of its own.
    function _useCommitment(uint8 kind, bytes32 accountId, uint64 epochId, uint256 leafIndex, bytes32 salt) private {
        bytes32 c = challengeCommitment(kind, msg.sender, accountId, epochId, leafIndex, salt);
        uint256 committedAt = _commitments[c];
        if (committedAt == 0 || committedAt >= block.number) revert NoChallengeCommitment(c);
        delete _commitments[c];
    }

    /// @dev Rejects `e`, voids every other pending epoch of the provider (generation + 1),
    ///      releases `e`'s reservation and splits the whole bond: BURN_BPS burned, PAYER_BPS
    ///      to the account's payer, the rest to `challenger` (all pulled later).
    function _slash(
        bytes32 accountId,
        uint64 epochId,
        Epoch storage e,
        Reason reason,
        uint256 leafIndex,
        address challenger
    ) private {
        Account storage a = _accounts[accountId];
        bytes32 providerId = a.providerId;
        Provider storage p = _providers[providerId];
        uint256 amount = p.bond;
        uint256 burned = amount * BURN_BPS / 10_000;
        uint256 toPayer = amount * PAYER_BPS / 10_000;
        uint256 toChallenger = amount - burned - toPayer;

        e.status = EpochStatus.Rejected;
        a.reserved -= uint128(uint256(e.total) * a.unitPrice);
        p.bond = 0;
        p.lockedBond = 0;
        p.pendingEpochs = 0;
        p.generation += 1;
        _burned += burned;
        _balances[a.payer] += toPayer;
        _balances[challenger] += toChallenger;
        emit EpochRejected(accountId, epochId, reason, challenger, leafIndex);
        emit ProviderSlashed(providerId, amount, burned, toPayer, toChallenger);
    }

    /// @dev Pulls exactly `amount` of `asset` from the caller; refuses fee-on-transfer tokens
    ///      (fewer units arrive) and tokens whose balance here fell below what is held
    ///      (negative rebasing).
    function _pullToken(address asset, uint256 amount) private {
        IERC20 token = IERC20(asset);
        uint256 held = _held[asset];
        uint256 before = token.balanceOf(address(this));
        if (before < held) revert UnsupportedToken(asset, held, before);
        token.safeTransferFrom(msg.sender, address(this), amount);
        uint256 received = token.balanceOf(address(this)) - before;
        if (received != amount) revert UnsupportedToken(asset, amount, received);
        _held[asset] = held + amount;
    }

    /// @dev Sends `amount` of `asset` (address(0): ETH) to `to`.
    function _transferOut(address asset, address to, uint256 amount) private {
        if (asset == address(0)) {
            _sendEth(to, amount);
        } else {
            _held[asset] -= amount;
            IERC20(asset).safeTransfer(to, amount);
        }
    }

    /// @dev Sends `amount` wei to `to`, reverting on failure.
    function _sendEth(address to, uint256 amount) private {
        (bool ok,) = to.call{value: amount}("");
        if (!ok) revert TransferFailed(to, amount);
    }

    /// @dev keccak256(tag || x || y || keccak256(proof)): the Merkle leaf of circuits/merkle.py.
    function _leafHash(bytes32 tag, uint256 x, uint256 y, bytes calldata proof) private pure returns (bytes32) {
        return keccak256(abi.encodePacked(tag, x, y, keccak256(proof)));
    }

    /// @dev total*G + totalBlinding*H == (sumX, sumY).
    function _opens(uint256 total, uint256 totalBlinding, uint256 sumX, uint256 sumY) private view returns (bool) {
        (uint256 ex, uint256 ey) = BN254.mul(BN254.G_X, BN254.G_Y, total);
        (uint256 hx, uint256 hy) = BN254.mul(Gens.H_X, Gens.H_Y, totalBlinding);
        (ex, ey) = BN254.add(ex, ey, hx, hy);
        return ex == sumX && ey == sumY;
    }

    /// @dev Reverts unless `leaf` at `leafIndex` with `path` hashes up to the epoch's root.
    function _checkInclusion(
        Epoch storage e,
        bytes32 accountId,
        uint64 epochId,
        uint256 leafIndex,
        bytes32 leaf,
        bytes32[] calldata path
    ) private view {
        uint256 depth = e.depth;
        if (leafIndex >> depth != 0) revert LeafIndexOutOfRange(leafIndex, 1 << depth);
        if (path.length != depth || _root(leaf, leafIndex, path) != e.merkleRoot) {
            revert InvalidMerkleProof(accountId, epochId, leafIndex);
        }
    }

    /// @dev Decompresses every commitment (x < p, bit 255 the parity of y, y recovered with the
    ///      modexp precompile as (x^3 + 3)^((p + 1) / 4) since p = 3 mod 4, and checked),
    ///      checks that tags strictly increase, sums the points with ECADD, and computes the
    ///      Merkle root of circuits/merkle.py: leaf = keccak256(tag || x || y || proofHash),
    ///      node = keccak256(left || right), hashed in place level by level.
    ///      Memory: buf = count leaf hashes; then acc(64) || term(64) for ECADD (the term's
    ///      128 bytes double as the leaf preimage's x || y); then the modexp input (192 bytes).
    function _sumAndRoot(Leaf[] calldata leaves) private view returns (uint256 sumX, uint256 sumY, bytes32 root) {
        uint256 count = leaves.length;
        uint256 bad; // 0: none; else (kind << 128) | (index + 1), kind 1 tag order, 2 not a point
        bool ok = true;
        assembly ("memory-safe") {
            let buf := mload(0x40)
            let acc := add(buf, shl(5, count)) // acc(64) || pre(128) || modexp input(192)
            mstore(0x40, add(acc, 0x180))
            mstore(acc, 0)
            mstore(add(acc, 0x20), 0)
            mstore(add(acc, 0xc0), 0x20) // modexp: base, exponent and modulus are 32 bytes
            mstore(add(acc, 0xe0), 0x20)
            mstore(add(acc, 0x100), 0x20)
            mstore(add(acc, 0x140), SQRT_EXPONENT)
            mstore(add(acc, 0x160), P)
            let prevTag := 0
            for { let i := 0 } lt(i, count) { i := add(i, 1) } {
                let src := add(leaves.offset, mul(i, 0x60))
                let tag := calldataload(src)
                if and(gt(i, 0), iszero(gt(tag, prevTag))) {
                    bad := or(shl(128, 1), add(i, 1))
                    break
                }
                prevTag := tag
                let xs := calldataload(add(src, 0x20))
                let x := and(xs, X_MASK)
                let rhs := addmod(mulmod(x, mulmod(x, x, P), P), 3, P)
                mstore(add(acc, 0x120), rhs)
                // y = rhs^((p+1)/4) into pre's y slot
                ok := and(ok, staticcall(gas(), 0x05, add(acc, 0xc0), 0xc0, add(acc, 0x80), 0x20))
                let y := mload(add(acc, 0x80))
                if or(iszero(lt(x, P)), iszero(eq(mulmod(y, y, P), rhs))) {
                    bad := or(shl(129, 1), add(i, 1))
                    break
                }
                if iszero(eq(and(y, 1), shr(255, xs))) {
                    if iszero(y) {
                        bad := or(shl(129, 1), add(i, 1))
                        break
                    }
                    y := sub(P, y)
                }
                mstore(add(acc, 0x40), tag)
                mstore(add(acc, 0x60), x)
                mstore(add(acc, 0x80), y)
                mstore(add(acc, 0xa0), calldataload(add(src, 0x40)))
                mstore(add(buf, shl(5, i)), keccak256(add(acc, 0x40), 0x80))
                // acc += (x, y): ECADD reads acc || (x, y) from acc .. acc + 0x80
                mstore(add(acc, 0x40), x)
                mstore(add(acc, 0x60), y)
                ok := and(ok, staticcall(gas(), 0x06, acc, 0x80, acc, 0x40))
            }
            sumX := mload(acc)
            sumY := mload(add(acc, 0x20))
            for { let width := count } gt(width, 1) { width := shr(1, width) } {
                for { let i := 0 } lt(i, shr(1, width)) { i := add(i, 1) } {
                    mstore(add(buf, shl(5, i)), keccak256(add(buf, shl(6, i)), 0x40))
                }
            }
            root := mload(buf)
        }
        if (bad >> 128 == 1) revert TagsNotIncreasing(uint128(bad) - 1);
        if (bad >> 128 == 2) revert InvalidCommitment(uint128(bad) - 1);
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
}
