"""``zkmeter-verify``: checks bundles, openings, receipts, payer statements and the chain,
trusting nobody.

Exit codes: 0 everything verified; 1 something failed verification; 2 bad input (unreadable
file, wrong format, or inputs that do not belong together: another user's receipts, another
epoch's bundle). ``--json`` prints one object
``{"ok": bool, "checks": [{"name", "ok", "status", "detail", ...}], "not_checked": [...]}``
with stable check names. A check whose input was not given is ``not_checked`` (``ok`` null):
never reported as passed. The chain commands need the ``[chain]`` extra and say so.
"""

import json
import sys
from collections.abc import Callable, Sequence
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from verifier import audit as audit_mod
from verifier.bundle import Bundle, BundleFormatError, Check, parse_bundle, verify_bundle
from verifier.extras import MissingExtra, needs, run_cli, use_packaged_artifacts
from verifier.sources import InputError, read_source

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2

app = typer.Typer(
    name="zkmeter-verify",
    help="Verify zkmeter bundles, openings, receipts and on-chain records.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_err = Console(stderr=True, soft_wrap=True)  # an error is one line, never wrapped

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def bad_input(message: str, as_json: bool) -> NoReturn:
    """Report unusable input and exit 2."""
    if as_json:
        print(json.dumps({"ok": False, "error": message, "checks": []}))
    else:
        _err.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(EXIT_BAD_INPUT)


_RESULT = {"ok": "[green]ok[/green]", "failed": "[red]FAILED[/red]",
           "not_checked": "[yellow]not checked[/yellow]"}


def report(title: str, checks: Sequence[Check], as_json: bool, *, error: str | None = None,
           **extra: Any) -> NoReturn:
    """Print the checks (table or JSON) and exit 0 if none failed, else 1; with ``error``
    (inputs that do not belong together), print it and exit 2. Checks that did not run are
    listed as not checked, never as passed."""
    ok = error is None and not any(c.status == "failed" for c in checks)
    skipped = [c.name for c in checks if c.skipped]
    if as_json:
        out: dict[str, Any] = {"ok": ok, "checks": [c.to_json() for c in checks],
                               "not_checked": skipped, **extra}
        if error is not None:
            out["error"] = error
        print(json.dumps(out))
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
            table.add_row(c.name, _RESULT[c.status], detail)
        if checks:
            console.print(table)
        for key, value in extra.items():
            if isinstance(value, dict):
                value = ", ".join(f"{k} {v}" for k, v in value.items())
            console.print(f"{key}: {escape(str(value))}")
        if error is not None:
            _err.print(f"[red]error:[/red] {escape(error)}")
        elif ok:
            console.print("[green]verified[/green]" + (
                f" [yellow](not checked: {', '.join(skipped)})[/yellow]" if skipped else ""))
        else:
            console.print("[red]verification failed[/red]")
    if error is not None:
        raise typer.Exit(EXIT_BAD_INPUT)
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


def _with_progress(total: int, as_json: bool, work: Callable[[Callable[[int], None]], Any],
                   what: str = "verifying range proofs") -> Any:
    if as_json or not sys.stderr.isatty():
        return work(lambda _: None)
    with Progress(console=_err, transient=True) as progress:
        task = progress.add_task(what, total=total)
        return work(lambda k: progress.advance(task, k))


@app.command("bundle")
def bundle_cmd(
    source: Annotated[str, typer.Argument(help="Bundle JSON file or http(s) URL.")],
    provider_key: Annotated[
        str | None, typer.Option(help="Expected provider Ed25519 public key (hex), as the "
                                      "provider publishes it apart from the bundle.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Verify a whole epoch bundle: structure, encodings, signature, Merkle root, the sum
    check and every range proof (batch-verified; bad leaves are named). Without
    --provider-key the signature is checked only against the key inside the bundle."""
    _, bundle = load_bundle(source, as_json)
    key = parse_hex(provider_key, "provider key", 32, as_json) if provider_key else None
    checks = _with_progress(
        len(bundle.leaves), as_json,
        lambda advance: verify_bundle(bundle, provider_key=key, progress=advance),
    )
    if key is None:
        checks.append(Check.not_checked(
            "provider_key", "no --provider-key given: the signature was checked only against "
                            "the key inside the bundle, not against the provider's own"))
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
            _err.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    report(f"privacy audit of epoch {bundle.epoch_id}", checks, as_json,
           anonymity_set=size, warnings=warnings)


def _read(path: str, what: str, as_json: bool) -> bytes:
    try:
        return read_source(path)
    except InputError as exc:
        bad_input(f"{what}: {exc}", as_json)


@app.command("receipt")
def receipt_cmd(
    source: Annotated[str, typer.Argument(help="A receipt, or a JSON list of receipts (file or "
                                               "http(s) URL), as zkmeter.client.receipt_json "
                                               "writes them.")],
    provider_key: Annotated[
        str | None, typer.Option(help="Provider Ed25519 public key (hex). Without it, each "
                                      "receipt is checked against the key it names.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Verify receipts one by one: strict format and the provider's signature."""
    from verifier.receipts import ReceiptError, receipt_from_json, verify_signature

    key = parse_hex(provider_key, "provider key", 32, as_json) if provider_key else None
    raw = _read(source, "receipt", as_json)
    try:
        parsed = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        bad_input("receipt: not JSON", as_json)
    items = parsed if isinstance(parsed, list) else [parsed]
    if not items:
        bad_input("receipt: the list is empty", as_json)
    receipts = []
    for i, item in enumerate(items):
        try:
            receipts.append(receipt_from_json(item))
        except ReceiptError as exc:
            where = f"receipt [{i}]" if isinstance(parsed, list) else "receipt"
            bad_input(f"{where}: {exc}", as_json)
    checks = [Check("format", True, f"{len(receipts)} receipt(s) v{receipts[0].version}, "
                                    f"well-formed")]
    bad = []
    for receipt in receipts:
        try:
            verify_signature(receipt, provider_id=key)
        except ReceiptError:
            bad.append(f"seq {receipt.seq} (user {receipt.user_id!r}, epoch {receipt.epoch_id})")
    signer = "the provider key given" if key else "the key each receipt names"
    if bad:
        checks.append(Check("signature", False, f"not signed by {signer}: " + ", ".join(bad[:5])
                            + (" ..." if len(bad) > 5 else "")))
    else:
        checks.append(Check("signature", True, f"every Ed25519 signature verifies under "
                                               f"{signer}"))
    if key is None:
        checks.append(Check.not_checked(
            "provider_key", "no --provider-key given: signatures were checked only against "
                            "the key inside each receipt"))
    first = receipts[0]
    facts: dict[str, Any] = {"receipts": len(receipts)}
    if len(receipts) == 1:
        facts.update(epoch_id=first.epoch_id, seq=first.seq, units=first.units,
                     total_units=first.total_units)
    report("receipts" if len(receipts) > 1 else "receipt", checks, as_json, **facts)


@app.command("me")
def me_cmd(
    receipts: Annotated[str, typer.Option(help="JSON list of my receipts of the epoch.")],
    bundle: Annotated[str, typer.Option(help="The epoch's bundle (file or URL).")],
    openings: Annotated[
        str | None, typer.Option(help="The epoch's published sealed openings (file or URL, "
                                      "e.g. http://HOST/v1/epochs/7/openings): mine is found "
                                      "by trying my key on each.")
    ] = None,
    opening: Annotated[
        str | None, typer.Option(help="My sealed opening (raw or hex), or my plaintext "
                                      "opening if I have no key.")
    ] = None,
    secret_key: Annotated[
        str | None, typer.Option(help="My X25519 secret key file (from `zkmeter keys "
                                      "user-key`; raw or hex).")
    ] = None,
    user_id: Annotated[
        str | None, typer.Option(help="My user id: receipts of anyone else are refused as a "
                                      "mix-up.")
    ] = None,
    texts: Annotated[
        str | None, typer.Option(help="JSON list of {seq, messages, completion} I kept.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Check my charge: my opening against the bundle, my receipts' chain, that the
    committed value equals my last running total, and my texts' digests and recount.
    Inputs that do not belong together (another user's or epoch's receipts, a file that lacks
    receipts) exit 2 saying what is wrong; only contradictions the provider signed exit 1."""
    from verifier import me

    if (openings is None) == (opening is None):
        bad_input("give exactly one of --openings (the published list) and --opening", as_json)
    if openings is not None and secret_key is None:
        bad_input("--openings needs --secret-key to find your opening", as_json)
    _, parsed = load_bundle(bundle, as_json)
    try:
        key = me.parse_secret_key(_read(secret_key, "secret key", as_json)) if secret_key \
            else None
        chain = me.parse_receipts(_read(receipts, "receipts", as_json))
        kept = me.parse_texts(_read(texts, "texts", as_json)) if texts else None
    except me.UserInputError as exc:
        bad_input(str(exc), as_json)
    if openings is not None and key is not None:
        try:
            published = audit_mod.load_openings(_read(openings, "openings", as_json))
        except ValueError as exc:
            bad_input(f"openings: {exc}", as_json)
        found = _with_progress(len(published), as_json,
                               lambda advance: me.find_opening(published, key, advance),
                               what="trying my key on each sealed opening")
        if found is None:
            report(f"my charge in epoch {parsed.epoch_id}", [Check(
                "opening", False, f"none of the {len(published)} published sealed openings "
                                  f"opens with this key: the provider published none for it "
                                  f"(or this is not the key registered for you)")],
                   as_json, epoch_id=parsed.epoch_id)
        blob = found[1]
    else:
        blob = me.parse_blob(_read(opening or "", "opening", as_json))
    try:
        checks, facts = me.check_me(parsed, opening_bytes=blob, secret_key=key,
                                    receipts=chain, texts=kept, user_id=user_id)
    except me.UserMistake as exc:
        report(f"my charge in epoch {parsed.epoch_id}", exc.checks, as_json, error=str(exc),
               **exc.facts)
    report(f"my charge in epoch {parsed.epoch_id}", checks, as_json, **facts)


@app.command("chain")
def chain_cmd(
    rpc: Annotated[str, typer.Option("--rpc-url", "--rpc", envvar="ZKMETER_CHAIN_RPC_URL",
                                     help="JSON-RPC URL of the chain (http or https).")],
    contract: Annotated[str, typer.Option("--contract", envvar="ZKMETER_CONTRACT_ADDRESS",
                                          help="Settlement contract address.")],
    epoch: Annotated[int | None, typer.Option(help="Epoch id (to check one bundle).")] = None,
    bundle: Annotated[str | None, typer.Option(
        help="The epoch's bundle (file or URL); with --watch a template with {account} and "
             "{epoch}.")] = None,
    account_id: Annotated[str | None, typer.Option(
        "--account-id", help="Billing account id (default: the one the bundle names; with "
                             "--watch: every account).")] = None,
    watch: Annotated[bool, typer.Option(
        "--watch", help="Act as a settler: demand withheld data, challenge bad leaves, "
                        "resolve unanswered demands (verifier/watch.py).")] = False,
    finalize: Annotated[bool, typer.Option(
        "--finalize", help="With --watch: also finalize epochs whose window closed.")] = False,
    max_demands: Annotated[int, typer.Option(
        "--max-demands", help="With --watch: demands per withheld epoch.")] = 1,
    interval: Annotated[float, typer.Option(help="With --watch: seconds between rounds.")] = 12,
    rounds: Annotated[int | None, typer.Option(
        help="With --watch: stop after this many rounds (default: run until stopped).")] = None,
    sender: Annotated[str | None, typer.Option(
        "--from", help="With --watch: unlocked sender (or $ZKMETER_CHAIN_PRIVATE_KEY).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Check a bundle against the chain (the contract code is the published artifact, and the
    on-chain root, total, leaf count and status match the bundle), or with --watch act on
    every pending epoch as a settler."""
    if watch:
        _watch(rpc, contract, bundle, account_id, sender, max_demands=max_demands,
               finalize=finalize, interval=interval, rounds=rounds, as_json=as_json)
        return
    if epoch is None or bundle is None:
        bad_input("name --epoch and --bundle (or --watch)", as_json)

    _, parsed = load_bundle(bundle, as_json)
    if parsed.epoch_id != epoch:
        bad_input(f"the bundle is for epoch {parsed.epoch_id}, not {epoch}", as_json)
    subject = parse_hex(account_id, "account id", 32, as_json) if account_id else None
    checks, record = _chain_checks(rpc, contract, parsed, as_json, subject=subject,
                                   command="zkmeter-verify chain")
    report(f"epoch {epoch} on chain", checks, as_json, record=record.to_json())


def _parse_users(data: bytes) -> list[str]:
    """The payer's users: a JSON list of ids, or text with one id a line (blank lines and
    lines starting with # are skipped)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("users: not UTF-8 text") from None
    if text.lstrip().startswith("["):
        try:
            users = json.loads(text)
        except ValueError:
            raise ValueError("users: not a JSON list") from None
        if not isinstance(users, list) or not all(isinstance(u, str) and u for u in users):
            raise ValueError("users: the JSON list must hold non-empty user id strings")
        return users
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def _parse_receipt_items(data: bytes, where: str) -> list[Any]:
    """Receipt JSON objects of one input: a JSON list, one object, or JSON lines."""
    try:
        parsed = json.loads(data)
    except UnicodeDecodeError:
        raise ValueError(f"{where}: not UTF-8 text") from None
    except ValueError:
        try:
            return [json.loads(line) for line in data.decode().splitlines() if line.strip()]
        except ValueError:
            raise ValueError(f"{where}: neither JSON nor JSON lines") from None
    return parsed if isinstance(parsed, list) else [parsed]


def _load_receipts(source: str, as_json: bool) -> list[Any]:
    """Forwarded receipts from a directory (every *.json and *.jsonl file in it), a file or
    a URL (exit 2 on bad input)."""
    from pathlib import Path

    from verifier.receipts import ReceiptError, receipt_from_json

    path = Path(source)
    sources = (sorted(str(p) for p in path.iterdir() if p.suffix in (".json", ".jsonl"))
               if path.is_dir() else [source])
    receipts = []
    for src in sources:
        try:
            items = _parse_receipt_items(_read(src, "receipts", as_json), f"receipts {src}")
            receipts += [receipt_from_json(item) for item in items]
        except (ValueError, ReceiptError) as exc:  # ReceiptError is a ValueError
            bad_input(f"receipts {src}: {exc}" if isinstance(exc, ReceiptError) else str(exc),
                      as_json)
    if not receipts:
        bad_input(f"receipts: no receipts in {source}", as_json)
    return receipts


def _open_statement(data: bytes, secret: bytes | None, as_json: bool) -> Any:
    """The statement from sealed bytes (with the payer's key) or plain bytes (raw or hex)."""
    from verifier.me import parse_blob
    from verifier.statement import (
        StatementError,
        StatementSealError,
        decode_statement,
        unseal_statement,
    )

    blob = parse_blob(data)
    if secret is not None:
        try:
            return unseal_statement(blob, secret)
        except StatementSealError as exc:
            try:
                return decode_statement(blob)  # a plaintext statement needs no key
            except StatementError:
                bad_input(f"statement: {exc}", as_json)
        except StatementError as exc:
            bad_input(f"statement: it opens but is malformed: {exc}", as_json)
    try:
        return decode_statement(blob)
    except StatementError as exc:
        bad_input(f"statement: {exc} (a sealed statement needs --secret-key)", as_json)


def _chain_checks(rpc: str, contract: str, bundle: Bundle, as_json: bool, *, command: str,
                  subject: bytes | None = None) -> tuple[list[Check], Any]:
    """The deployment and the on-chain record of the bundle's (account, epoch) against the
    bundle (``subject``: another account id, for a version-1 bundle), and that record; exit
    2 if the chain cannot be read."""
    try:
        with needs("chain", command):
            from verifier import chain
    except MissingExtra as exc:
        bad_input(str(exc), as_json)
    address = parse_hex(contract, "contract address", 20, as_json)
    try:
        w3 = chain.connect(rpc)
        checks = [chain.check_deployment(w3, contract)]
        checks.append(Check("chain_context", bundle.chain_id == int(w3.eth.chain_id)
                            and bundle.contract == address,
                            "the bundle names this chain and contract"))
        record = chain.read_epoch(w3, contract, subject or bundle.subject, bundle.epoch_id)
        checks += chain.check_bundle_against_chain(bundle, record)
    except chain.ChainError as exc:
        bad_input(str(exc), as_json)
    except Exception as exc:  # web3 transport errors: the node cannot be used
        bad_input(f"cannot read the chain at {rpc}: {type(exc).__name__}", as_json)
    return checks, record


@app.command("payer")
def payer_cmd(
    bundle: Annotated[str, typer.Option(help="The account's bundle of the epoch (file or URL, "
                                             "e.g. http://HOST/v1/epochs/7/accounts/ID/"
                                             "bundle).")],
    statement: Annotated[str, typer.Option(help="The sealed payer statement (file or URL, "
                                                "raw or hex: .../accounts/ID/statement), or "
                                                "the plaintext statement.")],
    users: Annotated[str, typer.Option(help="My users: a text file with one user id a line, "
                                            "or a JSON list.")],
    secret_key: Annotated[
        str | None, typer.Option(help="The payer's X25519 secret key file (raw or hex); "
                                      "needed for a sealed statement.")
    ] = None,
    receipts: Annotated[
        str | None, typer.Option(help="Receipts my users forwarded: a directory of .json / "
                                      ".jsonl files, or a file or URL (JSON list or lines).")
    ] = None,
    rpc: Annotated[str | None, typer.Option("--rpc-url", help="JSON-RPC URL: also check the "
                                                              "on-chain record.")] = None,
    contract: Annotated[str | None, typer.Option("--contract", help="Settlement contract "
                                                                    "address.")] = None,
    evidence_out: Annotated[
        str | None, typer.Option(help="Where to write the evidence file if a contradiction "
                                      "is found (default evidence-EPOCH-ACCOUNT8.json).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Check every unit this account pays for: the statement's signature and binding to the
    bundle, every entry opening its leaf, zero padding, unique users all on my list, the
    total, and (optionally) my users' receipts and the chain. Range proofs are not
    re-verified (run `zkmeter-verify bundle`). A contradiction the provider signed is
    written to an evidence file anyone can check (`zkmeter-verify evidence FILE`)."""
    from pathlib import Path

    from verifier import evidence as evidence_mod
    from verifier import payer as payer_mod
    from verifier.me import UserInputError, parse_secret_key

    if (rpc is None) != (contract is None):
        bad_input("give both --rpc-url and --contract (or neither)", as_json)
    _, parsed = load_bundle(bundle, as_json)
    try:
        key = parse_secret_key(_read(secret_key, "secret key", as_json)) if secret_key \
            else None
        mine = _parse_users(_read(users, "users", as_json))
    except (UserInputError, ValueError) as exc:
        bad_input(str(exc), as_json)
    if not mine:
        bad_input("users: the list is empty", as_json)
    stmt = _open_statement(_read(statement, "statement", as_json), key, as_json)
    forwarded = _load_receipts(receipts, as_json) if receipts else None
    chain_checks = _chain_checks(rpc, contract, parsed, as_json,
                                 command="zkmeter-verify payer --rpc-url")[0] \
        if rpc and contract else None
    title = f"payer check of epoch {parsed.epoch_id}"
    try:
        result = payer_mod.check_payer(parsed, stmt, users=mine, receipts=forwarded,
                                       chain_checks=chain_checks)
    except payer_mod.PayerInputError as exc:
        bad_input(str(exc), as_json)
    facts = dict(result.facts)
    if result.contradictions:
        target = Path(evidence_out or f"evidence-{parsed.epoch_id}-"
                                      f"{parsed.subject.hex()[:8]}.json")
        try:
            target.write_text(evidence_mod.dumps_evidence(parsed, stmt, result.contradictions))
        except OSError as exc:
            bad_input(f"cannot write the evidence file {target}: {exc.strerror or exc}",
                      as_json)
        facts["evidence"] = str(target)
    report(title, result.checks, as_json, **facts)


@app.command("evidence")
def evidence_cmd(
    source: Annotated[str, typer.Argument(help="An evidence file (from `zkmeter-verify "
                                               "payer`), file or URL.")],
    as_json: JsonFlag = False,
) -> None:
    """Re-check an evidence file without anyone's secret key: every signature, and each
    claim re-derived from the provider-signed items. Exit 1 if the evidence holds (the
    provider-signed data contradicts itself, or for a phantom user: on the payer's word),
    0 if it does not (the file proves nothing), 2 if it cannot be read."""
    from verifier import evidence as evidence_mod

    try:
        result = evidence_mod.check_evidence(_read(source, "evidence", as_json))
    except evidence_mod.EvidenceFormatError as exc:
        bad_input(str(exc), as_json)
    holding = [c for c in result.claims if c.holds]
    if not holding:
        verdict = "the evidence does not hold: " + "; ".join(
            f"{c.kind}: {c.detail}" for c in result.claims)
    elif all(c.strength == evidence_mod.PAYER_ATTESTED for c in holding):
        verdict = "the evidence holds on the payer's word: " + "; ".join(
            f"{c.kind}: {c.detail}" for c in holding)
    else:
        verdict = "provider-signed data contradicts itself: " + "; ".join(
            f"{c.kind} ({c.strength}): {c.detail}" for c in holding
            if c.strength != evidence_mod.PAYER_ATTESTED)
        attested = [c for c in holding if c.strength == evidence_mod.PAYER_ATTESTED]
        if attested:
            verdict += "; and on the payer's word: " + "; ".join(
                f"{c.kind}: {c.detail}" for c in attested)
    if as_json:
        print(json.dumps({"ok": not holding, "holds": bool(holding), "verdict": verdict,
                          "checks": [c.to_json() for c in result.checks], "not_checked": [],
                          "claims": [c.to_json() for c in result.claims],
                          "epoch_id": result.epoch_id,
                          "account_id": "0x" + result.account_id.hex()}))
    else:
        console = Console()
        table = Table(title=f"evidence about epoch {result.epoch_id} of account "
                            f"0x{result.account_id.hex()[:12]}..")
        for column in ("check", "result", "detail"):
            table.add_column(column)
        for c in result.checks:
            table.add_row(c.name, _RESULT[c.status], c.detail)
        for claim in result.claims:
            table.add_row(f"claim {claim.kind}", "[red]HOLDS[/red]" if claim.holds
                          else "[green]does not hold[/green]",
                          f"{claim.detail} ({claim.strength})")
        console.print(table)
        console.print(("[red]" if holding else "[green]") + escape(verdict)
                      + ("[/red]" if holding else "[/green]"))
    raise typer.Exit(EXIT_FAILED if holding else EXIT_OK)


def _watch(rpc: str, contract: str, bundle: str | None, account_id: str | None,
           sender: str | None, *, max_demands: int, finalize: bool, interval: float,
           rounds: int | None, as_json: bool) -> None:
    """``chain --watch``: one JSON line (or one sentence) per action."""
    import os

    try:
        with needs("chain", "zkmeter-verify chain --watch"):
            from verifier import watch as watch_mod
            from verifier.chain import ChainError
            from verifier.chain_client import ChainClient
    except MissingExtra as exc:
        bad_input(str(exc), as_json)
    if bundle is None:
        bad_input("--watch needs --bundle, a path or URL template with {account} and {epoch}",
                  as_json)
    parse_hex(contract, "contract address", 20, as_json)
    account = parse_hex(account_id, "account id", 32, as_json) if account_id else None

    def show(action: "watch_mod.Action") -> None:
        if as_json:
            print(json.dumps(action.to_json()), flush=True)
        else:
            leaf = "" if action.leaf_index is None else f" leaf {action.leaf_index}"
            print(f"{action.kind}: epoch {action.epoch_id} of account "
                  f"0x{action.account_id.hex()[:12]}..{leaf}: {action.detail}", flush=True)

    try:
        client = ChainClient.connect(rpc, account=sender, settlement=contract,
                                     private_key=os.environ.get("ZKMETER_CHAIN_PRIVATE_KEY"))
        watch_mod.watch(client, bundle_source=bundle, account_id=account,
                        max_demands=max_demands, finalize=finalize, interval=interval,
                        rounds=rounds, report=show)
    except (ChainError, OSError, ValueError) as exc:  # OSError: the node cannot be reached
        bad_input(f"cannot watch the chain at {rpc}: {exc}", as_json)
    except KeyboardInterrupt:
        return


def _settler_commands() -> None:
    """The settler's chain commands (verifier/cli_chain.py), as zkmeter-verify subcommands."""
    from verifier.cli_chain import SETTLER_COMMANDS

    for name, command in SETTLER_COMMANDS.items():
        app.command(name)(command)


_settler_commands()


def main() -> None:
    """Console entry point."""
    use_packaged_artifacts()
    run_cli(app, "zkmeter-verify")
