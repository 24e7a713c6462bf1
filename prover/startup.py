"""Start-up of the operator commands: one line for each way start-up can fail, and what
``zkmeter serve`` logs when it starts.

Start-up failures (a bad or placeholder setting, a database that cannot be opened, a port in
use) are reported by the CLI as one line and exit code 2, never a traceback. Nothing here
ever prints a secret: pydantic errors are rendered without their input values, and database
URLs without their password.
"""

import errno
import os
import socket
from typing import TYPE_CHECKING, Any

from prover.errors import ConfigError, LedgerError, RateCardError

if TYPE_CHECKING:
    from prover.config import Settings

ENV_PREFIX = "ZKMETER_"


class StartupError(Exception):
    """The command cannot start; the message is one line saying what to fix."""


def redact_url(url: str) -> str:
    """A database URL without its password (``***``)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not even a URL: show only its scheme
        scheme = url.split(":", 1)[0] if ":" in url else "?"
        return f"{scheme}:<unparseable>"


def _one_line(text: str) -> str:
    first = text.strip().splitlines()[0] if text.strip() else ""
    return " ".join(first.split())


def settings_error(exc: Exception) -> str:
    """A pydantic ValidationError of the settings as one line naming each variable (never
    the value given, which may be a secret)."""
    errors: list[dict[str, Any]] = exc.errors(include_input=False)  # type: ignore[attr-defined]
    parts = []
    for error in errors:
        field = ".".join(str(x) for x in error.get("loc", ()) if isinstance(x, str))
        name = ENV_PREFIX + field.upper() if field else "settings"
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{name}: {message}")
    return "bad setting " + "; ".join(parts)


def database_error(exc: Exception, url: str) -> str:
    """Why the database at ``url`` cannot be used, in one line (no SQL, no password)."""
    orig = getattr(exc, "orig", None)
    reason = _one_line(str(orig)) if orig is not None else _one_line(str(exc))
    if type(exc).__name__ == "ArgumentError":
        return (f"{ENV_PREFIX}DATABASE_URL is not a database URL (expected sqlite:///PATH or "
                f"postgresql+psycopg://USER@HOST:PORT/DB)")
    # drivers may quote the DSN back: never let a password through
    reason = reason.replace(url, redact_url(url))
    return f"cannot open the database {redact_url(url)}: {reason or type(exc).__name__}"


def describe_error(exc: BaseException, settings: "Settings | None" = None) -> str | None:
    """The one-line message for a start-up failure, or None if ``exc`` is not one (a bug,
    which then keeps its traceback)."""
    if isinstance(exc, StartupError):
        return str(exc)
    if type(exc).__name__ == "ValidationError" and hasattr(exc, "errors"):
        return settings_error(exc)  # type: ignore[arg-type]
    if isinstance(exc, RateCardError):
        return f"bad rate card ({ENV_PREFIX}RATE_CARD): {_one_line(str(exc))}"
    if isinstance(exc, ConfigError):
        return _one_line(str(exc))
    module = type(exc).__module__.split(".")[0]
    if module in ("sqlalchemy", "psycopg", "sqlite3", "alembic") or isinstance(exc,
                                                                               LedgerError):
        url = settings.database_url.get_secret_value() if settings is not None else ""
        return database_error(exc, url) if isinstance(exc, Exception) else None
    if isinstance(exc, OSError):
        return _one_line(str(exc))
    return None


def check_bind(name: str, bind: str) -> None:
    """Refuse a ``host:port`` that is malformed or already in use (gRPC would otherwise share
    a port held by another process with SO_REUSEPORT, and uvicorn exits on its own)."""
    from prover.api.serve import split_bind

    try:
        host, port = split_bind(bind)
    except ConfigError:
        raise StartupError(f"{name} {bind!r} is not host:port") from None
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise StartupError(f"{name} {bind}: cannot resolve {host!r} ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            reason = ("address already in use (is another zkmeter serve running?)"
                      if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc))
            raise StartupError(f"{name} {bind}: {reason}") from None


def check_binds(settings: "Settings") -> None:
    """Every ``*_bind`` setting (gRPC, HTTP, and any other listener) is free."""
    for field in sorted(type(settings).model_fields):
        if field.endswith("_bind"):
            value = getattr(settings, field)
            if isinstance(value, str) and value:
                check_bind(ENV_PREFIX + field.upper(), value)


def _no_limits() -> str:
    """The start-up line of a meter without prepaid limits; it says so when only the chain
    commands' node URL is set (an operator who set one may expect both)."""
    line = "prepaid limits: none (ZKMETER_RPC_URL unset)"
    if os.environ.get("ZKMETER_CHAIN_RPC_URL"):
        line += ("; ZKMETER_CHAIN_RPC_URL is set but only the chain commands read it: set "
                 "ZKMETER_RPC_URL to the same node to enforce each account's escrow")
    return line


def startup_lines(settings: "Settings", provider_id: bytes) -> list[str]:
    """What ``zkmeter serve`` logs before it binds: who, where it settles, where it stores,
    where it listens."""
    lines = [
        f"provider id {provider_id.hex()}",
        f"settles on chain {settings.chain_id}, contract {settings.contract_address}",
        f"database {redact_url(settings.database_url.get_secret_value())}",
        _no_limits() if settings.rpc_url is None else
        f"prepaid limits: each account's escrow in contract {settings.contract_address}, "
        f"read from ZKMETER_RPC_URL (cached {settings.escrow_ttl_seconds:g} s, events every "
        f"{settings.escrow_poll_seconds:g} s, headroom {settings.escrow_headroom_units} units)",
    ]
    binds = [f"{field.removesuffix('_bind')} {getattr(settings, field)}"
             for field in sorted(type(settings).model_fields) if field.endswith("_bind")
             and getattr(settings, field)]
    lines.append("binds " + ", ".join(binds))
    return lines


__all__ = [
    "StartupError",
    "check_bind",
    "check_binds",
    "database_error",
    "describe_error",
    "redact_url",
    "settings_error",
    "startup_lines",
]
