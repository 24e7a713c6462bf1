"""``zkmeter-verify``: checks bundles, openings, receipts and the chain, trusting nobody.

Exit codes: 0 everything verified; 1 something failed verification; 2 bad input (unreadable
file, wrong format). ``--json`` prints one object
``{"ok": bool, "checks": [{"name", "ok", "detail", ...}], ...}`` with stable check names.
"""

import json
import sys
from collections.abc import Callable, Sequence
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from verifier import audit as audit_mod
from verifier.bundle import Bundle, BundleFormatError, Check, parse_bundle, verify_bundle
from verifier.sources import InputError, read_source

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2

app = typer.Typer(
    name="zkmeter-verify",
    help="Verify zkmeter bundles, openings, receipts and on-chain records.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_err = Console(stderr=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def bad_input(message: str, as_json: bool) -> NoReturn:
    """Report unusable input and exit 2."""
    if as_json:
        print(json.dumps({"ok": False, "error": message, "checks": []}))
    else:
        _err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(EXIT_BAD_INPUT)


def report(title: str, checks: Sequence[Check], as_json: bool, **extra: Any) -> NoReturn:
    """Print the checks (table or JSON) and exit 0 if all passed, else 1."""
    ok = all(c.ok for c in checks)
    if as_json:
        print(json.dumps({"ok": ok, "checks": [c.to_json() for c in checks], **extra}))
    else:
        console = Console()
        table = Table(title=title)
        table.add_column("check")
        table.add_column("result")
        table.add_column("detail")
        for c in checks:
            detail = c.detail
            if c.failing_leaves:
                shown = ", ".join(map(str, c.failing_leaves[:20]))
                detail += f" (leaves {shown}{' ...' if len(c.failing_leaves) > 20 else ''})"
            table.add_row(c.name, "[green]ok[/green]" if c.ok else "[red]FAILED[/red]", detail)
        console.print(table)
        for key, value in extra.items():
            console.print(f"{key}: {value}")
        console.print("[green]verified[/green]" if ok else "[red]verification failed[/red]")
    raise typer.Exit(EXIT_OK if ok else EXIT_FAILED)


def load_bundle(source: str, as_json: bool) -> tuple[dict[str, Any], Bundle]:
    """Read and strictly parse a bundle (exit 2 on bad input)."""
    try:
        text = read_source(source)
        bundle = parse_bundle(text)
        raw = json.loads(text)
    except (InputError, BundleFormatError) as exc:
        bad_input(str(exc), as_json)
    return raw, bundle


def parse_hex(value: str, name: str, length: int, as_json: bool) -> bytes:
    """A hex argument of a fixed length (0x optional)."""
    try:
        out = bytes.fromhex(value.removeprefix("0x"))
    except ValueError:
        bad_input(f"{name} is not hex", as_json)
    if len(out) != length:
        bad_input(f"{name} must be {length} bytes", as_json)
    return out


def _with_progress(total: int, as_json: bool, work: Callable[[Callable[[int], None]], Any]
                   ) -> Any:
    if as_json or not sys.stderr.isatty():
        return work(lambda _: None)
    with Progress(console=_err, transient=True) as progress:
        task = progress.add_task("verifying range proofs", total=total)
        return work(lambda k: progress.advance(task, k))


@app.command("bundle")
def bundle_cmd(
    source: Annotated[str, typer.Argument(help="Bundle JSON file or http(s) URL.")],
    provider_key: Annotated[
        str | None, typer.Option(help="Expected provider Ed25519 public key (hex).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Verify a whole epoch bundle: structure, encodings, signature, Merkle root, the sum
    check and every range proof (batch-verified; bad leaves are named)."""
    _, bundle = load_bundle(source, as_json)
    key = parse_hex(provider_key, "provider key", 32, as_json) if provider_key else None
    checks = _with_progress(
        len(bundle.leaves), as_json,
        lambda advance: verify_bundle(bundle, provider_key=key, progress=advance),
    )
    report(f"bundle of epoch {bundle.epoch_id}", checks, as_json, epoch_id=bundle.epoch_id,
           leaves=len(bundle.leaves), total=bundle.total)


@app.command("audit")
def audit_cmd(
    source: Annotated[str, typer.Argument(help="Bundle JSON file or http(s) URL.")],
    previous: Annotated[
        list[str] | None, typer.Option("--previous", help="Earlier bundles (repeatable).")
    ] = None,
    openings: Annotated[
        str | None, typer.Option(help="JSON object of tag -> sealed opening (file or URL).")
    ] = None,
    min_anonymity: Annotated[
        int, typer.Option(help="Warn when the anonymity set is smaller than this.")
    ] = audit_mod.DEFAULT_MIN_ANONYMITY,
    as_json: JsonFlag = False,
) -> None:
    """Privacy report: no identifiers or text in the public data, padding, unlinkable tags,
    uniform sealed openings, and the anonymity-set size."""
    raw, bundle = load_bundle(source, as_json)
    earlier = [load_bundle(p, as_json)[1] for p in previous or []]
    sealed = None
    if openings:
        try:
            sealed = audit_mod.load_openings(read_source(openings))
        except (InputError, ValueError) as exc:
            bad_input(f"openings: {exc}", as_json)
    checks, warnings, size = audit_mod.audit(
        raw, bundle, previous=earlier, openings=sealed, min_anonymity=min_anonymity
    )
    if not as_json:
        for warning in warnings:
            _err.print(f"[yellow]warning:[/yellow] {warning}")
    report(f"privacy audit of epoch {bundle.epoch_id}", checks, as_json,
           anonymity_set=size, warnings=warnings)


def _read(path: str, what: str, as_json: bool) -> bytes:
    try:
        return read_source(path)
    except InputError as exc:
        bad_input(f"{what}: {exc}", as_json)


@app.command("receipt")
def receipt_cmd(
    source: Annotated[str, typer.Argument(help="Receipt JSON file or http(s) URL.")],
    provider_key: Annotated[str, typer.Option(help="Provider Ed25519 public key (hex).")],
    as_json: JsonFlag = False,
) -> None:
    """Verify one receipt: strict format and the provider's signature."""
    from verifier.receipts import ReceiptError, receipt_from_json, verify_signature

    key = parse_hex(provider_key, "provider key", 32, as_json)
    try:
        receipt = receipt_from_json(_read(source, "receipt", as_json))
    except ReceiptError as exc:
        bad_input(f"receipt: {exc}", as_json)
    checks = [Check("format", True, f"receipt v{receipt.version}, epoch {receipt.epoch_id}, "
                                    f"seq {receipt.seq}")]
    try:
        verify_signature(receipt, provider_id=key)
    except ReceiptError:
        checks.append(Check("signature", False, "not signed by this provider key"))
    else:
        checks.append(Check("signature", True, "Ed25519 signature by the provider verifies"))
    report("receipt", checks, as_json, epoch_id=receipt.epoch_id, seq=receipt.seq,
           units=receipt.units, total_units=receipt.total_units)


@app.command("me")
def me_cmd(
    opening: Annotated[str, typer.Option(help="My sealed opening (raw or hex), or my "
                                              "plaintext opening if I have no key.")],
    receipts: Annotated[str, typer.Option(help="JSON list of my receipts of the epoch.")],
    bundle: Annotated[str, typer.Option(help="The epoch's bundle (file or URL).")],
    secret_key: Annotated[
        str | None, typer.Option(help="My X25519 secret key file (raw or hex).")
    ] = None,
    texts: Annotated[
        str | None, typer.Option(help="JSON list of {seq, messages, completion} I kept.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Check my charge: my opening against the bundle, my receipts' chain, that the
    committed value equals my last running total, and my texts' digests and recount."""
    from verifier import me

    _, parsed = load_bundle(bundle, as_json)
    try:
        key = me.parse_secret_key(_read(secret_key, "secret key", as_json)) if secret_key \
            else None
        chain = me.parse_receipts(_read(receipts, "receipts", as_json))
        kept = me.parse_texts(_read(texts, "texts", as_json)) if texts else None
    except me.UserInputError as exc:
        bad_input(str(exc), as_json)
    blob = me.parse_blob(_read(opening, "opening", as_json))
    checks, facts = me.check_me(parsed, opening_bytes=blob, secret_key=key, receipts=chain,
                                texts=kept)
    report(f"my charge in epoch {parsed.epoch_id}", checks, as_json, **facts)


@app.command("chain")
def chain_cmd(
    rpc: Annotated[str, typer.Option(help="JSON-RPC URL of the chain (http or https).")],
    contract: Annotated[str, typer.Option(help="Settlement contract address.")],
    epoch: Annotated[int, typer.Option(help="Epoch id.")],
    bundle: Annotated[str, typer.Option(help="The epoch's bundle (file or URL).")],
    as_json: JsonFlag = False,
) -> None:
    """Check a bundle against the chain: the contract code is the published artifact, and the
    on-chain root, total, leaf count and status match the bundle."""
    from verifier import chain

    _, parsed = load_bundle(bundle, as_json)
    address = parse_hex(contract, "contract address", 20, as_json)
    if parsed.epoch_id != epoch:
        bad_input(f"the bundle is for epoch {parsed.epoch_id}, not {epoch}", as_json)
    try:
        w3 = chain.connect(rpc)
        checks = [chain.check_deployment(w3, contract)]
        checks.append(Check("chain_context", parsed.chain_id == int(w3.eth.chain_id)
                            and parsed.contract == address,
                            "the bundle names this chain and contract"))
        record = chain.read_epoch(w3, contract, parsed.provider_id, epoch)
        checks += chain.check_bundle_against_chain(parsed, record)
    except chain.ChainError as exc:
        bad_input(str(exc), as_json)
    except Exception as exc:  # web3 transport errors: the node cannot be used
        bad_input(f"cannot read the chain at {rpc}: {type(exc).__name__}", as_json)
    report(f"epoch {epoch} on chain", checks, as_json, record=record.to_json())


def main() -> None:
    """Console entry point."""
    app()
