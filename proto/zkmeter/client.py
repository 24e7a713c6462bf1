"""A small typed client for gateways and operators: ``from zkmeter.client import Client``.

Needs only ``grpcio`` and the generated stubs (no server stack)::

    with Client("127.0.0.1:50051", api_key=KEY) as zk:
        receipt = zk.record_usage(idempotency_key="req-1", user_id="alice", model="gpt-4o",
                                  input_tokens=120, output_tokens=30).receipt

Errors surface as ``grpc.RpcError`` with the server's status code (INVALID_ARGUMENT,
ALREADY_EXISTS, UNAUTHENTICATED, RESOURCE_EXHAUSTED, ...).

The gateway hands each reply's receipt to its user with :func:`receipt_json`: the JSON that
``zkmeter-verify receipt`` and ``zkmeter-verify me --receipts`` read (a user keeps a list of
them per epoch).
"""

from collections.abc import Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any

import grpc

from zkmeter.v1 import epoch_pb2, epoch_pb2_grpc, meter_pb2, meter_pb2_grpc


def receipt_json(reply: meter_pb2.RecordUsageResponse | meter_pb2.Receipt) -> dict[str, Any]:
    """The receipt of a RecordUsage reply (or the reply's ``receipt``) in the JSON form
    ``zkmeter-verify`` reads. The signed bytes are decoded strictly; nothing is trusted from
    the message's convenience fields."""
    from verifier.receipts import decode_receipt

    receipt = reply.receipt if isinstance(reply, meter_pb2.RecordUsageResponse) else reply
    out: dict[str, Any] = decode_receipt(bytes(receipt.encoded) +
                                         bytes(receipt.signature)).to_json()
    return out

ChatTurn = tuple[str, str] | tuple[str, str, str]
"""(role, content) or (role, content, name)."""


def usage_request(
    *,
    idempotency_key: str,
    user_id: str,
    model: str,
    messages: Sequence[ChatTurn] | None = None,
    completion: str | None = None,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    cached_input_tokens: int = 0,
    reasoning_tokens: int = 0,
) -> meter_pb2.RecordUsageRequest:
    """Build a RecordUsageRequest from text (messages + completion) or reported counts."""
    request = meter_pb2.RecordUsageRequest(
        idempotency_key=idempotency_key, user_id=user_id, model=model,
        hidden=meter_pb2.HiddenCounts(cached_input_tokens=cached_input_tokens,
                                      reasoning_tokens=reasoning_tokens))
    if messages is not None:
        request.text.messages.extend(
            meter_pb2.ChatMessage(role=m[0], content=m[1], name=m[2] if len(m) > 2 else "")
            for m in messages)
        request.text.completion = completion or ""
    elif input_tokens is not None or output_tokens is not None:
        request.counts.input_tokens = input_tokens or 0
        request.counts.output_tokens = output_tokens or 0
    return request


