"""Prepaid limits from the escrow on-chain (prover/accounts/chain_escrow.py), on py-evm and
anvil, with the ledger on SQLite and PostgreSQL: usage refuses exactly at the boundary of the
account's unreserved escrow (the refusal names the remaining units and stores nothing), a
concurrent burst cannot overshoot it, the headroom is kept back, contract events raise and
lower the limit without waiting for the TTL, an account not open on-chain has no escrow, and a
chain that does not answer refuses (UNAVAILABLE), never admits."""

import os
import signal
import socket
import threading
import time
from dataclasses import dataclass

import grpc
import pytest
import requests
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import func, select
from web3 import Web3

from prover.accounts.admission import AccountGate
from prover.accounts.chain_escrow import ChainEscrow, connect_reader
from prover.api.grpc_server import hash_api_key, new_api_key
from prover.app import build_services
from prover.chain import ChainClient
from prover.config import Settings
from prover.errors import ConfigError, EscrowUnavailableError, PrepaidLimitError
from prover.ledger import Ledger
from prover.ledger.schema import account_epochs, events, user_states
from prover.metering import Meter, UsageRequest
from prover.ratecard import load_rate_card
from tests.accounts import enroll, overlapping_bursts, registry
from tests.anvil import free_port, running_anvil
from tests.api.grpc_harness import ServerThread
from tests.contracts.test_ingest_process_escrow import UNITS as SERVE_UNITS
from tests.contracts.test_ingest_process_escrow import anvil_pid, deployed, silence
from tests.metering.conftest import (  # noqa: F401 - fixtures
    PROVIDER_SEED,
    db_url,
    pg_url,
    rate_card,
    signing_key,
)
from verifier.receipts import verify_chain
from zkmeter.client import Client

UNIT_PRICE = 1_000  # wei per unit
UNITS = 3 * 10 + 10 * 5  # gpt-4o: 10 input, 5 output (the test rate card)
USERS = ("u0", "u1", "u2")


def usage(key: str, user: str, units: int | None = None) -> UsageRequest:
    """An event of UNITS units, or of exactly ``units`` (cached input costs 1 unit a token)."""
    if units is None:
        return UsageRequest(key, user, "gpt-4o", input_tokens=10, output_tokens=5)
    return UsageRequest(key, user, "gpt-4o", input_tokens=units, output_tokens=0,
                        cached_input_tokens=units)


def address_bytes(address: str) -> bytes:
    return bytes.fromhex(address[2:])


@dataclass
class Chain:
    """A deployed settlement, the meter's provider registered, one ETH account opened."""

    client: ChainClient
    provider_id: bytes
    account_id: bytes
    payer: str

    def deposit_units(self, units: int, extra_wei: int = 0) -> None:
        self.client.deposit(self.account_id, units * UNIT_PRICE + extra_wei, sender=self.payer)

    def reader(self) -> ChainClient:
        """A read-only client the way serve builds one (JSON-RPC with a timeout), or the
        embedded chain's own Web3."""
        provider = self.client.w3.provider
        address = self.client.settlement.address
        if isinstance(provider, Web3.HTTPProvider):
            return connect_reader(str(provider.endpoint_uri), address, timeout_seconds=10)
        return ChainClient(self.client.w3, account=self.client.account, settlement=address)

    def escrow(self, ttl_seconds: float = 3_600) -> ChainEscrow:
        return ChainEscrow(self.reader(), ttl_seconds=ttl_seconds)


@pytest.fixture
def chain(client, signing_key) -> Chain:  # noqa: F811
    key = bytes(signing_key.verify_key)
    client.register_provider(key, bond=10**18, unit_price=UNIT_PRICE, challenge_window=3_600)
    provider_id = client.provider_id_for(key)
    payer = client.w3.eth.accounts[1]
    client.open_account(provider_id, sender=payer)
    return Chain(client, provider_id, client.account_id_for(provider_id, payer=payer), payer)


