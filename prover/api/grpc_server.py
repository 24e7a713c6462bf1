"""The gRPC transport (``zkmeter.v1``): metering and epochs, health, reflection, API keys.

Transport only: convert protobuf to domain requests, call the core (prover/metering.py,
prover/epoch/service.py) in a worker thread, convert back. Cross-cutting concerns live in one
place each: gateway authentication and requests that do not decode in
:class:`TransportInterceptor`, error mapping in :func:`status_for`.
Nothing here logs a request or any prompt or completion text.
"""

import asyncio
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import DecodeError as ProtobufDecodeError
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status
from sqlalchemy.exc import SQLAlchemyError

from circuits.hashing import keccak256
from prover.accounts.registry import Account
from prover.api.metrics import observe_ingest
from prover.app import Services
from prover.config import ROLE_GATEWAY, ROLE_OPERATOR
from prover.errors import (
    AccountLeafLimitError,
    AccountStateError,
    EpochStateError,
    EscrowUnavailableError,
    IdempotencyConflictError,
    InvalidRequestError,
    LedgerError,
    MeteringError,
    PrepaidLimitError,
    UnitsOverflowError,
    UnknownUserError,
    UserKeyExistsError,
)
from prover.ledger import EpochInfo, Stored
from prover.ledger.faults import describe
from prover.metering import UsageRequest, check_identifier
from verifier.receipts import MAX_USER_ID_BYTES, SIGNATURE_BYTES, Receipt
from verifier.tokens import Message, TokenCountError
from zkmeter.v1 import epoch_pb2, epoch_pb2_grpc, meter_pb2, meter_pb2_grpc

log = logging.getLogger(__name__)

METER_SERVICE = meter_pb2.DESCRIPTOR.services_by_name["MeterService"].full_name
EPOCH_SERVICE = epoch_pb2.DESCRIPTOR.services_by_name["EpochService"].full_name
UNAUTHENTICATED_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
STREAM_BATCH = 512
API_KEY_PREFIX = "zkm_"
_STATES: dict[str, "epoch_pb2.EpochState"] = {
    "open": epoch_pb2.EPOCH_STATE_OPEN, "closing": epoch_pb2.EPOCH_STATE_CLOSING,
    "closed": epoch_pb2.EPOCH_STATE_CLOSED}
_REQUEST_FIELDS = ("idempotency_key", "user_id", "model", "input_tokens", "output_tokens",
                   "cached_input_tokens", "reasoning_tokens", "messages", "completion")


# --- API keys ------------------------------------------------------------------------------

def new_api_key() -> str:
    """A fresh gateway API key (256 bits of randomness)."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    """The stored form of an API key: ``sha256:<hex>``. Keys are random, so a plain hash is
    enough (no dictionary to attack)."""
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


# Methods only an operator key may call; every other zkmeter method takes either role.
OPERATOR_METHODS = frozenset({
    f"/{EPOCH_SERVICE}/CloseEpoch",
    f"/{EPOCH_SERVICE}/GetOpening",
    f"/{METER_SERVICE}/RotateUserKey",
    f"/{METER_SERVICE}/RegisterAccount",
    f"/{METER_SERVICE}/CloseAccount",
})


def key_roles(api_key_hashes: Iterable[str] | Mapping[str, str]) -> dict[str, str]:
    """Key hash -> role; a plain list of hashes (the old form) makes every key a gateway."""
    if isinstance(api_key_hashes, Mapping):
        roles = dict(api_key_hashes)
    else:
        roles = {digest: ROLE_GATEWAY for digest in api_key_hashes}
    for role in roles.values():
        if role not in (ROLE_GATEWAY, ROLE_OPERATOR):
            raise ValueError(f"unknown API-key role {role!r}")
    return roles


class TransportInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """The cross-cutting concerns of every zkmeter RPC, in one place:

    * API keys: ``authorization: Bearer <key>`` with a known key, and an operator key for
      :data:`OPERATOR_METHODS` (else UNAUTHENTICATED / PERMISSION_DENIED); checked first, so
      an unauthenticated caller's request is never even decoded. Health checks and
      reflection stay open.
    * Requests that do not decode (invalid UTF-8 in a string, garbage or truncated bytes, a
      bad wire type, field 0, deep nesting, both ``text`` and ``counts``) end as
      INVALID_ARGUMENT with one log line; in a stream it is one item's error, and the items
      after it are processed.

    The wrapped handler of each method and the denial handler of each (method, code) are
    built once, on the first call, and reused: a call costs a key check and a dict look-up.
    """

    def __init__(self, key_hashes: Iterable[str] | Mapping[str, str]) -> None:
        self._keys = [(bytes.fromhex(h.removeprefix("sha256:")), role)
                      for h, role in key_roles(key_hashes).items()]
        self._handlers: dict[str, Any] = {}
        self._denials: dict[tuple[str, grpc.StatusCode], Any] = {}

    def _role(self, metadata: Sequence[tuple[str, Any]] | None) -> str | None:
        values = [v for k, v in metadata or () if k == "authorization"]
        if len(values) != 1 or not isinstance(values[0], str):
            return None
        scheme, _, key = values[0].partition(" ")
        if scheme.lower() != "bearer" or not key:
            return None
        digest = hashlib.sha256(key.strip().encode("utf-8")).digest()
        found: str | None = None
        for known, role in self._keys:  # compare with every key: time does not depend on which
            if hmac.compare_digest(digest, known):
                found = role
        return found

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: Any
    ) -> Any:
        method: str = details.method
        if method.startswith(UNAUTHENTICATED_PREFIXES):
            return await continuation(details)
        handler = self._handlers.get(method)
        if handler is None:
            inner = await continuation(details)
            if inner is None:  # an unknown method: UNIMPLEMENTED, as without us
                return None
            handler = self._handlers.setdefault(method, _guarded(method, inner))
        role = self._role(details.invocation_metadata)
        if role is None:
            return self._denial(method, handler, grpc.StatusCode.UNAUTHENTICATED)
        if role != ROLE_OPERATOR and method in OPERATOR_METHODS:
            return self._denial(method, handler, grpc.StatusCode.PERMISSION_DENIED)
        return handler

    def _denial(self, method: str, handler: Any, code: grpc.StatusCode) -> Any:
        denial = self._denials.get((method, code))
        if denial is None:
            denial = self._denials.setdefault((method, code), _denied(handler, code))
        return denial


_DENIALS = {
    grpc.StatusCode.UNAUTHENTICATED: "missing or unknown API key (authorization: Bearer <key>)",
    grpc.StatusCode.PERMISSION_DENIED: "this call needs an operator API key",
}


def _denied(handler: Any, code: grpc.StatusCode) -> Any:
    """A handler of ``handler``'s kind that ends every call with ``code``; the request is
    never decoded (no deserializer: the denial sees bytes)."""
    message = _DENIALS[code]

    async def deny(_request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, message)

    serializer = handler.response_serializer
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(deny, response_serializer=serializer)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(deny, response_serializer=serializer)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(deny, response_serializer=serializer)
    return grpc.stream_stream_rpc_method_handler(deny, response_serializer=serializer)


# --- requests that do not decode -----------------------------------------------------------

class Undecodable:
    """What a request that protobuf cannot parse becomes: handled as INVALID_ARGUMENT (a
    unary call ends with it; a stream item gets a per-item error and the stream goes on)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"Undecodable({self.reason!r})"


