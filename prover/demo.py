"""``zkmeter demo``: the whole story, end to end and for real, on the embedded defaults.

1. start ``zkmeter serve`` (gRPC + HTTP) on loopback ports, on a SQLite file in ``--out``;
2. make a provider key, deploy the contracts (in-process py-evm, or ``--rpc`` e.g. anvil),
   register the provider with a bond and fund its escrow from a payer account;
3. make N users with X25519 keys, registered over gRPC;
4. send M requests: the chat requests over HTTP through ``zkmeter gateway`` in front of the
   local OpenAI-compatible upstream (half streamed; the receipts come back in the header or
   the SSE comment), the reported counts with hidden reasoning tokens through the gRPC
   client, unary and streamed, some of them retried;
5. close the epoch over gRPC (with a progress bar) and fetch the bundle and the sealed
   openings over HTTP;
6. submit the epoch on-chain; run ``zkmeter-verify bundle``, ``me`` for every user and
   ``audit``; advance past the challenge window; finalize; withdraw the payment;
7. print a summary and leave every artifact in ``--out``.

``--bad-proof``: the provider cheats: it moves units from one user to another by shifting two
commitments (the sum, and so the on-chain check, is unchanged), publishes a proof it cannot
make honestly for the now "negative" value, and submits that epoch. The verifier names the
bad leaf, a challenger knocks the epoch out on-chain and takes the bond.

``--withhold``: the provider submits the epoch but publishes nothing a settler can fetch. The
settler's watcher (``zkmeter-verify chain --watch``, :mod:`verifier.watch`) sees no bundle
matching the chain, demands a leaf's data; the provider does not answer; after the response
window the watcher resolves the demand and the bond is slashed (half burned, 40 % to the
payer, 10 % to the settler).
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
from prover.chain import ChainClient, LeafInput, bundle_path
from prover.config import Settings
from verifier.bundle import Bundle, Leaf, parse_bundle, sign_bundle
from verifier.keys import write_secret_file
from verifier.opening import OpeningError, unseal
from verifier.receipts import decode_receipt
from zkmeter.client import Client, usage_request

MODEL_TEXT = "gpt-4o"
MODEL_REASONING = "o3"
UNIT_PRICE_WEI = 10_000  # wei per billable unit
BOND_WEI = 10**18
ESCROW_WEI = 10**19
CHALLENGE_WINDOW = 3_600
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


class Timer:
    """Seconds per phase."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = round(time.perf_counter() - start, 3)


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
        raise DemoError("--bad-proof needs at least two users with usage")
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


def run_demo(*, users: int = 8, requests: int = 48, out: Path, rpc: str | None = None,
             bad_proof: bool = False, withhold: bool = False,
             console: Console | None = None,
             seed: int = 7) -> dict[str, Any]:
    """Run the demo; returns the summary (raises DemoError if an outcome is wrong)."""
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
        accounts = list(chain.w3.eth.accounts)
        payer, challenger = accounts[1], accounts[2]
        gas["register"] = chain.register_provider(
            provider_id, bond=BOND_WEI, unit_price=UNIT_PRICE_WEI,
            challenge_window=CHALLENGE_WINDOW)["gasUsed"]
        onchain_provider = chain.provider_id_for(provider_id)
        gas["open_account"] = chain.open_account(onchain_provider, sender=payer)["gasUsed"]
        account_id = chain.account_id_for(onchain_provider, payer=payer)
        gas["deposit"] = chain.deposit(account_id, ESCROW_WEI, sender=payer)["gasUsed"]
    console.print(f"chain {chain.chain_id}: settlement {deployment.settlement}, provider "
                  f"{provider_id.hex()[:16]}... registered, escrow funded")

    settings = Settings(
        database_url=SecretStr(f"sqlite:///{out / 'zkmeter.sqlite'}"),
        signing_key=SecretStr(bytes(signing_key).hex()),
        chain_id=chain.chain_id, contract_address=deployment.settlement,
        api_key_hashes={hash_api_key(api_key): "operator"}, grpc_bind="127.0.0.1:0",
        http_bind="127.0.0.1:0", metrics_bind="127.0.0.1:0", shutdown_grace_seconds=2)
    services = build_services(settings)
    server = BackgroundServer(services)
    try:
        ep = server.endpoints
        base = f"http://{ep.http_host}:{ep.http_port}"
        console.print(f"zkmeter serve: gRPC 127.0.0.1:{ep.grpc_port}, HTTP {base}")
        with Client(f"127.0.0.1:{ep.grpc_port}", api_key=api_key) as zk:
            people = [User(f"user-{i + 1:02d}", PrivateKey.generate()) for i in range(users)]
            with timer.phase("register_users"):
                account = zk.register_account(
                    payer=bytes.fromhex(payer[2:]), asset=bytes(20),
                    payer_x25519_public_key=bytes(PrivateKey.generate().public_key))
                for person in people:
                    zk.register_user(person.name, account.account_id,
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
                          f"with their original receipts) for {users} users in epoch "
                          f"{epoch_id}")

            with timer.phase("close"):
                _close_with_progress(zk, epoch_id, console)
        with timer.phase("publish"):
            bundle_bytes = httpx.get(f"{base}/v1/epochs/{epoch_id}/bundle", timeout=60).content
            openings = httpx.get(f"{base}/v1/epochs/{epoch_id}/openings", timeout=60).json()
        (out / "bundle.json").write_bytes(bundle_bytes)
        (out / "openings.json").write_text(json.dumps(openings))
        bundle = parse_bundle(bundle_bytes)
        summary = _settle_and_verify(
            chain=chain, bundle=bundle, people=people, openings=openings, out=out, base=base,
            epoch_id=epoch_id, bad_proof=bad_proof, withhold=withhold,
            signing_key=signing_key, timer=timer,
            gas=gas, challenger=challenger, rpc=rpc, console=console, account_id=account_id)
    finally:
        server.stop()
        services.close()
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
                  "rpc": rpc or "embedded py-evm"},
    })
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


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
                  f"{closed.total_units} units, root 0x{closed.merkle_root.hex()[:16]}...")