@pytest.fixture
def make_meter(db_url, signing_key, rate_card, chain):  # noqa: F811
    """Meters on the test's database whose users u0..u2 belong to the chain's account."""
    made = []

    def factory(escrow, headroom_units: int = 0) -> Meter:
        ledger = Ledger.from_url(db_url, provider_id=bytes(signing_key.verify_key),
                                 run_migrations=False)
        if not made:
            account = enroll(ledger.engine, ledger.provider_id, USERS,
                             payer=address_bytes(chain.payer),
                             operator=address_bytes(chain.client.account))
            assert account == chain.account_id  # the meter's account id is the contract's
        ledger.gate = AccountGate(escrow=escrow, headroom_units=headroom_units)
        meter = Meter(ledger=ledger, signing_key=signing_key, rate_card=rate_card)
        made.append(meter)
        return meter

    yield factory
    for meter in made:
        meter.ledger.dispose()


def count(meter: Meter, table) -> int:
    with meter.ledger.engine.begin() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def users_with_usage(meter: Meter) -> int:
    """User-state rows with an event (PostgreSQL pre-creates seq-0 rows to lock them)."""
    with meter.ledger.engine.begin() as conn:
        return int(conn.execute(select(func.count()).select_from(user_states)
                                .where(user_states.c.seq > 0)).scalar_one())


def account_units(meter: Meter, account_id: bytes) -> int:
    with meter.ledger.engine.begin() as conn:
        return int(conn.execute(select(func.coalesce(func.sum(account_epochs.c.units), 0))
                                .where(account_epochs.c.account_id == account_id)).scalar_one())


def test_limit_refuses_exactly_at_the_boundary_and_stores_nothing(chain, make_meter):
    chain.deposit_units(3 * UNITS, extra_wei=UNIT_PRICE - 1)  # a part of a unit buys nothing
    meter = make_meter(chain.escrow())
    meter.record(usage("k1", "u0"))
    meter.record(usage("k2", "u0"))
    with pytest.raises(PrepaidLimitError) as caught:  # N + 1 units, N left
        meter.record(usage("k3", "u1", UNITS + 1))
    assert caught.value.remaining_units == UNITS and caught.value.account_id == chain.account_id
    assert str(caught.value) == (f"billing account 0x{chain.account_id.hex()} has {UNITS} units "
                                 f"of prepaid escrow left; this event needs {UNITS + 1}")
    # nothing stored for the refusal: no event, no usage of u1, no units counted
    assert count(meter, events) == 2 and users_with_usage(meter) == 1
    assert account_units(meter, chain.account_id) == 2 * UNITS
    assert meter.ledger.receipts(1, "u1") == []
    stored = meter.record(usage("k4", "u1", UNITS))  # exactly N: admitted
    assert stored.receipt.units == UNITS
    with pytest.raises(PrepaidLimitError, match=r"has 0 units of prepaid escrow left; "
                                                r"this event needs 1$"):
        meter.record(usage("k5", "u2", 1))
    assert count(meter, events) == 3 and account_units(meter, chain.account_id) == 3 * UNITS
    assert meter.record(usage("k4", "u1", UNITS)).replayed  # a retry of a stored event works
    for user in ("u0", "u1"):
        verify_chain(meter.ledger.receipts(1, user), provider_id=meter.provider_id)


def test_headroom_is_kept_back(chain, make_meter):
    chain.deposit_units(2 * UNITS + 5)
    meter = make_meter(chain.escrow(), headroom_units=5)
    out = meter.record_batch([usage("k1", "u0"), usage("k2", "u1"), usage("k3", "u2", 1)])
    assert [type(o).__name__ for o in out] == ["Stored", "Stored", "PrepaidLimitError"]
    assert out[2].remaining_units == 0
    assert count(meter, events) == 2