_TEXT_FIELD = meter_pb2.RecordUsageRequest.DESCRIPTOR.fields_by_name["text"].number
_COUNTS_FIELD = meter_pb2.RecordUsageRequest.DESCRIPTOR.fields_by_name["counts"].number


def _first_key_bytes(number: int) -> re.Pattern[bytes]:
    """The bytes a top-level key of field ``number`` (< 16, any wire type) can begin with: the
    whole key (``number << 3 | wire``) or, in an overlong encoding, the same with the
    continuation bit set. Bytes in which no such byte occurs cannot hold the field."""
    if not 0 < number < 16:  # pragma: no cover - fixed by the proto
        raise ImportError(f"field {number}: its key is no longer one byte")
    low, high = number << 3, number << 3 | 7
    ends = [re.escape(bytes([b])) for b in (low, high, low | 0x80, high | 0x80)]
    return re.compile(b"[%s-%s%s-%s]" % tuple(ends))


_MAY_HOLD_TEXT = _first_key_bytes(_TEXT_FIELD)
_MAY_HOLD_COUNTS = _first_key_bytes(_COUNTS_FIELD)

def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def top_level_fields(data: bytes) -> set[int]:
    """The field numbers present at the top level of an encoded message (wire format only;
    raises ValueError if it does not parse as such)."""
    found: set[int] = set()
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        found.add(number)
        if wire == 0:
            _, pos = _varint(data, pos)
        elif wire == 1:
            pos += 8
        elif wire == 2:
            length, pos = _varint(data, pos)
            pos += length
        elif wire == 5:
            pos += 4
        else:  # groups (3, 4) and 6, 7: nothing zkmeter sends
            raise ValueError(f"wire type {wire}")
        if pos > len(data):
            raise ValueError("truncated field")
    return found


def _both_usages(data: bytes) -> bool:
    """Whether an encoded RecordUsageRequest holds both ``text`` and ``counts`` at its top
    level (protobuf keeps the last member of a oneof it reads, so the parsed message cannot
    tell). The bytes are scanned only if a byte search finds that they may hold both keys."""
    if _MAY_HOLD_TEXT.search(data) is None or _MAY_HOLD_COUNTS.search(data) is None:
        return False
    try:
        fields = top_level_fields(data)
    except ValueError:  # protobuf parsed it; leave the verdict to protobuf
        return False
    return {_TEXT_FIELD, _COUNTS_FIELD} <= fields


_DECODE_ERRORS = (ProtobufDecodeError, ValueError, RecursionError, UnicodeDecodeError)


