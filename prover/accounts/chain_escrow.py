"""Prepaid limits read from the settlement contract: the chain-backed :class:`EscrowSource`.

:class:`ChainEscrow` answers ``view(account_id)`` from ``getAccount`` (through
:meth:`ChainClient.billing_account`), as :meth:`EscrowView.from_amounts` of the record's
escrow, reserved, requested withdrawal, unit price and ``lastEpochId``, behind a
:class:`CachedEscrow` whose entries live ``ttl_seconds``. It guarantees:

* **No escrow, no usage.** An account the contract does not know (``payer`` zero: never
  opened, or opened on another contract) has no escrow: its view has ``opened`` False and the
  admission refuses its usage ("billing account 0x.. is not open on-chain (no escrow)").
* **A silent chain refuses, never admits.** Each JSON-RPC call is bounded by the timeout given
  to :func:`connect_reader` (no web3 retries); a read that fails in any way raises
  :class:`~prover.errors.EscrowUnavailableError` (gRPC UNAVAILABLE) and caches nothing. After a
  failure the chain is not asked again for ``retry_seconds``: during that time every cache
  miss is refused at once, so a dead chain costs one timeout per ``retry_seconds``, not one per
  request. A stale entry is never used past its TTL, even while the chain is down.
* **The chain is the one configured.** :meth:`from_settings` refuses to start on a chain whose
  id is not ``ZKMETER_CHAIN_ID`` or a contract address that does not run ZkMeterSettlement's
  code. A chain that does not answer at start is checked on its first answer, before any
  read is used: until then every read is refused (a failed check is not tried again for
  ``retry_seconds``; an address without code yet, a node still syncing, counts as no answer),
  and a mismatch then refuses every read for good (logged once; fix the settings and
  restart), never admits.
* **Events drop entries at once.** :meth:`poll` reads the settlement's logs from the block
  after the last one it read up to the latest, keeps those of the events that change an
  account's available escrow or ``lastEpochId`` (:data:`ACCOUNT_EVENTS`, all indexed by
  ``accountId`` first) and invalidates those accounts' entries. The first successful poll
  drops every entry (reads made before the follower knew a block may predate an event).
  :meth:`start` runs :meth:`poll` every ``poll_seconds`` on a daemon thread; :meth:`close`
  stops it. The TTL bounds staleness when the follower cannot read logs (and after a reorg,
  which the follower does not track).

``ProviderSlashed`` and the provider events are not followed: a slash emits ``EpochRejected``
for the account whose reservation it releases; the other voided epochs keep their reservation
until ``finalize`` releases them (``EpochReleased``); a provider's unit price change does not
touch an open account's price.
"""

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from web3 import Web3

from circuits.hashing import keccak256
from prover.accounts.escrow import CachedEscrow, EscrowView
from prover.chain import ChainClient
from prover.errors import ConfigError, EscrowUnavailableError
from verifier.chain import SETTLEMENT, code_matches, load_artifact

if TYPE_CHECKING:
    from prover.config import Settings

log = logging.getLogger("zkmeter.escrow")

#: The settlement events after which an account's escrow view must be read again.
ACCOUNT_EVENTS = ("AccountOpened", "Deposited", "WithdrawalRequested", "WithdrawalCompleted",
                  "EpochSubmitted", "EpochRejected", "EpochReleased", "EpochFinalized")

_READ_ONLY_SENDER = "0x" + "00" * 20  # the reader never sends a transaction
MAX_LOG_BLOCKS = 2_000  # blocks per eth_getLogs call (public nodes cap the range)
_IN_PROCESS = threading.Lock()  # serializes this module's calls into the embedded chain


def connect_reader(url: str, contract: str, *, timeout_seconds: float) -> ChainClient:
    """A read-only client of the settlement at ``contract`` over JSON-RPC at ``url``: every
    call gives up after ``timeout_seconds`` (connect and each read), with no retries."""
    if not url.startswith(("http://", "https://")):
        raise ConfigError("ZKMETER_RPC_URL must be an http:// or https:// JSON-RPC URL")
    if timeout_seconds <= 0:
        raise ConfigError("the RPC timeout must be positive")
    provider = Web3.HTTPProvider(url, request_kwargs={"timeout": timeout_seconds},
                                 exception_retry_configuration=None)
    return ChainClient(Web3(provider), account=_READ_ONLY_SENDER, settlement=contract)


