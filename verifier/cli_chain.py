"""``zkmeter chain``: one command per action of the settlement contract.

Providers: ``deploy``, ``register``, ``set-unit-price``, ``add-bond``, ``unbond``,
``cancel-unbond``, ``withdraw-bond``, ``transfer-operator``, ``accept-operator``, ``submit``,
``answer``, ``withdraw-earnings``. Payers: ``open-account``, ``deposit``,
``request-withdrawal``, ``complete-withdrawal``. Settlers (anyone): ``challenge`` and
``demand`` (each commits, then reveals in a later block), ``resolve``, ``finalize``,
``withdraw``. Reads: ``status`` (a table, or ``--json``).

These need only ``pip install 'zkmeter[chain]'`` (web3; no server stack). ``zkmeter chain``
has them all; ``zkmeter-verify`` has the settler's (``finalize``, ``challenge``, ``demand``,
``resolve``, ``withdraw``, ``status``: :data:`SETTLER_COMMANDS`), so a settler runs them from
the verifier install. Every command takes ``--rpc-url`` (``$ZKMETER_CHAIN_RPC_URL``);
without one it runs on a throwaway in-process py-evm chain that lives only as long as the
command. ``--contract`` is ``$ZKMETER_CONTRACT_ADDRESS``. Transactions are sent from
``--from`` (an account the node unlocks, e.g. anvil's) or, if ``$ZKMETER_CHAIN_PRIVATE_KEY``
is set, signed locally with that key (never a flag, so it stays out of shell history).
Amounts are in the asset's smallest unit (wei for ETH). ``--json`` prints one JSON object.
Exit codes: 0 done, 1 the contract refused (its custom error as a sentence, with dates, from
verifier/chain_errors.py), 2 bad input or no chain.
"""

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from verifier.bundle import Bundle, BundleFormatError, parse_bundle
from verifier.extras import MissingExtra, needs

if TYPE_CHECKING:  # web3 comes with the [chain] extra; imported when a command runs
    from verifier.chain_client import ChainClient

EXIT_OK, EXIT_REFUSED, EXIT_BAD_INPUT = 0, 1, 2
KEY_ENV = "ZKMETER_CHAIN_PRIVATE_KEY"
ETH = "0x" + "00" * 20

