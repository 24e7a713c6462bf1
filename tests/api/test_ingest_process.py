"""``ZKMETER_INGEST_PROCESS``: the ingest transactions in a child process of ``zkmeter serve``.

Black-box over real gRPC on a real ``zkmeter serve``: receipts verify and chain, replays and
refusals keep their status codes, a dead child fails calls as UNAVAILABLE and stops the
server (non-zero exit), and a drain ends the child too. In-process: start-up errors and the
errors that cross the pipe.
"""

import os
import pickle
import signal
import subprocess
import sys
import time

import grpc
import httpx
import pytest

from prover.api.ingest_process import IngestProcess, _dumps
from prover.app import build_services
from prover.config import Settings
from prover.errors import ConfigError, EscrowUnavailableError, LedgerError, PrepaidLimitError
from prover.metering import UsageRequest
from tests.api.test_grpc_hostile import database_url  # noqa: F401 - the fixture
from tests.api.test_serve import server_env, wait_until  # noqa: F401 - the fixture
from tests.faults.test_close_races import alive, cmdline, descendants
from verifier.receipts import ReceiptChainError, decode_receipt, verify_chain, verify_signature
from verifier.tokens import Message
from zkmeter.client import Client, usage_request

PAYER = b"\xa1" * 20


def _ingest_child(pid: int) -> int:
    """The serving process's ingest child (a spawned child; not the resource tracker)."""
    spawned = [c for c in descendants(pid) if "spawn_main" in cmdline(c)]
    assert len(spawned) == 1, spawned
    return spawned[0]


def _gone(pid: int, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.fixture()
def serving(server_env):  # noqa: F811 - the fixture imported above
    env, key, grpc_port, http_port = server_env
    env["ZKMETER_INGEST_PROCESS"] = "true"
    proc = subprocess.Popen([sys.executable, "-m", "prover.cli", "serve"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{http_port}/healthz",
                                     timeout=2).status_code == 200)
        yield proc, f"127.0.0.1:{grpc_port}", key
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_child_records_every_batch_and_the_receipts_chain(serving):
    proc, target, key = serving
    child = _ingest_child(proc.pid)
    with Client(target, api_key=key) as zk:
        account = zk.register_account(payer=PAYER, asset=bytes(20),
                                      payer_x25519_public_key=b"\x09" * 32)
        for user in ("u1", "u2"):
            zk.register_user(user, account.account_id)
        first = zk.record_usage(idempotency_key="k0", user_id="u1", model="gpt-4o",
                                input_tokens=3, output_tokens=4)
        text = zk.record_usage(idempotency_key="k1", user_id="u1", model="gpt-4o",
                               messages=[("user", "hello there")], completion="hi")
        streamed = list(zk.record_usage_stream(
            usage_request(idempotency_key=f"s{i}", user_id=("u1", "u2")[i % 2],
                          model="gpt-4o", input_tokens=10 + i, output_tokens=i)
            for i in range(40)))
        again = zk.record_usage(idempotency_key="k0", user_id="u1", model="gpt-4o",
                                input_tokens=3, output_tokens=4)
        with pytest.raises(grpc.RpcError) as conflict:  # same key, other payload
            zk.record_usage(idempotency_key="k0", user_id="u1", model="gpt-4o",
                            input_tokens=5, output_tokens=4)
        with pytest.raises(grpc.RpcError) as unknown:
            zk.record_usage(idempotency_key="k2", user_id="nobody", model="gpt-4o",
                            input_tokens=1, output_tokens=1)
        with pytest.raises(grpc.RpcError) as unpriced:
            zk.record_usage(idempotency_key="k3", user_id="u1", model="no-such-model",
                            input_tokens=1, output_tokens=1)
    assert conflict.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert unpriced.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert again.replayed and again.receipt.receipt_hash == first.receipt.receipt_hash
    assert text.receipt.encoding == "o200k_base" and text.receipt.input_tokens > 0
    assert len(streamed) == 40 and all(r.HasField("receipt") for r in streamed)
    receipts = [decode_receipt(r.receipt.encoded + r.receipt.signature)
                for r in (first, text, *streamed)]
    for receipt in receipts:
        verify_signature(receipt)
    for user, length in (("u1", 22), ("u2", 20)):
        chain = [r for r in receipts if r.user_id == user]
        assert len(chain) == length
        verify_chain(chain)  # seq 1..n, each prev_hash the one before, running totals
    with pytest.raises(ReceiptChainError):
        verify_chain([r for r in receipts if r.user_id == "u1"][1:])
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    assert _gone(child)  # the drain ends the child too
    stderr = proc.stderr.read().decode()
    assert "ingest transactions in process" in stderr and "Traceback" not in stderr


def test_a_dead_child_fails_calls_as_unavailable_and_stops_the_server(serving):
    proc, target, key = serving
    with Client(target, api_key=key) as zk:
        account = zk.register_account(payer=PAYER, asset=bytes(20),
                                      payer_x25519_public_key=b"\x09" * 32)
        zk.register_user("u", account.account_id)
        zk.record_usage(idempotency_key="d0", user_id="u", model="gpt-4o",
                        input_tokens=1, output_tokens=1)
        os.kill(_ingest_child(proc.pid), signal.SIGKILL)
        codes = set()
        for i in range(20):  # until the server has noticed and stops listening
            try:
                zk.record_usage(idempotency_key=f"d{i + 1}", user_id="u", model="gpt-4o",
                                input_tokens=1, output_tokens=1)
                pytest.fail("an event was recorded without the ingest process")
            except grpc.RpcError as exc:
                codes.add(exc.code())
            if proc.poll() is not None:
                break
            time.sleep(0.2)
    assert grpc.StatusCode.UNAVAILABLE in codes and codes <= {grpc.StatusCode.UNAVAILABLE}
    assert proc.wait(timeout=60) == 2  # for its supervisor to restart it
    stderr = proc.stderr.read().decode()
    assert "the ingest process ended" in stderr and "Traceback" not in stderr


def test_a_killed_server_takes_its_child_with_it(serving):
    proc, _target, _key = serving
    child = _ingest_child(proc.pid)
    proc.kill()  # no drain: the pipe breaks
    proc.wait(timeout=30)
    assert _gone(child, timeout=30)


def test_start_up_errors_and_refusals(tmp_path):
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'missing' / 'x.sqlite'}",
                        signing_key="e1" + "".join(f"{i:02x}" for i in range(31)))
    with pytest.raises(ConfigError, match="the ingest process could not start"):
        IngestProcess.start(settings)
    with pytest.raises(ConfigError, match="escrow"):  # an escrow object cannot cross
        IngestProcess.start(settings, escrow_given=True)


