"""Prepaid limits enforced by the ingest process (``ZKMETER_INGEST_PROCESS=true``) against a
real chain. Black-box: a real ``zkmeter serve`` against a real anvil node, clients over real
gRPC, the ledger on SQLite and on PostgreSQL.

The serving process only forwards batches; its child builds its own services from the same
settings (prover/api/ingest_process.py), so the child is the one that reads the escrow
on-chain (prover/accounts/chain_escrow.py) and refuses (prover/accounts/admission.py). Through
that child these tests prove:

* **the boundary is exact**: an escrow of N events (plus the headroom, plus a part of a unit,
  which buys nothing) admits N events and refuses the next with RESOURCE_EXHAUSTED, ErrorInfo
  PREPAID_LIMIT and the units left; an event of exactly the units left is admitted; a refusal
  stores nothing; every receipt returned verifies, chains, and is what the ledger lists;
* **a concurrent burst cannot overshoot**: unary calls and streams racing for a limit of N
  events (on PostgreSQL over two serving processes, two children, two escrow caches) store
  exactly N events and N events' units; every other request is refused PREPAID_LIMIT;
* **contract events move the limit without a restart**, long before the TTL (an hour): a
  deposit admits a refused user, a withdrawal request lowers what is left, in every child;
* **a chain that does not answer refuses, never admits** (UNAVAILABLE, nothing stored, the
  RPC URL in no error or log): a serve started against a silent node, the node going silent
  again while serving (once the cached read's TTL has passed), and the node gone; usage is
  admitted again once the node answers;
* **one follower per serving process**: the serving process stops its own event follower once
  its child runs, and the child's still moves the limit.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import IO, Any

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from nacl.signing import SigningKey
from sqlalchemy import Engine, create_engine, func, select

from prover.api.grpc_server import hash_api_key, new_api_key
from prover.chain import ChainClient
from prover.ledger.schema import account_epochs, events
from prover.ratecard import load_rate_card
from tests.anvil import free_port, running_anvil
from tests.api.test_grpc_hostile import database_url  # noqa: F401 - the fixture
from tests.api.test_ingest_process import _ingest_child
from tests.api.test_serve import server_env, wait_until  # noqa: F401 - the fixture
from tests.faults.test_close_races import alive, cmdline, descendants
from tests.postgres import temporary_database
from verifier.receipts import decode_receipt, verify_chain
from zkmeter.client import Client, usage_request
from zkmeter.v1 import meter_pb2

UNIT_PRICE = 1_000  # wei per unit
HEADROOM = 7  # ZKMETER_ESCROW_HEADROOM_UNITS: units of every escrow never billed
PRICES = load_rate_card().prices_for("gpt-4o")  # serve's rate card: the packaged default
UNITS = 10 * PRICES.input + 5 * PRICES.output  # one event: 10 input, 5 output tokens
PROBE = {"input_tokens": 10**6, "output_tokens": 0}  # more than any escrow here: refused
PAYER_KEY = bytes(range(1, 33))  # an X25519 public key nobody opens here


def event(key: str, user: str, **tokens: int) -> dict[str, Any]:
    """The fields of a usage request (:func:`usage_request`): UNITS units unless ``tokens``
    say otherwise."""
    counts = tokens or {"input_tokens": 10, "output_tokens": 5}
    return {"idempotency_key": key, "user_id": user, "model": "gpt-4o", **counts}


# --------------------------------------------------------------------------- the chain


@dataclass
class Chain:
    """A settlement deployed on anvil, serve's provider registered by the client's sender
    (anvil's first account, ZKMETER_OPERATOR_ADDRESS)."""

    client: ChainClient
    provider_id: bytes
    url: str

    def open_account(self, payer_index: int) -> tuple[str, bytes]:
        """Open the ETH account of anvil's account ``payer_index``: (payer, account id)."""
        payer = self.client.w3.eth.accounts[payer_index]
        self.client.open_account(self.provider_id, sender=payer)
        return payer, self.client.account_id_for(self.provider_id, payer=payer)

    def deposit_units(self, account_id: bytes, payer: str, units: int,
                      extra_wei: int = 0) -> None:
        self.client.deposit(account_id, units * UNIT_PRICE + extra_wei, sender=payer)


def deployed(url: str, signing_seed: str) -> Chain:
    """A fresh settlement on the node at ``url``, the provider of ``signing_seed`` in it."""
    client = ChainClient.connect(url)
    client.deploy()
    key = bytes(SigningKey(bytes.fromhex(signing_seed)).verify_key)
    client.register_provider(key, bond=10**18, unit_price=UNIT_PRICE, challenge_window=3_600)
    return Chain(client, client.provider_id_for(key), url)


def escrow_env(env: dict[str, str], chain: Chain, database: str, **extra: str) -> dict[str, str]:
    """serve's environment: ``env`` (tests/api/test_serve.py's server_env) on ``database``,
    the ingest process on, prepaid limits from ``chain``'s settlement; ``extra`` overrides
    (ZKMETER_* names without the prefix)."""
    return {**env,
            "ZKMETER_DATABASE_URL": database,
            "ZKMETER_INGEST_PROCESS": "true",
            "ZKMETER_RPC_URL": chain.url,
            "ZKMETER_CHAIN_ID": str(chain.client.chain_id),
            "ZKMETER_CONTRACT_ADDRESS": str(chain.client.settlement_address),
            "ZKMETER_OPERATOR_ADDRESS": chain.client.account,
            "ZKMETER_RPC_TIMEOUT_SECONDS": "2",
            "ZKMETER_ESCROW_HEADROOM_UNITS": str(HEADROOM),
            "ZKMETER_ESCROW_TTL_SECONDS": "3600",  # only the event follower moves a limit
            "ZKMETER_ESCROW_POLL_SECONDS": "0.2",
            **{f"ZKMETER_{name.upper()}": value for name, value in extra.items()}}


def anvil_pid(url: str) -> int:
    """The pid of the anvil node this test process started at ``url`` (tests/anvil.py)."""
    port = url.rsplit(":", 1)[1]
    found = [p for p in descendants(os.getpid())
             if "anvil" in cmdline(p) and f"--port {port} " in cmdline(p)]
    assert len(found) == 1, found
    return found[0]


def silence(pid: int) -> None:
    """Stop the node (SIGSTOP: it accepts connections and never answers) and wait until every
    one of its threads is stopped: the signal is sent at once but lands on each thread when
    the kernel next schedules it, and a thread still running could answer one more call."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + 10
    while True:
        states = []
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/stat") as stat:
                states.append(stat.read().rsplit(")", 1)[1].split()[0])
        if all(state in ("T", "t") for state in states):
            return
        assert time.monotonic() < deadline, f"anvil did not stop: {states}"
        time.sleep(0.01)


# ------------------------------------------------------------------------------ serve


@dataclass
class Served:
    """A running ``zkmeter serve``: its gRPC target and its ingest child's pid."""

    proc: subprocess.Popen[bytes]
    target: str
    child: int
    log: IO[bytes]

    def stderr(self) -> str:
        self.log.seek(0)
        return self.log.read().decode()


@contextmanager
def serving(*envs: dict[str, str]) -> Iterator[list[Served]]:
    """One ``zkmeter serve`` per environment, started together, until each is healthy and
    has its ingest child; then drained with SIGTERM: each must exit 0, its child must end,
    and its log hold no traceback and not the RPC URL (it may carry a node's API key)."""
    with ExitStack() as stack:
        started = []
        for env in envs:
            log = stack.enter_context(tempfile.TemporaryFile())
            proc = subprocess.Popen([sys.executable, "-m", "prover.cli", "serve"], env=env,
                                    stdout=subprocess.DEVNULL, stderr=log)
            stack.callback(_kill, proc)
            started.append((env, proc, log))
        servers = []
        for env, proc, log in started:
            wait_until(_healthy(env, proc))  # type: ignore[no-untyped-call]
            servers.append(Served(proc, env["ZKMETER_GRPC_BIND"], _ingest_child(proc.pid),
                                  log))
        yield servers
        for served in servers:
            served.proc.send_signal(signal.SIGTERM)
        for (env, _, _), served in zip(started, servers, strict=True):
            assert served.proc.wait(timeout=60) == 0, served.stderr()
            deadline = time.monotonic() + 30
            while alive(served.child):
                assert time.monotonic() < deadline, "the ingest child outlived its server"
                time.sleep(0.1)
            log_text = served.stderr()
            assert "ingest transactions in process" in log_text
            assert "Traceback" not in log_text, log_text
            assert env["ZKMETER_RPC_URL"] not in log_text


def _healthy(env: dict[str, str], proc: subprocess.Popen[bytes]) -> Callable[[], bool]:
    def check() -> bool:
        return proc.poll() is None and httpx.get(
            f"http://{env['ZKMETER_HTTP_BIND']}/healthz", timeout=2).status_code == 200
    return check


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def other_ports(env: dict[str, str]) -> dict[str, str]:
    """``env`` with listen addresses of its own: another serving process, same database."""
    return {**env, "ZKMETER_GRPC_BIND": f"127.0.0.1:{free_port()}",
            "ZKMETER_HTTP_BIND": f"127.0.0.1:{free_port()}",
            "ZKMETER_METRICS_BIND": f"127.0.0.1:{free_port()}"}


# ---------------------------------------------------------------------------- outcomes


def refusal(call: Callable[[], object]) -> grpc.RpcError:
    """The error of a call that must fail."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def prepaid_limit(err: grpc.RpcError) -> dict[str, str]:
    """The ErrorInfo metadata of a PREPAID_LIMIT refusal (fails unless it is one)."""
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (err.code(), err.details())
    status = rpc_status.from_call(err)
    assert status is not None
    infos = [d for d in status.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]
    assert len(infos) == 1, status.details
    info = error_details_pb2.ErrorInfo()
    infos[0].Unpack(info)
    assert (info.reason, info.domain) == ("PREPAID_LIMIT", "zkmeter.v1")
    return dict(info.metadata)


def limit(account_id: bytes, remaining: int) -> dict[str, str]:
    """The ErrorInfo metadata of a refusal of ``account_id`` with ``remaining`` units left."""
    return {"account_id": "0x" + account_id.hex(), "remaining_units": str(remaining)}


def remaining_units(zk: Client, user: str) -> int:
    """What the child says is left of the user's account: a probe larger than any escrow
    here is refused, stores nothing, and names the units left."""
    return int(prepaid_limit(refusal(lambda: zk.record_usage(**event(
        "probe", user, **PROBE))))["remaining_units"])


def has_left(zk: Client, user: str, units: int) -> Callable[[], bool]:
    """Whether the child of ``zk``'s server says ``units`` are left of the user's account."""
    return lambda: remaining_units(zk, user) == units


def eventually(check: Callable[[], bool], what: str, timeout: float = 30.0) -> float:
    """Wait until ``check()``; the seconds it took."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, what
        time.sleep(0.05)
    return time.monotonic() - start


def verified(zk: Client, returned: list[meter_pb2.RecordUsageResponse],
             provider_id: bytes) -> None:
    """Every receipt returned verifies and chains (each user's: signed by ``provider_id``,
    seq 1..n, prev hashes, running totals), and they are exactly what the ledger lists."""
    receipts = [decode_receipt(r.receipt.encoded + r.receipt.signature) for r in returned
                if not r.replayed]
    for user in sorted({r.user_id for r in receipts}):
        mine = [r for r in receipts if r.user_id == user]
        verify_chain(mine, provider_id=provider_id)
        listed = zk.list_receipts(user)
        assert sorted(r.receipt_hash for r in listed) == sorted(r.hash() for r in mine)


class Ledger:
    """Counts read straight from the database serve's child writes."""

    def __init__(self, url: str) -> None:
        self.engine: Engine = create_engine(url)

    def events_of(self, users: list[str]) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(events)
                                    .where(events.c.user_id.in_(users))).scalar_one())

    def units_of(self, account_id: bytes) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(
                select(func.coalesce(func.sum(account_epochs.c.units), 0))
                .where(account_epochs.c.account_id == account_id)).scalar_one())


