"""A billing account's epoch as a payer sees it, built by the real close pipeline.

``account_epoch`` closes one account's epoch with real Pedersen commitments and real range
proofs (prover.epoch.close under the account id), makes each user's provider-signed receipt
chain (verifier.receipts.sign_receipt) and the provider-signed payer statement
(verifier.statement.make_statement) sealed to the payer's X25519 key. A dishonest provider is
built by changing what it commits (``totals``) or what it states (``states``) against the
receipts it signed.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from nacl.public import PrivateKey
from nacl.signing import SigningKey

from circuits.transcript import RangeProofContext
from prover.epoch.close import ClosedEpoch, EpochInputs, MemoryLeafStore, close_epoch
from prover.epoch.executor import InlineExecutor
from verifier.account import ETH, AccountBlock
from verifier.bundle import Bundle
from verifier.receipts import Receipt, sign_receipt
from verifier.statement import PayerStatement, make_statement, seal_statement

PROVIDER_SEED = b"zkmeter payer test provider seed"
MASTER_SECRET = b"zkmeter payer test master secret, 32+ bytes"
PAYER_SECRET = bytes(range(100, 132))
CHAIN_ID = 31337
CONTRACT = bytes.fromhex("22" * 20)
RATE_CARD = bytes.fromhex("cd" * 32)
ACCOUNT = AccountBlock(operator=bytes.fromhex("0a" * 20), payer=bytes.fromhex("b2" * 20),
                       asset=ETH)

Entry = tuple[bytes, str | None, int, int, bytes]


@dataclass(frozen=True)
class AccountEpoch:
    """One account's closed epoch, with everything the provider signed for it."""

    signing_key: SigningKey
    payer_key: PrivateKey
    closed: ClosedEpoch
    receipts: dict[str, list[Receipt]]  # user id -> its signed chain
    entries: list[Entry]  # what the statement states, in leaf order
    statement: PayerStatement
    sealed: bytes

    @property
    def bundle(self) -> Bundle:
        return self.closed.bundle


def receipt_chain(signing_key: SigningKey, *, epoch_id: int, user_id: str,
                  units: list[int]) -> list[Receipt]:
    """A provider-signed, hash-chained receipt chain of reported-count events."""
    chain: list[Receipt] = []
    prev, total = bytes(32), 0
    for seq, u in enumerate(units, start=1):
        total += u
        receipt = sign_receipt(Receipt(
            provider_id=bytes(signing_key.verify_key), epoch_id=epoch_id, user_id=user_id,
            seq=seq, prev_hash=prev, idempotency_key_digest=seq.to_bytes(32, "big"),
            model="test-model", encoding="", input_tokens=u, output_tokens=0,
            cached_input_tokens=0, reasoning_tokens=0, units=u, total_units=total,
            rate_card_hash=RATE_CARD, salt=bytes(32), prompt_digest=bytes(32),
            completion_digest=bytes(32), timestamp_ms=1_700_000_000_000 + seq),
            signing_key)
        chain.append(receipt)
        prev = receipt.hash()
    return chain


def split(value: int) -> list[int]:
    """A user's total as two or three events (one for small totals)."""
    if value < 3:
        return [value] if value else []
    return [value // 3, value // 3, value - 2 * (value // 3)]


def account_epoch(
    usage: Mapping[str, int],
    *,
    totals: Mapping[str, int] | None = None,
    states: Callable[[list[Entry]], list[Entry]] | None = None,
    epoch_id: int = 9,
    min_leaves: int = 4,
    payer_key: PrivateKey | None = None,
    signing_key: SigningKey | None = None,
) -> AccountEpoch:
    """Close an account's epoch whose users' receipts total ``usage``; the provider commits
    ``totals`` (default: ``usage``, the honest case) and states ``states(honest entries)``
    (default: the honest entries)."""
    signing_key = signing_key or SigningKey(PROVIDER_SEED)
    payer_key = payer_key or PrivateKey(PAYER_SECRET)
    key = bytes(signing_key.verify_key)
    ctx = RangeProofContext(chain_id=CHAIN_ID, contract=CONTRACT,
                            provider_id=ACCOUNT.account_id(key), epoch_id=epoch_id)
    committed = dict(usage if totals is None else totals)
    inputs = EpochInputs(ctx=ctx, window_start=1_700_000_000_000,
                         window_end=1_700_003_600_000, rate_card_hash=RATE_CARD, bit_size=32,
                         totals=committed, min_leaves=min_leaves, account=ACCOUNT)
    closed = close_epoch(inputs, secret=MASTER_SECRET, signing_key=signing_key,
                         store=MemoryLeafStore(), executor=InlineExecutor())
    receipts = {user: receipt_chain(signing_key, epoch_id=epoch_id, user_id=user,
                                    units=split(value))
                for user, value in usage.items() if value}
    heads = {user: chain[-1].hash() for user, chain in receipts.items()}
    entries: list[Entry] = [
        (p.job.tag, p.user_id, p.job.value, p.job.blinding,
         bytes(32) if p.user_id is None else heads.get(p.user_id, bytes(32)))
        for p in closed.planned]
    if states is not None:
        entries = states(entries)
    statement = make_statement(closed.bundle, entries, signing_key)
    sealed = seal_statement(statement, bytes(payer_key.public_key))
    return AccountEpoch(signing_key, payer_key, closed, receipts, entries, statement, sealed)


def index_of(entries: list[Entry], user_id: str) -> int:
    """The leaf index of ``user_id``'s entry."""
    return next(i for i, e in enumerate(entries) if e[1] == user_id)


def restate(entries: list[Entry], index: int, **changes: object) -> list[Entry]:
    """``entries`` with entry ``index`` changed (user_id, value, blinding, last_hash)."""
    tag, user, value, blinding, last = entries[index]
    fields = {"user_id": user, "value": value, "blinding": blinding, "last_hash": last}
    fields.update(changes)
    out = list(entries)
    out[index] = (tag, fields["user_id"], fields["value"], fields["blinding"],
                  fields["last_hash"])  # type: ignore[assignment]
    return out


def write_files(world: AccountEpoch, directory, users: list[str]) -> dict[str, object]:
    """The payer's inputs as files: bundle, sealed statement, secret key, users, receipts
    (one .jsonl file per user in a directory)."""
    import json

    files = {"bundle": directory / "bundle.json", "statement": directory / "statement.bin",
             "secret": directory / "payer.key", "users": directory / "users.txt",
             "receipts": directory / "receipts"}
    files["bundle"].write_text(world.bundle.dumps())
    files["statement"].write_bytes(world.sealed)
    files["secret"].write_text(bytes(world.payer_key).hex() + "\n")
    files["users"].write_text("# my users\n" + "\n".join(users) + "\n")
    files["receipts"].mkdir()
    for chain in world.receipts.values():
        path = files["receipts"] / f"{len(list(files['receipts'].iterdir()))}.jsonl"
        path.write_text("".join(json.dumps(r.to_json()) + "\n" for r in chain))
    return files