def _safe_deserializer(method: str, deserialize: Callable[[bytes], Any] | None
                       ) -> Callable[[bytes], Any] | None:
    """``deserialize`` that returns :class:`Undecodable` instead of raising (one log line,
    never the bytes or protobuf's message text)."""
    if deserialize is None:
        return None

    def safe(data: bytes) -> Any:
        try:
            return deserialize(data)
        except _DECODE_ERRORS as exc:
            log.info("gRPC %s: undecodable request refused (%s)", method, type(exc).__name__)
            return Undecodable("the request is not a valid protobuf message of its type")

    if not method.endswith(("/RecordUsage", "/RecordUsageStream")):
        return safe

    def safe_usage(data: bytes) -> Any:
        message = safe(data)
        if not isinstance(message, Undecodable) and _both_usages(data):
            log.info("gRPC %s: request with both text and counts refused", method)
            return Undecodable("usage: give either `text` or `counts`, not both")
        return message

    return safe_usage


def _guarded(method: str, handler: Any) -> Any:
    """``handler`` with the safe deserializer; unary requests that do not decode end the call
    as INVALID_ARGUMENT before the servicer sees them (stream items reach the servicer, which
    turns them into item errors)."""
    kwargs = {"request_deserializer": _safe_deserializer(method, handler.request_deserializer),
              "response_serializer": handler.response_serializer}
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(_unary_guard(handler.unary_unary), **kwargs)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(_unary_stream_guard(handler.unary_stream),
                                                    **kwargs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(handler.stream_unary, **kwargs)
    return grpc.stream_stream_rpc_method_handler(handler.stream_stream, **kwargs)


def _unary_guard(behavior: Callable[..., Any]) -> Callable[..., Any]:
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, Undecodable):
            await abort_with(context, InvalidRequestError(request.reason))
        return await behavior(request, context)

    return guarded


def _unary_stream_guard(behavior: Callable[..., Any]) -> Callable[..., Any]:
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        if isinstance(request, Undecodable):
            await abort_with(context, InvalidRequestError(request.reason))
        async for item in behavior(request, context):
            yield item

    return guarded


# --- errors --------------------------------------------------------------------------------

def _field_of(message: str) -> str:
    first = message.split(" ", 1)[0].strip(":,")
    return first if first in _REQUEST_FIELDS else ""


def status_for(exc: Exception) -> tuple[grpc.StatusCode, str, str]:
    """(status code, message, offending field) for a domain error; never UNKNOWN."""
    message = str(exc)
    if isinstance(exc, InvalidRequestError):
        return grpc.StatusCode.INVALID_ARGUMENT, message, _field_of(message)
    if isinstance(exc, IdempotencyConflictError):
        return grpc.StatusCode.ALREADY_EXISTS, message, "idempotency_key"
    if isinstance(exc, UserKeyExistsError):
        return grpc.StatusCode.ALREADY_EXISTS, message, "x25519_public_key"
    if isinstance(exc, UnitsOverflowError | PrepaidLimitError | AccountLeafLimitError):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, message, ""
    if isinstance(exc, UnknownUserError):
        return grpc.StatusCode.NOT_FOUND, message, "user_id" if "user_id" in message else ""
    if isinstance(exc, AccountStateError):
        return grpc.StatusCode.FAILED_PRECONDITION, message, ""
    if isinstance(exc, EpochStateError):
        return grpc.StatusCode.FAILED_PRECONDITION, message, ""
    if isinstance(exc, LedgerError | EscrowUnavailableError):
        return grpc.StatusCode.UNAVAILABLE, message, ""
    if isinstance(exc, SQLAlchemyError):  # never the statement or its parameters
        return grpc.StatusCode.UNAVAILABLE, f"the database failed: {describe(exc)}", ""
    if isinstance(exc, LookupError):
        return grpc.StatusCode.NOT_FOUND, message, ""
    if isinstance(exc, MeteringError):
        return grpc.StatusCode.FAILED_PRECONDITION, message, ""
    return grpc.StatusCode.INTERNAL, "internal error", ""


async def abort_with(context: grpc.aio.ServicerContext, exc: Exception) -> None:
    """End the call with the mapped status and a google.rpc.Status carrying details
    (BadRequest with the field for INVALID_ARGUMENT)."""
    code, message, field = status_for(exc)
    if code == grpc.StatusCode.INTERNAL:
        log.error("internal error in a gRPC call: %s", type(exc).__name__)
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=message)
    if field and code != grpc.StatusCode.NOT_FOUND:
        detail = error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=field, description=message)])
        status.details.add().Pack(detail)
    info = error_info(exc)
    if info is not None:
        reason, metadata = info
        status.details.add().Pack(error_details_pb2.ErrorInfo(
            reason=reason, domain="zkmeter.v1", metadata=metadata))
    await context.abort_with_status(rpc_status.to_status(status))


def error_info(exc: Exception) -> tuple[str, dict[str, str]] | None:
    """The machine-readable reason of a refusal and its metadata (a unary call's
    google.rpc.ErrorInfo, a stream item's ``reason`` and ``metadata``), if it has one."""
    if isinstance(exc, PrepaidLimitError):
        return "PREPAID_LIMIT", {"account_id": "0x" + exc.account_id.hex(),
                                 "remaining_units": str(exc.remaining_units)}
    return None


def item_error(exc: Exception) -> meter_pb2.ItemError:
    """A refused stream item: the code, message and field of :func:`status_for`, and the
    reason of :func:`error_info`."""
    code, message, field = status_for(exc)
    item = meter_pb2.ItemError(code=code.value[0], message=message, field=field)
    info = error_info(exc)
    if info is not None:
        item.reason = info[0]
        item.metadata.update(info[1])
    return item


