"""Reporting finished requests to ``zkmeter serve``: first attempt with the text, in memory;
then, if that did not get through, retries from the durable queue with counts.

Order per request (docs/gateway.md, "Reporting"): the usage is written to the queue as
counts (zkmeter's own counting code, run in the gateway) before anything is sent; the first
attempt sends the prompt and completion *text* over gRPC with the real ``zkmeter.client``, so
zkmeter counts it and the receipt binds the text's digests; a transient failure leaves the
row for the retry loop, which sends the counts (the text is gone by then: it never touches
disk). The idempotency key is ``gw-<request id>`` on every attempt, so zkmeter bills a request
once: a retry whose first attempt did land gets ``ALREADY_EXISTS`` (text vs counts is another
payload) or the replayed receipt, and the loop then fetches the original receipt by its key
digest instead of billing again.
"""

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from prover.gateway import metrics
from prover.gateway.store import GatewayStore, Report
from verifier.receipts import decode_receipt
from verifier.tokens import Message
from zkmeter.client import Client

log = logging.getLogger("zkmeter.gateway")

# Refusals that another attempt cannot change: the row leaves the queue, logged.
PERMANENT = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
                       grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED,
                       grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.RESOURCE_EXHAUSTED})
MAX_BACKOFF_SECONDS = 5.0  # a failed retry costs one fast RPC: keep probing
RETRY_BATCH = 64
EPOCHS_SEARCHED = 3  # where an ALREADY_EXISTS key's original receipt is looked for


