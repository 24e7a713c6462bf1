"""The gateway end to end, all real: the official ``openai`` client -> ``zkmeter gateway`` ->
``zkmeter upstream``, with ``zkmeter serve`` on loopback, each its own process.

Receipts' visible counts are checked against tiktoken run here on the text the client
actually received (chat accounting written out below, not the project's helper), their
digests against that text (``check_text``), hidden counts against the upstream's usage."""

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from prover.gateway.app import decode_receipt_header
from prover.gateway.counting import chat_messages
from tests.gateway.harness import Stack
from verifier.receipts import check_text, receipt_from_json, verify_signature
from verifier.tokens import get_encoding
from zkmeter.client import Client

MARKER = "zq-secret-prompt-marker-7731"
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "unit": {"type": "string"}}}}}]
RECEIVED: list[str] = []  # every completion text the clients received (grepped for at the end)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    running = Stack(tmp_path_factory.mktemp("gateway"), ["alice", "bob"]).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def alice(stack):
    return openai.OpenAI(base_url=stack.gateway_url, api_key=stack.caller_keys["alice"],
                         max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def zk(stack):
    with Client(f"127.0.0.1:{stack.grpc_port}", api_key=stack.api_key) as client:
        yield client


def tiktoken_chat(messages: list[dict], model: str = "gpt-4o") -> int:
    """OpenAI's chat rule with tiktoken directly: 3 per message + role + content, 3 priming."""
    enc = get_encoding("o200k_base")
    total = 3
    for m in messages:
        total += 3 + len(enc.encode_ordinary(m["role"])) + len(enc.encode_ordinary(m["content"]))
        if m.get("name"):
            total += 1 + len(enc.encode_ordinary(m["name"]))
    return total


def tiktoken_text(text: str) -> int:
    return len(get_encoding("o200k_base").encode_ordinary(text))


def fetch_receipt(stack, key: str, request_id: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        reply = httpx.get(f"{stack.gateway_url}/zkmeter/receipts/{request_id}",
                          headers={"authorization": f"Bearer {key}"})
        if reply.status_code == 200:
            return reply.json()["receipt"]
        assert reply.status_code == 202, reply.text
        assert time.monotonic() < deadline, "receipt still pending"
        time.sleep(0.1)


def provider_id(stack) -> bytes:
    return bytes.fromhex(httpx.get(f"http://127.0.0.1:{stack.http_port}/v1/provider")
                         .json()["provider_id"].removeprefix("0x"))


def upstream_requests(stack) -> int:
    return httpx.get(f"http://127.0.0.1:{stack.upstream_port}/stats").json()["requests"]


def test_chat_non_streamed_receipt_in_header(stack, alice, zk, tmp_path):
    messages = [{"role": "system", "content": "You are terse."},
                {"role": "user", "content": f"Say something about {MARKER}.", "name": "ann"}]
    raw = alice.chat.completions.with_raw_response.create(model="gpt-4o", messages=messages)
    reply = raw.parse()
    content = reply.choices[0].message.content
    RECEIVED.append(content)
    receipt_json = decode_receipt_header(raw.headers["zkmeter-receipt"])
    receipt = receipt_from_json(receipt_json)
    assert receipt.user_id == "alice"
    assert receipt.counted_from_text
    assert receipt.input_tokens == tiktoken_chat(messages) == reply.usage.prompt_tokens
    assert receipt.output_tokens == tiktoken_text(content) == reply.usage.completion_tokens
    assert receipt.reasoning_tokens == 0
    assert receipt.cached_input_tokens == reply.usage.prompt_tokens_details.cached_tokens
    check_text(receipt, messages=chat_messages({"messages": messages}), completion=content)
    # the request id the official client exposes fetches the same receipt, for alice only
    request_id = raw.headers["x-request-id"]
    assert reply._request_id == request_id
    assert fetch_receipt(stack, stack.caller_keys["alice"], request_id) == receipt_json
    other = httpx.get(f"{stack.gateway_url}/zkmeter/receipts/{request_id}",
                      headers={"authorization": f"Bearer {stack.caller_keys['bob']}"})
    assert other.status_code == 404 and other.json()["error"]["code"] == "receipt_not_found"
    # zkmeter serve holds exactly this receipt, and zkmeter-verify accepts it
    held = [r for r in zk.list_receipts("alice") if r.receipt_hash.hex() ==
            receipt_json["hash"].removeprefix("0x")]
    assert len(held) == 1
    verify_signature(receipt, provider_id=provider_id(stack))
    path = tmp_path / "receipt.json"
    path.write_text(json.dumps(receipt_json))
    run = subprocess.run([sys.executable, "-m", "verifier", "receipt", str(path), "--json",
                          "--provider-key", provider_id(stack).hex()],
                         capture_output=True, text=True, cwd=Path(__file__).parents[2])
    assert run.returncode == 0, run.stdout + run.stderr


def test_chat_streamed_counts_what_was_received(stack, alice):
    messages = [{"role": "user", "content": f"Stream please {MARKER} " + "lorem " * 80}]
    stream = alice.chat.completions.create(model="o3", messages=messages, stream=True,
                                           stream_options={"include_usage": True})
    chunks = list(stream)
    request_id = stream.response.headers["x-request-id"]
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    RECEIVED.append(content)
    usage = [c.usage for c in chunks if c.usage is not None]
    assert len(usage) == 1 and not [c for c in chunks if not c.choices and c.usage is None]
    receipt = receipt_from_json(fetch_receipt(stack, stack.caller_keys["alice"], request_id))
    assert receipt.model == "o3"
    assert receipt.input_tokens == tiktoken_chat(messages)
    assert receipt.output_tokens == tiktoken_text(content) > 0
    # hidden counts come only from the upstream's usage details, on their own fields
    assert receipt.reasoning_tokens == usage[0].completion_tokens_details.reasoning_tokens > 0
    assert receipt.cached_input_tokens == usage[0].prompt_tokens_details.cached_tokens > 0
    check_text(receipt, messages=chat_messages({"messages": messages}), completion=content)


def test_stream_without_include_usage_gets_no_usage_chunk(stack, alice):
    stream = alice.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "no usage chunk"}], stream=True)
    chunks = list(stream)
    assert chunks and all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)
    RECEIVED.append("".join(c.choices[0].delta.content or "" for c in chunks))


