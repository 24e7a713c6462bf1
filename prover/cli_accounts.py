"""``zkmeter accounts``: the operator's register of billing accounts and their users.

The same operations as the operator-only gRPC calls (RegisterAccount, RegisterUser,
GetAccount, CloseAccount), on the database of the configured ``ZKMETER_*`` settings, for an
operator without code: open the account a payer opened on-chain (with the payer's X25519 key,
to which its epoch statements are sealed), put users under it, show it, close it. Account ids
are the contract's, derived from ``ZKMETER_OPERATOR_ADDRESS``, the signing key, the payer and
the asset. Exit codes: 0 done, 1 refused (a closed account, a user of another account), 2 bad
input or configuration.
"""

import json
import sys
from typing import Annotated, Any, NoReturn

import typer

from prover.errors import InvalidRequestError, MeteringError

app = typer.Typer(help="Register billing accounts and their users (operator).",
                  no_args_is_help=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
AccountId = Annotated[str, typer.Option("--account-id", help="Billing account id, 32 bytes "
                                                             "hex (printed by `register`).")]
EXIT_FAILED, EXIT_BAD_INPUT = 1, 2


def _fail(code: int, message: str, as_json: bool) -> NoReturn:
    if as_json:
        print(json.dumps({"ok": False, "error": message}))
    print(f"zkmeter: {message}", file=sys.stderr)
    raise typer.Exit(code)


def _hex(text: str, name: str, length: int, as_json: bool) -> bytes:
    raw = text.strip().removeprefix("0x")
    try:
        value = bytes.fromhex(raw)
    except ValueError:
        _fail(EXIT_BAD_INPUT, f"{name} is not hex", as_json)
    if len(value) != length:
        _fail(EXIT_BAD_INPUT, f"{name} must be {length} bytes", as_json)
    return value


def _asset(text: str, as_json: bool) -> bytes:
    return bytes(20) if text.upper() == "ETH" else _hex(text, "asset", 20, as_json)


def _account_json(account: Any, users: list[str] | None = None) -> dict[str, Any]:
    from verifier.account import asset_name

    out = {"account_id": "0x" + account.account_id.hex(), "payer": "0x" + account.payer.hex(),
           "asset": asset_name(account.asset), "status": account.status,
           "payer_x25519_public_key": account.payer_x25519_public_key.hex()}
    if users is not None:
        out["users"] = users
    return out


def _run(command: str, as_json: bool, action: Any) -> None:
    from prover.cli import _services

    services = _services(command)
    try:
        out = action(services)
    except (InvalidRequestError, ValueError) as exc:
        _fail(EXIT_BAD_INPUT, str(exc), as_json)
    except MeteringError as exc:  # unknown or closed account, a user of another account
        _fail(EXIT_FAILED, str(exc), as_json)
    finally:
        services.close()
    if as_json:
        print(json.dumps(out))
    else:
        print("\n".join(f"{k}: {', '.join(v) if isinstance(v, list) else v}"
                        for k, v in out.items()))


@app.command("register")
def register(
    payer: Annotated[str, typer.Option(help="The payer's address (the one that opened the "
                                            "account on-chain).")],
    payer_key: Annotated[str, typer.Option(help="The payer's X25519 public key, 32 bytes hex "
                                                "(its statements are sealed to it).")],
    asset: Annotated[str, typer.Option(help="ETH or the ERC-20 token address.")] = "ETH",
    as_json: JsonFlag = False,
) -> None:
    """Open a billing account (or update an open account's payer key); prints its id."""
    payer_bytes = _hex(payer, "payer", 20, as_json)
    key = _hex(payer_key, "payer key", 32, as_json)
    asset_bytes = _asset(asset, as_json)
    _run("zkmeter accounts register", as_json, lambda s: _account_json(
        s.accounts.register_account(payer=payer_bytes, asset=asset_bytes,
                                    payer_x25519_public_key=key)))


@app.command("add-user")
def add_user(
    user_id: Annotated[str, typer.Argument(help="The user id the gateway meters.")],
    account_id: AccountId,
    user_key: Annotated[str | None, typer.Option(help="The user's X25519 public key, 32 bytes "
                                                      "hex (its openings are sealed to it).")
                        ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Put a user under an open account (a user never moves to another account)."""
    aid = _hex(account_id, "account id", 32, as_json)
    key = None if user_key is None else _hex(user_key, "user key", 32, as_json)

    def action(services: Any) -> dict[str, Any]:
        services.accounts.register_user(user_id, aid, key)
        return {"user_id": user_id, "account_id": "0x" + aid.hex()}

    _run("zkmeter accounts add-user", as_json, action)


@app.command("show")
def show(account_id: AccountId, as_json: JsonFlag = False) -> None:
    """An account, its status and its users."""
    aid = _hex(account_id, "account id", 32, as_json)
    _run("zkmeter accounts show", as_json, lambda s: _account_json(
        s.accounts.account(aid), s.accounts.users_of(aid)))


@app.command("close")
def close(account_id: AccountId, as_json: JsonFlag = False) -> None:
    """Refuse the account's usage from now on (closed stays closed)."""
    aid = _hex(account_id, "account id", 32, as_json)
    _run("zkmeter accounts close", as_json,
         lambda s: _account_json(s.accounts.close_account(aid)))