# --- conversions ---------------------------------------------------------------------------

def usage_from_proto(request: meter_pb2.RecordUsageRequest | Undecodable) -> UsageRequest:
    """The domain request of a RecordUsageRequest; raises InvalidRequestError."""
    if isinstance(request, Undecodable):
        raise InvalidRequestError(request.reason)
    kind = request.WhichOneof("usage")
    if kind == "text":
        try:
            messages = [Message(m.role, m.content, m.name or None)
                        for m in request.text.messages]
        except TokenCountError as exc:  # e.g. an empty role; the text is never quoted
            raise InvalidRequestError(f"messages: {exc}") from None
        if not messages:
            raise InvalidRequestError("messages must hold at least one chat message")
        return UsageRequest(
            idempotency_key=request.idempotency_key, user_id=request.user_id,
            model=request.model, messages=messages, completion=request.text.completion,
            cached_input_tokens=request.hidden.cached_input_tokens,
            reasoning_tokens=request.hidden.reasoning_tokens)
    if kind == "counts":
        return UsageRequest(
            idempotency_key=request.idempotency_key, user_id=request.user_id,
            model=request.model, input_tokens=request.counts.input_tokens,
            output_tokens=request.counts.output_tokens,
            cached_input_tokens=request.hidden.cached_input_tokens,
            reasoning_tokens=request.hidden.reasoning_tokens)
    raise InvalidRequestError("usage: give either `text` or `counts`")


def receipt_to_proto(receipt: Receipt, *, encoded: bytes | None = None,
                     receipt_hash: bytes | None = None) -> meter_pb2.Receipt:
    """The wire form of a receipt: its canonical bytes, signature and hash =
    keccak256(encoded ‖ signature), computed here unless the ledger gave them (``encoded``
    without the signature, as stored)."""
    if encoded is None:
        encoded = receipt.signed_bytes()
    if receipt_hash is None:
        receipt_hash = keccak256(encoded, receipt.signature)
    return meter_pb2.Receipt(
        encoded=encoded, signature=receipt.signature, receipt_hash=receipt_hash,
        epoch_id=receipt.epoch_id, sequence=receipt.seq,
        units=receipt.units, running_total=receipt.total_units,
        input_tokens=receipt.input_tokens, output_tokens=receipt.output_tokens,
        cached_input_tokens=receipt.cached_input_tokens,
        reasoning_tokens=receipt.reasoning_tokens, encoding=receipt.encoding)


def _response(stored: Stored) -> meter_pb2.RecordUsageResponse:
    receipt = receipt_to_proto(stored.receipt, encoded=stored.wire[:-SIGNATURE_BYTES],
                               receipt_hash=stored.receipt_hash)
    return meter_pb2.RecordUsageResponse(receipt=receipt, replayed=stored.replayed)


def account_to_proto(account: Account) -> meter_pb2.Account:
    """The wire form of a billing account."""
    return meter_pb2.Account(
        account_id=account.account_id, payer=account.payer, asset=account.asset,
        payer_x25519_public_key=account.payer_x25519_public_key,
        status=meter_pb2.ACCOUNT_STATUS_OPEN if account.status == "open"
        else meter_pb2.ACCOUNT_STATUS_CLOSED)


def epoch_to_proto(info: EpochInfo, services: Services) -> epoch_pb2.Epoch:
    """The wire form of an epoch, with its close progress."""
    status = services.store.status(info.id)
    out = epoch_pb2.Epoch(epoch_id=info.id,
                          state=_STATES.get(info.state, epoch_pb2.EPOCH_STATE_UNSPECIFIED),
                          window_start=info.window_start_ms, window_end=info.window_end_ms or 0)
    if status is not None:
        out.leaves_done = status.leaves_done
        out.leaves_total = status.leaves_total
        if status.merkle_root is not None:
            out.merkle_root = status.merkle_root
        out.total_units = status.total_units or 0
    return out


# --- services ------------------------------------------------------------------------------

