"""Epochs made for the settlement tests: proofs bound to a deployed contract's context."""

import secrets
from dataclasses import dataclass, field, replace

from nacl.signing import SigningKey

from circuits import merkle
from circuits.backend import get_backend
from circuits.constants import CURVE_ORDER
from circuits.encoding import point_to_bytes
from circuits.hashing import keccak256
from circuits.rangeproof import _prove, prove, random_scalar
from circuits.transcript import RangeProofContext
from prover.chain import ChainClient, LeafInput
from verifier.bundle import Bundle
from verifier.bundle import Leaf as BundleLeaf


@dataclass
class TestEpoch:
    """Leaves, totals and the tree of one epoch, as a provider would submit it."""

    account_id: bytes
    epoch_id: int
    values: list[int]
    blindings: list[int]
    tags: list[bytes]
    commitments: list[bytes]
    proofs: list[bytes]
    tree: list[list[bytes]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.values)

    @property
    def total_blinding(self) -> int:
        return sum(self.blindings) % CURVE_ORDER

    @property
    def leaves(self) -> list[LeafInput]:
        return [LeafInput(t, c, keccak256(p))
                for t, c, p in zip(self.tags, self.commitments, self.proofs, strict=True)]

    def path(self, index: int) -> list[bytes]:
        return merkle.path(self.tree, index)

    @property
    def root(self) -> bytes:
        return self.tree[-1][0]


def make_epoch(client: ChainClient, account_id: bytes, epoch_id: int, values: list[int], *,
               bad: dict[int, str] | None = None) -> TestEpoch:
    """Proofs for ``values`` in the context of ``client``'s settlement and the billing account
    ``account_id`` (the proofs' subject), under strictly increasing random tags. ``bad`` maps
    a leaf index to "overflow" (a dishonest proof for the value 2^32, whose commitment is
    summed like any other) or "context" (a valid proof made for another epoch id)."""
    bad = bad or {}
    be = get_backend()
    ctx = RangeProofContext(chain_id=client.chain_id,
                            contract=bytes.fromhex(client.settlement.address[2:]),
                            provider_id=account_id, epoch_id=epoch_id)
    other = RangeProofContext(chain_id=ctx.chain_id, contract=ctx.contract,
                              provider_id=account_id, epoch_id=epoch_id + 1000)
    sorted_tags = sorted(secrets.token_bytes(32) for _ in values)
    values = list(values)
    tags, commitments, proofs, blindings = [], [], [], []
    for i, v in enumerate(values):
        gamma = random_scalar()
        kind = bad.get(i)
        if kind == "overflow":
            values[i] = v = 1 << 32
            # the bits of v mod 2^32 (all zero): a cheating prover's only option
            proof_obj, comms = _prove(ctx.transcript(), [v], [gamma], [0] * 32, 32, be,
                                      random_scalar)
            proof, commitment = proof_obj.to_bytes(), point_to_bytes(comms[0])
        else:
            transcript = (other if kind == "context" else ctx).transcript()
            proof, comms_bytes = prove(transcript, values=[v], blindings=[gamma], n=32,
                                       backend=be)
            commitment = comms_bytes[0]
        tags.append(sorted_tags[i])
        commitments.append(commitment)
        proofs.append(proof)
        blindings.append(gamma)
    epoch = TestEpoch(account_id, epoch_id, values, blindings, tags, commitments, proofs)
    epoch.tree = merkle.levels([merkle.leaf_hash(t, c, p)
                                for t, c, p in zip(tags, commitments, proofs, strict=True)])
    return epoch


def submit(client: ChainClient, epoch: TestEpoch, *, sender=None):
    return client.submit_epoch(epoch.account_id, epoch.epoch_id, total=epoch.total,
                               total_blinding=epoch.total_blinding, leaves=epoch.leaves,
                               sender=sender)


def challenge(client: ChainClient, epoch: TestEpoch, index: int, *, sender=None, salt=None):
    return client.challenge(epoch.account_id, epoch.epoch_id, leaf_index=index,
                            tag=epoch.tags[index], commitment=epoch.commitments[index],
                            proof=epoch.proofs[index], path=epoch.path(index), sender=sender,
                            salt=salt)


def answer(client: ChainClient, epoch: TestEpoch, index: int, *, sender=None):
    return client.answer_demand(epoch.account_id, epoch.epoch_id, leaf_index=index,
                                tag=epoch.tags[index], commitment=epoch.commitments[index],
                                proof=epoch.proofs[index], path=epoch.path(index),
                                sender=sender)


def deploy_harness(client: ChainClient, artifacts: dict, name: str, *args):
    """Deploy test-only contract ``name`` (contracts/test/); returns the web3 contract."""
    artifact = artifacts[name]
    factory = client.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    receipt = client._send(factory.constructor(*args))
    return client.w3.eth.contract(address=receipt.contractAddress, abi=artifact["abi"])


def account_bundle(client: ChainClient, account_id: bytes, epoch_id: int, values: list[int],
                   signing_key: SigningKey) -> Bundle:
    """A signed bundle whose proofs are bound to the billing account ``account_id`` (the
    subject the contract verifies them under), made from :func:`make_epoch`'s leaves."""
    return epoch_bundle(client, make_epoch(client, account_id, epoch_id, values), signing_key)


def epoch_bundle(client: ChainClient, epoch: TestEpoch, signing_key: SigningKey) -> Bundle:
    """The signed bundle of a :class:`TestEpoch` (bad proofs included, as published)."""
    bundle = Bundle(
        chain_id=client.chain_id, contract=bytes.fromhex(client.settlement.address[2:]),
        provider_id=epoch.account_id, epoch_id=epoch.epoch_id, window_start=0,
        window_end=3_600_000,
        rate_card_hash=bytes(32), bit_size=32,
        leaves=tuple(BundleLeaf(t, c, p) for t, c, p in
                     zip(epoch.tags, epoch.commitments, epoch.proofs, strict=True)),
        total=epoch.total, total_blinding=epoch.total_blinding, merkle_root=epoch.root)
    signature = signing_key.sign(bundle.signed_bytes()).signature
    return replace(bundle, signature=signature)