def test_events_move_the_limit_without_waiting_for_the_ttl(chain, make_meter):
    chain.deposit_units(UNITS)
    escrow = chain.escrow(ttl_seconds=3_600)
    meter = make_meter(escrow)
    meter.record(usage("k1", "u0"))
    with pytest.raises(PrepaidLimitError, match="0 units"):
        meter.record(usage("k2", "u0"))
    chain.deposit_units(2 * UNITS)
    with pytest.raises(PrepaidLimitError, match="0 units"):  # the cached read, until the event
        meter.record(usage("k2", "u0"))
    assert escrow.poll() == {chain.account_id}
    assert meter.record(usage("k2", "u0")).receipt.seq == 2
    # a withdrawal request lowers what may still be billed: UNITS left, half of it asked back
    chain.client.request_withdrawal(chain.account_id, UNITS // 2 * UNIT_PRICE, sender=chain.payer)
    assert escrow.poll() == {chain.account_id}
    with pytest.raises(PrepaidLimitError) as caught:
        meter.record(usage("k3", "u1"))
    assert caught.value.remaining_units == UNITS // 2
    assert escrow.poll() == set()  # nothing new
    assert count(meter, events) == 2


def test_a_submitted_epoch_moves_from_unsettled_to_reserved(chain, make_meter):
    """After EpochSubmitted the chain reserves the epoch's payment and lastEpochId covers it:
    the meter stops counting that epoch itself, so the limit neither doubles nor drops."""
    chain.deposit_units(3 * UNITS)
    escrow = chain.escrow()
    meter = make_meter(escrow)
    meter.record(usage("k1", "u0"))
    meter.record(usage("k2", "u1"))
    meter.ledger.close_epoch(1, next_rate_card_hash=meter.rate_card_hash, next_bit_size=32,
                             epoch_seconds=60)
    from tests.contracts.helpers import make_epoch, submit

    submit(chain.client, make_epoch(chain.client, chain.account_id, 1, [UNITS, UNITS]))
    assert escrow.poll() == {chain.account_id}
    assert escrow.view(chain.account_id).last_epoch_id == 1
    assert meter.record(usage("k3", "u0")).receipt.epoch_id == 2  # the last UNITS
    with pytest.raises(PrepaidLimitError, match="0 units"):
        meter.record(usage("k4", "u2", 1))


def test_an_account_not_open_on_chain_has_no_escrow(chain, make_meter):
    meter = make_meter(chain.escrow())
    reg = registry(meter.ledger.engine, meter.provider_id, address_bytes(chain.client.account))
    stranger = chain.client.w3.eth.accounts[2]
    account = reg.register_account(payer=address_bytes(stranger), asset=bytes(20),
                                   payer_x25519_public_key=bytes(range(1, 33)))
    reg.register_user("s0", account.account_id)
    with pytest.raises(PrepaidLimitError) as caught:
        meter.record(usage("k1", "s0", 1))
    assert str(caught.value) == (f"billing account 0x{account.account_id.hex()} is not open "
                                 "on-chain (no escrow); usage refused")
    assert caught.value.remaining_units == 0
    assert count(meter, events) == 0 and users_with_usage(meter) == 0
    chain.client.open_account(chain.provider_id, sender=stranger)
    chain.client.deposit(account.account_id, UNITS * UNIT_PRICE, sender=stranger)
    assert meter.ledger.gate.escrow.poll() == {account.account_id}
    assert meter.record(usage("k1", "s0", UNITS)).receipt.units == UNITS


def test_concurrent_burst_cannot_overshoot_the_escrow(chain, make_meter):
    limit = 25
    chain.deposit_units(limit * UNITS)
    meters = [make_meter(chain.escrow()) for _ in range(4)]  # four servers, four caches
    outcomes = overlapping_bursts(  # 20 events each, 80 in all, 25 fit
        meters, lambda m, n: usage(f"m{m}-{n}", USERS[n % 3]))
    stored = [o for o in outcomes if not isinstance(o, Exception)]
    refused = [o for o in outcomes if isinstance(o, PrepaidLimitError)]
    assert len(stored) == limit and len(refused) == 80 - limit
    assert account_units(meters[0], chain.account_id) == limit * UNITS
    assert count(meters[0], events) == limit
    for user in USERS:
        verify_chain(meters[0].ledger.receipts(1, user), provider_id=meters[0].provider_id)


# ------------------------------------------------------------ a chain that does not answer


@pytest.fixture
def silent_rpc():
    """A JSON-RPC URL whose server accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(timeout=5)
    for conn in accepted:
        conn.close()
    server.close()


@pytest.mark.parametrize("rpc", ["refused", "silent"])
def test_an_unanswering_chain_refuses_with_unavailable(rpc, silent_rpc, db_url, tmp_path,  # noqa: F811
                                                       signing_key):  # noqa: F811
    url = silent_rpc if rpc == "silent" else f"http://127.0.0.1:{free_port()}"
    settings = Settings(database_url=db_url, signing_key=PROVIDER_SEED.hex(), rpc_url=url,
                        rpc_timeout_seconds=0.5, contract_address="0x" + "42" * 20)
    services = build_services(settings)  # starts: the chain is checked when it answers
    try:
        assert isinstance(services.meter.ledger.gate.escrow, ChainEscrow)
        account = enroll(services.meter.ledger.engine, services.meter.provider_id, ["u0"])
        with pytest.raises(EscrowUnavailableError, match=r"could not be read from the chain "
                                                         r"\((ReadTimeout|ConnectionError)\)"):
            services.meter.record(usage("k1", "u0"))
        key = new_api_key()
        server = ServerThread(services, api_key_hashes={hash_api_key(key): "operator"})
        try:
            with Client(server.target, api_key=key) as zk, pytest.raises(grpc.RpcError) as err:
                zk.record_usage(idempotency_key="k1", user_id="u0", model="gpt-4o",
                                input_tokens=10, output_tokens=5)
        finally:
            server.stop()
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert f"billing account 0x{account.hex()}" in err.value.details()
        assert url not in err.value.details()  # the URL may carry a hosted node's API key
        with services.meter.ledger.engine.begin() as conn:
            assert conn.execute(select(func.count()).select_from(events)).scalar_one() == 0
    finally:
        services.close()


def test_after_a_failed_read_the_chain_is_not_asked_for_retry_seconds(silent_rpc):
    now = [0.0]
    reader = connect_reader(silent_rpc, "0x" + "42" * 20, timeout_seconds=0.3)
    escrow = ChainEscrow(reader, ttl_seconds=3_600, retry_seconds=5, clock=lambda: now[0])
    account, other = bytes(range(32)), bytes(32)
    with pytest.raises(EscrowUnavailableError, match=r"could not be read from the chain "
                                                     r"\((ReadTimeout|ConnectionError)\)"):
        escrow.view(account)
    now[0] = 4.9  # refused at once, without a chain call, for every account
    for account_id in (account, other):
        with pytest.raises(EscrowUnavailableError, match="did not answer a moment ago") as err:
            escrow.view(account_id)
        assert err.value.account_id == account_id
    now[0] = 5.0  # asked again
    with pytest.raises(EscrowUnavailableError, match="could not be read from the chain"):
        escrow.view(other)
    with pytest.raises(requests.exceptions.Timeout):  # the follower raises what web3 raises
        escrow.poll()


# ------------------------------------------------------------------------- serve's wiring


def test_build_services_reads_the_escrow_on_chain(anvil_client, tmp_path, signing_key):  # noqa: F811
    c = anvil_client
    key = bytes(signing_key.verify_key)
    c.register_provider(key, bond=10**18, unit_price=UNIT_PRICE, challenge_window=3_600)
    provider_id = c.provider_id_for(key)
    payer = c.w3.eth.accounts[1]
    c.open_account(provider_id, sender=payer)
    account_id = c.account_id_for(provider_id, payer=payer)
    one = load_rate_card().prices_for("gpt-4o").input  # units of one input token, by default
    c.deposit(account_id, (one + 7) * UNIT_PRICE, sender=payer)
    url = str(c.w3.provider.endpoint_uri)
    base = {"database_url": f"sqlite:///{tmp_path / 'zk.sqlite'}",
            "signing_key": PROVIDER_SEED.hex(), "rpc_url": url, "chain_id": c.chain_id,
            "contract_address": c.settlement.address, "operator_address": c.account,
            "escrow_headroom_units": 7, "escrow_ttl_seconds": 3_600,
            "escrow_poll_seconds": 0.1}
    with pytest.raises(ConfigError, match="chain id"):
        build_services(Settings(**{**base, "chain_id": 1}))
    with pytest.raises(ConfigError, match="does not run ZkMeterSettlement"):
        build_services(Settings(**{**base, "contract_address": c.account}))
    services = build_services(Settings(**base))
    try:
        escrow = services.chain_escrow
        assert isinstance(escrow, ChainEscrow) and services.meter.ledger.gate.escrow is escrow
        assert services.meter.ledger.gate.headroom_units == 7
        account = services.accounts.register_account(
            payer=address_bytes(payer), asset=bytes(20),
            payer_x25519_public_key=bytes(range(1, 33)))
        assert account.account_id == account_id
        services.accounts.register_user("u0", account_id)
        api_key = new_api_key()
        server = ServerThread(services, api_key_hashes={hash_api_key(api_key): "operator"})
        try:
            with Client(server.target, api_key=api_key) as zk:
                zk.record_usage(idempotency_key="k1", user_id="u0", model="gpt-4o",
                                input_tokens=1, output_tokens=0)
                with pytest.raises(grpc.RpcError) as err:
                    zk.record_usage(idempotency_key="k2", user_id="u0", model="gpt-4o",
                                    input_tokens=1, output_tokens=0)
                assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "has 0 units of prepaid escrow left" in err.value.details()
                info = error_details_pb2.ErrorInfo()
                rpc_status.from_call(err.value).details[0].Unpack(info)
                assert info.reason == "PREPAID_LIMIT"
                assert dict(info.metadata) == {"account_id": "0x" + account_id.hex(),
                                               "remaining_units": "0"}
                c.deposit(account_id, one * UNIT_PRICE, sender=payer)
                # the follower thread (every ZKMETER_ESCROW_POLL_SECONDS) drops the entry;
                # the TTL (an hour) cannot have
                deadline = time.monotonic() + 60
                while escrow.view(account_id).available_units != 2 * one + 7:
                    assert time.monotonic() < deadline, "the event follower dropped nothing"
                    time.sleep(0.05)
                assert zk.record_usage(idempotency_key="k2", user_id="u0", model="gpt-4o",
                                       input_tokens=1, output_tokens=0).receipt.units == one
        finally:
            server.stop()
    finally:
        services.close()
    assert escrow._thread is None  # closing the services stopped the follower


WRONG_CHAIN = "the chain at ZKMETER_RPC_URL has chain id 31337, ZKMETER_CHAIN_ID is 1"


@pytest.mark.parametrize(("wrong", "poll_seconds", "reason"), [
    # the first read after the node answers runs the check (the follower waits an hour)
    ({"chain_id": 1}, 3600, WRONG_CHAIN),
    ({"contract_address": "token"}, 3600, "does not run ZkMeterSettlement on the chain"),
    # the event follower polls first and runs it
    ({"chain_id": 1}, 0.1, WRONG_CHAIN),
    # an address without code: a node still syncing, checked again (not a verdict)
    ({"contract_address": "operator"}, 3600,
     r"\(ChainNotReadyError\)|the chain did not answer a moment ago"),
    ({}, 3600, None),  # the chain configured: admitted once it answers
])
def test_a_chain_silent_at_start_is_checked_before_its_first_read(tmp_path, wrong,
                                                                  poll_seconds, reason):
    """A node that does not answer at start cannot be checked then (chain id, the contract's
    code), so serve starts; the check runs on the node's first answer, before any read is
    used: another chain or another contract refuses every read and every epoch close's
    read for good, never admits."""
    with running_anvil() as url:
        chain = deployed(url, PROVIDER_SEED.hex())
        payer, account_id = chain.open_account(1)
        chain.deposit_units(account_id, payer, 10 * SERVE_UNITS)  # serve's default rate card
        where = wrong.get("contract_address")
        if where == "token":  # a contract, not the settlement
            contract = chain.client.deploy_test_token()
        elif where == "operator":  # an address without code
            contract = chain.client.account
        else:
            contract = chain.client.settlement_address
        settings = Settings(database_url=f"sqlite:///{tmp_path / 'zk.sqlite'}",
                            signing_key=PROVIDER_SEED.hex(), rpc_url=url,
                            chain_id=wrong.get("chain_id", chain.client.chain_id),
                            contract_address=contract, operator_address=chain.client.account,
                            rpc_timeout_seconds=0.5, escrow_poll_seconds=poll_seconds)
        node = anvil_pid(url)
        silence(node)  # accepts connections, never answers
        try:
            services = build_services(settings)
        finally:
            os.kill(node, signal.SIGCONT)
        try:
            engine, meter = services.meter.ledger.engine, services.meter
            assert enroll(engine, meter.provider_id, ["u0"], payer=address_bytes(payer),
                          operator=address_bytes(chain.client.account)) == account_id
            time.sleep(1.1)  # past the retry pause of the reads that failed while silent
            if reason is None:
                assert meter.record(usage("k1", "u0")).receipt.units == SERVE_UNITS
                assert services.chain_escrow.last_epoch_id(account_id) == 0
                return
            for key in ("k1", "k2"):  # refused, and again after the retry pause
                with pytest.raises(EscrowUnavailableError, match=reason):
                    meter.record(usage(key, "u0"))
                time.sleep(1.1)
            with pytest.raises(EscrowUnavailableError, match=reason):  # an epoch close's read
                services.chain_escrow.last_epoch_id(account_id)
            assert count(meter, events) == 0
        finally:
            services.close()


def test_callers_waiting_on_a_failed_chain_check_do_not_each_try_again(silent_rpc,
                                                                      monkeypatch):
    """While one caller checks a chain that was silent at start, the others wait; once the
    check fails they are refused at once (one timeout per retry pause, not one per caller)."""
    calls = []

    def silent_check(*_args, **_kwargs):
        calls.append(1)
        time.sleep(0.3)  # a node that does not answer within the timeout
        raise requests.exceptions.ReadTimeout("no answer")

    monkeypatch.setattr("prover.accounts.chain_escrow._chain_problem", silent_check)
    reader = connect_reader(silent_rpc, "0x" + "42" * 20, timeout_seconds=0.3)
    escrow = ChainEscrow(reader, ttl_seconds=3_600, retry_seconds=5,
                         unchecked_chain_id=31_337)
    barrier = threading.Barrier(6)
    refused = []

    def read(k: int) -> None:
        barrier.wait()
        try:
            escrow.view(bytes([k]) * 32)  # six accounts: six cache misses
        except EscrowUnavailableError as exc:
            refused.append(str(exc))

    threads = [threading.Thread(target=read, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(refused) == 6
    assert calls == [1]  # one check against the node; the waiting callers did not repeat it


@pytest.mark.parametrize(("expected", "refused"), [(1, True), (None, False)])
def test_the_first_answer_is_checked_before_an_escrow_read_is_used(chain, expected, refused):
    """On py-evm and anvil: an escrow whose chain could not be checked at start checks it on
    the first read; another chain id refuses that read, the next one and an epoch close's,
    and the right one is read as usual."""
    chain.deposit_units(100)
    expected = chain.client.chain_id if expected is None else expected
    escrow = ChainEscrow(chain.reader(), ttl_seconds=3_600, unchecked_chain_id=expected)
    if not refused:
        assert escrow.view(chain.account_id).available_units == 100
        assert escrow.last_epoch_id(chain.account_id) == 0
        return
    wrong = f"has chain id {chain.client.chain_id}, ZKMETER_CHAIN_ID is 1"
    for _ in range(2):
        with pytest.raises(EscrowUnavailableError, match=wrong):
            escrow.view(chain.account_id)
    with pytest.raises(EscrowUnavailableError, match=wrong):
        escrow.last_epoch_id(chain.account_id)
    assert escrow.poll() == set()  # nothing followed on another chain
