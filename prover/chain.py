"""The settlement client, for the operator's side of zkmeter.

The client itself is :mod:`verifier.chain_client`: settlers and payers use the same calls
(finalize, demand, challenge, withdraw) from the verifier install, without the server stack.
This module keeps the operator's imports short.
"""

from verifier.chain_client import (
    ANSWER_GAS,
    CHALLENGE_GAS,
    DEFAULT_PARAMS,
    ETH,
    KIND_DEMAND,
    KIND_RANGE,
    AnsweredLeaf,
    ChainClient,
    Deployment,
    LeafInput,
    SettlementError,
    _revert_data,
    bundle_path,
    decode_revert,
)

__all__ = [
    "ANSWER_GAS",
    "CHALLENGE_GAS",
    "DEFAULT_PARAMS",
    "ETH",
    "KIND_DEMAND",
    "KIND_RANGE",
    "AnsweredLeaf",
    "ChainClient",
    "Deployment",
    "LeafInput",
    "SettlementError",
    "_revert_data",
    "bundle_path",
    "decode_revert",
]