def _find_openings(people: list[User], openings: dict[str, str], epoch_id: int,
                   out: Path) -> dict[str, Any]:
    """Each user tries its key on the published boxes (it need not know its tag)."""
    found = {}
    for person in people:
        for sealed_hex in openings.values():
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
            (folder / "receipts.json").write_text(json.dumps(
                [person.receipts[s] for s in sorted(person.receipts)]))
            (folder / "texts.json").write_text(json.dumps(person.texts))
            break
        else:
            raise DemoError(f"{person.name} found no opening for epoch {epoch_id}")
    return found


def _settle_and_verify(*, chain: ChainClient, bundle: Bundle, people: list[User],
                       openings: dict[str, str], out: Path, base: str, epoch_id: int,
                       bad_proof: bool, withhold: bool, signing_key: SigningKey,
                       timer: Timer, gas: dict[str, int], challenger: str, rpc: str | None,
                       console: Console, account_id: bytes) -> dict[str, Any]:
    provider_id = bundle.provider_id
    onchain_provider = chain.provider_id_for(provider_id)
    if withhold:
        return _withholding_provider(chain=chain, bundle=bundle, out=out, timer=timer,
                                     gas=gas, challenger=challenger, console=console,
                                     account_id=account_id)
    found = _find_openings(people, openings, epoch_id, out)
    if bad_proof:
        return _cheating_provider(chain=chain, bundle=bundle, found=found, out=out,
                                  signing_key=signing_key, timer=timer, gas=gas,
                                  challenger=challenger, console=console,
                                  account_id=account_id)
    with timer.phase("submit"):
        gas["submit_epoch"] = _submit(chain, bundle, account_id)["gasUsed"]
    with timer.phase("verify"):
        checks = {"bundle": _verify_cli("bundle", f"{base}/v1/epochs/{epoch_id}/bundle",
                                        "--provider-key", provider_id.hex())}
        for person in people:
            folder = out / person.name
            checks[f"me {person.name}"] = _verify_cli(
                "me", "--opening", str(folder / "opening.hex"), "--secret-key",
                str(folder / "secret.key"), "--receipts", str(folder / "receipts.json"),
                "--texts", str(folder / "texts.json"), "--bundle", str(out / "bundle.json"))
        checks["audit"] = _verify_cli("audit", f"{base}/v1/epochs/{epoch_id}/bundle",
                                      "--openings", f"{base}/v1/epochs/{epoch_id}/openings")
        if rpc:
            checks["chain"] = _verify_cli("chain", "--rpc", rpc, "--contract",
                                          chain.settlement.address, "--epoch", str(epoch_id),
                                          "--bundle", str(out / "bundle.json"),
                                          "--account-id", account_id.hex())
    failed = [name for name, result in checks.items()
              if result["exit_code"] != 0 or not result["ok"]]
    (out / "verification.json").write_text(json.dumps(checks, indent=1))
    if failed:
        raise DemoError(f"verification failed: {', '.join(failed)}")
    console.print(f"zkmeter-verify: bundle ok, {len(people)} users verified their charge "
                  f"(me), audit clean" + (", chain record matches" if rpc else ""))
    with timer.phase("finalize"):
        chain.advance_time(CHALLENGE_WINDOW + 1)
        gas["finalize"] = chain.finalize(account_id, epoch_id)["gasUsed"]
        earned = chain.earnings(onchain_provider)
        before = chain.w3.eth.get_balance(chain.account)
        receipt = chain.withdraw_earnings(onchain_provider)
        paid = chain.w3.eth.get_balance(chain.account) - before + receipt["gasUsed"] * \
            receipt["effectiveGasPrice"]
    expected = bundle.total * UNIT_PRICE_WEI
    if earned != expected or paid != expected:
        raise DemoError(f"payment {earned} (withdrawn {paid}) != V * unitPrice = {expected}")
    console.print(f"finalized: paid {earned} wei = V ({bundle.total}) x unit price "
                  f"({UNIT_PRICE_WEI} wei), withdrawn by the provider")
    return {"outcome": "settled", "epoch_id": epoch_id, "leaves": len(bundle.leaves),
            "total_units": bundle.total, "unit_price_wei": UNIT_PRICE_WEI,
            "payment_wei": earned, "users_verified": len(people), "audit_clean": True,
            "on_chain_status": chain.epoch(account_id, epoch_id).status.name.lower()}


