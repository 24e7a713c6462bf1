"""``zkmeter upstream``: a small, deterministic OpenAI-compatible model server for tests, the
benchmark and the demo (no model: completions are words drawn from a fixed list, seeded by
the request, so the same request always gets the same reply).

Routes: ``POST /v1/chat/completions`` (streamed and not, ``stream_options.include_usage``,
tool calls when ``tools`` are given and ``tool_choice`` is not ``"none"``), ``POST
/v1/completions``, ``POST /v1/embeddings``, ``GET /v1/models``, ``GET /stats`` (how many
requests reached it: tests check that refused calls were never forwarded).

Its ``usage`` is counted with zkmeter's own tokenizer code, so it agrees with the gateway,
and carries hidden details: ``reasoning_tokens`` for models named ``o1``/``o3``/``o4``...
(twice the visible completion) and ``cached_tokens`` (the prompt rounded down to 64).
Per-request controls, as request headers (the gateway forwards them): ``x-upstream-fail:
429|500`` (answer that error in OpenAI's shape), ``x-upstream-delay-ms: N`` (before the
reply), ``x-upstream-chunk-delay-ms: N`` (between stream chunks), ``x-upstream-words: N``
(length of the completion), ``x-upstream-usage-skew: N`` (add N to the reported
prompt_tokens, to provoke a disagreement), ``x-upstream-set-cookie: V`` (answer with
``Set-Cookie: V``; ``/stats`` counts the requests that came with a ``Cookie`` header).
Server-wide defaults come from the command line.

It never logs a request body.
"""

import asyncio
import hashlib
import json
import random
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from verifier.tokens import (
    SUPPORTED_ENCODINGS,
    Message,
    TokenCounter,
    count_chat,
    count_text,
    get_encoding,
)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

WORDS = ("the", "meter", "counts", "every", "token", "and", "signs", "a", "receipt", "for",
         "user", "who", "keeps", "it", "while", "epoch", "closes", "with", "commitments",
         "proofs", "settle", "on", "chain", " é", " 東京", "🙂", "\n", ",", ".", "zero",
         "knowledge")
MODELS = ("gpt-4o", "gpt-4o-mini", "o3", "o4-mini", "text-embedding-3-small")
EMBEDDING_DIM = 8


@dataclass(frozen=True)
class UpstreamOptions:
    """Server-wide defaults (per-request headers override them)."""

    api_key: str | None = None
    delay_ms: int = 0
    chunk_delay_ms: int = 0
    words: int = 24
    fail_every: int = 0  # every Nth request answers 500 (0: never)


