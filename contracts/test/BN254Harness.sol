// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {BN254} from "../src/BN254.sol";

/// @title Test-only harness exposing the BN254 library (never deployed in production; built
///        by `node build.js --harness DIR`, not committed).
contract BN254Harness {
    function add(uint256 x1, uint256 y1, uint256 x2, uint256 y2) external view returns (uint256, uint256) {
        return BN254.add(x1, y1, x2, y2);
    }

    function mul(uint256 x, uint256 y, uint256 s) external view returns (uint256, uint256) {
        return BN254.mul(x, y, s);
    }

    function isOnCurve(uint256 x, uint256 y) external pure returns (bool) {
        return BN254.isOnCurve(x, y);
    }

    function validatePoint(uint256 x, uint256 y) external pure returns (bool) {
        BN254.validatePoint(x, y);
        return true;
    }

    function validateScalar(uint256 s) external pure returns (bool) {
        BN254.validateScalar(s);
        return true;
    }

    function negate(uint256 x, uint256 y) external pure returns (uint256, uint256) {
        return BN254.negate(x, y);
    }

    function invert(uint256 a) external view returns (uint256) {
        return BN254.invert(a);
    }

    /// @dev ECMUL with a gas cap, to show a starved precompile reverts instead of answering.
    function mulWithGas(uint256 x, uint256 y, uint256 s, uint256 gasLimit)
        external
        view
        returns (bool ok)
    {
        try this.mul{gas: gasLimit}(x, y, s) returns (uint256, uint256) {
            ok = true;
        } catch {
            ok = false;
        }
    }
}