def _submit(chain: ChainClient, bundle: Bundle, account_id: bytes) -> Any:
    """submitEpoch of the bundle's leaves to the demo's billing account. (Until bundles name
    their account, issue 14, the proofs' subject is the provider key, so the demo submits
    the leaves to the account explicitly and challenges only a leaf that is bad in any
    context.)"""
    leaves = [LeafInput(leaf.tag, leaf.commitment, keccak256(leaf.proof))
              for leaf in bundle.leaves]
    return chain.submit_epoch(account_id, bundle.epoch_id, total=bundle.total,
                              total_blinding=bundle.total_blinding, leaves=leaves)


def _withholding_provider(*, chain: ChainClient, bundle: Bundle, out: Path, timer: Timer,
                          gas: dict[str, int], challenger: str, console: Console,
                          account_id: bytes) -> dict[str, Any]:
    """The provider submits and withholds; the settler's watcher demands, then resolves."""
    from verifier.watch import watch_round

    with timer.phase("submit"):
        gas["submit_epoch"] = _submit(chain, bundle, account_id)["gasUsed"]
    console.print("[yellow]the provider withholds:[/yellow] the epoch is on-chain, its bundle "
                  "is published nowhere a settler can fetch it")
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
    payer = chain.billing_account(account_id).payer
    to_payer = chain.balance_of(payer)
    demand_bond = chain.params().demand_bond
    if ([a.kind for a in resolved] != ["resolve"] or status != "rejected"
            or credited != bond // 10 + demand_bond or to_payer != bond * 4 // 10):
        raise DemoError(f"withholding outcome wrong: {resolved}, status {status}, "
                        f"credited {credited}")
    console.print(f"unanswered after the response window: epoch {status}, bond of {bond} wei "
                  f"slashed: {bond // 2} burned, {to_payer} to the payer, {bond // 10} and "
                  f"the demand bond back to the settler")
    return {"outcome": "withheld", "epoch_id": bundle.epoch_id, "demanded_leaf": leaf,
            "bond_slashed_wei": bond, "settler_credit_wei": credited,
            "payer_credit_wei": to_payer, "total_units": bundle.total,
            "on_chain_status": status}


def _cheating_provider(*, chain: ChainClient, bundle: Bundle, found: dict[str, Any],
                       out: Path, signing_key: SigningKey, timer: Timer, gas: dict[str, int],
                       challenger: str, console: Console,
                       account_id: bytes) -> dict[str, Any]:
    forged, bad_leaf, shift = _cheat(bundle, found, signing_key)
    path = out / "bundle.cheating.json"
    path.write_text(forged.dumps())
    console.print(f"[yellow]the provider cheats:[/yellow] it moves {shift} units between two "
                  f"users (sum unchanged) and publishes a proof it cannot make honestly")
    with timer.phase("submit"):
        gas["submit_epoch"] = _submit(chain, forged, account_id)["gasUsed"]
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
    payer = chain.billing_account(account_id).payer
    with timer.phase("challenge"):
        leaf = forged.leaves[bad_leaf]
        gas["challenge"] = chain.challenge(
            account_id, forged.epoch_id, leaf_index=bad_leaf, tag=leaf.tag,
            commitment=leaf.commitment, proof=leaf.proof,
            path=bundle_path(forged, bad_leaf), sender=challenger)["gasUsed"]
    status = chain.epoch(account_id, forged.epoch_id).status.name.lower()
    credited = chain.balance_of(challenger)
    to_payer = chain.balance_of(payer)
    burned = chain.total_burned()
    if (status != "rejected" or credited != bond // 10 or to_payer != bond * 4 // 10
            or burned != bond // 2 or chain.provider(onchain_provider).bond != 0):
        raise DemoError(f"challenge outcome wrong: status {status}, credited {credited}")
    console.print(f"challenge of leaf {bad_leaf}: epoch {status}, bond of {bond} wei slashed: "
                  f"{burned} burned, {to_payer} to the payer, {credited} to the challenger")
    return {"outcome": "rejected", "epoch_id": forged.epoch_id, "bad_leaf": bad_leaf,
            "units_moved": shift, "bond_slashed_wei": bond, "challenger_credit_wei": credited,
            "payer_credit_wei": to_payer, "burned_wei": burned,
            "total_units": forged.total, "on_chain_status": status}


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
        ("gas", ", ".join(f"{k} {v:,}" for k, v in summary["gas"].items())),
    ]
    if summary["outcome"] == "settled":
        rows.append(("payment", f"{summary['payment_wei']} wei = V x "
                                f"{summary['unit_price_wei']} wei"))
    else:
        rows.append(("slashed bond", f"{summary['bond_slashed_wei']} wei to the challenger"))
    rows += [("seconds per phase", ", ".join(f"{k} {v}" for k, v in
                                             summary["seconds"].items())),
             ("artifacts", summary["artifacts"])]
    for what, value in rows:
        table.add_row(what, value)
    console.print(table)