def test_stream_receipt_comment_before_done(stack):
    key = stack.caller_keys["bob"]
    body = {"model": "gpt-4o", "stream": True,
            "messages": [{"role": "user", "content": "raw SSE reader"}]}
    with httpx.stream("POST", f"{stack.gateway_url}/chat/completions", json=body,
                      headers={"authorization": f"Bearer {key}"}) as reply:
        assert reply.status_code == 200
        request_id = reply.headers["x-request-id"]
        lines = [line for line in reply.iter_lines() if line]
    comments = [i for i, line in enumerate(lines) if line.startswith(": zkmeter-receipt ")]
    assert len(comments) == 1 and lines[-1] == "data: [DONE]" and comments[0] == len(lines) - 2
    in_stream = decode_receipt_header(lines[comments[0]].split(" ", 2)[2])
    assert in_stream == fetch_receipt(stack, key, request_id)
    assert in_stream["user_id"] == "bob"


@pytest.mark.parametrize("stream", [False, True])
def test_tool_calls(stack, alice, stream):
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    if stream:
        s = alice.chat.completions.create(model="gpt-4o", messages=messages, tools=TOOLS,
                                          stream=True)
        chunks = list(s)
        request_id = s.response.headers["x-request-id"]
        name = "".join(tc.function.name or "" for c in chunks if c.choices
                       for tc in c.choices[0].delta.tool_calls or ())
        args = "".join(tc.function.arguments or "" for c in chunks if c.choices
                       for tc in c.choices[0].delta.tool_calls or ())
        receipt_json = fetch_receipt(stack, stack.caller_keys["alice"], request_id)
    else:
        raw = alice.chat.completions.with_raw_response.create(model="gpt-4o",
                                                              messages=messages, tools=TOOLS)
        call = raw.parse().choices[0].message.tool_calls[0]
        name, args = call.function.name, call.function.arguments
        receipt_json = decode_receipt_header(raw.headers["zkmeter-receipt"])
    assert name == "get_weather" and set(json.loads(args)) == {"city", "unit"}
    RECEIVED.append(args)
    receipt = receipt_from_json(receipt_json)
    tools_message = {"role": "tools", "content": json.dumps(TOOLS, separators=(",", ":"))}
    assert receipt.input_tokens == tiktoken_chat([*messages, tools_message])
    assert receipt.output_tokens == tiktoken_text(name + args)
    check_text(receipt, messages=chat_messages({"messages": messages, "tools": TOOLS}),
               completion=name + args)