def enroll_account(zk: Client, payer: str, account_id: bytes, users: list[str]) -> None:
    """Register the payer's ETH account in serve's database, as `zkmeter accounts register`
    would (its id must be the contract's: same operator, provider key, payer and asset), and
    put ``users`` under it."""
    account = zk.register_account(payer=bytes.fromhex(payer[2:]), asset=bytes(20),
                                  payer_x25519_public_key=PAYER_KEY)
    assert account.account_id == account_id
    for user in users:
        zk.register_user(user, account_id)


# ------------------------------------------------------- one serve per database, shared


@dataclass
class Service:
    """The serving processes the attacks share (each attack opens its own account)."""

    chain: Chain
    servers: list[Served]
    api_key: str
    provider_id: bytes
    ledger: Ledger
    database: str

    @property
    def targets(self) -> list[str]:
        return [s.target for s in self.servers]


@pytest.fixture(scope="module", params=["sqlite",
                                        pytest.param("postgresql", marks=pytest.mark.postgres)])
def service(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
            anvil_url: str) -> Iterator[Service]:
    """A fresh settlement on anvil and ``zkmeter serve`` (ingest process on) on a fresh
    database: one process on SQLite, two sharing the database on PostgreSQL (two children,
    two escrow caches). Module-scoped, unlike tests/api/test_serve.py's server_env and
    test_grpc_hostile's database_url that it follows: a serve start (two interpreters, each
    migrating and loading the tokenizer) takes 5 to 15 s on a 2-core machine."""
    with ExitStack() as stack:
        if request.param == "sqlite":
            database = f"sqlite:///{tmp_path_factory.mktemp('escrow') / 'zk.sqlite'}"
        else:
            database = stack.enter_context(temporary_database("zk_escrow"))
        key = new_api_key()
        seed = "e1" + "".join(f"{i:02x}" for i in range(31))
        base = {k: v for k, v in os.environ.items() if not k.startswith("ZKMETER_")}
        base.update({"ZKMETER_SIGNING_KEY": seed,
                     "ZKMETER_API_KEY_HASHES": json.dumps({hash_api_key(key): "operator"}),
                     "ZKMETER_SHUTDOWN_GRACE_SECONDS": "2", "ZKMETER_PROOF_WORKERS": "1"})
        chain = deployed(anvil_url, seed)
        env = other_ports(escrow_env(base, chain, database))
        envs = [env] if request.param == "sqlite" else [env, other_ports(env)]
        servers = stack.enter_context(serving(*envs))
        ledger = Ledger(database)
        stack.callback(ledger.engine.dispose)
        yield Service(chain, servers, key,
                      bytes(SigningKey(bytes.fromhex(seed)).verify_key), ledger, database)


