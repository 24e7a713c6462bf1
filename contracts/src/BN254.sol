// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// @title BN254 (alt_bn128) G1 arithmetic over the EVM precompiles
/// @notice y^2 = x^3 + 3 over F_p, a group of prime order R (cofactor 1). Points are affine
///         `(x, y)` with `(0, 0)` the identity, exactly as ECADD (0x06) and ECMUL (0x07) take
///         them (EIP-196). Every point that comes from calldata goes through `isOnCurve` or
///         `validatePoint` first (coordinates < P, on the curve, not the identity); scalars
///         are checked against R by `validateScalar` or reduced mod R by the caller.
/// @dev A precompile call can fail only on invalid input (excluded by the checks above) or
///      when it runs out of gas; both revert with `PrecompileFailed`, never return "false",
///      so a caller starved of gas cannot turn a valid proof into a rejected one.
library BN254 {
    /// @notice The base field modulus p.
    uint256 internal constant P =
        21888242871839275222246405745257275088696311157297823662689037894645226208583;
    /// @notice The group order r (the scalar field modulus).
    uint256 internal constant R =
        21888242871839275222246405745257275088548364400416034343698204186575808495617;
    /// @notice The standard generator G = (1, 2): the value base of Pedersen commitments.
    uint256 internal constant G_X = 1;
    uint256 internal constant G_Y = 2;

    /// @notice A coordinate is not a canonical field element (it is >= p).
    /// @param coordinate The offending coordinate.
    error CoordinateNotInField(uint256 coordinate);
    /// @notice A point does not satisfy y^2 = x^3 + 3, or is the identity where a proper point
    ///         is required.
    /// @param x The point's x coordinate.
    /// @param y The point's y coordinate.
    error PointNotOnCurve(uint256 x, uint256 y);
    /// @notice A scalar is not canonical (it is >= r).
    /// @param scalar The offending scalar.
    error ScalarNotInField(uint256 scalar);
    /// @notice An ECADD (0x06), ECMUL (0x07) or MODEXP (0x05) call failed (out of gas).
    /// @param precompile The precompile's address.
    error PrecompileFailed(uint256 precompile);

    /// @notice True iff `(x, y)` is a point of G1 other than the identity, with both
    ///         coordinates canonical (< p).
    function isOnCurve(uint256 x, uint256 y) internal pure returns (bool ok) {
        assembly ("memory-safe") {
            let p := P
            ok := and(lt(x, p), lt(y, p))
            // y^2 == x^3 + 3 (mod p); the identity (0, 0) fails it since 0 != 3.
            ok := and(ok, eq(mulmod(y, y, p), addmod(mulmod(x, mulmod(x, x, p), p), 3, p)))
        }
    }

    /// @notice Reverts unless `(x, y)` is a point of G1 other than the identity, with
    ///         canonical coordinates.
    function validatePoint(uint256 x, uint256 y) internal pure {
        if (x >= P) revert CoordinateNotInField(x);
        if (y >= P) revert CoordinateNotInField(y);
        if (!isOnCurve(x, y)) revert PointNotOnCurve(x, y);
    }

    /// @notice Reverts unless `s < r`.
    function validateScalar(uint256 s) internal pure {
        if (s >= R) revert ScalarNotInField(s);
    }

    /// @notice `(x1, y1) + (x2, y2)` with ECADD; inputs must be valid points or the identity.
    function add(uint256 x1, uint256 y1, uint256 x2, uint256 y2)
        internal
        view
        returns (uint256 x, uint256 y)
    {
        bool ok;
        assembly ("memory-safe") {
            let m := mload(0x40)
            mstore(m, x1)
            mstore(add(m, 0x20), y1)
            mstore(add(m, 0x40), x2)
            mstore(add(m, 0x60), y2)
            ok := staticcall(gas(), 0x06, m, 0x80, m, 0x40)
            x := mload(m)
            y := mload(add(m, 0x20))
        }
        if (!ok) revert PrecompileFailed(0x06);
    }

    /// @notice `s * (x, y)` with ECMUL; the point must be valid or the identity, any `s`
    ///         works (the group has order r, so `s` acts mod r).
    function mul(uint256 x, uint256 y, uint256 s) internal view returns (uint256 rx, uint256 ry) {
        bool ok;
        assembly ("memory-safe") {
            let m := mload(0x40)
            mstore(m, x)
            mstore(add(m, 0x20), y)
            mstore(add(m, 0x40), s)
            ok := staticcall(gas(), 0x07, m, 0x60, m, 0x40)
            rx := mload(m)
            ry := mload(add(m, 0x20))
        }
        if (!ok) revert PrecompileFailed(0x07);
    }

    /// @notice `-(x, y)`: `(x, p - y)`, and the identity for the identity.
    function negate(uint256 x, uint256 y) internal pure returns (uint256, uint256) {
        if (x == 0 && y == 0) return (0, 0);
        return (x, P - (y % P));
    }

    /// @notice `a^-1 mod r` with MODEXP (0x05) as `a^(r-2)`; `a` must be nonzero mod r.
    function invert(uint256 a) internal view returns (uint256 inv) {
        bool ok;
        assembly ("memory-safe") {
            let m := mload(0x40)
            mstore(m, 0x20)
            mstore(add(m, 0x20), 0x20)
            mstore(add(m, 0x40), 0x20)
            mstore(add(m, 0x60), a)
            mstore(add(m, 0x80), sub(R, 2))
            mstore(add(m, 0xa0), R)
            ok := staticcall(gas(), 0x05, m, 0xc0, m, 0x20)
            inv := mload(m)
        }
        if (!ok) revert PrecompileFailed(0x05);
    }
}
