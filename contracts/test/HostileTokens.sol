// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @notice Keeps 1 % of every transfer (fee-on-transfer): the settlement must refuse it.
contract FeeOnTransferToken is ERC20 {
    constructor() ERC20("fee", "FEE") {}

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    function _update(address from, address to, uint256 value) internal override {
        if (from != address(0) && to != address(0)) {
            uint256 fee = value / 100;
            super._update(from, address(0xdead), fee);
            value -= fee;
        }
        super._update(from, to, value);
    }
}

/// @notice Lets anyone shrink a holder's balance (a negative rebase): deposits after one are
///         refused.
contract RebasingToken is ERC20 {
    constructor() ERC20("rebase", "RBS") {}

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    function rebaseDown(address holder, uint256 amount) external {
        _burn(holder, amount);
    }
}

/// @notice Calls `target` with `data` from inside every transferFrom (a hook, as ERC-777 or a
///         malicious token would): the settlement's guard must stop the re-entry.
contract ReentrantToken is ERC20 {
    address public target;
    bytes public data;
    bytes public lastRevert;

    constructor() ERC20("reenter", "RE") {}

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    function arm(address target_, bytes calldata data_) external {
        target = target_;
        data = data_;
    }

    function transferFrom(address from, address to, uint256 value) public override returns (bool) {
        if (target != address(0)) {
            address t = target;
            target = address(0);
            (bool ok, bytes memory ret) = t.call(data);
            if (!ok) lastRevert = ret;
            if (ok) revert("re-entry succeeded");
        }
        return super.transferFrom(from, to, value);
    }
}

/// @notice A contract operator: submits, challenges and withdraws in one transaction (the
///         "free bond exit"), and a payer that can be told to reject ETH.
contract OperatorContract {
    function exec(address target, bytes calldata data) external payable returns (bytes memory) {
        (bool ok, bytes memory ret) = target.call{value: msg.value}(data);
        if (!ok) {
            assembly {
                revert(add(ret, 0x20), mload(ret))
            }
        }
        return ret;
    }

    function execMany(address target, bytes[] calldata calls) external payable {
        for (uint256 i = 0; i < calls.length; ++i) {
            (bool ok, bytes memory ret) = target.call(calls[i]);
            if (!ok) {
                assembly {
                    revert(add(ret, 0x20), mload(ret))
                }
            }
        }
    }

    receive() external payable {}
}