@pytest.mark.parametrize(("status", "error"), [(429, openai.RateLimitError),
                                               (500, openai.InternalServerError)])
def test_upstream_errors_pass_through_unbilled(stack, alice, zk, status, error):
    before = len(zk.list_receipts("alice"))
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "fail"}]}
    headers = {"x-upstream-fail": str(status)}
    with pytest.raises(error) as caught:
        alice.chat.completions.create(**body, extra_headers=headers)
    direct = httpx.post(f"{stack.upstream_url}/chat/completions", json=body,
                        headers={**headers, "authorization": f"Bearer {stack.upstream_key}"})
    assert caught.value.status_code == direct.status_code == status
    assert caught.value.response.content == direct.content  # byte for byte
    with pytest.raises(error):  # streamed too
        alice.chat.completions.create(**body, stream=True, extra_headers=headers)
    assert len(zk.list_receipts("alice")) == before


def test_unknown_key_is_401_and_never_forwarded(stack):
    seen = upstream_requests(stack)
    for key in ("zkm_not-a-key", stack.api_key, stack.upstream_key):
        client = openai.OpenAI(base_url=stack.gateway_url, api_key=key, max_retries=0)
        with pytest.raises(openai.AuthenticationError) as caught:
            client.chat.completions.create(model="gpt-4o",
                                           messages=[{"role": "user", "content": MARKER}])
        assert caught.value.body == {"message": "Incorrect API key provided.",
                                     "type": "invalid_request_error", "param": None,
                                     "code": "invalid_api_key"}
    no_auth = httpx.post(f"{stack.gateway_url}/chat/completions", json={"model": "gpt-4o"})
    assert no_auth.status_code == 401
    assert upstream_requests(stack) == seen


def test_the_caller_key_is_not_the_upstream_key(stack):
    """The upstream refuses the caller's key: the gateway must have sent its own."""
    direct = httpx.post(f"{stack.upstream_url}/chat/completions",
                        headers={"authorization": f"Bearer {stack.caller_keys['alice']}"},
                        json={"model": "gpt-4o", "messages": [{"role": "user",
                                                               "content": "x"}]})
    assert direct.status_code == 401


def test_bad_requests_are_refused_before_forwarding(stack, alice):
    seen = upstream_requests(stack)
    with pytest.raises(openai.BadRequestError):
        alice.chat.completions.create(model="no-such-model",
                                      messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError):
        alice.chat.completions.create(model="gpt-4o", messages=[])
    key = stack.caller_keys["alice"]
    bad = httpx.post(f"{stack.gateway_url}/chat/completions", content=b"{not json",
                     headers={"authorization": f"Bearer {key}"})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
    assert upstream_requests(stack) == seen


def test_slow_upstream(stack, alice):
    started = time.monotonic()
    raw = alice.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "take your time"}],
        extra_headers={"x-upstream-delay-ms": "1500"})
    assert time.monotonic() - started >= 1.5
    content = raw.parse().choices[0].message.content
    RECEIVED.append(content)
    receipt = decode_receipt_header(raw.headers["zkmeter-receipt"])
    assert receipt["tokens"]["output"] == tiktoken_text(content)
    stream = alice.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "slow stream"}], stream=True,
        extra_headers={"x-upstream-chunk-delay-ms": "40", "x-upstream-words": "12"})
    content = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    receipt = fetch_receipt(stack, stack.caller_keys["alice"],
                            stream.response.headers["x-request-id"])
    assert receipt["tokens"]["output"] == tiktoken_text(content)


def test_client_disconnect_mid_stream_is_billed_for_what_it_received(stack, alice):
    stream = alice.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "a long one, I will hang up"}],
        stream=True, extra_headers={"x-upstream-chunk-delay-ms": "400",
                                    "x-upstream-words": "60"})
    request_id = stream.response.headers["x-request-id"]
    got = []
    for chunk in stream:
        got.append(chunk.choices[0].delta.content or "")
        if len([g for g in got if g]) == 4:
            break
    stream.close()
    received = "".join(got)
    receipt = fetch_receipt(stack, stack.caller_keys["alice"], request_id)
    assert receipt["tokens"]["output"] == tiktoken_text(received) > 0
    assert receipt["tokens"]["reasoning"] == 0  # the usage chunk never came


