"""``zkmeter``: the operator's command line (epochs, keys; ``serve`` and ``chain`` join it).

Configuration comes from ``ZKMETER_*`` environment variables (prover/config.py); secrets are
never printed. Exit codes: 0 done, 1 the operation failed, 2 bad configuration or input.
"""

import json
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from nacl.signing import SigningKey
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from prover.cli_chain import app as chain_app
from prover.errors import ConfigError, MeteringError

if TYPE_CHECKING:  # the server stack is imported only when a command needs it
    from prover.app import Services

app = typer.Typer(name="zkmeter", help="zkmeter operator commands.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)
epoch_app = typer.Typer(help="Close and inspect billing epochs.", no_args_is_help=True)
keys_app = typer.Typer(help="Generate provider and gateway keys.", no_args_is_help=True)
app.add_typer(epoch_app, name="epoch")
app.add_typer(keys_app, name="keys")
app.add_typer(chain_app, name="chain")
_err = Console(stderr=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def _services() -> "Services":
    from prover.app import build_services

    try:
        return build_services()
    except (ConfigError, ValueError) as exc:
        _err.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from None


@epoch_app.command("close")
def epoch_close(as_json: JsonFlag = False) -> None:
    """Close the open epoch (or resume an interrupted close) and publish its bundle."""
    services = _services()
    try:
        if as_json or not sys.stderr.isatty():
            closed = services.epochs.close()
        else:
            columns = (*Progress.get_default_columns()[:1], BarColumn(), MofNCompleteColumn(),
                       TimeElapsedColumn())
            with Progress(*columns, console=_err) as bar:
                task = bar.add_task("proving leaves", total=None)
                closed = services.epochs.close(
                    progress=lambda done, total: bar.update(task, completed=done, total=total))
    except MeteringError as exc:
        _err.print(f"[red]epoch close failed:[/red] {exc}")
        raise typer.Exit(1) from None
    finally:
        services.close()
    bundle = closed.bundle
    summary = {"epoch_id": bundle.epoch_id, "leaves": len(bundle.leaves),
               "users": len(closed.openings), "total_units": bundle.total,
               "merkle_root": "0x" + bundle.merkle_root.hex(),
               "seconds": {k: round(v, 3) for k, v in closed.timings.items()}}
    if as_json:
        print(json.dumps(summary))
    else:
        Console().print(f"epoch {bundle.epoch_id} closed: {summary['users']} users in "
                        f"{summary['leaves']} leaves, V = {bundle.total}, root "
                        f"{summary['merkle_root']}")


@epoch_app.command("status")
def epoch_status(epoch_id: Annotated[int, typer.Argument(help="Epoch id.")],
                 as_json: JsonFlag = False) -> None:
    """Show an epoch's state and the progress of its close."""
    services = _services()
    try:
        info = services.meter.ledger.epoch(epoch_id)
        status = services.store.status(epoch_id)
    except MeteringError as exc:
        _err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    finally:
        services.close()
    out = {"epoch_id": info.id, "state": info.state, "window_start_ms": info.window_start_ms,
           "window_end_ms": info.window_end_ms,
           "leaves_done": status.leaves_done if status else 0,
           "leaves_total": status.leaves_total if status else 0}
    print(json.dumps(out) if as_json else "\n".join(f"{k}: {v}" for k, v in out.items()))


@app.command("serve")
def serve() -> None:
    """Run the gRPC API (gateways, operators) and the HTTP read API until SIGTERM/SIGINT."""
    import asyncio
    import logging

    from prover.api.serve import serve as run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    services = _services()
    try:
        asyncio.run(run(services))
    except (ConfigError, OSError) as exc:
        _err.print(f"[red]cannot serve:[/red] {exc}")
        raise typer.Exit(2) from None
    finally:
        services.close()


@app.command("demo")
def demo(
    users: Annotated[int, typer.Option(min=2, max=256, help="Number of users.")] = 8,
    requests: Annotated[int, typer.Option(min=2, max=100_000, help="Requests to send.")] = 48,
    out: Annotated[Path, typer.Option(help="Where the artifacts go (replaced).")] = Path(
        "zkmeter-demo"),
    rpc: Annotated[str | None, typer.Option(help="JSON-RPC URL of a real node (e.g. anvil) "
                                                 "instead of the in-process chain.")] = None,
    bad_proof: Annotated[bool, typer.Option("--bad-proof", help="The provider cheats on one "
                                                                "leaf; watch it get caught.")
                         ] = False,
) -> None:
    """Run the whole story end to end: serve, meter, close, publish, verify, settle."""
    from prover.demo import DemoError, print_summary, run_demo

    console = Console()
    try:
        summary = run_demo(users=users, requests=requests, out=out, rpc=rpc,
                           bad_proof=bad_proof, console=console)
    except DemoError as exc:
        _err.print(f"[red]demo failed:[/red] {exc}")
        raise typer.Exit(1) from None
    print_summary(summary, console)


@keys_app.command("api-key")
def new_api_key_cmd() -> None:
    """Print a new gateway API key (give it to the gateway) and, on stderr, the hash to put
    in ZKMETER_API_KEY_HASHES (the server stores only hashes)."""
    from prover.api.grpc_server import hash_api_key, new_api_key

    key = new_api_key()
    print(key)
    _err.print(f"ZKMETER_API_KEY_HASHES entry: {hash_api_key(key)}")


@keys_app.command("signing-key")
def new_signing_key() -> None:
    """Print a new provider Ed25519 seed (hex) for ZKMETER_SIGNING_KEY(_FILE), and its
    public key (the provider id) on stderr."""
    seed = secrets.token_bytes(32)
    print(seed.hex())
    _err.print(f"provider id (public key): {bytes(SigningKey(seed).verify_key).hex()}")


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":
    main()