class Client:
    """Blocking client of MeterService and EpochService."""

    def __init__(self, target: str, *, api_key: str,
                 credentials: grpc.ChannelCredentials | None = None,
                 timeout: float = 30.0,
                 channel_options: Sequence[tuple[str, int | str]] = ()) -> None:
        options = [("grpc.max_receive_message_length", 64 * 1024 * 1024), *channel_options]
        self._channel = (grpc.secure_channel(target, credentials, options=options)
                         if credentials else grpc.insecure_channel(target, options=options))
        self._metadata = (("authorization", f"Bearer {api_key}"),)
        self.timeout = timeout
        self.meter = meter_pb2_grpc.MeterServiceStub(self._channel)
        self.epochs = epoch_pb2_grpc.EpochServiceStub(self._channel)

    def record_usage(self, **fields: object) -> meter_pb2.RecordUsageResponse:
        """Record one request (keyword arguments of :func:`usage_request`)."""
        request = usage_request(**fields)  # type: ignore[arg-type]
        response: meter_pb2.RecordUsageResponse = self.meter.RecordUsage(
            request, metadata=self._metadata, timeout=self.timeout)
        return response

    def record_usage_stream(self, requests: Iterable[meter_pb2.RecordUsageRequest]
                            ) -> Iterator[meter_pb2.RecordUsageResponse]:
        """Stream requests; one response per request, in order (refusals in ``.error``)."""
        responses: Iterator[meter_pb2.RecordUsageResponse] = self.meter.RecordUsageStream(
            iter(requests), metadata=self._metadata, timeout=self.timeout)
        return responses

    def list_receipts(self, user_id: str, epoch_id: int = 0, *,
                      idempotency_key: str = "") -> list[meter_pb2.Receipt]:
        """A user's receipts in an epoch (0: the current one); with ``idempotency_key``, only
        the one recorded under that key."""
        response = self.meter.ListReceipts(
            meter_pb2.ListReceiptsRequest(user_id=user_id, epoch_id=epoch_id,
                                          idempotency_key=idempotency_key),
            metadata=self._metadata, timeout=self.timeout)
        return list(response.receipts)

    def register_user_key(self, user_id: str, x25519_public_key: bytes) -> None:
        """Register the X25519 key a user's sealed openings are encrypted to."""
        self.meter.RegisterUserKey(
            meter_pb2.RegisterUserKeyRequest(user_id=user_id,
                                             x25519_public_key=x25519_public_key),
            metadata=self._metadata, timeout=self.timeout)

    def rotate_user_key(self, user_id: str, x25519_public_key: bytes) -> int:
        """Replace a user's key from the next epoch on (an operator key); returns that
        epoch's id."""
        response = self.meter.RotateUserKey(
            meter_pb2.RotateUserKeyRequest(user_id=user_id,
                                           x25519_public_key=x25519_public_key),
            metadata=self._metadata, timeout=self.timeout)
        return int(response.effective_epoch_id)

    def register_account(self, *, payer: bytes, asset: bytes,
                         payer_x25519_public_key: bytes) -> meter_pb2.Account:
        """Create a billing account (or update an open one's payer key); returns it."""
        account: meter_pb2.Account = self.meter.RegisterAccount(
            meter_pb2.RegisterAccountRequest(payer=payer, asset=asset,
                                             payer_x25519_public_key=payer_x25519_public_key),
            metadata=self._metadata, timeout=self.timeout)
        return account

    def register_user(self, user_id: str, account_id: bytes,
                      x25519_public_key: bytes = b"") -> None:
        """Put a user under a billing account, with its X25519 key (or none)."""
        self.meter.RegisterUser(
            meter_pb2.RegisterUserRequest(user_id=user_id, account_id=account_id,
                                          x25519_public_key=x25519_public_key),
            metadata=self._metadata, timeout=self.timeout)

    def account(self, account_id: bytes) -> meter_pb2.Account:
        """One billing account."""
        account: meter_pb2.Account = self.meter.GetAccount(
            meter_pb2.GetAccountRequest(account_id=account_id), metadata=self._metadata,
            timeout=self.timeout)
        return account

    def close_account(self, account_id: bytes) -> meter_pb2.Account:
        """Refuse the account's usage from now on."""
        account: meter_pb2.Account = self.meter.CloseAccount(
            meter_pb2.CloseAccountRequest(account_id=account_id), metadata=self._metadata,
            timeout=self.timeout)
        return account

    def current_epoch(self) -> epoch_pb2.Epoch:
        """The open epoch."""
        epoch: epoch_pb2.Epoch = self.epochs.GetCurrentEpoch(
            epoch_pb2.GetCurrentEpochRequest(), metadata=self._metadata, timeout=self.timeout)
        return epoch

    def close_epoch(self, timeout: float | None = None) -> epoch_pb2.Epoch:
        """Close the open epoch (or resume an interrupted close); returns it, closed."""
        epoch: epoch_pb2.Epoch = self.epochs.CloseEpoch(
            epoch_pb2.CloseEpochRequest(), metadata=self._metadata,
            timeout=timeout or max(self.timeout, 600.0))
        return epoch

    def epoch(self, epoch_id: int) -> epoch_pb2.Epoch:
        """One epoch with its close progress."""
        epoch: epoch_pb2.Epoch = self.epochs.GetEpoch(
            epoch_pb2.GetEpochRequest(epoch_id=epoch_id), metadata=self._metadata,
            timeout=self.timeout)
        return epoch

    def bundle(self, epoch_id: int, account_id: bytes = b"") -> str:
        """The published bundle JSON of one account's epoch (without ``account_id``: of an
        epoch that billed one account)."""
        response = self.epochs.GetBundle(
            epoch_pb2.GetBundleRequest(epoch_id=epoch_id, account_id=account_id),
            metadata=self._metadata, timeout=self.timeout)
        return str(response.bundle_json)

    def account_bundles(self, epoch_id: int) -> list[epoch_pb2.AccountBundle]:
        """The billing accounts of a published epoch (id, leaves, total, root)."""
        response = self.epochs.ListAccountBundles(
            epoch_pb2.ListAccountBundlesRequest(epoch_id=epoch_id), metadata=self._metadata,
            timeout=self.timeout)
        return list(response.accounts)

    def statement(self, epoch_id: int, account_id: bytes) -> bytes:
        """One account's payer statement, sealed to the payer's X25519 key."""
        response = self.epochs.GetStatement(
            epoch_pb2.GetStatementRequest(epoch_id=epoch_id, account_id=account_id),
            metadata=self._metadata, timeout=self.timeout)
        return bytes(response.sealed_statement)

    def sealed_opening(self, epoch_id: int, tag: bytes) -> bytes:
        """The sealed opening of one leaf."""
        response = self.epochs.GetSealedOpening(
            epoch_pb2.GetSealedOpeningRequest(epoch_id=epoch_id, tag=tag),
            metadata=self._metadata, timeout=self.timeout)
        return bytes(response.sealed_opening)

    def opening(self, epoch_id: int, user_id: str) -> bytes:
        """The plaintext opening of a user without a registered key."""
        response = self.epochs.GetOpening(
            epoch_pb2.GetOpeningRequest(epoch_id=epoch_id, user_id=user_id),
            metadata=self._metadata, timeout=self.timeout)
        return bytes(response.opening)

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