# ------------------------------------------------------------------------------ attacks


def test_the_child_refuses_exactly_at_the_boundary(service: Service) -> None:
    s = service
    n, rest = 6, 3 * PRICES.input  # rest: what 3 input tokens cost, less than one event
    payer, account_id = s.chain.open_account(1)
    s.chain.deposit_units(account_id, payer, n * UNITS + rest + HEADROOM,
                          extra_wei=UNIT_PRICE - 1)  # a part of a unit buys nothing
    users = ["a0", "a1", "a2"]
    with Client(s.targets[0], api_key=s.api_key) as zk:
        enroll_account(zk, payer, account_id, users)
        stored = [zk.record_usage(**event(f"a{i}", users[i % 2])) for i in range(n)]
        assert [r.receipt.units for r in stored] == [UNITS] * n
        over = refusal(lambda: zk.record_usage(**event("over", "a2")))
        assert prepaid_limit(over) == limit(account_id, rest)
        assert over.details() == (f"billing account 0x{account_id.hex()} has {rest} units "
                                  f"of prepaid escrow left; this event needs {UNITS}")
        # nothing stored for the refusal: no event, no receipt under its key, no units
        assert s.ledger.events_of(users) == n and s.ledger.units_of(account_id) == n * UNITS
        assert zk.list_receipts("a2", idempotency_key="over") == []
        exact = zk.record_usage(**event("rest", "a2", input_tokens=3, output_tokens=0))
        assert exact.receipt.units == rest and exact.receipt.sequence == 1  # all that was left
        one = refusal(lambda: zk.record_usage(**event("one", "a2", input_tokens=1,
                                                      output_tokens=0)))
        assert prepaid_limit(one) == limit(account_id, 0)
        again = zk.record_usage(**event("a0", "a0"))  # a retry of a stored event replays
        assert again.replayed and again.receipt.receipt_hash == stored[0].receipt.receipt_hash
        assert s.ledger.events_of(users) == n + 1
        assert s.ledger.units_of(account_id) == n * UNITS + rest
        verified(zk, [*stored, exact], s.provider_id)


