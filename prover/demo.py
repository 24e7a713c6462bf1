"""``zkmeter demo``: the whole story, end to end and for real, on the embedded defaults.

1. start ``zkmeter serve`` (gRPC + HTTP) on loopback ports, on a SQLite file in ``--out``;
2. make a provider key, deploy the contracts and the test ERC-20 (``ZkMeterTestToken``;
   in-process py-evm, or ``--rpc`` e.g. anvil), register the provider with a bond; two payers
   open a billing account each, one in ETH, one in the token (mint, approve, deposit), and
   fund its escrow;
3. register each account with the meter (RegisterAccount with the payer's X25519 key) and N
   users under the two accounts (eth, token, token, eth, eth, ...: each account gets chat and
   reported requests; RegisterUser with each user's X25519 key);
4. send M requests: the chat requests over HTTP through ``zkmeter gateway`` in front of the
   local OpenAI-compatible upstream (half streamed; the receipts come back in the header or
   the SSE comment), the reported counts with hidden reasoning tokens through the gRPC
   client, unary and streamed, some of them retried;
5. close the epoch over gRPC (with a progress bar): one bundle and one sealed payer
   statement per account; fetch them and each account's sealed openings over HTTP;
6. per account, on its own: submit the bundle on-chain to the account it names; run
   ``zkmeter-verify bundle``, ``me`` for every user against its account's bundle, ``audit``,
   ``payer`` (the payer opens its statement and checks every leaf it pays for, with its
   users' forwarded receipts) and, on a real node, ``chain``; advance past the challenge
   window; finalize; the provider withdraws each payment in its asset;
7. check each account was paid exactly its users' units (the last receipts' running totals)
   x the unit price, print a summary and leave every artifact in ``--out``.

The cheating modes cheat on one account (the one with more users; a tie: the ETH one); the
other settles normally first (a slash voids every pending epoch of the provider, so it is
finalized before the cheat):

``--bad-proof``: the provider moves units from one user to another by shifting two
commitments (the sum, and so the on-chain check, is unchanged), publishes a proof it cannot
make honestly for the now "negative" value, and submits that epoch. The verifier names the
bad leaf, a challenger knocks the epoch out on-chain and takes the bond.

``--withhold``: the provider submits the epoch but publishes nothing a settler can fetch. The
settler's watcher (``zkmeter-verify chain --watch``, :mod:`verifier.watch`) sees no bundle
matching the chain, demands a leaf's data; the provider does not answer; after the response
window the watcher resolves the demand and the bond is slashed (half burned, 40 % to the
payer, 10 % to the settler).

``--phantom``: the provider bills a user that does not exist: it puts value on a padding
leaf (a fresh commitment with an honest range proof, the Merkle root, total and signature
redone: a well-formed bundle, so ``zkmeter-verify bundle``, every real user's ``me`` and the
chain record all pass) and names the leaf in the payer statement as a user. Only the payer
can see it: ``zkmeter-verify payer`` fails ``users_known`` and writes an evidence file, and
``zkmeter-verify evidence`` confirms it (a phantom user rests on the payer's word that the id
is not one of its users; docs/epoch.md "Who can detect what"). The contract cannot tell, so
the demo leaves that epoch unfinalized: the payer's recourse is the evidence and its exit.
"""

import asyncio
import dataclasses
import json
import random
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from nacl.public import PrivateKey
from nacl.signing import SigningKey
from pydantic import SecretStr
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress
from rich.table import Table

from circuits import merkle
from circuits.backend import get_backend
from circuits.constants import CURVE_ORDER
from circuits.encoding import point_to_bytes
from circuits.hashing import keccak256
from circuits.rangeproof import _prove, prove, random_scalar
from prover.api.grpc_server import hash_api_key, new_api_key
from prover.api.serve import Endpoints, serve
from prover.app import Services, build_services
from prover.chain import ETH, ChainClient, bundle_path
from prover.config import Settings
from verifier.bundle import Bundle, Leaf, parse_bundle, sign_bundle
from verifier.keys import write_secret_file
from verifier.opening import Opening, OpeningError, seal, unseal
from verifier.receipts import decode_receipt
from verifier.statement import make_statement, seal_statement, unseal_statement
from zkmeter.client import Client, usage_request

MODEL_TEXT = "gpt-4o"
MODEL_REASONING = "o3"
UNIT_PRICE_WEI = 10_000  # per billable unit: wei, or token base units for the ERC-20 account
BOND_WEI = 10**18
ESCROW_WEI = 10**19  # each account's escrow, in its asset
CHALLENGE_WINDOW = 3_600
PHANTOM_USER = "user-ghost"
TOPICS = ["invoices", "the weather in Lisbon", "a haiku about BN254", "Pedersen commitments",
          "sorting algorithms", "a birthday message", "the GIL", "tax rules for freelancers"]


class DemoError(RuntimeError):
    """A step of the demo did not come out as it must."""


@dataclasses.dataclass
class User:
    """A demo user: its key, and what it keeps (receipts, texts)."""

    name: str
    key: PrivateKey
    receipts: dict[int, dict[str, Any]] = dataclasses.field(default_factory=dict)
    texts: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @property
    def units(self) -> int:
        """The running total of the user's last receipt: what it was charged."""
        return int(self.receipts[max(self.receipts)]["total_units"]) if self.receipts else 0


@dataclasses.dataclass
class Payer:
    """A payer with its billing account: its chain address, asset, X25519 key (its
    statements are sealed to it), its users and, after the close, its account's bundle."""

    name: str
    address: str
    asset: str  # ETH (the zero address) or the ERC-20's address
    asset_name: str  # "wei" or the token's base units
    key: PrivateKey
    account_id: bytes = b""
    users: list[User] = dataclasses.field(default_factory=list)
    bundle: Bundle | None = None
    sealed_statement: bytes = b""
    openings: dict[str, str] = dataclasses.field(default_factory=dict)

    def the_bundle(self) -> Bundle:
        """The account's bundle of the epoch (after publishing)."""
        if self.bundle is None:
            raise DemoError(f"{self.name}: the epoch has no bundle of its account")
        return self.bundle


