"""Run the gateway (or the local upstream) under uvicorn, until SIGTERM/SIGINT."""

import importlib.util
import logging
from typing import Any

import uvicorn
from prometheus_client import start_http_server

from prover.api.serve import split_bind
from prover.gateway import metrics
from prover.gateway.app import GatewayApp
from prover.gateway.config import GatewaySettings
from prover.gateway.upstream import UpstreamApp, UpstreamOptions

log = logging.getLogger("zkmeter.gateway")


def _fast_options() -> dict[str, Any]:
    """httptools and uvloop when installed (the server extra brings them)."""
    options: dict[str, Any] = {}
    if importlib.util.find_spec("httptools") is not None:
        options["http"] = "httptools"
    if importlib.util.find_spec("uvloop") is not None:
        options["loop"] = "uvloop"
    return options


def uvicorn_config(app: Any, bind: str) -> uvicorn.Config:
    """Quiet uvicorn (no access log: paths and bodies stay out of logs)."""
    host, port = split_bind(bind)
    return uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                          lifespan="on", timeout_graceful_shutdown=10, **_fast_options())


def run_gateway(settings: GatewaySettings) -> None:
    """Serve the gateway on ``settings.bind`` (and metrics on ``metrics_bind`` if set)."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # it logs every URL at INFO
    app = GatewayApp(settings)
    if settings.metrics_bind:
        host, port = split_bind(settings.metrics_bind)
        start_http_server(port, addr=host, registry=metrics.REGISTRY)
    log.info("zkmeter gateway on %s, upstream %s, zkmeter serve at %s", settings.bind,
             settings.upstream_url, settings.zkmeter_target)
    uvicorn.Server(uvicorn_config(app, settings.bind)).run()


def run_upstream(bind: str, options: UpstreamOptions) -> None:
    """Serve the local OpenAI-compatible upstream on ``bind``."""
    log.info("zkmeter upstream (deterministic, for tests and the demo) on %s", bind)
    uvicorn.Server(uvicorn_config(UpstreamApp(options), bind)).run()
