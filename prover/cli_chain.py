"""``zkmeter chain``: the operator's on-chain commands (deploy, register, submit, finalize, status).

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
ProviderId = Annotated[str, typer.Option("--provider-id", help="Provider id, 32 bytes hex.")]
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


def _provider_id(text: str, as_json: bool) -> bytes:
    try:
        value = bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        value = b""
    if len(value) != 32:
        _fail(EXIT_BAD_INPUT, "provider id must be 32 bytes of hex", as_json)
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
    """Deploy BulletproofVerifier and ZkMeterSettlement; print their addresses."""
    client = _client(rpc_url, sender, None, as_json)
    deployment = _run(as_json, client.deploy)
    _out({"ok": True, **deployment.to_json()}, as_json)


@app.command()
def register(
    settlement: Settlement,
    provider_id: ProviderId,
    bond: Annotated[int, typer.Option(help="Bond in wei.")],
    unit_price: Annotated[int, typer.Option("--unit-price", help="Wei per committed unit.")],
    window: Annotated[int, typer.Option(help="Challenge window in seconds.")],
    rpc_url: RpcUrl = None,
    sender: Sender = None,
    as_json: JsonFlag = False,
) -> None:
    """Register the sender as the operator of a provider id, staking the bond."""
    client = _client(rpc_url, sender, settlement, as_json)
    pid = _provider_id(provider_id, as_json)
    receipt = _run(as_json, lambda: client.register_provider(
        pid, bond=bond, unit_price=unit_price, challenge_window=window))
    _out({"ok": True, "provider_id": "0x" + pid.hex(), "gas_used": receipt.gasUsed}, as_json)


@app.command()
def submit(
    settlement: Settlement,
    bundle: Annotated[Path, typer.Option(help="The epoch's bundle (JSON).")],
    rpc_url: RpcUrl = None,
    sender: Sender = None,
    as_json: JsonFlag = False,
) -> None:
    """Submit a closed epoch's bundle (commitments, tags, proof hashes, V, R)."""
    try:
        parsed = parse_bundle(bundle.read_bytes())
    except (OSError, BundleFormatError) as exc:
        _fail(EXIT_BAD_INPUT, f"cannot read the bundle: {exc}", as_json)
    client = _client(rpc_url, sender, settlement, as_json)
    receipt = _run(as_json, lambda: client.submit_bundle(parsed))
    record = client.epoch(parsed.provider_id, parsed.epoch_id)
    _out({"ok": True, "gas_used": receipt.gasUsed, "epoch": record.to_json()}, as_json)


@app.command()
def finalize(
    settlement: Settlement,
    provider_id: ProviderId,
    epoch: Annotated[int, typer.Option(help="Epoch id.")],
    rpc_url: RpcUrl = None,
    sender: Sender = None,
    as_json: JsonFlag = False,
) -> None:
    """Finalize an epoch whose challenge window has closed (pays the provider)."""
    client = _client(rpc_url, sender, settlement, as_json)
    pid = _provider_id(provider_id, as_json)
    receipt = _run(as_json, lambda: client.finalize(pid, epoch))
    record = client.epoch(pid, epoch)
    _out({"ok": True, "gas_used": receipt.gasUsed, "epoch": record.to_json()}, as_json)


@app.command()
def status(
    settlement: Settlement,
    provider_id: ProviderId,
    epoch: Annotated[int | None, typer.Option(help="Epoch id (default: provider only).")] = None,
    rpc_url: RpcUrl = None,
    as_json: JsonFlag = False,
) -> None:
    """Print the provider's record and, with --epoch, the epoch's record."""
    client = _client(rpc_url, None, settlement, as_json)
    pid = _provider_id(provider_id, as_json)
    provider = _run(as_json, lambda: client.provider(pid))
    data: dict[str, Any] = {
        "ok": True,
        "provider": {
            "provider_id": "0x" + pid.hex(),
            "registered": provider.registered,
            "operator": provider.operator,
            "last_epoch_id": provider.last_epoch_id if provider.has_epoch else None,
            "challenge_window": provider.challenge_window,
            "bond": provider.bond,
            "unit_price": provider.unit_price,
            "escrow": provider.escrow,
            "earnings": provider.earnings,
        },
    }
    if epoch is not None:
        data["epoch"] = _run(as_json, lambda: client.epoch(pid, epoch)).to_json()
    _out(data, as_json)


__all__ = ["app"]
