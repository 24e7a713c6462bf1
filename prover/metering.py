"""The ingest core: count, price, number, sign and store one usage event (no transport here).

A :class:`UsageRequest` carries an idempotency key, the user, the model, and either the chat
messages with the completion text (the meter counts them) or the gateway's reported counts;
hidden counts (cached input, reasoning) are always reported numbers on their own fields.

``Meter.record_batch`` does, per request, outside any transaction: validate, resolve the
encoding, count in memory, draw a salt and digest the text, price with the rate card, and
compute a keyed payload fingerprint. Then one ledger transaction numbers, chains, signs and
stores the whole batch (prover/ledger/store.py): a retry with the same key and payload gets
the original receipt back, the same key with another payload is refused, and a user total
that would reach 2^n is refused, each without storing anything.

With ``count_workers`` the text of a batch is tokenized in worker processes (tokenization
holds the GIL), so counting overlaps the transactions of other writer threads; the counts
are the same, as the tests check.

Text is never written: not to the database (only counts, salted digests and a keyed
fingerprint), not to logs, not into any error message, and the request's repr hides it.
"""

import logging
import multiprocessing
import os
import re
import secrets
import struct
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from nacl.bindings import crypto_sign, crypto_sign_seed_keypair
from nacl.signing import SigningKey

from circuits.hashing import keccak256
from prover.accounts.admission import AccountGate
from prover.accounts.escrow import EscrowSource
from prover.config import BIT_SIZES, Settings
from prover.epoch.derive import master_secret
from prover.errors import (
    ConfigError,
    InvalidRequestError,
    LedgerError,
    MeteringError,
    UnitsOverflowError,
)
from prover.ledger import ChainPosition, Ledger, PendingEvent, Stored
from prover.ledger.store import MAX_BATCH
from prover.ratecard import RateCard, load_rate_card
from prover.workers import orphan_watchdog
from verifier.receipts import (
    COMPLETION_LABEL,
    FLAG_COUNTED,
    MAX_MODEL_BYTES,
    MAX_USER_ID_BYTES,
    PROMPT_LABEL,
    ZERO32,
    Receipt,
    idempotency_key_digest,
    new_signed_receipt,
    prompt_bytes,
    receipt_key_digest,
)
from verifier.tokens import (
    Message,
    TokenCounter,
    TokenCountError,
    count_chat,
    count_many,
    count_text,
)
from verifier.tokens import get_encoding as _get_encoding

log = logging.getLogger(__name__)

FINGERPRINT_KEY_LABEL = b"ZKMETER_FPKEY_V1"
FINGERPRINT_LABEL = b"ZKMETER_FPRINT_1"
RECEIPT_DIGEST_KEY_LABEL = b"ZKMETER_IDEMDK_1"
MAX_IDEMPOTENCY_KEY_BYTES = 256
MAX_TOKENS_PER_FIELD = (1 << 32) - 1
MIN_POOL_JOBS = 8  # smaller batches are counted in-process: the round trip would cost more
_MODE_TEXT = 1
_MODE_REPORTED = 2


@dataclass(frozen=True, slots=True)
class UsageRequest:
    """One usage report. Exactly one of ``messages`` (with ``completion``) or the reported
    ``input_tokens``/``output_tokens``. The repr never shows messages or completion."""

    idempotency_key: str
    user_id: str
    model: str
    messages: Sequence[Message] | None = field(default=None, repr=False)
    completion: str | None = field(default=None, repr=False)
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0


@dataclass(frozen=True, slots=True)
class _Sealing:
    """What the sealer needs beyond the ledger's PendingEvent (no text)."""

    model: str
    encoding: str
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    reasoning_tokens: int
    salt: bytes
    prompt_digest: bytes
    completion_digest: bytes
    flags: int
    receipt_key_digest: bytes = b""  # keyed digest of the idempotency key (the receipt's)


def check_identifier(value: Any, name: str, max_bytes: int) -> bytes:
    """An identifier (idempotency key, user id, model) as UTF-8 bytes, or InvalidRequestError.

    The same rule on every backend and transport (docs/security.md): valid UTF-8 of
    1..``max_bytes`` bytes, no control character (U+0000-U+001F, U+007F-U+009F; PostgreSQL
    text cannot hold NUL, and SQLite would store it), and not whitespace only. The value is
    never quoted in the error."""
    if not isinstance(value, str):
        raise InvalidRequestError(f"{name} must be a string")
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequestError(f"{name} is not valid UTF-8 text") from None
    if not 1 <= len(raw) <= max_bytes:
        raise InvalidRequestError(f"{name} must be 1..{max_bytes} bytes")
    if _CONTROL.search(value):
        raise InvalidRequestError(f"{name} must not contain control characters (such as NUL)")
    if not value.strip():
        raise InvalidRequestError(f"{name} must not be whitespace only")
    return raw