def test_completions_and_embeddings(stack, alice):
    raw = alice.completions.with_raw_response.create(model="gpt-4o",
                                                     prompt=f"Once upon {MARKER}")
    text = raw.parse().choices[0].text
    RECEIVED.append(text)
    receipt = decode_receipt_header(raw.headers["zkmeter-receipt"])
    assert receipt["tokens"]["input"] == tiktoken_text(f"Once upon {MARKER}")
    assert receipt["tokens"]["output"] == tiktoken_text(text)
    stream = alice.completions.create(model="gpt-4o", prompt="stream it", stream=True)
    text = "".join(c.choices[0].text for c in stream if c.choices)
    receipt = fetch_receipt(stack, stack.caller_keys["alice"],
                            stream.response.headers["x-request-id"])
    assert receipt["tokens"]["output"] == tiktoken_text(text) > 0
    raw = alice.embeddings.with_raw_response.create(model="text-embedding-3-small",
                                                    input=["first " + MARKER, "second"])
    assert len(raw.parse().data) == 2
    receipt = decode_receipt_header(raw.headers["zkmeter-receipt"])
    assert receipt["tokens"] == {"input": tiktoken_text("first " + MARKER)
                                 + tiktoken_text("second"), "output": 0, "cached_input": 0,
                                 "reasoning": 0}


def test_models_pass_through(stack, alice):
    assert "gpt-4o" in [m.id for m in alice.models.list()]


def test_usage_disagreement_is_a_counter_and_a_log_line(stack, alice):
    def mismatches() -> float:
        text = httpx.get(f"http://127.0.0.1:{stack.metrics_port}/metrics").text
        found = re.search(r'zkmeter_gateway_usage_mismatch_total\{field="prompt"\} (\S+)', text)
        return float(found.group(1)) if found else 0.0

    before = mismatches()
    raw = alice.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": MARKER}],
        extra_headers={"x-upstream-usage-skew": "7"})
    reply = raw.parse()
    RECEIVED.append(reply.choices[0].message.content)
    receipt = decode_receipt_header(raw.headers["zkmeter-receipt"])
    assert reply.usage.prompt_tokens == receipt["tokens"]["input"] + 7  # not trusted
    assert mismatches() == before + 1
    deadline = time.monotonic() + 10
    while raw.headers["x-request-id"] not in stack.gateway.log.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    line = next(ln for ln in stack.gateway.log.read_text().splitlines()
                if raw.headers["x-request-id"] in ln)
    assert "usage mismatch" in line and "field=prompt" in line


def test_no_cookie_of_one_caller_reaches_the_upstream_on_another_callers_request(stack,
                                                                                 alice):
    """The upstream's Set-Cookie reaches the caller it answered, but the gateway keeps no
    cookie jar: its shared upstream connection must not send one caller's cookie on the
    requests of every caller after it."""
    def with_cookie() -> int:
        return httpx.get(f"http://127.0.0.1:{stack.upstream_port}/stats").json()["with_cookie"]

    before = with_cookie()
    raw = alice.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "set me a cookie"}],
        extra_headers={"x-upstream-set-cookie": "session=alice-only; Path=/"})
    assert raw.headers["set-cookie"] == "session=alice-only; Path=/"
    RECEIVED.append(raw.parse().choices[0].message.content)
    bob = openai.OpenAI(base_url=stack.gateway_url, api_key=stack.caller_keys["bob"],
                        max_retries=0, timeout=60)
    reply = bob.chat.completions.create(model="gpt-4o",
                                        messages=[{"role": "user", "content": "bob's turn"}])
    RECEIVED.append(reply.choices[0].message.content)
    assert alice.models.list().data
    assert with_cookie() == before == 0


def test_gateway_metrics_are_not_on_the_public_port(stack):
    reply = httpx.get(f"{stack.gateway_url.removesuffix('/v1')}/metrics")
    assert reply.status_code == 401  # unknown route without a key: not even listed


def test_no_text_in_any_log_or_file(stack):
    """Last: the prompt marker and every completion received appear in no file written by
    serve, the upstream or the gateway (logs, SQLite files and their WAL)."""
    assert RECEIVED and all(RECEIVED)
    needles = [MARKER.encode()] + [t.encode() for t in RECEIVED if len(t) >= 24]
    assert len(needles) > 3
    files = [p for p in Path(stack.workdir).rglob("*") if p.is_file()]
    assert any(p.name.startswith("gateway.sqlite") for p in files)
    for path in files:
        data = path.read_bytes()
        for needle in needles:
            assert needle not in data, f"text found in {path.name}"
