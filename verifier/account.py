"""Billing accounts: who pays for an epoch's leaves, and the ids the contract derives.

A billing account is one (provider, payer, asset) triple; every account settles on its own
(docs/epoch.md, "Billing accounts"). The ids are the settlement contract's (ABI encoding, so
every field is one 32-byte word):

    providerId = keccak256(abi.encode(address operator, bytes32 signingKey))
    accountId  = keccak256(abi.encode(bytes32 providerId, address payer, address asset))

``signingKey`` is the provider's Ed25519 public key, ``operator`` the address that registered
the provider on-chain, ``asset`` the zero address for ETH or an ERC-20 token's address.
The account id is the 32-byte subject of every range proof of the account's epochs (the
transcript slot that carried the provider id), so tags, blindings and proofs are per account.
"""

from dataclasses import dataclass
from typing import Any

from circuits.hashing import keccak256
from verifier.hexfields import from_hex, to_hex

ETH = bytes(20)
ADDRESS_BYTES = 20


class AccountFormatError(ValueError):
    """An account block is malformed (bad lengths, bad hex)."""


def _word(address: bytes) -> bytes:
    """An address as its ABI word (left-padded to 32 bytes)."""
    if len(address) != ADDRESS_BYTES:
        raise AccountFormatError("an address is 20 bytes")
    return bytes(12) + address


def provider_id_of(operator: bytes, signing_key: bytes) -> bytes:
    """keccak256(abi.encode(operator, signingKey))."""
    if len(signing_key) != 32:
        raise AccountFormatError("the signing key is 32 bytes")
    return keccak256(_word(operator), signing_key)


def account_id_of(provider_id: bytes, payer: bytes, asset: bytes) -> bytes:
    """keccak256(abi.encode(providerId, payer, asset))."""
    if len(provider_id) != 32:
        raise AccountFormatError("the provider id is 32 bytes")
    return keccak256(provider_id, _word(payer), _word(asset))


@dataclass(frozen=True, slots=True)
class AccountBlock:
    """The account a bundle bills: the operator (whose address, with the bundle's signing
    key, makes the provider id), the payer and the asset. The account id is derived."""

    operator: bytes
    payer: bytes
    asset: bytes

    def __post_init__(self) -> None:
        for name in ("operator", "payer", "asset"):
            value = getattr(self, name)
            if type(value) is not bytes or len(value) != ADDRESS_BYTES:
                raise AccountFormatError(f"{name} must be a 20-byte address")

    def provider_id(self, signing_key: bytes) -> bytes:
        """The on-chain provider id of this operator and signing key."""
        return provider_id_of(self.operator, signing_key)

    def account_id(self, signing_key: bytes) -> bytes:
        """The on-chain account id (module docstring)."""
        return account_id_of(self.provider_id(signing_key), self.payer, self.asset)

    def to_json(self, signing_key: bytes) -> dict[str, Any]:
        """The bundle's JSON form, with the derived ids for readers (recomputed on parse)."""
        return {"operator": to_hex(self.operator), "payer": to_hex(self.payer),
                "asset": to_hex(self.asset),
                "provider_id": to_hex(self.provider_id(signing_key)),
                "account_id": to_hex(self.account_id(signing_key))}

    @classmethod
    def from_json(cls, data: Any) -> "AccountBlock":
        """The block from its JSON form (the derived ids are checked by the caller)."""
        if not isinstance(data, dict):
            raise AccountFormatError("account: expected an object")
        try:
            return cls(operator=from_hex(data["operator"], "account.operator", 20,
                                         AccountFormatError),
                       payer=from_hex(data["payer"], "account.payer", 20, AccountFormatError),
                       asset=from_hex(data["asset"], "account.asset", 20, AccountFormatError))
        except KeyError as exc:
            raise AccountFormatError(f"account: missing field {exc}") from None


def asset_name(asset: bytes) -> str:
    """``ETH`` or the token address."""
    return "ETH" if asset == ETH else to_hex(asset)