_check_str = check_identifier
# One C-level scan instead of a Python loop per character (it was ~5 % of a streamed event).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def _check_count(value: Any, name: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_TOKENS_PER_FIELD:
        raise InvalidRequestError(f"{name} must be an integer in [0, 2^32)")
    return value


class Meter:
    """The metering core of one provider (module docstring)."""

    def __init__(self, *, ledger: Ledger, signing_key: SigningKey, rate_card: RateCard,
                 counter: TokenCounter | None = None, bit_size: int = 32,
                 epoch_seconds: int = 86_400,
                 salt_source: Callable[[int], bytes] = secrets.token_bytes,
                 count_workers: int = 0) -> None:
        if bytes(signing_key.verify_key) != ledger.provider_id:
            raise ConfigError("the ledger's provider id is not the signing key's")
        if bit_size not in BIT_SIZES:
            raise ConfigError(f"bit_size must be one of {BIT_SIZES}")
        if type(epoch_seconds) is not int or epoch_seconds < 1:
            raise ConfigError("epoch_seconds must be a positive integer")
        self.ledger = ledger
        self.provider_id = ledger.provider_id
        self.rate_card = rate_card
        self.rate_card_hash = rate_card.hash()
        self.counter = counter or TokenCounter()
        self.bit_size = bit_size
        self.limit = 1 << bit_size
        self.epoch_seconds = epoch_seconds
        self._signing_key = signing_key
        # Tokenization holds the GIL; with count_workers > 0 batches are counted in that many
        # processes, so counting overlaps other threads' transactions (the gRPC writers').
        if type(count_workers) is not int or count_workers < 0:
            raise ConfigError("count_workers must be a non-negative integer")
        self._count_workers = count_workers
        self._pool: ProcessPoolExecutor | None = (
            ProcessPoolExecutor(count_workers, mp_context=multiprocessing.get_context("spawn"),
                                initializer=orphan_watchdog, initargs=(os.getpid(),))
            if count_workers else None)
        # libsodium's 64-byte secret key, to sign without pynacl's per-call wrapper objects
        self._secret64 = crypto_sign_seed_keypair(bytes(signing_key))[1]
        self._salt = salt_source
        # Keyed, so a database reader cannot test guesses of the text against fingerprints.
        self._fingerprint_key = keccak256(FINGERPRINT_KEY_LABEL, bytes(signing_key))
        # Receipts carry the idempotency key digested under this provider secret (derived
        # from the master secret with its own domain tag), so they reveal nothing about keys
        # a user did not choose (docs/receipts.md). The ledger's uniqueness key is separate.
        self._receipt_digest_key = keccak256(RECEIPT_DIGEST_KEY_LABEL,
                                             master_secret(signing_key))

    @classmethod
    def from_settings(cls, settings: Settings, *,
                      escrow: EscrowSource | None = None) -> "Meter":
        """A meter wired from the configuration (migrates the database); ``escrow`` gives
        the prepaid limits (prover/accounts/escrow.py), None for none."""
        key = settings.load_signing_key()
        ledger = Ledger.from_url(settings.database_url.get_secret_value(),
                                 provider_id=bytes(key.verify_key),
                                 timeouts=settings.db_timeouts())
        ledger.gate = AccountGate(escrow=escrow, headroom_units=settings.escrow_headroom_units)
        return cls(ledger=ledger, signing_key=key, rate_card=load_rate_card(settings.rate_card),
                   counter=TokenCounter(settings.model_encodings), bit_size=settings.bit_size,
                   epoch_seconds=settings.epoch_seconds,
                   count_workers=settings.count_workers)

    # --- public API ----------------------------------------------------------------------

    def record(self, request: UsageRequest) -> Stored:
        """Record one event; returns its receipt (``replayed`` for a retry) or raises."""
        outcome = self.record_batch([request])[0]
        if isinstance(outcome, MeteringError):
            raise outcome
        return outcome

    def record_batch(self, requests: Sequence[UsageRequest]) -> list[Stored | MeteringError]:
        """Record many events, one transaction per ``MAX_BATCH`` of them; one outcome per
        request, in order (an item's error never affects the others)."""
        if len(requests) > MAX_BATCH:
            return [outcome for i in range(0, len(requests), MAX_BATCH)
                    for outcome in self.record_batch(requests[i : i + MAX_BATCH])]
        outcomes: list[Stored | MeteringError | None] = [None] * len(requests)
        pending: list[PendingEvent] = []
        where: list[int] = []
        counted = self._count_in_pool(requests)
        salts = self._salts(len(requests))
        for index, request in enumerate(requests):
            try:
                pending.append(self._prepare(request, counted.get(index),
                                             salt=salts[32 * index : 32 * index + 32]))
                where.append(index)
            except MeteringError as exc:
                outcomes[index] = exc
        stored = self._append_isolated(pending)
        for index, outcome in zip(where, stored, strict=True):
            outcomes[index] = outcome
        refused = sum(isinstance(o, MeteringError) for o in outcomes)
        replayed = sum(isinstance(o, Stored) and o.replayed for o in outcomes)
        log.debug("metered batch: %d events, %d replayed, %d refused", len(requests),
                  replayed, refused)
        return [o for o in outcomes if o is not None]

    def _append(self, pending: Sequence[PendingEvent]) -> list[Any]:
        return list(self.ledger.append(pending, seal=self._seal,
                                       rate_card_hash=self.rate_card_hash,
                                       bit_size=self.bit_size,
                                       epoch_seconds=self.epoch_seconds))

    def _append_isolated(self, pending: Sequence[PendingEvent]) -> list[Any]:
        """Append a batch; if the ledger refuses the whole transaction (one item the database
        cannot store, a lost connection), record each item in its own transaction, so one
        item's error never fails another's. A database that is down fails each item."""
        try:
            return self._append(pending)
        except LedgerError:
            if len(pending) <= 1:
                raise
        outcomes: list[Any] = []
        for item in pending:
            try:
                outcomes.extend(self._append([item]))
            except LedgerError as exc:
                outcomes.append(exc)
        return outcomes

    def receipt_key_digest(self, idempotency_key: str) -> bytes:
        """The digest a receipt carries for ``idempotency_key`` (keyed; docs/receipts.md)."""
        return receipt_key_digest(self._receipt_digest_key, idempotency_key)

    def fingerprint(self, request: UsageRequest) -> bytes:
        """The keyed payload fingerprint idempotency compares (validates the request)."""
        return self._prepare(request).fingerprint

    # --- internals -----------------------------------------------------------------------

    def _count_in_pool(self, requests: Sequence[UsageRequest]) -> dict[int, tuple[str, int, int]]:
        """Count the text requests of a batch in the worker processes (index -> counts)."""
        if self._pool is None:
            return {}
        jobs: list[tuple[int, str, tuple[tuple[str, str, str | None], ...], str]] = []
        for index, r in enumerate(requests):
            if not (isinstance(r, UsageRequest) and r.messages is not None
                    and isinstance(r.completion, str)
                    and all(isinstance(m, Message) for m in r.messages)):
                continue  # counted (and refused) in-process, with the proper error
            try:
                encoding = self.counter.encoding_for(r.model)
            except TokenCountError:
                continue
            jobs.append((index, encoding, tuple((m.role, m.content, m.name)
                                                for m in r.messages), r.completion))
        if len(jobs) < MIN_POOL_JOBS:
            return {}
        size = -(-len(jobs) // self._count_workers)
        chunks = [jobs[i : i + size] for i in range(0, len(jobs), size)]
        futures = [self._pool.submit(count_many, [(e, m, c) for _, e, m, c in chunk])
                   for chunk in chunks]
        counted: dict[int, tuple[str, int, int]] = {}
        try:
            for chunk, future in zip(chunks, futures, strict=True):
                for (index, encoding, _m, _c), result in zip(chunk, future.result(),
                                                             strict=True):
                    if result is not None:
                        counted[index] = (encoding, *result)
        except Exception as exc:  # a dead or broken worker: count this batch in-process
            # The type only: a worker's error text is not ours to log.
            log.warning("counting workers failed (%s); counting in-process",
                        type(exc).__name__)
            return {}
        return counted

    def close(self) -> None:
        """Stop the counting processes, if any."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def _salts(self, count: int) -> bytes:
        """``count`` fresh 32-byte salts in one draw (one getrandom call per batch, not per
        event: it was 3 % of an event)."""
        salts = self._salt(32 * count)
        if type(salts) is not bytes or len(salts) != 32 * count:
            raise ConfigError("the salt source returned the wrong number of bytes")
        return salts

    def _prepare(self, request: UsageRequest, counted: tuple[str, int, int] | None = None,
                 *, salt: bytes | None = None) -> PendingEvent:
        if not isinstance(request, UsageRequest):
            raise InvalidRequestError("expected a UsageRequest")
        _check_str(request.idempotency_key, "idempotency_key", MAX_IDEMPOTENCY_KEY_BYTES)
        user = _check_str(request.user_id, "user_id", MAX_USER_ID_BYTES)
        model = _check_str(request.model, "model", MAX_MODEL_BYTES)
        cached = _check_count(request.cached_input_tokens, "cached_input_tokens")
        reasoning = _check_count(request.reasoning_tokens, "reasoning_tokens")
        if salt is None:
            salt = self._salts(1)
        if request.messages is not None:
            if request.input_tokens is not None or request.output_tokens is not None:
                raise InvalidRequestError("give either text or reported counts, not both")
            if not isinstance(request.completion, str):
                raise InvalidRequestError("a text request needs the completion text (may be "
                                          "empty)")
            try:
                encoding = self.counter.encoding_for(request.model)
                if counted is not None and counted[0] == encoding:
                    input_tokens, output_tokens = counted[1], counted[2]
                else:
                    enc = _get_encoding(encoding)
                    input_tokens = count_chat(request.messages, enc)
                    output_tokens = count_text(request.completion, enc)
                prompt = prompt_bytes(request.messages)
                completion = request.completion.encode("utf-8")
            except TokenCountError as exc:
                raise InvalidRequestError(str(exc)) from None
            except UnicodeEncodeError:
                raise InvalidRequestError("completion is not valid UTF-8 text") from None
            sealing = _Sealing(
                model=request.model, encoding=encoding, input_tokens=input_tokens,
                output_tokens=output_tokens, cached_input_tokens=cached,
                reasoning_tokens=reasoning, salt=salt,
                prompt_digest=keccak256(salt, PROMPT_LABEL, prompt),
                completion_digest=keccak256(salt, COMPLETION_LABEL, completion),
                flags=FLAG_COUNTED, receipt_key_digest=self.receipt_key_digest(
                    request.idempotency_key))
            body = b"".join((bytes((_MODE_TEXT,)), struct.pack(">I", len(prompt)), prompt,
                             struct.pack(">I", len(completion)), completion))
        else:
            if request.completion is not None:
                raise InvalidRequestError("a completion text needs the prompt messages")
            if request.input_tokens is None or request.output_tokens is None:
                raise InvalidRequestError("give the messages and completion text, or both "
                                          "reported counts")
            input_tokens = _check_count(request.input_tokens, "input_tokens")
            output_tokens = _check_count(request.output_tokens, "output_tokens")
            sealing = _Sealing(
                model=request.model, encoding="", input_tokens=input_tokens,
                output_tokens=output_tokens, cached_input_tokens=cached,
                reasoning_tokens=reasoning, salt=salt, prompt_digest=ZERO32,
                completion_digest=ZERO32, flags=0,
                receipt_key_digest=self.receipt_key_digest(request.idempotency_key))
            body = struct.pack(">BQQ", _MODE_REPORTED, input_tokens, output_tokens)
        if cached > input_tokens:
            raise InvalidRequestError("cached_input_tokens exceeds the input tokens")
        units = self.rate_card.prices_for(request.model).units(
            input_tokens=input_tokens, cached_input_tokens=cached,
            output_tokens=output_tokens, reasoning_tokens=reasoning)
        if units >= self.limit:
            raise UnitsOverflowError(f"one event of {units} units reaches 2^{self.bit_size}")
        fingerprint = keccak256(
            self._fingerprint_key, FINGERPRINT_LABEL, struct.pack(">H", len(user)), user,
            struct.pack(">H", len(model)), model, body, struct.pack(">QQ", cached, reasoning))
        return PendingEvent(key_digest=idempotency_key_digest(request.idempotency_key),
                            fingerprint=fingerprint, user_id=request.user_id, units=units,
                            payload=sealing)

    def _seal(self, item: PendingEvent, position: ChainPosition) -> tuple[Receipt, bytes]:
        """The signed receipt of ``item`` at ``position`` and its wire bytes (signed bytes
        computed once: they are signed, then stored)."""
        s: _Sealing = item.payload
        total = position.total_before + item.units
        if total >= self.limit:
            raise UnitsOverflowError(
                f"the user's epoch total would reach 2^{self.bit_size}; event refused")
        return new_signed_receipt(
            self._sign, provider_id=self.provider_id, epoch_id=position.epoch.id,
            user_id=item.user_id, seq=position.seq, prev_hash=position.prev_hash,
            idempotency_key_digest=s.receipt_key_digest, model=s.model, encoding=s.encoding,
            input_tokens=s.input_tokens, output_tokens=s.output_tokens,
            cached_input_tokens=s.cached_input_tokens, reasoning_tokens=s.reasoning_tokens,
            units=item.units, total_units=total, rate_card_hash=self.rate_card_hash,
            salt=s.salt, prompt_digest=s.prompt_digest, completion_digest=s.completion_digest,
            timestamp_ms=position.timestamp_ms, flags=s.flags)

    def _sign(self, body: bytes) -> bytes:
        """The detached Ed25519 signature of ``body`` (libsodium, the 64-byte secret key)."""
        signature: bytes = crypto_sign(body, self._secret64)[:64]
        return signature