class Timer:
    """Seconds per phase (a phase run more than once adds up)."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = round(self.phases.get(name, 0.0)
                                      + time.perf_counter() - start, 3)


class BackgroundServer:
    """``serve()`` on its own event loop in a thread."""

    def __init__(self, services: Services) -> None:
        self.loop = asyncio.new_event_loop()
        self.stop_event: asyncio.Event | None = None
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def start() -> "asyncio.Future[Endpoints]":
            self.stop_event = asyncio.Event()
            started: asyncio.Future[Endpoints] = self.loop.create_future()
            self.task = asyncio.ensure_future(serve(services, stop=self.stop_event,
                                                    started=started))
            return started

        started = asyncio.run_coroutine_threadsafe(start(), self.loop).result(timeout=30)
        self.endpoints: Endpoints = asyncio.run_coroutine_threadsafe(
            asyncio.wait_for(asyncio.shield(started), 60), self.loop).result(timeout=90)

    def stop(self) -> None:
        if self.stop_event is not None:
            self.loop.call_soon_threadsafe(self.stop_event.set)
            asyncio.run_coroutine_threadsafe(asyncio.wait_for(self.task, 60),
                                             self.loop).result(timeout=90)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.close()


def _verify_cli(*args: str) -> dict[str, Any]:
    """Run ``zkmeter-verify ... --json`` as a real subprocess; its JSON and exit code."""
    proc = subprocess.run([sys.executable, "-m", "verifier", *args, "--json"],  # noqa: S603
                          capture_output=True, text=True, timeout=600, check=False)
    try:
        out: dict[str, Any] = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise DemoError(f"zkmeter-verify {args[0]} printed no JSON: {proc.stderr[-500:]}") \
            from None
    out["exit_code"] = proc.returncode
    return out


def _requests(users: list[User], count: int, rng: random.Random) -> list[tuple[User, Any, Any]]:
    """(user, request, kept text or None) in sending order, with some retries."""
    out: list[tuple[User, Any, Any]] = []
    for i in range(count):
        user = users[i % len(users)]
        if i % 2 == 0:
            topic = rng.choice(TOPICS)  # through the OpenAI-compatible gateway
            request = None
            text = {"messages": [{"role": "system", "content": "You are a helpful assistant."},
                                 {"role": "user",
                                  "content": f"Please tell me about {topic}. Request {i}."}]}
        else:
            request = usage_request(idempotency_key=f"demo-{i}", user_id=user.name,
                                    model=MODEL_REASONING, input_tokens=rng.randint(50, 4000),
                                    output_tokens=rng.randint(10, 800),
                                    cached_input_tokens=rng.randint(0, 40),
                                    reasoning_tokens=rng.randint(0, 3000))
            text = None
        out.append((user, request, text))
        if i % 7 == 3 and request is not None:  # a gRPC retry: same key, same payload
            out.append((user, request, None))
    return out


def _keep(user: User, response: Any, text: dict[str, Any] | None) -> None:
    receipt = decode_receipt(response.receipt.encoded + response.receipt.signature)
    user.receipts[receipt.seq] = receipt.to_json()
    if text is not None and not response.replayed:
        user.texts.append({"seq": receipt.seq, **text})


def _cheat(bundle: Bundle, openings: dict[str, Any], signing_key: SigningKey) -> tuple[
        Bundle, int, int]:
    """The provider moves ``d`` units from user j to user i: C_i + dG, C_j - dG. V, R and the
    sum of the commitments stay the same; user j's value is now "negative" (r - something),
    and no honest range proof exists for it: a dishonest prover's proof is published."""
    by_value = sorted((o for o in openings.values() if o.value > 0), key=lambda o: o.value)
    if len(by_value) < 2:
        raise DemoError("--bad-proof needs an account with at least two users with usage "
                        "(--users 3 or more)")
    victim, beneficiary = by_value[0], by_value[-1]
    shift = victim.value + 1  # more than the victim has: its value wraps below zero
    ctx = bundle.context
    n = bundle.bit_size
    leaves = list(bundle.leaves)
    for opening, delta in ((beneficiary, shift), (victim, -shift)):
        value = (opening.value + delta) % CURVE_ORDER
        if value < 1 << n:  # the beneficiary: still in range, so an honest proof exists
            proof, (commitment,) = prove(ctx.transcript(), values=[value],
                                         blindings=[opening.blinding], n=n)
        else:  # the victim wrapped below zero: only a dishonest proof can be made
            bits = [(value >> k) & 1 for k in range(n)]
            fake, (point,) = _prove(ctx.transcript(), [value], [opening.blinding], bits, n,
                                    get_backend(), random_scalar)
            proof, commitment = fake.to_bytes(), point_to_bytes(point)
        leaves[opening.leaf_index] = Leaf(opening.tag, commitment, proof)
    root = merkle.root([leaf.hash() for leaf in leaves])
    forged = dataclasses.replace(bundle, leaves=tuple(leaves), merkle_root=root)
    forged = sign_bundle(forged, lambda m: bytes(signing_key.sign(m).signature))
    return forged, victim.leaf_index, shift