def test_a_concurrent_burst_cannot_overshoot_the_escrow(service: Service) -> None:
    """Exactly N of a limit of N events, not merely at most N: every event costs UNITS and
    the escrow pays exactly N of them, the child admits each batch under the account's lock
    (PostgreSQL ``FOR UPDATE``, SQLite ``BEGIN IMMEDIATE``) after reading the units already
    committed, so an event is refused only once N are stored, and never after N; the chain
    answers throughout, so no request is refused UNAVAILABLE instead."""
    s = service
    n = 20
    payer, account_id = s.chain.open_account(2)
    s.chain.deposit_units(account_id, payer, n * UNITS + HEADROOM)
    users = ["b0", "b1", "b2"]
    with Client(s.targets[0], api_key=s.api_key) as zk:
        enroll_account(zk, payer, account_id, users)
    unary, streams, per_thread = 4, 2, 12  # 72 requests for 20 places
    barrier = threading.Barrier(unary + streams)
    spans: list[tuple[float, float]] = []

    def burst(thread: int) -> list[meter_pb2.RecordUsageResponse | grpc.RpcError]:
        target = s.targets[thread % len(s.targets)]  # PostgreSQL: both serving processes
        requests = [event(f"b{thread}-{i}", users[(thread + i) % 3]) for i in range(per_thread)]
        out: list[meter_pb2.RecordUsageResponse | grpc.RpcError] = []
        with Client(target, api_key=s.api_key) as zk:
            zk.list_receipts(users[0])  # connected before the race starts
            barrier.wait()
            start = time.monotonic()
            if thread < unary:
                for fields in requests:
                    try:
                        out.append(zk.record_usage(**fields))
                    except grpc.RpcError as exc:
                        out.append(exc)
            else:
                out = list(zk.record_usage_stream(usage_request(**f) for f in requests))
            spans.append((start, time.monotonic()))
        return out

    with ThreadPoolExecutor(unary + streams) as pool:
        outcomes = [o for result in pool.map(burst, range(unary + streams)) for o in result]
    assert max(a for a, _ in spans) < min(b for _, b in spans), "the bursts did not overlap"
    stored = [o for o in outcomes
              if isinstance(o, meter_pb2.RecordUsageResponse) and o.HasField("receipt")]
    unary_refused = [o for o in outcomes if isinstance(o, grpc.RpcError)]
    stream_refused = [o.error for o in outcomes
                      if isinstance(o, meter_pb2.RecordUsageResponse) and o.HasField("error")]
    assert len(outcomes) == (unary + streams) * per_thread
    assert len(stored) == n and not any(r.replayed for r in stored)
    assert len(unary_refused) + len(stream_refused) == len(outcomes) - n
    nothing_left = (f"billing account 0x{account_id.hex()} has 0 units of prepaid escrow "
                    f"left; this event needs {UNITS}")
    for err in unary_refused:
        assert prepaid_limit(err) == limit(account_id, 0)
        assert err.details() == nothing_left
    for item in stream_refused:  # a stream item carries what a unary call's ErrorInfo does
        assert item.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
        assert item.message == nothing_left
        assert (item.reason, dict(item.metadata)) == ("PREPAID_LIMIT", limit(account_id, 0))
    assert s.ledger.events_of(users) == n
    assert s.ledger.units_of(account_id) == n * UNITS  # the escrow pays n * UNITS + HEADROOM
    with Client(s.targets[0], api_key=s.api_key) as zk:
        verified(zk, stored, s.provider_id)
        for target in s.targets:  # and every child agrees nothing is left
            with Client(target, api_key=s.api_key) as other:
                assert remaining_units(other, "b0") == 0


