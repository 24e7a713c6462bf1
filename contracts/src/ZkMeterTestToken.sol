// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title A stablecoin stand-in for tests and `zkmeter demo` (6 decimals, anyone may mint)
/// @notice Never deploy it where its tokens are meant to be worth anything: `mint` is open.
contract ZkMeterTestToken is ERC20 {
    constructor() ERC20("zkmeter test dollar", "zkUSD") {}

    /// @notice Mints `amount` to `to`.
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    /// @inheritdoc ERC20
    function decimals() public pure override returns (uint8) {
        return 6;
    }
}