def _through_gateway(items: list[tuple[User, Any, Any]], *, out: Path, target: str,
                     api_key: str, people: list[User]) -> int:
    """Send chat requests with an OpenAI-style HTTP client through ``zkmeter gateway`` in front
    of the local upstream, half streamed; each user keeps the receipt (header, or the SSE
    comment) and the text it received."""
    from prover.gateway.app import RECEIPT_COMMENT, decode_receipt_header
    from prover.gateway.local import LocalGateway

    gateway = LocalGateway(zkmeter_target=target, zkmeter_api_key=api_key,
                           users=[p.name for p in people], workdir=out)
    try:
        with httpx.Client(base_url=gateway.url, timeout=60) as http:
            for n, (person, _, text) in enumerate(items):
                auth = {"authorization": f"Bearer {gateway.caller_keys[person.name]}"}
                body = {"model": MODEL_TEXT, "messages": text["messages"]}
                if n % 2:
                    completion, receipt, request_id = _streamed(http, body, auth,
                                                                RECEIPT_COMMENT.decode())
                else:
                    reply = http.post("/chat/completions", json=body, headers=auth)
                    if reply.status_code != 200:
                        raise DemoError(f"gateway: HTTP {reply.status_code}")
                    completion = reply.json()["choices"][0]["message"]["content"]
                    receipt = reply.headers.get("zkmeter-receipt", "")
                    request_id = reply.headers["x-request-id"]
                kept = (decode_receipt_header(receipt) if receipt else
                        _fetch_receipt(http, auth, request_id))
                person.receipts[kept["seq"]] = kept
                person.texts.append({"seq": kept["seq"], **text, "completion": completion})
    finally:
        gateway.stop()
    return len(items)


def _fetch_receipt(http: httpx.Client, auth: dict[str, str], request_id: str
                   ) -> dict[str, Any]:
    """A receipt that was still pending when the reply went out, by request id."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        reply = http.get(f"/zkmeter/receipts/{request_id}", headers=auth)
        if reply.status_code == 200:
            receipt: dict[str, Any] = reply.json()["receipt"]
            return receipt
        if reply.status_code != 202:
            raise DemoError(f"gateway: no receipt for {request_id} (HTTP {reply.status_code})")
        time.sleep(0.1)
    raise DemoError(f"gateway: the receipt of {request_id} stayed pending")


def _streamed(http: httpx.Client, body: dict[str, Any], auth: dict[str, str],
              comment: str) -> tuple[str, str, str]:
    """A streamed chat request: the content received, the receipt before [DONE] (or "" if
    it was still pending) and the request id."""
    parts, receipt = [], ""
    with http.stream("POST", "/chat/completions", json={**body, "stream": True},
                     headers=auth) as reply:
        if reply.status_code != 200:
            raise DemoError(f"gateway: HTTP {reply.status_code}")
        request_id = reply.headers["x-request-id"]
        for line in reply.iter_lines():
            if line.startswith(comment):
                receipt = line[len(comment):]
            elif line.startswith("data: {"):
                for choice in json.loads(line[6:]).get("choices", ()):
                    parts.append(choice["delta"].get("content") or "")
    return "".join(parts), receipt, request_id


def _close_with_progress(zk: Client, epoch_id: int, console: Console) -> None:
    result: dict[str, Any] = {}

    def close() -> None:
        try:
            result["epoch"] = zk.close_epoch()
        except Exception as exc:  # reported below, in the main thread
            result["error"] = exc

    worker = threading.Thread(target=close)
    worker.start()
    with Progress("closing epoch", BarColumn(), MofNCompleteColumn(), console=console,
                  transient=True) as bar:
        task = bar.add_task("leaves", total=None)
        while worker.is_alive():
            info = zk.epoch(epoch_id)
            if info.leaves_total:
                bar.update(task, completed=info.leaves_done, total=info.leaves_total)
            time.sleep(0.1)
    worker.join()
    if "error" in result:
        raise DemoError(f"closing the epoch failed: {result['error']}")
    closed = result["epoch"]
    console.print(f"epoch {epoch_id} closed: {closed.leaves_total} leaves, V = "
                  f"{closed.total_units} units over all its billing accounts")


def _verify_many(jobs: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
    """Run several ``zkmeter-verify`` commands, two at a time; their results by name."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(_verify_cli, *args) for name, args in jobs.items()}
        return {name: future.result() for name, future in futures.items()}


def _open_accounts(chain: ChainClient, onchain_provider: bytes, payers: list[Payer],
                   gas: dict[str, int]) -> None:
    """Each payer opens its account at the provider's unit price and funds its escrow: ETH as
    value, the ERC-20 after minting and approving the settlement."""
    for payer in payers:
        label = _label(payer)
        gas[f"open_account {label}"] = chain.open_account(
            onchain_provider, asset=payer.asset, sender=payer.address)["gasUsed"]
        payer.account_id = chain.account_id_for(onchain_provider, payer=payer.address,
                                                asset=payer.asset)
        if payer.asset != ETH:
            chain.mint_test_token(payer.asset, payer.address, ESCROW_WEI)
            gas[f"approve {label}"] = chain.approve_token(payer.asset, ESCROW_WEI,
                                                          sender=payer.address)["gasUsed"]
        gas[f"deposit {label}"] = chain.deposit(payer.account_id, ESCROW_WEI,
                                                sender=payer.address)["gasUsed"]


def _users(n: int) -> str:
    return f"{n} user" + ("" if n == 1 else "s")


def _label(payer: Payer) -> str:
    return payer.name.removeprefix("payer-")