def test_records_in_the_child_and_errors_cross_the_pipe(database_url):  # noqa: F811
    settings = Settings(database_url=database_url,
                        signing_key="e1" + "".join(f"{i:02x}" for i in range(31)))
    services = build_services(settings)  # the serving process's view of the same database
    try:
        account = services.accounts.register_account(payer=PAYER, asset=bytes(20),
                                                     payer_x25519_public_key=b"\x09" * 32)
        services.accounts.register_user("u", account.account_id)
        ingest = IngestProcess.start(settings)
        try:
            assert ingest.alive() and ingest.pid != os.getpid()
            outcomes = ingest.record_batch([
                UsageRequest("a", "unregistered", "gpt-4o", input_tokens=1, output_tokens=1),
                UsageRequest("b", "u", "gpt-4o", input_tokens=-1, output_tokens=1),
                UsageRequest("c", "u", "gpt-4o", input_tokens=2, output_tokens=3)])
            second = ingest.record_batch([
                UsageRequest("d", "u", "gpt-4o", messages=[Message("user", "hi")],
                             completion="hello"),
                UsageRequest("c", "u", "gpt-4o", input_tokens=2, output_tokens=3)])
        finally:
            ingest.close()
        assert [type(o).__name__ for o in outcomes] == ["UnknownUserError",
                                                        "InvalidRequestError", "Stored"]
        first = outcomes[2]
        assert first.receipt.seq == 1 and not first.replayed
        assert second[0].receipt.seq == 2 and second[0].receipt.prev_hash == first.receipt_hash
        assert second[1].replayed and second[1].wire == first.wire
        for stored in (first, second[0]):
            verify_signature(decode_receipt(stored.wire),
                             provider_id=services.meter.provider_id)
        # what the child stored is the serving process's ledger: the same rows
        listed = services.meter.ledger.receipts(first.receipt.epoch_id, "u")
        assert [r.hash() for r in listed] == [first.receipt_hash, second[0].receipt_hash]
    finally:
        services.close()
    assert not ingest.alive() and ingest.join(5) is not None
    with pytest.raises(LedgerError, match="closed"):
        ingest.record_batch([])
    # the errors with keyword-only fields survive pickling, fields and all
    limit = pickle.loads(pickle.dumps(PrepaidLimitError("over", account_id=b"\x01" * 32,
                                                        remaining_units=7)))
    assert (str(limit), limit.account_id, limit.remaining_units) == ("over", b"\x01" * 32, 7)
    down = pickle.loads(pickle.dumps(EscrowUnavailableError("down", account_id=b"\x02" * 32)))
    assert (type(down), str(down), down.account_id) == (EscrowUnavailableError, "down",
                                                        b"\x02" * 32)


def test_an_outcome_that_does_not_pickle_crosses_as_a_ledger_error_naming_its_type():
    class Unpicklable(Exception):
        def __reduce__(self):
            raise TypeError("cannot pickle: prompt text 'secret words'")

    status, error = pickle.loads(_dumps(("ok", [Unpicklable("secret words")])))
    assert status == "raised" and isinstance(error, LedgerError)
    assert str(error) == "the ingest process could not send its outcome (TypeError)"
    status, outcomes = pickle.loads(_dumps(("ok", [LedgerError("x"), 3])))  # the normal case
    assert status == "ok" and [type(o) for o in outcomes] == [LedgerError, int]