app = typer.Typer(
    name="chain",
    help="One command per settlement-contract action (providers, payers, settlers), and "
         "status. Needs zkmeter[chain].",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

RpcUrl = Annotated[
    str | None,
    typer.Option("--rpc-url", envvar="ZKMETER_CHAIN_RPC_URL",
                 help="JSON-RPC URL ($ZKMETER_CHAIN_RPC_URL); none: a throwaway in-process "
                      "chain."),
]
Sender = Annotated[
    str | None, typer.Option("--from", help="Unlocked sender account (default: the node's "
                                            "first, or $ZKMETER_CHAIN_PRIVATE_KEY's).")
]
Contract = Annotated[
    str, typer.Option("--contract", "--settlement", envvar="ZKMETER_CONTRACT_ADDRESS",
                      help="Settlement contract address ($ZKMETER_CONTRACT_ADDRESS).")
]
ProviderId = Annotated[str, typer.Option("--provider-id", help="Provider id, 32 bytes hex "
                                                               "(chain register prints it).")]
AccountId = Annotated[str, typer.Option("--account-id", help="Billing account id, 32 bytes "
                                                             "hex (chain open-account prints "
                                                             "it).")]
Epoch = Annotated[int, typer.Option("--epoch", help="Epoch id.")]
Leaf = Annotated[int, typer.Option("--leaf", help="Leaf index in the bundle.")]
Amount = Annotated[int, typer.Option("--amount", min=1, help="Amount in the asset's smallest "
                                                             "unit (wei for ETH).")]
To = Annotated[str | None, typer.Option("--to", help="Recipient (default: the sender).")]
BundleFile = Annotated[str, typer.Option("--bundle", help="The epoch's bundle (file or URL).")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def _out(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(data))
        return
    for key, value in data.items():
        if isinstance(value, dict):
            print(f"{key}:")
            for k, v in value.items():
                print(f"  {k}: {v}")
        elif key != "ok":
            print(f"{key}: {value}")


def _fail(code: int, message: str, as_json: bool, **extra: Any) -> NoReturn:
    if as_json:
        print(json.dumps({"ok": False, "error": message, **extra}))
    else:
        typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _client(rpc_url: str | None, sender: str | None, contract: str | None,
            as_json: bool) -> "ChainClient":
    try:
        with needs("chain", "zkmeter chain"):
            from verifier.chain import ChainError
            from verifier.chain_client import ChainClient

            try:
                return ChainClient.connect(rpc_url, account=sender,
                                           private_key=os.environ.get(KEY_ENV),
                                           settlement=contract)
            except (ChainError, ValueError, OSError) as exc:
                _fail(EXIT_BAD_INPUT, f"cannot use the chain: {exc}", as_json)
    except MissingExtra as exc:
        _fail(EXIT_BAD_INPUT, str(exc), as_json)


def _bytes32(text: str, what: str, as_json: bool) -> bytes:
    try:
        value = bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        value = b""
    if len(value) != 32:
        _fail(EXIT_BAD_INPUT, f"{what} must be 32 bytes of hex", as_json)
    return value


def _address(text: str | None, what: str, as_json: bool) -> str | None:
    if text is None:
        return None
    raw = text.removeprefix("0x")
    try:
        ok = len(bytes.fromhex(raw)) == 20
    except ValueError:
        ok = False
    if not ok:
        _fail(EXIT_BAD_INPUT, f"{what} must be a 20-byte hex address", as_json)
    return "0x" + raw


def _error_inputs() -> dict[str, list[str]]:
    from verifier.chain import SETTLEMENT, VERIFIER, load_artifact

    names: dict[str, list[str]] = {}
    for artifact in (SETTLEMENT, VERIFIER, "ZkMeterTestToken"):
        try:
            abi = load_artifact(artifact).abi
        except Exception:  # noqa: S112 - an artifact not shipped: its errors stay generic
            continue
        for item in abi:
            if item["type"] == "error":
                names[item["name"]] = [i["name"] for i in item["inputs"]]
    return names


def _clock(client: "ChainClient") -> Any:
    from verifier.chain_errors import ChainClock

    try:
        latest = int(client.w3.eth.get_block("latest")["timestamp"])
    except Exception:  # the clock is a courtesy: the sentence reads without it
        return None
    return ChainClock(latest, int(time.time()))


def _run(as_json: bool, client: "ChainClient", action: Callable[[], Any]) -> Any:
    """Run a chain action: a contract refusal is its sentence and exit 1, chain trouble
    exit 2."""
    from verifier.chain import ChainError
    from verifier.chain_client import SettlementError
    from verifier.chain_errors import explain

    try:
        return action()
    except SettlementError as exc:
        sentence = explain(exc.name, exc.args_, _error_inputs().get(exc.name, []),
                           _clock(client))
        _fail(EXIT_REFUSED, sentence, as_json, contract_error=exc.name)
    except (ChainError, ValueError, OSError, ConnectionError) as exc:
        _fail(EXIT_BAD_INPUT, str(exc), as_json)
    except Exception as exc:
        if type(exc).__module__.split(".")[0] not in ("web3", "eth_utils", "eth_abi",
                                                      "requests", "urllib3"):
            raise
        if type(exc).__name__ == "BadFunctionCallOutput":
            _fail(EXIT_BAD_INPUT, f"no settlement contract answers at "
                                  f"{client.settlement_address}: check --contract and the "
                                  f"chain", as_json)
        _fail(EXIT_BAD_INPUT, f"the chain answered {type(exc).__name__}: {exc}", as_json)


def _tx(receipt: Any, **extra: Any) -> dict[str, Any]:
    return {"ok": True, "transaction": receipt["transactionHash"].hex(),
            "gas_used": int(receipt["gasUsed"]), **extra}


def _load_bundle(source: str, as_json: bool) -> Bundle:
    from verifier.sources import InputError, read_source

    try:
        return parse_bundle(read_source(source))
    except (InputError, BundleFormatError) as exc:
        _fail(EXIT_BAD_INPUT, f"cannot read the bundle: {exc}", as_json)


def _subject(bundle: Bundle, account_id: str | None, as_json: bool) -> bytes:
    """The account a bundle settles: the one it names (a different --account-id is refused:
    its proofs are bound to the named account and would be slashable under another), else,
    for a version-1 bundle, --account-id or its provider id."""
    named = bundle.account_id
    if account_id is not None:
        given = _bytes32(account_id, "account id", as_json)
        if named is not None and given != named:
            _fail(EXIT_BAD_INPUT, f"the bundle bills account 0x{named.hex()}, not "
                                  f"0x{given.hex()}: its proofs are bound to its own account "
                                  "(drop --account-id)", as_json)
        return given
    return bundle.subject


def _signing_public_key(text: str | None, as_json: bool) -> bytes:
    """--signing-key, else the public key of the operator's configured seed."""
    if text is not None:
        return _bytes32(text, "signing key", as_json)
    from nacl.signing import SigningKey

    seed = os.environ.get("ZKMETER_SIGNING_KEY")
    seed_file = os.environ.get("ZKMETER_SIGNING_KEY_FILE")
    try:
        if seed_file and not seed:
            raw = Path(seed_file).read_bytes()
            seed = raw.strip().decode() if len(raw.strip()) == 64 else raw.hex()
        if not seed:
            raise ValueError
        return bytes(SigningKey(bytes.fromhex(seed.strip())).verify_key)
    except (ValueError, OSError, UnicodeDecodeError):
        _fail(EXIT_BAD_INPUT, "give --signing-key (the provider's Ed25519 public key), or set "
                              "ZKMETER_SIGNING_KEY(_FILE) to derive it", as_json)


# ------------------------------------------------------------------------------ providers


@app.command()
def deploy(rpc_url: RpcUrl = None, sender: Sender = None, as_json: JsonFlag = False) -> None:
    """Deploy BulletproofVerifier and ZkMeterSettlement (the default protocol parameters);
    print the chain id and addresses: ZKMETER_CHAIN_ID and ZKMETER_CONTRACT_ADDRESS. Without
    --rpc-url this deploys to a throwaway in-process chain that is gone when the command
    exits."""
    client = _client(rpc_url, sender, None, as_json)
    deployment = _run(as_json, client, client.deploy)
    _out({"ok": True, **deployment.to_json(), "rpc_url": rpc_url or "in-process (throwaway)"},
         as_json)
    if rpc_url is None:
        typer.echo("note: deployed to a throwaway in-process chain (py-evm), gone when this "
                   "command exits; pass --rpc-url URL to deploy to a real node", err=True)
    elif not as_json:
        print(f"export ZKMETER_CHAIN_ID={deployment.chain_id} "
              f"ZKMETER_CONTRACT_ADDRESS={deployment.settlement}")


@app.command()
def register(
    contract: Contract,
    unit_price: Annotated[int, typer.Option("--unit-price", min=1,
                                            help="Price of one committed unit in wei, for "
                                                 "accounts opened from now on.")],
    signing_key: Annotated[str | None, typer.Option(
        "--signing-key", help="The provider's Ed25519 public key (default: derived from "
                              "ZKMETER_SIGNING_KEY / _FILE).")] = None,
    bond: Annotated[int | None, typer.Option(
        help="Bond in wei (default: the contract's minimum bond).")] = None,
    window: Annotated[int | None, typer.Option(
        help="Challenge window in seconds (default: the contract's minimum).")] = None,
    rpc_url: RpcUrl = None,
    sender: Sender = None,
    as_json: JsonFlag = False,
) -> None:
    """Register the sender as operator of provider keccak256(sender, signing key), staking
    the bond; prints the provider id."""
    client = _client(rpc_url, sender, contract, as_json)
    key = _signing_public_key(signing_key, as_json)
    params = _run(as_json, client, client.params)
    stake = params.min_bond if bond is None else bond
    seconds = params.min_challenge_window if window is None else window
    receipt = _run(as_json, client, lambda: client.register_provider(
        key, bond=stake, unit_price=unit_price, challenge_window=seconds))
    pid = client.provider_id_for(key)
    _out(_tx(receipt, provider_id="0x" + pid.hex(), bond=stake, challenge_window=seconds,
             unit_price=unit_price), as_json)


@app.command("set-unit-price")
def set_unit_price(contract: Contract, provider_id: ProviderId,
                   unit_price: Annotated[int, typer.Option("--unit-price", min=1,
                                                           help="Wei per unit.")],
                   rpc_url: RpcUrl = None, sender: Sender = None,
                   as_json: JsonFlag = False) -> None:
    """Set the unit price for accounts opened from now on (operator)."""
    client = _client(rpc_url, sender, contract, as_json)
    pid = _bytes32(provider_id, "provider id", as_json)
    _out(_tx(_run(as_json, client, lambda: client.set_unit_price(pid, unit_price))), as_json)


@app.command("add-bond")
def add_bond(contract: Contract, provider_id: ProviderId, amount: Amount,
             rpc_url: RpcUrl = None, sender: Sender = None, as_json: JsonFlag = False) -> None:
    """Add to the provider's bond (operator; also re-bonds a slashed provider)."""
    client = _client(rpc_url, sender, contract, as_json)
    pid = _bytes32(provider_id, "provider id", as_json)
    receipt = _run(as_json, client, lambda: client.add_bond(pid, amount))
    _out(_tx(receipt, bond=client.provider(pid).bond), as_json)


@app.command()
def unbond(contract: Contract, provider_id: ProviderId, rpc_url: RpcUrl = None,
           sender: Sender = None, as_json: JsonFlag = False) -> None:
    """Request to unbond (operator): starts the cooldown and stops new submissions."""
    client = _client(rpc_url, sender, contract, as_json)
    pid = _bytes32(provider_id, "provider id", as_json)
    _out(_tx(_run(as_json, client, lambda: client.request_unbond(pid))), as_json)


@app.command("cancel-unbond")
def cancel_unbond(contract: Contract, provider_id: ProviderId, rpc_url: RpcUrl = None,
                  sender: Sender = None, as_json: JsonFlag = False) -> None:
    """Cancel an unbond request (operator)."""
    client = _client(rpc_url, sender, contract, as_json)
    pid = _bytes32(provider_id, "provider id", as_json)
    _out(_tx(_run(as_json, client, lambda: client.cancel_unbond(pid))), as_json)


@app.command("withdraw-bond")
def withdraw_bond(contract: Contract, provider_id: ProviderId, to: To = None,
                  rpc_url: RpcUrl = None, sender: Sender = None,
                  as_json: JsonFlag = False) -> None:
    """Withdraw the whole bond after the cooldown, with nothing pending (operator)."""
    client = _client(rpc_url, sender, contract, as_json)
    pid = _bytes32(provider_id, "provider id", as_json)
    dest = _address(to, "--to", as_json)
    _out(_tx(_run(as_json, client, lambda: client.withdraw_bond(pid, to=dest))), as_json)


@app.command("transfer-operator")
def transfer_operator(contract: Contract, provider_id: ProviderId,
                      new_operator: Annotated[str, typer.Option("--new-operator",
                                                                help="The address offered "
                                                                     "the role.")],
                      rpc_url: RpcUrl = None, sender: Sender = None,
                      as_json: JsonFlag = False) -> None:
    """Offer the operator role to another address (it then runs accept-operator)."""
    client = _client(rpc_url, sender, contract, as_json)
    pid = _bytes32(provider_id, "provider id", as_json)
    new = _address(new_operator, "--new-operator", as_json) or ""
    _out(_tx(_run(as_json, client, lambda: client.transfer_operator(pid, new))), as_json)


@app.command("accept-operator")
def accept_operator(contract: Contract, provider_id: ProviderId, rpc_url: RpcUrl = None,
                    sender: Sender = None, as_json: JsonFlag = False) -> None:
    """Accept the operator role offered to the sender."""
    client = _client(rpc_url, sender, contract, as_json)
    pid = _bytes32(provider_id, "provider id", as_json)
    _out(_tx(_run(as_json, client, lambda: client.accept_operator(pid))), as_json)


@app.command()
def submit(
    contract: Contract,
    bundle: BundleFile,
    account_id: Annotated[str | None, typer.Option(
        "--account-id", help="The account the epoch settles (default: the one the bundle "
                             "names).")] = None,
    rpc_url: RpcUrl = None,
    sender: Sender = None,
    as_json: JsonFlag = False,
) -> None:
    """Submit a closed epoch's bundle to its billing account (operator): reserves V * unit
    price of the account's escrow and locks as much of the bond."""
    from circuits.hashing import keccak256

    parsed = _load_bundle(bundle, as_json)
    client = _client(rpc_url, sender, contract, as_json)  # first: it names a missing extra
    from verifier.chain_client import LeafInput

    subject = _subject(parsed, account_id, as_json)
    if parsed.account_id is None and subject != parsed.subject:
        _fail(EXIT_BAD_INPUT, f"this version-1 bundle's proofs are bound to "
                              f"0x{parsed.subject.hex()}, not to account 0x{subject.hex()}: "
                              "submitted there, every leaf could be challenged and the bond "
                              "slashed (close the epoch with this zkmeter: its bundles name "
                              "their account)", as_json)
    if parsed.chain_id != client.chain_id:
        _fail(EXIT_BAD_INPUT, f"the bundle is for chain {parsed.chain_id}, the node is chain "
                              f"{client.chain_id}", as_json)
    if "0x" + parsed.contract.hex() != contract.lower():
        _fail(EXIT_BAD_INPUT, f"the bundle is bound to contract 0x{parsed.contract.hex()}, "
                              f"not {contract}: set ZKMETER_CONTRACT_ADDRESS before closing "
                              f"epochs", as_json)
    leaves = [LeafInput(leaf.tag, leaf.commitment, keccak256(leaf.proof))
              for leaf in parsed.leaves]
    receipt = _run(as_json, client, lambda: client.submit_epoch(
        subject, parsed.epoch_id, total=parsed.total, total_blinding=parsed.total_blinding,
        leaves=leaves))
    _out(_tx(receipt, epoch=client.epoch(subject, parsed.epoch_id).to_json()), as_json)


@app.command()
def answer(contract: Contract, bundle: BundleFile, leaf: Leaf,
           account_id: Annotated[str | None, typer.Option("--account-id")] = None,
           rpc_url: RpcUrl = None, sender: Sender = None, as_json: JsonFlag = False) -> None:
    """Answer a data demand on a leaf with its data from the bundle (anyone holding it; the
    demand bond goes to the sender)."""
    parsed = _load_bundle(bundle, as_json)
    if not 0 <= leaf < len(parsed.leaves):
        _fail(EXIT_BAD_INPUT, f"the bundle has leaves 0..{len(parsed.leaves) - 1}", as_json)
    client = _client(rpc_url, sender, contract, as_json)  # first: it names a missing extra
    from verifier.chain_client import bundle_path

    subject = _subject(parsed, account_id, as_json)
    data = parsed.leaves[leaf]
    receipt = _run(as_json, client, lambda: client.answer_demand(
        subject, parsed.epoch_id, leaf_index=leaf, tag=data.tag, commitment=data.commitment,
        proof=data.proof, path=bundle_path(parsed, leaf)))
    _out(_tx(receipt), as_json)


@app.command("withdraw-earnings")
def withdraw_earnings(contract: Contract, provider_id: ProviderId,
                      asset: Annotated[str, typer.Option(help="Asset (0x0: ETH).")] = ETH,
                      to: To = None, rpc_url: RpcUrl = None, sender: Sender = None,
                      as_json: JsonFlag = False) -> None:
    """Withdraw the provider's finalized earnings in one asset (operator)."""
    client = _client(rpc_url, sender, contract, as_json)
    pid = _bytes32(provider_id, "provider id", as_json)
    token = _address(asset, "--asset", as_json) or ETH
    dest = _address(to, "--to", as_json)
    amount = _run(as_json, client, lambda: client.earnings(pid, token))
    receipt = _run(as_json, client, lambda: client.withdraw_earnings(pid, asset=token,
                                                                     to=dest))
    _out(_tx(receipt, withdrawn=amount), as_json)


# --------------------------------------------------------------------------------- payers


@app.command("open-account")
def open_account(contract: Contract, provider_id: ProviderId,
                 asset: Annotated[str, typer.Option(help="Asset: 0x0 for ETH, or an ERC-20 "
                                                         "address.")] = ETH,
                 rpc_url: RpcUrl = None, sender: Sender = None,
                 as_json: JsonFlag = False) -> None:
    """Open a billing account with the provider (the sender is its payer), at the provider's
    current unit price; prints the account id."""
    client = _client(rpc_url, sender, contract, as_json)
    pid = _bytes32(provider_id, "provider id", as_json)
    token = _address(asset, "--asset", as_json) or ETH
    receipt = _run(as_json, client, lambda: client.open_account(pid, asset=token))
    aid = client.account_id_for(pid, payer=client.account, asset=token)
    _out(_tx(receipt, account_id="0x" + aid.hex(),
             unit_price=client.billing_account(aid).unit_price), as_json)


@app.command()
def deposit(contract: Contract, account_id: AccountId, amount: Amount,
            rpc_url: RpcUrl = None, sender: Sender = None, as_json: JsonFlag = False) -> None:
    """Fund the account's escrow (payer; ERC-20: approves the settlement first)."""
    client = _client(rpc_url, sender, contract, as_json)
    aid = _bytes32(account_id, "account id", as_json)
    record = _run(as_json, client, lambda: client.billing_account(aid))
    if int(record.asset, 16) != 0:
        _run(as_json, client, lambda: client.approve_token(record.asset, amount))
    receipt = _run(as_json, client, lambda: client.deposit(aid, amount))
    _out(_tx(receipt, escrow=client.billing_account(aid).escrow), as_json)


@app.command("request-withdrawal")
def request_withdrawal(contract: Contract, account_id: AccountId,
                       amount: Annotated[int, typer.Option(min=0, help="Amount (0 cancels a "
                                                                       "request).")],
                       rpc_url: RpcUrl = None, sender: Sender = None,
                       as_json: JsonFlag = False) -> None:
    """Ask to withdraw unreserved escrow (payer); available after the notice period."""
    client = _client(rpc_url, sender, contract, as_json)
    aid = _bytes32(account_id, "account id", as_json)
    receipt = _run(as_json, client, lambda: client.request_withdrawal(aid, amount))
    record = client.billing_account(aid)
    _out(_tx(receipt, amount=record.withdrawal_amount, available_at=record.withdrawal_at),
         as_json)


@app.command("complete-withdrawal")
def complete_withdrawal(contract: Contract, account_id: AccountId, to: To = None,
                        rpc_url: RpcUrl = None, sender: Sender = None,
                        as_json: JsonFlag = False) -> None:
    """Withdraw the requested escrow after the notice (payer)."""
    client = _client(rpc_url, sender, contract, as_json)
    aid = _bytes32(account_id, "account id", as_json)
    dest = _address(to, "--to", as_json)
    _out(_tx(_run(as_json, client, lambda: client.complete_withdrawal(aid, to=dest))),
         as_json)


# ------------------------------------------------------------------------------- settlers


@app.command()
def challenge(contract: Contract, bundle: BundleFile, leaf: Leaf,
              account_id: Annotated[str | None, typer.Option("--account-id")] = None,
              rpc_url: RpcUrl = None, sender: Sender = None, as_json: JsonFlag = False) -> None:
    """Challenge a leaf's range proof (the one `zkmeter-verify bundle` names): commits, then
    reveals in a later block. A bad proof rejects every pending epoch of the provider and
    slashes its bond; a good one refuses with RangeProofValid."""
    parsed = _load_bundle(bundle, as_json)
    if not 0 <= leaf < len(parsed.leaves):
        _fail(EXIT_BAD_INPUT, f"the bundle has leaves 0..{len(parsed.leaves) - 1}", as_json)
    client = _client(rpc_url, sender, contract, as_json)  # first: it names a missing extra
    from verifier.chain_client import bundle_path

    subject = _subject(parsed, account_id, as_json)
    data = parsed.leaves[leaf]
    receipt = _run(as_json, client, lambda: client.challenge(
        subject, parsed.epoch_id, leaf_index=leaf, tag=data.tag, commitment=data.commitment,
        proof=data.proof, path=bundle_path(parsed, leaf)))
    _out(_tx(receipt, epoch=client.epoch(subject, parsed.epoch_id).to_json(),
             credited=client.balance_of(client.account)), as_json)


@app.command()
def demand(contract: Contract, account_id: AccountId, epoch: Epoch, leaf: Leaf,
           rpc_url: RpcUrl = None, sender: Sender = None, as_json: JsonFlag = False) -> None:
    """Demand a leaf's data on-chain (commits, then reveals with the demand bond): unanswered
    within the response window, the epoch can be resolved as withheld."""
    client = _client(rpc_url, sender, contract, as_json)
    aid = _bytes32(account_id, "account id", as_json)
    receipt = _run(as_json, client, lambda: client.demand_data(aid, epoch, leaf))
    record = client.demand(aid, epoch, leaf)
    _out(_tx(receipt, demand={"demander": record.demander, "deadline": record.deadline,
                              "status": record.status.name.lower()}), as_json)


@app.command()
def resolve(contract: Contract, account_id: AccountId, epoch: Epoch, leaf: Leaf,
            rpc_url: RpcUrl = None, sender: Sender = None, as_json: JsonFlag = False) -> None:
    """Resolve an unanswered demand after its deadline (anyone): slashes the provider."""
    client = _client(rpc_url, sender, contract, as_json)
    aid = _bytes32(account_id, "account id", as_json)
    receipt = _run(as_json, client, lambda: client.resolve_demand(aid, epoch, leaf))
    _out(_tx(receipt, epoch=client.epoch(aid, epoch).to_json()), as_json)


@app.command()
def finalize(contract: Contract, account_id: AccountId, epoch: Epoch, rpc_url: RpcUrl = None,
             sender: Sender = None, as_json: JsonFlag = False) -> None:
    """Finalize an epoch after its challenge window (anyone): pays the provider from the
    account's reserved escrow (or releases a stale or expired epoch)."""
    client = _client(rpc_url, sender, contract, as_json)
    aid = _bytes32(account_id, "account id", as_json)
    receipt = _run(as_json, client, lambda: client.finalize(aid, epoch))
    _out(_tx(receipt, epoch=client.epoch(aid, epoch).to_json()), as_json)


@app.command()
def withdraw(contract: Contract, rpc_url: RpcUrl = None, sender: Sender = None,
             as_json: JsonFlag = False) -> None:
    """Withdraw the sender's credited ETH (a challenger's or payer's slash share, demand
    bonds)."""
    client = _client(rpc_url, sender, contract, as_json)
    amount = _run(as_json, client, lambda: client.balance_of(client.account))
    receipt = _run(as_json, client, client.withdraw)
    _out(_tx(receipt, withdrawn=amount), as_json)


# ---------------------------------------------------------------------------------- reads


def _table(title: str, record: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in record.items():
        table.add_row(key.replace("_", " "), str(value))
    Console().print(table)


@app.command()
def status(
    contract: Contract,
    provider_id: Annotated[str | None, typer.Option(
        "--provider-id", help="Provider id, 32 bytes hex.")] = None,
    account_id: Annotated[str | None, typer.Option(
        "--account-id", help="Billing account id, 32 bytes hex.")] = None,
    epoch: Annotated[int | None, typer.Option(help="Epoch id (with --account-id).")] = None,
    rpc_url: RpcUrl = None,
    as_json: JsonFlag = False,
) -> None:
    """The chain's records as readable tables (or --json): the protocol parameters, the
    provider, the account (with the units it can still be billed), and an epoch."""
    pid = _bytes32(provider_id, "provider id", as_json) if provider_id is not None else None
    aid = _bytes32(account_id, "account id", as_json) if account_id is not None else None
    if epoch is not None and aid is None:
        _fail(EXIT_BAD_INPUT, "--epoch needs --account-id", as_json)
    client = _client(rpc_url, None, contract, as_json)
    data: dict[str, Any] = {"ok": True, "chain_id": client.chain_id,
                            "params": _run(as_json, client, client.params).to_json()}
    if pid is not None:
        data["provider"] = _run(as_json, client, lambda: client.provider(pid)).to_json()
        data["provider"]["earnings_eth"] = client.earnings(pid)
    if aid is not None:
        record = _run(as_json, client, lambda: client.billing_account(aid))
        data["account"] = record.to_json()
        free = record.escrow - record.reserved - record.withdrawal_amount
        data["account"]["billable_units"] = free // record.unit_price if record.unit_price \
            else 0
    if epoch is not None and aid is not None:
        data["epoch"] = _run(as_json, client, lambda: client.epoch(aid, epoch)).to_json()
    if as_json:
        print(json.dumps(data))
        return
    for key in ("params", "provider", "account", "epoch"):
        if key in data:
            _table(f"{key} (chain {data['chain_id']}, contract {contract})"
                   if key == "params" else key, data[key])


SETTLER_COMMANDS: dict[str, Callable[..., None]] = {
    "finalize": finalize, "challenge": challenge, "demand": demand, "resolve": resolve,
    "withdraw": withdraw, "chain-status": status,
}
"""The commands ``zkmeter-verify`` carries for settlers (name there -> command)."""

__all__ = ["SETTLER_COMMANDS", "app"]