class IngestBatcher:
    """Group commit: requests that arrive while a ledger transaction runs are recorded
    together in the next one, so throughput does not cost durability (every receipt is
    committed before it is returned) and concurrent unary calls share one fsync.

    A submission is one queue entry with one future; a writer takes whole submissions, in
    order, up to ``max_batch`` requests (a larger submission is split first), and runs the
    transaction on its own thread of a pool of ``writers`` threads kept for the batcher's
    life."""

    def __init__(self, record_batch: Callable[[list[UsageRequest]], list[Any]], *,
                 max_batch: int = STREAM_BATCH, writers: int = 1) -> None:
        self._record_batch = record_batch
        self._max_batch = max_batch
        self._writers = writers
        self._pending: deque[tuple[Sequence[UsageRequest], asyncio.Future[list[Any]]]] = deque()
        self._wake: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._pool: ThreadPoolExecutor | None = None

    async def submit(self, requests: Sequence[UsageRequest]) -> list[Stored | Exception]:
        """Record the requests (in order, maybe with others); one outcome each."""
        if len(requests) > self._max_batch:
            outcomes: list[Stored | Exception] = []
            for start in range(0, len(requests), self._max_batch):
                outcomes += await self.submit(requests[start:start + self._max_batch])
            return outcomes
        if not requests:
            return []
        if self._wake is None:
            self._wake = asyncio.Event()
            self._pool = ThreadPoolExecutor(self._writers, thread_name_prefix="zkmeter-ingest")
            self._tasks = [asyncio.create_task(self._run(self._wake))
                           for _ in range(self._writers)]
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._pending.append((requests, future))
        self._wake.set()
        return await future

    async def _run(self, wake: asyncio.Event) -> None:
        pending = self._pending
        while True:
            if not pending:
                wake.clear()
                await wake.wait()
                continue
            group = [pending.popleft()]
            size = len(group[0][0])
            while pending and size + len(pending[0][0]) <= self._max_batch:
                group.append(pending.popleft())
                size += len(group[-1][0])
            requests = [r for submitted, _ in group for r in submitted]
            outcomes = await self._record_isolated(requests)
            start = 0
            for submitted, future in group:
                if not future.done():  # a caller that went away leaves a cancelled future
                    future.set_result(outcomes[start:start + len(submitted)])
                start += len(submitted)

    async def _in_thread(self, requests: list[UsageRequest]) -> list[Any]:
        outcomes: list[Any] = await asyncio.get_running_loop().run_in_executor(
            self._pool, self._record_batch, requests)
        return outcomes

    async def _record_isolated(self, requests: list[UsageRequest]) -> list[Any]:
        """One outcome per request. Requests of unrelated callers share a transaction, so a
        batch that fails as a whole is recorded again one request at a time: one caller's
        request can never fail another's (a database that is down fails each one)."""
        try:
            outcomes = await self._in_thread(requests)
            if len(outcomes) != len(requests):
                raise RuntimeError("record_batch returned the wrong number of outcomes")
            return outcomes
        except Exception as exc:
            if len(requests) == 1:
                return [exc]
        singles: list[Any] = []
        for request in requests:
            try:
                singles.extend(await self._in_thread([request]))
            except Exception as exc:
                singles.append(exc)
        return singles

    async def aclose(self) -> None:
        """Stop the writer tasks and their threads."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._pool is not None:
            self._pool.shutdown(wait=False)  # a running transaction ends on its own


def _observe_stream(outcomes: Sequence[Stored | Exception], elapsed: float) -> None:
    """The metrics of one recorded stream batch: each event observed at the batch's time per
    event, counted per outcome (three calls at most, not one per event)."""
    counts = {"recorded": 0, "replayed": 0, "refused": 0}
    for outcome in outcomes:
        if isinstance(outcome, Exception):
            counts["refused"] += 1
        else:
            counts["replayed" if outcome.replayed else "recorded"] += 1
    per_event = elapsed / len(outcomes) if outcomes else 0.0
    for outcome_name, count in counts.items():
        observe_ingest("RecordUsageStream", outcome_name, per_event, count)


class MeterServicer(meter_pb2_grpc.MeterServiceServicer):
    """MeterService: ingest for gateways."""

    def __init__(self, services: Services, *, writers: int = 1,
                 record_batch: Callable[[list[UsageRequest]], list[Any]] | None = None
                 ) -> None:
        self.services = services
        self.meter = services.meter
        self.batcher = IngestBatcher(record_batch or self.meter.record_batch, writers=writers)

    async def RecordUsage(self, request: meter_pb2.RecordUsageRequest,
                          context: grpc.aio.ServicerContext) -> meter_pb2.RecordUsageResponse:
        start = time.perf_counter()
        try:
            (outcome,) = await self.batcher.submit([usage_from_proto(request)])
            if isinstance(outcome, Exception):
                raise outcome
        except Exception as exc:  # mapped to a status code (INTERNAL if unknown)
            observe_ingest("RecordUsage", "refused", time.perf_counter() - start)
            await abort_with(context, exc)
            raise  # unreachable: abort raises
        stored: Stored = outcome
        observe_ingest("RecordUsage", "replayed" if stored.replayed else "recorded",
                       time.perf_counter() - start)
        return _response(stored)

    async def RecordUsageStream(
        self, request_iterator: AsyncIterator[meter_pb2.RecordUsageRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[meter_pb2.RecordUsageResponse]:
        """One response per request, in order; requests that arrive together are recorded in
        one ledger transaction. Pipelined: while the responses of one batch are written, the
        next batch (what arrived meanwhile) is recorded; a batch is submitted only once the one
        before it is committed, and its responses are written only once it is committed
        itself. Bounded: at most 4 * STREAM_BATCH requests wait, plus the two batches."""
        queue: asyncio.Queue[meter_pb2.RecordUsageRequest | Undecodable | None] = asyncio.Queue(
            maxsize=4 * STREAM_BATCH)
        finished = False

        async def read() -> None:
            async for item in request_iterator:
                if queue.full():  # back-pressure: the client waits for the recording
                    await queue.put(item)
                else:
                    queue.put_nowait(item)
            await queue.put(None)

        def start(first: meter_pb2.RecordUsageRequest | Undecodable | None
                  ) -> "asyncio.Task[tuple[list[Stored | Exception], float]] | None":
            """Take ``first`` and what else waits (up to STREAM_BATCH) and start recording
            them; None at the end of the stream."""
            nonlocal finished
            if first is None:
                finished = True
                return None
            batch = [first]
            while len(batch) < STREAM_BATCH and not queue.empty():
                item = queue.get_nowait()
                if item is None:
                    finished = True
                    break
                batch.append(item)
            return asyncio.create_task(self._record_timed(batch))

        reader = asyncio.create_task(read())
        current = following = None
        try:
            current = start(await queue.get())
            while current is not None:
                outcomes, elapsed = await current
                following = None
                if not finished and not queue.empty():
                    following = start(queue.get_nowait())
                _observe_stream(outcomes, elapsed)
                for outcome in outcomes:
                    if isinstance(outcome, Exception):
                        yield meter_pb2.RecordUsageResponse(error=item_error(outcome))
                    else:
                        yield _response(outcome)
                if following is None and not finished:
                    following = start(await queue.get())
                current, following = following, None
            await reader
        finally:
            reader.cancel()
            for task in (current, following):  # the requests stay submitted; only the wait ends
                if task is not None:
                    task.cancel()

    async def _record_timed(self, batch: list[meter_pb2.RecordUsageRequest | Undecodable]
                            ) -> tuple[list[Stored | Exception], float]:
        began = time.perf_counter()
        outcomes = await self._record_batch(batch)
        return outcomes, time.perf_counter() - began

    async def _record_batch(self, batch: list[meter_pb2.RecordUsageRequest | Undecodable]
                            ) -> list[Stored | Exception]:
        converted: list[UsageRequest | Exception] = []
        for item in batch:
            try:
                converted.append(usage_from_proto(item))
            except MeteringError as exc:
                converted.append(exc)
        recorded = iter(await self.batcher.submit(
            [c for c in converted if isinstance(c, UsageRequest)]))
        return [c if isinstance(c, Exception) else next(recorded) for c in converted]

    async def ListReceipts(self, request: meter_pb2.ListReceiptsRequest,
                           context: grpc.aio.ServicerContext) -> meter_pb2.ListReceiptsResponse:
        try:
            check_identifier(request.user_id, "user_id", MAX_USER_ID_BYTES)
            epoch_id = request.epoch_id or await asyncio.to_thread(self._current_epoch_id)
            receipts = await asyncio.to_thread(self.meter.ledger.receipts, epoch_id,
                                               request.user_id)
            if request.idempotency_key:
                wanted = self.meter.receipt_key_digest(request.idempotency_key)
                receipts = [r for r in receipts if r.idempotency_key_digest == wanted]
        except (MeteringError, LookupError) as exc:
            await abort_with(context, exc)
            raise
        return meter_pb2.ListReceiptsResponse(receipts=[receipt_to_proto(r) for r in receipts])

    def _current_epoch_id(self) -> int:
        info = self.meter.ledger.current_epoch()
        if info is None:
            raise LookupError("there is no open epoch")
        return info.id

    async def _call(self, context: grpc.aio.ServicerContext, fn: Callable[..., Any],
                    *args: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args)
        except (MeteringError, LookupError) as exc:
            await abort_with(context, exc)
            raise

    async def RegisterUserKey(self, request: meter_pb2.RegisterUserKeyRequest,
                              context: grpc.aio.ServicerContext
                              ) -> meter_pb2.RegisterUserKeyResponse:
        """A new user's key (gateway); another key for a registered user is ALREADY_EXISTS."""
        try:
            user_id, key = _user_key(request)
            await asyncio.to_thread(self.services.store.register_user_key, user_id, key)
        except MeteringError as exc:
            await abort_with(context, exc)
            raise
        return meter_pb2.RegisterUserKeyResponse()

    async def RotateUserKey(self, request: meter_pb2.RotateUserKeyRequest,
                            context: grpc.aio.ServicerContext
                            ) -> meter_pb2.RotateUserKeyResponse:
        """Replace a user's key from the next epoch on (operator only: the interceptor)."""
        try:
            user_id, key = _user_key(request)
            effective = await asyncio.to_thread(self._rotate, user_id, key)
        except (MeteringError, LookupError) as exc:
            await abort_with(context, exc)
            raise
        return meter_pb2.RotateUserKeyResponse(effective_epoch_id=effective)

    def _rotate(self, user_id: str, key: bytes) -> int:
        effective = self.services.store.rotate_user_key(user_id, key)
        # logged without the key, and with a digest of the user id rather than the id
        log.warning("user key rotated by an operator for user %s, effective from epoch %d",
                    keccak256(b"ZKMETER_LOGUSER1", user_id.encode()).hex()[:16], effective)
        return effective

    async def RegisterUser(self, request: meter_pb2.RegisterUserRequest,
                           context: grpc.aio.ServicerContext) -> meter_pb2.RegisterUserResponse:
        key = bytes(request.x25519_public_key) or None
        await self._call(context, self.services.accounts.register_user, request.user_id,
                         bytes(request.account_id), key)
        return meter_pb2.RegisterUserResponse()

    async def RegisterAccount(self, request: meter_pb2.RegisterAccountRequest,
                              context: grpc.aio.ServicerContext) -> meter_pb2.Account:
        def register() -> Account:
            return self.services.accounts.register_account(
                payer=bytes(request.payer), asset=bytes(request.asset),
                payer_x25519_public_key=bytes(request.payer_x25519_public_key))
        return account_to_proto(await self._call(context, register))

    async def GetAccount(self, request: meter_pb2.GetAccountRequest,
                         context: grpc.aio.ServicerContext) -> meter_pb2.Account:
        return account_to_proto(await self._call(context, self.services.accounts.account,
                                                 bytes(request.account_id)))

    async def CloseAccount(self, request: meter_pb2.CloseAccountRequest,
                           context: grpc.aio.ServicerContext) -> meter_pb2.Account:
        return account_to_proto(await self._call(
            context, self.services.accounts.close_account, bytes(request.account_id)))