def _event_topics() -> dict[bytes, str]:
    """topic0 -> name of the :data:`ACCOUNT_EVENTS` (keccak256 of each event's signature)."""
    topics = {}
    for item in load_artifact(SETTLEMENT).abi:
        if item.get("type") == "event" and item["name"] in ACCOUNT_EVENTS:
            types = ",".join(str(i["type"]) for i in item["inputs"])  # elementary types only
            topics[keccak256(f"{item['name']}({types})".encode())] = str(item["name"])
    if sorted(topics.values()) != sorted(ACCOUNT_EVENTS):
        raise ConfigError("the settlement ABI lacks an account event the meter follows")
    return topics


class ChainNotReadyError(RuntimeError):
    """The node answered, but the contract address has no code yet (a node still syncing):
    checked again later, as if it had not answered."""


def _chain_problem(client: ChainClient, chain_id: int, *,
                   no_code_yet_raises: bool = False) -> str | None:
    """Why the chain ``client`` reads is not the configured one (None if it is); raises what
    the node raises when it does not answer, and ChainNotReadyError for an address without
    code if ``no_code_yet_raises``."""
    found = int(client.w3.eth.chain_id)
    if found != chain_id:
        return f"the chain at ZKMETER_RPC_URL has chain id {found}, ZKMETER_CHAIN_ID is {chain_id}"
    if no_code_yet_raises and not bytes(client.w3.eth.get_code(client.settlement.address)):
        raise ChainNotReadyError("the contract address has no code yet")
    if not code_matches(client.w3, client.settlement.address, SETTLEMENT):
        return (f"ZKMETER_CONTRACT_ADDRESS {client.settlement.address} does not run "
                "ZkMeterSettlement on the chain at ZKMETER_RPC_URL")
    return None


