"""``zkmeter``: the operator's command line (serve, epochs, accounts, keys, chain).

Configuration comes from ``ZKMETER_*`` environment variables (prover/config.py); secrets are
never printed. Exit codes: 0 done, 1 the operation failed, 2 bad configuration or input.
Start-up failures (a bad or placeholder setting, the database, a port in use, an unset
settlement contract) are one line on stderr and exit 2 (prover/startup.py). ``keys`` works
from the base install; ``chain`` needs ``zkmeter[chain]``; ``serve``, ``epoch`` and ``demo``
need ``zkmeter[server]``: a missing extra is named, never a ModuleNotFoundError.
"""

import json
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from nacl.signing import SigningKey
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from prover.cli_accounts import app as accounts_app
from prover.cli_chain import app as chain_app
from prover.errors import MeteringError
from verifier.extras import MissingExtra, needs, run_cli, use_packaged_artifacts

if TYPE_CHECKING:  # the server stack is imported only when a command needs it
    from prover.app import Services
    from prover.config import Settings

app = typer.Typer(name="zkmeter", help="zkmeter operator commands.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)
epoch_app = typer.Typer(help="Close and inspect billing epochs.", no_args_is_help=True)
keys_app = typer.Typer(help="Generate provider and gateway keys.", no_args_is_help=True)
app.add_typer(epoch_app, name="epoch")
app.add_typer(keys_app, name="keys")
app.add_typer(chain_app, name="chain")
app.add_typer(accounts_app, name="accounts")
_err = Console(stderr=True, soft_wrap=True)  # an error is one line, never wrapped

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
DevFlag = Annotated[bool, typer.Option(
    "--dev", help="Development only: accept the zero contract address and the default chain "
                  "id (epochs closed this way can never settle).")]
EXIT_FAILED, EXIT_BAD_INPUT = 1, 2


def fail_startup(message: str) -> NoReturn:
    """One line on stderr, exit 2 (never a traceback, never a secret)."""
    print(f"zkmeter: {message}", file=sys.stderr)
    raise typer.Exit(EXIT_BAD_INPUT)


def _settings(command: str) -> "Settings":
    from prover.startup import describe_error

    try:
        with needs("server", command):
            from prover.config import Settings

            return Settings()
    except MissingExtra as exc:
        fail_startup(str(exc))
    except Exception as exc:
        message = describe_error(exc)
        if message is None:
            raise
        fail_startup(message)


def _services(command: str, *, dev: bool = True, binds: bool = False) -> "Services":
    """Settings, checks and the domain services, or one line and exit 2."""
    from prover.startup import check_binds, describe_error

    settings = _settings(command)
    problem = None if dev else settings.settlement_problem()
    if problem is not None:
        fail_startup(problem)
    try:
        with needs("server", command):
            from prover.app import build_services

            if binds:
                check_binds(settings)
            return build_services(settings)
    except MissingExtra as exc:
        fail_startup(str(exc))
    except Exception as exc:
        message = describe_error(exc, settings)
        if message is None:
            raise
        fail_startup(message)


@epoch_app.command("close")
def epoch_close(
    as_json: JsonFlag = False,
    allow_empty: Annotated[bool, typer.Option(
        "--allow-empty", help="Publish the epoch even if it has no usage since the last close "
                              "(default: refused, exit 1; or ZKMETER_ALLOW_EMPTY_EPOCHS).")
    ] = False,
    dev: DevFlag = False,
) -> None:
    """Close the open epoch (or resume an interrupted close) and publish its bundle."""
    services = _services("zkmeter epoch close", dev=dev)
    empty = True if allow_empty else None
    try:
        if as_json or not sys.stderr.isatty():
            closed = services.epochs.close(allow_empty=empty)
        else:
            columns = (*Progress.get_default_columns()[:1], BarColumn(), MofNCompleteColumn(),
                       TimeElapsedColumn())
            with Progress(*columns, console=_err) as bar:
                task = bar.add_task("proving leaves", total=None)
                closed = services.epochs.close(
                    allow_empty=empty,
                    progress=lambda done, total: bar.update(task, completed=done, total=total))
    except MeteringError as exc:
        if as_json:
            print(json.dumps({"ok": False, "error": str(exc)}))
        print(f"zkmeter: epoch close failed: {exc}", file=sys.stderr)
        raise typer.Exit(EXIT_FAILED) from None
    finally:
        services.close()
    accounts = [{"account_id": "0x" + account_id.hex(), "users": len(part.openings),
                 "leaves": len(part.bundle.leaves), "total_units": part.bundle.total,
                 "merkle_root": "0x" + part.bundle.merkle_root.hex()}
                for account_id, part in closed.accounts.items()]
    summary = {"epoch_id": closed.epoch_id, "leaves": closed.leaves,
               "users": len(closed.openings),
               "total_units": sum(part.bundle.total for part in closed.accounts.values()),
               "merkle_root": accounts[0]["merkle_root"] if len(accounts) == 1 else None,
               "accounts": accounts,
               "seconds": {k: round(v, 3) for k, v in closed.timings.items()}}
    if as_json:
        print(json.dumps(summary))
        return
    console = Console()
    console.print(f"epoch {closed.epoch_id} closed: {summary['users']} users of "
                  f"{len(accounts)} billing accounts in {summary['leaves']} leaves, "
                  f"V = {summary['total_units']}")
    for a in accounts:
        console.print(f"  account {a['account_id']}: {a['users']} users in {a['leaves']} "
                      f"leaves, V = {a['total_units']}, root {a['merkle_root']}")


@epoch_app.command("status")
def epoch_status(epoch_id: Annotated[int, typer.Argument(help="Epoch id.")],
                 as_json: JsonFlag = False) -> None:
    """Show an epoch's state and the progress of its close."""
    services = _services("zkmeter epoch status")
    try:
        info = services.meter.ledger.epoch(epoch_id)
        status = services.store.status(epoch_id)
    except MeteringError as exc:
        _err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None
    finally:
        services.close()
    out = {"epoch_id": info.id, "state": info.state, "window_start_ms": info.window_start_ms,
           "window_end_ms": info.window_end_ms,
           "leaves_done": status.leaves_done if status else 0,
           "leaves_total": status.leaves_total if status else 0}
    print(json.dumps(out) if as_json else "\n".join(f"{k}: {v}" for k, v in out.items()))


WorkersOption = Annotated[int, typer.Option(
    "--workers", min=1, help="Server processes sharing the gRPC port (SO_REUSEPORT), each with "
                             "its own ingest batcher; more than 1 needs PostgreSQL. Only the "
                             "first serves HTTP.")]


@app.command("serve")
def serve(dev: DevFlag = False, workers: WorkersOption = 1) -> None:
    """Run the gRPC API (gateways, operators) and the HTTP read API until SIGTERM/SIGINT.

    Refuses to start (exit 2, one line) on a bad setting, an unset settlement contract
    (unless --dev), a database it cannot open or a listen address in use. Logs at start the
    provider id, the chain and contract epochs settle on, the database (without password) and
    the listen addresses."""
    import logging

    from prover.startup import startup_lines

    settings = _settings("zkmeter serve")
    from prover.api.serve import ingest_writers

    try:
        ingest_writers(settings)  # before any worker starts: one line, not one per worker
    except MeteringError as exc:
        fail_startup(str(exc))
    if workers > 1:
        if not settings.database_url.get_secret_value().startswith("postgresql"):
            fail_startup("--workers > 1 needs PostgreSQL (ZKMETER_DATABASE_URL="
                         "postgresql+psycopg://...): SQLite has a single writer")
        if settings.grpc_bind.endswith(":0"):
            fail_startup("--workers > 1 needs a fixed gRPC port (ZKMETER_GRPC_BIND), not :0")
    services = _services("zkmeter serve", dev=dev, binds=True)
    # after start-up: a failed start is one line, not the migrations' log
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    log = logging.getLogger("zkmeter.serve")
    for line in startup_lines(services.settings, services.meter.ledger.provider_id):
        log.info("zkmeter: %s", line)
    if dev and services.settings.settlement_problem():
        log.warning("zkmeter: --dev: epochs are bound to chain %d and contract %s and can "
                    "never settle", services.settings.chain_id,
                    services.settings.contract_address)
    if workers == 1:
        _serve_one(services, 0, 1)
        return
    services.close()  # checked and migrated; every worker opens its own
    raise typer.Exit(_serve_workers(workers))


def _serve_one(services: "Services", worker: int, workers: int) -> None:
    import asyncio

    from prover.api.serve import serve as run
    from prover.api.serve import settle_gc
    from prover.startup import describe_error

    settle_gc()
    try:
        asyncio.run(run(services, worker=worker, workers=workers))
    except (MeteringError, OSError) as exc:
        message = describe_error(exc, services.settings) or str(exc)
        fail_startup(f"cannot serve: {message}")
    except SystemExit as exc:  # uvicorn exits when it cannot start; it logged the reason
        fail_startup(f"cannot serve: the HTTP server did not start (exit {exc.code})")
    finally:
        services.close()


def _worker_main(worker: int, workers: int) -> None:
    """One ``--workers`` process: its own services (engine, meter, batcher) and servers."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        _serve_one(_services("zkmeter serve", dev=True), worker, workers)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)


def _serve_workers(workers: int) -> int:
    """Start ``workers`` processes, forward SIGTERM/SIGINT to them; when one ends, stop the
    others. Exit code: the first non-zero one of the workers, else 0."""
    import multiprocessing

    from prover.api.metrics import shared_metrics_dir

    # the workers' ingest metrics go to one directory per run, summed on worker 0's
    # operator listener (prover/api/metrics.py); removed when the workers are gone
    with shared_metrics_dir():
        return _run_workers(multiprocessing.get_context("spawn"), workers)


def _run_workers(ctx: Any, workers: int) -> int:
    """Run the ``workers`` processes of :func:`_serve_workers` until all have ended."""
    import signal
    from multiprocessing.connection import wait

    procs = [ctx.Process(target=_worker_main, args=(k, workers), name=f"zkmeter-worker-{k}")
             for k in range(workers)]

    signalled: set[int] = set()

    def stop_all(*_args: Any) -> None:
        for k, proc in enumerate(procs):
            if proc.pid is not None and proc.exitcode is None and k not in signalled:
                signalled.add(k)  # once: a second SIGTERM could hit a worker whose loop
                proc.terminate()  # has already closed (SIGTERM: each worker drains)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop_all)
    for proc in procs:
        proc.start()
    wait([proc.sentinel for proc in procs])
    stop_all()
    codes = []
    for proc in procs:
        proc.join()
        codes.append(proc.exitcode or 0)
    return next((abs(code) for code in codes if code), 0)


@app.command("gateway")
def gateway(
    upstream: Annotated[str | None, typer.Option(help="Base URL of the OpenAI-compatible "
                                                      "backend, e.g. http://127.0.0.1:8001/v1"
                                                 )] = None,
    bind: Annotated[str | None, typer.Option(help="host:port to listen on.")] = None,
) -> None:
    """Run the OpenAI-compatible metering gateway in front of UPSTREAM (docs/gateway.md)."""
    from prover.gateway.cli import run_gateway_cmd

    run_gateway_cmd(upstream=upstream, bind=bind, err=_err)


@app.command("upstream")
def upstream_cmd(
    bind: Annotated[str, typer.Option(help="host:port to listen on.")] = "127.0.0.1:8001",
    delay_ms: Annotated[int, typer.Option(min=0, help="Delay before every reply.")] = 0,
    fail_every: Annotated[int, typer.Option(min=0, help="Every Nth request answers 500.")] = 0,
) -> None:
    """Run the small deterministic OpenAI-compatible server (tests, demo, benchmark)."""
    from prover.gateway.cli import run_upstream_cmd

    run_upstream_cmd(bind=bind, delay_ms=delay_ms, fail_every=fail_every)


@app.command("demo")
def demo(
    users: Annotated[int, typer.Option(min=2, max=256, help="Number of users.")] = 8,
    requests: Annotated[int, typer.Option(min=2, max=100_000, help="Requests to send.")] = 48,
    out: Annotated[Path, typer.Option(help="Where the artifacts go (replaced).")] = Path(
        "zkmeter-demo"),
    rpc: Annotated[str | None, typer.Option("--rpc-url", "--rpc",
                                            help="JSON-RPC URL of a real node (e.g. anvil) "
                                                 "instead of the in-process chain.")] = None,
    bad_proof: Annotated[bool, typer.Option("--bad-proof", help="The provider cheats on one "
                                                                "leaf; watch it get caught.")
                         ] = False,
    withhold: Annotated[bool, typer.Option("--withhold", help="The provider publishes no "
                                                              "data; a settler demands it and "
                                                              "the bond is slashed.")] = False,
    phantom: Annotated[bool, typer.Option("--phantom", help="The provider bills a phantom "
                                                            "user on a padding leaf; the "
                                                            "payer catches it, with "
                                                            "evidence.")] = False,
) -> None:
    """Run the whole story end to end: serve, meter, close, publish, verify, settle."""
    try:
        with needs("server", "zkmeter demo"):
            from prover.demo import DemoError, print_summary, run_demo
    except MissingExtra as exc:
        fail_startup(str(exc))

    console = Console()
    try:
        if bad_proof + withhold + phantom > 1:
            fail_startup("choose one of --bad-proof, --withhold and --phantom")
        summary = run_demo(users=users, requests=requests, out=out, rpc=rpc,
                           bad_proof=bad_proof, withhold=withhold, phantom=phantom,
                           console=console)
    except DemoError as exc:
        _err.print(f"[red]demo failed:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None
    print_summary(summary, console)


def api_key_hashes_value(roles: dict[str, str]) -> str:
    """The value of ZKMETER_API_KEY_HASHES for these key hashes and roles (one line, JSON)."""
    return json.dumps(roles, separators=(",", ":"))


@keys_app.command("api-key")
def new_api_key_cmd(
    as_json: JsonFlag = False,
    role: Annotated[str, typer.Option(
        "--role", help="gateway (record usage, register new users' keys) or operator (also "
                       "close epochs, read plaintext openings, rotate users' keys).")
    ] = "gateway",
) -> None:
    """Print a new API key on stdout (give it to the gateway or the operator's tools) and, on
    stderr, one line exactly as it goes into the server's environment:
    ZKMETER_API_KEY_HASHES='{"sha256:...":"gateway"}' (the server stores only hashes). With
    several keys, join their entries in one JSON object."""
    if role not in ("gateway", "operator"):
        fail_startup(f"--role must be gateway or operator, not {role!r}")
    try:
        with needs("server", "zkmeter keys api-key"):
            from prover.api.grpc_server import hash_api_key, new_api_key
    except MissingExtra as exc:
        fail_startup(str(exc))
    key = new_api_key()
    digest = hash_api_key(key)
    value = api_key_hashes_value({digest: role})
    if as_json:
        print(json.dumps({"api_key": key, "hash": digest, "role": role,
                          "ZKMETER_API_KEY_HASHES": value}))
        return
    print(key)
    print(f"ZKMETER_API_KEY_HASHES='{value}'", file=sys.stderr)  # plain print: never wrapped


@keys_app.command("user-key")
def new_user_key_cmd(
    out: Annotated[Path, typer.Option("--out", help="Where to write the secret key (created "
                                                    "with mode 0600).")],
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Create a user's X25519 key pair: the secret key goes to --out (mode 0600, for
    `zkmeter-verify me --secret-key`), the public key (hex, what the gateway registers with
    RegisterUserKey) is printed on stdout."""
    from verifier.keys import KeyFileError, new_user_key

    try:
        public = new_user_key(out, overwrite=force)
    except KeyFileError as exc:
        fail_startup(str(exc))
    if as_json:
        print(json.dumps({"public_key": public.hex(), "secret_key_file": str(out)}))
    else:
        print(public.hex())


@keys_app.command("caller-key")
def new_caller_key_cmd(user_id: Annotated[str, typer.Argument(help="zkmeter user id.")]) -> None:
    """Print a new caller key for the gateway (give it to the user) and, on stderr, the
    ZKMETER_GATEWAY_CALLER_KEYS entry (the gateway stores only hashes)."""
    from prover.api.grpc_server import hash_api_key, new_api_key

    key = new_api_key()
    print(key)
    entry = json.dumps({hash_api_key(key): user_id})
    print(f"ZKMETER_GATEWAY_CALLER_KEYS entry: {entry}", file=sys.stderr)  # never wrapped


@keys_app.command("signing-key")
def new_signing_key() -> None:
    """Print a new provider Ed25519 seed (hex) for ZKMETER_SIGNING_KEY(_FILE), and its
    public key (the provider id) on stderr."""
    seed = secrets.token_bytes(32)
    print(seed.hex())
    print(f"provider signing key (public): {bytes(SigningKey(seed).verify_key).hex()}",
          file=sys.stderr)


def main() -> None:
    """Console entry point."""
    use_packaged_artifacts()
    run_cli(app, "zkmeter")


if __name__ == "__main__":
    main()
