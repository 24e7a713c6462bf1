// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// @title On-chain verifier of one zkmeter 32-bit range proof (circuits/PROTOCOL.md, n = 32, m = 1)
/// @notice The proof shows `0 <= v < 2^32` for a commitment `C = v*G + gamma*H`. Its
///         Fiat-Shamir transcript binds the chain id, the settlement contract, the provider id
///         and the epoch id (PROTOCOL.md §4), so a proof made for one epoch of one provider
///         on one contract never verifies for another.
interface IBulletproofVerifier {
    /// @notice Every Fiat-Shamir challenge of a proof, in transcript order.
    /// @param y First challenge, after A and S.
    /// @param z Second challenge, after y.
    /// @param x After T1 and T2.
    /// @param w After t_x, t_x_blinding and e_blinding.
    /// @param u One challenge per inner-product round (after L_j and R_j).
    /// @param c The weight of the t-equation in the combined check: after the last `u`, the
    ///        transcript absorbs the scalars `a` and `b` (labels "a", "b") and squeezes "c".
    struct Challenges {
        uint256 y;
        uint256 z;
        uint256 x;
        uint256 w;
        uint256[5] u;
        uint256 c;
    }

    /// @notice The proof bytes are not a well-formed proof for n = 32, m = 1: wrong length
    ///         (must be 1057), wrong version byte, a coordinate >= p, a point off the curve or
    ///         the identity, or a scalar >= r.
    error MalformedProof();

    /// @notice True iff `proof` is a valid range proof for the commitment `(commitmentX,
    ///         commitmentY)` in the given context. A malformed proof or commitment gives false.
    /// @dev Reverts (`BN254.PrecompileFailed`) only if a precompile call fails, which after the
    ///      input checks means the call ran out of gas: it never answers false for lack of gas.
    /// @param chainId The chain id absorbed by the transcript (the settlement's block.chainid).
    /// @param settlement The settlement contract's address absorbed by the transcript.
    /// @param providerId The 32-byte subject of the proof: the settlement passes the billing
    ///        account id (IZkMeterSettlement.accountIdOf).
    /// @param epochId The epoch id.
    /// @param commitmentX The commitment's x coordinate.
    /// @param commitmentY The commitment's y coordinate.
    /// @param proof The encoded proof (PROTOCOL.md §5), 1057 bytes.
    /// @return valid Whether the proof verifies.
    function verify(
        uint256 chainId,
        address settlement,
        bytes32 providerId,
        uint64 epochId,
        uint256 commitmentX,
        uint256 commitmentY,
        bytes calldata proof
    ) external view returns (bool valid);

    /// @notice Replays the transcript of a proof and returns its challenges (for tests and
    ///         for auditing the transcript against other implementations).
    /// @dev Reverts with `MalformedProof` for a malformed proof or commitment.
    /// @return challenges Every challenge, `c` included.
    function challenges(
        uint256 chainId,
        address settlement,
        bytes32 providerId,
        uint64 epochId,
        uint256 commitmentX,
        uint256 commitmentY,
        bytes calldata proof
    ) external pure returns (Challenges memory challenges);
}