def _user_key(request: Any) -> tuple[str, bytes]:
    check_identifier(request.user_id, "user_id", MAX_USER_ID_BYTES)
    if len(request.x25519_public_key) != 32:
        raise InvalidRequestError("x25519_public_key must be 32 bytes")
    return request.user_id, bytes(request.x25519_public_key)


class EpochServicer(epoch_pb2_grpc.EpochServiceServicer):
    """EpochService: close epochs, read them, fetch openings."""

    def __init__(self, services: Services) -> None:
        self.services = services

    async def _call(self, context: grpc.aio.ServicerContext, fn: Callable[..., Any],
                    *args: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args)
        except (MeteringError, LookupError, SQLAlchemyError) as exc:
            await abort_with(context, exc)
            raise

    def _current(self) -> epoch_pb2.Epoch:
        info = self.services.meter.ledger.current_epoch()
        if info is None:
            raise LookupError("there is no open epoch")
        return epoch_to_proto(info, self.services)

    async def GetCurrentEpoch(self, request: epoch_pb2.GetCurrentEpochRequest,
                              context: grpc.aio.ServicerContext) -> epoch_pb2.Epoch:
        result: epoch_pb2.Epoch = await self._call(context, self._current)
        return result

    def _close(self) -> epoch_pb2.Epoch:
        closed = self.services.epochs.close()
        return epoch_to_proto(self.services.meter.ledger.epoch(closed.epoch_id),
                              self.services)

    async def CloseEpoch(self, request: epoch_pb2.CloseEpochRequest,
                         context: grpc.aio.ServicerContext) -> epoch_pb2.Epoch:
        result: epoch_pb2.Epoch = await self._call(context, self._close)
        return result

    def _get(self, epoch_id: int) -> epoch_pb2.Epoch:
        try:
            info = self.services.meter.ledger.epoch(epoch_id)
        except EpochStateError:
            raise LookupError(f"no epoch {epoch_id}") from None
        return epoch_to_proto(info, self.services)

    async def GetEpoch(self, request: epoch_pb2.GetEpochRequest,
                       context: grpc.aio.ServicerContext) -> epoch_pb2.Epoch:
        result: epoch_pb2.Epoch = await self._call(context, self._get, request.epoch_id)
        return result

    def _bundle(self, epoch_id: int, account_id: bytes) -> epoch_pb2.GetBundleResponse:
        store = self.services.store
        if account_id:
            if len(account_id) != 32:
                raise InvalidRequestError("account_id must be 32 bytes (or empty)")
            data = store.account_bundle_json(epoch_id, account_id)
            if data is None:
                raise LookupError(f"epoch {epoch_id} has no published bundle of account "
                                  f"0x{account_id.hex()}")
            return epoch_pb2.GetBundleResponse(bundle_json=data.decode())
        data = store.bundle_json(epoch_id)
        if data is None:
            billed = len(store.account_bundles(epoch_id))
            status = store.status(epoch_id)
            if billed > 1 and status is not None and status.finished:
                raise EpochStateError(f"epoch {epoch_id} billed {billed} accounts: name the "
                                      "account (account_id; ListAccountBundles lists them)")
            raise LookupError(f"epoch {epoch_id} has no published bundle")
        return epoch_pb2.GetBundleResponse(bundle_json=data.decode())

    async def GetBundle(self, request: epoch_pb2.GetBundleRequest,
                        context: grpc.aio.ServicerContext) -> epoch_pb2.GetBundleResponse:
        result: epoch_pb2.GetBundleResponse = await self._call(
            context, self._bundle, request.epoch_id, request.account_id)
        return result

    def _accounts(self, epoch_id: int) -> epoch_pb2.ListAccountBundlesResponse:
        status = self.services.store.status(epoch_id)
        if status is None or not status.finished:
            raise LookupError(f"epoch {epoch_id} is not published")
        return epoch_pb2.ListAccountBundlesResponse(accounts=[
            epoch_pb2.AccountBundle(account_id=a.account_id, leaves=a.leaves,
                                    total_units=a.total_units or 0,
                                    merkle_root=a.merkle_root or b"")
            for a in self.services.store.account_bundles(epoch_id)])

    async def ListAccountBundles(self, request: epoch_pb2.ListAccountBundlesRequest,
                                 context: grpc.aio.ServicerContext
                                 ) -> epoch_pb2.ListAccountBundlesResponse:
        result: epoch_pb2.ListAccountBundlesResponse = await self._call(
            context, self._accounts, request.epoch_id)
        return result

    def _statement(self, epoch_id: int, account_id: bytes) -> epoch_pb2.GetStatementResponse:
        if len(account_id) != 32:
            raise InvalidRequestError("account_id must be 32 bytes")
        data = self.services.store.statement(epoch_id, account_id)
        if data is None:
            raise LookupError(f"epoch {epoch_id} has no published statement of account "
                              f"0x{account_id.hex()}")
        return epoch_pb2.GetStatementResponse(sealed_statement=data)

    async def GetStatement(self, request: epoch_pb2.GetStatementRequest,
                           context: grpc.aio.ServicerContext) -> epoch_pb2.GetStatementResponse:
        result: epoch_pb2.GetStatementResponse = await self._call(
            context, self._statement, request.epoch_id, request.account_id)
        return result

    def _sealed(self, epoch_id: int, tag: bytes) -> epoch_pb2.GetSealedOpeningResponse:
        if len(tag) != 32:
            raise InvalidRequestError("tag must be 32 bytes")
        data = self.services.store.sealed_opening(epoch_id, tag)
        if data is None:
            raise LookupError("no sealed opening for this epoch and tag")
        return epoch_pb2.GetSealedOpeningResponse(sealed_opening=data)

    async def GetSealedOpening(self, request: epoch_pb2.GetSealedOpeningRequest,
                               context: grpc.aio.ServicerContext
                               ) -> epoch_pb2.GetSealedOpeningResponse:
        result: epoch_pb2.GetSealedOpeningResponse = await self._call(
            context, self._sealed, request.epoch_id, bytes(request.tag))
        return result

    def _opening(self, epoch_id: int, user_id: str) -> epoch_pb2.GetOpeningResponse:
        check_identifier(user_id, "user_id", MAX_USER_ID_BYTES)
        data = self.services.store.private_opening(epoch_id, user_id)
        if data is None:
            raise LookupError("no private opening: unknown user or epoch, or the user has a "
                              "registered key (fetch the sealed opening instead)")
        return epoch_pb2.GetOpeningResponse(opening=data)

    async def GetOpening(self, request: epoch_pb2.GetOpeningRequest,
                         context: grpc.aio.ServicerContext) -> epoch_pb2.GetOpeningResponse:
        result: epoch_pb2.GetOpeningResponse = await self._call(
            context, self._opening, request.epoch_id, request.user_id)
        return result


