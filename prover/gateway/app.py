"""The gateway's ASGI app: an OpenAI-compatible reverse proxy that meters what it forwards.

Routes: ``POST /v1/chat/completions`` (streamed and not), ``POST /v1/completions`` (streamed
and not), ``POST /v1/embeddings``, ``GET /v1/models``, ``GET /v1/zkmeter/receipts/{id}`` and
``GET /healthz``. Every ``/v1`` route needs the caller's ``Authorization: Bearer <key>``,
whose sha256 maps to a zkmeter user id (an unknown key is 401 in OpenAI's error shape and is
never forwarded). The upstream gets the provider's key instead.

Per metered request: forward, read the reply, count (in memory), write the usage to the
durable queue as counts, report to ``zkmeter serve`` (the text, over gRPC), hand the
receipt to the caller: in the ``zkmeter-receipt`` header (base64url of the receipt JSON) of a
non-streamed reply, in an SSE comment ``: zkmeter-receipt <base64url>`` just before a stream's
``data: [DONE]``, and at ``GET /v1/zkmeter/receipts/{x-request-id}`` afterwards. An upstream
error (status >= 400) is passed through unchanged and not billed.

No prompt or completion text is logged, stored or put in an error message.
"""

import asyncio
import base64
import hashlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any

import httpx

from prover.gateway import metrics
from prover.gateway.config import GatewaySettings
from prover.gateway.counting import (
    LocalCounter,
    LocalCounts,
    RequestShapeError,
    StreamText,
    chat_messages,
    completion_text,
    prompt_texts,
    text_completion,
)
from prover.gateway.report import Outcome, Reporter
from prover.gateway.store import GatewayStore, Report
from verifier.tokens import SUPPORTED_ENCODINGS, Message, TokenCountError, get_encoding

log = logging.getLogger("zkmeter.gateway")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

MAX_BODY_BYTES = 32 * 1024 * 1024
RECEIPT_HEADER = b"zkmeter-receipt"
RECEIPT_STATUS_HEADER = b"zkmeter-receipt-status"
RECEIPT_COMMENT = b": zkmeter-receipt "
RECEIPTS_PREFIX = "/v1/zkmeter/receipts/"
# Not forwarded either way: hop-by-hop headers, and the ones the gateway sets itself.
_DROP_REQUEST = frozenset({"host", "authorization", "content-length", "connection",
                           "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
                           "proxy-authorization", "accept-encoding", "cookie"})
_DROP_RESPONSE = frozenset({"content-length", "connection", "keep-alive", "transfer-encoding",
                            "content-encoding", "date", "server", "trailer", "upgrade"})
_JSON = [(b"content-type", b"application/json")]


def encode_receipt(receipt: dict[str, Any]) -> str:
    """The header form of a receipt: base64url (no padding) of its compact JSON."""
    raw = json.dumps(receipt, separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_receipt_header(value: str) -> dict[str, Any]:
    """The receipt JSON of a ``zkmeter-receipt`` header (or SSE comment) value."""
    padded = value.strip() + "=" * (-len(value.strip()) % 4)
    loaded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(padded))
    return loaded


