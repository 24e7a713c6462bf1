"""The settlement client, for the operator's side of zkmeter.

The client itself is :mod:`verifier.chain_client`: settlers and payers use the same calls
(finalize, demand, challenge, withdraw) from the verifier install, without the server stack.
This module re-exports that module's public names (its ``__all__``, the one list of them) so
the operator's imports stay short: ``from prover.chain import ChainClient``.
"""

from verifier import chain_client
from verifier.chain_client import *  # noqa: F403 - exactly chain_client.__all__

__all__ = chain_client.__all__
