"""The chains of the contract tests (py-evm and anvil), for the on-chain checks here."""

from tests.contracts.conftest import anvil_url, client, tester_w3  # noqa: F401 - fixtures