def openai_error(status: int, message: str, *, kind: str, code: str | None,
                 param: str | None = None) -> tuple[int, bytes]:
    """OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return status, json.dumps(body).encode("utf-8")


@dataclass
class _Call:
    """One metered request in flight (its text lives only here, in memory)."""

    request_id: str
    user_id: str
    route: str
    model: str
    messages: list[Message] | None  # chat: counted by zkmeter from the text
    prompts: list[str] | int | None  # completions/embeddings: counted in the gateway

    def __repr__(self) -> str:
        return f"_Call({self.request_id}, route={self.route})"


class GatewayApp:
    """The ASGI application (module docstring)."""

    def __init__(self, settings: GatewaySettings, *, store: GatewayStore | None = None,
                 reporter: Reporter | None = None,
                 http: httpx.AsyncClient | None = None) -> None:
        self.settings = settings.checked()
        self.keys = {bytes.fromhex(k.removeprefix("sha256:")): user
                     for k, user in settings.all_caller_keys().items()}
        self.counter = LocalCounter(settings.model_encodings)
        self.store = store or GatewayStore(settings.queue_path,
                                           synchronous=settings.queue_synchronous)
        api_key = settings.zkmeter_api_key
        self.reporter = reporter or Reporter(
            self.store, target=settings.zkmeter_target,
            api_key=api_key.get_secret_value() if api_key else "",
            timeout=settings.report_timeout_seconds, retry_seconds=settings.retry_seconds,
            queue_max=settings.queue_max)
        self._http = http
        upstream_key = settings.upstream_api_key
        self._upstream_auth = (f"Bearer {upstream_key.get_secret_value()}".encode("latin-1")
                               if upstream_key else None)
        self._worker: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._open: dict[str, str] = {}  # request id -> user, forwarded and not yet enqueued

    # --- lifecycle ----------------------------------------------------------------------

    @property
    def http(self) -> httpx.AsyncClient:
        """The upstream client (made on first use, inside the server's event loop). It keeps
        no cookies: the client is shared by every caller, so a cookie the upstream set in
        one caller's reply would go out with everybody's requests (callers' own cookies are
        not forwarded either; an upstream's Set-Cookie still reaches the caller it answered)."""
        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(self.settings.upstream_timeout_seconds, connect=10.0),
                limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200),
                cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])))
        return self._http

    async def startup(self) -> None:
        """Load the tokenizers (seconds each: not on the first request), then start the
        retry loop (queued reports from a previous run go first)."""
        await asyncio.to_thread(preload_encodings)
        if self.store.pending:
            log.info("zkmeter gateway: %d queued reports from a previous run",
                     self.store.pending)
        self._worker = asyncio.create_task(self.reporter.run())

    async def shutdown(self) -> None:
        """Stop retrying (queued rows stay in the file), finish reports in flight."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self.settings.report_timeout_seconds
                               * 2)
        self.reporter.stop()
        if self._worker is not None:
            await self._worker
        if self._http is not None:
            await self._http.aclose()
        self.reporter.close()
        self.store.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        await self._route(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.startup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # --- routing ------------------------------------------------------------------------

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        if path == "/healthz" and method == "GET":
            await _respond(send, 200, b'{"status":"ok"}', _JSON)
            return
        user = self._caller(scope)
        if user is None:
            metrics.REQUESTS.labels("auth", "unauthorized").inc()
            await _respond(send, *openai_error(
                401, "Incorrect API key provided.", kind="invalid_request_error",
                code="invalid_api_key"), _JSON)
            return
        routes = {("POST", "/v1/chat/completions"): "chat",
                  ("POST", "/v1/completions"): "completions",
                  ("POST", "/v1/embeddings"): "embeddings"}
        route = routes.get((method, path))
        if route is not None:
            await self._metered(route, user, scope, receive, send)
        elif method == "GET" and path == "/v1/models":
            await self._passthrough(scope, send)
        elif method == "GET" and path.startswith(RECEIPTS_PREFIX):
            await self._receipt(path[len(RECEIPTS_PREFIX):], user, send)
        else:
            await _respond(send, *openai_error(
                404, f"Unknown route {method} {path}.", kind="invalid_request_error",
                code="unknown_url"), _JSON)

    def _caller(self, scope: Scope) -> str | None:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, key = value.partition(b" ")
                if scheme.lower() != b"bearer" or not key.strip():
                    return None
                return self.keys.get(hashlib.sha256(key.strip()).digest())
        return None

    # --- metered routes -----------------------------------------------------------------

    async def _metered(self, route: str, user: str, scope: Scope, receive: Receive,
                       send: Send) -> None:
        raw = await _read_body(receive)
        if raw is None:
            await _respond(send, *openai_error(413, "Request body too large.",
                                               kind="invalid_request_error",
                                               code="request_too_large"), _JSON)
            return
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise RequestShapeError("the request body must be a JSON object")
            call = self._call(route, user, body)
        except (ValueError, TokenCountError) as exc:
            metrics.REQUESTS.labels(route, "bad_request").inc()
            message = (str(exc) if isinstance(exc, (RequestShapeError, TokenCountError))
                       else "The request body is not valid JSON.")
            await _respond(send, *openai_error(400, message, kind="invalid_request_error",
                                               code="invalid_request"), _JSON)
            return
        if not self.reporter.admit():
            metrics.REQUESTS.labels(route, "queue_full").inc()
            await _respond(send, *openai_error(
                503, "Usage reporting is backed up; retry later.", kind="server_error",
                code="zkmeter_queue_full"), [*_JSON, (b"retry-after", b"5")])
            return
        streaming = body.get("stream") is True and route != "embeddings"
        wants_usage = False
        if streaming:
            options = body.get("stream_options")
            wants_usage = isinstance(options, dict) and options.get("include_usage") is True
            body["stream_options"] = {**(options if isinstance(options, dict) else {}),
                                      "include_usage": True}
            raw = json.dumps(body).encode("utf-8")
        request = self.http.build_request(
            "POST", self.settings.upstream_url + scope["path"][len("/v1"):], content=raw,
            headers=self._forward_headers(scope))
        try:
            upstream = await self.http.send(request, stream=True)
        except httpx.HTTPError as exc:
            metrics.REQUESTS.labels(route, "upstream_unreachable").inc()
            log.warning("zkmeter gateway: upstream unreachable for request %s (%s)",
                        call.request_id, type(exc).__name__)
            await _respond(send, *openai_error(502, "The upstream model server is not "
                                               "reachable.", kind="server_error",
                                               code="upstream_unreachable"), _JSON)
            return
        self._open[call.request_id] = user
        try:
            if upstream.status_code >= 400:
                await self._pass_error(route, upstream, send)
            elif streaming:
                await self._stream(call, upstream, wants_usage, receive, send)
            else:
                await self._unary(call, upstream, send)
        finally:
            self._open.pop(call.request_id, None)
            await upstream.aclose()

    def _call(self, route: str, user: str, body: dict[str, Any]) -> _Call:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise RequestShapeError("'model' must be a non-empty string")
        self.counter.encoding(model)  # an unknown model cannot be metered: 400, not forwarded
        request_id = "zkm-" + secrets.token_hex(12)
        if route == "chat":
            return _Call(request_id, user, route, model, chat_messages(body), None)
        what = "prompt" if route == "completions" else "input"
        return _Call(request_id, user, route, model, None, prompt_texts(body.get(what), what))

    def _forward_headers(self, scope: Scope) -> list[tuple[bytes, bytes]]:
        headers = [(k, v) for k, v in scope["headers"] if k.decode("latin-1") not in
                   _DROP_REQUEST]
        headers.append((b"accept-encoding", b"identity"))
        if self._upstream_auth is not None:
            headers.append((b"authorization", self._upstream_auth))
        return headers

    async def _pass_error(self, route: str, upstream: httpx.Response, send: Send) -> None:
        body = await upstream.aread()
        metrics.REQUESTS.labels(route, f"upstream_{upstream.status_code}").inc()
        await _respond(send, upstream.status_code, body, _response_headers(upstream))

    async def _unary(self, call: _Call, upstream: httpx.Response, send: Send) -> None:
        raw = await upstream.aread()
        headers = _response_headers(upstream, request_id=call.request_id)
        try:
            reply = json.loads(raw)
            if not isinstance(reply, dict):
                raise ValueError("not an object")
        except ValueError:
            metrics.REQUESTS.labels(call.route, "unmeterable").inc()
            log.error("zkmeter gateway: upstream reply of request %s is not JSON; passed "
                      "through, not billed", call.request_id)
            await _respond(send, upstream.status_code, raw, headers)
            return
        if call.route == "chat":
            completion = completion_text(reply)
        elif call.route == "completions":
            completion = text_completion(reply)
        else:
            completion = ""
        report = self._finish(call, completion, reply.get("usage"))
        if self.settings.receipts == "inline":
            outcome = await self.reporter.report(report, call.messages, completion)
            headers.extend(_receipt_headers(outcome))
            await _respond(send, upstream.status_code, raw, headers)
        else:
            headers.append((RECEIPT_STATUS_HEADER, b"pending"))
            await _respond(send, upstream.status_code, raw, headers)
            self._background(self.reporter.report(report, call.messages, completion))
        metrics.REQUESTS.labels(call.route, "ok").inc()

    async def _stream(self, call: _Call, upstream: httpx.Response, wants_usage: bool,
                      receive: Receive, send: Send) -> None:
        gone = asyncio.Event()
        watcher = asyncio.create_task(_watch_disconnect(receive, gone))
        sent = StreamText()
        usage: Any = None
        done = False
        ended = "ok"
        await send({"type": "http.response.start", "status": upstream.status_code,
                    "headers": _response_headers(upstream, request_id=call.request_id)})
        try:
            async for block in _sse_blocks(upstream):
                data = _sse_data(block)
                if data is None:  # comments, keep-alives: passed on
                    if not gone.is_set():
                        await send({"type": "http.response.body", "body": block,
                                    "more_body": True})
                    continue
                if data.strip() == "[DONE]":
                    done = True
                    break
                try:
                    chunk = json.loads(data)
                except ValueError:
                    chunk = None
                if isinstance(chunk, dict) and chunk.get("usage"):
                    usage = chunk["usage"]
                    if not chunk.get("choices") and not wants_usage:
                        continue  # the usage-only chunk the caller did not ask for
                if gone.is_set():
                    ended = "client_disconnected"
                    break
                await send({"type": "http.response.body", "body": block, "more_body": True})
                if isinstance(chunk, dict):
                    sent.add_chunk(chunk)
        except httpx.HTTPError as exc:
            ended = "upstream_broke"
            log.warning("zkmeter gateway: upstream stream of request %s broke (%s); billing "
                        "what was sent", call.request_id, type(exc).__name__)
        if gone.is_set():
            ended = "client_disconnected"
        completion = sent.text()
        report = self._finish(call, completion, usage)
        if ended != "ok" or self.settings.receipts == "deferred":
            self._background(self.reporter.report(report, call.messages, completion))
        else:
            outcome = await self.reporter.report(report, call.messages, completion)
            if outcome.receipt is not None and not gone.is_set():
                await send({"type": "http.response.body", "more_body": True,
                            "body": RECEIPT_COMMENT + encode_receipt(outcome.receipt).encode(
                                "ascii") + b"\n\n"})
        if done and not gone.is_set():
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n",
                        "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        watcher.cancel()
        metrics.REQUESTS.labels(call.route, ended).inc()

    def _finish(self, call: _Call, completion: str, usage: Any) -> Report:
        """Count in memory, cross-check the upstream's usage, enqueue the counts."""
        if call.messages is not None:
            counts = self.counter.chat(call.model, call.messages, completion)
        else:
            counts = self.counter.plain(call.model, call.prompts or [], completion)
        cached, reasoning = _hidden(usage)
        if usage is not None:
            _cross_check(call.request_id, counts, usage, reasoning)
        if cached > counts.input_tokens:
            metrics.MISMATCH.labels("cached_input").inc()
            log.warning("zkmeter gateway: usage mismatch request_id=%s field=cached_input "
                        "upstream=%d zkmeter_input=%d (capped)", call.request_id, cached,
                        counts.input_tokens)
            cached = counts.input_tokens
        report = Report(call.request_id, call.user_id, call.model, counts.input_tokens,
                        counts.output_tokens, cached, reasoning)
        self.reporter.enqueue(report)
        self._open.pop(call.request_id, None)
        return report

    def _background(self, job: Awaitable[Outcome]) -> None:
        task: asyncio.Task[Outcome] = asyncio.ensure_future(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- other routes -------------------------------------------------------------------

    async def _passthrough(self, scope: Scope, send: Send) -> None:
        try:
            upstream = await self.http.request(
                scope["method"], self.settings.upstream_url + scope["path"][len("/v1"):],
                headers=self._forward_headers(scope))
        except httpx.HTTPError:
            await _respond(send, *openai_error(502, "The upstream model server is not "
                                               "reachable.", kind="server_error",
                                               code="upstream_unreachable"), _JSON)
            return
        await _respond(send, upstream.status_code, upstream.content,
                       _response_headers(upstream))

    async def _receipt(self, request_id: str, user: str, send: Send) -> None:
        status, value = self.store.lookup(request_id, user)
        if status == "unknown" and self._open.get(request_id) == user:
            status = "pending"  # still streaming
        if status == "ok":
            body = {"request_id": request_id, "status": "ok", "receipt": value}
            await _respond(send, 200, json.dumps(body).encode("utf-8"), _JSON)
        elif status == "pending":
            body = {"request_id": request_id, "status": "pending"}
            await _respond(send, 202, json.dumps(body).encode("utf-8"),
                           [*_JSON, (b"retry-after", b"1")])
        elif status == "refused":
            await _respond(send, *openai_error(
                409, f"zkmeter refused this request's usage report ({value}); it was not "
                     "billed.", kind="invalid_request_error", code="usage_refused"), _JSON)
        else:
            await _respond(send, *openai_error(
                404, "No receipt for this request id and key.", kind="invalid_request_error",
                code="receipt_not_found"), _JSON)


# --- helpers ------------------------------------------------------------------------------

def preload_encodings() -> None:
    """Load every shipped encoding once (tiktoken caches them per process)."""
    for name in SUPPORTED_ENCODINGS:
        get_encoding(name)


async def _read_body(receive: Receive) -> bytes | None:
    parts = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        parts.append(chunk)
        if not message.get("more_body"):
            break
    return b"".join(parts)


async def _watch_disconnect(receive: Receive, gone: asyncio.Event) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            gone.set()
            return


async def _respond(send: Send, status: int, body: bytes,
                   headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _response_headers(upstream: httpx.Response, *, request_id: str | None = None
                      ) -> list[tuple[bytes, bytes]]:
    out = []
    for name, value in upstream.headers.raw:
        lower = name.lower()
        if lower.decode("latin-1") in _DROP_RESPONSE:
            continue
        if request_id is not None and lower == b"x-request-id":
            out.append((b"x-upstream-request-id", value))
            continue
        out.append((lower, value))
    if request_id is not None:
        out.append((b"x-request-id", request_id.encode("ascii")))
    return out


def _receipt_headers(outcome: Outcome) -> list[tuple[bytes, bytes]]:
    if outcome.receipt is not None:
        return [(RECEIPT_HEADER, encode_receipt(outcome.receipt).encode("ascii"))]
    return [(RECEIPT_STATUS_HEADER, outcome.status.encode("ascii"))]


async def _sse_blocks(upstream: httpx.Response) -> Any:
    """The upstream's SSE stream as whole blocks (up to and including the blank line)."""
    buffer = b""
    async for piece in upstream.aiter_raw():
        buffer += piece
        while True:
            cut = _block_end(buffer)
            if cut < 0:
                break
            yield buffer[:cut]
            buffer = buffer[cut:]
    if buffer.strip():
        yield buffer + b"\n\n"


def _block_end(buffer: bytes) -> int:
    ends = [i for i in (buffer.find(b"\n\n"), buffer.find(b"\r\n\r\n")) if i >= 0]
    if not ends:
        return -1
    first = min(ends)
    return first + (4 if buffer.startswith(b"\r\n\r\n", first) else 2)


def _sse_data(block: bytes) -> str | None:
    """The data of one SSE block (lines joined), or None for a block without data."""
    lines = block.decode("utf-8", "replace").splitlines()
    data = [line[5:].removeprefix(" ") for line in lines if line.startswith("data:")]
    return "\n".join(data) if data else None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _hidden(usage: Any) -> tuple[int, int]:
    """(cached input, reasoning) from the upstream's usage details (the only source)."""
    if not isinstance(usage, dict):
        return 0, 0
    prompt = usage.get("prompt_tokens_details") or usage.get("input_tokens_details") or {}
    completion = (usage.get("completion_tokens_details") or usage.get("output_tokens_details")
                  or {})
    cached = _int(prompt.get("cached_tokens")) if isinstance(prompt, dict) else 0
    reasoning = _int(completion.get("reasoning_tokens")) if isinstance(completion, dict) else 0
    return cached, reasoning


def _cross_check(request_id: str, counts: LocalCounts, usage: Any, reasoning: int) -> None:
    """Log and count where the upstream's visible counts differ from zkmeter's."""
    if not isinstance(usage, dict):
        return
    checks = (("prompt", usage.get("prompt_tokens"), counts.input_tokens),
              ("completion", usage.get("completion_tokens"), counts.output_tokens + reasoning))
    for field, theirs, ours in checks:
        if isinstance(theirs, int) and theirs != ours:
            metrics.MISMATCH.labels(field).inc()
            log.warning("zkmeter gateway: usage mismatch request_id=%s field=%s upstream=%d "
                        "zkmeter=%d", request_id, field, theirs, ours)
