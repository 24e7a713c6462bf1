"""``zkmeter chain``: the operator's on-chain commands (deploy, register, submit, finalize, status).

(The other actions of the contract, for payers and settlers, are methods of
:class:`prover.chain.ChainClient`; docs/contracts.md lists them.)

Every command takes ``--rpc-url`` (or ``$ZKMETER_CHAIN_RPC_URL``); without one it runs on a
fresh embedded py-evm chain that lives only as long as the command (a dry run). Transactions
are sent from ``--from`` (an account the node unlocks, e.g. anvil's) or, if
``$ZKMETER_CHAIN_PRIVATE_KEY`` is set, signed locally with that key (never a flag, so it stays
out of shell history and process lists). ``--json`` prints one JSON object. Exit codes:
0 done, 1 the contract refused (its custom error is printed), 2 bad input or no chain.
"""

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from verifier.bundle import BundleFormatError, parse_bundle
from verifier.extras import MissingExtra, needs

if TYPE_CHECKING:  # web3 comes with the [chain] extra; imported when a command runs
    from prover.chain import ChainClient

EXIT_OK, EXIT_REFUSED, EXIT_BAD_INPUT = 0, 1, 2
KEY_ENV = "ZKMETER_CHAIN_PRIVATE_KEY"

app = typer.Typer(
    name="chain",
    help="Deploy the settlement contracts, submit and finalize epochs, read records.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

RpcUrl = Annotated[
    str | None,
    typer.Option("--rpc-url", envvar="ZKMETER_CHAIN_RPC_URL",
                 help="JSON-RPC URL; none: a throwaway embedded chain."),
]
Sender = Annotated[
    str | None, typer.Option("--from", help="Unlocked sender account (default: the node's first).")
]
Settlement = Annotated[
    str, typer.Option("--contract", "--settlement", envvar="ZKMETER_CONTRACT_ADDRESS",
                      help="Settlement contract address ($ZKMETER_CONTRACT_ADDRESS).")
]
AccountId = Annotated[str, typer.Option("--account-id", help="Billing account id, 32 bytes hex.")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def _out(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(data))
    else:
        for key, value in data.items():
            print(f"{key}: {value}")


def _fail(code: int, message: str, as_json: bool, **extra: Any) -> NoReturn:
    if as_json:
        print(json.dumps({"ok": False, "error": message, **extra}))
    else:
        typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _client(rpc_url: str | None, sender: str | None, settlement: str | None,
            as_json: bool) -> "ChainClient":
    try:
        with needs("chain", "zkmeter chain"):
            from prover.chain import ChainClient
            from verifier.chain import ChainError

            try:
                return ChainClient.connect(rpc_url, account=sender,
                                           private_key=os.environ.get(KEY_ENV),
                                           settlement=settlement)
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


def _run(as_json: bool, action: Any) -> Any:
    """Run a chain action, mapping contract refusals to exit 1 and chain trouble to exit 2."""
    from prover.chain import SettlementError
    from verifier.chain import ChainError

    try:
        return action()
    except SettlementError as exc:
        _fail(EXIT_REFUSED, str(exc), as_json, contract_error=exc.name)
    except (ChainError, ValueError, OSError, ConnectionError) as exc:
        _fail(EXIT_BAD_INPUT, str(exc), as_json)


@app.command()
def deploy(rpc_url: RpcUrl = None, sender: Sender = None, as_json: JsonFlag = False) -> None:
    """Deploy BulletproofVerifier and ZkMeterSettlement; print their addresses (and the
    chain id: both go into ZKMETER_CHAIN_ID / ZKMETER_CONTRACT_ADDRESS). Without --rpc-url
    this deploys to a throwaway in-process chain that is gone when the command exits."""
    client = _client(rpc_url, sender, None, as_json)
    deployment = _run(as_json, client.deploy)
    data: dict[str, Any] = {"ok": True, **deployment.to_json(),
                            "rpc_url": rpc_url or "in-process (throwaway)"}
    _out(data, as_json)
    if rpc_url is None:
        typer.echo("note: deployed to a throwaway in-process chain (py-evm), gone when this "
                   "command exits; pass --rpc-url URL to deploy to a real node", err=True)
    elif not as_json:
        typer.echo(f"export ZKMETER_CHAIN_ID={deployment.chain_id} "
                   f"ZKMETER_CONTRACT_ADDRESS={deployment.settlement}")


@app.command()
def register(
    settlement: Settlement,
    signing_key: Annotated[str, typer.Option(
        "--signing-key", help="The provider's Ed25519 public key, 32 bytes hex.")],
    bond: Annotated[int, typer.Option(help="Bond in wei.")],
    unit_price: Annotated[int, typer.Option("--unit-price", help="Wei per committed unit.")],
    window: Annotated[int, typer.Option(help="Challenge window in seconds.")],
    rpc_url: RpcUrl = None,
    sender: Sender = None,
    as_json: JsonFlag = False,
) -> None:
    """Register the sender as the operator of keccak256(sender, signing key), staking the bond."""
    client = _client(rpc_url, sender, settlement, as_json)
    key = _bytes32(signing_key, "signing key", as_json)
    receipt = _run(as_json, lambda: client.register_provider(
        key, bond=bond, unit_price=unit_price, challenge_window=window))
    pid = client.provider_id_for(key)
    _out({"ok": True, "provider_id": "0x" + pid.hex(), "gas_used": receipt.gasUsed}, as_json)


@app.command()
def submit(
    settlement: Settlement,
    bundle: Annotated[Path, typer.Option(help="The epoch's bundle (JSON).")],
    rpc_url: RpcUrl = None,
    sender: Sender = None,
    as_json: JsonFlag = False,
) -> None:
    """Submit a closed epoch's bundle to the billing account its proofs are bound to."""
    try:
        parsed = parse_bundle(bundle.read_bytes())
    except (OSError, BundleFormatError) as exc:
        _fail(EXIT_BAD_INPUT, f"cannot read the bundle: {exc}", as_json)
    client = _client(rpc_url, sender, settlement, as_json)
    from verifier.chain import bundle_subject

    receipt = _run(as_json, lambda: client.submit_bundle(parsed))
    record = client.epoch(bundle_subject(parsed), parsed.epoch_id)
    _out({"ok": True, "gas_used": receipt.gasUsed, "epoch": record.to_json()}, as_json)


@app.command()
def finalize(
    settlement: Settlement,
    account_id: AccountId,
    epoch: Annotated[int, typer.Option(help="Epoch id.")],
    rpc_url: RpcUrl = None,
    sender: Sender = None,
    as_json: JsonFlag = False,
) -> None:
    """Finalize an epoch whose challenge window has closed (pays the provider)."""
    client = _client(rpc_url, sender, settlement, as_json)
    aid = _bytes32(account_id, "account id", as_json)
    receipt = _run(as_json, lambda: client.finalize(aid, epoch))
    record = client.epoch(aid, epoch)
    _out({"ok": True, "gas_used": receipt.gasUsed, "epoch": record.to_json()}, as_json)


@app.command()
def status(
    settlement: Settlement,
    provider_id: Annotated[str | None, typer.Option(
        "--provider-id", help="Provider id, 32 bytes hex.")] = None,
    account_id: Annotated[str | None, typer.Option(
        "--account-id", help="Billing account id, 32 bytes hex.")] = None,
    epoch: Annotated[int | None, typer.Option(help="Epoch id (with --account-id).")] = None,
    rpc_url: RpcUrl = None,
    as_json: JsonFlag = False,
) -> None:
    """Print the provider's record, the account's record and, with --epoch, the epoch's."""
    client = _client(rpc_url, None, settlement, as_json)
    data: dict[str, Any] = {"ok": True}
    if provider_id is not None:
        pid = _bytes32(provider_id, "provider id", as_json)
        data["provider"] = _run(as_json, lambda: client.provider(pid)).to_json()
    if account_id is not None:
        aid = _bytes32(account_id, "account id", as_json)
        data["account"] = _run(as_json, lambda: client.billing_account(aid)).to_json()
        if epoch is not None:
            data["epoch"] = _run(as_json, lambda: client.epoch(aid, epoch)).to_json()
    if len(data) == 1:
        _fail(EXIT_BAD_INPUT, "name --provider-id and/or --account-id", as_json)
    _out(data, as_json)


__all__ = ["app"]