def _error(status: int) -> bytes:
    kinds = {429: ("Rate limit reached for requests.", "requests", "rate_limit_exceeded"),
             500: ("The server had an error while processing your request.", "server_error",
                   None),
             401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key")}
    message, kind, code = kinds.get(status, ("Upstream error.", "server_error", None))
    return json.dumps({"error": {"message": message, "type": kind, "param": None,
                                 "code": code}}).encode()


class UpstreamApp:
    """The ASGI app (module docstring)."""

    def __init__(self, options: UpstreamOptions | None = None) -> None:
        self.options = options or UpstreamOptions()
        self.requests = 0
        self.with_cookie = 0
        self.counter = TokenCounter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    for name in SUPPORTED_ENCODINGS:  # load the tokenizers before serving
                        get_encoding(name)
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == "/stats":
            await _send(send, 200, json.dumps({"requests": self.requests,
                                               "with_cookie": self.with_cookie}).encode())
            return
        self.requests += 1
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        self.with_cookie += "cookie" in headers
        if "x-upstream-set-cookie" in headers:
            send = _with_header(send, b"set-cookie",
                                headers["x-upstream-set-cookie"].encode("latin-1"))
        if self.options.api_key is not None and headers.get("authorization") != (
                f"Bearer {self.options.api_key}"):
            await _send(send, 401, _error(401))
            return
        body_raw = b""
        while True:
            message = await receive()
            body_raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        fail = headers.get("x-upstream-fail")
        if fail is None and self.options.fail_every and self.requests % (
                self.options.fail_every) == 0:
            fail = "500"
        delay = int(headers.get("x-upstream-delay-ms", self.options.delay_ms))
        if delay:
            await asyncio.sleep(delay / 1000)
        if fail in ("429", "500", "400", "503"):
            await _send(send, int(fail), _error(int(fail)))
            return
        if method == "GET" and path == "/v1/models":
            data = [{"id": m, "object": "model", "created": 1700000000, "owned_by": "zkmeter"}
                    for m in MODELS]
            await _send(send, 200, json.dumps({"object": "list", "data": data}).encode())
            return
        try:
            body = json.loads(body_raw)
        except ValueError:
            await _send(send, 400, _error(400))
            return
        if method == "POST" and path == "/v1/chat/completions":
            await self._chat(body, headers, send)
        elif method == "POST" and path == "/v1/completions":
            await self._completion(body, headers, send)
        elif method == "POST" and path == "/v1/embeddings":
            await self._embeddings(body, send)
        else:
            await _send(send, 404, _error(404))

    def _words(self, seed: bytes, headers: dict[str, str]) -> list[str]:
        n = int(headers.get("x-upstream-words", self.options.words))
        rng = random.Random(hashlib.sha256(seed).digest())  # noqa: S311 (not security)
        return [(" " if i and not w.startswith((" ", "\n", ",", ".")) else "") + w
                for i, w in enumerate(rng.choice(WORDS) for _ in range(n))]

    def _usage(self, model: str, prompt_tokens: int, completion: str,
               headers: dict[str, str]) -> dict[str, Any]:
        enc = get_encoding(self.counter.encoding_for(model))
        visible = count_text(completion, enc)
        reasoning = 2 * visible if model.startswith(("o1", "o3", "o4")) else 0
        cached = (prompt_tokens // 64) * 64
        return {"prompt_tokens": prompt_tokens + int(headers.get("x-upstream-usage-skew", 0)),
                "completion_tokens": visible + reasoning,
                "total_tokens": prompt_tokens + visible + reasoning,
                "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": reasoning,
                                              "audio_tokens": 0,
                                              "accepted_prediction_tokens": 0,
                                              "rejected_prediction_tokens": 0}}

    def _chat_prompt_tokens(self, body: dict[str, Any]) -> int:
        # the same accounting the gateway uses (prover/gateway/counting.py)
        from prover.gateway.counting import chat_messages

        messages: list[Message] = chat_messages(body)
        return count_chat(messages, get_encoding(self.counter.encoding_for(body["model"])))

    async def _chat(self, body: dict[str, Any], headers: dict[str, str], send: Send) -> None:
        model = body.get("model", "gpt-4o")
        prompt_tokens = self._chat_prompt_tokens(body)
        words = self._words(json.dumps(body.get("messages"), sort_keys=True).encode(), headers)
        tools = body.get("tools") or []
        call: dict[str, Any] | None = None
        if tools and body.get("tool_choice") != "none":
            fn = tools[0].get("function", {})
            props = (fn.get("parameters") or {}).get("properties") or {"value": {}}
            args = json.dumps({name: words[i % len(words)].strip() or "x"
                               for i, name in enumerate(props)})
            call = {"id": "call_" + hashlib.sha256(args.encode()).hexdigest()[:24],
                    "type": "function", "function": {"name": fn.get("name", "f"),
                                                     "arguments": args}}
        content = None if call else "".join(words)
        completion = (call["function"]["name"] + call["function"]["arguments"] if call
                      else content or "")
        usage = self._usage(model, prompt_tokens, completion, headers)
        rid = "chatcmpl-" + hashlib.sha256(json.dumps(body).encode()).hexdigest()[:24]
        created = int(time.time())
        finish = "tool_calls" if call else "stop"
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": content,
                                       "refusal": None}
            if call:
                message["tool_calls"] = [call]
            reply = {"id": rid, "object": "chat.completion", "created": created, "model": model,
                     "choices": [{"index": 0, "message": message, "logprobs": None,
                                  "finish_reason": finish}],
                     "usage": usage, "system_fingerprint": "fp_zkmeter"}
            await _send(send, 200, json.dumps(reply).encode(),
                        extra=[(b"x-request-id", b"upstream-" + rid.encode())])
            return
        include = (body.get("stream_options") or {}).get("include_usage") is True

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            out = {"id": rid, "object": "chat.completion.chunk", "created": created,
                   "model": model, "system_fingerprint": "fp_zkmeter",
                   "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                "finish_reason": finish_reason}]}
            if include:
                out["usage"] = None
            return out

        pieces = [chunk({"role": "assistant", "content": ""})]
        if call:
            args = call["function"]["arguments"]
            pieces.append(chunk({"tool_calls": [{"index": 0, "id": call["id"],
                                                 "type": "function",
                                                 "function": {"name": call["function"]["name"],
                                                              "arguments": ""}}]}))
            pieces += [chunk({"tool_calls": [{"index": 0, "function": {
                "arguments": args[i:i + 8]}}]}) for i in range(0, len(args), 8)]
        else:
            pieces += [chunk({"content": w}) for w in words]
        pieces.append(chunk({}, finish))
        if include:
            pieces.append({"id": rid, "object": "chat.completion.chunk", "created": created,
                           "model": model, "choices": [], "usage": usage})
        await self._stream(pieces, headers, send)

    async def _completion(self, body: dict[str, Any], headers: dict[str, str],
                          send: Send) -> None:
        model = body.get("model", "gpt-4o")
        prompt = body.get("prompt", "")
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        enc = get_encoding(self.counter.encoding_for(model))
        prompt_tokens = sum(count_text(p, enc) if isinstance(p, str) else 1 for p in prompts)
        words = self._words(json.dumps(prompt).encode(), headers)
        text = "".join(words)
        usage = self._usage(model, prompt_tokens, text, headers)
        rid = "cmpl-" + hashlib.sha256(json.dumps(body).encode()).hexdigest()[:24]
        if not body.get("stream"):
            reply = {"id": rid, "object": "text_completion", "created": int(time.time()),
                     "model": model, "choices": [{"index": 0, "text": text, "logprobs": None,
                                                  "finish_reason": "stop"}], "usage": usage}
            await _send(send, 200, json.dumps(reply).encode())
            return
        include = (body.get("stream_options") or {}).get("include_usage") is True
        pieces: list[dict[str, Any]] = [
            {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model,
             "choices": [{"index": 0, "text": w, "logprobs": None, "finish_reason": None}]}
            for w in words]
        if include:
            pieces.append({"id": rid, "object": "text_completion", "created": int(time.time()),
                           "model": model, "choices": [], "usage": usage})
        await self._stream(pieces, headers, send)

    async def _embeddings(self, body: dict[str, Any], send: Send) -> None:
        model = body.get("model", "text-embedding-3-small")
        value = body.get("input", "")
        inputs = [value] if isinstance(value, str) else list(value)
        enc = get_encoding(self.counter.encoding_for(model))
        tokens = sum(count_text(v, enc) if isinstance(v, str) else len(v) if isinstance(
            v, list) else 1 for v in inputs)
        data = []
        for i, item in enumerate(inputs):
            digest = hashlib.sha256(json.dumps(item).encode()).digest()
            data.append({"object": "embedding", "index": i,
                         "embedding": [round(b / 255 - 0.5, 6) for b in digest[:EMBEDDING_DIM]]})
        reply = {"object": "list", "data": data, "model": model,
                 "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
        await _send(send, 200, json.dumps(reply).encode())

    async def _stream(self, pieces: list[dict[str, Any]], headers: dict[str, str],
                      send: Send) -> None:
        delay = int(headers.get("x-upstream-chunk-delay-ms", self.options.chunk_delay_ms))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream; charset=utf-8"),
                                (b"cache-control", b"no-cache")]})
        for piece in pieces:
            if delay:
                await asyncio.sleep(delay / 1000)
            await send({"type": "http.response.body", "more_body": True,
                        "body": b"data: " + json.dumps(piece).encode() + b"\n\n"})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n",
                    "more_body": False})


def _with_header(send: Send, name: bytes, value: bytes) -> Send:
    """``send`` that adds one header to the response's start."""
    async def wrapped(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), (name, value)]}
        await send(message)
    return wrapped


async def _send(send: Send, status: int, body: bytes,
                extra: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *(extra or [])]})
    await send({"type": "http.response.body", "body": body})