# --- the server ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files for TLS; with ``client_ca`` clients must present a certificate (mTLS)."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def credentials(self) -> grpc.ServerCredentials:
        """gRPC server credentials from the files."""
        root = self.client_ca.read_bytes() if self.client_ca else None
        return grpc.ssl_server_credentials([(self.key.read_bytes(), self.cert.read_bytes())],
                                           root_certificates=root,
                                           require_client_auth=root is not None)


@dataclass
class RunningServer:
    """A started gRPC server, its bound port and its health servicer."""

    server: grpc.aio.Server
    port: int
    health: health_aio.HealthServicer
    meter: MeterServicer

    async def stop(self, grace: float) -> None:
        """Report NOT_SERVING, then let in-flight calls finish for ``grace`` seconds."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        await self.meter.batcher.aclose()


async def create_server(
    services: Services,
    *,
    bind: str,
    api_key_hashes: Iterable[str] | Mapping[str, str],
    max_message_bytes: int = 4 * 1024 * 1024,
    tls: TlsFiles | None = None,
    writers: int = 1,
    reuse_port: bool = False,
    record_batch: Callable[[list[UsageRequest]], list[Any]] | None = None,
) -> RunningServer:
    """Build, bind and start the gRPC server (``bind`` may end in ``:0`` for a free port).

    ``writers``: concurrent ledger transactions for ingest (1 suits SQLite's single writer;
    PostgreSQL takes more). ``reuse_port``: bind with SO_REUSEPORT, so several server
    processes share the port (``zkmeter serve --workers``); off by default, so a port in use
    is an error rather than a silently shared listener. ``record_batch``: what records the
    batches instead of ``services.meter.record_batch`` (the ingest process's, one writer:
    prover/api/ingest_process.py)."""
    server = grpc.aio.server(
        # the API key first, then decoding: an unauthenticated caller learns nothing more
        interceptors=[TransportInterceptor(api_key_hashes)],
        options=[("grpc.max_receive_message_length", max_message_bytes),
                 ("grpc.max_send_message_length", 64 * 1024 * 1024),
                 ("grpc.so_reuseport", 1 if reuse_port else 0)],
    )
    meter = MeterServicer(services, writers=writers, record_batch=record_batch)
    meter_pb2_grpc.add_MeterServiceServicer_to_server(meter, server)
    epoch_pb2_grpc.add_EpochServiceServicer_to_server(EpochServicer(services), server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    for name in ("", METER_SERVICE, EPOCH_SERVICE):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (METER_SERVICE, EPOCH_SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME), server)
    port = (server.add_secure_port(bind, tls.credentials()) if tls
            else server.add_insecure_port(bind))
    if port == 0:
        raise OSError(f"cannot bind the gRPC server to {bind}")
    await server.start()
    return RunningServer(server, port, health, meter)