class ChainEscrow:
    """Each account's escrow as the settlement contract holds it (module docstring)."""

    def __init__(self, client: ChainClient, *, ttl_seconds: float,
                 retry_seconds: float = 1.0,
                 clock: Callable[[], float] = time.monotonic,
                 unchecked_chain_id: int | None = None) -> None:
        """``unchecked_chain_id``: the chain id the settings expect, of a chain that could
        not be checked at start (:meth:`from_settings`): checked, with the contract's code,
        before the first read is used (module docstring)."""
        if retry_seconds < 0:
            raise ConfigError("retry_seconds must be >= 0")
        self._client = client
        self._expected_chain_id = unchecked_chain_id
        self._check_lock = threading.Lock()
        self._wrong_chain: str | None = None  # set once the check found another chain
        self._check_retry_at = float("-inf")  # no check before this (after a failed one)
        self._address = client.settlement.address
        self._clock = clock
        self._retry_seconds = retry_seconds
        self._retry_at = float("-inf")  # no chain call before this (after a failure)
        self._cache = CachedEscrow(self._read, ttl_seconds=ttl_seconds, clock=clock)
        self._topics = _event_topics()
        # a JSON-RPC node serves concurrent reads; py-evm in process gets one call at a time
        self._serial = None if isinstance(client.w3.provider, Web3.HTTPProvider) else _IN_PROCESS
        self._poll_lock = threading.Lock()
        self._next_block: int | None = None
        self._following_ok = True
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            self._next_block = self._call(lambda: int(client.w3.eth.block_number)) + 1
        except Exception as exc:  # the first successful poll starts from the latest block
            log.warning("escrow: the chain did not answer at start (%s); usage of every "
                        "prepaid account is refused until it does", type(exc).__name__)

    @classmethod
    def from_settings(cls, settings: "Settings") -> "ChainEscrow | None":
        """The chain escrow of ``ZKMETER_RPC_URL`` and ``ZKMETER_CONTRACT_ADDRESS``, with its
        event follower started; None if no RPC URL is set (no on-chain limits). If the chain
        answers, refuses (ConfigError) a chain id other than ``ZKMETER_CHAIN_ID`` and a
        contract that does not run ZkMeterSettlement's code; if it does not answer, starts
        anyway (usage of prepaid accounts is refused until it does)."""
        if settings.rpc_url is None:
            return None
        if settings.contract_bytes() == bytes(20):
            raise ConfigError("ZKMETER_RPC_URL is set but ZKMETER_CONTRACT_ADDRESS is the zero "
                              "address: set the settlement contract whose escrow limits usage")
        client = connect_reader(settings.rpc_url.get_secret_value(), settings.contract_address,
                                timeout_seconds=settings.rpc_timeout_seconds)
        unchecked: int | None = None
        try:
            problem = _chain_problem(client, settings.chain_id)
        except Exception as exc:  # checked on its first answer: reads are refused until then
            log.warning("escrow: cannot check the chain at start (%s)", type(exc).__name__)
            unchecked = settings.chain_id
        else:
            if problem is not None:
                raise ConfigError(problem)
        escrow = cls(client, ttl_seconds=settings.escrow_ttl_seconds,
                     retry_seconds=min(1.0, settings.escrow_poll_seconds),
                     unchecked_chain_id=unchecked)
        escrow.start(settings.escrow_poll_seconds)
        return escrow

    # ------------------------------------------------------------------ EscrowSource

    def view(self, account_id: bytes) -> EscrowView | None:
        """The account's escrow view (never None: every account is prepaid on-chain)."""
        return self._cache.view(account_id)

    def invalidate(self, account_id: bytes | None = None) -> None:
        """Forget one account's cached view (or all)."""
        self._cache.invalidate(account_id)

    def _call(self, fn: Callable[[], Any]) -> Any:
        if self._serial is None:
            return fn()
        with self._serial:
            return fn()

    def _configured_chain_problem(self) -> str | None:
        """Check a chain that did not answer at start, once (module docstring): why it is
        not the configured chain, or None. Raises what the node raises while it is silent."""
        if self._expected_chain_id is not None:
            with self._check_lock:
                expected = self._expected_chain_id
                if expected is not None:
                    # a check that failed a moment ago is not tried again by every waiting
                    # caller in turn (one timeout per retry_seconds, not one per caller)
                    if self._clock() < self._check_retry_at:
                        raise ChainNotReadyError("the chain did not answer a moment ago")
                    try:
                        problem = self._call(lambda: _chain_problem(
                            self._client, expected, no_code_yet_raises=True))
                    except Exception:
                        self._check_retry_at = self._clock() + self._retry_seconds
                        raise
                    if problem is None:
                        log.info("escrow: the chain answered and is the one configured")
                    else:
                        log.error("escrow: %s; usage of every prepaid account is refused "
                                  "until the settings are fixed and the server restarted",
                                  problem)
                    # the verdict first: a reader that sees the check done must see it too
                    self._wrong_chain = problem
                    self._expected_chain_id = None
        return self._wrong_chain

    def _read(self, account_id: bytes) -> EscrowView:
        if self._clock() < self._retry_at:
            raise EscrowUnavailableError(
                f"the escrow of billing account 0x{account_id.hex()} cannot be read: the chain "
                "did not answer a moment ago; usage refused, retry later", account_id=account_id)
        try:
            problem = self._configured_chain_problem()
            record = None if problem else self._call(
                lambda: self._client.billing_account(account_id))
        except Exception as exc:  # any failed read refuses: never admit usage unpaid
            self._retry_at = self._clock() + self._retry_seconds
            log.warning("escrow: reading billing account 0x%s failed (%s)", account_id.hex(),
                        type(exc).__name__)  # never the URL: it may carry an API key
            raise EscrowUnavailableError(
                f"the escrow of billing account 0x{account_id.hex()} could not be read from "
                f"the chain ({type(exc).__name__}); usage refused, retry later",
                account_id=account_id) from None
        if record is None:  # the node answered: another chain, or not our contract
            raise EscrowUnavailableError(
                f"the escrow of billing account 0x{account_id.hex()} cannot be read: {problem}; "
                "usage refused", account_id=account_id)
        if not record.opened:
            return EscrowView(0, 0, opened=False)
        return EscrowView.from_amounts(escrow=record.escrow, reserved=record.reserved,
                                       withdrawal=record.withdrawal_amount,
                                       unit_price=record.unit_price,
                                       last_epoch_id=record.last_epoch_id)

    def last_epoch_id(self, account_id: bytes) -> int:
        """The last epoch id the contract holds for an account, read now (uncached): what
        the epoch close checks a new close against (EpochService ``onchain_last_epoch``).
        A failed read raises EscrowUnavailableError: the close is refused, not guessed."""
        try:
            problem = self._configured_chain_problem()
            record = None if problem else self._call(
                lambda: self._client.billing_account(account_id))
        except Exception as exc:
            log.warning("chain: reading billing account 0x%s failed (%s)", account_id.hex(),
                        type(exc).__name__)
            raise EscrowUnavailableError(
                f"billing account 0x{account_id.hex()} could not be read from the chain "
                f"({type(exc).__name__}) to check that its epoch id was never used; the close "
                "is refused, retry when the node answers", account_id=account_id) from None
        if record is None:
            raise EscrowUnavailableError(
                f"billing account 0x{account_id.hex()} cannot be read: {problem}; the close is "
                "refused", account_id=account_id)
        return int(record.last_epoch_id)

    # ------------------------------------------------------------------ event follower

    def poll(self) -> set[bytes]:
        """Invalidate the accounts named by account events since the last poll (module
        docstring); returns their ids. Raises what the chain raises (nothing is skipped:
        the next poll starts where this one stopped)."""
        w3 = self._client.w3
        if self._configured_chain_problem() is not None:  # nothing is admitted: nothing to follow
            return set()
        with self._poll_lock:
            latest = self._call(lambda: int(w3.eth.block_number))
            if self._next_block is None:
                self._cache.invalidate()
                self._next_block = latest + 1
                return set()
            touched: set[bytes] = set()
            while self._next_block <= latest:
                start = self._next_block
                end = min(start + MAX_LOG_BLOCKS - 1, latest)
                found = self._accounts_in(start, end)
                for account_id in sorted(found):
                    self._cache.invalidate(account_id)
                touched |= found
                self._next_block = end + 1
            return touched

    def _accounts_in(self, start: int, end: int) -> set[bytes]:
        """The accounts named by account events in blocks ``start..end``."""
        query: Any = {"address": self._address, "fromBlock": start, "toBlock": end,
                      "topics": [["0x" + topic.hex() for topic in self._topics]]}
        logs = self._call(lambda: self._client.w3.eth.get_logs(query))
        return {bytes(entry["topics"][1]) for entry in logs
                if len(entry["topics"]) > 1 and bytes(entry["topics"][0]) in self._topics}

    def start(self, poll_seconds: float) -> None:
        """Run :meth:`poll` every ``poll_seconds`` on a daemon thread (until :meth:`close`)."""
        if poll_seconds <= 0:
            raise ConfigError("the escrow poll interval must be positive")
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._follow, args=(poll_seconds,),
                                        name="zkmeter-escrow-events", daemon=True)
        self._thread.start()

    def _follow(self, poll_seconds: float) -> None:
        while not self._stop.wait(poll_seconds):
            try:
                self.poll()
            except Exception as exc:  # logged once per outage; entries still expire
                if self._following_ok:
                    log.warning("escrow: reading the settlement's events failed (%s); cached "
                                "escrow lives at most its TTL", type(exc).__name__)
                self._following_ok = False
            else:
                if not self._following_ok:
                    log.info("escrow: following the settlement's events again")
                self._following_ok = True

    def stop_following(self) -> None:
        """Stop the event follower without waiting for a poll in flight (its thread ends
        after it; :meth:`close` waits)."""
        self._stop.set()
        self._thread = None

    def close(self) -> None:
        """Stop the event follower."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=30)
