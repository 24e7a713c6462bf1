"""The report path under failure, all real processes: ``zkmeter serve`` (and the gateway
itself) restarting during a run loses no usage and bills none twice; a full queue pushes back
with 503; a retried report whose first attempt landed gets the original receipt back."""

import asyncio
import time
from pathlib import Path

import httpx
import openai
import pytest

from prover.gateway import metrics
from prover.gateway.app import decode_receipt_header
from prover.gateway.counting import LocalCounter, chat_messages
from prover.gateway.report import Reporter
from prover.gateway.store import GatewayStore, Report
from tests.gateway.harness import Stack, wait_serving
from tests.gateway.test_gateway import fetch_receipt, tiktoken_chat, tiktoken_text
from verifier.receipts import check_text, receipt_from_json, verify_chain
from zkmeter.client import Client

MARKER = "zq-durable-prompt-marker-5521"
QUEUE_MAX = 12


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    running = Stack(tmp_path_factory.mktemp("durable"), ["dana", "erin", "fay", "gus"],
                    gateway_env={"ZKMETER_GATEWAY_QUEUE_MAX": str(QUEUE_MAX),
                                 "ZKMETER_GATEWAY_REPORT_TIMEOUT_SECONDS": "2"}).start()
    yield running
    running.stop()


def restart_serve(stack) -> None:
    stack.serve.start()
    wait_serving(f"127.0.0.1:{stack.grpc_port}")


def receipts_of(stack, user: str) -> list:
    with Client(f"127.0.0.1:{stack.grpc_port}", api_key=stack.api_key) as zk:
        return zk.list_receipts(user)


def test_serve_and_gateway_restarts_lose_nothing_and_bill_once(stack):
    client = openai.OpenAI(base_url=stack.gateway_url, api_key=stack.caller_keys["dana"],
                           max_retries=0, timeout=60)
    sent = []  # (request id, messages, completion, receipt status in the reply)
    for i in range(12):
        if i == 3:
            stack.serve.stop()  # zkmeter serve goes away mid-run
        if i == 6:
            stack.gateway.stop()  # and the gateway restarts with reports still queued
            stack.gateway.start()
            client = openai.OpenAI(base_url=stack.gateway_url, max_retries=0, timeout=60,
                                   api_key=stack.caller_keys["dana"])
        if i == 8:
            restart_serve(stack)
        messages = [{"role": "user", "content": f"request {i} {MARKER}"}]
        if i % 3 == 2:
            stream = client.chat.completions.create(model="gpt-4o", messages=messages,
                                                    stream=True)
            completion = "".join(c.choices[0].delta.content or "" for c in stream
                                 if c.choices)
            request_id, status = stream.response.headers["x-request-id"], "stream"
        else:
            raw = client.chat.completions.with_raw_response.create(model="gpt-4o",
                                                                   messages=messages)
            completion = raw.parse().choices[0].message.content
            request_id = raw.headers["x-request-id"]
            status = "ok" if "zkmeter-receipt" in raw.headers else raw.headers[
                "zkmeter-receipt-status"]
        sent.append((request_id, messages, completion, status))
    assert [s[3] for s in sent[3:6] if s[3] != "stream"] == ["pending", "pending"]
    assert [s[3] for s in sent[:2]] == ["ok", "ok"]
    receipts = [receipt_from_json(fetch_receipt(stack, stack.caller_keys["dana"], rid))
                for rid, *_ in sent]
    for (rid, messages, completion, status), receipt in zip(sent, receipts, strict=True):
        assert receipt.input_tokens == tiktoken_chat(messages)
        assert receipt.output_tokens == tiktoken_text(completion)
        if receipt.counted_from_text:  # the first attempt got through with the text
            check_text(receipt, messages=chat_messages({"messages": messages}),
                       completion=completion)
        else:  # delivered from the queue, as counts
            assert status in ("pending", "stream")
    assert sum(not r.counted_from_text for r in receipts) >= 4
    held = receipts_of(stack, "dana")
    assert len(held) == len(sent)  # nothing lost, nothing twice
    assert {bytes(r.receipt_hash) for r in held} == {r.hash() for r in receipts}
    assert verify_chain(receipts_sorted(receipts), provider_id=receipts[0].provider_id).count \
        == len(sent)


def receipts_sorted(receipts):
    return sorted(receipts, key=lambda r: r.seq)


def test_full_queue_pushes_back_with_503(stack):
    key = stack.caller_keys["erin"]
    client = openai.OpenAI(base_url=stack.gateway_url, api_key=key, max_retries=0)
    stack.serve.stop()
    accepted = []
    try:
        for i in range(QUEUE_MAX):
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o", messages=[{"role": "user", "content": f"q{i} {MARKER}"}])
            assert raw.headers["zkmeter-receipt-status"] == "pending"
            accepted.append(raw.headers["x-request-id"])
        seen = httpx.get(f"http://127.0.0.1:{stack.upstream_port}/stats").json()["requests"]
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="gpt-4o",
                                           messages=[{"role": "user", "content": MARKER}])
        assert caught.value.status_code == 503
        assert caught.value.body["code"] == "zkmeter_queue_full"
        assert caught.value.response.headers["retry-after"] == "5"
        after = httpx.get(f"http://127.0.0.1:{stack.upstream_port}/stats").json()["requests"]
        assert after == seen  # refused before forwarding: nothing served unbilled
        assert "report queue full (12 waiting, max 12)" in stack.gateway.log.read_text()
    finally:
        restart_serve(stack)
    for rid in accepted:
        fetch_receipt(stack, key, rid)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "after the drain"}])
    assert "zkmeter-receipt" in raw.headers
    assert "below its limit again" in stack.gateway.log.read_text()
    assert len(receipts_of(stack, "erin")) == QUEUE_MAX + 1