def idempotency_key(request_id: str) -> str:
    """The key of every report of one request."""
    return f"gw-{request_id}"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt gave: a receipt (JSON form), or pending, or refused (code name)."""

    status: str  # "ok" | "pending" | "refused"
    receipt: dict[str, Any] | None = None
    code: str = ""
    detail: str = ""


class Reporter:
    """The first attempt (:meth:`report`) and the retry loop (:meth:`run`)."""

    def __init__(self, store: GatewayStore, *, target: str, api_key: str, timeout: float,
                 retry_seconds: float, queue_max: int) -> None:
        self.store = store
        # reconnect soon after zkmeter serve comes back (grpc's default backoff reaches 120 s)
        self.client = Client(target, api_key=api_key, timeout=timeout, channel_options=(
            ("grpc.initial_reconnect_backoff_ms", 200), ("grpc.min_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 1000)))
        self.retry_seconds = retry_seconds
        self.queue_max = queue_max
        self._inflight: set[str] = set()
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()  # an attempt got through: retry the queue now
        self._full_logged = False
        metrics.QUEUE_DEPTH.set(store.pending)

    # --- back-pressure ------------------------------------------------------------------

    def admit(self) -> bool:
        """False while the queue is full: the caller refuses the request before forwarding."""
        full = self.store.pending >= self.queue_max
        if full and not self._full_logged:
            log.error("zkmeter gateway: report queue full (%d waiting, max %d): zkmeter serve "
                      "is not taking reports; refusing new requests with 503 until it drains",
                      self.store.pending, self.queue_max)
        elif not full and self._full_logged:
            log.warning("zkmeter gateway: report queue below its limit again (%d waiting); "
                        "accepting requests", self.store.pending)
        self._full_logged = full
        if full:
            metrics.QUEUE_FULL.inc()
        return not full

    # --- the first attempt --------------------------------------------------------------

    def enqueue(self, report: Report) -> None:
        """Make the usage durable (counts only). Its first attempt (:meth:`report`, with the
        text) follows, maybe only after the reply is written or in a task that has not run
        yet: until it ends the retry loop leaves the row alone, or it would send the counts
        first and the receipt would not bind the text (a row whose first attempt never runs
        is sent at the next start)."""
        self.store.enqueue(report)
        self._inflight.add(report.request_id)
        metrics.QUEUE_DEPTH.set(self.store.pending)

    async def report(self, report: Report, messages: Sequence[Message] | None,
                     completion: str | None) -> Outcome:
        """Send one enqueued report now: with the text when given (chat), else the counts."""
        self._inflight.add(report.request_id)
        try:
            outcome = await asyncio.to_thread(self._send, report, messages, completion)
            self._settle(report, outcome)
        finally:
            self._inflight.discard(report.request_id)
        if outcome.status == "ok" and self.store.pending > len(self._inflight):
            self._wake.set()  # zkmeter serve answers: retry at once what nobody is sending
        return outcome

    def _send(self, report: Report, messages: Sequence[Message] | None,
              completion: str | None) -> Outcome:
        fields: dict[str, Any] = dict(
            idempotency_key=idempotency_key(report.request_id), user_id=report.user_id,
            model=report.model, cached_input_tokens=report.cached_input_tokens,
            reasoning_tokens=report.reasoning_tokens)
        if messages is not None:
            fields["messages"] = [(m.role, m.content) if m.name is None else
                                  (m.role, m.content, m.name) for m in messages]
            fields["completion"] = completion or ""
        else:
            fields["input_tokens"] = report.input_tokens
            fields["output_tokens"] = report.output_tokens
        try:
            response = self.client.record_usage(**fields)
        except grpc.RpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.ALREADY_EXISTS:
                return self._original(report)
            if code in PERMANENT:  # zkmeter's messages never hold text (docs/grpc.md)
                return Outcome("refused", code=code.name, detail=str(exc.details())[:200])
            return Outcome("pending", code=code.name if code else "UNKNOWN")
        receipt = decode_receipt(response.receipt.encoded + response.receipt.signature)
        if response.replayed:
            metrics.REPORTS.labels("replayed").inc()
        return Outcome("ok", receipt.to_json())

    def _original(self, report: Report) -> Outcome:
        """The receipt an earlier attempt of this request got (found by its key digest)."""
        # receipts carry the key's digest keyed with a provider secret: the server matches it
        key = idempotency_key(report.request_id)
        try:
            current = int(self.client.current_epoch().epoch_id)
            for epoch_id in range(current, max(current - EPOCHS_SEARCHED, 0), -1):
                for item in self.client.list_receipts(report.user_id, epoch_id,
                                                      idempotency_key=key):
                    receipt = decode_receipt(item.encoded + item.signature)
                    metrics.REPORTS.labels("replayed").inc()
                    return Outcome("ok", receipt.to_json())
        except grpc.RpcError as exc:
            return Outcome("pending", code=exc.code().name if exc.code() else "UNKNOWN")
        return Outcome("refused", code="ALREADY_EXISTS")

    def _settle(self, report: Report, outcome: Outcome) -> None:
        if outcome.status == "ok" and outcome.receipt is not None:
            self.store.delivered(report.request_id, report.user_id, outcome.receipt)
            metrics.REPORTS.labels("delivered").inc()
        elif outcome.status == "refused":
            self.store.refused(report.request_id, report.user_id, outcome.code)
            metrics.REPORTS.labels("refused").inc()
            log.error("zkmeter gateway: zkmeter serve refused the report of request %s "
                      "(%s: %s); it is not billed", report.request_id, outcome.code,
                      outcome.detail)
        else:
            self.store.attempted(report.request_id)
            metrics.REPORTS.labels("queued").inc()
            log.warning("zkmeter gateway: report of request %s not delivered (%s); queued "
                        "for retry (%d waiting)", report.request_id, outcome.code,
                        self.store.pending)
        metrics.QUEUE_DEPTH.set(self.store.pending)

    # --- the retry loop -----------------------------------------------------------------

    async def run(self) -> None:
        """Retry queued reports until :meth:`stop`; back off while zkmeter serve is down."""
        delay = self.retry_seconds
        while not self._stop.is_set():
            due = self.store.due(RETRY_BATCH, self._inflight)
            failed = False
            for report in due:
                if self._stop.is_set():
                    break
                outcome = await self.report(report, None, None)
                if outcome.status == "pending":
                    failed = True
                    break
            if due and not failed:
                delay = self.retry_seconds
                continue
            if failed:
                metrics.REPORTS.labels("retry_failed").inc()
            waiters = {asyncio.ensure_future(self._stop.wait()),
                       asyncio.ensure_future(self._wake.wait())}
            woken, pending = await asyncio.wait(waiters, timeout=delay,
                                                return_when=asyncio.FIRST_COMPLETED)
            for waiter in pending:
                waiter.cancel()
            if woken:
                self._wake.clear()
                delay = self.retry_seconds
            elif failed:
                delay = min(delay * 2, MAX_BACKOFF_SECONDS)

    async def drain(self, timeout: float) -> bool:
        """Deliver everything queued now (tests, shutdown); True when the queue is empty."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.store.pending and loop.time() < deadline:
            due = self.store.due(RETRY_BATCH, self._inflight)
            for report in due:
                await self.report(report, None, None)
            if self.store.pending:
                await asyncio.sleep(0.05)
        return self.store.pending == 0

    def stop(self) -> None:
        """End the retry loop (rows stay queued for the next start)."""
        self._stop.set()
        self._wake.set()

    def close(self) -> None:
        """Close the gRPC channel."""
        self.client.close()

