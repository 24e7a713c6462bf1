"""The ``zkmeter gateway`` and ``zkmeter upstream`` commands (kept here so prover/cli.py only
names them)."""

import logging
import os

import typer
from pydantic import ValidationError
from rich.console import Console

from prover.errors import ConfigError


def run_gateway_cmd(*, upstream: str | None, bind: str | None, err: Console) -> None:
    """Build the settings from the environment and the options, then serve."""
    from prover.gateway.config import GatewaySettings
    from prover.gateway.serve import run_gateway

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    overrides = {k: v for k, v in (("upstream_url", upstream), ("bind", bind)) if v}
    try:
        settings = GatewaySettings(**overrides).checked()  # type: ignore[arg-type]
        settings.all_caller_keys()
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in e["loc"]) + ": " + e["msg"]
                           for e in exc.errors())
        err.print(f"[red]configuration error:[/red] {fields}")
        raise typer.Exit(2) from None
    except ConfigError as exc:
        err.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from None
    try:
        run_gateway(settings)
    except OSError as exc:
        err.print(f"[red]cannot serve:[/red] {exc.strerror or exc}")
        raise typer.Exit(2) from None


def run_upstream_cmd(*, bind: str, delay_ms: int, fail_every: int) -> None:
    """Serve the deterministic upstream (``ZKMETER_UPSTREAM_API_KEY``: the key it requires)."""
    from prover.gateway.serve import run_upstream
    from prover.gateway.upstream import UpstreamOptions

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    key = os.environ.get("ZKMETER_UPSTREAM_API_KEY") or None
    run_upstream(bind, UpstreamOptions(api_key=key, delay_ms=delay_ms, fail_every=fail_every))