def test_contract_events_move_the_limit_in_the_child(service: Service) -> None:
    s = service
    payer, account_id = s.chain.open_account(3)
    s.chain.deposit_units(account_id, payer, UNITS + HEADROOM)
    with ExitStack() as stack:
        clients = [stack.enter_context(Client(t, api_key=s.api_key)) for t in s.targets]
        zk = clients[0]
        enroll_account(zk, payer, account_id, ["c0"])
        first = zk.record_usage(**event("c1", "c0"))
        refused = refusal(lambda: zk.record_usage(**event("c2", "c0")))
        assert prepaid_limit(refused) == limit(account_id, 0)
        for other in clients:  # every child has read (and cached, for an hour) 0 left
            assert remaining_units(other, "c0") == 0
        s.chain.deposit_units(account_id, payer, 2 * UNITS)
        for other in clients:  # the follower drops the entry; the TTL (3600 s) cannot have
            eventually(has_left(other, "c0", 2 * UNITS),
                       "the child's event follower did not see the deposit")
        second = zk.record_usage(**event("c2", "c0"))  # the refused request, now admitted
        assert second.receipt.sequence == 2 and not second.replayed
        # a withdrawal request lowers what may still be billed: UNITS left, half asked back
        s.chain.client.request_withdrawal(account_id, UNITS // 2 * UNIT_PRICE, sender=payer)
        for other in clients:
            eventually(has_left(other, "c0", UNITS - UNITS // 2),
                       "the child's event follower did not see the withdrawal request")
        lowered = refusal(lambda: clients[-1].record_usage(**event("c3", "c0")))
        assert prepaid_limit(lowered) == limit(account_id, UNITS - UNITS // 2)
        assert s.ledger.events_of(["c0"]) == 2 and s.ledger.units_of(account_id) == 2 * UNITS
        verified(zk, [first, second], s.provider_id)


# ------------------------------------------------------------ a chain that does not answer


def test_a_chain_that_does_not_answer_refuses_with_unavailable(
        server_env: tuple[dict[str, str], str, int, int],  # noqa: F811
        database_url: str) -> None:  # noqa: F811
    """Its own anvil node, stopped (SIGSTOP: it accepts connections and never answers, like
    tests/contracts/test_prepaid_limits.py's silent_rpc) before serve starts: serve starts
    anyway (prover/accounts/chain_escrow.py checks the chain when it answers) and refuses;
    continued, it admits; silent again, it refuses once the cached read's TTL has passed;
    gone (connection refused), it refuses."""
    env, key, *_ = server_env
    ttl = 1.0
    with running_anvil() as url:
        chain = deployed(url, env["ZKMETER_SIGNING_KEY"])
        payer, account_id = chain.open_account(1)
        chain.deposit_units(account_id, payer, 10 * UNITS + HEADROOM)
        node = anvil_pid(url)
        served_env = escrow_env(env, chain, database_url, rpc_timeout_seconds="0.5",
                                escrow_ttl_seconds=str(ttl))
        ledger = Ledger(database_url)
        silence(node)
        try:
            with serving(served_env) as (served,), Client(served.target,
                                                          api_key=key) as zk:
                enroll_account(zk, payer, account_id, ["d0"])

                def unavailable(key: str) -> None:
                    err = refusal(lambda: zk.record_usage(**event(key, "d0")))
                    assert err.code() == grpc.StatusCode.UNAVAILABLE, err.details()
                    assert err.details().startswith(
                        f"the escrow of billing account 0x{account_id.hex()} ")
                    assert "usage refused" in err.details() and url not in err.details()
                    item = next(zk.record_usage_stream([usage_request(**event(key, "d0"))]))
                    assert item.error.code == grpc.StatusCode.UNAVAILABLE.value[0]
                    assert url not in item.error.message

                unavailable("d1")  # silent since start-up
                assert ledger.events_of(["d0"]) == 0
                os.kill(node, signal.SIGCONT)
                admitted: list[meter_pb2.RecordUsageResponse] = []

                def admit() -> bool:
                    try:
                        admitted.append(zk.record_usage(**event("d1", "d0")))
                    except grpc.RpcError as exc:  # until the child asks the chain again
                        assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc.details()
                    return bool(admitted)

                eventually(admit, "usage was not admitted once the chain answered")
                assert admitted[0].receipt.sequence == 1  # the refused key stored nothing
                silence(node)  # silent while serving
                time.sleep(ttl + 0.2)  # until then the cached read admits (by design)
                unavailable("d2")
                os.kill(node, signal.SIGCONT)
                os.kill(node, signal.SIGTERM)  # gone: connections refused
                eventually(lambda: not alive(node), "anvil did not stop", timeout=10)
                time.sleep(ttl + 0.2)
                unavailable("d3")
                assert ledger.events_of(["d0"]) == 1
                assert ledger.units_of(account_id) == UNITS
                log_text = served.stderr()
            assert "escrow: cannot check the chain at start (" in log_text
            assert f"escrow: reading billing account 0x{account_id.hex()} failed" in log_text
        finally:
            if alive(node):
                os.kill(node, signal.SIGCONT)  # running_anvil stops it
            ledger.engine.dispose()


# ------------------------------------------------------- one follower per serving process


def test_the_serving_process_leaves_following_the_chain_to_its_child(
        anvil_url: str, tmp_path: Any) -> None:
    """With the ingest process the child admits usage and follows the contract's events; the
    serving process stops its own follower (one process polling the node, not two) and still
    serves: a deposit made while serving admits a refused user through the child."""
    from prover.app import build_services
    from prover.config import Settings
    from prover.demo import BackgroundServer

    seed = "e1" + "".join(f"{i:02x}" for i in range(31))
    chain = deployed(anvil_url, seed)
    payer, account_id = chain.open_account(4)
    chain.deposit_units(account_id, payer, UNITS + HEADROOM)
    key = new_api_key()
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'zk.sqlite'}", signing_key=seed,
        rpc_url=anvil_url, chain_id=chain.client.chain_id,
        contract_address=chain.client.settlement_address,
        operator_address=chain.client.account, escrow_headroom_units=HEADROOM,
        escrow_ttl_seconds=3600, escrow_poll_seconds=0.2, ingest_process=True,
        api_key_hashes={hash_api_key(key): "operator"}, grpc_bind="127.0.0.1:0",
        http_bind="127.0.0.1:0", metrics_bind="127.0.0.1:0", shutdown_grace_seconds=2)
    services = build_services(settings)
    escrow = services.chain_escrow
    assert escrow is not None
    follower = escrow._thread
    assert follower is not None and follower.is_alive()  # following until serve starts
    server = BackgroundServer(services)
    try:
        follower.join(timeout=10)  # the child follows instead
        assert not follower.is_alive() and escrow._thread is None
        with Client(f"127.0.0.1:{server.endpoints.grpc_port}", api_key=key) as zk:
            enroll_account(zk, payer, account_id, ["d0"])
            zk.record_usage(**event("d1", "d0"))
            assert prepaid_limit(refusal(lambda: zk.record_usage(**event("d2", "d0")))) \
                == limit(account_id, 0)
            chain.deposit_units(account_id, payer, UNITS)
            eventually(has_left(zk, "d0", UNITS), "the child's follower did not see it")
            assert zk.record_usage(**event("d2", "d0")).receipt.sequence == 2
    finally:
        server.stop()
        services.close()