def reporter_on(stack, path: Path) -> tuple[GatewayStore, Reporter]:
    """A gateway queue at ``path`` and a reporter to the stack's serve (fast retries)."""
    store = GatewayStore(path)
    return store, Reporter(store, target=f"127.0.0.1:{stack.grpc_port}", api_key=stack.api_key,
                           timeout=5, retry_seconds=0.1, queue_max=10)


def test_a_retried_report_never_bills_twice(stack, tmp_path):
    """The first attempt lands but its answer is lost (the row is queued again): the retry
    gets ALREADY_EXISTS (text vs counts) or the replay, and the original receipt, once."""
    counter = LocalCounter()
    messages = chat_messages({"messages": [{"role": "user", "content": MARKER}]})
    completion = "a completion kept only in memory"
    counts = counter.chat("gpt-4o", messages, completion)

    async def run() -> list:
        store, reporter = reporter_on(stack, tmp_path / "queue.sqlite")
        try:
            text_report = Report("retry-text", "fay", "gpt-4o", counts.input_tokens,
                                 counts.output_tokens, 0, 0)
            counts_report = Report("retry-counts", "fay", "gpt-4o", 5, 7, 2, 3)
            out = []
            for report, text in ((text_report, True), (counts_report, False)):
                reporter.enqueue(report)
                first = await reporter.report(report, messages if text else None, completion)
                store.enqueue(report)  # the acknowledgement was "lost": the row is back
                assert await reporter.drain(30)
                assert store.lookup(report.request_id, "fay")[0] == "ok"
                second = store.lookup(report.request_id, "fay")[1]
                out.append((first, second))
            return out
        finally:
            reporter.close()
            store.close()

    results = asyncio.run(run())
    for first, second in results:
        assert first.status == "ok" and first.receipt == second
    assert receipt_from_json(results[0][1]).counted_from_text
    assert receipt_from_json(results[1][1]).reasoning_tokens == 3
    assert len(receipts_of(stack, "fay")) == 2


def test_the_retry_loop_leaves_a_first_attempt_to_come_alone(stack, tmp_path):
    """A report enqueued whose first attempt has not started yet (a deferred reply is still
    being written, a stream's report task is still to run) is not sent by the retry loop as
    counts when another request's delivery wakes it: its first attempt sends the text, so the
    receipt binds the text's digests, and no second RPC answers ALREADY_EXISTS."""
    counter = LocalCounter()
    messages = chat_messages({"messages": [{"role": "user", "content": MARKER + " later"}]})
    completion = "the first attempt of this one starts late"
    counts = counter.chat("gpt-4o", messages, completion)

    async def run() -> tuple:
        store, reporter = reporter_on(stack, tmp_path / "window.sqlite")
        loop = asyncio.create_task(reporter.run())
        try:
            later = Report("window-later", "gus", "gpt-4o", counts.input_tokens,
                           counts.output_tokens, 0, 0)
            now = Report("window-now", "gus", "gpt-4o", 3, 4, 0, 0)
            reporter.enqueue(later)  # its first attempt is still to come
            reporter.enqueue(now)
            assert (await reporter.report(now, None, None)).status == "ok"
            await asyncio.sleep(1.0)  # the woken retry loop runs meanwhile
            first = await reporter.report(later, messages, completion)
            return first, store.lookup(later.request_id, "gus")
        finally:
            reporter.stop()
            await loop
            reporter.close()
            store.close()

    def replayed() -> float:
        return metrics.REGISTRY.get_sample_value("zkmeter_gateway_reports_total",
                                                 {"outcome": "replayed"}) or 0.0

    replayed_before = replayed()
    first, (status, kept) = asyncio.run(run())
    assert replayed() == replayed_before  # no retry met the first attempt's receipt
    assert first.status == status == "ok" and first.receipt == kept
    assert receipt_from_json(kept).counted_from_text  # sent with the text, not as counts
    check_text(receipt_from_json(kept), messages=messages, completion=completion)
    assert len(receipts_of(stack, "gus")) == 2


def test_no_text_in_any_file(stack):
    time.sleep(0.5)
    files = [p for p in Path(stack.workdir).rglob("*") if p.is_file()]
    assert any(p.name.startswith("gateway.sqlite") for p in files)
    for path in files:
        assert MARKER.encode() not in path.read_bytes(), f"text found in {path.name}"


def test_receipt_header_decodes(stack):
    raw = httpx.post(f"{stack.gateway_url}/chat/completions",
                     headers={"authorization": f"Bearer {stack.caller_keys['erin']}"},
                     json={"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]})
    value = raw.headers["zkmeter-receipt"]
    assert set(value) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert decode_receipt_header(value)["user_id"] == "erin"