def run_demo(*, users: int = 8, requests: int = 48, out: Path, rpc: str | None = None,
             bad_proof: bool = False, withhold: bool = False, phantom: bool = False,
             console: Console | None = None, seed: int = 7) -> dict[str, Any]:
    """Run the demo; returns the summary (raises DemoError if an outcome is wrong)."""
    if bad_proof + withhold + phantom > 1:
        raise DemoError("choose one of --bad-proof, --withhold and --phantom")
    if users < 2:
        raise DemoError("the demo needs at least two users (one per billing account)")
    if bad_proof and users < 3:  # it moves units between two users of one account
        raise DemoError("--bad-proof needs an account with two users: --users 3 or more")
    console = console or Console()
    timer = Timer()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    rng = random.Random(seed)  # noqa: S311 - the demo's workload, not a secret
    signing_key = SigningKey.generate()
    provider_id = bytes(signing_key.verify_key)
    api_key = new_api_key()
    gas: dict[str, int] = {}

    with timer.phase("deploy"):
        chain = ChainClient.connect(rpc)
        deployment = chain.deploy()
        token = chain.deploy_test_token()
        accounts = list(chain.w3.eth.accounts)
        challenger = accounts[2]
        payers = [Payer("payer-eth", accounts[1], ETH, "wei", PrivateKey.generate()),
                  Payer("payer-token", accounts[3], token, "ZMT base units",
                        PrivateKey.generate())]
        gas["register"] = chain.register_provider(
            provider_id, bond=BOND_WEI, unit_price=UNIT_PRICE_WEI,
            challenge_window=CHALLENGE_WINDOW)["gasUsed"]
        onchain_provider = chain.provider_id_for(provider_id)
        _open_accounts(chain, onchain_provider, payers, gas)
    console.print(f"chain {chain.chain_id}: settlement {deployment.settlement}, test ERC-20 "
                  f"{token}; provider {provider_id.hex()[:16]}... registered; two billing "
                  f"accounts opened and funded: {payers[0].name} in ETH, {payers[1].name} in "
                  "the token")

    settings = Settings(
        database_url=SecretStr(f"sqlite:///{out / 'zkmeter.sqlite'}"),
        signing_key=SecretStr(bytes(signing_key).hex()),
        chain_id=chain.chain_id, contract_address=deployment.settlement,
        operator_address=chain.account, api_key_hashes={hash_api_key(api_key): "operator"},
        grpc_bind="127.0.0.1:0", http_bind="127.0.0.1:0", metrics_bind="127.0.0.1:0",
        shutdown_grace_seconds=2)
    services = build_services(settings)
    server = BackgroundServer(services)
    verification: dict[str, dict[str, Any]] = {}
    try:
        ep = server.endpoints
        base = f"http://{ep.http_host}:{ep.http_port}"
        console.print(f"zkmeter serve: gRPC 127.0.0.1:{ep.grpc_port}, HTTP {base}")
        with Client(f"127.0.0.1:{ep.grpc_port}", api_key=api_key) as zk:
            people = [User(f"user-{i + 1:02d}", PrivateKey.generate()) for i in range(users)]
            with timer.phase("register_users"):
                for payer in payers:
                    account = zk.register_account(
                        payer=bytes.fromhex(payer.address[2:]),
                        asset=bytes.fromhex(payer.asset[2:]),
                        payer_x25519_public_key=bytes(payer.key.public_key))
                    if account.account_id != payer.account_id:
                        raise DemoError(f"{payer.name}: the meter's account id "
                                        f"0x{account.account_id.hex()} is not the chain's "
                                        f"0x{payer.account_id.hex()}")
                for i, person in enumerate(people):  # eth, token, token, eth, eth, ...
                    payer = payers[(i + 1) // 2 % len(payers)]
                    payer.users.append(person)
                    zk.register_user(person.name, payer.account_id,
                                     bytes(person.key.public_key))
            everything = _requests(people, requests, rng)
            plan = [item for item in everything if item[1] is not None]
            replayed = 0
            with timer.phase("ingest"):
                via_gateway = _through_gateway(
                    [item for item in everything if item[1] is None], out=out,
                    target=f"127.0.0.1:{ep.grpc_port}", api_key=api_key, people=people)
                half = len(plan) // 2
                for person, request, text in plan[:half]:
                    response = zk.meter.RecordUsage(request, metadata=(
                        ("authorization", f"Bearer {api_key}"),), timeout=30)
                    replayed += response.replayed
                    _keep(person, response, text)
                responses = zk.record_usage_stream(r for _, r, _ in plan[half:])
                for (person, _, text), response in zip(plan[half:], responses, strict=True):
                    if response.HasField("error"):
                        raise DemoError(f"request refused: {response.error.message}")
                    replayed += response.replayed
                    _keep(person, response, text)
            epoch_id = zk.current_epoch().epoch_id
            console.print(f"ingested {len(plan) + via_gateway} requests ({via_gateway} chat "
                          f"requests through zkmeter gateway, {replayed} gRPC retries answered "
                          f"with their original receipts) for {users} users of two accounts "
                          f"in epoch {epoch_id}")

            with timer.phase("close"):
                _close_with_progress(zk, epoch_id, console)
        with timer.phase("publish"):
            _fetch_published(base, epoch_id, payers, out, console)
        found = {payer.name: _find_openings(payer, epoch_id, out) for payer in payers}
        # the cheat is on the account with the most users (a tie: the ETH one)
        target = max(payers, key=lambda p: len(p.users)) if bad_proof or withhold or phantom \
            else None
        honest = [payer for payer in payers if payer is not target]
        accounts_summary = _settle_accounts(
            chain=chain, payers=honest, out=out, base=base, epoch_id=epoch_id,
            onchain_provider=onchain_provider, timer=timer, gas=gas, rpc=rpc,
            verification=verification, console=console)
        if target is None:
            summary: dict[str, Any] = {
                "outcome": "settled", "epoch_id": epoch_id,
                "total_units": sum(a["total_units"] for a in accounts_summary.values()),
                "unit_price": UNIT_PRICE_WEI, "users_verified": len(people),
                "audit_clean": True, "payers_verified": len(payers),
                "on_chain_status": "finalized"}
        elif withhold:
            summary = _withholding_provider(chain=chain, payer=target, out=out, timer=timer,
                                            gas=gas, challenger=challenger, console=console)
        elif bad_proof:
            summary = _cheating_provider(chain=chain, payer=target, found=found[target.name],
                                         out=out, signing_key=signing_key, timer=timer,
                                         gas=gas, challenger=challenger, console=console)
        else:
            summary = _phantom_provider(chain=chain, payer=target, found=found[target.name],
                                        out=out, signing_key=signing_key, timer=timer, gas=gas,
                                        rpc=rpc, verification=verification, console=console)
        summary["accounts"] = accounts_summary
        if target is not None:
            summary["cheated_account"] = target.name
    finally:
        server.stop()
        services.close()
        (out / "verification.json").write_text(json.dumps(verification, indent=1))
    tokens = {"input": 0, "output": 0, "cached_input": 0, "reasoning": 0}
    for person in people:
        for receipt in person.receipts.values():
            for k in tokens:
                tokens[k] += receipt["tokens"][k]
    summary.update({
        "users": users, "requests_sent": len(plan) + via_gateway, "retries": replayed,
        "through_gateway": via_gateway,
        "receipts": sum(len(p.receipts) for p in people), "tokens": tokens,
        "gas": gas, "seconds": timer.phases, "artifacts": str(out),
        "chain": {"chain_id": chain.chain_id, "settlement": deployment.settlement,
                  "token": token, "rpc": rpc or "embedded py-evm"},
    })
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _fetch_published(base: str, epoch_id: int, payers: list[Payer], out: Path,
                     console: Console) -> None:
    """What the epoch published, over HTTP: the list of its accounts, and per account its
    bundle, sealed payer statement and sealed openings; the payer's files in ``out/NAME``."""
    with httpx.Client(base_url=base, timeout=60) as http:
        listed = http.get(f"/v1/epochs/{epoch_id}/accounts").json()
        single = http.get(f"/v1/epochs/{epoch_id}/bundle").status_code
        if single != 409:
            raise DemoError(f"/v1/epochs/{epoch_id}/bundle of a two-account epoch answered "
                            f"HTTP {single}, not 409")
        ids = {bytes.fromhex(item["account_id"].removeprefix("0x")) for item in listed}
        if ids != {payer.account_id for payer in payers}:
            raise DemoError(f"epoch {epoch_id} lists accounts {sorted(i.hex() for i in ids)}")
        for payer in payers:
            route = f"/v1/epochs/{epoch_id}/accounts/0x{payer.account_id.hex()}"
            raw = http.get(f"{route}/bundle").content
            payer.bundle = parse_bundle(raw)
            payer.sealed_statement = http.get(f"{route}/statement").content
            payer.openings = http.get(f"{route}/openings").json()
            folder = out / payer.name
            folder.mkdir()
            (folder / "bundle.json").write_bytes(raw)
            (folder / "statement.bin").write_bytes(payer.sealed_statement)
            (folder / "openings.json").write_text(json.dumps(payer.openings))
            write_secret_file(folder / "payer.key", bytes(payer.key))  # mode 0600
            (folder / "users.txt").write_text("".join(f"{u.name}\n" for u in payer.users))
            charged = sum(user.units for user in payer.users)
            if payer.bundle.account_id != payer.account_id or payer.bundle.total != charged:
                raise DemoError(f"{payer.name}: the bundle bills {payer.bundle.total} units, "
                                f"its users' receipts say {charged}")
            console.print(f"{payer.name}: bundle of {len(payer.bundle.leaves)} leaves, V = "
                          f"{payer.bundle.total} units (= the last receipts of its "
                          f"{_users(len(payer.users))}), root "
                          f"0x{payer.bundle.merkle_root.hex()[:16]}..., and a sealed statement "
                          f"of {len(payer.sealed_statement)} bytes")


def _find_openings(payer: Payer, epoch_id: int, out: Path) -> dict[str, Opening]:
    """Each user of the account tries its key on the account's published boxes (it need not
    know its tag); it keeps its opening, key, receipts and texts in ``out/USER``, and
    forwards its receipts to its payer (``out/PAYER/receipts/USER.json``)."""
    found = {}
    forwarded = out / payer.name / "receipts"
    forwarded.mkdir(exist_ok=True)
    for person in payer.users:
        receipts = json.dumps([person.receipts[s] for s in sorted(person.receipts)])
        for sealed_hex in payer.openings.values():
            try:
                opening = unseal(bytes.fromhex(sealed_hex.removeprefix("0x")),
                                 bytes(person.key))
            except OpeningError:
                continue
            found[person.name] = opening
            folder = out / person.name
            folder.mkdir(exist_ok=True)
            (folder / "opening.hex").write_text(sealed_hex)
            write_secret_file(folder / "secret.key", bytes(person.key))  # mode 0600
            (folder / "receipts.json").write_text(receipts)
            (folder / "texts.json").write_text(json.dumps(person.texts))
            (forwarded / f"{person.name}.json").write_text(receipts)
            break
        else:
            raise DemoError(f"{person.name} found no opening in {payer.name}'s bundle of "
                            f"epoch {epoch_id}")
    return found


def _verify_jobs(payer: Payer, *, out: Path, base: str | None, rpc: str | None,
                 contract: str) -> dict[str, list[str]]:
    """The verifications of one account's epoch: its bundle, every user's ``me`` against it,
    the privacy audit (from the provider's routes, when ``base``), the payer's own check
    (with its users' forwarded receipts) and, on a real node, the chain record."""
    bundle = payer.the_bundle()
    folder = out / payer.name
    route = f"{base}/v1/epochs/{bundle.epoch_id}/accounts/0x{payer.account_id.hex()}"
    source = f"{route}/bundle" if base else str(folder / "bundle.json")
    jobs = {f"bundle {payer.name}": ["bundle", source, "--provider-key",
                                     bundle.provider_id.hex()]}
    for person in payer.users:
        user = out / person.name
        jobs[f"me {person.name}"] = [
            "me", "--opening", str(user / "opening.hex"), "--secret-key",
            str(user / "secret.key"), "--receipts", str(user / "receipts.json"),
            "--texts", str(user / "texts.json"), "--bundle", str(folder / "bundle.json")]
    if base:
        jobs[f"audit {payer.name}"] = ["audit", source, "--openings", f"{route}/openings"]
    node = ["--rpc-url", rpc, "--contract", contract] if rpc else []
    jobs[f"payer {payer.name}"] = [
        "payer", "--bundle", str(folder / "bundle.json"), "--statement",
        str(folder / "statement.bin"), "--secret-key", str(folder / "payer.key"), "--users",
        str(folder / "users.txt"), "--receipts", str(folder / "receipts"),
        "--evidence-out", str(folder / "evidence.json"), *node]
    if rpc:
        jobs[f"chain {payer.name}"] = ["chain", *node, "--epoch", str(bundle.epoch_id),
                                       "--bundle", str(folder / "bundle.json")]
    return jobs


def _settle_accounts(*, chain: ChainClient, payers: list[Payer], out: Path, base: str,
                     epoch_id: int, onchain_provider: bytes, timer: Timer,
                     gas: dict[str, int], rpc: str | None,
                     verification: dict[str, dict[str, Any]],
                     console: Console) -> dict[str, dict[str, Any]]:
    """Each account's epoch, on its own: submitted to the account its bundle names, verified
    by everyone, finalized after the window, its payment withdrawn in its asset."""
    if not payers:
        return {}
    with timer.phase("submit"):
        for payer in payers:
            gas[f"submit_epoch {_label(payer)}"] = chain.submit_bundle(
                payer.the_bundle())["gasUsed"]
    with timer.phase("verify"):
        jobs: dict[str, list[str]] = {}
        for payer in payers:
            jobs.update(_verify_jobs(payer, out=out, base=base, rpc=rpc,
                                     contract=chain.settlement.address))
        checks = _verify_many(jobs)
    verification.update(checks)
    failed = [name for name, result in checks.items()
              if result["exit_code"] != 0 or not result["ok"]]
    if failed:
        raise DemoError(f"verification failed: {', '.join(failed)}")
    for payer in payers:
        console.print(f"zkmeter-verify, {payer.name}: bundle ok, {_users(len(payer.users))} "
                      f"verified their charge (me), audit clean, the payer's statement opens "
                      f"every leaf to its own users (payer)"
                      + (", chain record matches" if rpc else ""))
    summary = {}
    with timer.phase("finalize"):
        chain.advance_time(CHALLENGE_WINDOW + 1)
        for payer in payers:
            gas[f"finalize {_label(payer)}"] = chain.finalize(payer.account_id,
                                                              epoch_id)["gasUsed"]
        for payer in payers:
            earned = chain.earnings(onchain_provider, payer.asset)
            paid = _withdraw(chain, onchain_provider, payer.asset)
            bundle = payer.the_bundle()
            charged = sum(user.units for user in payer.users)
            expected = charged * UNIT_PRICE_WEI
            if earned != expected or paid != expected or bundle.total != charged:
                raise DemoError(f"{payer.name}: payment {earned} (withdrawn {paid}) != its "
                                f"users' units ({charged}) x unit price = {expected}")
            status = chain.epoch(payer.account_id, epoch_id).status.name.lower()
            console.print(f"finalized {payer.name}: paid {earned} {payer.asset_name} = V "
                          f"({bundle.total}) x unit price ({UNIT_PRICE_WEI}), withdrawn by "
                          "the provider")
            summary[payer.name] = {
                "account_id": "0x" + payer.account_id.hex(), "asset": payer.asset,
                "asset_name": payer.asset_name, "users": [u.name for u in payer.users],
                "users_units": {u.name: u.units for u in payer.users},
                "leaves": len(bundle.leaves), "total_units": bundle.total,
                "payment": earned, "withdrawn": paid, "on_chain_status": status}
    return summary


def _withdraw(chain: ChainClient, onchain_provider: bytes, asset: str) -> int:
    """withdrawEarnings in ``asset``; what the operator received (gas added back for ETH)."""
    if asset == ETH:
        before = chain.w3.eth.get_balance(chain.account)
        receipt = chain.withdraw_earnings(onchain_provider)
        return int(chain.w3.eth.get_balance(chain.account) - before
                   + receipt["gasUsed"] * receipt["effectiveGasPrice"])
    held = chain.token_balance(asset, chain.account)
    chain.withdraw_earnings(onchain_provider, asset=asset)
    return chain.token_balance(asset, chain.account) - held


def _withholding_provider(*, chain: ChainClient, payer: Payer, out: Path, timer: Timer,
                          gas: dict[str, int], challenger: str,
                          console: Console) -> dict[str, Any]:
    """The provider submits and withholds; the settler's watcher demands, then resolves."""
    from verifier.watch import watch_round

    bundle, account_id = payer.the_bundle(), payer.account_id
    with timer.phase("submit"):
        gas[f"submit_epoch {_label(payer)}"] = chain.submit_bundle(bundle)["gasUsed"]
    console.print(f"[yellow]the provider withholds[/yellow] {payer.name}'s epoch: it is "
                  "on-chain, its bundle is published nowhere a settler can fetch it")
    onchain_provider = chain.provider_id_for(bundle.provider_id)
    bond = chain.provider(onchain_provider).bond
    settler = ChainClient(chain.w3, account=challenger, settlement=chain.settlement_address)
    nowhere = str(out / "withheld" / "{account}-{epoch}.json")  # the provider serves nothing
    with timer.phase("demand"):
        demanded = watch_round(settler, bundle_source=nowhere, account_id=account_id)
    if [a.kind for a in demanded] != ["demand"]:
        raise DemoError(f"the watcher did not demand data: {demanded}")
    leaf = demanded[0].leaf_index
    console.print(f"settler: no bundle matches the chain, demands the data of leaf {leaf}")
    chain.advance_time(chain.params().response_window + 1)
    with timer.phase("resolve"):
        resolved = watch_round(settler, bundle_source=nowhere, account_id=account_id)
    status = chain.epoch(account_id, bundle.epoch_id).status.name.lower()
    credited = chain.balance_of(challenger)
    to_payer = chain.balance_of(payer.address)
    demand_bond = chain.params().demand_bond
    if ([a.kind for a in resolved] != ["resolve"] or status != "rejected"
            or credited != bond // 10 + demand_bond or to_payer != bond * 4 // 10):
        raise DemoError(f"withholding outcome wrong: {resolved}, status {status}, "
                        f"credited {credited}")
    console.print(f"unanswered after the response window: epoch {status}, bond of {bond} wei "
                  f"slashed: {bond // 2} burned, {to_payer} to {payer.name}, {bond // 10} and "
                  f"the demand bond back to the settler")
    return {"outcome": "withheld", "epoch_id": bundle.epoch_id, "demanded_leaf": leaf,
            "bond_slashed_wei": bond, "settler_credit_wei": credited,
            "payer_credit_wei": to_payer, "total_units": bundle.total,
            "on_chain_status": status}


def _cheating_provider(*, chain: ChainClient, payer: Payer, found: dict[str, Opening],
                       out: Path, signing_key: SigningKey, timer: Timer, gas: dict[str, int],
                       challenger: str, console: Console) -> dict[str, Any]:
    bundle, account_id = payer.the_bundle(), payer.account_id
    forged, bad_leaf, shift = _cheat(bundle, found, signing_key)
    path = out / payer.name / "bundle.cheating.json"
    path.write_text(forged.dumps())
    console.print(f"[yellow]the provider cheats[/yellow] on {payer.name}'s epoch: it moves "
                  f"{shift} units between two users (sum unchanged) and publishes a proof it "
                  "cannot make honestly")
    with timer.phase("submit"):
        gas[f"submit_epoch {_label(payer)}"] = chain.submit_bundle(forged)["gasUsed"]
    with timer.phase("verify"):
        report = _verify_cli("bundle", str(path))
    range_check = next(c for c in report["checks"] if c["name"] == "range_proofs")
    if report["exit_code"] != 1 or range_check.get("failing_leaves") != [bad_leaf]:
        raise DemoError(f"the verifier did not single out leaf {bad_leaf}: {range_check}")
    aggregate = next(c for c in report["checks"] if c["name"] == "aggregate")
    console.print(f"zkmeter-verify bundle: aggregate {'ok' if aggregate['ok'] else 'FAILED'}, "
                  f"range proof of leaf {bad_leaf} FAILS")
    onchain_provider = chain.provider_id_for(forged.provider_id)
    bond = chain.provider(onchain_provider).bond
    with timer.phase("challenge"):
        leaf = forged.leaves[bad_leaf]
        gas["challenge"] = chain.challenge(
            account_id, forged.epoch_id, leaf_index=bad_leaf, tag=leaf.tag,
            commitment=leaf.commitment, proof=leaf.proof,
            path=bundle_path(forged, bad_leaf), sender=challenger)["gasUsed"]
    status = chain.epoch(account_id, forged.epoch_id).status.name.lower()
    credited = chain.balance_of(challenger)
    to_payer = chain.balance_of(payer.address)
    burned = chain.total_burned()
    if (status != "rejected" or credited != bond // 10 or to_payer != bond * 4 // 10
            or burned != bond // 2 or chain.provider(onchain_provider).bond != 0):
        raise DemoError(f"challenge outcome wrong: status {status}, credited {credited}")
    console.print(f"challenge of leaf {bad_leaf}: epoch {status}, bond of {bond} wei slashed: "
                  f"{burned} burned, {to_payer} to {payer.name}, {credited} to the challenger")
    return {"outcome": "rejected", "epoch_id": forged.epoch_id, "bad_leaf": bad_leaf,
            "units_moved": shift, "bond_slashed_wei": bond, "challenger_credit_wei": credited,
            "payer_credit_wei": to_payer, "burned_wei": burned,
            "total_units": forged.total, "on_chain_status": status}


def _phantom(bundle: Bundle, payer: Payer, found: dict[str, Opening],
             signing_key: SigningKey) -> tuple[Bundle, bytes, dict[str, Opening], int, int]:
    """The provider bills a user who does not exist: value on a padding leaf (a fresh
    commitment under the padding's blinding, so R is unchanged, with an honest range proof),
    V, root and signature redone; the statement names the leaf as ``PHANTOM_USER``; the real
    users' openings are re-issued with their new Merkle paths. Returns (bundle, sealed
    statement, openings by user, the padding leaf's index, the phantom value)."""
    # the provider knows every leaf's opening: the demo takes them from the statement it made
    honest = unseal_statement(payer.sealed_statement, bytes(payer.key))
    pad = next((i for i, e in enumerate(honest.entries) if e.user_id is None), None)
    if pad is None:
        raise DemoError(f"--phantom needs a padding leaf in {payer.name}'s bundle")
    entry = honest.entries[pad]
    value = max(user.units for user in payer.users) or 1  # as much as its biggest user
    proof, (commitment,) = prove(bundle.context.transcript(), values=[value],
                                 blindings=[entry.blinding], n=bundle.bit_size)
    leaves = list(bundle.leaves)
    leaves[pad] = Leaf(entry.tag, commitment, proof)
    forged = dataclasses.replace(bundle, leaves=tuple(leaves), total=bundle.total + value,
                                 merkle_root=merkle.root([leaf.hash() for leaf in leaves]))
    forged = sign_bundle(forged, lambda m: bytes(signing_key.sign(m).signature))
    entries = [(e.tag, e.user_id, e.value, e.blinding, e.last_receipt_hash)
               for e in honest.entries]
    entries[pad] = (entry.tag, PHANTOM_USER, value, entry.blinding,
                    keccak256(b"a receipt nobody holds"))
    statement = make_statement(forged, entries, signing_key)
    sealed = seal_statement(statement, bytes(payer.key.public_key))
    reissued = {name: dataclasses.replace(o, path=tuple(bundle_path(forged, o.leaf_index)))
                for name, o in found.items()}
    return forged, sealed, reissued, pad, value


def _phantom_provider(*, chain: ChainClient, payer: Payer, found: dict[str, Opening],
                      out: Path, signing_key: SigningKey, timer: Timer, gas: dict[str, int],
                      rpc: str | None, verification: dict[str, dict[str, Any]],
                      console: Console) -> dict[str, Any]:
    """The phantom user: every public and per-user check passes; the payer's fails, with
    evidence that ``zkmeter-verify evidence`` confirms."""
    forged, sealed, reissued, pad, value = _phantom(payer.the_bundle(), payer, found,
                                                    signing_key)
    payer.bundle, payer.sealed_statement = forged, sealed
    folder = out / payer.name
    (folder / "bundle.json").write_text(forged.dumps())  # what the provider now publishes
    (folder / "statement.bin").write_bytes(sealed)
    for person in payer.users:
        box = seal(reissued[person.name], bytes(person.key.public_key))
        (out / person.name / "opening.hex").write_text("0x" + box.hex())
    console.print(f"[yellow]the provider bills a phantom user[/yellow] in {payer.name}'s "
                  f"epoch: {value} units on padding leaf {pad}, stated as {PHANTOM_USER!r}; "
                  "re-proved and re-signed")
    with timer.phase("submit"):
        gas[f"submit_epoch {_label(payer)}"] = chain.submit_bundle(forged)["gasUsed"]
    with timer.phase("verify"):
        checks = _verify_many(_verify_jobs(payer, out=out, base=None, rpc=rpc,
                                           contract=chain.settlement.address))
    verification.update(checks)
    payer_check = checks.pop(f"payer {payer.name}")
    failed = [name for name, result in checks.items()
              if result["exit_code"] != 0 or not result["ok"]]
    if failed:
        raise DemoError(f"a check other than the payer's failed on the phantom bundle: "
                        f"{', '.join(failed)}")
    status = {c["name"]: c["status"] for c in payer_check["checks"]}
    evidence = folder / "evidence.json"
    if payer_check["exit_code"] != 1 or status.get("users_known") != "failed" \
            or not evidence.exists():
        raise DemoError(f"zkmeter-verify payer did not catch the phantom user: {status}")
    console.print(f"zkmeter-verify bundle ok, me ok for {_users(len(payer.users))}"
                  + (", chain record matches" if rpc else "")
                  + f"; zkmeter-verify payer FAILS users_known, evidence in {evidence}")
    with timer.phase("evidence"):
        confirmed = _verify_cli("evidence", str(evidence))
    verification[f"evidence {payer.name}"] = confirmed
    holding = [c for c in confirmed.get("claims", ()) if c.get("holds")]
    if confirmed["exit_code"] != 1 or [c["kind"] for c in holding] != ["phantom_user"]:
        raise DemoError(f"zkmeter-verify evidence did not confirm the phantom user: "
                        f"{confirmed}")
    console.print(f"zkmeter-verify evidence: {confirmed['verdict']}")
    on_chain = chain.epoch(payer.account_id, forged.epoch_id).status.name.lower()
    console.print(f"the contract cannot tell a phantom user from a real one: {payer.name}'s "
                  f"epoch stays {on_chain} here; the payer's recourse is the evidence file "
                  "and its exit from the account")
    return {"outcome": "phantom_caught", "epoch_id": forged.epoch_id, "phantom_leaf": pad,
            "phantom_user": PHANTOM_USER, "phantom_units": value,
            "overcharge": value * UNIT_PRICE_WEI, "total_units": forged.total,
            "payer_failed_checks": sorted(n for n, s in status.items() if s == "failed"),
            "evidence": str(evidence),
            "evidence_claims": [{"kind": c["kind"], "strength": c.get("strength")}
                                for c in holding],
            "on_chain_status": on_chain}


def print_summary(summary: dict[str, Any], console: Console) -> None:
    """The closing table."""
    table = Table(title="zkmeter demo")
    table.add_column("what")
    table.add_column("value")
    rows = [
        ("outcome", summary["outcome"]),
        ("users / requests sent / retries", f"{summary['users']} / {summary['requests_sent']}"
                                            f" / {summary['retries']}"),
        ("tokens (in / out / cached / reasoning)", " / ".join(
            str(summary["tokens"][k]) for k in ("input", "output", "cached_input",
                                                 "reasoning"))),
        ("total units V", str(summary["total_units"])),
    ]
    for name, account in summary["accounts"].items():
        rows.append((f"{name} ({len(account['users'])} users)",
                     f"V {account['total_units']} units, paid {account['payment']} "
                     f"{account['asset_name']}, {account['on_chain_status']}"))
    if summary["outcome"] in ("rejected", "withheld"):
        rows.append((f"{summary['cheated_account']}: slashed bond",
                     f"{summary['bond_slashed_wei']} wei"))
    elif summary["outcome"] == "phantom_caught":
        rows.append((f"{summary['cheated_account']}: phantom",
                     f"{summary['phantom_units']} units billed to {summary['phantom_user']}"
                     f", caught by zkmeter-verify payer: {summary['evidence']}"))
    rows += [("gas", ", ".join(f"{k} {v:,}" for k, v in summary["gas"].items())),
             ("seconds per phase", ", ".join(f"{k} {v}" for k, v in
                                             summary["seconds"].items())),
             ("artifacts", summary["artifacts"])]
    for what, value in rows:
        table.add_row(what, value)
    console.print(table)
